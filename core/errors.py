"""JSON errors for everything under /api/.

DRF views hand their exceptions to ``api_exception_handler``. Everything else under /api/
(the catch-all for unknown paths, ``ApiErrorMiddleware``, Django's error handlers) builds its
answer through the same function and renders it with the JSON renderer DRF's views use, so
one exception always gives the same status, headers and bytes, whichever layer meets it.
"""

import logging
from collections.abc import Sequence
from typing import Any, cast

from django.conf import settings
from django.core.exceptions import RequestDataTooBig, SuspiciousOperation
from django.db import InterfaceError, OperationalError
from django.http import Http404, HttpRequest, HttpResponse
from django.views import defaults
from django.views.decorators.csrf import csrf_exempt
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from rest_framework import exceptions, status
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.views import exception_handler

from core import replicas

logger = logging.getLogger(__name__)

API_PREFIX = "/api/"
DATABASE_RETRY_AFTER_SECONDS = 5
SERVER_ERROR_DETAIL = "Internal server error."


def is_api_path(request: HttpRequest) -> bool:
    return request.path_info.startswith(API_PREFIX)


class BadRequest(exceptions.APIException):
    status_code = status.HTTP_400_BAD_REQUEST
    default_detail = "Bad request."
    default_code = "bad_request"


class RequestTooLarge(exceptions.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_code = "request_too_large"

    def __init__(self) -> None:
        super().__init__(f"The request body is larger than {settings.API_MAX_BODY_BYTES} bytes.")


class DatabaseUnavailable(exceptions.APIException):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_detail = "The database is unavailable. Try again shortly."
    default_code = "database_unavailable"
    # DRF's handler turns `wait` into the Retry-After header, as it does for Throttled.
    wait = DATABASE_RETRY_AFTER_SECONDS


class CacheUnavailable(exceptions.APIException):
    """Redis (REDIS_URL), where every request's throttles count, cannot be reached."""

    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_detail = "The shared cache is unavailable. Try again shortly."
    default_code = "cache_unavailable"
    wait = DATABASE_RETRY_AFTER_SECONDS


def as_api_exception(exc: Exception) -> Exception:
    """The DRF exception that stands for ``exc``; ``exc`` itself when DRF knows it or it is a bug."""
    if isinstance(exc, Http404):
        # One body for every miss: Django's "No Conversation matches the given query." would
        # tell a missing object from a malformed id, whose 404 has no message.
        return exceptions.NotFound()
    if isinstance(exc, RequestDataTooBig):
        return RequestTooLarge()
    if isinstance(exc, SuspiciousOperation):
        logger.warning("Suspicious request: %s", exc)
        return BadRequest()
    # Also psycopg_pool's PoolTimeout, which Django wraps as OperationalError.
    if isinstance(exc, OperationalError | InterfaceError):
        logger.error("Database unavailable: %s", exc)
        replicas.failed(exc)  # a read-only request may be answered again from the primary
        return DatabaseUnavailable()
    if isinstance(exc, RedisConnectionError | RedisTimeoutError):
        logger.error("Redis unavailable: %s", exc)
        return CacheUnavailable()
    return exc


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """DRF's handler, plus 404, 413, 400 and 503 for Django's exceptions of those kinds (and
    503 for an unreachable Redis).

    Any other exception gives None, so DRF re-raises it and ``ApiErrorMiddleware`` answers
    with the JSON 500.
    """
    exc = as_api_exception(exc)
    response = exception_handler(exc, context)
    if response is not None and isinstance(exc, exceptions.Throttled):
        # DRF leaves the header out when the wait is unknown or rounds to zero.
        response.setdefault("Retry-After", str(max(getattr(exc, "wait", None) or 0, 1)))
    return response


def json_renderer() -> BaseRenderer:
    """The JSON renderer of DRF's views, so that errors made outside views render alike."""
    # Imported classes at run time; the stubs call them strings.
    renderer_classes = cast("Sequence[type[BaseRenderer]]", api_settings.DEFAULT_RENDERER_CLASSES)
    for renderer_class in renderer_classes:
        if renderer_class.format == "json":
            return renderer_class()
    return JSONRenderer()


def render_json(response: Response) -> Response:
    """Render ``response`` as a DRF view does for a JSON client, outside any view."""
    renderer = json_renderer()
    response.accepted_renderer = renderer
    response.accepted_media_type = renderer.media_type
    response.renderer_context = {}  # type: ignore[attr-defined]  # read by rendered_content
    response.render()
    return response


def server_error_response() -> Response:
    response = Response({"detail": SERVER_ERROR_DETAIL}, status=status.HTTP_500_INTERNAL_SERVER_ERROR)
    return render_json(response)


def api_error_response(exc: Exception) -> Response:
    """The rendered JSON answer to ``exc``: DRF's error body, or the 500 for any other exception."""
    response = api_exception_handler(exc, {})
    return server_error_response() if response is None else render_json(response)


@csrf_exempt
def api_not_found(request: HttpRequest, *args: object, **kwargs: object) -> HttpResponse:
    """Unknown /api/ paths, any method: the very 404 a DRF view gives for a missing object."""
    return api_error_response(exceptions.NotFound())


# Django's handler400/403/404/500, for exceptions raised outside views (in middleware): JSON
# under /api/, Django's own pages elsewhere. With DEBUG on Django shows its debug page instead.


def bad_request(request: HttpRequest, exception: Exception) -> HttpResponse:
    if is_api_path(request):
        return api_error_response(BadRequest())
    return defaults.bad_request(request, exception)


def permission_denied(request: HttpRequest, exception: Exception) -> HttpResponse:
    if is_api_path(request):
        return api_error_response(exceptions.PermissionDenied())
    return defaults.permission_denied(request, exception)


def page_not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    if is_api_path(request):
        return api_error_response(exceptions.NotFound())
    return defaults.page_not_found(request, exception)


def server_error(request: HttpRequest) -> HttpResponse:
    if is_api_path(request):
        return server_error_response()
    return defaults.server_error(request)
