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
