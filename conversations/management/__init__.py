"""Management commands of the conversations app, and what they share."""

import uuid

from django.core.management.base import CommandError

from accounts.models import User


def user_from_argument(value: str) -> User:
    """The user a ``--user`` option names, by username or by id."""
    try:
        return User.objects.get(pk=uuid.UUID(value))
    except (ValueError, User.DoesNotExist):
        pass
    try:
        return User.objects.get(username=value)
    except User.DoesNotExist:
        raise CommandError(f"No user with the username or id {value!r}.") from None
