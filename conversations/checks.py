"""System checks of the database role (run by ``manage.py check --database default``)."""

from collections.abc import Sequence
from typing import Any

from django.apps import AppConfig
from django.core.checks import CheckMessage, Tags, Warning, register
from django.db import connections


@register(Tags.database)
def row_level_security_binds(
    app_configs: Sequence[AppConfig] | None = None, databases: Sequence[str] | None = None, **kwargs: Any
) -> list[CheckMessage]:
    """A superuser or BYPASSRLS role ignores row-level security: say so, loudly."""
    messages: list[CheckMessage] = []
    for alias in databases or []:
        connection = connections[alias]
        if connection.vendor != "postgresql":
            continue
        with connection.cursor() as cursor:
            bypasses = bypasses_row_level_security(cursor)
        if bypasses:
            messages.append(
                Warning(
                    f"Database alias {alias!r} connects as a superuser or BYPASSRLS role: "
                    "row-level security does not apply to it.",
                    hint="Connect as a role without SUPERUSER and BYPASSRLS (see README, Database roles).",
                    id="conversations.W001",
                )
            )
    return messages


def bypasses_row_level_security(cursor: Any) -> bool:
    """Whether the role of ``cursor``'s connection ignores row-level security."""
    cursor.execute("SELECT rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = current_user")
    row = cursor.fetchone()
    return bool(row and row[0])


@register(Tags.database)
def search_match_can_use_its_index(
    app_configs: Sequence[AppConfig] | None = None, databases: Sequence[str] | None = None, **kwargs: Any
) -> list[CheckMessage]:
    """Under row-level security PostgreSQL puts no function that is not LEAKPROOF into an
    index condition, ahead of the policies: until ``tsvector @@ tsquery`` is marked so, a
    search reads every message of its user (README, Search)."""
    messages: list[CheckMessage] = []
    for alias in databases or []:
        connection = connections[alias]
        if connection.vendor != "postgresql":
            continue
        with connection.cursor() as cursor:
            leakproof = search_match_is_leakproof(cursor)
        if not leakproof:
            messages.append(
                Warning(
                    f"Database alias {alias!r}: the full-text match (ts_match_vq) is not LEAKPROOF, so "
                    "under row-level security searches cannot use the text in their GIN index.",
                    hint=f"Have a superuser run, once per database: {LEAKPROOF_MATCH} (README, Search).",
                    id="conversations.W002",
                )
            )
    return messages


LEAKPROOF_MATCH = "ALTER FUNCTION ts_match_vq(tsvector, tsquery) LEAKPROOF"


def search_match_is_leakproof(cursor: Any) -> bool:
    cursor.execute(
        "SELECT proleakproof FROM pg_proc WHERE oid = 'ts_match_vq(tsvector, tsquery)'::regprocedure"
    )
    row = cursor.fetchone()
    return bool(row and row[0])
