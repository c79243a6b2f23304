"""Agent-ready history (issue 12): tool results on assistant messages, each message's token
count, a version per conversation for exact ETags, and idempotency keys that remember every
message of a batch.

Existing rows get their token counts here, with the same tokenizer as new appends. On SQLite
the new columns and checks rebuild both tables, which migration 0002's triggers do not
survive: they are dropped before and made again after, in both directions.
"""

import importlib

from django.db import migrations, models
from django.db.backends.base.schema import BaseDatabaseSchemaEditor
from django.db.migrations.state import StateApps

BATCH = 1000

user_match = importlib.import_module("conversations.migrations.0002_message_user_matches_conversation")


def drop_sqlite_triggers(apps: StateApps, schema_editor: BaseDatabaseSchemaEditor) -> None:
    """Before a rebuild: SQLite refuses to rename the rebuilt table while a trigger of the
    other table names it."""
    if schema_editor.connection.vendor == "sqlite":
        for statement in user_match.SQLITE_BACKWARD:
            schema_editor.execute(statement.replace("DROP TRIGGER", "DROP TRIGGER IF EXISTS"))


def restore_sqlite_triggers(apps: StateApps, schema_editor: BaseDatabaseSchemaEditor) -> None:
    drop_sqlite_triggers(apps, schema_editor)
    if schema_editor.connection.vendor == "sqlite":
        for statement in user_match.SQLITE_FORWARD:
            schema_editor.execute(statement)


def see_every_user(schema_editor: BaseDatabaseSchemaEditor) -> None:
    """Row-level security shows the migrating role no rows unless it asks for all of them
    (migration 0004), for the rest of this migration's transaction."""
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute("SELECT set_config('app.all_users', 'on', true)")


def keys_forward(apps: StateApps, schema_editor: BaseDatabaseSchemaEditor) -> None:
    see_every_user(schema_editor)
    key_model = apps.get_model("conversations", "IdempotencyKey")
    keys = list(key_model.objects.only("pk", "message_id"))
    for key in keys:
        key.message_ids = [str(key.message_id)]
    key_model.objects.bulk_update(keys, ["message_ids"], batch_size=BATCH)


def keys_backward(apps: StateApps, schema_editor: BaseDatabaseSchemaEditor) -> None:
    """A batch's key keeps its first message, all an older version can replay."""
    see_every_user(schema_editor)
    key_model = apps.get_model("conversations", "IdempotencyKey")
    keys = list(key_model.objects.only("pk", "message_ids"))
    for key in keys:
        key.message_id = key.message_ids[0]
    key_model.objects.bulk_update(keys, ["message_id"], batch_size=BATCH)


def count_tokens(apps: StateApps, schema_editor: BaseDatabaseSchemaEditor) -> None:
    see_every_user(schema_editor)
    message_model = apps.get_model("conversations", "Message")
    if not message_model.objects.exists():
        return
    from conversations.tokens import message_tokens

    rows = message_model.objects.only("pk", "content", "tool_calls").order_by("pk")
    pending = []
    for message in rows.iterator(chunk_size=BATCH):
        message.token_count = message_tokens(message.content, message.tool_calls, None)
        pending.append(message)
        if len(pending) == BATCH:
            message_model.objects.bulk_update(pending, ["token_count"])
            pending.clear()
    message_model.objects.bulk_update(pending, ["token_count"])


class Migration(migrations.Migration):
    dependencies = [
        ("conversations", "0007_all_rows_policy_as_initplan"),
    ]

    operations = [
        # Around the SQLite rebuilds below, in both directions.
        migrations.RunPython(drop_sqlite_triggers, restore_sqlite_triggers, elidable=False),
        migrations.AddField(
            model_name="conversation",
            name="version",
            field=models.PositiveBigIntegerField(default=0, db_default=0, editable=False),
        ),
        migrations.AddField(
            model_name="message",
            name="tool_results",
            field=models.JSONField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="message",
            name="token_count",
            field=models.PositiveIntegerField(default=0, db_default=0),
        ),
        migrations.AddConstraint(
            model_name="message",
            constraint=models.CheckConstraint(
                condition=models.Q(("tool_calls__isnull", True), ("role", "assistant"), _connector="OR"),
                name="message_tool_calls_assistant_only",
            ),
        ),
        migrations.AddConstraint(
            model_name="message",
            constraint=models.CheckConstraint(
                condition=models.Q(("tool_results__isnull", True), ("tool_calls__isnull", False), _connector="OR"),
                name="message_tool_results_need_calls",
            ),
        ),
        migrations.RunPython(count_tokens, migrations.RunPython.noop, elidable=False),
        migrations.AddField(
            model_name="idempotencykey",
            name="message_ids",
            field=models.JSONField(default=list),
        ),
        # Nullable first, so that going back can add it again to a table with rows.
        migrations.AlterField(
            model_name="idempotencykey",
            name="message_id",
            field=models.UUIDField(null=True),
        ),
        migrations.RunPython(keys_forward, keys_backward, elidable=False),
        migrations.RemoveField(
            model_name="idempotencykey",
            name="message_id",
        ),
        migrations.RunPython(restore_sqlite_triggers, drop_sqlite_triggers, elidable=False),
    ]
