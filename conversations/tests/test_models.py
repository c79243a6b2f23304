"""The database itself enforces what the models promise: these rows are written with raw
``create``/``bulk_create`` (no ``full_clean``) and must still be rejected."""

import pytest
from django.db import DataError, IntegrityError, connection, transaction
from django.test.utils import CaptureQueriesContext

from accounts.services import user_delete
from conversations.ids import uuid7
from conversations.models import CONTENT_MAX_LENGTH, TITLE_MAX_LENGTH, Conversation, Message
from core.rls import user_scope

from .factories import ConversationFactory, MessageFactory, UserFactory

pytestmark = pytest.mark.django_db


def raw_message(conversation, **overrides) -> Message:
    fields = {
        "conversation_id": conversation.pk,
        "user_id": conversation.user_id,
        "seq": conversation.message_count + 1,
        "role": "user",
        "content": "hello",
    }
    return Message(**(fields | overrides))


def assert_rejected(message: Message) -> None:
    """Both ways of writing past validation are refused by the database."""
    with pytest.raises(IntegrityError), transaction.atomic():
        Message.objects.bulk_create([message])
    message._state.adding = True
    with pytest.raises(IntegrityError), transaction.atomic():
        message.save(force_insert=True)


def test_a_valid_raw_message_is_accepted():
    conversation = ConversationFactory.create()
    Message.objects.bulk_create([raw_message(conversation)])
    assert Message.objects.filter(conversation=conversation).count() == 1


@pytest.mark.parametrize("role", ["system", "tool", "USER", ""])
def test_role_outside_user_and_assistant_is_rejected(role):
    assert_rejected(raw_message(ConversationFactory.create(), role=role))


def test_content_of_max_length_code_points_is_accepted():
    conversation = ConversationFactory.create()
    # Four-byte characters: the limit counts code points, not bytes.
    Message.objects.bulk_create([raw_message(conversation, content="😀" * CONTENT_MAX_LENGTH)])
    assert Message.objects.get(conversation=conversation).content == "😀" * CONTENT_MAX_LENGTH


@pytest.mark.parametrize("character", ["a", "😀"])
def test_content_over_max_length_is_rejected(character):
    assert_rejected(raw_message(ConversationFactory.create(), content=character * (CONTENT_MAX_LENGTH + 1)))


def test_title_over_max_length_is_rejected():
    user = UserFactory.create()
    # PostgreSQL's varchar(200) refuses it before the check constraint (DataError); SQLite's
    # check constraint refuses it (IntegrityError).
    with pytest.raises((DataError, IntegrityError)), transaction.atomic():
        Conversation.objects.bulk_create([Conversation(user=user, title="t" * (TITLE_MAX_LENGTH + 1))])


def test_message_user_other_than_conversation_user_is_rejected():
    assert_rejected(raw_message(ConversationFactory.create(), user_id=UserFactory.create().pk))


def test_moving_a_message_to_another_users_conversation_is_rejected():
    message = MessageFactory.create()
    foreign = ConversationFactory.create()
    with pytest.raises(IntegrityError), transaction.atomic():
        Message.objects.filter(pk=message.pk).update(conversation_id=foreign.pk)


def test_giving_a_conversation_with_messages_to_another_user_is_rejected():
    message = MessageFactory.create()
    with pytest.raises(IntegrityError), transaction.atomic():
        Conversation.objects.filter(pk=message.conversation_id).update(user=UserFactory.create())


@pytest.mark.django_db(transaction=True)
def test_message_pointing_to_a_missing_conversation_is_rejected_at_commit():
    user = UserFactory.create()
    orphan = Message(conversation_id=uuid7(), user=user, seq=1, role="user", content="hi")
    with pytest.raises(IntegrityError), user_scope(user, atomic=True):
        Message.objects.bulk_create([orphan])
    with user_scope(user):
        assert not Message.objects.exists()


def test_two_messages_with_the_same_seq_are_rejected():
    message = MessageFactory.create()
    assert_rejected(raw_message(message.conversation, seq=message.seq))


def test_deleting_a_conversation_deletes_its_messages_only():
    kept = MessageFactory.create()
    conversation = ConversationFactory.create(user=kept.user)
    MessageFactory.create_batch(3, conversation=conversation)

    conversation.delete()

    assert not Message.objects.filter(conversation_id=conversation.pk).exists()
    assert list(Message.objects.all()) == [kept]


def test_deleting_a_user_deletes_their_conversations_and_messages_only():
    doomed = MessageFactory.create()
    survivor = MessageFactory.create()

    user_delete(user=doomed.user)

    assert list(Conversation.objects.all()) == [survivor.conversation]
    assert list(Message.objects.all()) == [survivor]


def delete_queries(message_count: int) -> list[str]:
    conversation = ConversationFactory.create()
    Message.objects.bulk_create(
        raw_message(conversation, seq=seq, content=f"m{seq}") for seq in range(1, message_count + 1)
    )
    with CaptureQueriesContext(connection) as captured:
        conversation.delete()
    assert not Message.objects.filter(conversation_id=conversation.pk).exists()
    return [query["sql"] for query in captured.captured_queries]


def test_deleting_a_conversation_runs_the_same_queries_for_any_size_without_loading_messages():
    small, large = delete_queries(2), delete_queries(5_000)

    assert len(small) == len(large)
    assert not [sql for sql in large if sql.lstrip().upper().startswith("SELECT")]
