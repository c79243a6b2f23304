"""Reads. The REST views and the AI agent call these same functions.

Every query is scoped by the acting ``user``; another user's conversation is
indistinguishable from a missing one (``Conversation.DoesNotExist``). Functions that return
a lazy QuerySet must be evaluated inside ``rls.user_scope(user)`` (the API views hold one for
the whole request); the others run in one themselves.
"""

import functools
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from asgiref.sync import sync_to_async
from django.db import connections
from django.db.models import QuerySet

from accounts.models import User
from core import audit, sql
from core.rls import user_scope

from . import sizes
from .models import Conversation, Message

HISTORY_DEFAULT_LIMIT = 50
HISTORY_MAX_LIMIT = 500
# Rows of the history taken from the database cursor at a time: a window cut short by
# API_MAX_RESPONSE_BYTES leaves the rest unread (on SQLite, also unfetched).
HISTORY_FETCH_ROWS = 100

ChatMessage = dict[str, Any]


def conversation_list(*, user: User) -> QuerySet[Conversation]:
    return Conversation.objects.filter(user=user)


@audit.audited("conversation.read")
def conversation_get(*, user: User, conversation_id: uuid.UUID | str) -> Conversation:
    with user_scope(user):
        return conversation_list(user=user).get(pk=conversation_id)


@audit.audited("conversation.read")
def conversation_message_count(*, user: User, conversation_id: uuid.UUID | str) -> int:
    """How many messages the conversation has, which versions its history (``seq`` is
    gap-free): one row by key, the whole of a conditional request's 304. Raises
    ``Conversation.DoesNotExist`` when the conversation is not the user's."""
    connection = connections[Conversation.objects.db]
    params = [
        sql.db_value(Conversation, "id", conversation_id, connection),
        sql.db_value(Conversation, "user", user.pk, connection),
    ]
    with user_scope(user), connection.cursor() as cursor:
        cursor.execute(_message_count_sql(connection.alias), params)
        row = cursor.fetchone()
    if row is None:
        raise Conversation.DoesNotExist
    count: int = row[0]
    return count


@functools.cache
def _message_count_sql(using: str) -> str:
    """Written once per database, like ``_history_sql``: it answers every revalidation."""
    connection = connections[using]
    count, key, owner = (
        sql.column(Conversation, name, connection) for name in ("message_count", "id", "user")
    )
    return f"SELECT {count} FROM {sql.table(Conversation, connection)} WHERE {key} = %s AND {owner} = %s"  # noqa: S608


def message_list(*, user: User, conversation_id: uuid.UUID | str) -> QuerySet[Message]:
    """The conversation's messages in append order.

    The query alone does not tell an empty conversation from one that is not the user's:
    callers that found no rows call ``ensure_conversation`` then, which keeps the common
    case to one query.
    """
    return Message.objects.filter(conversation_id=conversation_id, user=user).order_by("seq")


def ensure_conversation(*, user: User, conversation_id: uuid.UUID | str, found_rows: bool) -> None:
    """Raise ``Conversation.DoesNotExist`` unless rows were found in the conversation or
    it is the user's (and empty)."""
    if found_rows:
        return
    with user_scope(user):
        if not conversation_list(user=user).filter(pk=conversation_id).exists():
            raise Conversation.DoesNotExist


@audit.audited("history.load")
def history_load(
    *, user: User, conversation_id: uuid.UUID | str, limit: int = HISTORY_DEFAULT_LIMIT
) -> list[ChatMessage]:
    """The last ``limit`` messages in chronological order, shaped for a chat-completion
    model: ``{"role", "content"}`` plus ``"tool_calls"`` when the message has them.

    Raises ``Conversation.DoesNotExist`` when the conversation is not the user's.
    """
    return history_window(user=user, conversation_id=conversation_id, limit=limit).messages


@dataclass(frozen=True)
class HistoryWindow:
    messages: list[ChatMessage]
    # seq of the newest message (0 for none): messages are immutable and the window is the
    # latest ones, so with the limit it identifies the window's content.
    last_seq: int


def history_window(*, user: User, conversation_id: uuid.UUID | str, limit: int) -> HistoryWindow:
    """``history_load`` with the version of what it returned, for conditional requests."""
    if not 1 <= limit <= HISTORY_MAX_LIMIT:
        raise ValueError(f"limit must be between 1 and {HISTORY_MAX_LIMIT}")
    connection = connections[Message.objects.db]
    params = [
        sql.db_value(Message, "conversation", conversation_id, connection),
        sql.db_value(Message, "user", user.pk, connection),
        limit,
    ]
    with user_scope(user):
        with connection.cursor() as cursor:
            cursor.execute(_history_sql(connection.alias), params)
            rows = cursor.fetchmany(HISTORY_FETCH_ROWS)
            last_seq = rows[0][0] if rows else 0
            # API_MAX_RESPONSE_BYTES: the oldest messages give way, and are never decoded.
            messages = sizes.leading_items_within(_chat_messages(rows, cursor), sizes.answer_budget())
        ensure_conversation(user=user, conversation_id=conversation_id, found_rows=bool(rows))
    messages.reverse()
    return HistoryWindow(messages=messages, last_seq=last_seq)


def _chat_messages(rows: list[tuple[Any, ...]], cursor: Any) -> Iterator[ChatMessage]:
    """The history's rows as chat messages, newest first: ``rows``, then the rest of
    ``cursor`` a batch at a time, each decoded only when it is taken."""
    while rows:
        for _, role, content, tool_calls in rows:
            yield _chat_message(role, content, tool_calls)
        rows = cursor.fetchmany(HISTORY_FETCH_ROWS) if len(rows) == HISTORY_FETCH_ROWS else []


@functools.cache
def _history_sql(using: str) -> str:
    """The newest messages of a conversation, newest first: the agent's hottest read, written
    once per database rather than built through the ORM on every call (which cost more than
    the query)."""
    connection = connections[using]
    names = ("seq", "role", "content", "tool_calls", "conversation", "user")
    seq, role, content, tool_calls, conversation, owner = (sql.column(Message, n, connection) for n in names)
    return (
        f"SELECT {seq}, {role}, {content}, {tool_calls} FROM {sql.table(Message, connection)} "  # noqa: S608
        f"WHERE {conversation} = %s AND {owner} = %s ORDER BY {seq} DESC LIMIT %s"
    )


def _chat_message(role: str, content: str | None, tool_calls: str | None) -> ChatMessage:
    message: ChatMessage = {"role": role, "content": content}
    if tool_calls is not None:  # the raw cursor hands JSON over as text, on both databases
        calls = json.loads(tool_calls)
        if calls:
            message["tool_calls"] = calls
    return message


@audit.audited("conversation.list")
def conversations_newest_first(*, user: User) -> list[Conversation]:
    """All of the user's conversations, most recently active first."""
    with user_scope(user):
        return list(conversation_list(user=user).order_by("-updated_at", "-id"))


@audit.audited("message.list")
def messages_in_order(*, user: User, conversation_id: uuid.UUID | str) -> list[Message]:
    """All of the conversation's messages in append order."""
    with user_scope(user):
        messages = list(message_list(user=user, conversation_id=conversation_id))
        ensure_conversation(user=user, conversation_id=conversation_id, found_rows=bool(messages))
    return messages


aconversation_get = sync_to_async(conversation_get)
aconversation_message_count = sync_to_async(conversation_message_count)
aconversations_newest_first = sync_to_async(conversations_newest_first)
amessages_in_order = sync_to_async(messages_in_order)
ahistory_load = sync_to_async(history_load)


@dataclass(frozen=True)
class UserData:
    """How much of a user's data there is (or was)."""

    conversations: int
    messages: int

    @classmethod
    def from_deleted(cls, deleted: dict[str, int]) -> "UserData":
        """From the per-model counts of ``accounts.services.user_delete``."""
        return cls(
            conversations=deleted.get(Conversation._meta.label, 0),
            messages=deleted.get(Message._meta.label, 0),
        )


def user_data_count(*, user: User) -> UserData:
    """How many conversations and messages ``user`` has: two counts, no rows."""
    with user_scope(user, atomic=True):
        return UserData(
            conversations=Conversation.objects.filter(user=user).count(),
            messages=Message.objects.filter(user=user).count(),
        )
