"""Row-level security: PostgreSQL's second line behind the owner-filtered querysets.

The policies of conversations' migration 0004 show a session only the rows of the user whose id is in
``app.user_id``; with nothing set it sees no rows. ``user_scope`` sets it, in one of two ways:

- Outside a transaction it makes the user the connection's identity (``set_config(…,
  false)``), which then costs nothing more: an API request's token lookup sets it in the same
  statement (``accounts.selectors.user_lookup``, through ``identity_sql``), so a read is that
  one statement plus its SELECT. The identity lasts until another scope replaces it or the
  connection goes back to Django's pool, whose ``reset`` (``reset_identity``, installed by the
  settings) clears it before any other request can get the connection. Without that reset
  installed, this way is never taken.
- Inside a transaction it sets the user for that transaction only (``set_config(…, true)``)
  and puts back what was in force when the block ends.

``all_users`` lifts the filter, for the few places that must cross users (retention,
maintenance commands), always for one transaction only. Its policy is granted only to the
role that ran the migrations (the table owner): ``app.all_users`` does nothing for the
serving role.

What this stops is a query of the application that forgets its user filter, and a stale
identity on a pooled connection. It does not stop SQL of the serving role's own (injection,
a compromised process): ``app.user_id`` is a plain setting that any statement may set, and
the serving role can read every user id, so such SQL can take each user's identity in turn
(the README's Isolation section, pinned by a test in tests/test_rls.py).

On SQLite, which has no row-level security, all of these are no-ops.
"""

import uuid
import weakref
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import TYPE_CHECKING, Any

from django.db import DEFAULT_DB_ALIAS, connections, transaction
from django.db.backends.base.base import BaseDatabaseWrapper

from core import replicas

if TYPE_CHECKING:  # The settings import this module (the pool's reset): no models at import time.
    from django.db.models import Func, Model


USER_SETTING = "app.user_id"
ALL_USERS_SETTING = "app.all_users"

# (user id or "", all users "on" or "").
Scope = tuple[str, str]
UNSET: Scope = ("", "")

# The user id each psycopg connection carries as its session-wide identity. Keyed by the
# driver's connection, not Django's wrapper, so that it goes with the connection to the pool.
_identities: "weakref.WeakKeyDictionary[Any, str]" = weakref.WeakKeyDictionary()


def reset_identity(conn: Any) -> None:
    """psycopg_pool's ``reset``: clear the identity of a connection coming back to the pool."""
    if _identities.pop(conn, None) is None:
        return
    conn.execute("SELECT set_config(%s, '', false)", [USER_SETTING])
    if not conn.autocommit:
        conn.commit()


def _identity_allowed(connection: BaseDatabaseWrapper) -> bool:
    """Whether a session-wide identity may be set now: outside any transaction (so no
    rollback can undo it behind our back), on a pooled connection that clears it on return."""
    pool = connection.settings_dict["OPTIONS"].get("pool")
    return (
        connection.vendor == "postgresql"
        and not connection.in_atomic_block
        and isinstance(pool, dict)
        and pool.get("reset") is reset_identity
    )


def _identity(connection: BaseDatabaseWrapper) -> Scope:
    raw = connection.connection
    user_id = _identities.get(raw) if raw is not None else None
    return (user_id, "") if user_id else UNSET


def _set_identity(connection: BaseDatabaseWrapper, user_id: str) -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT set_config(%s, %s, false)", [USER_SETTING, user_id])
    _remember_identity(connection, user_id)


def _remember_identity(connection: BaseDatabaseWrapper, user_id: str) -> None:
    _identities[connection.connection] = user_id


def identity_allowed(connection: BaseDatabaseWrapper) -> bool:
    """Whether a statement may now set the connection's session-wide identity (a lookup that
    also identifies, as the token's user lookup does): outside any transaction, on a pooled
    connection that clears it on return."""
    return _identity_allowed(connection)


def identity_sql(user_id_expression: str) -> str:
    """A select-list item that makes ``user_id_expression`` the connection's identity; the
    caller calls ``remember_identity`` once the statement has run."""
    return f"set_config('{USER_SETTING}', {user_id_expression}::text, false) AS rls_identity"


def identity_expression(user_id_field: str = "pk") -> "Func":
    """``identity_sql`` as an ORM expression, for ``QuerySet.annotate``: the same select-list
    item, built by the ORM."""
    from django.db.models import F, Func, TextField, Value
    from django.db.models.functions import Cast

    return Func(
        Value(USER_SETTING),
        Cast(F(user_id_field), TextField()),
        Value(False),
        function="set_config",
        output_field=TextField(),
    )


def remember_identity(connection: BaseDatabaseWrapper, user_id: str) -> None:
    """Record the identity a statement of ``identity_sql`` gave the connection."""
    _remember_identity(connection, user_id)


def _scopes(connection: BaseDatabaseWrapper) -> list[Scope]:
    """The transaction-local scopes entered and not yet left on this connection, innermost
    last. They live inside atomic blocks, so a non-empty stack always belongs to the
    current transaction."""
    scopes: list[Scope] = connection.__dict__.setdefault("rls_scopes", [])
    return scopes


def _in_force(connection: BaseDatabaseWrapper) -> Scope:
    scopes = _scopes(connection)
    return scopes[-1] if scopes else _identity(connection)


def _apply_local(connection: BaseDatabaseWrapper, scope: Scope) -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT set_config(%s, %s, true), set_config(%s, %s, true)",
            [USER_SETTING, scope[0], ALL_USERS_SETTING, scope[1]],
        )


@contextmanager
def _joined(using: str, atomic: bool) -> Iterator[None]:
    """The block as it is, or as a transaction when ``atomic`` and none is open."""
    if atomic and not connections[using].in_atomic_block:
        with transaction.atomic(using=using):
            yield
    else:
        yield


@contextmanager
def _scope(scope: Scope, using: str, atomic: bool) -> Iterator[None]:
    connection = connections[using]
    if connection.vendor != "postgresql" or _in_force(connection) == scope:
        with _joined(using, atomic):
            yield
        return
    if scope[1] == "" and _identity_allowed(connection):
        _set_identity(connection, scope[0])
        with _joined(using, atomic):
            yield
        return
    nested = connection.in_atomic_block
    scopes = _scopes(connection)
    with transaction.atomic(using=using):
        _apply_local(connection, scope)
        scopes.append(scope)
        try:
            yield
        finally:
            scopes.pop()
        # Leaving normally a block nested in a longer transaction: put back what was in
        # force. (An exception rolls back to the savepoint, which restores it by itself.)
        if nested:
            _apply_local(connection, _in_force(connection))


def in_transaction(using: str = DEFAULT_DB_ALIAS) -> bool:
    return connections[using].in_atomic_block


def user_scope(
    user: "Model | uuid.UUID", *, atomic: bool = False, using: str | None = None
) -> AbstractContextManager[None]:
    """Run the block with PostgreSQL showing and accepting only ``user``'s conversations,
    messages and idempotency keys. Free when that user is already in force, as for the
    whole of an API request. ``atomic=True`` also makes the block a transaction (joining
    one already open), on SQLite too: one that writes for the user, on the primary, whose
    commit the user's later reads wait for (core/replicas.py). Without it the block reads,
    on the database ``replicas.reads_for`` picks (the primary unless a read-only block may use
    a replica)."""
    user_id = user if isinstance(user, uuid.UUID) else user.pk
    if not atomic:
        return _scope((str(user_id), ""), using or replicas.reads_for(user_id), atomic)
    return _writing(str(user_id), using or DEFAULT_DB_ALIAS)


@contextmanager
def _writing(user_id: str, using: str) -> Iterator[None]:
    with _scope((user_id, ""), using, True):
        replicas.written(user_id)
        yield


def all_users(
    *, reason: str, atomic: bool = False, using: str = DEFAULT_DB_ALIAS
) -> AbstractContextManager[None]:
    """Run the block, in a transaction, with every user's rows visible. Only for code that
    must cross users; ``reason`` says why at the call site. Works only for the table owner's
    role."""
    assert reason  # noqa: S101 (a call site must say why it crosses users)
    return _scope(("", "on"), using, atomic)
