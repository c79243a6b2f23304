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
on_postgresql = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="row-level security is PostgreSQL's"
)


@pytest.fixture
def chat():
    """A conversation of 120 messages (more than one fetch of the hand-written history): of
    both roles, with tool calls, an empty tool-call list, no content and non-ASCII text."""
    conversation = ConversationFactory.create()
    kinds: list[dict[str, Any]] = [
        {"role": "user", "content": "bonjour, ça va ? 🙂"},
        {"role": "assistant", "content": None, "tool_calls": [TOOL_CALL]},
        {"role": "assistant", "content": "done", "tool_calls": []},
        {"role": "user", "content": ""},
    ]
    for i in range(120):
        message_append(user=conversation.user, conversation_id=conversation.pk, **kinds[i % len(kinds)])
    conversation.refresh_from_db()
    return conversation


def histories(user_id: uuid.UUID, conversation_id: uuid.UUID, limit: int) -> tuple[list[Any], list[Any]]:
    hand = statements.history_rows(user_id=user_id, conversation_id=conversation_id, limit=limit)
    orm = statements.history_rows_orm(user_id=user_id, conversation_id=conversation_id, limit=limit)
    return list(hand), list(orm)


@pytest.mark.parametrize("limit", [1, 2, 99, 100, 101, 120, 500])
def test_the_history_window_is_its_orm_twins(chat, limit):
    with user_scope(chat.user):
        hand, orm = histories(chat.user.pk, chat.pk, limit)
    assert len(hand) == min(limit, 120)
    assert hand[0][0] == 120
    assert_same(hand, orm)


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
    assert hand == orm == []


@on_postgresql
def test_another_users_history_is_invisible_to_both_under_row_level_security(chat):
    """Asked for the owner's rows in another user's scope: the policies hide them from both."""
    with user_scope(UserFactory.create()):
        hand, orm = histories(chat.user.pk, chat.pk, 50)
    assert hand == orm == []
    with user_scope(chat.user):
        assert len(histories(chat.user.pk, chat.pk, 50)[0]) == 50


def counts(user_id: uuid.UUID, conversation_id: uuid.UUID) -> tuple[int | None, int | None]:
    return (
        statements.message_count(user_id=user_id, conversation_id=conversation_id),
        statements.message_count_orm(user_id=user_id, conversation_id=conversation_id),
    )


def test_the_message_count_is_its_orm_twins(chat):
    empty = ConversationFactory.create()
    with user_scope(chat.user):
        hand, orm = counts(chat.user.pk, chat.pk)
    assert hand == 120
    assert_same(hand, orm)
    with user_scope(empty.user):
        hand, orm = counts(empty.user.pk, empty.pk)
    assert hand == 0
    assert_same(hand, orm)


def test_the_message_count_of_a_missing_or_another_users_conversation_is_none_for_both(chat):
    user = UserFactory.create()
    with user_scope(user):
        assert counts(user.pk, uuid.uuid4()) == (None, None)
        assert counts(user.pk, chat.pk) == (None, None)


@on_postgresql
def test_another_users_message_count_is_invisible_to_both_under_row_level_security(chat):
    with user_scope(UserFactory.create()):
        assert counts(chat.user.pk, chat.pk) == (None, None)


def counted(user_id: uuid.UUID, conversation_id: uuid.UUID, now: datetime) -> tuple[Any, Any, list[Any]]:
    """Both appends' counts from the same row, each in a transaction rolled back after it,
    and the row as each left it."""
    results, rows = [], []
    for count in (statements.count_message, statements.count_message_orm):
        with transaction.atomic():
            results.append(count(user_id=user_id, conversation_id=conversation_id, now=now))
            row = Conversation.objects.filter(pk=conversation_id).values("message_count", "updated_at")
            rows.append(list(row))
            transaction.set_rollback(True)
    assert_same(rows[0], rows[1])
    return results[0], results[1], rows[0]


@pytest.mark.parametrize("clock", [timedelta(seconds=5), timedelta(seconds=-5)], ids=["ahead", "behind"])
def test_the_appends_count_is_its_orm_twins(chat, clock):
    """``updated_at`` moves to now, or stays where it was when the clock is behind it."""
    now = chat.updated_at + clock
    with user_scope(chat.user):
        hand, orm, row = counted(chat.user.pk, chat.pk, now)
    assert hand == (121, max(now, chat.updated_at))
    assert row == [{"message_count": 121, "updated_at": hand[1]}]
    assert_same(hand, orm)


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
    "conversations/statements.py": "history window, message count, the append's UPDATE",
    "core/rls.py": "set_config",
    "core/health.py": "the health probe",
    "conversations/roles.py": "the serving role's grants",
    "conversations/checks.py": "the system check's role query",
    "conversations/portability.py": "an export's SET TRANSACTION",
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
