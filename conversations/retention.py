"""Retention: delete conversations whose latest activity is older than a cutoff.

This crosses users (``rls.all_users``) unless it is asked for one user's conversations.
"""

import re
import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db.models import QuerySet

from accounts.models import User
from core import replicas
from core.rls import all_users, user_scope

from .models import Conversation, Message

DEFAULT_BATCH_SIZE = 500

_DURATION = re.compile(r"(?P<amount>\d+)(?P<unit>[wdhms])")
_UNITS = {"w": "weeks", "d": "days", "h": "hours", "m": "minutes", "s": "seconds"}


def parse_duration(text: str) -> timedelta:
    """``90d``, ``12h``, ``30m`` (minutes), also ``2w`` and ``45s``; raises ValueError."""
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        raise ValueError(
            f"{text!r} is not a duration: use a whole number and a unit, w, d, h, m (minutes) or s, e.g. 90d"
        )
    amount = int(match["amount"])
    if amount == 0:
        raise ValueError("the duration must be greater than zero")
    try:
        return timedelta(**{_UNITS[match["unit"]]: amount})
    except OverflowError:
        raise ValueError(f"{text!r} is too long a duration") from None


@dataclass
class PruneCounts:
    conversations: int = 0
    messages: int = 0


def _scope(user: User | None) -> AbstractContextManager[None]:
    """A transaction that sees ``user``'s rows, or everyone's when ``user`` is None."""
    if user is not None:
        return user_scope(user, atomic=True)
    return all_users(reason="retention deletes old conversations of every user", atomic=True)


def _expired(*, cutoff: datetime, user: User | None) -> QuerySet[Conversation]:
    conversations = Conversation.objects.filter(updated_at__lt=cutoff)
    return conversations if user is None else conversations.filter(user=user)


def conversations_expired_batch(
    *, cutoff: datetime, user: User | None, batch_size: int
) -> QuerySet[Conversation, uuid.UUID]:
    """The ids of the next batch to prune, oldest activity first, locked as they are read.

    Ordered by ``updated_at`` so that the batch is a walk of an index from its start, to
    the batch's size: ``conversation_updated_idx`` across users; for one user, that user's
    rows of ``(user_id, archived, updated_at)``, archived or not, merged. Unordered,
    PostgreSQL would read the table until it had found the batch.
    """
    expired = _expired(cutoff=cutoff, user=user).order_by("updated_at")
    return expired.select_for_update().values_list("pk", flat=True)[:batch_size]


def conversations_expired_count(*, cutoff: datetime, user: User | None = None) -> PruneCounts:
    """What ``conversations_prune`` would delete now: conversations last active before
    ``cutoff`` (of ``user``, or of everyone) and their messages. Two counts, no rows."""
    with _scope(user):
        expired = _expired(cutoff=cutoff, user=user)
        return PruneCounts(
            conversations=expired.count(),
            messages=Message.objects.filter(conversation__in=expired).count(),
        )


def conversations_prune(
    *,
    cutoff: datetime,
    user: User | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    on_batch: Callable[[PruneCounts], None] | None = None,
) -> PruneCounts:
    """Delete the conversations last active before ``cutoff`` (of ``user``, or of every user)
    with their messages and idempotency keys, ``batch_size`` conversations per transaction;
    ``on_batch`` gets the running totals after each. Returns the totals.

    Memory is bounded by the batch: ids are selected, then each table loses its rows in one
    DELETE (messages are never loaded). The batch's rows are locked as they are selected,
    so an append that moves a conversation past the cutoff either commits first, and the
    conversation is not selected, or waits and then finds it gone.
    """
    totals = PruneCounts()
    while True:
        with _scope(user):
            ids = list(conversations_expired_batch(cutoff=cutoff, user=user, batch_size=batch_size))
            if not ids:
                return totals
            if user is None and replicas.configured():
                # Each owner's reads wait for the replicas to have the delete, as after their own.
                owners = Conversation.objects.filter(pk__in=ids).values_list("user_id", flat=True)
                for owner in set(owners):
                    replicas.written(owner)
            _, deleted = Conversation.objects.filter(pk__in=ids).delete()
        totals.conversations += deleted.get(Conversation._meta.label, 0)
        totals.messages += deleted.get(Message._meta.label, 0)
        if on_batch:
            on_batch(totals)
