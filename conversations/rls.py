"""Row-level security: PostgreSQL's second line behind the owner-filtered querysets.

The policies of migration 0004 show a session only the rows of the user whose id is set,
for the current transaction only, in ``app.user_id``; with nothing set it sees no rows.
``user_scope`` sets it. Because the setting is transaction-local (``set_config(…, true)``),
a pooled connection never carries one request's user into the next.

``all_users`` lifts the filter, for the few places that must cross users (retention,
maintenance commands). Its policy is granted only to the role that ran the migrations (the
table owner), so the serving role cannot lift it even with SQL of its own.

On SQLite, which has no row-level security, both are no-ops.
"""

import uuid
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager

from django.db import DEFAULT_DB_ALIAS, connections, transaction
from django.db.backends.base.base import BaseDatabaseWrapper

from accounts.models import User

USER_SETTING = "app.user_id"
ALL_USERS_SETTING = "app.all_users"

# (user id or "", all users "on" or "") as last set in this connection's transaction.
Scope = tuple[str, str]
UNSET: Scope = ("", "")


def _scopes(connection: BaseDatabaseWrapper) -> list[Scope]:
    """The scopes entered and not yet left on this connection, innermost last. They live
    inside atomic blocks, so a non-empty stack always belongs to the current transaction."""
    scopes: list[Scope] = connection.__dict__.setdefault("rls_scopes", [])
    return scopes


def _apply(connection: BaseDatabaseWrapper, scope: Scope) -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT set_config(%s, %s, true), set_config(%s, %s, true)",
            [USER_SETTING, scope[0], ALL_USERS_SETTING, scope[1]],
        )


@contextmanager
def _scope(scope: Scope, using: str, atomic: bool) -> Iterator[None]:
    connection = connections[using]
    if connection.vendor != "postgresql":
        if atomic and not connection.in_atomic_block:
            with transaction.atomic(using=using):
                yield
        else:
            yield
        return
    scopes = _scopes(connection)
    if scopes and scopes[-1] == scope and connection.in_atomic_block:
        yield  # Already in force in this transaction: nothing to send.
        return
    nested = connection.in_atomic_block
    with transaction.atomic(using=using):
        _apply(connection, scope)
        scopes.append(scope)
        try:
            yield
        finally:
            scopes.pop()
        # Leaving normally a block nested in a longer transaction: put back what was in
        # force. (An exception rolls back to the savepoint, which restores it by itself.)
        if nested:
            _apply(connection, scopes[-1] if scopes else UNSET)


def in_transaction(using: str = DEFAULT_DB_ALIAS) -> bool:
    return connections[using].in_atomic_block


def user_scope(
    user: User | uuid.UUID, *, atomic: bool = False, using: str = DEFAULT_DB_ALIAS
) -> AbstractContextManager[None]:
    """Run the block in a transaction in which PostgreSQL shows and accepts only ``user``'s
    conversations, messages and idempotency keys. Free when the same user's scope is
    already in force, as it is for the whole of an API request: the block then joins
    that transaction. ``atomic=True`` also makes the block a transaction on SQLite."""
    user_id = user.pk if isinstance(user, User) else user
    return _scope((str(user_id), ""), using, atomic)


def all_users(
    *, reason: str, atomic: bool = False, using: str = DEFAULT_DB_ALIAS
) -> AbstractContextManager[None]:
    """Run the block with every user's rows visible. Only for code that must cross users;
    ``reason`` says why at the call site. Works only for the table owner's role."""
    assert reason  # noqa: S101 (a call site must say why it crosses users)
    return _scope(("", "on"), using, atomic)
