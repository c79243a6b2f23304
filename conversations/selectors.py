"""Reads. The REST views and the AI agent call these same functions.

Every query is scoped by the acting ``user``; another user's conversation is
indistinguishable from a missing one (``Conversation.DoesNotExist``). Functions that return
a lazy QuerySet must be evaluated inside ``rls.user_scope(user)`` (the API views hold one for
the whole request); the others run in one themselves.
"""

import itertools
import uuid
from dataclasses import dataclass
from typing import Any

from asgiref.sync import sync_to_async
from django.db.models import QuerySet

from accounts.models import User
from core import audit
from core.rls import user_scope

from . import sizes, statements
from .models import Conversation, Message

HISTORY_DEFAULT_LIMIT = 50
HISTORY_MAX_LIMIT = 500

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
    with user_scope(user):
        count = statements.message_count(user_id=user.pk, conversation_id=conversation_id)
    if count is None:
        raise Conversation.DoesNotExist
    return count


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
    with user_scope(user):
        rows = statements.history_rows(user_id=user.pk, conversation_id=conversation_id, limit=limit)
        newest = next(rows, None)
        last_seq = newest[0] if newest else 0
        # API_MAX_RESPONSE_BYTES: the oldest messages give way, and are never decoded.
        taken = itertools.chain([newest], rows) if newest else rows
        chat = (_chat_message(role, content, calls) for _, role, content, calls in taken)
        messages = sizes.leading_items_within(chat, sizes.answer_budget())
        rows.close()
        ensure_conversation(user=user, conversation_id=conversation_id, found_rows=newest is not None)
    messages.reverse()
    return HistoryWindow(messages=messages, last_seq=last_seq)


def _chat_message(role: str, content: str | None, tool_calls: Any) -> ChatMessage:
    message: ChatMessage = {"role": role, "content": content}
    if tool_calls:
        message["tool_calls"] = tool_calls
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
