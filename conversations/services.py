"""Writes. The REST views and the AI agent call these same functions."""

import uuid
from typing import Any

from django.db import transaction
from django.utils import timezone

from accounts.models import User

from .models import Conversation, Message


def conversation_create(*, user: User, title: str = "") -> Conversation:
    return Conversation.objects.create(user=user, title=title)


@transaction.atomic
def message_append(
    *,
    user: User,
    conversation_id: uuid.UUID | str,
    role: str,
    content: str | None,
    tool_calls: list[dict[str, Any]] | None = None,
) -> Message:
    """Append a message to one of ``user``'s conversations.

    Three statements in one transaction: lock the conversation row, insert the message,
    move the conversation's counters. The lock serialises appends to one conversation, so
    ``seq`` is gap-free and strictly increasing and ``created_at`` never goes backwards,
    however coarse or unsteady the clock. Raises ``Conversation.DoesNotExist`` when the
    conversation is not the user's.
    """
    conversation = (
        Conversation.objects.select_for_update()
        .only("id", "updated_at", "message_count")
        .get(pk=conversation_id, user=user)
    )
    created_at = max(timezone.now(), conversation.updated_at)
    seq = conversation.message_count + 1
    message = Message.objects.create(
        conversation_id=conversation.pk,
        user=user,
        seq=seq,
        role=role,
        content=content,
        tool_calls=tool_calls,
        created_at=created_at,
    )
    Conversation.objects.filter(pk=conversation.pk).update(message_count=seq, updated_at=created_at)
    return message
