"""What a chat front end's sidebar needs of a conversation (issue 14): ``archived`` and
``pinned`` flags, the owner's ``metadata``, the newest message's preview stored on the row,
the list's indexes with the flags, and a per-user version of the conversation list.

The preview is filled here for existing conversations, in one UPDATE. The list version is
a row per user (``ConversationListVersion``) that triggers on the conversation table move on
every INSERT, UPDATE and DELETE of a user's conversations. Triggers rather than the
services, so that no path can forget it: every change to a conversation's messages is an
UPDATE of its row (``statements.count_messages``), and the deletes that do not go through
the services (retention's prune, a user's deletion, an operator's SQL) are caught alike.

- PostgreSQL: statement-level triggers with transition tables, so that a statement that
  changes many conversations (retention's batch) takes each user's version row once, at its
  end, in user id order, after all of the statement's conversation row locks: a single
  append holds its version row for the rest of its transaction, and never waits on a
  multi-row statement while holding it, so the two cannot deadlock. The version table has
  row-level security like every table with user data (policies of migrations 0004 and 0009),
  and the triggers run as the role that changes the conversation (the serving role gets its
  privileges from ``roles.grant_serving_role`` after each migrate).
- SQLite: row-level triggers (its only kind; its writes are serialised anyway). The new
  columns and checks rebuild the conversation table, which drops its triggers and which
  migration 0002's triggers on the message table name: all of them are dropped before and
  made again after, in both directions (as migration 0008 does). A later migration that
  rebuilds the conversation table must do the same with this one's ``SQLITE_FORWARD``.

A delete only moves an existing version row (it never makes one): a user's deletion may
delete that row before their conversations, and must not find it made again. Every user
with conversations has one (made here, and by the first insert after).
"""

import importlib

from django.conf import settings
from django.db import migrations, models
from django.db.backends.base.schema import BaseDatabaseSchemaEditor
from django.db.migrations.state import StateApps
from django.db.models.deletion import CASCADE
from django.db.models.functions import Length
from django.db.models.lookups import Exact, LessThanOrEqual

import conversations.models

agent_history = importlib.import_module("conversations.migrations.0008_agent_history")
row_security = importlib.import_module("conversations.migrations.0004_row_level_security")
null_test = importlib.import_module("conversations.migrations.0009_all_rows_policy_as_null_test")

CONVERSATIONS = "conversations_conversation"
MESSAGES = "conversations_message"
LIST_VERSIONS = "conversations_conversationlistversion"
PREVIEW_MAX_LENGTH = 200

def _postgresql_function(name: str, body: str) -> str:
    return (
        f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$ "
        f"BEGIN {body}; RETURN NULL; END $$"
    )


def _postgresql_upsert(users: str) -> str:
    """Move the version of each user in ``users`` (one row each, in user id order), making
    the row when the user has none yet."""
    return (
        f"INSERT INTO {LIST_VERSIONS} AS v (user_id, version) "
        f"SELECT user_id, 1 FROM ({users}) changed ORDER BY user_id "
        "ON CONFLICT (user_id) DO UPDATE SET version = v.version + 1"
    )


def _postgresql_trigger(event: str, referencing: str) -> str:
    name = f"conversation_list_version_{event.lower()}"
    return (
        f"CREATE TRIGGER {name} AFTER {event} ON {CONVERSATIONS} REFERENCING {referencing} "
        f"FOR EACH STATEMENT EXECUTE FUNCTION {name}()"
    )


POSTGRESQL_FORWARD = [
    _postgresql_function(
        "conversation_list_version_insert", _postgresql_upsert("SELECT DISTINCT user_id FROM new_rows")
    ),
    _postgresql_function(
        "conversation_list_version_update",
        # A conversation given to another user changes both users' lists.
        _postgresql_upsert("SELECT user_id FROM new_rows UNION SELECT user_id FROM old_rows"),
    ),
    _postgresql_function(
        "conversation_list_version_delete",
        f"UPDATE {LIST_VERSIONS} SET version = version + 1 WHERE user_id IN (SELECT user_id FROM old_rows)",
    ),
    _postgresql_trigger("INSERT", "NEW TABLE AS new_rows"),
    _postgresql_trigger("UPDATE", "OLD TABLE AS old_rows NEW TABLE AS new_rows"),
    _postgresql_trigger("DELETE", "OLD TABLE AS old_rows"),
]
POSTGRESQL_BACKWARD = [
    statement
    for event in ("delete", "update", "insert")
    for statement in (
        f"DROP TRIGGER conversation_list_version_{event} ON {CONVERSATIONS}",
        f"DROP FUNCTION conversation_list_version_{event}()",
    )
]

_SQLITE_BUMP = (
    f"INSERT INTO {LIST_VERSIONS} (user_id, version) VALUES (NEW.user_id, 1) "
    "ON CONFLICT (user_id) DO UPDATE SET version = version + 1;"
)
SQLITE_FORWARD = [
    f"""
    CREATE TRIGGER conversation_list_version_insert AFTER INSERT ON {CONVERSATIONS}
    BEGIN {_SQLITE_BUMP} END
    """,
    f"""
    CREATE TRIGGER conversation_list_version_update AFTER UPDATE ON {CONVERSATIONS}
    BEGIN
        {_SQLITE_BUMP}
        UPDATE {LIST_VERSIONS} SET version = version + 1
        WHERE user_id = OLD.user_id AND OLD.user_id IS NOT NEW.user_id;
    END
    """,
    f"""
    CREATE TRIGGER conversation_list_version_delete AFTER DELETE ON {CONVERSATIONS}
    BEGIN UPDATE {LIST_VERSIONS} SET version = version + 1 WHERE user_id = OLD.user_id; END
    """,
]
SQLITE_BACKWARD = [
    "DROP TRIGGER IF EXISTS conversation_list_version_insert",
    "DROP TRIGGER IF EXISTS conversation_list_version_update",
    "DROP TRIGGER IF EXISTS conversation_list_version_delete",
]


def _postgresql_row_security() -> list[str]:
    """The policies every table with user data has: its own rows, and every row for the
    migrating role while ``app.all_users`` is on (in migration 0009's form)."""
    own, every = row_security.OWN_ROWS, null_test.AS_A_NULL_TEST
    return [
        f"ALTER TABLE {LIST_VERSIONS} ENABLE ROW LEVEL SECURITY",
        f"ALTER TABLE {LIST_VERSIONS} FORCE ROW LEVEL SECURITY",
        f"CREATE POLICY {LIST_VERSIONS}_own_rows ON {LIST_VERSIONS} USING ({own}) WITH CHECK ({own})",
        f"CREATE POLICY {LIST_VERSIONS}_all_rows ON {LIST_VERSIONS} TO CURRENT_USER "
        f"USING ({every}) WITH CHECK ({every})",
    ]


def list_versions_forward(apps: StateApps, schema_editor: BaseDatabaseSchemaEditor) -> None:
    vendor = schema_editor.connection.vendor
    statements = {"postgresql": _postgresql_row_security() + POSTGRESQL_FORWARD, "sqlite": SQLITE_FORWARD}
    if vendor not in statements:
        raise NotImplementedError(f"No conversation list version triggers for the {vendor} backend.")
    agent_history.see_every_user(schema_editor)
    # Every user with conversations has a version row, which a delete then moves.
    schema_editor.execute(
        f"INSERT INTO {LIST_VERSIONS} (user_id, version) "  # noqa: S608 (constant names)
        f"SELECT DISTINCT user_id, 1 FROM {CONVERSATIONS}"
    )
    for statement in statements[vendor]:
        schema_editor.execute(statement)


def list_versions_backward(apps: StateApps, schema_editor: BaseDatabaseSchemaEditor) -> None:
    if schema_editor.connection.vendor == "postgresql":
        for statement in POSTGRESQL_BACKWARD + row_security.backward_statements(LIST_VERSIONS):
            schema_editor.execute(statement)
    elif schema_editor.connection.vendor == "sqlite":
        for statement in SQLITE_BACKWARD:
            schema_editor.execute(statement)


def fill_previews(apps: StateApps, schema_editor: BaseDatabaseSchemaEditor) -> None:
    """Each conversation's newest message (seq = message_count), in one UPDATE that probes
    ``(conversation_id, seq)`` once per conversation."""
    agent_history.see_every_user(schema_editor)
    schema_editor.execute(
        f"UPDATE {CONVERSATIONS} SET (preview_role, preview_content, preview_created_at) = "  # noqa: S608
        f"(SELECT m.role, SUBSTR(m.content, 1, {PREVIEW_MAX_LENGTH}), m.created_at FROM {MESSAGES} m "
        f"WHERE m.conversation_id = {CONVERSATIONS}.id AND m.seq = {CONVERSATIONS}.message_count) "
        "WHERE message_count > 0"
    )


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0003_user_is_external"),
        ("conversations", "0010_message_item_shapes"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        # Around the SQLite rebuilds below, in both directions.
        migrations.RunPython(
            agent_history.drop_sqlite_triggers, agent_history.restore_sqlite_triggers, elidable=False
        ),
        migrations.RemoveIndex(model_name="conversation", name="conversation_user_updated_idx"),
        migrations.RemoveIndex(model_name="conversation", name="conversation_user_created_idx"),
        migrations.AddField(
            model_name="conversation",
            name="archived",
            field=models.BooleanField(db_default=False, default=False),
        ),
        migrations.AddField(
            model_name="conversation",
            name="pinned",
            field=models.BooleanField(db_default=False, default=False),
        ),
        migrations.AddField(
            model_name="conversation",
            name="metadata",
            field=models.JSONField(db_default={}, default=dict),
        ),
        migrations.AddField(
            model_name="conversation",
            name="preview_role",
            field=models.CharField(
                blank=True, choices=[("user", "User"), ("assistant", "Assistant")], max_length=16, null=True
            ),
        ),
        migrations.AddField(
            model_name="conversation",
            name="preview_content",
            field=models.TextField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="conversation",
            name="preview_created_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.RunPython(fill_previews, migrations.RunPython.noop, elidable=False),
        migrations.AddIndex(
            model_name="conversation",
            index=models.Index(
                fields=["user", "archived", "-updated_at", "-id"], name="conversation_list_updated_idx"
            ),
        ),
        migrations.AddIndex(
            model_name="conversation",
            index=models.Index(
                fields=["user", "archived", "created_at", "id"], name="conversation_list_created_idx"
            ),
        ),
        migrations.AddIndex(
            model_name="conversation",
            index=models.Index(
                condition=models.Q(("pinned", True)),
                fields=["user", "archived", "-updated_at", "-id"],
                name="conversation_pin_updated_idx",
            ),
        ),
        migrations.AddIndex(
            model_name="conversation",
            index=models.Index(
                condition=models.Q(("pinned", True)),
                fields=["user", "archived", "created_at", "id"],
                name="conversation_pin_created_idx",
            ),
        ),
        migrations.AddConstraint(
            model_name="conversation",
            constraint=models.CheckConstraint(
                condition=LessThanOrEqual(Length("preview_content"), PREVIEW_MAX_LENGTH),
                name="conversation_preview_max_length",
            ),
        ),
        migrations.AddConstraint(
            model_name="conversation",
            constraint=models.CheckConstraint(
                condition=models.Q(
                    ("preview_role__isnull", True), ("preview_role__in", ["user", "assistant"]), _connector="OR"
                ),
                name="conversation_preview_role_valid",
            ),
        ),
        migrations.AddConstraint(
            model_name="conversation",
            constraint=models.CheckConstraint(
                condition=models.Q(
                    models.Q(("preview_created_at__isnull", False), ("preview_role__isnull", False)),
                    models.Q(
                        ("preview_content__isnull", True),
                        ("preview_created_at__isnull", True),
                        ("preview_role__isnull", True),
                    ),
                    _connector="OR",
                ),
                name="conversation_preview_complete",
            ),
        ),
        migrations.AddConstraint(
            model_name="conversation",
            constraint=models.CheckConstraint(
                condition=models.Q(("message_count__gt", 0), ("preview_role__isnull", True), _connector="OR"),
                name="conversation_preview_needs_messages",
            ),
        ),
        migrations.AddConstraint(
            model_name="conversation",
            constraint=models.CheckConstraint(
                condition=Exact(conversations.models.JSONType("metadata"), "object"),
                name="conversation_metadata_object",
            ),
        ),
        migrations.CreateModel(
            name="ConversationListVersion",
            fields=[
                (
                    "user",
                    models.OneToOneField(
                        on_delete=CASCADE,
                        primary_key=True,
                        related_name="+",
                        serialize=False,
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
                ("version", models.PositiveBigIntegerField(default=0)),
            ],
        ),
        migrations.RunPython(list_versions_forward, list_versions_backward, elidable=False),
        migrations.RunPython(
            agent_history.restore_sqlite_triggers, agent_history.drop_sqlite_triggers, elidable=False
        ),
    ]
