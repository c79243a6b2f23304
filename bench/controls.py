"""Control F1: bare Django views that answer like the service with the identical SQL.

Each view runs the statements the service runs for the same request (the simplejwt user
lookup, then the history, list or append statements, as captured from the service and
recorded in ``results.json``) through ``connection.cursor()`` (raw psycopg behind Django's
pool), and builds the same JSON by hand. They go through the same middleware, settings and
server, so the gap between the service (S) and these views is what DRF, the ORM and the
serializers cost: F1 is the floor for this stack.

Row-level security as the service does it: the user's lookup also sets ``app.user_id`` for
the session (``accounts.selectors.user_lookup``), reads then run with no transaction, and an
append is one transaction of an UPDATE … RETURNING and an INSERT.

Also here: the service's own list page without the preview (row 12b); the ``LimitOffset``
control (``?offset=N``) and its keyset twin (``?after=SEQ``) on the message list, to show
what keyset pagination saves at depth.
"""

import hashlib
import json
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import jwt
from django.conf import settings
from django.core import signing
from django.db import connection, transaction
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt

from accounts.models import User
from conversations.history_formats import DEFAULT_FORMAT, StoredMessage, render
from conversations.ids import uuid7
from conversations.models import Conversation, ConversationListVersion, Message
from conversations.serializers import ConversationSerializer
from conversations.tokens import message_tokens
from conversations.views import ConversationViewSet

TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


CURSOR_SALT = "conversations.pagination.cursor"


def _columns(table: str, names: tuple[str, ...]) -> str:
    return ", ".join(f'"{table}"."{name}"' for name in names)


U = User._meta.db_table
M = Message._meta.db_table
C = Conversation._meta.db_table
USER_COLUMNS = tuple(f.column for f in User._meta.concrete_fields)
CONV_COLUMNS = (
    "id",
    "user_id",
    "title",
    "created_at",
    "updated_at",
    "message_count",
    "archived",
    "pinned",
    "metadata",
    "preview_role",
    "preview_content",
    "preview_created_at",
)
LV = ConversationListVersion._meta.db_table
MSG_COLUMNS = (
    "id",
    "conversation_id",
    "user_id",
    "role",
    "content",
    "tool_calls",
    "tool_results",
    "token_count",
    "created_at",
    "seq",
)
WINDOW_COLUMNS = ("seq", "role", "content", "tool_calls", "tool_results", "token_count")
WINDOW = ", ".join(f'"{name}"' for name in WINDOW_COLUMNS)
WINDOW_OUT = ", ".join(f'w."{name}"' for name in WINDOW_COLUMNS)
# The statements the service makes today (see queries_per_request in results.json).
IDENTITY = f'set_config(\'app.user_id\', "{U}"."id"::text, false) AS rls_identity'
USER_SQL = f'SELECT {_columns(U, USER_COLUMNS)}, {IDENTITY} FROM "{U}" WHERE "{U}"."id" = %s'  # noqa: S608
HISTORY_SQL = (
    f'SELECT c."version", {WINDOW_OUT} FROM "{C}" c '  # noqa: S608
    f'LEFT JOIN (SELECT {WINDOW} FROM "{M}" WHERE "conversation_id" = %s AND "user_id" = %s '
    'ORDER BY "seq" DESC LIMIT %s) w ON TRUE '
    'WHERE c."id" = %s AND c."user_id" = %s ORDER BY w."seq" DESC'
)
VERSION_SQL = f'SELECT "version" FROM "{C}" WHERE "id" = %s AND "user_id" = %s'  # noqa: S608
EXISTS_SQL = f'SELECT 1 AS "a" FROM "{C}" WHERE ("{C}"."user_id" = %s AND "{C}"."id" = %s) LIMIT 1'  # noqa: S608
LIST_SQL = (
    f'SELECT {_columns(C, CONV_COLUMNS)}, COALESCE((SELECT U0."version" FROM "{LV}" U0 '  # noqa: S608
    f'WHERE U0."user_id" = %s LIMIT 1), 0) AS "list_version" FROM "{C}" '
    f'WHERE ("{C}"."user_id" = %s AND NOT "{C}"."archived") '
    f'ORDER BY "{C}"."updated_at" DESC, "{C}"."id" DESC LIMIT %s'
)
MSG_WHERE = f'"{M}"."conversation_id" = %s AND "{M}"."user_id" = %s'
OFFSET_SQL = (
    f'SELECT {_columns(M, MSG_COLUMNS)} FROM "{M}" WHERE ({MSG_WHERE}) '  # noqa: S608
    f'ORDER BY "{M}"."seq" ASC LIMIT %s OFFSET %s'
)
KEYSET_SQL = (
    f'SELECT {_columns(M, MSG_COLUMNS)} FROM "{M}" WHERE ({MSG_WHERE} AND "{M}"."seq" > %s) '  # noqa: S608
    f'ORDER BY "{M}"."seq" ASC LIMIT %s'
)
COUNT_SQL = (
    f'UPDATE "{C}" SET "message_count" = "message_count" + 1, "version" = "version" + 1, '  # noqa: S608
    '"updated_at" = GREATEST(%s, "updated_at") '
    'WHERE "id" = %s AND "user_id" = %s RETURNING "message_count", "updated_at"'
)
INSERT_SQL = (
    f'INSERT INTO "{M}" ("id", "conversation_id", "user_id", "seq", "role", "content", "tool_calls", '  # noqa: S608
    '"tool_results", "token_count", "created_at") VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)'
)
ALL_SQL = {
    "user": USER_SQL,
    "history": HISTORY_SQL,
    "exists": EXISTS_SQL,
    "version": VERSION_SQL,
    "list": LIST_SQL,
    "offset": OFFSET_SQL,
    "keyset": KEYSET_SQL,
    "append_count": COUNT_SQL,
    "append_insert": INSERT_SQL,
}

NOT_FOUND = {"detail": "Not found."}
UNAUTHORIZED = {"detail": "Given token not valid for any token type"}
IS_ACTIVE = [f.name for f in User._meta.concrete_fields].index("is_active")


def json_response(data: Any, status: int = 200) -> HttpResponse:
    body = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return HttpResponse(body.encode(), status=status, content_type="application/json")


def authenticate(request: HttpRequest) -> uuid.UUID | None:
    """The caller's user id: the token checked as simplejwt checks it (HS256, an access
    token), then the same user SELECT simplejwt makes."""
    header = request.META.get("HTTP_AUTHORIZATION", "")
    if not header.startswith("Bearer "):
        return None
    try:
        claims = jwt.decode(header[7:], settings.SIMPLE_JWT["SIGNING_KEY"], algorithms=["HS256"])
        user_id = uuid.UUID(claims["user_id"])
    except (jwt.PyJWTError, KeyError, ValueError, TypeError):
        return None
    if claims.get("token_type") != "access":
        return None
    with connection.cursor() as cursor:
        cursor.execute(USER_SQL, [user_id])
        row = cursor.fetchone()
    if row is None or not row[IS_ACTIVE]:
        return None
    return user_id


Handler = Callable[..., HttpResponse]


def authenticated(view: Handler) -> Handler:
    def wrapper(request: HttpRequest, **kwargs: Any) -> HttpResponse:
        user_id = authenticate(request)
        if user_id is None:
            return json_response(UNAUTHORIZED, status=401)
        return view(request, user_id=user_id, **kwargs)

    return csrf_exempt(wrapper)


def _time(value: datetime) -> str:
    return value.astimezone(UTC).strftime(TIME_FORMAT)


def _load_json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def _conversation_missing(cursor: Any, user_id: uuid.UUID, conversation_id: uuid.UUID) -> bool:
    cursor.execute(EXISTS_SQL, [user_id, conversation_id])
    return cursor.fetchone() is None


@authenticated
def history(request: HttpRequest, *, user_id: uuid.UUID, conversation_id: uuid.UUID) -> HttpResponse:
    """The history page (the default ``openai`` format) with an ``ETag`` (the conversation's
    version), and the service's 304: with ``If-None-Match``, the version decides before the
    page is read. The items come from the service's own format module: what F1 leaves out
    is DRF, the ORM and the serializers, not the rendering every answer needs."""
    limit = min(500, max(1, int(request.GET.get("limit", "50"))))
    with connection.cursor() as cursor:
        if "HTTP_IF_NONE_MATCH" in request.META:
            cursor.execute(VERSION_SQL, [conversation_id, user_id])
            version = cursor.fetchone()
            if version is not None and request.META["HTTP_IF_NONE_MATCH"] == f'"{version[0]}"':
                return HttpResponse(status=304, headers={"ETag": f'"{version[0]}"'})
        cursor.execute(HISTORY_SQL, [conversation_id, user_id, limit, conversation_id, user_id])
        rows = cursor.fetchall()
    if not rows:
        return json_response(NOT_FOUND, status=404)
    window = [
        StoredMessage(
            role=role,
            content=content,
            tool_calls=_load_json(calls),
            tool_results=_load_json(results),
            token_count=tokens,
        )
        for _, seq, role, content, calls, results, tokens in reversed(rows)
        if seq is not None
    ]
    body = {
        "conversation_id": str(conversation_id),
        "format": DEFAULT_FORMAT,
        "tokens": sum(message.token_count for message in window),
        "messages": render(window, DEFAULT_FORMAT),
    }
    response = json_response(body)
    response["ETag"] = f'"{rows[0][0]}"'
    return response


def _conversation_json(row: tuple[Any, ...]) -> dict[str, Any]:
    cid, uid, title, created_at, updated_at, count, archived, pinned, metadata = row[:9]
    preview_role, preview_content, preview_created_at = row[9:12]
    preview = None
    if preview_role is not None:
        preview = {"role": preview_role, "content": preview_content, "created_at": _time(preview_created_at)}
    return {
        "id": str(cid),
        "user_id": str(uid),
        "title": title,
        "created_at": _time(created_at),
        "updated_at": _time(updated_at),
        "message_count": count,
        "archived": archived,
        "pinned": pinned,
        "metadata": _load_json(metadata),
        "preview": preview,
    }


@authenticated
def conversation_list(request: HttpRequest, *, user_id: uuid.UUID) -> HttpResponse:
    """The first page of the list in the default ordering, with a signed next cursor."""
    page_size = min(100, max(1, int(request.GET.get("page_size", "20"))))
    with connection.cursor() as cursor:
        cursor.execute(LIST_SQL, [user_id, user_id, page_size + 1])
        rows = cursor.fetchall()
    results = [_conversation_json(row) for row in rows[:page_size]]
    next_link = None
    if len(rows) > page_size:
        edge = rows[page_size - 1]
        key = [edge[4].isoformat(), str(edge[0])]
        scope = hashlib.blake2b(f"conversation:{user_id}".encode(), digest_size=8).hexdigest()
        payload = {"o": "-updated_at", "k": key, "r": False, "s": scope}  # the service's cursor
        next_link = request.build_absolute_uri(f"?cursor={signing.dumps(payload, salt=CURSOR_SALT)}")
    return json_response({"next": next_link, "previous": None, "results": results})


def _message_json(row: tuple[Any, ...]) -> dict[str, Any]:
    mid, cid, uid, role, content, tool_calls, tool_results, token_count, created_at = row[:9]
    return {
        "id": str(mid),
        "conversation_id": str(cid),
        "user_id": str(uid),
        "role": role,
        "content": content,
        "tool_calls": _load_json(tool_calls),
        "tool_results": _load_json(tool_results),
        "token_count": token_count,
        "created_at": _time(created_at),
    }


def _message_page(request: HttpRequest, user_id: uuid.UUID, conversation_id: uuid.UUID) -> HttpResponse:
    """A page of the message list: ``?offset=N`` (LIMIT/OFFSET) or ``?after=SEQ`` (keyset)."""
    page_size = min(200, max(1, int(request.GET.get("page_size", "50"))))
    with connection.cursor() as cursor:
        if "after" in request.GET:
            cursor.execute(KEYSET_SQL, [conversation_id, user_id, int(request.GET["after"]), page_size + 1])
        else:
            offset = max(0, int(request.GET.get("offset", "0")))
            cursor.execute(OFFSET_SQL, [conversation_id, user_id, page_size + 1, offset])
        rows = cursor.fetchall()
        if not rows and _conversation_missing(cursor, user_id, conversation_id):
            return json_response(NOT_FOUND, status=404)
    more = len(rows) > page_size
    rows = rows[:page_size]
    next_link = request.build_absolute_uri(f"?after={rows[-1][9]}") if more and rows else None
    return json_response({"next": next_link, "previous": None, "results": [_message_json(r) for r in rows]})


def _append(request: HttpRequest, user_id: uuid.UUID, conversation_id: uuid.UUID) -> HttpResponse:
    try:
        body = json.loads(request.body)
    except ValueError:
        return json_response({"detail": "JSON parse error"}, status=400)
    role, content, tool_calls = body.get("role"), body.get("content"), body.get("tool_calls")
    if role not in ("user", "assistant"):
        return json_response({"role": ["Not a valid choice."]}, status=400)
    if not (content is None or (isinstance(content, str) and len(content) <= 10_000)):
        return json_response({"content": ["Not a valid string."]}, status=400)
    if not (tool_calls is None or (isinstance(tool_calls, list) and tool_calls and role == "assistant")):
        return json_response({"tool_calls": ["Not valid."]}, status=400)
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(COUNT_SQL, [timezone.now(), conversation_id, user_id])
        row = cursor.fetchone()
        if row is None:
            return json_response(NOT_FOUND, status=404)
        seq, created_at = row
        message_id = uuid7()
        tool_json = json.dumps(tool_calls) if tool_calls is not None else None
        token_count = message_tokens(content, tool_calls, None)
        values = [message_id, conversation_id, user_id, seq, role, content, tool_json, None, token_count]
        cursor.execute(INSERT_SQL, [*values, created_at])
    message = (message_id, conversation_id, user_id, role, content, tool_calls, None, token_count, created_at)
    return json_response(_message_json(message), status=201)


@authenticated
def messages(request: HttpRequest, *, user_id: uuid.UUID, conversation_id: uuid.UUID) -> HttpResponse:
    if request.method == "POST":
        return _append(request, user_id, conversation_id)
    return _message_page(request, user_id, conversation_id)


class ConversationWithoutPreview(ConversationSerializer):
    preview = None  # type: ignore[assignment]  # DRF removes a declared field set to None


class ConversationListWithoutPreview(ConversationViewSet):
    """Control for row 12b: the service's own list page (the same viewset, filters, keyset
    page, ETag and middleware) with the preview neither read nor rendered, so that the gap
    to the service's list is what the preview costs."""

    def get_queryset(self) -> Any:
        return super().get_queryset().defer("preview_role", "preview_content", "preview_created_at")

    def get_serializer_class(self) -> Any:
        return ConversationWithoutPreview


conversation_list_without_preview = ConversationListWithoutPreview.as_view(
    {"get": "list"}, basename="conversation-without-preview"
)
