"""Full-text search (conversations/search.py) on both databases.

PostgreSQL: ``tsvector`` columns generated from message content and conversation titles in
the text search configuration ``settings.SEARCH_CONFIG`` (stored, so a search never parses
text it does not show), each in a GIN index led by ``user_id`` (btree_gin, a trusted
extension the owner role may create), so that one index scan finds one user's matches
whatever the other users hold. Adding a stored generated column rewrites the table under an
exclusive lock: on a large table, plan the migration's downtime (README, Search). The
extension stays when going back (other objects may use it).

SQLite: an FTS5 table (porter stemming) over a plain table of the texts (its external
content, with an INTEGER key that VACUUM never renumbers), filled here for existing rows and
kept in step by triggers on messages and conversations, deletes and cascades included. Each
row's ``owner`` token (the user's hex id and a digit, which no porter rule changes) lets the
match itself narrow to one user. The match markers (control characters 2 and 3) are stripped
from the texts, so no content can forge a highlight. SQLite drops a table's triggers when
Django rebuilds it: a later migration that rebuilds either table must drop these first and
make them again after (``drop_sqlite_triggers``/``create_sqlite_triggers``), as 0008 does for
0002's.
"""

from django.conf import settings
from django.db import migrations
from django.db.backends.base.schema import BaseDatabaseSchemaEditor
from django.db.migrations.state import StateApps


def postgresql_forward() -> list[str]:
    config = settings.SEARCH_CONFIG  # checked to be a plain name by the settings
    return [
        "CREATE EXTENSION IF NOT EXISTS btree_gin",
        "ALTER TABLE conversations_message ADD COLUMN content_search tsvector GENERATED ALWAYS AS "
        f"(to_tsvector('{config}'::regconfig, coalesce(content, ''))) STORED",
        "ALTER TABLE conversations_conversation ADD COLUMN title_search tsvector GENERATED ALWAYS AS "
        f"(to_tsvector('{config}'::regconfig, title)) STORED",
        "CREATE INDEX message_search_idx ON conversations_message USING gin (user_id, content_search)",
        "CREATE INDEX conversation_search_idx ON conversations_conversation USING gin (user_id, title_search)",
        "ANALYZE conversations_message",
        "ANALYZE conversations_conversation",
    ]


POSTGRESQL_BACKWARD = [
    "DROP INDEX conversation_search_idx",
    "DROP INDEX message_search_idx",
    "ALTER TABLE conversations_conversation DROP COLUMN title_search",
    "ALTER TABLE conversations_message DROP COLUMN content_search",
]


def _clean(expression: str) -> str:
    """The text without the match markers; NULL content indexes as ''."""
    return f"replace(replace(coalesce({expression}, ''), char(2), ''), char(3), '')"


SQLITE_TABLES = [
    """
    CREATE TABLE conversations_searchtext (
        id INTEGER PRIMARY KEY,
        user_id char(32) NOT NULL,
        conversation_id char(32) NOT NULL,
        message_id char(32) NULL UNIQUE,
        body text NOT NULL,
        owner text NOT NULL
    )
    """,
    "CREATE INDEX conversations_searchtext_conversation ON conversations_searchtext (conversation_id)",
    """
    CREATE VIRTUAL TABLE conversations_search USING fts5(
        body, owner, content='conversations_searchtext', content_rowid='id',
        tokenize='porter unicode61 remove_diacritics 2'
    )
    """,
    # The FTS5 index follows its content table.
    """
    CREATE TRIGGER conversations_searchtext_insert AFTER INSERT ON conversations_searchtext BEGIN
        INSERT INTO conversations_search (rowid, body, owner) VALUES (new.id, new.body, new.owner);
    END
    """,
    """
    CREATE TRIGGER conversations_searchtext_delete AFTER DELETE ON conversations_searchtext BEGIN
        INSERT INTO conversations_search (conversations_search, rowid, body, owner)
        VALUES ('delete', old.id, old.body, old.owner);
    END
    """,
    """
    CREATE TRIGGER conversations_searchtext_update AFTER UPDATE ON conversations_searchtext BEGIN
        INSERT INTO conversations_search (conversations_search, rowid, body, owner)
        VALUES ('delete', old.id, old.body, old.owner);
        INSERT INTO conversations_search (rowid, body, owner) VALUES (new.id, new.body, new.owner);
    END
    """,
]
SQLITE_TABLES_BACKWARD = [
    "DROP TRIGGER conversations_searchtext_update",
    "DROP TRIGGER conversations_searchtext_delete",
    "DROP TRIGGER conversations_searchtext_insert",
    "DROP TABLE conversations_search",
    "DROP TABLE conversations_searchtext",
]

# On the application's tables: dropped by a rebuild of either one.
SQLITE_TRIGGERS = {
    "message_search_insert": f"""
    CREATE TRIGGER message_search_insert AFTER INSERT ON conversations_message BEGIN
        INSERT INTO conversations_searchtext (user_id, conversation_id, message_id, body, owner)
        VALUES (new.user_id, new.conversation_id, new.id, {_clean("new.content")}, new.user_id || '0');
    END
    """,
    "message_search_update": f"""
    CREATE TRIGGER message_search_update AFTER UPDATE OF content ON conversations_message BEGIN
        UPDATE conversations_searchtext SET body = {_clean("new.content")} WHERE message_id = new.id;
    END
    """,
    "message_search_delete": """
    CREATE TRIGGER message_search_delete AFTER DELETE ON conversations_message BEGIN
        DELETE FROM conversations_searchtext WHERE message_id = old.id;
    END
    """,
    "conversation_search_insert": f"""
    CREATE TRIGGER conversation_search_insert AFTER INSERT ON conversations_conversation BEGIN
        INSERT INTO conversations_searchtext (user_id, conversation_id, message_id, body, owner)
        VALUES (new.user_id, new.id, NULL, {_clean("new.title")}, new.user_id || '0');
    END
    """,
    "conversation_search_update": f"""
    CREATE TRIGGER conversation_search_update AFTER UPDATE OF title ON conversations_conversation BEGIN
        UPDATE conversations_searchtext SET body = {_clean("new.title")}
        WHERE conversation_id = new.id AND message_id IS NULL;
    END
    """,
    # Its messages' rows too: whichever way they go, none outlives its conversation.
    "conversation_search_delete": """
    CREATE TRIGGER conversation_search_delete AFTER DELETE ON conversations_conversation BEGIN
        DELETE FROM conversations_searchtext WHERE conversation_id = old.id;
    END
    """,
}

SQLITE_FILL = [
    f"""
    INSERT INTO conversations_searchtext (user_id, conversation_id, message_id, body, owner)
    SELECT user_id, id, NULL, {_clean("title")}, user_id || '0' FROM conversations_conversation
    """,
    f"""
    INSERT INTO conversations_searchtext (user_id, conversation_id, message_id, body, owner)
    SELECT user_id, conversation_id, id, {_clean("content")}, user_id || '0' FROM conversations_message
    """,
]


def drop_sqlite_triggers(apps: StateApps, schema_editor: BaseDatabaseSchemaEditor) -> None:
    if schema_editor.connection.vendor == "sqlite":
        for name in SQLITE_TRIGGERS:
            schema_editor.execute(f"DROP TRIGGER IF EXISTS {name}")


def create_sqlite_triggers(apps: StateApps, schema_editor: BaseDatabaseSchemaEditor) -> None:
    drop_sqlite_triggers(apps, schema_editor)
    if schema_editor.connection.vendor == "sqlite":
        for statement in SQLITE_TRIGGERS.values():
            schema_editor.execute(statement)


def forward(apps: StateApps, schema_editor: BaseDatabaseSchemaEditor) -> None:
    vendor = schema_editor.connection.vendor
    if vendor == "postgresql":
        for statement in postgresql_forward():
            schema_editor.execute(statement)
    elif vendor == "sqlite":
        for statement in SQLITE_TABLES:
            schema_editor.execute(statement)
        # The searchtext triggers fill the FTS5 index as the rows go in.
        for statement in SQLITE_FILL:
            schema_editor.execute(statement)
        create_sqlite_triggers(apps, schema_editor)
    else:
        raise NotImplementedError(f"No full-text search for the {vendor} backend.")


def backward(apps: StateApps, schema_editor: BaseDatabaseSchemaEditor) -> None:
    vendor = schema_editor.connection.vendor
    if vendor == "postgresql":
        for statement in POSTGRESQL_BACKWARD:
            schema_editor.execute(statement)
    elif vendor == "sqlite":
        drop_sqlite_triggers(apps, schema_editor)
        for statement in SQLITE_TABLES_BACKWARD:
            schema_editor.execute(statement)


class Migration(migrations.Migration):
    dependencies = [
        ("conversations", "0011_conversation_fields"),
    ]

    operations = [
        migrations.RunPython(forward, backward, elidable=False),
    ]
