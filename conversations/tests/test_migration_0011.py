"""Migration 0011 on data made before it: previews filled, list versions made, the triggers
(0002's user-match ones on SQLite, and its own) in place after it, and gone or back as they
were before it when it is undone."""

import pytest
from django.core.management import call_command
from django.db import IntegrityError, connection
from django.db.migrations.executor import MigrationExecutor

from conversations import services
from conversations.models import Conversation, ConversationListVersion, Message
from core.rls import all_users

from .factories import UserFactory

pytestmark = pytest.mark.django_db(transaction=True)

BEFORE = [("conversations", "0010_message_item_shapes")]


def migrate_to(target: list[tuple[str, str]]) -> None:
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(target)


@pytest.fixture
def before_0011():
    """The database as 0010 left it, with two users' conversations written by SQL: one of
    three messages (the newest longer than a preview), one empty. Back to the latest after."""
    migrate_to(BEFORE)
    owner, other = UserFactory.create(), UserFactory.create()
    with (
        all_users(reason="rows of two users, as the database held them", atomic=True),
        connection.cursor() as cursor,
    ):
        for user, count in ((owner, 3), (other, 0)):
            conversation_id = f"01a2055f-25b0-700c-a19f-b33874f6{count:04d}"
            cursor.execute(
                "INSERT INTO conversations_conversation "
                "(id, user_id, title, created_at, updated_at, message_count, version) "
                "VALUES (%s, %s, '', %s, %s, %s, %s)",
                [
                    conversation_id.replace("-", "") if connection.vendor == "sqlite" else conversation_id,
                    user.pk.hex if connection.vendor == "sqlite" else user.pk,
                    "2026-01-01 00:00:00",
                    "2026-01-01 00:00:03",
                    count,
                    count,
                ],
            )
            for seq in range(1, count + 1):
                cursor.execute(
                    "INSERT INTO conversations_message "
                    "(id, conversation_id, user_id, seq, role, content, created_at, token_count) "
                    "VALUES (%s, %s, %s, %s, %s, %s, %s, 1)",
                    [
                        f"01a2055f-25b0-700c-a19f-b33874f7{seq:04d}".replace(
                            "-", "" if connection.vendor == "sqlite" else "-"
                        ),
                        conversation_id.replace("-", "")
                        if connection.vendor == "sqlite"
                        else conversation_id,
                        user.pk.hex if connection.vendor == "sqlite" else user.pk,
                        seq,
                        "user" if seq % 2 else "assistant",
                        f"{seq} " + "é" * 300,
                        f"2026-01-01 00:00:0{seq}",
                    ],
                )
    yield owner, other
    call_command("migrate", "conversations", verbosity=0)


def test_0011_fills_previews_and_list_versions_and_keeps_every_trigger(before_0011):
    owner, other = before_0011
    call_command("migrate", "conversations", verbosity=0)

    with all_users(reason="the test reads what the migration wrote"):
        full = Conversation.objects.get(user=owner)
        empty = Conversation.objects.get(user=other)
        newest = Message.objects.get(conversation=full, seq=3)
        assert full.preview == {
            "role": "user",
            "content": ("3 " + "é" * 300)[:200],
            "created_at": newest.created_at,
        }
        assert empty.preview is None
        assert (full.archived, full.pinned, full.metadata) == (False, False, {})
        versions = dict(ConversationListVersion.objects.values_list("user_id", "version"))
    assert set(versions) == {owner.pk, other.pk}

    # The list version's triggers: a delete moves the version the migration made.
    services.conversation_delete(user=other, conversation_id=empty.pk)
    with all_users(reason="the test reads what the trigger wrote"):
        assert ConversationListVersion.objects.get(user=other).version == versions[other.pk] + 1
    # 0002's user-match check still holds (on SQLite, triggers remade after the rebuilds).
    stranger = UserFactory.create()
    with pytest.raises(IntegrityError), all_users(reason="a row of two users, on purpose", atomic=True):
        Message.objects.create(conversation=full, user=stranger, seq=4, role="user", content="x")


def test_0011_undone_leaves_the_user_match_check_and_no_list_version(before_0011):
    call_command("migrate", "conversations", verbosity=0)
    migrate_to(BEFORE)

    with connection.cursor() as cursor:
        tables = connection.introspection.table_names(cursor)
        assert "conversations_conversationlistversion" not in tables
        # A conversation can still be written (no trigger left naming the dropped table),
        # and a message of another user is still refused.
        owner, stranger = UserFactory.create(), UserFactory.create()
        ids = {
            "conversation": "01a2055f-25b0-700c-a19f-b33874f69999",
            "owner": str(owner.pk),
            "stranger": str(stranger.pk),
        }
        if connection.vendor == "sqlite":
            ids = {name: value.replace("-", "") for name, value in ids.items()}
        with all_users(reason="rows written by SQL", atomic=True):
            cursor.execute(
                "INSERT INTO conversations_conversation "
                "(id, user_id, title, created_at, updated_at, message_count, version) "
                "VALUES (%s, %s, '', '2026-01-01 00:00:00', '2026-01-01 00:00:00', 0, 0)",
                [ids["conversation"], ids["owner"]],
            )
        with pytest.raises(IntegrityError), all_users(reason="a row of two users, on purpose", atomic=True):
            cursor.execute(
                "INSERT INTO conversations_message (id, conversation_id, user_id, seq, role, content, "
                "created_at, token_count) VALUES (%s, %s, %s, 1, 'user', 'x', '2026-01-01 00:00:00', 0)",
                [ids["conversation"].replace("9999", "8888"), ids["conversation"], ids["stranger"]],
            )
