"""Search inside the databases: the migration fills and empties the index on both, PostgreSQL's
row-level security holds for search as the serving role, and the plan uses the GIN index on
a table big enough for the planner's choice to mean something."""

import json

import psycopg
import pytest
from django.conf import settings
from django.core.management import call_command
from django.db import connection, transaction

from conversations import search, services
from conversations.checks import LEAKPROOF_MATCH, search_match_can_use_its_index, search_match_is_leakproof
from conversations.models import Conversation, Message
from core.rls import user_scope

from .factories import ConversationFactory, MessageFactory, UserFactory

pytestmark = pytest.mark.django_db

postgresql_only = pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL's")
SERVING_ROLE = settings.DATABASE_SERVING_ROLE


def found(user, q: str) -> list[search.Hit]:
    return search.search_hits(user=user, query=search.parse(q), limit=50)


@pytest.mark.django_db(transaction=True)
def test_the_migration_indexes_existing_rows_and_going_back_removes_the_index():
    call_command("migrate", "conversations", "0011", verbosity=0)
    try:
        user, other = UserFactory.create(), UserFactory.create()
        for owner in (user, other):
            MessageFactory.create(
                conversation=ConversationFactory.create(user=owner, title="Kettle"), content="kettle"
            )

        call_command("migrate", "conversations", verbosity=0)

        assert len(found(user, "kettle")) == 2
        call_command("migrate", "conversations", "0011", verbosity=0)
        with connection.cursor() as cursor:
            tables = set(connection.introspection.table_names(cursor))
            assert not {search.FTS_TABLE, search.FTS_CONTENT} & tables
            columns = {
                c.name
                for c in connection.introspection.get_table_description(cursor, "conversations_message")
            }
            assert search.CONTENT_VECTOR not in columns
        # Writes go on without the triggers' tables.
        MessageFactory.create(conversation=Conversation.objects.filter(user=user).get(), content="boiling")
    finally:
        call_command("migrate", "conversations", verbosity=0)
    assert {h.snippet for h in found(user, "boiling")} == {"<mark>boiling</mark>"}


# -- row-level security -----------------------------------------------------------------------


def serving_role() -> None:
    with connection.cursor() as cursor:
        cursor.execute(f"SET LOCAL ROLE {connection.ops.quote_name(SERVING_ROLE)}")


@postgresql_only
def test_as_the_serving_role_a_search_sees_only_the_scoped_users_rows():
    a, b = UserFactory.create(), UserFactory.create()
    for owner in (a, b):
        MessageFactory.create(
            conversation=ConversationFactory.create(user=owner, title="Kettle"), content="kettle"
        )
    own = set(Conversation.objects.filter(user=a).values_list("pk", flat=True))
    with transaction.atomic():
        serving_role()
        assert {h.conversation_id for h in found(a, "kettle")} == own
        # The statement made for B, run in A's scope: the policies hand it nothing.
        statement, params = search.search_statement(
            user_id=b.pk,
            query=search.parse("kettle"),
            limit=10,
            after=None,
            backwards=False,
            connection=connection,
        )
        with user_scope(a), connection.cursor() as cursor:
            cursor.execute(statement, params)
            assert cursor.fetchall() == []
            cursor.execute(
                "SELECT count(*) FROM conversations_message "
                "WHERE content_search @@ websearch_to_tsquery('kettle')"
            )
            assert cursor.fetchone()[0] == 1
        with user_scope(b), connection.cursor() as cursor:
            cursor.execute(statement, params)
            assert len(cursor.fetchall()) == 2


@postgresql_only
def test_the_serving_role_appends_through_the_generated_columns():
    user = UserFactory.create()
    conversation = ConversationFactory.create(user=user)
    with transaction.atomic():
        serving_role()
        services.message_append(
            user=user, conversation_id=conversation.pk, role="user", content="boiling kettles"
        )
        services.conversation_update(user=user, conversation_id=conversation.pk, title="Tea")
        assert len(found(user, "kettle")) == 1
        assert len(found(user, "tea")) == 1


# -- the plan ------------------------------------------------------------------------------------

WORDS = ["kettle", "pool", "timeout", "database", "cursor", "index", "query", "python", "server", "token"]
WORDS += [f"topic{n}" for n in range(30)]


@pytest.fixture
def many_messages():
    """100,000 messages of 100 users (1,000 each), loaded by one INSERT … SELECT over
    generate_series; each holds four words of forty, so a common word matches about one in ten
    of a user's messages; ``zanzibar`` is in one in a hundred."""
    users = [UserFactory.build(username=f"searcher{n}") for n in range(100)]
    users = list(type(users[0]).objects.bulk_create(users))
    Conversation.objects.bulk_create(
        Conversation(user=u, title=f"talk {n}") for u in users for n in range(10)
    )
    words = "ARRAY[" + ", ".join(f"'{w}'" for w in WORDS) + "]"
    pick = "({words})[1 + (abs(hashtext(c.id::text || s.seq::text || '{salt}')) % 40)]"
    content = " || ' ' || ".join(pick.format(words=words, salt=salt) for salt in "abcd")
    with connection.cursor() as cursor:
        columns = "id, conversation_id, user_id, seq, role, content, created_at"
        cursor.execute(
            f"INSERT INTO conversations_message ({columns}) "  # noqa: S608 (the test's own text)
            f"SELECT gen_random_uuid(), c.id, c.user_id, s.seq, 'user', "
            f"CASE WHEN s.seq = 7 THEN 'zanzibar ' ELSE '' END || {content}, now() "
            "FROM conversations_conversation c CROSS JOIN generate_series(1, 100) AS s(seq) "
            "WHERE c.title LIKE 'talk %%'"
        )
        assert cursor.rowcount == 100_000
        cursor.execute("ANALYZE conversations_message")
        cursor.execute("ANALYZE conversations_conversation")
    return users


@pytest.fixture
def leakproof_match():
    """``tsvector @@ tsquery`` marked LEAKPROOF by the cluster's superuser, as the README asks
    of a deployment (conversations/checks.py, W002), and put back after."""
    settings_dict = connection.settings_dict

    def mark(leakproof: bool) -> None:
        with psycopg.connect(
            host=settings_dict["HOST"],
            port=settings_dict["PORT"],
            dbname=settings_dict["NAME"],
            user="postgres",
            autocommit=True,
        ) as admin:
            admin.execute(
                LEAKPROOF_MATCH if leakproof else LEAKPROOF_MATCH.replace("LEAKPROOF", "NOT LEAKPROOF")
            )

    mark(True)
    yield
    mark(False)


def plan_of(user, q: str) -> str:
    statement, params = search.search_statement(
        user_id=user.pk, query=search.parse(q), limit=21, after=None, backwards=False, connection=connection
    )
    with user_scope(user), connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN (FORMAT JSON) {statement}", params)
        return json.dumps(cursor.fetchone()[0])


@postgresql_only
def test_the_search_uses_the_gin_index_not_a_sequential_scan(many_messages, leakproof_match):
    user = many_messages[37]
    for q in ["kettle", "zanzibar", '"kettle pool"', "kettle -pool", "kettle OR zanzibar"]:
        plan = plan_of(user, q)

        assert "message_search_idx" in plan, (q, plan)
        assert "content_search @@" in index_conditions(plan), (q, plan)
        assert "Seq Scan" not in plan, (q, plan)

    listed = (
        Conversation.objects.filter(user=user)
        .filter(pk__in=search.matching_conversations(user=user, query=search.parse("zanzibar")))
        .order_by("-updated_at", "-id")[:20]
    )
    with user_scope(user):
        plan = listed.explain()
    assert "message_search_idx" in plan, plan
    assert "Seq Scan on conversations_message" not in plan, plan


@postgresql_only
def test_without_a_leakproof_match_the_search_reads_only_the_users_rows(many_messages):
    """What row-level security leaves when the match is not LEAKPROOF: an index scan on the
    user, the match as a filter. Slower for a busy user, never a scan of other users' rows."""
    user = many_messages[5]
    with connection.cursor() as cursor:
        assert not search_match_is_leakproof(cursor)

    plan = plan_of(user, "kettle")

    assert "Seq Scan" not in plan, plan
    assert "content_search @@" not in index_conditions(plan), plan
    hits = found(user, "zanzibar")
    assert len(hits) == 10  # seq 7 of each of the user's 10 conversations
    owned = set(Message.objects.filter(user=user).values_list("pk", flat=True))
    assert {h.message_id for h in hits} <= owned


def index_conditions(plan: str) -> str:
    found: list[str] = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            found.extend(str(node[key]) for key in ("Index Cond", "Recheck Cond") if key in node)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(json.loads(plan))
    return " ".join(found)


@postgresql_only
def test_the_system_check_warns_until_the_match_is_leakproof(request):
    assert [m.id for m in search_match_can_use_its_index(databases=["default"])] == ["conversations.W002"]

    request.getfixturevalue("leakproof_match")

    assert search_match_can_use_its_index(databases=["default"]) == []
