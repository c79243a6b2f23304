"""The serving role's privileges on PostgreSQL, granted by the owner after each migrate."""

from typing import Any

from django.conf import settings
from django.db import connections


def grant_serving_role(*, using: str, **kwargs: Any) -> None:
    """Let ``DATABASE_APP_URL``'s role read and write rows, and nothing more: it owns no
    table, so it can neither change the schema nor switch row-level security off (it can
    still set any user's identity: see the README's Isolation section)."""
    role = settings.DATABASE_SERVING_ROLE
    connection = connections[using]
    if not role or connection.vendor != "postgresql" or connection.settings_dict["USER"] == role:
        return
    quoted = connection.ops.quote_name(role)
    with connection.cursor() as cursor:
        cursor.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {quoted}")
        cursor.execute(f"REVOKE INSERT, UPDATE, DELETE ON django_migrations FROM {quoted}")
        cursor.execute(f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {quoted}")
