"""The owner's all-rows policy as a sub-select, so the planner can discard it.

Migration 0004's ``current_setting('app.all_users', true) = 'on'``, OR'ed with the per-user
policy into every query of the table owner, is a condition the planner must keep per row: it
took the owner's estimate for a conversation down to a row or two, so the owner's queries
intersected two indexes and sorted the whole conversation where the serving role walks
``(conversation_id, seq)`` to the page's limit (``history_load(50)`` on a 1,000-message
conversation: 8.4 ms against 0.13 ms). The owner is what ``DATABASE_URL`` names: the agent's
process by default, and all a single-role deployment has. Written as ``(SELECT …)`` the
setting is an InitPlan, one value for the whole statement, and the per-user clause keeps its
own estimate. What it allows is unchanged.
"""

from django.db import migrations
from django.db.backends.base.schema import BaseDatabaseSchemaEditor
from django.db.migrations.state import StateApps

TABLES = ["conversations_conversation", "conversations_message", "conversations_idempotencykey"]

AS_A_CONDITION = "current_setting('app.all_users', true) = 'on'"
AS_AN_INITPLAN = f"(SELECT {AS_A_CONDITION})"


def set_all_rows_policy(schema_editor: BaseDatabaseSchemaEditor, expression: str) -> None:
    if schema_editor.connection.vendor != "postgresql":
        return
    for table in TABLES:
        schema_editor.execute(
            f"ALTER POLICY {table}_all_rows ON {table} USING ({expression}) WITH CHECK ({expression})"
        )


def forward(apps: StateApps, schema_editor: BaseDatabaseSchemaEditor) -> None:
    set_all_rows_policy(schema_editor, AS_AN_INITPLAN)


def backward(apps: StateApps, schema_editor: BaseDatabaseSchemaEditor) -> None:
    set_all_rows_policy(schema_editor, AS_A_CONDITION)


class Migration(migrations.Migration):
    dependencies = [
        ("conversations", "0006_time_indexes"),
    ]

    operations = [
        migrations.RunPython(forward, backward, elidable=False),
    ]
