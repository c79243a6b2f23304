"""The Python API an AI agent calls, sync and async, against the real database."""

import pytest
import pytest_asyncio
from asgiref.sync import sync_to_async
from django.db import connection

from conversations import selectors, services
from conversations.models import Conversation, Message

from .factories import ConversationFactory, UserFactory

TOOL_CALL = {"id": "call_1", "type": "function", "function": {"name": "search", "arguments": "{}"}}


@pytest.mark.django_db
def test_an_agent_turn_in_sync_code(user):
    conversation = services.conversation_create(user=user, title="Weather")
    services.message_append(
        user=user, conversation_id=conversation.pk, role="user", content="Weather in Oslo?"
    )
    history = selectors.history_load(user=user, conversation_id=conversation.pk)
    call = services.message_append(
        user=user, conversation_id=conversation.pk, role="assistant", content=None, tool_calls=[TOOL_CALL]
    )
    services.tool_results_record(
        user=user,
        conversation_id=conversation.pk,
        message_id=call.pk,
        tool_results=[{"tool_call_id": TOOL_CALL["id"], "content": "18 °C, sun"}],
    )
    services.message_append(user=user, conversation_id=conversation.pk, role="assistant", content="Sunny.")

    assert history == [{"role": "user", "content": "Weather in Oslo?"}]
    assert selectors.history_load(user=user, conversation_id=conversation.pk, limit=2) == [
        {"role": "assistant", "content": None, "tool_calls": [TOOL_CALL]},
        {"role": "tool", "tool_call_id": TOOL_CALL["id"], "content": "18 °C, sun"},
        {"role": "assistant", "content": "Sunny."},
    ]


@pytest.mark.django_db
@pytest.mark.parametrize("limit", [0, 501, -1])
def test_history_load_refuses_a_limit_out_of_range(user, limit):
    conversation = ConversationFactory.create(user=user)
    with pytest.raises(ValueError, match="limit"):
        selectors.history_load(user=user, conversation_id=conversation.pk, limit=limit)


@pytest.mark.django_db
def test_the_python_api_is_scoped_by_user_too(user, other_user):
    theirs = ConversationFactory.create(user=other_user)
    with pytest.raises(Conversation.DoesNotExist):
        selectors.history_load(user=user, conversation_id=theirs.pk)
    with pytest.raises(Conversation.DoesNotExist):
        services.conversation_update(user=user, conversation_id=theirs.pk, title="x")
    with pytest.raises(Conversation.DoesNotExist):
        services.conversation_delete(user=user, conversation_id=theirs.pk)
    assert list(selectors.conversation_list(user=user)) == []


@pytest.mark.django_db
def test_idempotent_append_in_python(user):
    conversation = ConversationFactory.create(user=user)
    append = {
        "user": user,
        "conversation_id": conversation.pk,
        "role": "user",
        "content": "hi",
        "idempotency_key": "k",
    }

    first, first_replayed = services.message_append_idempotent(**append)
    again, again_replayed = services.message_append_idempotent(**append)

    assert again.pk == first.pk
    assert (first_replayed, again_replayed) == (False, True)
    with pytest.raises(services.IdempotencyKeyReused):
        services.message_append_idempotent(**(append | {"content": "other"}))
    assert Message.objects.count() == 1


@pytest_asyncio.fixture
async def sync_thread_connection():
    """Close the connection of Django's sync thread after the test, as an agent process
    does at the end of a turn, so that it does not outlive the test database."""
    yield
    # connection resolves to the calling thread's connection, so look it up in that thread.
    await sync_to_async(lambda: connection.close())()


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("sync_thread_connection")
async def test_an_agent_turn_under_asyncio():
    user = await sync_to_async(UserFactory.create)()
    other = await sync_to_async(UserFactory.create)()

    conversation = await services.aconversation_create(user=user, title="Async")
    await services.amessage_append(user=user, conversation_id=conversation.pk, role="user", content="Hi")
    reply = await services.amessage_append(
        user=user, conversation_id=conversation.pk, role="assistant", content="Hello!"
    )
    replayed_reply, replayed = await services.amessage_append_idempotent(
        user=user, conversation_id=conversation.pk, role="user", content="Again", idempotency_key="a1"
    )

    assert await selectors.ahistory_load(user=user, conversation_id=conversation.pk, limit=2) == [
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Again"},
    ]
    assert [m.pk for m in await selectors.amessages_in_order(user=user, conversation_id=conversation.pk)][
        1
    ] == reply.pk
    assert [c.pk for c in await selectors.aconversations_newest_first(user=user)] == [conversation.pk]
    assert (await selectors.aconversation_get(user=user, conversation_id=conversation.pk)).message_count == 3
    assert not replayed
    assert replayed_reply.seq == 3

    renamed = await services.aconversation_update(user=user, conversation_id=conversation.pk, title="Renamed")
    assert renamed.title == "Renamed"

    with pytest.raises(Conversation.DoesNotExist):
        await selectors.ahistory_load(user=other, conversation_id=conversation.pk)
    with pytest.raises(Conversation.DoesNotExist):
        await selectors.amessages_in_order(user=other, conversation_id=conversation.pk)
    with pytest.raises(Conversation.DoesNotExist):
        await services.amessage_append(user=other, conversation_id=conversation.pk, role="user", content="x")

    await services.aconversation_delete(user=user, conversation_id=conversation.pk)
    assert await selectors.aconversations_newest_first(user=user) == []


@pytest.mark.django_db
def test_the_version_moves_with_every_change_and_is_the_owners_alone(user, other_user):
    conversation = services.conversation_create(user=user)
    versions = [selectors.conversation_version(user=user, conversation_id=conversation.pk)]
    services.message_append(user=user, conversation_id=conversation.pk, role="user", content="hi")
    versions.append(selectors.conversation_version(user=user, conversation_id=conversation.pk))
    services.message_pop(user=user, conversation_id=conversation.pk)
    versions.append(selectors.conversation_version(user=user, conversation_id=conversation.pk))
    services.message_append(user=user, conversation_id=conversation.pk, role="user", content="hi")
    versions.append(selectors.conversation_version(user=user, conversation_id=conversation.pk))
    # The same message_count as after the first append, but another version.
    assert len(set(versions)) == len(versions)
    with pytest.raises(Conversation.DoesNotExist):
        selectors.conversation_version(user=other_user, conversation_id=conversation.pk)


@pytest.mark.django_db
def test_message_contents_reads_what_messages_say_newest_last(user, other_user):
    conversation = services.conversation_create(user=user)
    theirs = services.conversation_create(user=other_user)
    services.message_append(user=other_user, conversation_id=theirs.pk, role="user", content="Not yours")
    call = services.message_append(
        user=user, conversation_id=conversation.pk, role="assistant", content=None, tool_calls=[TOOL_CALL]
    )
    services.tool_results_record(
        user=user,
        conversation_id=conversation.pk,
        message_id=call.pk,
        tool_results=[{"tool_call_id": "call_1", "content": "found"}],
    )
    for text in ("one", "two", "three"):
        services.message_append(user=user, conversation_id=conversation.pk, role="user", content=text)

    every = selectors.message_contents(user=user, conversation_id=conversation.pk)
    newest = selectors.message_contents(user=user, conversation_id=conversation.pk, newest=2)

    assert every[0] == selectors.MessageContent(
        role="assistant",
        content=None,
        tool_calls=[TOOL_CALL],
        tool_results=[{"tool_call_id": "call_1", "content": "found", "is_error": False}],
        item_shapes=None,
    )
    assert [m.content for m in every] == [None, "one", "two", "three"]
    assert [m.content for m in newest] == ["two", "three"]
    assert (
        selectors.message_contents(user=user, conversation_id=services.conversation_create(user=user).pk)
        == []
    )
    for newest_n in (None, 0, 5):
        with pytest.raises(Conversation.DoesNotExist):
            selectors.message_contents(user=user, conversation_id=theirs.pk, newest=newest_n)
