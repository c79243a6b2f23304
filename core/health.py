"""Liveness and readiness probes: plain Django views, outside DRF's authentication and throttling."""

import logging
from concurrent.futures import ThreadPoolExecutor
from http import HTTPStatus

from django.core.cache import cache
from django.db import DEFAULT_DB_ALIAS, connections
from django.db import Error as DatabaseError
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_safe
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from core.errors import DATABASE_RETRY_AFTER_SECONDS

logger = logging.getLogger(__name__)

READINESS_TIMEOUT_SECONDS = 2.0

# The check runs in this thread so that a database that accepts connections and then hangs
# (or a pool that waits for a free connection) cannot hold the probe past its deadline. One
# worker: while a check hangs, later ones queue and time out instead of piling up threads.
_checker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="readyz")


def _select_one(alias: str) -> None:
    # A connection object of its own, made from the settings as they are now and closed (back
    # to the pool, if any) afterwards: the checker thread keeps nothing between checks.
    connection = connections.create_connection(alias)
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    finally:
        connection.close()


def database_unavailable_reason(
    alias: str = DEFAULT_DB_ALIAS, timeout: float = READINESS_TIMEOUT_SECONDS
) -> str | None:
    """None when ``SELECT 1`` on ``alias`` answers within ``timeout`` seconds, else why not."""
    check = _checker.submit(_select_one, alias)
    try:
        check.result(timeout=timeout)
    except TimeoutError:
        check.cancel()
        logger.error("Readiness check: database %r did not answer within %gs", alias, timeout)
        return f"The database did not answer within {timeout:g} seconds."
    except DatabaseError as exc:
        logger.error("Readiness check: database %r cannot be reached: %s", alias, exc)
        return "The database cannot be reached."
    return None


def cache_unavailable_reason() -> str | None:
    """None when the shared cache (Redis with REDIS_URL, where every request's throttles
    count) answers, else why not; REDIS_TIMEOUT bounds the wait."""
    try:
        cache.get("readyz")
    except (RedisConnectionError, RedisTimeoutError) as exc:
        logger.error("Readiness check: the shared cache cannot be reached: %s", exc)
        return "The shared cache cannot be reached."
    return None


@csrf_exempt  # nothing to protect, and other methods get 405 rather than a CSRF 403
@never_cache
@require_safe
def healthz(request: HttpRequest) -> JsonResponse:
    """The process is up; touches no database."""
    return JsonResponse({"status": "ok"})


@csrf_exempt  # nothing to protect, and other methods get 405 rather than a CSRF 403
@never_cache
@require_safe
def readyz(request: HttpRequest) -> JsonResponse:
    """The process can serve: the default database answers, and so does the shared cache."""
    reason = database_unavailable_reason() or cache_unavailable_reason()
    if reason is None:
        return JsonResponse({"status": "ok"})
    return JsonResponse(
        {"status": "unavailable", "detail": reason},
        status=HTTPStatus.SERVICE_UNAVAILABLE,
        headers={"Retry-After": str(DATABASE_RETRY_AFTER_SECONDS)},
    )
