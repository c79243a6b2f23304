"""Writes. The REST views and the AI agent call these same functions.

Every function takes the acting ``user`` and touches only that user's rows: another user's
conversation is indistinguishable from a missing one (``Conversation.DoesNotExist``).
The ``a``-prefixed twins run the same code from asyncio, in Django's sync thread, since
transactions and row locks are not available to Django's async ORM.
"""

import hashlib
import json
import uuid
from collections.abc import Mapping
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

from . import statements
from .models import Conversation, IdempotencyKey, Message

ToolCalls = list[dict[str, Any]]


class IdempotencyKeyReused(Exception):
    """The key was used before with another conversation or another request body."""


@audit.audited("conversation.create")
def conversation_create(*, user: User, title: str = "") -> Conversation:
    with user_scope(user):
        return Conversation.objects.create(user=user, title=title)


@audit.audited("conversation.update")
def conversation_update(*, user: User, conversation_id: uuid.UUID | str, title: str) -> Conversation:
    """Rename a conversation; like any activity it moves ``updated_at``, never backwards."""
    with user_scope(user, atomic=True):
        updated = Conversation.objects.filter(pk=conversation_id, user=user).update(
            title=title, updated_at=Greatest(timezone.now(), F("updated_at"))
        )
        if not updated:
            raise Conversation.DoesNotExist
        return Conversation.objects.get(pk=conversation_id, user=user)


@audit.audited("conversation.delete")
def conversation_delete(*, user: User, conversation_id: uuid.UUID | str) -> None:
    """Delete a conversation with its messages in one transaction, without loading them."""
    with user_scope(user, atomic=True):
        deleted, _ = Conversation.objects.filter(pk=conversation_id, user=user).delete()
    if not deleted:
        raise Conversation.DoesNotExist


@audit.audited("message.append")
def message_append(
    *,
    user: User,
    conversation_id: uuid.UUID | str,
    role: str,
    content: str | None,
    tool_calls: ToolCalls | None = None,
) -> Message:
    """Append a message to one of ``user``'s conversations and return it."""
    with user_scope(user, atomic=True):
        return _insert_message(
            user=user, conversation_id=conversation_id, role=role, content=content, tool_calls=tool_calls
        )


@audit.audited("message.append")
def message_append_idempotent(
    *,
    user: User,
    conversation_id: uuid.UUID | str,
    role: str,
    content: str | None,
    tool_calls: ToolCalls | None = None,
    idempotency_key: str,
    request_body: Mapping[str, Any] | None = None,
) -> tuple[Message, bool]:
    """Append at most once per ``(user, idempotency_key)``; return the message and whether
    it was replayed from an earlier call.

    ``request_body`` is what the key is bound to (the REST view passes the parsed JSON
    body); by default, the message's own fields. The same key with another conversation or
    body raises ``IdempotencyKeyReused``. Duplicates racing for one conversation queue on
    its row lock and the later ones replay; a race across conversations ends in the unique
    constraint on ``(user, key)`` and is resolved by reading the winner.
    """
    body = (
        request_body
        if request_body is not None
        else {"role": role, "content": content, "tool_calls": tool_calls}
    )
    fingerprint = _fingerprint(body)
    with user_scope(user, atomic=True):
        try:
            # A savepoint: a unique violation on the key must not end the caller's transaction.
            with transaction.atomic():
                _lock_conversation(user=user, conversation_id=conversation_id)
                earlier = IdempotencyKey.objects.filter(user=user, key=idempotency_key).first()
                if earlier is None:
                    message = _insert_message(
                        user=user,
                        conversation_id=conversation_id,
                        role=role,
                        content=content,
                        tool_calls=tool_calls,
                    )
                    IdempotencyKey.objects.create(
                        user=user,
                        key=idempotency_key,
                        conversation_id=message.conversation_id,
                        fingerprint=fingerprint,
                        message_id=message.pk,
                    )
                    return message, False
        except IntegrityError:
            earlier = IdempotencyKey.objects.filter(user=user, key=idempotency_key).first()
            if earlier is None:
                raise
        return _replay(earlier, user=user, conversation_id=conversation_id, fingerprint=fingerprint), True


def _replay(
    earlier: IdempotencyKey, *, user: User, conversation_id: uuid.UUID | str, fingerprint: str
) -> Message:
    if earlier.conversation_id != uuid.UUID(str(conversation_id)) or earlier.fingerprint != fingerprint:
        raise IdempotencyKeyReused
    return Message.objects.get(pk=earlier.message_id, user=user)


def _fingerprint(body: Mapping[str, Any]) -> str:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()


def _lock_conversation(*, user: User, conversation_id: uuid.UUID | str) -> None:
    """Take the conversation's row lock before looking at an idempotency key, so that
    duplicates racing for one conversation queue here and the later ones replay.

    On SQLite, where FOR UPDATE does not exist, the IMMEDIATE transaction mode set in the
    settings serialises every write transaction instead.
    """
    Conversation.objects.select_for_update().only("id").get(pk=conversation_id, user=user)


def _insert_message(
    *,
    user: User,
    conversation_id: uuid.UUID | str,
    role: str,
    content: str | None,
    tool_calls: ToolCalls | None,
) -> Message:
    """Count the message on its conversation, then insert it: two statements, in the
    caller's transaction."""
    seq, created_at = _count_message(user=user, conversation_id=conversation_id)
    return Message.objects.create(
        conversation_id=conversation_id,
        user=user,
        seq=seq,
        role=role,
        content=content,
        tool_calls=tool_calls,
        created_at=created_at,
    )


def _count_message(*, user: User, conversation_id: uuid.UUID | str) -> tuple[int, datetime]:
    """Add one to the conversation's ``message_count`` and move its ``updated_at`` to now or
    later, in one UPDATE that also takes the row lock; return both new values, the next
    message's ``seq`` and ``created_at``.

    Under that lock, held to the end of the transaction, ``seq`` is gap-free and strictly
    increasing, and ``created_at`` never goes backwards however coarse or unsteady the
    clock. Raises ``Conversation.DoesNotExist`` when the conversation is not ``user``'s.
    """
    counted = statements.count_message(user_id=user.pk, conversation_id=conversation_id, now=timezone.now())
    if counted is None:
        raise Conversation.DoesNotExist
    return counted


aconversation_create = sync_to_async(conversation_create)
aconversation_update = sync_to_async(conversation_update)
aconversation_delete = sync_to_async(conversation_delete)
amessage_append = sync_to_async(message_append)
amessage_append_idempotent = sync_to_async(message_append_idempotent)
