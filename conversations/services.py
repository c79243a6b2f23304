"""Writes. The REST views and the AI agent call these same functions.

Every function takes the acting ``user`` and touches only that user's rows: another user's
conversation is indistinguishable from a missing one (``Conversation.DoesNotExist``).
The ``a``-prefixed twins run the same code from asyncio, in Django's sync thread, since
transactions and row locks are not available to Django's async ORM.
"""

import hashlib
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from asgiref.sync import sync_to_async
from django.db import IntegrityError, transaction
from django.db.models import F
from django.db.models.functions import Greatest
from django.utils import timezone

from accounts.models import User
from core import audit
from core.rls import user_scope

from . import statements, tokens
from . import tool_results as tool_results_rules
from .models import Conversation, IdempotencyKey, Message, Role
from .tool_results import ToolCalls, ToolResults

# The most messages one append takes (a JSON array body), all in one transaction.
BATCH_MAX_MESSAGES = 100

ItemShapes = dict[str, Any]
# A conversation's metadata, as the REST serializer validates it.
Metadata = dict[str, str]


class IdempotencyKeyReused(Exception):
    """The key was used before with another conversation or another request body."""


@audit.audited("conversation.create")
def conversation_create(*, user: User, title: str = "", metadata: Metadata | None = None) -> Conversation:
    with user_scope(user, atomic=True):
        return Conversation.objects.create(user=user, title=title, metadata=metadata or {})


# What conversation_update leaves alone when it is not given.
UNCHANGED: Any = object()


@audit.audited("conversation.update")
def conversation_update(
    *,
    user: User,
    conversation_id: uuid.UUID | str,
    title: str = UNCHANGED,
    archived: bool = UNCHANGED,
    pinned: bool = UNCHANGED,
    metadata: Metadata = UNCHANGED,
) -> Conversation:
    """Change what is given of a conversation's title, flags and metadata (replaced whole),
    in one UPDATE. Every change moves its version (its ETags go stale); a new title is
    activity and moves ``updated_at`` too, never backwards, the flags and metadata do not.
    Raises ``Conversation.DoesNotExist`` when it is not ``user``'s."""
    given = {"title": title, "archived": archived, "pinned": pinned, "metadata": metadata}
    changes: dict[str, Any] = {name: value for name, value in given.items() if value is not UNCHANGED}
    changes["version"] = F("version") + 1
    if title is not UNCHANGED:
        changes["updated_at"] = Greatest(timezone.now(), F("updated_at"))
    with user_scope(user, atomic=True):
        if not Conversation.objects.filter(pk=conversation_id, user=user).update(**changes):
            raise Conversation.DoesNotExist
        return Conversation.objects.get(pk=conversation_id, user=user)


@audit.audited("conversation.delete")
def conversation_delete(*, user: User, conversation_id: uuid.UUID | str) -> None:
    """Delete a conversation with its messages in one transaction, without loading them."""
    with user_scope(user, atomic=True):
        deleted, _ = Conversation.objects.filter(pk=conversation_id, user=user).delete()
    if not deleted:
        raise Conversation.DoesNotExist


@dataclass(frozen=True, slots=True)
class NewMessage:
    """One message to append, as validated by the caller's layer (the REST serializer)."""

    role: str
    content: str | None
    tool_calls: ToolCalls | None = None
    tool_results: ToolResults | None = None
    # An integration's record of the items the message came from (``Message.item_shapes``).
    item_shapes: ItemShapes | None = None

    def as_body(self) -> dict[str, Any]:
        """What an idempotency key of a Python caller is bound to: the message's fields
        (``tool_results`` and ``item_shapes`` only when given, so that keys of earlier
        versions still replay)."""
        body: dict[str, Any] = {"role": self.role, "content": self.content, "tool_calls": self.tool_calls}
        if self.tool_results is not None:
            body["tool_results"] = self.tool_results
        if self.item_shapes is not None:
            body["item_shapes"] = self.item_shapes
        return body


@audit.audited("message.append")
def message_append(
    *,
    user: User,
    conversation_id: uuid.UUID | str,
    role: str,
    content: str | None,
    tool_calls: ToolCalls | None = None,
    tool_results: ToolResults | None = None,
) -> Message:
    """Append a message to one of ``user``'s conversations and return it."""
    message = NewMessage(role=role, content=content, tool_calls=tool_calls, tool_results=tool_results)
    with user_scope(user, atomic=True):
        return _insert_messages(user=user, conversation_id=conversation_id, messages=[message])[0]


@audit.audited("message.append")
def messages_append(
    *, user: User, conversation_id: uuid.UUID | str, messages: Sequence[NewMessage]
) -> list[Message]:
    """Append ``messages`` (1 to ``BATCH_MAX_MESSAGES``), in order, in one transaction: all of
    them or none. One agent turn (its user message, the assistant's calls with their
    results, its answer) is never stored half."""
    with user_scope(user, atomic=True):
        return _insert_messages(user=user, conversation_id=conversation_id, messages=messages)


@audit.audited("message.append")
def messages_append_idempotent(
    *,
    user: User,
    conversation_id: uuid.UUID | str,
    messages: Sequence[NewMessage],
    idempotency_key: str,
    request_body: Any = None,
) -> tuple[list[Message], bool]:
    """Append at most once per ``(user, idempotency_key)``; return the messages and whether
    they were replayed from an earlier call.

    ``request_body`` is what the key is bound to (the REST view passes the parsed JSON
    body); by default, the messages' own fields. The same key with another conversation or
    body raises ``IdempotencyKeyReused``; a key whose messages were deleted since (an undo,
    a clear) raises ``IdempotencyKeyStale``. Duplicates racing for one conversation queue on
    its row lock and the later ones replay; a race across conversations ends in the unique
    constraint on ``(user, key)`` and is resolved by reading the winner.
    """
    body = request_body if request_body is not None else [message.as_body() for message in messages]
    fingerprint = _fingerprint(body)
    with user_scope(user, atomic=True):
        try:
            # A savepoint: a unique violation on the key must not end the caller's transaction.
            with transaction.atomic():
                _lock_conversation(user=user, conversation_id=conversation_id)
                earlier = IdempotencyKey.objects.filter(user=user, key=idempotency_key).first()
                if earlier is None:
                    created = _insert_messages(user=user, conversation_id=conversation_id, messages=messages)
                    IdempotencyKey.objects.create(
                        user=user,
                        key=idempotency_key,
                        conversation_id=conversation_id,
                        fingerprint=fingerprint,
                        message_ids=[str(message.pk) for message in created],
                    )
                    return created, False
        except IntegrityError:
            earlier = IdempotencyKey.objects.filter(user=user, key=idempotency_key).first()
            if earlier is None:
                raise
        return _replay(earlier, user=user, conversation_id=conversation_id, fingerprint=fingerprint), True


@audit.audited("message.append")
def message_append_idempotent(
    *,
    user: User,
    conversation_id: uuid.UUID | str,
    role: str,
    content: str | None,
    tool_calls: ToolCalls | None = None,
    tool_results: ToolResults | None = None,
    idempotency_key: str,
    request_body: Any = None,
) -> tuple[Message, bool]:
    """``messages_append_idempotent`` of one message (bound by default to its own fields)."""
    message = NewMessage(role=role, content=content, tool_calls=tool_calls, tool_results=tool_results)
    created, replayed = messages_append_idempotent(
        user=user,
        conversation_id=conversation_id,
        messages=[message],
        idempotency_key=idempotency_key,
        request_body=request_body if request_body is not None else message.as_body(),
    )
    return created[0], replayed


@audit.audited("tool_results.record")
def tool_results_record(
    *,
    user: User,
    conversation_id: uuid.UUID | str,
    message_id: uuid.UUID | str,
    tool_results: ToolResults,
    result_shapes: ItemShapes | None = None,
) -> Message:
    """Record results of calls of one of the conversation's messages that have none yet,
    and return the message. Like an append, it moves the conversation's ``updated_at`` and
    ``version`` (every earlier ETag goes stale). ``result_shapes`` (an integration's, by call
    id) join the message's ``item_shapes``.

    Raises ``Conversation.DoesNotExist``/``Message.DoesNotExist`` for what is not the user's,
    ``ToolResultsInvalid`` and ``ToolResultAlreadyRecorded`` (nothing recorded) otherwise.
    """
    with user_scope(user, atomic=True):
        # The row lock first, so that two recordings for one call queue and the second sees
        # the first; every check before any write, so that a refusal leaves nothing behind
        # even in a caller's longer transaction (where this block is no savepoint).
        _lock_conversation(user=user, conversation_id=conversation_id)
        message = Message.objects.get(pk=message_id, conversation_id=conversation_id, user=user)
        new = [tool_results_rules.normalized(result) for result in tool_results]
        message.tool_results = tool_results_rules.checked(message.tool_calls, new, message.tool_results)
        message.token_count += tokens.tool_results_tokens(new)
        changed = ["tool_results", "token_count"]
        if result_shapes:
            shapes = message.item_shapes or {}
            message.item_shapes = {**shapes, "results": {**shapes.get("results", {}), **result_shapes}}
            changed.append("item_shapes")
        message.save(update_fields=changed)
        _count_messages(user=user, conversation_id=conversation_id, added=0)
        return message


@audit.audited("tool_result.pop")
def tool_result_pop(
    *, user: User, conversation_id: uuid.UUID | str, message_id: uuid.UUID | str, tool_call_id: str
) -> Message:
    """Delete the result of the call ``tool_call_id`` of the conversation's newest message
    (undo a recorded result, as ``message_pop`` undoes a message) and return the message.

    Raises ``MessageNotNewest`` for an older message, ``ToolResultsInvalid`` when the call
    has no result (nothing deleted either way).
    """
    with user_scope(user, atomic=True):
        message = _newest_message(user=user, conversation_id=conversation_id, message_id=message_id)
        results = [r for r in message.tool_results or () if r["tool_call_id"] != tool_call_id]
        if len(results) == len(message.tool_results or ()):
            raise tool_results_rules.ToolResultsInvalid(f"The tool call {tool_call_id!r} has no result.")
        message.tool_results = results or None
        return _message_shrunk(message, user=user, shapes="results", tool_call_id=tool_call_id)


@audit.audited("tool_calls.add")
def tool_calls_add(
    *,
    user: User,
    conversation_id: uuid.UUID | str,
    message_id: uuid.UUID | str,
    tool_calls: ToolCalls,
    call_shapes: ItemShapes | None = None,
) -> Message:
    """Add ``tool_calls`` (shaped as the caller's layer validated them) to the conversation's
    newest message, an assistant message none of whose calls has a result yet, and return the
    message: calls of one model response that come in two writes, or one taken back by
    ``tool_call_pop`` and put back. ``call_shapes`` (an integration's, by call id) join the
    message's ``item_shapes``.

    Raises ``MessageNotNewest`` for an older message, ``ToolCallRefused`` for a user message,
    a message with results, or a call id the message has already (nothing added).
    """
    with user_scope(user, atomic=True):
        message = _newest_message(user=user, conversation_id=conversation_id, message_id=message_id)
        if message.role != Role.ASSISTANT or message.tool_results:
            raise ToolCallRefused("Calls are added to an assistant message whose calls have no results yet.")
        calls = [*(message.tool_calls or ()), *tool_calls]
        if len({call["id"] for call in calls}) < len(calls):
            raise ToolCallRefused("A message's tool call ids are unique.")
        message.tool_calls = calls
        if call_shapes:
            shapes = message.item_shapes or {}
            message.item_shapes = {**shapes, "calls": {**shapes.get("calls", {}), **call_shapes}}
        message.token_count = tokens.message_tokens(message.content, message.tool_calls, None)
        message.save(update_fields=["tool_calls", "item_shapes", "token_count"])
        _count_messages(user=user, conversation_id=conversation_id, added=0)
        return message


@audit.audited("tool_call.pop")
def tool_call_pop(
    *, user: User, conversation_id: uuid.UUID | str, message_id: uuid.UUID | str, tool_call_id: str
) -> Message:
    """Delete the call ``tool_call_id``, which has no result, from the conversation's newest
    message and return the message.

    Raises ``MessageNotNewest`` for an older message, ``ToolCallRefused`` when the call
    is not the message's, has a result, or is all the message holds (``message_pop`` it).
    """
    with user_scope(user, atomic=True):
        message = _newest_message(user=user, conversation_id=conversation_id, message_id=message_id)
        calls = [call for call in message.tool_calls or () if call["id"] != tool_call_id]
        if len(calls) == len(message.tool_calls or ()):
            raise ToolCallRefused(f"The message has no tool call {tool_call_id!r}.")
        if any(result["tool_call_id"] == tool_call_id for result in message.tool_results or ()):
            raise ToolCallRefused(f"The tool call {tool_call_id!r} has a result: pop that first.")
        if not calls and message.content is None:
            raise ToolCallRefused("The call is all the message holds: pop the message.")
        message.tool_calls = calls or None
        return _message_shrunk(message, user=user, shapes="calls", tool_call_id=tool_call_id)


@audit.audited("message.pop")
def message_pop(
    *, user: User, conversation_id: uuid.UUID | str, message_id: uuid.UUID | str | None = None
) -> Message | None:
    """Delete the conversation's newest message ("undo the last turn") and return it; None
    when there is none. With ``message_id``, that message, which must be the newest:
    ``MessageNotNewest`` otherwise (nothing deleted), ``Message.DoesNotExist`` when it is not
    one of the conversation's."""
    with user_scope(user, atomic=True):
        messages = Message.objects.filter(conversation_id=conversation_id, user=user)
        if message_id is not None:
            message = _newest_message(user=user, conversation_id=conversation_id, message_id=message_id)
        else:
            count = _lock_conversation(user=user, conversation_id=conversation_id)
            if (newest := messages.filter(seq=count).first()) is None:
                return None
            message = newest
        messages.filter(pk=message.pk).delete()
        _count_messages(user=user, conversation_id=conversation_id, added=-1)
        return message


@audit.audited("conversation.clear")
def conversation_clear(*, user: User, conversation_id: uuid.UUID | str) -> int:
    """Delete every message of the conversation and keep the conversation (its id, title,
    metadata); return how many went. Appends then number from 1 again."""
    with user_scope(user, atomic=True):
        count = _lock_conversation(user=user, conversation_id=conversation_id)
        deleted, _ = Message.objects.filter(conversation_id=conversation_id, user=user).delete()
        _count_messages(user=user, conversation_id=conversation_id, added=-count)
        return deleted


class MessageNotNewest(Exception):
    """Only the conversation's newest message can be deleted on its own."""


class ToolCallRefused(ValueError):
    """A change to a message's calls that breaks a rule (see ``tool_calls_add``,
    ``tool_call_pop``); nothing changed."""


def _newest_message(*, user: User, conversation_id: uuid.UUID | str, message_id: uuid.UUID | str) -> Message:
    """The message, under the conversation's row lock; ``MessageNotNewest`` unless it is the
    conversation's newest, ``Message.DoesNotExist`` unless it is one of the conversation's."""
    count = _lock_conversation(user=user, conversation_id=conversation_id)
    message = Message.objects.get(pk=message_id, conversation_id=conversation_id, user=user)
    if message.seq != count:
        raise MessageNotNewest
    return message


def _message_shrunk(message: Message, *, user: User, shapes: str, tool_call_id: str) -> Message:
    """Save a message that lost the call or result of ``tool_call_id`` (and its shape), with
    its token count for what it now holds; the conversation's version and ``updated_at``
    move as for any change."""
    item_shapes = message.item_shapes or {}
    if tool_call_id in item_shapes.get(shapes, {}):
        kept = {call_id: shape for call_id, shape in item_shapes[shapes].items() if call_id != tool_call_id}
        message.item_shapes = {**item_shapes, shapes: kept}
    message.token_count = tokens.message_tokens(message.content, message.tool_calls, message.tool_results)
    message.save(update_fields=["tool_calls", "tool_results", "item_shapes", "token_count"])
    _count_messages(user=user, conversation_id=message.conversation_id, added=0)
    return message


class IdempotencyKeyStale(Exception):
    """The key's messages were deleted since (an undo or a clear): nothing to replay."""


def _replay(
    earlier: IdempotencyKey, *, user: User, conversation_id: uuid.UUID | str, fingerprint: str
) -> list[Message]:
    if earlier.conversation_id != uuid.UUID(str(conversation_id)) or earlier.fingerprint != fingerprint:
        raise IdempotencyKeyReused
    found = Message.objects.filter(pk__in=earlier.message_ids, user=user).in_bulk()
    if len(found) != len(earlier.message_ids):
        raise IdempotencyKeyStale
    return [found[uuid.UUID(message_id)] for message_id in earlier.message_ids]


def _fingerprint(body: Any) -> str:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()


def _lock_conversation(*, user: User, conversation_id: uuid.UUID | str) -> int:
    """Take the conversation's row lock and return its ``message_count``: before looking at
    an idempotency key, so that duplicates racing for one conversation queue here and the
    later ones replay; before deleting, so that no append slips between.

    On SQLite, where FOR UPDATE does not exist, the IMMEDIATE transaction mode set in the
    settings serialises every write transaction instead.
    """
    count: int = (
        Conversation.objects.select_for_update()
        .filter(pk=conversation_id, user=user)
        .values_list("message_count", flat=True)
        .get()
    )
    return count


def _insert_messages(
    *, user: User, conversation_id: uuid.UUID | str, messages: Sequence[NewMessage]
) -> list[Message]:
    """Count the messages on their conversation, then insert them: two statements, in the
    caller's transaction."""
    if not 1 <= len(messages) <= BATCH_MAX_MESSAGES:
        raise ValueError(f"Append 1 to {BATCH_MAX_MESSAGES} messages at a time.")
    rows = [_new_row(user=user, conversation_id=conversation_id, message=message) for message in messages]
    last = messages[-1]
    count, created_at = _count_messages(
        user=user,
        conversation_id=conversation_id,
        added=len(rows),
        newest=statements.Newest(role=last.role, content=last.content),
    )
    for seq, row in enumerate(rows, start=count - len(rows) + 1):
        row.seq, row.created_at = seq, created_at
    if len(rows) == 1:
        rows[0].save(force_insert=True)
        return rows
    return Message.objects.bulk_create(rows)


def _new_row(*, user: User, conversation_id: uuid.UUID | str, message: NewMessage) -> Message:
    results = None
    if message.tool_results is not None:
        results = tool_results_rules.checked(message.tool_calls, message.tool_results)
    return Message(
        conversation_id=conversation_id,
        user=user,
        role=message.role,
        content=message.content,
        tool_calls=message.tool_calls,
        tool_results=results,
        item_shapes=message.item_shapes,
        token_count=tokens.message_tokens(message.content, message.tool_calls, results),
    )


def _count_messages(
    *, user: User, conversation_id: uuid.UUID | str, added: int, newest: statements.Newest | None = None
) -> tuple[int, datetime]:
    """Add ``added`` to the conversation's ``message_count``, one to its ``version``, move
    its ``updated_at`` to now or later and keep its preview (``newest``, an append's last
    message; read back after a delete), in one UPDATE that also takes the row lock; return
    the new count and time (an append's last ``seq`` and its ``created_at``).

    Under that lock, held to the end of the transaction, ``seq`` is gap-free and strictly
    increasing, and ``created_at`` never goes backwards however coarse or unsteady the
    clock. Raises ``Conversation.DoesNotExist`` when the conversation is not ``user``'s.
    """
    counted = statements.count_messages(
        user_id=user.pk, conversation_id=conversation_id, now=timezone.now(), added=added, newest=newest
    )
    if counted is None:
        raise Conversation.DoesNotExist
    return counted


aconversation_create = sync_to_async(conversation_create)
aconversation_update = sync_to_async(conversation_update)
aconversation_delete = sync_to_async(conversation_delete)
aconversation_clear = sync_to_async(conversation_clear)
amessage_append = sync_to_async(message_append)
amessage_append_idempotent = sync_to_async(message_append_idempotent)
amessages_append = sync_to_async(messages_append)
amessages_append_idempotent = sync_to_async(messages_append_idempotent)
amessage_pop = sync_to_async(message_pop)
atool_results_record = sync_to_async(tool_results_record)
atool_result_pop = sync_to_async(tool_result_pop)
atool_call_pop = sync_to_async(tool_call_pop)
atool_calls_add = sync_to_async(tool_calls_add)
