"""The outermost layers of every request: no body for HEAD, its id, the check of its Host, JSON
errors under /api/."""

import logging
import re
import uuid
from collections.abc import Callable
from io import BytesIO
from typing import BinaryIO

from django.conf import settings
from django.core.exceptions import DisallowedHost, RequestDataTooBig
from django.core.handlers.wsgi import WSGIRequest
from django.core.signals import got_request_exception
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.http.response import HttpResponseBase

from core import errors, replicas

logger = logging.getLogger(__name__)
disallowed_host_logger = logging.getLogger("django.security.DisallowedHost")

REQUEST_ID_HEADER = "X-Request-ID"
# 1 to 200 printable ASCII characters, no spaces: safe to echo in a header and to log.
VALID_REQUEST_ID = re.compile(r"[!-~]{1,200}")


def request_id_for(request: HttpRequest) -> str:
    """The caller's own request id when it is sane, else a new one."""
    sent = request.headers.get(REQUEST_ID_HEADER, "")
    return sent if VALID_REQUEST_ID.fullmatch(sent) else uuid.uuid4().hex


class HeadWithoutBodyMiddleware:
    """Answers HEAD with the GET's status and headers (Content-Length included) and no body.

    Django's views answer HEAD as GET, and only runserver and the test client drop the body;
    gunicorn sends it, and on a kept-alive connection those bytes become the start of the
    next answer. Outermost, so that every answer, whichever layer made it, is covered.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        response = self.get_response(request)
        if request.method == "HEAD":
            if isinstance(response, StreamingHttpResponse):
                # The original iterator stays among the response's closers.
                response.streaming_content = []
            elif isinstance(response, HttpResponse):
                response.content = b""
        return response


class RequestIdMiddleware:
    """Gives every request an id, as ``request.request_id`` and the response's X-Request-ID."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        request_id = request_id_for(request)
        request.request_id = request_id  # type: ignore[attr-defined]
        response = self.get_response(request)
        response[REQUEST_ID_HEADER] = request_id
        return response


class AllowedHostMiddleware:
    """Answers a request for a host outside ALLOWED_HOSTS with the project's plain 400 (JSON
    under /api/), DEBUG on or off. Left to Django, the check fails deeper in the stack and,
    with DEBUG on, answers with the debug page, which lists the process's environment
    (``DATABASE_URL`` and its password among it) to whoever sent the foreign Host header."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        try:
            request.get_host()
        except DisallowedHost as exc:
            # Where Django itself logs the refusal, so that logging settings for it still apply.
            disallowed_host_logger.error(str(exc), extra={"status_code": 400, "request": request})
            return errors.bad_request(request, exc)
        return self.get_response(request)


class ApiErrorMiddleware:
    """Under /api/: 413 for a body over API_MAX_BODY_BYTES before it is read, and a JSON answer
    (503 for an unreachable database, else 500) to any exception a view lets escape."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if errors.is_api_path(request):
            try:
                check_body_size(request, settings.API_MAX_BODY_BYTES)
            except RequestDataTooBig as exc:
                return errors.api_error_response(exc)
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if not errors.is_api_path(request):
            return None
        response = errors.api_exception_handler(exception, {"request": request})
        if response is not None:
            return errors.render_json(response)
        logger.exception(
            "Unhandled exception in %s %s (request id %s)",
            request.method,
            request.path,
            getattr(request, "request_id", "-"),
            exc_info=exception,
        )
        # What Django sends for the exceptions it answers itself: error reporters listen to it.
        got_request_exception.send(sender=None, request=request)
        return errors.server_error_response()


def check_body_size(request: HttpRequest, limit: int) -> None:
    """Raise RequestDataTooBig when the body is longer than ``limit`` bytes.

    A declared Content-Length is checked without reading anything. A body without one
    (``Transfer-Encoding: chunked``) is read up to ``limit + 1`` bytes and, when it fits, kept
    with its length declared: Django's WSGI request and DRF would otherwise see no body at all.
    """
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or "")
    except ValueError:
        declared = None
    if declared is not None:
        if declared > limit:
            raise RequestDataTooBig(f"Content-Length {declared} is over the limit of {limit} bytes.")
        return
    source = undeclared_body(request)
    if source is None:
        return
    body = source.read(limit + 1)
    if len(body) > limit:
        raise RequestDataTooBig(f"The request body is over the limit of {limit} bytes.")
    if body:
        request._stream = BytesIO(body)
        request.META["CONTENT_LENGTH"] = str(len(body))


def undeclared_body(request: HttpRequest) -> BinaryIO | None:
    """The stream of a request body that came without Content-Length, when there can be one."""
    if isinstance(request, WSGIRequest):
        # Only a server that marks the input as terminated (gunicorn does, for chunked bodies)
        # can be read to its end; reading another server's input could wait forever.
        chunked = "chunked" in request.META.get("HTTP_TRANSFER_ENCODING", "").lower()
        if chunked and request.environ.get("wsgi.input_terminated"):
            stream: BinaryIO = request.environ["wsgi.input"]
            return stream
        return None
    # ASGI: Django has already buffered the whole body in a temporary file.
    return request._stream


class ReplicaReadsMiddleware:
    """GET, HEAD and OPTIONS only read: their reads may go to a replica that has the caller's
    writes (core/replicas.py), and one that the replica failed (a 503 from its connection) is
    answered again from the primary. Every other method stays on the primary."""

    SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        if request.method not in self.SAFE_METHODS:
            return self.get_response(request)
        with replicas.read_only():
            response = self.get_response(request)
            if response.status_code == 503 and replicas.replica_failed():
                response = self.get_response(request)
            return response
