"""Reads about users."""

import uuid

from django.db import DEFAULT_DB_ALIAS, connections

from accounts.models import User
from core import rls

from . import statements


def user_lookup(user_id: uuid.UUID, *, using: str = DEFAULT_DB_ALIAS) -> User | None:
    """The user with ``user_id``, or None. Where a session-wide identity is allowed, the same
    statement makes the user the connection's row-level-security identity: authentication
    and the scope of the request in one round trip."""
    connection = connections[using]
    identify = rls.identity_allowed(connection)
    user = statements.user_row(user_id, identify=identify, using=using)
    if user is not None and identify:
        rls.remember_identity(connection, str(user.pk))
    return user
