"""The management commands: seed_demo, prune_conversations, export_conversations,
import_conversations.

Tests marked ``transaction=True`` run with no outer row-level-security scope (see conftest),
so on PostgreSQL they prove that each command scopes itself: a command that forgot would
see and change no rows at all.
"""

import contextlib
import json
import os
import re
import subprocess
import sys
import tracemalloc
import uuid
from datetime import timedelta
from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command, load_command_class
from django.core.management.base import CommandError
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from accounts.models import User
from conversations import selectors, services, tokens
from conversations.models import Conversation, IdempotencyKey, Message
from conversations.retention import parse_duration
from core.rls import all_users, user_scope

from .factories import ConversationFactory, MessageFactory, UserFactory
from .live_server import PROJECT_DIR, is_postgres_url, migrate, postgres_database, server_env

pytestmark = pytest.mark.django_db

TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$")
TOOL_CALLS: list[dict[str, Any]] = [
    {
        "id": "call_1",
        "type": "function",
        "function": {"name": "get_forecast", "arguments": '{"city": "Lisbon"}'},
    }
]


def run(name, *args, **options):
    """Run a command; return what it wrote to stdout and to stderr."""
    out, err = StringIO(), StringIO()
    call_command(name, *args, stdout=out, stderr=err, **options)
    return out.getvalue(), err.getvalue()


def export(user, output_format="jsonl"):
    return run("export_conversations", user=user.username, format=output_format)[0]


def import_text(user, text):
    return run("import_conversations", user=user.username, stdin=StringIO(text))


def records(jsonl):
    return [json.loads(line) for line in jsonl.splitlines()]


def stored(user=None):
    """Every column of the conversations and messages (of ``user``, or of everyone)."""
    with all_users(reason="test assertions"):
        conversations = Conversation.objects.order_by("id")
        messages = Message.objects.order_by("conversation_id", "seq")
        if user is not None:
            conversations, messages = conversations.filter(user=user), messages.filter(user=user)
        return list(conversations.values()), list(messages.values())


def empty_the_database():
    with all_users(reason="test: an empty database"):
        Conversation.objects.all().delete()
        assert not Message.objects.exists()
        assert not IdempotencyKey.objects.exists()


def make_old(conversation, days):
    with all_users(reason="test set-up"):
        Conversation.objects.filter(pk=conversation.pk).update(
            updated_at=timezone.now() - timedelta(days=days)
        )


def history(user, *, conversations, messages_each, content_size=200):
    """Bulk-made conversations and messages, consistent as appends would leave them."""
    start = timezone.now() - timedelta(days=1)
    made = Conversation.objects.bulk_create(
        Conversation(
            user=user,
            title=f"conversation {n}",
            created_at=start,
            updated_at=start + timedelta(microseconds=messages_each),
            message_count=messages_each,
        )
        for n in range(conversations)
    )
    Message.objects.bulk_create(
        (
            Message(
                conversation=conversation,
                user=user,
                seq=seq,
                role="user" if seq % 2 else "assistant",
                content="x" * content_size,
                created_at=start + timedelta(microseconds=seq),
            )
            for conversation in made
            for seq in range(1, messages_each + 1)
        ),
        batch_size=1000,
    )


TOOL_RESULTS: list[dict[str, Any]] = [
    {"tool_call_id": "call_1", "content": "18 °C, sunny", "is_error": False}
]
LATE_RESULTS: list[dict[str, Any]] = [{"tool_call_id": "call_1", "content": "timed out", "is_error": True}]


def rich_history(user):
    """Conversations with everything an export must keep: tool calls, tool results recorded
    with the append and later (a version that is not the message count), null and empty
    content, text that must not be touched, an empty conversation, many messages in the same
    microsecond."""
    trip = services.conversation_create(user=user, title="Trip ✈ planning\nsecond line")
    appended = [
        services.message_append(
            user=user,
            conversation_id=trip.pk,
            role=role,
            content=content,
            tool_calls=tool_calls,
            tool_results=tool_results,
        )
        for role, content, tool_calls, tool_results in [
            ("user", "  Hello\nworld  ", None, None),
            ("assistant", None, TOOL_CALLS, TOOL_RESULTS),
            ("assistant", "", TOOL_CALLS, None),
            ("user", "emoji 😀, a line separator \u2028 and a tab\t", None, None),
            ("assistant", "ç" * 10_000, None, None),
        ]
    ]
    services.tool_results_record(
        user=user, conversation_id=trip.pk, message_id=appended[2].pk, tool_results=LATE_RESULTS
    )
    # Flags and metadata travel too; the preview is made again from the last message.
    services.conversation_update(
        user=user, conversation_id=trip.pk, archived=True, pinned=True, metadata={"trip": "Lisbon ✈"}
    )
    services.conversation_create(user=user, title="")
    burst = ConversationFactory.create(user=user)
    instant = timezone.now()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("conversations.services.timezone.now", lambda: instant)
        for n in range(30):
            MessageFactory.create(conversation=burst, content=f"message {n}")


# --- help ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "options"),
    [
        ("seed_demo", ["--username", "--password"]),
        ("prune_conversations", ["--older-than", "--dry-run", "--user", "--batch-size"]),
        ("export_conversations", ["--user", "--format", "--output"]),
        ("import_conversations", ["--user", "FILE"]),
    ],
)
def test_every_command_documents_its_options(command, options):
    text = load_command_class("conversations", command).create_parser("manage.py", command).format_help()

    for option in options:
        assert option in text


# --- seed_demo -----------------------------------------------------------------------------


def seeded_password(stdout):
    match = re.search(r"^Password: (\S+)$", stdout, re.MULTILINE)
    assert match is not None
    return match.group(1)


@pytest.mark.django_db(transaction=True)
def test_seed_demo_makes_a_demo_user_with_conversations_through_the_services():
    stdout, _ = run("seed_demo")

    user = User.objects.get(username="demo")
    assert stdout.splitlines()[-2:] == ["Username: demo", f"Password: {seeded_password(stdout)}"]
    assert user.check_password(seeded_password(stdout))
    conversations, messages = stored(user)
    assert len(conversations) == 3
    assert {m["role"] for m in messages} == {"user", "assistant"}
    assert any(m["tool_calls"] for m in messages)
    for conversation in conversations:
        seqs = [m["seq"] for m in messages if m["conversation_id"] == conversation["id"]]
        # What appends leave behind: seq 1..n, message_count n, updated_at the last message's.
        assert seqs == list(range(1, conversation["message_count"] + 1))
        last = max(m["created_at"] for m in messages if m["conversation_id"] == conversation["id"])
        assert conversation["updated_at"] == last


@pytest.mark.django_db(transaction=True)
def test_seed_demo_twice_creates_nothing_more_and_keeps_the_password():
    first, _ = run("seed_demo")
    before = stored()

    second, _ = run("seed_demo")

    assert stored() == before
    assert "0 demo conversations created, 3 already there" in second
    assert "unchanged" in second
    user = User.objects.get(username="demo")
    assert user.check_password(seeded_password(first))


def test_seed_demo_takes_a_username_and_password():
    stdout, _ = run("seed_demo", username="showcase", password="a-long-demo-passphrase")

    user = User.objects.get(username="showcase")
    assert user.check_password("a-long-demo-passphrase")
    assert "Password: a-long-demo-passphrase" in stdout

    run("seed_demo", username="showcase", password="another-long-passphrase")

    user.refresh_from_db()
    assert user.check_password("another-long-passphrase")
    assert len(stored(user)[0]) == 3


@contextlib.contextmanager
def own_database(tmp_path):
    """A migrated database of its own for a command in another process: a new PostgreSQL
    database under scripts/with-postgres, else a SQLite file; yields that process's env."""
    admin_url = os.environ.get("DATABASE_URL")
    with (
        postgres_database(admin_url)
        if admin_url and is_postgres_url(admin_url)
        else contextlib.nullcontext(f"sqlite:///{tmp_path / 'db.sqlite3'}")
    ) as database_url:
        env = server_env(database_url)
        migrate(env)
        yield env


def test_seed_demo_prints_the_credentials_last_after_the_audit_lines(tmp_path):
    """As in a terminal: one process, stdout (audit lines included) and stderr in one stream."""
    with own_database(tmp_path) as env:
        result = subprocess.run(  # noqa: S603 (our own interpreter and manage.py)
            [sys.executable, "manage.py", "seed_demo"],
            cwd=PROJECT_DIR,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=120,
            check=False,
        )

    lines = result.stdout.splitlines()
    assert result.returncode == 0, result.stdout
    assert sum('"logger": "audit"' in line for line in lines) >= 9, result.stdout  # 3 creates, appends
    assert lines[-2] == "Username: demo", result.stdout
    assert re.fullmatch(r"Password: [\w-]{16}", lines[-1]), result.stdout


@pytest.mark.parametrize("password", ["short", "password", "12345678901"])
def test_seed_demo_refuses_a_weak_password(password):
    with pytest.raises(CommandError, match="password"):
        run("seed_demo", password=password)

    assert not User.objects.filter(username="demo").exists()


# --- prune_conversations -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90d", timedelta(days=90)),
        ("12h", timedelta(hours=12)),
        ("30m", timedelta(minutes=30)),
        ("2w", timedelta(weeks=2)),
        ("45s", timedelta(seconds=45)),
    ],
)
def test_durations(text, expected):
    assert parse_duration(text) == expected


@pytest.fixture
def old_and_recent(user, other_user):
    """For each user: a conversation inactive for 100 days (two messages, an idempotency
    key) and a recent one."""
    rows = {}
    for owner in (user, other_user):
        old = ConversationFactory.create(user=owner)
        MessageFactory.create(conversation=old)
        services.message_append_idempotent(
            user=owner, conversation_id=old.pk, role="user", content="hi", idempotency_key="k"
        )
        make_old(old, days=100)
        recent = ConversationFactory.create(user=owner)
        MessageFactory.create(conversation=recent)
        rows[owner.username] = (old, recent)
    return rows


@pytest.mark.django_db(transaction=True)
def test_prune_deletes_what_is_older_than_the_cutoff_for_every_user(old_and_recent):
    stdout, stderr = run("prune_conversations", older_than="90d")

    conversations, messages = stored()
    assert {c["id"] for c in conversations} == {recent.pk for _, recent in old_and_recent.values()}
    assert {m["conversation_id"] for m in messages} == {c["id"] for c in conversations}
    with all_users(reason="test assertions"):
        assert not IdempotencyKey.objects.exists()
    assert "Deleted 2 conversations with 4 messages" in stdout
    assert "deleted 2/2 conversations" in stderr


def test_prune_keeps_what_is_newer_than_the_cutoff(old_and_recent):
    before = stored()

    stdout, _ = run("prune_conversations", older_than="101d")

    assert stored() == before
    assert "Deleted 0 conversations" in stdout


@pytest.mark.django_db(transaction=True)
def test_prune_dry_run_counts_and_deletes_nothing(old_and_recent):
    before = stored()

    stdout, _ = run("prune_conversations", older_than="90d", dry_run=True)

    assert stored() == before
    assert "would delete 2 conversations with 4 messages" in stdout
    assert "Nothing was deleted" in stdout


@pytest.mark.django_db(transaction=True)
def test_prune_for_one_user_leaves_everyone_else_alone(old_and_recent, user, other_user):
    stdout, _ = run("prune_conversations", older_than="90d", user=str(user.pk))

    remaining = {c["id"] for c in stored()[0]}
    user_old, user_recent = old_and_recent[user.username]
    assert user_old.pk not in remaining
    assert remaining >= {user_recent.pk, *(c.pk for c in old_and_recent[other_user.username])}
    assert f"Deleted 1 conversations of {user.username} with 2 messages" in stdout


def test_prune_works_in_batches_with_a_progress_line_each(user):
    for _ in range(5):
        conversation = ConversationFactory.create(user=user)
        MessageFactory.create(conversation=conversation)
        make_old(conversation, days=30)

    _, stderr = run("prune_conversations", older_than="7d", batch_size=2)

    assert re.findall(r"deleted (\d+)/5 conversations \((\d+) messages\)", stderr) == [
        ("2", "2"),
        ("4", "4"),
        ("5", "5"),
    ]
    assert not stored(user)[0]


def test_prune_never_loads_messages(user):
    conversation = ConversationFactory.create(user=user)
    for _ in range(20):
        MessageFactory.create(conversation=conversation)
    make_old(conversation, days=30)

    with CaptureQueriesContext(connection) as captured:
        run("prune_conversations", older_than="7d")

    sql = [q["sql"] for q in captured.captured_queries]
    assert not [q for q in sql if '"conversations_message"."content"' in q]
    assert [q for q in sql if q.startswith('DELETE FROM "conversations_message"')]
    assert not stored(user)[1]


@pytest.mark.parametrize(
    "age", ["90", "d", "90 days", "-5d", "0d", "1.5d", "1y", "9999999999999d", "999999d", "", "90d; drop"]
)
def test_prune_refuses_a_malformed_age(age, old_and_recent):
    before = stored()

    with pytest.raises(CommandError, match="older-than"):
        run("prune_conversations", older_than=age)

    assert stored() == before


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "older-than"),
        (["--older-than", "90d", "--batch-size", "0"], "batch-size"),
        (["--older-than", "90d", "--batch-size", "many"], "batch-size"),
        (["--older-than", "90x"], "older-than"),
        (["--older-than", "90d", "--user", "nobody"], "No user"),
    ],
)
def test_prune_refuses_bad_arguments(args, message):
    with pytest.raises(CommandError, match=message):
        run("prune_conversations", *args)


# --- export_conversations ------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_export_jsonl_is_each_conversation_then_its_messages_in_append_order(user):
    rich_history(user)
    conversations, messages = stored(user)

    lines = records(export(user))

    expected = []
    for conversation in conversations:
        expected.append(("conversation", str(conversation["id"]), None))
        expected += [
            ("message", str(m["id"]), m["seq"])
            for m in messages
            if m["conversation_id"] == conversation["id"]
        ]
    assert [(r["type"], r["id"], r.get("seq")) for r in lines] == expected
    by_id = {str(m["id"]): m for m in messages}
    for record in lines:
        if record["type"] == "conversation":
            assert set(record) == {
                "type",
                "id",
                "title",
                "created_at",
                "updated_at",
                "message_count",
                "version",
                "archived",
                "pinned",
                "metadata",
            }
            assert TIMESTAMP.match(record["created_at"])
            assert TIMESTAMP.match(record["updated_at"])
        else:
            assert set(record) == {
                "type",
                "id",
                "conversation_id",
                "seq",
                "role",
                "content",
                "tool_calls",
                "tool_results",
                "token_count",
                "created_at",
            }
            assert TIMESTAMP.match(record["created_at"])
            message = by_id[record["id"]]
            fields = ("role", "content", "tool_calls", "tool_results", "token_count")
            assert [record[name] for name in fields] == [message[name] for name in fields]
    assert [r["tool_results"] for r in lines[2:4]] == [TOOL_RESULTS, LATE_RESULTS]


@pytest.mark.parametrize("output_format", ["jsonl", "markdown"])
def test_export_contains_nothing_of_another_user(user, other_user, output_format):
    MessageFactory.create(conversation=ConversationFactory.create(user=user), content="mine")
    theirs = MessageFactory.create(
        conversation=ConversationFactory.create(user=other_user, title="their title"), content="their secret"
    )

    text = export(user, output_format)

    assert "mine" in text
    for leak in ("their secret", "their title", str(theirs.pk), str(theirs.conversation_id)):
        assert leak not in text


def test_export_of_a_user_without_conversations_is_empty(user, other_user):
    MessageFactory.create(conversation=ConversationFactory.create(user=other_user))

    assert export(user) == ""


def test_export_markdown_is_a_readable_transcript(user):
    rich_history(user)

    text = export(user, "markdown")

    assert text.startswith(f"# Conversations of {user.username}\n")
    assert "## Trip ✈ planning second line" in text
    assert "## Untitled conversation" in text
    assert "### 1. user, " in text
    assert ">   Hello\n> world  \n" in text
    assert "Tool call `get_forecast` (id `call_1`):\n\n```\n" + TOOL_CALLS[0]["function"]["arguments"] in text
    assert "_(no text)_" in text
    assert "Tool result of `call_1`:\n\n```\n18 °C, sunny\n```\n" in text
    assert "Tool result of `call_1`, an error:\n\n```\ntimed out\n```\n" in text


def test_export_markdown_fences_arguments_that_contain_backticks(user):
    conversation = ConversationFactory.create(user=user)
    call = {"id": "c", "type": "function", "function": {"name": "run", "arguments": "```sh\nls\n```"}}
    services.message_append(
        user=user, conversation_id=conversation.pk, role="assistant", content=None, tool_calls=[call]
    )

    assert "````\n```sh\nls\n```\n````" in export(user, "markdown")


def test_export_finds_the_user_by_id_too(user):
    MessageFactory.create(conversation=ConversationFactory.create(user=user))

    stdout, _ = run("export_conversations", user=str(user.pk))

    assert len(records(stdout)) == 2


def test_export_to_a_file(user, tmp_path):
    MessageFactory.create(conversation=ConversationFactory.create(user=user))
    target = tmp_path / "export.jsonl"

    stdout, stderr = run("export_conversations", user=user.username, output=str(target))

    assert f"Wrote {target}" in stdout
    assert target.read_text(encoding="utf-8") == export(user)
    assert "exported 1/1 messages, 1/1 conversations" in stderr
    assert [p.name for p in tmp_path.iterdir()] == ["export.jsonl"]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"user": "nobody"}, "No user"),
        ({"user": str(uuid.uuid4())}, "No user"),
        ({"format": "csv"}, "--format"),
        ({"output": "/nonexistent-directory/export.jsonl"}, "Cannot write"),
    ],
)
def test_export_refuses_bad_arguments(user, options, message):
    with pytest.raises(CommandError, match=message):
        run("export_conversations", **{"user": user.username, **options})


@pytest.mark.parametrize("args", [["--format", "csv"], ["--format=csv"]])
def test_export_refuses_an_unknown_format(user, args):
    with pytest.raises(CommandError, match="format"):
        run("export_conversations", *args, user=user.username)


def test_export_needs_a_user():
    with pytest.raises(CommandError, match="--user"):
        run("export_conversations")


def data_queries(captured):
    bookkeeping = ("SAVEPOINT", "RELEASE SAVEPOINT", "ROLLBACK TO SAVEPOINT", "SELECT SET_CONFIG(")
    return [q["sql"] for q in captured if not q["sql"].lstrip().upper().startswith(bookkeeping)]


def test_export_streams_with_the_same_few_queries_however_many_conversations(user, other_user):
    history(user, conversations=40, messages_each=50)  # 2,000 messages
    history(other_user, conversations=1, messages_each=50)

    with CaptureQueriesContext(connection) as many:
        text = export(user)
    with CaptureQueriesContext(connection) as one:
        export(other_user)

    assert len(text.splitlines()) == 40 + 2000
    # The user, the totals, the conversations, the messages.
    assert len(data_queries(many)) == len(data_queries(one)) <= 4


class Sink:
    def write(self, text):
        return len(text)


def peak_memory_of_export(user):
    tracemalloc.start()
    try:
        call_command("export_conversations", user=user.username, stdout=Sink(), stderr=Sink())
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_export_memory_does_not_grow_with_the_history(user, other_user):
    history(user, conversations=10, messages_each=100)  # 1,000 messages
    history(other_user, conversations=100, messages_each=100)  # 10,000 messages
    newcomer = UserFactory.create()
    history(newcomer, conversations=1, messages_each=1)
    peak_memory_of_export(newcomer)  # warm-up: imports, compiled SQL, caches

    small = peak_memory_of_export(user)
    large = peak_memory_of_export(other_user)

    # Ten times the history, well under twice the memory: rows are fetched in chunks.
    assert large < 2 * small, (small, large)


# --- import_conversations ------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_export_then_import_into_an_empty_database_reproduces_everything(user, other_user):
    rich_history(user)
    MessageFactory.create(conversation=ConversationFactory.create(user=other_user))
    before = stored(user)
    exported = export(user)

    empty_the_database()
    stdout, _ = import_text(user, exported)

    assert stored() == before
    assert "Imported 3 conversations with 35 messages" in stdout
    assert export(user) == exported


@pytest.mark.django_db(transaction=True)
def test_appending_after_an_import_continues_the_conversation(user):
    conversation = ConversationFactory.create(user=user)
    for _ in range(3):
        MessageFactory.create(conversation=conversation)
    exported = export(user)
    empty_the_database()
    import_text(user, exported)

    message = services.message_append(user=user, conversation_id=conversation.pk, role="user", content="more")

    assert message.seq == 4
    with user_scope(user):
        assert Conversation.objects.get(pk=conversation.pk).updated_at == message.created_at


@pytest.mark.django_db(transaction=True)
def test_import_twice_creates_nothing_new(user):
    rich_history(user)
    exported = export(user)
    empty_the_database()
    import_text(user, exported)
    after_first = stored()

    stdout, _ = import_text(user, exported)

    assert stored() == after_first
    assert "Imported 0 conversations with 0 messages" in stdout
    assert "3 were already there" in stdout


def test_import_reads_a_file(user, tmp_path):
    rich_history(user)
    target = tmp_path / "export.jsonl"
    run("export_conversations", user=user.username, output=str(target))
    before = stored(user)
    empty_the_database()

    run("import_conversations", str(target), user=user.username)

    assert stored(user) == before


def agent_turn(user):
    """A conversation of one agent turn: a question, two calls (one answered with the
    append, one later, as an error), the answer. Returns the conversation."""
    conversation = services.conversation_create(user=user, title="agent")
    calls = [TOOL_CALLS[0], {**TOOL_CALLS[0], "id": "call_2"}]
    services.message_append(user=user, conversation_id=conversation.pk, role="user", content="Lisbon?")
    calling = services.message_append(
        user=user,
        conversation_id=conversation.pk,
        role="assistant",
        content="Looking it up.",
        tool_calls=calls,
        tool_results=TOOL_RESULTS,
    )
    services.tool_results_record(
        user=user,
        conversation_id=conversation.pk,
        message_id=calling.pk,
        tool_results=[{**LATE_RESULTS[0], "tool_call_id": "call_2"}],
    )
    services.message_append(user=user, conversation_id=conversation.pk, role="assistant", content="Sunny.")
    return conversation


def histories(user, conversation):
    return {
        history_format: selectors.history_load(
            user=user, conversation_id=conversation.pk, format=history_format
        )
        for history_format in ("openai", "anthropic", "responses")
    }


@pytest.mark.django_db(transaction=True)
def test_an_agents_history_with_tool_results_survives_export_and_import(user, other_user):
    conversation = agent_turn(user)
    agent_turn(other_user)
    before, history_before = stored(user), histories(user, conversation)
    exported = export(user)
    with user_scope(user):
        services.conversation_delete(user=user, conversation_id=conversation.pk)

    stdout, _ = import_text(user, exported)

    assert "Imported 1 conversations with 3 messages" in stdout
    assert stored(user) == before
    assert histories(user, conversation) == history_before
    calling = before[1][1]
    assert [r["tool_call_id"] for r in calling["tool_results"]] == ["call_1", "call_2"]
    assert calling["token_count"] == tokens.message_tokens(
        calling["content"], calling["tool_calls"], calling["tool_results"]
    )
    assert before[0][0]["version"] == 4  # three appends and the late result: kept as it was


def test_import_counts_tokens_itself_and_never_trusts_the_files_count(user):
    agent_turn(user)
    before = stored(user)
    lines = records(export(user))
    for line in lines[1:]:
        line["token_count"] = 1_000_000
    empty_the_database()

    import_text(user, "\n".join(json.dumps(line) for line in lines))

    assert stored(user) == before
    assert all(0 < message["token_count"] < 100 for message in before[1])


def test_an_export_from_before_tool_results_and_versions_still_imports(user):
    """Files written before tool results, token counts and versions existed: no such keys."""
    conversation = ConversationFactory.create(user=user)
    MessageFactory.create(conversation=conversation, content="What is the forecast?")
    MessageFactory.create(conversation=conversation, role="assistant", content=None, tool_calls=TOOL_CALLS)
    before = stored(user)
    lines = records(export(user))
    old = [
        {k: v for k, v in line.items() if k not in {"version", "tool_results", "token_count"}}
        for line in lines
    ]
    empty_the_database()

    import_text(user, "\n".join(json.dumps(line) for line in old))

    conversations, messages = stored(user)
    assert conversations == [{**before[0][0], "version": 0}]
    assert messages == before[1]
    assert [m["tool_results"] for m in messages] == [None, None]
    assert messages[0]["token_count"] == tokens.message_tokens("What is the forecast?", None, None) > 0


@pytest.mark.django_db(transaction=True)
def test_import_refuses_ids_that_belong_to_another_user(user, other_user):
    rich_history(user)
    exported = export(user)
    before = stored()

    with pytest.raises(CommandError, match="already exists in another user's data") as refused:
        import_text(other_user, exported)

    assert stored() == before
    assert not stored(other_user)[0]
    assert str(refused.value).count("line") == 3


def test_import_refuses_a_message_id_of_another_user_and_keeps_nothing_of_its_conversation(user, other_user):
    theirs = MessageFactory.create(conversation=ConversationFactory.create(user=other_user))
    lines = records(export(other_user))
    lines[0]["id"] = lines[1]["conversation_id"] = str(uuid.uuid4())  # a new conversation id...
    before = stored()

    with pytest.raises(CommandError, match="message ids already exists in another user's data"):
        import_text(user, "\n".join(json.dumps(line) for line in lines))  # ...with their message

    assert stored() == before
    with user_scope(other_user):
        assert Message.objects.get(pk=theirs.pk).content == theirs.content


def test_import_refuses_a_message_id_used_in_another_of_the_users_conversations(user):
    mine = MessageFactory.create(conversation=ConversationFactory.create(user=user))
    lines = records(export(user))
    lines[0]["id"] = lines[1]["conversation_id"] = str(uuid.uuid4())
    before = stored()

    with pytest.raises(CommandError, match=f"message id {mine.pk} already exists in conversation"):
        import_text(user, "\n".join(json.dumps(line) for line in lines))

    assert stored() == before


def two_conversations(user):
    """An export of two conversations: lines 1-3 (two messages), lines 4-7 (user,
    assistant, user)."""
    first = ConversationFactory.create(user=user)
    MessageFactory.create_batch(2, conversation=first)
    second = ConversationFactory.create(user=user)
    MessageFactory.create(conversation=second)
    MessageFactory.create(conversation=second, role="assistant", content="reply")
    MessageFactory.create(conversation=second)
    lines = records(export(user))
    assert [line["type"] for line in lines] == ["conversation", "message", "message"] + [
        "conversation",
        "message",
        "message",
        "message",
    ]
    assert lines[0]["id"] == str(first.pk)
    return lines


def bad_json(lines):
    lines[5] = "{not json"


def earlier_than_the_one_before(lines):
    lines[5]["created_at"] = "2000-01-01T00:00:00.000000Z"


def duplicate_id(lines):
    lines[5]["id"] = lines[4]["id"]


def other_conversation(lines):
    lines[5]["conversation_id"] = lines[0]["id"]


def results_of_another_call(lines):
    lines[5].update(tool_calls=TOOL_CALLS, tool_results=[{"tool_call_id": "call_2", "content": "x"}])


def two_results_of_one_call(lines):
    lines[5].update(tool_calls=TOOL_CALLS, tool_results=TOOL_RESULTS + LATE_RESULTS)


@pytest.mark.parametrize(
    ("line", "mutate", "expected"),
    [
        (6, bad_json, "not valid JSON"),
        (6, lambda lines: lines[5].update(type="note"), "type"),
        (6, lambda lines: lines[5].update(role="system"), "role"),
        (6, lambda lines: lines[5].update(content="x" * 10_001), "content"),
        (5, lambda lines: lines[4].update(content=None), "content"),
        (5, lambda lines: lines[4].update(content=""), "content"),
        (5, lambda lines: lines[4].update(tool_calls=TOOL_CALLS), "tool_calls"),
        (6, lambda lines: lines[5].update(tool_calls=[{"id": "c"}]), "tool_calls.0.type"),
        (6, lambda lines: lines[5].update(tool_calls=[]), "tool_calls"),
        (5, lambda lines: lines[4].update(tool_results=TOOL_RESULTS), "tool_results"),
        (6, lambda lines: lines[5].update(tool_calls=TOOL_CALLS, tool_results=[]), "tool_results"),
        (6, results_of_another_call, "tool_results"),
        (6, two_results_of_one_call, "tool_results"),
        (6, lambda lines: lines[5].update(tool_results=LATE_RESULTS), "tool_results"),
        (
            6,
            lambda lines: lines[5].update(tool_results=[{"tool_call_id": "call_1"}]),
            "tool_results.0.content",
        ),
        (4, lambda lines: lines[3].update(version=-1), "version"),
        (6, lambda lines: lines[5].update(seq=3), "seq"),
        (6, lambda lines: lines[5].update(id="not-a-uuid"), "id"),
        (6, duplicate_id, "id:"),
        (6, other_conversation, "conversation_id"),
        (6, earlier_than_the_one_before, "created_at"),
        (6, lambda lines: lines[5].update(created_at="yesterday"), "created_at"),
        (4, lambda lines: lines[3].update(title="t" * 201), "title"),
        (4, lambda lines: lines[3].update(message_count=4), "message_count"),
        (4, lambda lines: lines[3].pop("created_at"), "created_at"),
    ],
)
def test_import_reports_a_bad_line_by_number_and_imports_the_other_conversations(
    user, line, mutate, expected
):
    lines = two_conversations(user)
    mutate(lines)
    text = "\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n"
    empty_the_database()

    with pytest.raises(CommandError) as refused:
        import_text(user, text)

    assert f"line {line}: {expected}" in str(refused.value)
    assert "1 conversations not imported" in str(refused.value)
    assert [c["id"] for c in stored(user)[0]] == [uuid.UUID(lines[0]["id"])]


def test_import_reports_a_line_that_is_not_utf8(user, tmp_path):
    lines = [json.dumps(line).encode() for line in two_conversations(user)]
    lines[5] = lines[5].replace(b'"reply"', b'"r\xe9ply"')
    target = tmp_path / "latin1.jsonl"
    target.write_bytes(b"\n".join(lines))
    empty_the_database()

    with pytest.raises(CommandError, match="line 6: not UTF-8"):
        run("import_conversations", str(target), user=user.username)

    assert len(stored(user)[0]) == 1


def test_import_refuses_a_message_before_any_conversation(user):
    lines = two_conversations(user)
    empty_the_database()

    with pytest.raises(CommandError, match="line 1: a message line before any conversation line"):
        import_text(user, "\n".join(json.dumps(line) for line in lines[1:]))


def test_import_ignores_blank_lines(user):
    lines = two_conversations(user)
    empty_the_database()

    import_text(user, "\n\n".join(json.dumps(line) for line in lines) + "\n\n")

    assert len(stored(user)[0]) == 2


@pytest.mark.parametrize(
    ("args", "options", "message"),
    [
        (["/nonexistent/export.jsonl"], {}, "Cannot read"),
        ([], {"user": "nobody"}, "No user"),
    ],
)
def test_import_refuses_bad_arguments(user, args, options, message):
    with pytest.raises(CommandError, match=message):
        run("import_conversations", *args, **{"user": user.username, **options})
