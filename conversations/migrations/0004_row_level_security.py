"""Row-level security on PostgreSQL (see core/rls.py).

Every table with a ``user_id`` shows and accepts only the rows of the user named by the
setting ``app.user_id`` (set per connection or per transaction, see rls.py); nothing set,
nothing visible. FORCE makes the policies bind the table owner too, so a single-role
deployment's queries are filtered as well (only superusers and BYPASSRLS roles are exempt;
what the policies do not stop is in the README's Isolation section). A second
policy lets the migrating role, and only it, see every row while ``app.all_users`` is 'on',
for maintenance that must cross users.
"""

from django.db import migrations
from django.db.backends.base.schema import BaseDatabaseSchemaEditor
from django.db.migrations.state import StateApps

TABLES = ["conversations_conversation", "conversations_message", "conversations_idempotencykey"]

OWN_ROWS = "user_id = NULLIF(current_setting('app.user_id', true), '')::uuid"
ALL_ROWS = "current_setting('app.all_users', true) = 'on'"


def forward_statements(table: str) -> list[str]:
    return [
        f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY",
        f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY",
        f"CREATE POLICY {table}_own_rows ON {table} USING ({OWN_ROWS}) WITH CHECK ({OWN_ROWS})",
        f"CREATE POLICY {table}_all_rows ON {table} TO CURRENT_USER USING ({ALL_ROWS}) WITH CHECK ({ALL_ROWS})",
    ]


def backward_statements(table: str) -> list[str]:
    return [
        f"DROP POLICY {table}_all_rows ON {table}",
        f"DROP POLICY {table}_own_rows ON {table}",
        f"ALTER TABLE {table} NO FORCE ROW LEVEL SECURITY",
        f"ALTER TABLE {table} DISABLE ROW LEVEL SECURITY",
    ]


def forward(apps: StateApps, schema_editor: BaseDatabaseSchemaEditor) -> None:
    if schema_editor.connection.vendor == "postgresql":
        for table in TABLES:
            for statement in forward_statements(table):
                schema_editor.execute(statement)


def backward(apps: StateApps, schema_editor: BaseDatabaseSchemaEditor) -> None:
    if schema_editor.connection.vendor == "postgresql":
        for table in TABLES:
            for statement in backward_statements(table):
                schema_editor.execute(statement)


class Migration(migrations.Migration):
    dependencies = [
        ("conversations", "0003_idempotency_key"),
    ]

    operations = [
        migrations.RunPython(forward, backward, elidable=False),
    ]
