"""Row-level security: with the application's filters taken away, PostgreSQL itself still
hands a session only the rows of the user set for its transaction."""

from http import HTTPStatus

import psycopg
import pytest
from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from rest_framework_simplejwt.exceptions import TokenError
from rest_framework_simplejwt.tokens import RefreshToken

from accounts.services import user_delete
from conftest import client_for
from conversations import services
from conversations.checks import bypasses_row_level_security, row_level_security_binds
from conversations.models import Conversation, IdempotencyKey, Message
from core.rls import all_users, user_scope

from .factories import ConversationFactory, MessageFactory, UserFactory

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.skipif(connection.vendor != "postgresql", reason="row-level security is PostgreSQL's"),
]

SERVING_ROLE = settings.DATABASE_SERVING_ROLE
# Every table that holds user data, each with row-level security on and forced.
USER_DATA_TABLES = [
    "conversations_conversation",
    "conversations_message",
    "conversations_idempotencykey",
    "conversations_conversationlistversion",
]


@pytest.fixture
def two_users_data():
    """A and B, each with a conversation of two messages and an idempotency key."""
    rows = {}
    for name in ("a", "b"):
        owner = UserFactory.create(username=f"rls-{name}")
        conversation = ConversationFactory.create(user=owner)
        MessageFactory.create(conversation=conversation)
        services.message_append_idempotent(
            user=owner, conversation_id=conversation.pk, role="user", content="hi", idempotency_key="k"
        )
        rows[name] = (owner, conversation)
    return rows


def visible_owner_ids() -> set:
    return {
        *Conversation.objects.values_list("user_id", flat=True),
        *Message.objects.values_list("user_id", flat=True),
        *IdempotencyKey.objects.values_list("user_id", flat=True),
    }


def test_an_unfiltered_query_made_for_a_user_returns_only_their_rows(two_users_data):
    a, _ = two_users_data["a"]
    with user_scope(a):
        assert visible_owner_ids() == {a.pk}
        assert Message.objects.all().count() == 2
        assert Conversation.objects.count() == 1


def test_updates_and_deletes_aimed_at_another_users_rows_change_nothing(two_users_data):
    a, _ = two_users_data["a"]
    b, b_conversation = two_users_data["b"]
    with user_scope(a):
        assert Message.objects.filter(user=b).update(content="overwritten") == 0
        assert Conversation.objects.filter(pk=b_conversation.pk).update(title="mine") == 0
        assert Message.objects.filter(conversation=b_conversation).delete()[0] == 0
        assert Conversation.objects.all().exclude(user=a).delete()[0] == 0
    with user_scope(b):
        assert Message.objects.filter(conversation=b_conversation).exclude(content="overwritten").count() == 2
        assert Conversation.objects.get(pk=b_conversation.pk).title != "mine"


def test_writing_a_row_for_another_user_is_refused(two_users_data):
    a, _ = two_users_data["a"]
    b, _ = two_users_data["b"]
    with pytest.raises(DatabaseError, match="row-level security"), user_scope(a, atomic=True):
        Conversation.objects.create(user=b, title="planted")


def test_a_staff_superuser_of_the_application_has_no_bypass(two_users_data):
    boss = UserFactory.create(is_staff=True, is_superuser=True)
    with user_scope(boss):
        assert visible_owner_ids() == set()


def user_setting() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_setting('app.user_id', true)")
        return cursor.fetchone()[0] or ""


@pytest.mark.django_db(transaction=True)
def test_with_no_user_set_nothing_is_visible():
    message = MessageFactory.create()
    connection.close()  # back to the pool; the next query gets a connection with no user
    assert not Message.objects.exists()
    assert not Conversation.objects.exists()
    with user_scope(message.user):
        assert Message.objects.get() == message


@pytest.mark.django_db(transaction=True)
def test_every_connection_the_pool_hands_out_carries_no_user():
    message = MessageFactory.create()
    with user_scope(message.user):
        assert Message.objects.exists()
        assert user_setting() == str(message.user.pk)
    connection.close()  # the pool's reset clears the user before anyone else gets it
    pool = connection.pool  # type: ignore[attr-defined]  # PostgreSQL's wrapper has it
    held = [pool.getconn() for _ in range(pool.max_size)]
    try:
        for conn in held:
            assert conn.execute("SELECT current_setting('app.user_id', true)").fetchone()[0] in ("", None)
    finally:
        for conn in held:
            pool.putconn(conn)


@pytest.mark.django_db(transaction=True)
def test_inside_a_transaction_the_user_is_set_for_that_transaction_only():
    message = MessageFactory.create()
    connection.close()
    with transaction.atomic():
        with user_scope(message.user):
            assert Message.objects.exists()
        assert not Message.objects.exists()  # put back: nothing set
    with transaction.atomic():
        assert not Message.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_a_new_users_scope_replaces_the_connections_user():
    a, b = MessageFactory.create(), MessageFactory.create()
    with user_scope(a.user):
        assert list(Message.objects.all()) == [a]
    with user_scope(b.user):
        assert list(Message.objects.all()) == [b]
        with all_users(reason="test"):
            assert Message.objects.count() == 2
        assert list(Message.objects.all()) == [b]  # the lifted filter ended with its transaction


@pytest.mark.django_db(transaction=True)
def test_a_rolled_back_transaction_never_leaves_a_stale_user():
    a, b = MessageFactory.create(), MessageFactory.create()
    with user_scope(a.user):
        pass
    # Inside a transaction the user is local to it, and undone with it.
    with pytest.raises(RuntimeError), transaction.atomic(), user_scope(b.user):
        raise RuntimeError
    assert user_setting() == str(a.user.pk)
    with user_scope(b.user):
        assert list(Message.objects.all()) == [b]


def test_nested_scopes_restore_the_outer_one(two_users_data):
    a, _ = two_users_data["a"]
    b, _ = two_users_data["b"]
    with user_scope(a):
        with user_scope(b):
            assert visible_owner_ids() == {b.pk}
        assert visible_owner_ids() == {a.pk}
        with pytest.raises(RuntimeError), user_scope(b):
            raise RuntimeError
        assert visible_owner_ids() == {a.pk}


def test_all_users_is_for_the_table_owner_only(two_users_data):
    assert SERVING_ROLE, "scripts/with-postgres configures DATABASE_APP_URL"
    with all_users(reason="test"):
        assert len(visible_owner_ids()) == 2
        with connection.cursor() as cursor:
            cursor.execute(f"SET LOCAL ROLE {connection.ops.quote_name(SERVING_ROLE)}")
        # The same setting, as the serving role: the owner's policy does not apply to it.
        assert visible_owner_ids() == set()
        with connection.cursor() as cursor:
            cursor.execute("RESET ROLE")


def test_the_serving_role_reads_and_writes_only_in_its_users_scope(two_users_data):
    a, a_conversation = two_users_data["a"]
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute(f"SET LOCAL ROLE {connection.ops.quote_name(SERVING_ROLE)}")
        with user_scope(a):
            message = services.message_append(
                user=a, conversation_id=a_conversation.pk, role="assistant", content="as the serving role"
            )
            assert visible_owner_ids() == {a.pk}
        assert message.seq == 3
        with connection.cursor() as cursor:
            cursor.execute("RESET ROLE")


def test_sql_of_the_serving_role_can_take_any_users_identity(two_users_data):
    """Both sides of the README's "What the policies stop, and what they do not", in the SQL
    injected code could run: a query without a filter sees only the identity's rows, but the
    identity is a plain setting, and the users table lists every id to set it to. Binding the
    identity to something the serving role cannot forge makes this fail: then update the README."""
    a, _ = two_users_data["a"]
    b, b_conversation = two_users_data["b"]
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(f"SET LOCAL ROLE {connection.ops.quote_name(SERVING_ROLE)}")
        cursor.execute("SELECT set_config('app.user_id', %s, true)", [str(a.pk)])
        cursor.execute("SELECT DISTINCT user_id FROM conversations_message")
        assert cursor.fetchall() == [(a.pk,)]

        cursor.execute("SELECT id FROM accounts_user")
        every_user_id = {user_id for (user_id,) in cursor.fetchall()}
        assert b.pk in every_user_id
        cursor.execute("SELECT set_config('app.user_id', %s, true)", [str(b.pk)])
        cursor.execute("SELECT DISTINCT user_id FROM conversations_message")
        assert cursor.fetchall() == [(b.pk,)]
        cursor.execute(
            "UPDATE conversations_conversation SET title = 'taken' WHERE id = %s", [b_conversation.pk]
        )
        assert cursor.rowcount == 1
        cursor.execute("RESET ROLE")


def test_the_roles_are_what_the_readme_promises():
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT rolname, rolsuper, rolbypassrls FROM pg_roles WHERE rolname IN (current_user, %s)",
            [SERVING_ROLE],
        )
        roles = {name: (superuser, bypass) for name, superuser, bypass in cursor.fetchall()}
        cursor.execute(
            "SELECT relname, pg_get_userbyid(relowner), relrowsecurity, relforcerowsecurity FROM pg_class "
            "WHERE relname = ANY(%s)",
            [USER_DATA_TABLES],
        )
        tables = cursor.fetchall()
    assert roles == {connection.settings_dict["USER"]: (False, False), SERVING_ROLE: (False, False)}
    assert len(tables) == len(USER_DATA_TABLES)
    for _, owner, enabled, forced in tables:
        assert owner == connection.settings_dict["USER"] != SERVING_ROLE
        assert enabled
        assert forced


def test_the_serving_role_can_issue_and_revoke_refresh_tokens():
    """simplejwt's blacklist tables are granted after migrate like every other table."""
    user = UserFactory.create()
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute(f"SET LOCAL ROLE {connection.ops.quote_name(SERVING_ROLE)}")
        token = RefreshToken.for_user(user)  # an outstanding-token row, as at login
        token.blacklist()  # a blacklisted-token row, as at logout
        with pytest.raises(TokenError):
            RefreshToken(str(token))  # type: ignore[arg-type]  # takes the encoded token
        with connection.cursor() as cursor:
            cursor.execute("RESET ROLE")


def test_the_system_check_is_quiet_for_a_role_bound_by_row_level_security():
    assert row_level_security_binds(databases=["default"]) == []


def test_the_system_check_spots_a_superuser_connection():
    # The throwaway cluster trusts its local superuser; production would not.
    params = connection.get_connection_params()
    params = {**{k: v for k, v in params.items() if k in ("host", "port", "dbname")}, "user": "postgres"}
    with psycopg.connect(**params) as superuser, superuser.cursor() as cursor:
        assert bypasses_row_level_security(cursor)
    with connection.cursor() as cursor:
        assert not bypasses_row_level_security(cursor)


def history_of(client, conversation_id):
    return client.get(reverse("conversation-history", args=[conversation_id]))


@pytest.mark.django_db(transaction=True)
def test_an_api_read_is_the_token_lookup_then_one_select_with_no_transaction():
    message = MessageFactory.create()
    client = client_for(message.user)
    connection.close()
    with CaptureQueriesContext(connection) as captured:
        response = history_of(client, message.conversation_id)
    assert response.status_code == HTTPStatus.OK
    assert [m["content"] for m in response.json()["messages"]] == [message.content]
    statements = [q["sql"] for q in captured.captured_queries]
    # The user's lookup also makes them the connection's row-level-security identity.
    assert len(statements) == 2, statements
    assert '"accounts_user"' in statements[0]
    assert "set_config" in statements[0]
    assert '"conversations_message"' in statements[1]


@pytest.mark.django_db(transaction=True)
def test_requests_of_two_users_on_one_connection_each_see_only_their_own():
    a, b = MessageFactory.create(), MessageFactory.create()
    client_a, client_b = client_for(a.user), client_for(b.user)
    for _ in range(2):
        assert history_of(client_a, a.conversation_id).json()["messages"][0]["content"] == a.content
        assert history_of(client_b, a.conversation_id).status_code == HTTPStatus.NOT_FOUND
        assert [c["id"] for c in client_b.get(reverse("conversation-list")).json()["results"]] == [
            str(b.conversation_id)
        ]


@pytest.mark.django_db(transaction=True)
def test_a_token_of_a_deleted_user_gets_nothing_on_a_connection_another_user_identified():
    a, b = MessageFactory.create(), MessageFactory.create()
    client_b = client_for(b.user)
    with user_scope(a.user):
        pass  # the connection now carries a's identity
    user_delete(user=b.user)
    response = history_of(client_b, a.conversation_id)
    assert response.status_code == HTTPStatus.UNAUTHORIZED
