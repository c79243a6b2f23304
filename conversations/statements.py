"""The hand-written data statements of the conversations app, each beside its ORM twin.

Data goes through the ORM; a statement is written by hand here only where the benchmark
shows that it pays (``bench.inprocess.statement_figures``, the README's Performance
section). Each one's twin is the same query through the QuerySet API: the tests
(``tests/test_statements.py``) hold the two to the same answer on both databases, and the
benchmark times one against the other. The statements are built once per database from the
models' own names (``core.sql``), and their values are adapted and converted as the models'
fields do it. They run in the caller's row-level-security scope.
"""

import functools
import json
import uuid
from collections.abc import Generator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from django.db import DEFAULT_DB_ALIAS, connections
from django.db.models import F, OuterRef, RowRange, Subquery, Sum, Value, Window
from django.db.models.functions import Greatest, Substr

from core import sql

from .models import PREVIEW_MAX_LENGTH, Conversation, Message

# Rows of the history taken from the database cursor at a time: a window cut short by
# API_MAX_RESPONSE_BYTES leaves the rest undecoded (on SQLite, also unfetched).
HISTORY_FETCH_ROWS = 100

# (seq, role, content, tool_calls, tool_results, token_count) of a message.
HistoryRow = tuple[int, str, str | None, Any, Any, int]


@dataclass
class HistoryRows:
    """The window's rows, newest first, taken as they are read; and the conversation's
    version, known before the first row (None when the conversation is not the user's)."""

    version: int | None
    rows: Iterator[HistoryRow]


# -- the history window: the newest messages of a conversation, newest first ------------------


@contextmanager
def history_rows(
    *,
    user_id: uuid.UUID,
    conversation_id: uuid.UUID | str,
    limit: int,
    max_tokens: int | None = None,
    using: str = DEFAULT_DB_ALIAS,
) -> Generator[HistoryRows, None, None]:
    """The conversation's version and its ``limit`` newest messages, newest first, in one
    statement; with ``max_tokens``, only the newest whose ``token_count``s add up to at most
    that (a running sum in SQL, so the rows past the budget are never sent). Rows are
    fetched and decoded a batch at a time as they are taken, while the block runs."""
    connection = connections[using]
    conversation = sql.db_value(Conversation, "id", conversation_id, connection)
    owner = sql.db_value(Conversation, "user", user_id, connection)
    params: list[Any] = [conversation, owner, limit]
    if max_tokens is not None:
        params.append(max_tokens)
    with connection.cursor() as cursor:
        cursor.execute(_history_sql(using, max_tokens is not None), [*params, conversation, owner])
        first = cursor.fetchone()
        version = None if first is None else int(first[0])
        yield HistoryRows(version=version, rows=_decoded(cursor, first))


def _decoded(cursor: Any, first: Any) -> Iterator[HistoryRow]:
    rows = [first] if first is not None else []
    while rows:
        for _, seq, role, content, tool_calls, tool_results, token_count in rows:
            if seq is None:  # the conversation without messages in the window
                return
            # The raw cursor hands JSON over as text, on both databases.
            yield seq, role, content, _json(tool_calls), _json(tool_results), token_count
        rows = cursor.fetchmany(HISTORY_FETCH_ROWS)


def _json(value: str | None) -> Any:
    return None if value is None else json.loads(value)


def history_rows_orm(
    *,
    user_id: uuid.UUID,
    conversation_id: uuid.UUID | str,
    limit: int,
    max_tokens: int | None = None,
    using: str = DEFAULT_DB_ALIAS,
) -> HistoryRows:
    """``history_rows`` through the ORM: two queries, the version then the window (the
    running sum filtered in an outer query, which Django builds for a window function)."""
    version = (
        Conversation.objects.using(using)
        .filter(pk=conversation_id, user_id=user_id)
        .values_list("version", flat=True)
        .first()
    )
    window = (
        Message.objects.using(using).filter(conversation_id=conversation_id, user_id=user_id).order_by("-seq")
    )
    if max_tokens is not None:
        running = Window(Sum("token_count"), order_by=F("seq").desc(), frame=RowRange(start=None, end=0))
        window = window.annotate(running=running).filter(running__lte=max_tokens)
    rows = window.values_list("seq", "role", "content", "tool_calls", "tool_results", "token_count")[:limit]
    return HistoryRows(version=version, rows=iter(rows if version is not None else []))


@functools.cache
def _history_sql(using: str, token_bounded: bool) -> str:
    """One statement: the conversation's row, left-joined to its newest messages (so an empty
    window still tells "yours, no messages" from "not yours"). The running sum goes newest
    first; a window function is evaluated before LIMIT but streams over the backward scan
    of ``(conversation_id, seq)``, so the LIMIT still stops it."""
    connection = connections[using]
    c_table, m_table = sql.table(Conversation, connection), sql.table(Message, connection)
    version, key, c_owner = (sql.column(Conversation, n, connection) for n in ("version", "id", "user"))
    names = ("seq", "role", "content", "tool_calls", "tool_results", "token_count", "conversation", "user")
    seq, role, content, calls, results, tokens, conversation, m_owner = (
        sql.column(Message, n, connection) for n in names
    )
    fields = f"{seq}, {role}, {content}, {calls}, {results}, {tokens}"
    running = (
        f", SUM({tokens}) OVER (ORDER BY {seq} DESC ROWS UNBOUNDED PRECEDING) AS running"
        if token_bounded
        else ""
    )
    window = (
        f"SELECT {fields}{running} FROM {m_table} "  # noqa: S608 (names from the models)
        f"WHERE {conversation} = %s AND {m_owner} = %s ORDER BY {seq} DESC LIMIT %s"
    )
    within = "w.running <= %s" if token_bounded else "TRUE"
    selected = ", ".join(f"w.{name}" for name in (seq, role, content, calls, results, tokens))
    return (
        f"SELECT c.{version}, {selected} FROM {c_table} c "  # noqa: S608 (names from the models)
        f"LEFT JOIN ({window}) w ON {within} "
        f"WHERE c.{key} = %s AND c.{c_owner} = %s ORDER BY w.{seq} DESC"
    )


# -- the revalidation's version -------------------------------------------------------------------


def conversation_version(
    *, user_id: uuid.UUID, conversation_id: uuid.UUID | str, using: str = DEFAULT_DB_ALIAS
) -> int | None:
    """The conversation's ``version``, or None when it is not the user's."""
    connection = connections[using]
    params = [
        sql.db_value(Conversation, "id", conversation_id, connection),
        sql.db_value(Conversation, "user", user_id, connection),
    ]
    with connection.cursor() as cursor:
        cursor.execute(_version_sql(using), params)
        row = cursor.fetchone()
    return None if row is None else int(row[0])


def conversation_version_orm(
    *, user_id: uuid.UUID, conversation_id: uuid.UUID | str, using: str = DEFAULT_DB_ALIAS
) -> int | None:
    """``conversation_version`` through the ORM."""
    version: int | None = (
        Conversation.objects.using(using)
        .filter(pk=conversation_id, user_id=user_id)
        .values_list("version", flat=True)
        .first()
    )
    return version


@functools.cache
def _version_sql(using: str) -> str:
    connection = connections[using]
    version, key, owner = (sql.column(Conversation, n, connection) for n in ("version", "id", "user"))
    return f"SELECT {version} FROM {sql.table(Conversation, connection)} WHERE {key} = %s AND {owner} = %s"  # noqa: S608


# -- the append's count: message_count + n, updated_at moved to now or later ----------------------


@dataclass(frozen=True)
class Newest:
    """The role and content of the newest message an append adds: the conversation's preview."""

    role: str
    content: str | None

    @property
    def preview_content(self) -> str | None:
        return None if self.content is None else self.content[:PREVIEW_MAX_LENGTH]


def count_messages(
    *,
    user_id: uuid.UUID,
    conversation_id: uuid.UUID | str,
    now: datetime,
    added: int = 1,
    newest: Newest | None = None,
    using: str = DEFAULT_DB_ALIAS,
) -> tuple[int, datetime] | None:
    """Add ``added`` to the conversation's ``message_count``, one to its ``version``, move
    its ``updated_at`` to ``now`` or later, and keep its preview, taking the row lock, in one
    UPDATE … RETURNING; the new count and time, or None when the conversation is not the
    user's. Runs in the caller's transaction.

    The preview is ``newest`` at the new time (an append, which must give it); after a
    delete (``added`` below 0, the messages already deleted) it is read back from the
    message that is now the newest (none after a clear); otherwise (a change to a message's
    calls or results, which leaves its role, content and time alone) it stays."""
    mode = _preview_mode(added, newest)
    connection = connections[using]
    params: list[Any] = [added, connection.ops.adapt_datetimefield_value(now)]
    if newest is not None:
        params += [newest.role, newest.preview_content, params[1]]
    elif mode == "read":
        params.append(added)
    params += [
        sql.db_value(Conversation, "id", conversation_id, connection),
        sql.db_value(Conversation, "user", user_id, connection),
    ]
    with connection.cursor() as cursor:
        cursor.execute(_count_messages_sql(using, mode), params)
        row = cursor.fetchone()
    if row is None:
        return None
    count, updated_at = row
    return count, sql.from_db(Conversation, "updated_at", updated_at, connection)


def count_messages_orm(
    *,
    user_id: uuid.UUID,
    conversation_id: uuid.UUID | str,
    now: datetime,
    added: int = 1,
    newest: Newest | None = None,
    using: str = DEFAULT_DB_ALIAS,
) -> tuple[int, datetime] | None:
    """``count_messages`` through the ORM: the UPDATE (which takes the row lock), then a
    SELECT of what it wrote, since Django's ``update()`` returns no values."""
    mode = _preview_mode(added, newest)
    conversation = Conversation.objects.using(using).filter(pk=conversation_id, user_id=user_id)
    changes: dict[str, Any] = {
        "message_count": F("message_count") + added,
        "version": F("version") + 1,
        "updated_at": Greatest(Value(now), F("updated_at")),
    }
    if newest is not None:
        changes.update(
            preview_role=Value(newest.role),
            preview_content=Value(newest.preview_content),
            preview_created_at=Greatest(Value(now), F("updated_at")),
        )
    elif mode == "read":
        remaining = Message.objects.using(using).filter(
            conversation_id=OuterRef("pk"), seq=OuterRef("message_count") + added
        )
        changes.update(
            preview_role=Subquery(remaining.values("role")[:1]),
            preview_content=Subquery(remaining.values(cut=Substr("content", 1, PREVIEW_MAX_LENGTH))[:1]),
            preview_created_at=Subquery(remaining.values("created_at")[:1]),
        )
    if not conversation.update(**changes):
        return None
    count, updated_at = conversation.values_list("message_count", "updated_at").get()
    return count, updated_at


PreviewMode = Literal["new", "read", "keep"]


def _preview_mode(added: int, newest: Newest | None) -> PreviewMode:
    if newest is not None:
        return "new"
    if added > 0:
        raise ValueError("An append gives its newest message, for the conversation's preview.")
    return "read" if added < 0 else "keep"


@functools.cache
def _count_messages_sql(using: str, mode: PreviewMode) -> str:
    connection = connections[using]
    table = sql.table(Conversation, connection)
    count, version, updated_at, key, owner = (
        sql.column(Conversation, n, connection)
        for n in ("message_count", "version", "updated_at", "id", "user")
    )
    role, content, created_at = (
        sql.column(Conversation, f"preview_{n}", connection) for n in ("role", "content", "created_at")
    )
    greatest = "MAX" if connection.vendor == "sqlite" else "GREATEST"  # as Django's Greatest does
    preview = ""
    if mode == "new":
        preview = f", {role} = %s, {content} = %s, {created_at} = {greatest}(%s, {updated_at})"
    elif mode == "read":
        # The message that is now the newest (seq = the new count): one probe of
        # (conversation_id, seq) per column, on a delete only.
        m_table = sql.table(Message, connection)
        m_conversation, m_seq, m_role, m_content, m_created = (
            sql.column(Message, n, connection)
            for n in ("conversation", "seq", "role", "content", "created_at")
        )
        newest = f"FROM {m_table} WHERE {m_conversation} = {table}.{key} AND {m_seq} = {table}.{count} + %s"
        preview = (
            f", ({role}, {content}, {created_at}) = (SELECT {m_role}, "  # noqa: S608 (names from the models)
            f"SUBSTR({m_content}, 1, {PREVIEW_MAX_LENGTH}), {m_created} {newest})"
        )
    return (
        f"UPDATE {table} "  # noqa: S608 (names from the model)
        f"SET {count} = {count} + %s, {version} = {version} + 1, "
        f"{updated_at} = {greatest}(%s, {updated_at}){preview} "
        f"WHERE {key} = %s AND {owner} = %s RETURNING {count}, {updated_at}"
    )
