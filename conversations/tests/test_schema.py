"""Indexes and migrations, read back from the database's own catalog."""

import random
from datetime import timedelta

import pytest
from django.conf import settings
from django.core.management import call_command
from django.db import DatabaseError, IntegrityError, connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from accounts.models import User
from conversations import selectors
from conversations.models import Conversation, Message
from conversations.retention import conversations_expired_batch
from core.rls import all_users, user_scope

from .factories import ConversationFactory

pytestmark = pytest.mark.django_db

postgresql_only = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="EXPLAIN plans are PostgreSQL's"
)

# Every query pattern the API makes, as (table, leading columns an index must start with).
QUERY_PATTERNS = {
    "a user's conversations by latest activity": (
        "conversations_conversation",
        ["user_id", "archived", "updated_at"],
    ),
    "a user's conversations by creation": (
        "conversations_conversation",
        ["user_id", "archived", "created_at"],
    ),
    "a conversation by id and owner": ("conversations_conversation", ["id", "user_id"]),
    "a conversation's messages in append order": ("conversations_message", ["conversation_id", "seq"]),
    "a conversation's messages by time range": ("conversations_message", ["conversation_id", "created_at"]),
    "a conversation's messages of one role": ("conversations_message", ["conversation_id", "role", "seq"]),
    "a user's messages (cascade, export)": ("conversations_message", ["user_id"]),
    # Across users, by time: retention, an operator's "since" queries.
    "every user's conversations by latest activity": ("conversations_conversation", ["updated_at"]),
    "every user's conversations by creation": ("conversations_conversation", ["created_at"]),
    "every user's messages since a time": ("conversations_message", ["created_at"]),
}


def index_columns(table: str) -> list[list[str]]:
    with connection.cursor() as cursor:
        constraints = connection.introspection.get_constraints(cursor, table)
    return [c["columns"] for c in constraints.values() if c["index"] or c["unique"] or c["primary_key"]]


@pytest.mark.parametrize("pattern", QUERY_PATTERNS)
def test_an_index_serves_every_query_pattern(pattern):
    table, leading = QUERY_PATTERNS[pattern]
    assert any(columns[: len(leading)] == leading for columns in index_columns(table)), index_columns(table)


def table_names() -> set[str]:
    with connection.cursor() as cursor:
        return set(connection.introspection.table_names(cursor))


@pytest.mark.django_db(transaction=True)
def test_migrations_roll_back_to_zero_and_reapply():
    call_command("migrate", "conversations", "zero", verbosity=0)
    assert not {"conversations_conversation", "conversations_message"} & table_names()

    call_command("migrate", "conversations", verbosity=0)
    assert {"conversations_conversation", "conversations_message"} <= table_names()

    # The hand-written user-match constraint came back with the tables.
    conversation = ConversationFactory.create()
    stranger = User.objects.create(username="stranger")
    with pytest.raises(IntegrityError), all_users(reason="a row of two users, on purpose", atomic=True):
        Message.objects.create(conversation=conversation, user=stranger, seq=1, role="user", content="x")


@pytest.fixture
def large_history():
    """Enough rows that the planner's choice of an index over a sequential scan means something:
    200 users, 4,000 conversations, 40,000 messages."""
    rng = random.Random(7)
    users = User.objects.bulk_create(User(username=f"load{n}") for n in range(200))
    now = timezone.now()
    conversations = Conversation.objects.bulk_create(
        Conversation(user=users[n % len(users)], updated_at=now - timedelta(minutes=rng.randrange(100_000)))
        for n in range(4_000)
    )
    Message.objects.bulk_create(
        (
            Message(
                conversation=c, user_id=c.user_id, seq=seq, role="user", content="x" * rng.randrange(20, 400)
            )
            for c in conversations
            for seq in range(1, 11)
        ),
        batch_size=5_000,
    )
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE conversations_conversation")
        cursor.execute("ANALYZE conversations_message")
    return conversations


def assert_index_plan(queryset) -> None:
    plan = queryset.explain()
    assert "Index" in plan, plan
    assert "Seq Scan" not in plan, plan


@postgresql_only
def test_history_query_is_an_index_scan(large_history):
    conversation = large_history[1234]
    assert_index_plan(Message.objects.filter(conversation=conversation).order_by("-seq")[:50])
    assert_index_plan(Message.objects.filter(conversation=conversation).order_by("seq")[:50])


@pytest.fixture
def one_busy_user():
    """A user with 5,000 conversations (a third archived, one in fifty pinned) among 50 users
    with 1,000 each: enough that sorting the user's rows would be the planner's loss, and the
    user's a tenth of the table, as one of many users is."""
    users = User.objects.bulk_create(User(username=f"busy{n}") for n in range(51))
    with all_users(reason="fill the table for EXPLAIN", atomic=True), connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO conversations_conversation "
            "(id, user_id, title, created_at, updated_at, message_count, archived, pinned, metadata) "
            "SELECT gen_random_uuid(), %s, '', now() - g * interval '1 minute', "
            "now() - random() * g * interval '1 minute', 0, g %% 3 = 0, g %% 50 = 0, '{}' "
            "FROM generate_series(1, 5000) g",
            [users[0].pk],
        )
        cursor.execute(
            "INSERT INTO conversations_conversation "
            "(id, user_id, title, created_at, updated_at, message_count, archived, pinned, metadata) "
            "SELECT gen_random_uuid(), (%s::uuid[])[1 + g %% 50], '', now() - g * interval '1 minute', "
            "now() - random() * g * interval '1 minute', 0, g %% 3 = 0, g %% 50 = 0, '{}' "
            "FROM generate_series(1, 50000) g",
            [[u.pk for u in users[1:]]],
        )
        # Both tables of the list's query, as autovacuum would have them (which it may or may
        # not have done by now): the list versions' few rows, one per user, too.
        cursor.execute("ANALYZE conversations_conversation, conversations_conversationlistversion")
    return users[0]


@postgresql_only
@pytest.mark.parametrize(
    ("query", "index"),
    [
        ({}, "conversation_list_updated_idx"),
        ({"archived": "true"}, "conversation_list_updated_idx"),
        ({"pinned": "false"}, "conversation_list_updated_idx"),
        ({"pinned": "true"}, "conversation_pin_updated_idx"),
        ({"archived": "true", "pinned": "true"}, "conversation_pin_updated_idx"),
        ({"ordering": "updated_at"}, "conversation_list_updated_idx"),
        ({"ordering": "-created_at"}, "conversation_list_created_idx"),
        ({"ordering": "created_at", "pinned": "true"}, "conversation_pin_created_idx"),
    ],
)
def test_the_conversation_list_walks_an_index_to_its_page(one_busy_user, query, index):
    """The list's query as the view builds it (its filters, the paginator's order and limit,
    the list version's sub-select): an index range in the page's order, stopped at the page,
    never a sort of the user's rows."""
    from conversations.filters import ConversationFilter
    from conversations.pagination import ConversationPagination

    ordering = query.pop("ordering", "-updated_at")
    serving_role = connection.ops.quote_name(settings.DATABASE_SERVING_ROLE)
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute(f"SET LOCAL ROLE {serving_role}")  # as the service runs
        with user_scope(one_busy_user):
            rows = ConversationFilter(query, selectors.conversation_list_versioned(user=one_busy_user)).qs
            plan = rows.order_by(*ConversationPagination.orderings[ordering])[:21].explain()
        with connection.cursor() as cursor:
            cursor.execute("RESET ROLE")
    assert "Sort" not in plan, plan
    # The user's conversations by index; the list version is one row by key, which the planner
    # may read from its table's single page rather than its index.
    assert "Seq Scan on conversations_conversation " not in plan, plan
    assert f"using {index} on conversations_conversation" in plan, plan


@postgresql_only
def test_the_planner_knows_a_conversation_decides_its_messages_owner(large_history):
    """Every message query filters on conversation and owner. Taken as independent, the two
    make the planner expect almost no rows for a conversation, so on a large table it
    intersects two indexes and sorts the whole conversation instead of walking
    ``(conversation_id, seq)`` to the page's limit (measured on 1,000,000 messages: 2.5 ms
    against 0.19 ms). Migration 0005's statistics keep the estimate at the conversation's size."""
    conversation = large_history[1234]
    serving_role = connection.ops.quote_name(settings.DATABASE_SERVING_ROLE)
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(f"SET LOCAL ROLE {serving_role}")  # as the service runs
        with user_scope(conversation.user_id):
            cursor.execute(
                "EXPLAIN (FORMAT JSON) SELECT * FROM conversations_message "
                "WHERE conversation_id = %s AND user_id = %s",
                [conversation.pk, conversation.user_id],
            )
            estimate = cursor.fetchone()[0][0]["Plan"]["Plan Rows"]
        cursor.execute("RESET ROLE")
    assert estimate >= 5, estimate  # the conversation has 10 messages


@pytest.fixture
def conversations_over_time():
    """20,000 conversations of 100 users, one a minute over the last two weeks, each active
    since at some random time, with 3 messages each: written by SQL, as the bulk is the
    point. Retention and an operator's "since" queries cross users (``all_users``)."""
    users = User.objects.bulk_create(User(username=f"time{n}") for n in range(100))
    with all_users(reason="fill the tables for EXPLAIN", atomic=True), connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO conversations_conversation "
            "(id, user_id, title, created_at, updated_at, message_count) "
            "SELECT gen_random_uuid(), (%s::uuid[])[1 + g %% 100], '', now() - g * interval '1 minute', "
            "now() - random() * g * interval '1 minute', 3 FROM generate_series(1, 20000) g",
            [[u.pk for u in users]],
        )
        cursor.execute(
            "INSERT INTO conversations_message "
            "(id, conversation_id, user_id, seq, role, content, created_at) "
            "SELECT gen_random_uuid(), c.id, c.user_id, s, 'user', repeat('x', 100), "
            "c.created_at + s * interval '1 second' "
            "FROM conversations_conversation c, generate_series(1, 3) s"
        )
        cursor.execute("ANALYZE conversations_conversation")
        cursor.execute("ANALYZE conversations_message")


def assert_plan_uses(plan: str, index: str) -> None:
    assert f"Index Scan using {index} " in plan or f"Index Scan on {index}" in plan, plan
    assert "Seq Scan" not in plan, plan


@postgresql_only
def test_retention_walks_the_latest_activity_index_across_users(conversations_over_time):
    """prune_conversations' batch, as it runs (the table owner, every user's rows): the
    first 500 conversations last active a week ago or more, of about 3,000 such."""
    cutoff = timezone.now() - timedelta(days=7)
    with all_users(reason="explain retention's batch", atomic=True):
        plan = conversations_expired_batch(cutoff=cutoff, user=None, batch_size=500).explain()
    assert_plan_uses(plan, "conversation_updated_idx")


@postgresql_only
def test_conversations_created_since_use_the_creation_index(conversations_over_time):
    since = timezone.now() - timedelta(hours=2)
    with all_users(reason="explain an operator's query", atomic=True):
        plan = Conversation.objects.filter(created_at__gte=since).order_by("created_at").explain()
    assert_plan_uses(plan, "conversation_created_idx")


@postgresql_only
def test_messages_since_use_the_message_time_index(conversations_over_time):
    since = timezone.now() - timedelta(hours=2)
    with all_users(reason="explain an operator's query", atomic=True):
        plan = Message.objects.filter(created_at__gte=since).order_by("created_at").explain()
    assert_plan_uses(plan, "message_created_idx")


def plan_of(sql: str, params: list | None, *, role: str | None = None) -> dict:
    """The JSON plan of ``sql``, as the connection's role or as ``role``."""
    with transaction.atomic(), connection.cursor() as cursor:
        if role:
            cursor.execute(f"SET LOCAL ROLE {connection.ops.quote_name(role)}")
        cursor.execute(f"EXPLAIN (FORMAT JSON) {sql}", params)
        return cursor.fetchone()[0][0]["Plan"]


def plan_shape(plan: dict) -> list[str]:
    """The plan's node types, depth first, with each scan's index."""
    shape = [f"{plan['Node Type']} {plan.get('Index Name', '')}".strip()]
    for child in plan.get("Plans", []):
        shape.extend(plan_shape(child))
    return shape


@pytest.fixture
def long_conversations():
    """Ten users with two 1,000-message conversations each: the probe's owner has a tenth of
    the rows, the shape where the owner's plan went wrong."""
    users = User.objects.bulk_create(User(username=f"long{n}") for n in range(10))
    conversations = Conversation.objects.bulk_create(Conversation(user=users[n % 10]) for n in range(20))
    Message.objects.bulk_create(
        (
            Message(conversation=c, user_id=c.user_id, seq=seq, role="user", content="x" * 40)
            for c in conversations
            for seq in range(1, 1_001)
        ),
        batch_size=5_000,
    )
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE conversations_message")
    return conversations


@postgresql_only
def test_the_owner_role_gets_the_serving_roles_plan(long_conversations):
    """The table owner (``DATABASE_URL``: what an agent process connects as by default, and all
    a single-role deployment has) also carries the all-rows policy, OR'ed into every query.
    Written as a plain ``current_setting(…) = 'on'`` the planner cannot discard it and expected
    a row or two for a conversation, intersecting two indexes and sorting the whole
    conversation (measured for history_load(50) on a 1,000-message conversation: 8.4 ms
    against 0.13 ms). As a sub-select (migration 0007) it is an InitPlan, one value for the
    statement, and the owner walks ``(conversation_id, seq)`` to the limit as the serving
    role does; on conversations spread over the table that took migration 0009 too
    (``test_the_owner_role_gets_the_serving_roles_plan_for_the_history_window``)."""
    conversation = long_conversations[0]
    sql = (
        "SELECT * FROM conversations_message WHERE conversation_id = %s AND user_id = %s "
        "ORDER BY seq DESC LIMIT 50"
    )
    params = [conversation.pk, conversation.user_id]
    with user_scope(conversation.user_id):
        as_owner = plan_of(sql, params)
        as_serving_role = plan_of(sql, params, role=settings.DATABASE_SERVING_ROLE)

    assert connection.settings_dict["USER"] != settings.DATABASE_SERVING_ROLE
    assert "Sort" not in plan_shape(as_owner), plan_shape(as_owner)
    assert "BitmapAnd" not in plan_shape(as_owner), plan_shape(as_owner)
    assert [node for node in plan_shape(as_owner) if "Scan" in node] == [
        node for node in plan_shape(as_serving_role) if "Scan" in node
    ], (plan_shape(as_owner), plan_shape(as_serving_role))


@pytest.fixture
def interleaved_conversations():
    """Twenty users with two 1,000-message conversations each, appended in turns as a live
    service stores them: a conversation's messages are spread over the table's pages, not
    packed together, which is what makes the planner's row estimate decide the plan."""
    users = User.objects.bulk_create(User(username=f"turns{n}") for n in range(20))
    conversations = Conversation.objects.bulk_create(Conversation(user=users[n % 20]) for n in range(40))
    Message.objects.bulk_create(
        (
            Message(
                conversation=c, user_id=c.user_id, seq=seq, role="user", content="x" * 200, token_count=40
            )
            for seq in range(1, 1_001)
            for c in conversations
        ),
        batch_size=5_000,
    )
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE conversations_message")
    return conversations


@postgresql_only
@pytest.mark.parametrize("max_tokens", [None, 2_000])
def test_the_owner_role_gets_the_serving_roles_plan_for_the_history_window(
    interleaved_conversations, max_tokens
):
    """The history window as ``history_load`` runs it (the conversation left-joined to its
    newest messages, with the running sum for ``max_tokens``), as the table owner and as the
    serving role: the same scans, walking ``(conversation_id, seq)`` to the limit. With the
    all-rows policy as 0007's InitPlan the planner took it to pass half the rows (a bare
    boolean's default), so the owner's window again intersected two indexes and sorted the
    whole conversation (2.7 ms against 0.19 ms on 1,000,000 messages); as migration 0009's
    null test it passes nearly all, as the serving role's one-time filter does."""
    conversation = interleaved_conversations[0]
    with CaptureQueriesContext(connection) as captured:
        selectors.history_load(user=conversation.user, conversation_id=conversation.pk, max_tokens=max_tokens)
    [statement] = [q["sql"] for q in captured.captured_queries if "conversations_message" in q["sql"]]
    with user_scope(conversation.user_id):
        as_owner = plan_shape(plan_of(statement, None))
        as_serving_role = plan_shape(plan_of(statement, None, role=settings.DATABASE_SERVING_ROLE))

    assert "BitmapAnd" not in as_owner, as_owner
    assert "Index Scan message_conversation_seq_uniq" in as_owner, as_owner
    assert [node for node in as_owner if "Scan" in node] == [
        node for node in as_serving_role if "Scan" in node
    ], (as_owner, as_serving_role)


@postgresql_only
@pytest.mark.parametrize(
    ("setting", "opens"), [("on", True), ("", False), ("off", False), ("ON", False), ("true", False)]
)
def test_the_all_rows_policy_opens_only_for_on(setting, opens):
    """Migration 0009 changed the policy's form, not what it allows: every user's rows only
    while ``app.all_users`` is exactly ``'on'``, for reads and for writes alike."""
    conversation = ConversationFactory.create()
    ConversationFactory.create()  # another user's
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            "SELECT set_config('app.user_id', '', true), set_config('app.all_users', %s, true)", [setting]
        )
        cursor.execute("SELECT count(*) FROM conversations_conversation")
        visible = cursor.fetchone()[0]
        refused = ""
        try:
            with transaction.atomic():
                cursor.execute(
                    "INSERT INTO conversations_message (id, conversation_id, user_id, seq, role, "
                    "content, created_at) VALUES (gen_random_uuid(), %s, %s, 1, 'user', 'x', now())",
                    [conversation.pk, conversation.user_id],
                )
        except DatabaseError as error:
            refused = str(error)
    if opens:
        assert (visible, refused) == (2, "")
    else:
        assert visible == 0
        assert "row-level security" in refused
