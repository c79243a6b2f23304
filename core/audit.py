"""The audit trail and the security log: one JSON line per operation, one per refused access.

Two loggers, which settings.LOGGING sends to stdout through ``JsonFormatter``:

- ``audit``: every conversation and message operation, whoever calls it. The REST API writes
  its lines from one place, ``OwnedViewSet.dispatch`` (``conversations.audit.api_operation``). Service and
  selector functions decorated with ``audited`` write theirs when called in-process (the
  agent), and nothing inside a REST request. Code outside both (management commands such as
  the export) calls ``record`` or ``operation`` itself.
- ``security``: every refused access. 401, 403 and 429 from anywhere, by
  ``RefusalLogMiddleware``; 404 on a conversation or message id from ``api_operation``, which
  also tells whether that id exists and belongs to another user (never in the response); a
  failed session login (the browsable API's), by the ``user_login_failed`` signal.

A line carries ids, outcomes and timings, never message content, titles, tokens, passwords,
request bodies or query strings: ``record`` refuses fields with such names.

This module is imported while logging is configured (for ``JsonFormatter``), before the app
registry is ready, so it imports models only inside functions.
"""

import functools
import json
import logging
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, ParamSpec, TypeVar, cast

from django.core.exceptions import ObjectDoesNotExist
from django.db import Error as DatabaseError
from django.http import HttpRequest
from django.http.response import HttpResponseBase

from core.client import client_address

AUDIT_LOGGER = "audit"
SECURITY_LOGGER = "security"
audit_logger = logging.getLogger(AUDIT_LOGGER)
security_logger = logging.getLogger(SECURITY_LOGGER)
logger = logging.getLogger(__name__)

# The attribute of a LogRecord that carries a line's fields (logging's ``extra``).
FIELDS_ATTRIBUTE = "audit_fields"

Scalar = str | int | float | bool | None
P = ParamSpec("P")
R = TypeVar("R")

# Names that would carry what must never be logged. ``record`` refuses them as extra fields.
FORBIDDEN_FIELDS = frozenset(
    {
        "content",
        "title",
        "tool_calls",
        "tool_results",
        "body",
        "data",
        "password",
        "token",
        "access",
        "refresh",
        "authorization",
        "cookie",
        "query",
        "query_string",
    }
)

# Refusals that RefusalLogMiddleware logs, whichever view (or middleware) answered.
REFUSAL_EVENTS = {
    401: "access.unauthenticated",
    403: "access.forbidden",
    429: "access.throttled",
}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``time`` (ISO 8601 UTC with microseconds), ``level``,
    ``logger``, then the record's fields (audit and security lines) or its ``message``."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": iso_utc(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        fields = getattr(record, FIELDS_ATTRIBUTE, None)
        if isinstance(fields, Mapping):
            line.update(fields)
        else:
            line["message"] = record.getMessage()
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, ensure_ascii=False)


def iso_utc(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def outcome_for(status: int) -> str:
    """The outcome word of an HTTP status."""
    if status < 400:
        return "ok"
    if status in (401, 403):
        return "denied"
    if status == 404:
        return "not_found"
    if status == 429:
        return "throttled"
    if status in (409, 412, 422):
        return "conflict"
    if status < 500:
        return "invalid"
    return "error"


def as_id(value: object) -> str | None:
    """The canonical string of a UUID, None for anything else (a malformed id from a URL is
    the caller's text, not an id: it is not logged)."""
    if value is None:
        return None
    if isinstance(value, uuid.UUID):
        return str(value)
    try:
        return str(uuid.UUID(str(value)))
    except ValueError:
        return None


def record(
    action: str,
    *,
    user_id: uuid.UUID | str | None,
    outcome: str,
    conversation_id: uuid.UUID | str | None = None,
    message_id: uuid.UUID | str | None = None,
    duration_ms: float | None = None,
    request_id: str | None = None,
    status: int | None = None,
    **fields: Scalar,
) -> None:
    """Write one audit line.

    ``action`` is ``<entity>.<verb>``, e.g. ``conversation.export``; ``outcome`` one of
    ``ok``, ``denied``, ``not_found``, ``invalid``, ``conflict``, ``throttled``, ``error``,
    or ``aborted`` (a streamed export whose client went away before its end).
    Extra ``fields`` are scalars (counts, a format name, a flag); names that could carry
    content or credentials (``FORBIDDEN_FIELDS``) raise ValueError.
    """
    forbidden = FORBIDDEN_FIELDS.intersection(fields)
    if forbidden:
        raise ValueError(f"audit lines never carry {sorted(forbidden)}")
    line: dict[str, Scalar] = {
        "action": action,
        "request_id": request_id,
        "user_id": as_id(user_id),
        "conversation_id": as_id(conversation_id),
        "message_id": as_id(message_id),
        "outcome": outcome,
        "status": status,
        "duration_ms": None if duration_ms is None else round(duration_ms, 3),
    }
    for name, value in fields.items():
        if not isinstance(value, str | int | float | bool | None):
            raise ValueError(f"audit field {name!r} must be a scalar, not {type(value).__name__}")
        line[name] = value
    audit_logger.info(action, extra={FIELDS_ATTRIBUTE: line})


@contextmanager
def operation(
    action: str,
    *,
    user_id: uuid.UUID | str | None,
    conversation_id: uuid.UUID | str | None = None,
    request_id: str | None = None,
) -> Iterator[dict[str, Scalar]]:
    """Time the block and write its audit line: outcome ``ok``, or ``error`` when it raises
    (the exception goes on). The yielded dict takes extra scalar fields, e.g. counts::

        with audit.operation("conversation.export", user_id=user.pk) as fields:
            fields["conversations"] = n
    """
    fields: dict[str, Scalar] = {}
    started = time.perf_counter()
    outcome = "error"
    try:
        yield fields
        outcome = "ok"
    finally:
        record(
            action,
            user_id=user_id,
            outcome=outcome,
            conversation_id=conversation_id,
            request_id=request_id,
            duration_ms=(time.perf_counter() - started) * 1000,
            **cast(dict[str, Any], fields),
        )


@contextmanager
def lines_to_stderr() -> Iterator[None]:
    """For a command whose stdout is its data (an export to stdout): the audit and security
    lines that settings.LOGGING sends to stdout go to stderr for the block instead."""
    handlers = [
        handler
        for name in (AUDIT_LOGGER, SECURITY_LOGGER)
        for handler in logging.getLogger(name).handlers
        if type(handler) is logging.StreamHandler and handler.stream is sys.stdout
    ]
    for handler in handlers:
        handler.setStream(sys.stderr)
    try:
        yield
    finally:
        for handler in handlers:
            handler.setStream(sys.stdout)


# --- in-process calls (the agent) ---------------------------------------------------------------

# Set while a REST request is being handled: its one audit line comes from ``api_operation``, so
# the service functions it calls write none of their own.
_in_api_request: ContextVar[bool] = ContextVar("audit_in_api_request", default=False)


@contextmanager
def api_request() -> Iterator[None]:
    """Mark the block as one REST request's handling (``OwnedViewSet.dispatch``)."""
    token = _in_api_request.set(True)
    try:
        yield
    finally:
        _in_api_request.reset(token)


def _ids_of(result: object) -> tuple[object, object]:
    """(conversation id, message id) of what a service function returned."""
    if isinstance(result, tuple) and result:  # (message or messages, replayed)
        result = result[0]
    if isinstance(result, list) and result:  # a batch: its conversation, its first message
        result = result[0]
    model = getattr(getattr(result, "_meta", None), "model_name", None)
    if model == "conversation":
        return getattr(result, "pk", None), None
    if model == "message":
        return getattr(result, "conversation_id", None), getattr(result, "pk", None)
    return None, None


def audited(action: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorator for a service or selector function, so that in-process callers (the agent, and
    its ``a``-prefixed twins made with ``sync_to_async``) leave the same audit line as the REST
    API: ``user`` and ``conversation_id`` from the keyword arguments, the new object's ids from
    the result, outcome ``ok``, ``not_found`` (``ObjectDoesNotExist``) or ``error``. Inside a
    REST request it writes nothing (the request's line is written by ``api_operation``)::

        @audit.audited("message.append")
        def message_append(*, user, conversation_id, role, content, tool_calls=None): ...
    """

    def decorator(function: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(function)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            if _in_api_request.get():
                return function(*args, **kwargs)
            started = time.perf_counter()
            outcome, result = "error", None
            try:
                result = function(*args, **kwargs)
                outcome = "ok"
                return result
            except ObjectDoesNotExist:
                outcome = "not_found"
                raise
            finally:
                user = kwargs.get("user")
                conversation_id, message_id = _ids_of(result)
                record(
                    action,
                    user_id=as_id(getattr(user, "pk", user)),
                    outcome=outcome,
                    conversation_id=as_id(conversation_id or kwargs.get("conversation_id")),
                    message_id=as_id(message_id),
                    duration_ms=(time.perf_counter() - started) * 1000,
                    caller="in_process",
                )

        return wrapper

    return decorator


def security(event: str, *, request: HttpRequest | None, status: int | None = None, **fields: Scalar) -> None:
    """Write one security line about a refused access."""
    line: dict[str, Scalar] = {"event": event, "status": status}
    if request is not None:
        line.update(
            request_id=getattr(request, "request_id", None),
            user_id=request_user_id(request),
            method=request.method,
            path=request.path,
            remote_addr=client_address(request),
        )
    line.update(fields)
    security_logger.warning(event, extra={FIELDS_ATTRIBUTE: line})


def request_user_id(request: HttpRequest) -> str | None:
    """The authenticated user's id, if authentication found one. DRF hands the user it
    authenticated (or AnonymousUser) to the Django request, so token users are seen too."""
    try:
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated:
            return as_id(user.pk)
    except DatabaseError:  # a session that cannot be read: no user to name
        pass
    return None


def _response_code(response: HttpResponseBase) -> str | None:
    """DRF's error code of a refusal (``token_not_valid``, ``not_authenticated``, …)."""
    data = getattr(response, "data", None)
    if isinstance(data, Mapping):
        code = data.get("code")
        if isinstance(code, str):
            return code
        detail = data.get("detail")
        code = getattr(detail, "code", None)
        if isinstance(code, str):
            return code
    return None


class RefusalLogMiddleware:
    """Writes the security line of every 401, 403 and 429, whichever layer answered."""

    def __init__(self, get_response: Any) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        response: HttpResponseBase = self.get_response(request)
        event = REFUSAL_EVENTS.get(response.status_code)
        if event is not None:
            security(
                event,
                request=request,
                status=response.status_code,
                reason=_response_code(response),
                retry_after=response.get("Retry-After"),
            )
        return response


def login_failed(
    sender: object, credentials: Mapping[str, Any], request: HttpRequest | None = None, **kwargs: Any
) -> None:
    """``user_login_failed``: a failed session (browsable API) login. The API's token
    endpoint answers 401, which ``RefusalLogMiddleware`` logs already, so it is left out here.
    Neither the username nor the password is logged."""
    if request is not None and request.path.startswith("/api/"):
        return
    security("auth.login_failed", request=request, status=None)
