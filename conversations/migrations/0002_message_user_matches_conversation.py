"""Make the database reject a message whose user is not its conversation's user.

The ORM cannot express a check across two tables. PostgreSQL gets a composite foreign key
(conversation_id, user_id) -> conversation (id, user_id); SQLite cannot add a foreign key to
an existing table, so it gets triggers with the same effect. SQLite drops triggers when
Django rebuilds a table, so a later migration that alters either table on SQLite must
recreate them (the constraint tests fail if it does not).
"""

from django.db import migrations
from django.db.backends.base.schema import BaseDatabaseSchemaEditor
from django.db.migrations.state import StateApps

POSTGRESQL_FORWARD = [
    """
    ALTER TABLE conversations_message
    ADD CONSTRAINT message_user_matches_conversation
    FOREIGN KEY (conversation_id, user_id)
    REFERENCES conversations_conversation (id, user_id)
    ON DELETE CASCADE
    """,
]
POSTGRESQL_BACKWARD = [
    "ALTER TABLE conversations_message DROP CONSTRAINT message_user_matches_conversation",
]

SQLITE_FORWARD = [
    """
    CREATE TRIGGER message_user_matches_conversation_insert
    BEFORE INSERT ON conversations_message
    WHEN NEW.user_id IS NOT (SELECT user_id FROM conversations_conversation WHERE id = NEW.conversation_id)
    BEGIN SELECT RAISE(ABORT, 'message_user_matches_conversation'); END
    """,
    """
    CREATE TRIGGER message_user_matches_conversation_update
    BEFORE UPDATE OF conversation_id, user_id ON conversations_message
    WHEN NEW.user_id IS NOT (SELECT user_id FROM conversations_conversation WHERE id = NEW.conversation_id)
    BEGIN SELECT RAISE(ABORT, 'message_user_matches_conversation'); END
    """,
    """
    CREATE TRIGGER conversation_user_matches_messages_update
    BEFORE UPDATE OF user_id ON conversations_conversation
    WHEN EXISTS (
        SELECT 1 FROM conversations_message
        WHERE conversation_id = NEW.id AND user_id IS NOT NEW.user_id
    )
    BEGIN SELECT RAISE(ABORT, 'message_user_matches_conversation'); END
    """,
]
SQLITE_BACKWARD = [
    "DROP TRIGGER message_user_matches_conversation_insert",
    "DROP TRIGGER message_user_matches_conversation_update",
    "DROP TRIGGER conversation_user_matches_messages_update",
]

STATEMENTS = {
    "postgresql": (POSTGRESQL_FORWARD, POSTGRESQL_BACKWARD),
    "sqlite": (SQLITE_FORWARD, SQLITE_BACKWARD),
}


def _run(schema_editor: BaseDatabaseSchemaEditor, direction: int) -> None:
    vendor = schema_editor.connection.vendor
    if vendor not in STATEMENTS:
        raise NotImplementedError(f"No user-match constraint for the {vendor} backend.")
    for statement in STATEMENTS[vendor][direction]:
        schema_editor.execute(statement)


def forward(apps: StateApps, schema_editor: BaseDatabaseSchemaEditor) -> None:
    _run(schema_editor, 0)


def backward(apps: StateApps, schema_editor: BaseDatabaseSchemaEditor) -> None:
    _run(schema_editor, 1)


class Migration(migrations.Migration):
    dependencies = [
        ("conversations", "0001_initial"),
    ]

    operations = [
        migrations.RunPython(forward, backward, elidable=False),
    ]
