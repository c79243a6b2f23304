"""Reads. The REST views and the AI agent call these same functions.

Every query is scoped by the acting ``user``; another user's conversation is
indistinguishable from a missing one (``Conversation.DoesNotExist``). Functions that return
a lazy QuerySet must be evaluated inside ``rls.user_scope(user)`` (the API views hold one for
the whole request); the others run in one themselves.
"""

import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple

from asgiref.sync import sync_to_async
from django.db.models import QuerySet, Subquery
from django.db.models.functions import Coalesce

from accounts.models import User
from core import audit, replicas
from core.rls import user_scope

from . import history_formats, sizes, statements
from .models import Conversation, ConversationListVersion, Message

HISTORY_DEFAULT_LIMIT = 50
HISTORY_MAX_LIMIT = 500
HISTORY_START_USER = "user"
HISTORY_STARTS = ("any", HISTORY_START_USER)
# max_tokens has no maximum of its own: a larger budget is clamped to this, which bounds
# nothing that exists and is a 64-bit integer on every database (SQLite refuses larger ones).
HISTORY_MAX_TOKENS = 2**62

ChatMessage = dict[str, Any]


def conversation_list(*, user: User) -> QuerySet[Conversation]:
    return Conversation.objects.filter(user=user)


def conversation_list_versioned(*, user: User) -> QuerySet[Conversation]:
    """``conversation_list`` with each row carrying the user's list version as
    ``list_version``: read in the page's own statement (one snapshot, no second query), by
    a sub-select the database evaluates once."""
    version = ConversationListVersion.objects.filter(user=user).values("version")[:1]
    return conversation_list(user=user).annotate(list_version=Coalesce(Subquery(version), 0))


@audit.audited("conversation.list")
@replicas.reads
def conversation_list_version(*, user: User) -> int:
    """The user's conversation list version, which moves with every change to any of their
    conversations (triggers of migration 0011): one row by key, the whole of the list's
    304. 0 for a user who has never had a conversation."""
    with user_scope(user):
        version = ConversationListVersion.objects.filter(user=user).values_list("version", flat=True)
        return next(iter(version), 0)


@audit.audited("conversation.read")
@replicas.reads
def conversation_get(*, user: User, conversation_id: uuid.UUID | str) -> Conversation:
    with user_scope(user):
        return conversation_list(user=user).get(pk=conversation_id)


@audit.audited("conversation.read")
@replicas.reads
def conversation_version(*, user: User, conversation_id: uuid.UUID | str) -> int:
    """The conversation's version, which moves with every change to it or its messages: one
    row by key, the whole of a conditional request's 304. Raises
    ``Conversation.DoesNotExist`` when the conversation is not the user's."""
    with user_scope(user):
        version = statements.conversation_version(
            user_id=user.pk, conversation_id=conversation_id, using=replicas.reads_for(user.pk)
        )
    if version is None:
        raise Conversation.DoesNotExist
    return version


def message_list(*, user: User, conversation_id: uuid.UUID | str) -> QuerySet[Message]:
    """The conversation's messages in append order.

    The query alone does not tell an empty conversation from one that is not the user's:
    callers that found no rows call ``ensure_conversation`` then, which keeps the common
    case to one query.
    """
    return Message.objects.filter(conversation_id=conversation_id, user=user).order_by("seq")


@replicas.reads
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
    *,
    user: User,
    conversation_id: uuid.UUID | str,
    limit: int = HISTORY_DEFAULT_LIMIT,
    max_tokens: int | None = None,
    start: str = "any",
    format: str = history_formats.DEFAULT_FORMAT,  # noqa: A002 (the contract's name)
) -> list[ChatMessage]:
    """The latest messages in chronological order, as input for a model API: the newest
    ``limit``, within ``max_tokens`` when given, from the first user message with
    ``start="user"``, in ``format`` (``openai``, ``anthropic`` or ``responses``; see
    history_formats.py). Raises ``Conversation.DoesNotExist`` when the conversation is not
    the user's, ``ValueError`` for a parameter out of its range."""
    window = history_window(
        user=user,
        conversation_id=conversation_id,
        limit=limit,
        max_tokens=max_tokens,
        start=start,
        format=format,
    )
    return window.messages


@dataclass(frozen=True)
class HistoryWindow:
    messages: list[ChatMessage]
    # The sum of the token counts of the stored messages the window holds.
    tokens: int
    # The conversation's version when the window was read (for its ETag).
    version: int


@replicas.reads
def history_window(
    *,
    user: User,
    conversation_id: uuid.UUID | str,
    limit: int = HISTORY_DEFAULT_LIMIT,
    max_tokens: int | None = None,
    start: str = "any",
    format: str = history_formats.DEFAULT_FORMAT,  # noqa: A002
) -> HistoryWindow:
    """``history_load`` with the window's tokens and version: one statement."""
    _check_history_parameters(limit=limit, max_tokens=max_tokens, start=start, format=format)
    if max_tokens is not None:
        max_tokens = min(max_tokens, HISTORY_MAX_TOKENS)
    with (
        user_scope(user),
        statements.history_rows(
            user_id=user.pk,
            conversation_id=conversation_id,
            limit=limit,
            max_tokens=max_tokens,
            using=replicas.reads_for(user.pk),
        ) as read,
    ):
        if read.version is None:
            raise Conversation.DoesNotExist
        # Newest first, so that API_MAX_RESPONSE_BYTES makes the oldest messages give way
        # (and rows past the cut are never decoded).
        stored: list[history_formats.StoredMessage] = []
        within = sizes.leading_items_within(_rendered(read.rows, stored, format), sizes.answer_budget())
    kept = list(zip(stored, within, strict=False))
    kept.reverse()
    if start == HISTORY_START_USER:
        kept = kept[len(kept) - len(history_formats.start_at_user([message for message, _ in kept])) :]
    return HistoryWindow(
        messages=[item for _, rendered_message in kept for item in rendered_message["items"]],
        tokens=sum(message.token_count for message, _ in kept),
        version=read.version,
    )


def _rendered(
    rows: Iterable[statements.HistoryRow],
    stored: list[history_formats.StoredMessage],
    format: str,  # noqa: A002
) -> Iterator[dict[str, list[ChatMessage]]]:
    """Each row's items in ``format``, as one JSON value that bounds what they add to the
    answer; each row's stored message is kept in ``stored`` as it is taken."""
    for index, (_, role, content, tool_calls, tool_results, token_count) in enumerate(rows):
        message = history_formats.StoredMessage(
            role=role,
            content=content,
            tool_calls=tool_calls,
            tool_results=tool_results,
            token_count=token_count,
        )
        stored.append(message)
        yield {"items": history_formats.render_message(message, format, newest=index == 0)}


def _check_history_parameters(*, limit: int, max_tokens: int | None, start: str, format: str) -> None:  # noqa: A002
    if not 1 <= limit <= HISTORY_MAX_LIMIT:
        raise ValueError(f"limit must be between 1 and {HISTORY_MAX_LIMIT}")
    if max_tokens is not None and max_tokens < 1:
        raise ValueError("max_tokens must be at least 1")
    if start not in HISTORY_STARTS:
        raise ValueError(f"start must be one of {', '.join(HISTORY_STARTS)}")
    if format not in history_formats.FORMATS:
        raise ValueError(f"format must be one of {', '.join(history_formats.FORMATS)}")


@audit.audited("conversation.list")
@replicas.reads
def conversations_newest_first(*, user: User) -> list[Conversation]:
    """All of the user's conversations, most recently active first."""
    with user_scope(user):
        return list(conversation_list(user=user).order_by("-updated_at", "-id"))


@audit.audited("message.list")
@replicas.reads
def messages_in_order(*, user: User, conversation_id: uuid.UUID | str) -> list[Message]:
    """All of the conversation's messages in append order."""
    with user_scope(user):
        messages = list(message_list(user=user, conversation_id=conversation_id))
        ensure_conversation(user=user, conversation_id=conversation_id, found_rows=bool(messages))
    return messages


class MessageContent(NamedTuple):
    """What a message says, without its ids, times and counts: all that the agent
    frameworks' adapters read, so that a whole conversation loads without building models."""

    role: str
    content: str | None
    tool_calls: list[dict[str, Any]] | None
    tool_results: list[dict[str, Any]] | None
    item_shapes: dict[str, Any] | None


@audit.audited("message.list")
@replicas.reads
def message_contents(
    *, user: User, conversation_id: uuid.UUID | str, newest: int | None = None
) -> list[MessageContent]:
    """What the conversation's messages say, in append order; with ``newest``, only that many
    of the newest. One query whenever the conversation has messages."""
    with user_scope(user):
        messages = message_list(user=user, conversation_id=conversation_id)
        if newest is not None:
            messages = messages.order_by("-seq")[:newest]
        rows = list(map(MessageContent._make, messages.values_list(*MessageContent._fields)))
        ensure_conversation(user=user, conversation_id=conversation_id, found_rows=bool(rows))
    return rows if newest is None else rows[::-1]


aconversation_get = sync_to_async(conversation_get)
aconversation_version = sync_to_async(conversation_version)
aconversation_list_version = sync_to_async(conversation_list_version)
aconversations_newest_first = sync_to_async(conversations_newest_first)
amessages_in_order = sync_to_async(messages_in_order)
amessage_contents = sync_to_async(message_contents)
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
