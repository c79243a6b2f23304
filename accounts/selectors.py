"""Reads about users."""

import functools
import uuid

from django.db import DEFAULT_DB_ALIAS, connections

from accounts.models import User
from core import rls, sql


def user_lookup(user_id: uuid.UUID, *, using: str = DEFAULT_DB_ALIAS) -> User | None:
    """The user with ``user_id``, or None. Where a session-wide identity is allowed, the same
    statement makes the user the connection's row-level-security identity: authentication
    and the scope of the request in one round trip."""
    connection = connections[using]
    identify = rls.identity_allowed(connection)
    key = sql.db_value(User, "id", user_id, connection)
    users = list(User.objects.db_manager(using).raw(_user_sql(using, identify=identify), [key]))
    if not users:
        return None
    if identify:
        rls.remember_identity(connection, str(users[0].pk))
    return users[0]


@functools.cache
def _user_sql(using: str, *, identify: bool) -> str:
    """The lookup's SQL, written once per database: it runs on every API request, and
    building it through the ORM each time cost more than the round trip."""
    connection = connections[using]
    table = sql.table(User, connection)
    key = f"{table}.{sql.column(User, 'id', connection)}"
    columns = ", ".join(f"{table}.{sql.column(User, f.name, connection)}" for f in User._meta.concrete_fields)
    identity = f", {rls.identity_sql(key)}" if identify else ""
    return f"SELECT {columns}{identity} FROM {table} WHERE {key} = %s"  # noqa: S608 (names from _meta)
