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
from datetime import datetime
from typing import Any

from django.db import DEFAULT_DB_ALIAS, connections
from django.db.models import F, Value
from django.db.models.functions import Greatest

from core import sql

from .models import Conversation, Message

# Rows of the history taken from the database cursor at a time: a window cut short by
# API_MAX_RESPONSE_BYTES leaves the rest undecoded (on SQLite, also unfetched).
HISTORY_FETCH_ROWS = 100

# (seq, role, content, tool_calls) of a message.
HistoryRow = tuple[int, str, str | None, Any]


# -- the history window: the newest messages of a conversation, newest first ------------------


def history_rows(
    *, user_id: uuid.UUID, conversation_id: uuid.UUID | str, limit: int, using: str = DEFAULT_DB_ALIAS
) -> Generator[HistoryRow, None, None]:
    """The conversation's ``limit`` newest messages, newest first, fetched and decoded a
    batch at a time as they are taken."""
    connection = connections[using]
    params = [
        sql.db_value(Message, "conversation", conversation_id, connection),
        sql.db_value(Message, "user", user_id, connection),
        limit,
    ]
    with connection.cursor() as cursor:
        cursor.execute(_history_sql(using), params)
        while rows := cursor.fetchmany(HISTORY_FETCH_ROWS):
            for seq, role, content, tool_calls in rows:
                # The raw cursor hands JSON over as text, on both databases.
                yield seq, role, content, None if tool_calls is None else json.loads(tool_calls)


def history_rows_orm(
    *, user_id: uuid.UUID, conversation_id: uuid.UUID | str, limit: int, using: str = DEFAULT_DB_ALIAS
) -> Iterator[HistoryRow]:
    """``history_rows`` through the ORM."""
    return iter(
        Message.objects.using(using)
        .filter(conversation_id=conversation_id, user_id=user_id)
        .order_by("-seq")
        .values_list("seq", "role", "content", "tool_calls")[:limit]
    )


@functools.cache
def _history_sql(using: str) -> str:
    connection = connections[using]
    names = ("seq", "role", "content", "tool_calls", "conversation", "user")
    seq, role, content, tool_calls, conversation, owner = (sql.column(Message, n, connection) for n in names)
    return (
        f"SELECT {seq}, {role}, {content}, {tool_calls} FROM {sql.table(Message, connection)} "  # noqa: S608
        f"WHERE {conversation} = %s AND {owner} = %s ORDER BY {seq} DESC LIMIT %s"
    )


# -- the revalidation's message count --------------------------------------------------------------


def message_count(
    *, user_id: uuid.UUID, conversation_id: uuid.UUID | str, using: str = DEFAULT_DB_ALIAS
) -> int | None:
    """The conversation's ``message_count``, or None when it is not the user's."""
    connection = connections[using]
    params = [
        sql.db_value(Conversation, "id", conversation_id, connection),
        sql.db_value(Conversation, "user", user_id, connection),
    ]
    with connection.cursor() as cursor:
        cursor.execute(_message_count_sql(using), params)
        row = cursor.fetchone()
    return None if row is None else int(row[0])


def message_count_orm(
    *, user_id: uuid.UUID, conversation_id: uuid.UUID | str, using: str = DEFAULT_DB_ALIAS
) -> int | None:
    """``message_count`` through the ORM."""
    try:
        count: int = (
            Conversation.objects.using(using)
            .filter(pk=conversation_id, user_id=user_id)
            .values_list("message_count", flat=True)
            .get()
        )
    except Conversation.DoesNotExist:
        return None
    return count


@functools.cache
def _message_count_sql(using: str) -> str:
    connection = connections[using]
    count, key, owner = (sql.column(Conversation, n, connection) for n in ("message_count", "id", "user"))
    return f"SELECT {count} FROM {sql.table(Conversation, connection)} WHERE {key} = %s AND {owner} = %s"  # noqa: S608


# -- the append's count: message_count + 1, updated_at moved to now or later ----------------------


def count_message(
    *, user_id: uuid.UUID, conversation_id: uuid.UUID | str, now: datetime, using: str = DEFAULT_DB_ALIAS
) -> tuple[int, datetime] | None:
    """Add one to the conversation's ``message_count`` and move its ``updated_at`` to ``now``
    or later, taking the row lock, in one UPDATE … RETURNING; the new values, or None when
    the conversation is not the user's. Runs in the caller's transaction."""
    connection = connections[using]
    params = [
        connection.ops.adapt_datetimefield_value(now),
        sql.db_value(Conversation, "id", conversation_id, connection),
        sql.db_value(Conversation, "user", user_id, connection),
    ]
    with connection.cursor() as cursor:
        cursor.execute(_count_message_sql(using), params)
        row = cursor.fetchone()
    if row is None:
        return None
    seq, updated_at = row
    return seq, sql.from_db(Conversation, "updated_at", updated_at, connection)


def count_message_orm(
    *, user_id: uuid.UUID, conversation_id: uuid.UUID | str, now: datetime, using: str = DEFAULT_DB_ALIAS
) -> tuple[int, datetime] | None:
    """``count_message`` through the ORM: the UPDATE (which takes the row lock), then a
    SELECT of what it wrote, since Django's ``update()`` returns no values."""
    conversation = Conversation.objects.using(using).filter(pk=conversation_id, user_id=user_id)
    updated = conversation.update(
        message_count=F("message_count") + 1, updated_at=Greatest(Value(now), F("updated_at"))
    )
    if not updated:
        return None
    seq, updated_at = conversation.values_list("message_count", "updated_at").get()
    return seq, updated_at


@functools.cache
def _count_message_sql(using: str) -> str:
    connection = connections[using]
    count, updated_at, key, owner = (
        sql.column(Conversation, n, connection) for n in ("message_count", "updated_at", "id", "user")
    )
    greatest = "MAX" if connection.vendor == "sqlite" else "GREATEST"  # as Django's Greatest does
    return (
        f"UPDATE {sql.table(Conversation, connection)} "  # noqa: S608 (names from the model)
        f"SET {count} = {count} + 1, {updated_at} = {greatest}(%s, {updated_at}) "
        f"WHERE {key} = %s AND {owner} = %s RETURNING {count}, {updated_at}"
    )
