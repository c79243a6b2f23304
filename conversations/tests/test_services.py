from datetime import UTC, datetime, timedelta

import pytest

from conversations.models import Conversation
from conversations.services import message_append

from .factories import ConversationFactory, MessageFactory

pytestmark = pytest.mark.django_db

INSTANT = datetime(2026, 11, 22, 21, 52, 43, 123456, tzinfo=UTC)


def test_messages_appended_in_the_same_instant_keep_append_order(monkeypatch):
    conversation = ConversationFactory.create(updated_at=INSTANT - timedelta(days=1))
    monkeypatch.setattr("conversations.services.timezone.now", lambda: INSTANT)

    appended = [MessageFactory.create(conversation=conversation, content=str(n)) for n in range(10)]

    stored = list(conversation.messages.order_by("seq"))
    assert stored == appended
    assert [m.seq for m in stored] == list(range(1, 11))
    assert {m.created_at for m in stored} == {INSTANT}


def test_created_at_never_decreases_when_the_clock_goes_back(monkeypatch):
    conversation = ConversationFactory.create(updated_at=INSTANT - timedelta(days=1))
    clock = iter([INSTANT, INSTANT - timedelta(seconds=5), INSTANT + timedelta(seconds=1)])
    monkeypatch.setattr("conversations.services.timezone.now", lambda: next(clock))

    times = [MessageFactory.create(conversation=conversation).created_at for _ in range(3)]

    assert times == [INSTANT, INSTANT, INSTANT + timedelta(seconds=1)]


def test_append_moves_updated_at_and_message_count():
    conversation = ConversationFactory.create()
    message = MessageFactory.create(conversation=conversation)
    second = MessageFactory.create(conversation=conversation)

    conversation.refresh_from_db()
    assert conversation.message_count == 2
    assert conversation.updated_at == second.created_at >= message.created_at


def test_append_to_another_users_conversation_is_refused(other_user):
    conversation = ConversationFactory.create()

    with pytest.raises(Conversation.DoesNotExist):
        message_append(user=other_user, conversation_id=conversation.pk, role="user", content="hi")

    conversation.refresh_from_db()
    assert conversation.message_count == 0
