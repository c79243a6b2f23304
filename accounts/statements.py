"""The accounts app's hand-written data statement, beside its ORM twin: the token's user
lookup, which runs on every API request.

It is hand-written because the benchmark shows that it pays
(``bench.inprocess.statement_figures``, the README's Performance section); the tests
(``tests/test_statements.py``) hold it to its twin's answer on both databases. It lives in
this app and not in ``conversations/statements.py``, the module of the other hand-written
statements, because accounts sits below conversations (README, Code layout).
"""

import functools
import uuid

from django.db import DEFAULT_DB_ALIAS, connections

from core import rls, sql

from .models import User


def user_row(user_id: uuid.UUID, *, identify: bool, using: str = DEFAULT_DB_ALIAS) -> User | None:
    """The user with ``user_id``, or None; with ``identify``, the same SELECT makes the user
    the connection's row-level-security identity (the caller records it)."""
    key = sql.db_value(User, "id", user_id, connections[using])
    users = list(User.objects.db_manager(using).raw(_user_sql(using, identify=identify), [key]))
    return users[0] if users else None


def user_row_orm(user_id: uuid.UUID, *, identify: bool, using: str = DEFAULT_DB_ALIAS) -> User | None:
    """``user_row`` through the ORM: the identity is an annotation of the same SELECT."""
    users = User.objects.db_manager(using).filter(pk=user_id)
    if identify:
        users = users.annotate(rls_identity=rls.identity_expression())
    return next(iter(users), None)


@functools.cache
def _user_sql(using: str, *, identify: bool) -> str:
    connection = connections[using]
    table = sql.table(User, connection)
    key = f"{table}.{sql.column(User, 'id', connection)}"
    columns = ", ".join(f"{table}.{sql.column(User, f.name, connection)}" for f in User._meta.concrete_fields)
    identity = f", {rls.identity_sql(key)}" if identify else ""
    return f"SELECT {columns}{identity} FROM {table} WHERE {key} = %s"  # noqa: S608 (names from _meta)
