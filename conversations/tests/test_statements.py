"""Each hand-written statement of ``conversations.statements`` answers exactly what its ORM
twin answers (same rows, same values, same types), on SQLite and on PostgreSQL."""

import re
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from django.db import connection, transaction

from conftest import assert_same
from conversations import statements
from conversations.models import Conversation
from conversations.services import message_append
from core.rls import user_scope

from .factories import ConversationFactory, UserFactory

pytestmark = pytest.mark.django_db

TOOL_CALL = {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": '{"q": "é"}'}}
TOOL_RESULT = {"tool_call_id": "call_1", "content": "ça marche", "is_error": False}
on_postgresql = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="row-level security is PostgreSQL's"
)


@pytest.fixture
def chat():
    """A conversation of 120 messages (more than one fetch of the hand-written history): of
    both roles, with tool calls and results, an empty tool-call list, no content, non-ASCII
    text, and token counts from 0 to hundreds."""
    conversation = ConversationFactory.create()
    kinds: list[dict[str, Any]] = [
        {"role": "user", "content": "bonjour, ça va ? 🙂"},
        {"role": "assistant", "content": None, "tool_calls": [TOOL_CALL], "tool_results": [TOOL_RESULT]},
        {"role": "assistant", "content": "done", "tool_calls": []},
        {"role": "user", "content": "word " * 150},
        {"role": "assistant", "content": ""},
    ]
    for i in range(120):
        message_append(user=conversation.user, conversation_id=conversation.pk, **kinds[i % len(kinds)])
    conversation.refresh_from_db()
    return conversation


def histories(
    user_id: uuid.UUID, conversation_id: uuid.UUID, limit: int, max_tokens: int | None = None
) -> tuple[tuple[int | None, list[Any]], tuple[int | None, list[Any]]]:
    """(version, rows) of the hand-written window and of its ORM twin."""
    window: dict[str, Any] = {
        "user_id": user_id,
        "conversation_id": conversation_id,
        "limit": limit,
        "max_tokens": max_tokens,
    }
    with statements.history_rows(**window) as hand:
        hand_rows = list(hand.rows)
    orm = statements.history_rows_orm(**window)
    return (hand.version, hand_rows), (orm.version, list(orm.rows))


@pytest.mark.parametrize("limit", [1, 2, 99, 100, 101, 120, 500])
def test_the_history_window_is_its_orm_twins(chat, limit):
    with user_scope(chat.user):
        hand, orm = histories(chat.user.pk, chat.pk, limit)
    assert hand[0] == chat.version
    assert len(hand[1]) == min(limit, 120)
    assert hand[1][0][0] == 120
    assert_same(hand, orm)


@pytest.mark.parametrize("max_tokens", [1, 2, 151, 152, 500, 10_000])
@pytest.mark.parametrize("limit", [1, 7, 120])
def test_the_token_bounded_window_is_its_orm_twins(chat, limit, max_tokens):
    """The newest messages whose token counts add up to at most ``max_tokens``: the running
    sum stops at the first that would pass it."""
    with user_scope(chat.user):
        hand, orm = histories(chat.user.pk, chat.pk, limit, max_tokens)
        _, everything = histories(chat.user.pk, chat.pk, 500)[0]
    assert_same(hand, orm)
    rows = hand[1]
    assert sum(row[5] for row in rows) <= max_tokens
    assert len(rows) <= limit
    if len(rows) < limit:
        assert sum(row[5] for row in everything[: len(rows) + 1]) > max_tokens
    assert rows == everything[: len(rows)]


@pytest.mark.parametrize("whose", ["empty", "missing", "another user's"])
def test_the_history_window_of_nothing_is_its_orm_twins(chat, whose):
    user = UserFactory.create()
    conversation_id = {
        "empty": lambda: ConversationFactory.create(user=user).pk,
        "missing": uuid.uuid4,
        "another user's": lambda: chat.pk,
    }[whose]()
    with user_scope(user):
        hand, orm = histories(user.pk, conversation_id, 50)
        bounded = histories(user.pk, conversation_id, 50, max_tokens=10)
    version = 0 if whose == "empty" else None
    assert hand == orm == bounded[0] == bounded[1] == (version, [])


@on_postgresql
def test_another_users_history_is_invisible_to_both_under_row_level_security(chat):
    """Asked for the owner's rows in another user's scope: the policies hide them from both."""
    with user_scope(UserFactory.create()):
        hand, orm = histories(chat.user.pk, chat.pk, 50)
    assert hand == orm == (None, [])
    with user_scope(chat.user):
        assert len(histories(chat.user.pk, chat.pk, 50)[0][1]) == 50


def counts(user_id: uuid.UUID, conversation_id: uuid.UUID) -> tuple[int | None, int | None]:
    return (
        statements.conversation_version(user_id=user_id, conversation_id=conversation_id),
        statements.conversation_version_orm(user_id=user_id, conversation_id=conversation_id),
    )


def test_the_version_is_its_orm_twins(chat):
    empty = ConversationFactory.create()
    with user_scope(chat.user):
        hand, orm = counts(chat.user.pk, chat.pk)
    assert hand == 120  # one per append
    assert_same(hand, orm)
    with user_scope(empty.user):
        hand, orm = counts(empty.user.pk, empty.pk)
    assert hand == 0
    assert_same(hand, orm)


def test_the_version_of_a_missing_or_another_users_conversation_is_none_for_both(chat):
    user = UserFactory.create()
    with user_scope(user):
        assert counts(user.pk, uuid.uuid4()) == (None, None)
        assert counts(user.pk, chat.pk) == (None, None)


@on_postgresql
def test_another_users_version_is_invisible_to_both_under_row_level_security(chat):
    with user_scope(UserFactory.create()):
        assert counts(chat.user.pk, chat.pk) == (None, None)


def counted(
    user_id: uuid.UUID, conversation_id: uuid.UUID, now: datetime, added: int = 1
) -> tuple[Any, Any, list[Any]]:
    """Both appends' counts from the same row, each in a transaction rolled back after it,
    and the row as each left it (its preview compared, not returned). An append's newest
    message is longer than a preview, and not ASCII."""
    newest = statements.Newest(role="assistant", content="é" * 150 + "🙂" * 100) if added > 0 else None
    results, rows, previews = [], [], []
    for count in (statements.count_messages, statements.count_messages_orm):
        with transaction.atomic():
            results.append(
                count(user_id=user_id, conversation_id=conversation_id, now=now, added=added, newest=newest)
            )
            row = Conversation.objects.filter(pk=conversation_id)
            rows.append(list(row.values("message_count", "version", "updated_at")))
            previews.append(list(row.values("preview_role", "preview_content", "preview_created_at")))
            transaction.set_rollback(True)
    assert_same(rows[0], rows[1])
    assert_same(previews[0], previews[1])
    if newest is not None and results[0] is not None:
        assert previews[0] == [
            {
                "preview_role": "assistant",
                "preview_content": "é" * 150 + "🙂" * 50,
                "preview_created_at": results[0][1],
            }
        ]
    return results[0], results[1], rows[0]


@pytest.mark.parametrize("clock", [timedelta(seconds=5), timedelta(seconds=-5)], ids=["ahead", "behind"])
def test_the_appends_count_is_its_orm_twins(chat, clock):
    """``updated_at`` moves to now, or stays where it was when the clock is behind it."""
    now = chat.updated_at + clock
    with user_scope(chat.user):
        hand, orm, row = counted(chat.user.pk, chat.pk, now)
    assert hand == (121, max(now, chat.updated_at))
    assert row == [{"message_count": 121, "version": 121, "updated_at": hand[1]}]
    assert_same(hand, orm)


@pytest.mark.parametrize("added", [4, 0, -1, -120])
def test_a_batch_undo_or_clear_count_is_its_orm_twins(chat, added):
    """A batch adds its size, recording results adds nothing, an undo takes one away and a
    clear all: each moves the version by one."""
    now = chat.updated_at + timedelta(seconds=1)
    with user_scope(chat.user):
        hand, orm, row = counted(chat.user.pk, chat.pk, now, added)
    assert hand == (120 + added, now)
    assert row == [{"message_count": 120 + added, "version": 121, "updated_at": now}]
    assert_same(hand, orm)


@pytest.mark.parametrize("added", [0, -1, -3, -120])
def test_after_a_delete_the_preview_is_read_back_from_the_newest_message_left(chat, added):
    """Recording results keeps the preview; after an undo or a clear (the count taken back
    over messages already deleted) it is the message now newest, cut, or nothing."""
    before = Conversation.objects.get(pk=chat.pk)
    with user_scope(chat.user), transaction.atomic():
        chat.messages.filter(seq__gt=120 + added).delete()
        statements.count_messages(
            user_id=chat.user.pk, conversation_id=chat.pk, now=chat.updated_at, added=added
        )
        after = Conversation.objects.get(pk=chat.pk)
        newest = chat.messages.filter(seq=120 + added).first()
        transaction.set_rollback(True)
    if added == 0:
        assert after.preview == before.preview
    elif newest is None:
        assert after.preview is None
    else:
        assert after.preview == {
            "role": newest.role,
            "content": None if newest.content is None else newest.content[:200],
            "created_at": newest.created_at,
        }


def test_an_append_must_give_its_newest_message(chat):
    with user_scope(chat.user), pytest.raises(ValueError, match="newest"):
        statements.count_messages(user_id=chat.user.pk, conversation_id=chat.pk, now=chat.updated_at)


def test_the_appends_count_of_an_empty_conversation_is_its_orm_twins():
    conversation = ConversationFactory.create()
    with user_scope(conversation.user):
        hand, orm, _ = counted(conversation.user.pk, conversation.pk, conversation.updated_at)
    assert hand == (1, conversation.updated_at)
    assert_same(hand, orm)


def test_the_appends_count_of_a_missing_or_another_users_conversation_is_none_for_both(chat):
    user = UserFactory.create()
    now = chat.updated_at + timedelta(seconds=1)
    with user_scope(user):
        assert counted(user.pk, uuid.uuid4(), now)[:2] == (None, None)
        assert counted(user.pk, chat.pk, now)[:2] == (None, None)
    chat.refresh_from_db()
    assert chat.message_count == 120


@on_postgresql
def test_another_users_conversation_cannot_be_counted_by_either_under_row_level_security(chat):
    now = chat.updated_at + timedelta(seconds=1)
    with user_scope(UserFactory.create()):
        assert counted(chat.user.pk, chat.pk, now)[:2] == (None, None)


# Where the service's code may hand SQL to the database itself: the hand-written data
# statements, and the SQL that the ORM cannot express (README, Performance).
RAW_SQL_ALLOWED = {
    "accounts/statements.py": "the token's user lookup",
    "conversations/statements.py": "history window, conversation version, the append's UPDATE",
    "core/rls.py": "set_config",
    "core/health.py": "the health probe",
    "conversations/roles.py": "the serving role's grants",
    "conversations/checks.py": "the system check's role query",
    "conversations/portability.py": "an export's SET TRANSACTION",
    "conversations/search.py": "full-text matching, ranking and snippets (tsvector, FTS5)",
    "core/replicas.py": "the primary's WAL position after a write, a replica's replay position and lag",
}
RAW_SQL = re.compile(r"\.execute\(|\.raw\(|\bRawSQL\b|\.extra\(")


def test_raw_sql_appears_only_where_listed():
    root = Path(__file__).resolve().parents[2]
    found = {
        str(path.relative_to(root))
        for package in ("accounts", "conversations", "core", "config")
        for path in (root / package).rglob("*.py")
        if not {"tests", "migrations"} & set(path.relative_to(root).parts)
        and RAW_SQL.search(path.read_text())
    }
    assert found == set(RAW_SQL_ALLOWED)
