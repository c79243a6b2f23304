"""The agent's Python API for writes: messages_append, tool_results_record, message_pop and
conversation_clear, sync and async, against the real database. Another user's data is
present in every test and checked untouched (``their_data``)."""

from typing import Any

import pytest
import pytest_asyncio
from asgiref.sync import sync_to_async
from django.db import connection, transaction

from accounts.models import User
from conversations import selectors, services, tokens
from conversations.models import Conversation, Message
from conversations.services import NewMessage
from conversations.tool_results import ToolResultAlreadyRecorded, ToolResultsInvalid

from .factories import ConversationFactory, MessageFactory, UserFactory
from .test_api_tool_results import CALLS, result, stored, their_data

USER_ASKS = NewMessage(role="user", content="Weather and time in Oslo?")
CALLING = NewMessage(role="assistant", content=None, tool_calls=CALLS)
ANSWER = NewMessage(role="assistant", content="It is 9 o'clock, 18 °C and sunny.")


@pytest.fixture(autouse=True)
def theirs(other_user):
    yield from their_data(other_user)


@pytest.fixture
def conversation(user):
    """Ours, with one message already."""
    conversation = ConversationFactory.create(user=user)
    MessageFactory.create(conversation=conversation, role="user", content="Hello")
    conversation.refresh_from_db()
    return conversation


def state(conversation: Conversation) -> tuple[Any, ...]:
    """What any write to the conversation changes."""
    row = Conversation.objects.get(pk=conversation.pk)
    messages = Message.objects.filter(conversation=conversation).order_by("seq")
    return row.message_count, row.updated_at, row.version, list(messages.values_list("pk", "tool_results"))


def append(user: User, conversation: Conversation, *messages: NewMessage) -> list[Message]:
    return services.messages_append(user=user, conversation_id=conversation.pk, messages=messages)


# messages_append


@pytest.mark.django_db
def test_messages_append_stores_a_turn_in_order(user, conversation):
    calling = NewMessage(
        role="assistant",
        content=None,
        tool_calls=CALLS,
        tool_results=[
            result("call_c", "no news"),
            result("call_a"),
            result("call_b", "09:00", is_error=True),
        ],
    )

    created = append(user, conversation, USER_ASKS, calling, ANSWER)

    assert [m.seq for m in created] == [2, 3, 4]
    assert [m.pk for m in selectors.messages_in_order(user=user, conversation_id=conversation.pk)][1:] == [
        m.pk for m in created
    ]
    assert Message.objects.get(pk=created[1].pk).tool_results == [
        stored("call_a"),
        stored("call_b", "09:00", is_error=True),
        stored("call_c", "no news"),
    ]
    assert created[1].token_count == tokens.message_tokens(None, CALLS, calling.tool_results)
    conversation.refresh_from_db()
    assert conversation.message_count == 4
    assert conversation.updated_at == created[-1].created_at


BROKEN_RESULTS = {
    "on a message without calls": NewMessage(role="assistant", content="Hi", tool_results=[result("call_a")]),
    "on a user message": NewMessage(role="user", content="Hi", tool_results=[result("call_a")]),
    "an unknown call id": NewMessage(
        role="assistant", content=None, tool_calls=CALLS, tool_results=[result("x")]
    ),
    "another user's call id": NewMessage(
        role="assistant", content=None, tool_calls=CALLS, tool_results=[result("call_theirs")]
    ),
    "two for one call": NewMessage(
        role="assistant", content=None, tool_calls=CALLS, tool_results=[result("call_a"), result("call_a")]
    ),
    "an empty list": NewMessage(role="assistant", content=None, tool_calls=CALLS, tool_results=[]),
    "content over 65536 code points": NewMessage(
        role="assistant", content=None, tool_calls=CALLS, tool_results=[result("call_a", "x" * 65_537)]
    ),
    "content with U+0000": NewMessage(
        role="assistant", content=None, tool_calls=CALLS, tool_results=[result("call_a", "a\x00b")]
    ),
    "content with an unpaired surrogate": NewMessage(
        role="assistant", content=None, tool_calls=CALLS, tool_results=[result("call_a", "a\ud800")]
    ),
    "content not a string": NewMessage(
        role="assistant",
        content=None,
        tool_calls=CALLS,
        tool_results=[result("call_a", 18)],  # type: ignore[arg-type]
    ),
    "is_error not a boolean": NewMessage(
        role="assistant", content=None, tool_calls=CALLS, tool_results=[result("call_a", is_error="no")]
    ),
    "an extra key": NewMessage(
        role="assistant", content=None, tool_calls=CALLS, tool_results=[result("call_a", name="get_weather")]
    ),
    "content missing": NewMessage(
        role="assistant", content=None, tool_calls=CALLS, tool_results=[{"tool_call_id": "call_a"}]
    ),
}


@pytest.mark.django_db
@pytest.mark.parametrize("case", BROKEN_RESULTS)
def test_a_turn_with_broken_results_anywhere_raises_and_writes_nothing(user, conversation, case):
    before = state(conversation)

    with pytest.raises(ToolResultsInvalid):
        append(user, conversation, USER_ASKS, CALLING, ANSWER, BROKEN_RESULTS[case])

    assert state(conversation) == before


@pytest.mark.django_db
def test_broken_results_write_nothing_inside_the_callers_own_transaction(user, conversation):
    """An agent that catches the error inside its own transaction commits nothing of the turn."""
    before = state(conversation)
    broken = BROKEN_RESULTS["two for one call"]

    with transaction.atomic():
        with pytest.raises(ToolResultsInvalid):
            append(user, conversation, USER_ASKS, broken, ANSWER)
        assert state(conversation) == before


@pytest.mark.django_db
@pytest.mark.parametrize("size", [0, 101])
def test_messages_append_takes_1_to_100_messages(user, conversation, size):
    before = state(conversation)

    with pytest.raises(ValueError, match="1 to 100"):
        append(user, conversation, *[USER_ASKS] * size)

    assert state(conversation) == before


@pytest.mark.django_db
def test_messages_append_takes_100(user, conversation):
    assert len(append(user, conversation, *[USER_ASKS] * 100)) == 100


@pytest.mark.django_db
@pytest.mark.parametrize("size", [1, 4, 50])
def test_messages_append_costs_two_statements_whatever_the_size(
    user, conversation, assert_data_queries, size
):
    """The conversation's UPDATE (row lock, seqs, updated_at) and one INSERT of all of them."""
    with assert_data_queries(2) as queries:
        append(user, conversation, *[USER_ASKS] * size)

    assert [q.split()[0].upper() for q in queries] == ["UPDATE", "INSERT"]


# tool_results_record


@pytest.fixture
def calling(user, conversation):
    return append(user, conversation, CALLING)[0]


def record(user: User, message: Message, results: Any, conversation_id: Any = None) -> Message:
    return services.tool_results_record(
        user=user,
        conversation_id=conversation_id or message.conversation_id,
        message_id=message.pk,
        tool_results=results,
    )


@pytest.mark.django_db
def test_tool_results_record_merges_in_call_order_and_counts_tokens(user, conversation, calling):
    version = selectors.conversation_version(user=user, conversation_id=conversation.pk)
    first, rest = [result("call_c", "no news")], [result("call_b", "09:00"), result("call_a")]

    after_first = record(user, calling, first)
    after_rest = record(user, calling, rest)

    expected = [stored("call_a"), stored("call_b", "09:00"), stored("call_c", "no news")]
    assert after_rest.tool_results == Message.objects.get(pk=calling.pk).tool_results == expected
    assert after_first.token_count - calling.token_count == tokens.tool_results_tokens(first) > 0
    assert after_rest.token_count - after_first.token_count == tokens.tool_results_tokens(rest) > 0
    assert selectors.conversation_version(user=user, conversation_id=conversation.pk) == version + 2


@pytest.mark.django_db
def test_a_second_result_for_a_call_raises_and_the_first_stays(user, conversation, calling):
    record(user, calling, [result("call_a", "first")])
    before = state(conversation)

    with pytest.raises(ToolResultAlreadyRecorded):
        record(user, calling, [result("call_b"), result("call_a", "second")])

    assert state(conversation) == before
    assert Message.objects.get(pk=calling.pk).tool_results == [stored("call_a", "first")]


@pytest.mark.django_db
@pytest.mark.parametrize(
    "results",
    [
        [result("call_z")],
        [result("call_theirs")],
        [result("call_a"), result("call_a")],
        [],
        [result("call_a", "\x00")],
        [result("call_a", "x" * 65_537)],
        [result("call_a", extra=1)],
    ],
    ids=["unknown", "their call id", "twice", "empty", "NUL", "too long", "extra key"],
)
def test_broken_results_recorded_later_raise_and_write_nothing(user, conversation, calling, results):
    before = state(conversation)

    with transaction.atomic():  # the caller's own: a refusal must leave nothing in it either
        with pytest.raises(ToolResultsInvalid):
            record(user, calling, results)
        assert state(conversation) == before


@pytest.mark.django_db
def test_recording_on_a_message_without_calls_raises(user, conversation):
    plain = Message.objects.get(conversation=conversation, seq=1)

    with pytest.raises(ToolResultsInvalid):
        record(user, plain, [result("call_a")])


@pytest.mark.django_db
def test_tool_results_record_is_scoped_by_user(user, conversation, calling, theirs):
    mine_elsewhere = append(user, ConversationFactory.create(user=user), CALLING)[0]
    before = state(conversation)

    with pytest.raises(Message.DoesNotExist):
        record(user, theirs.message, [result("call_theirs")], conversation_id=conversation.pk)
    with pytest.raises(Conversation.DoesNotExist):
        record(user, theirs.message, [result("call_theirs")])
    with pytest.raises(Conversation.DoesNotExist):
        record(user, calling, [result("call_a")], conversation_id=theirs.conversation.pk)
    with pytest.raises(Message.DoesNotExist):
        record(user, mine_elsewhere, [result("call_a")], conversation_id=conversation.pk)
    with pytest.raises(Conversation.DoesNotExist):
        record(theirs.user, calling, [result("call_a")])

    assert state(conversation) == before
    assert Message.objects.get(pk=mine_elsewhere.pk).tool_results is None


# message_pop


@pytest.mark.django_db
def test_message_pop_deletes_the_newest_and_returns_it(user, conversation):
    created = append(user, conversation, USER_ASKS, ANSWER)
    version = selectors.conversation_version(user=user, conversation_id=conversation.pk)

    popped = services.message_pop(user=user, conversation_id=conversation.pk)

    assert popped is not None
    assert (popped.pk, popped.content) == (created[-1].pk, ANSWER.content)
    assert not Message.objects.filter(pk=popped.pk).exists()
    conversation.refresh_from_db()
    assert conversation.message_count == 2
    assert conversation.version == version + 1
    again = append(user, conversation, ANSWER)[0]
    assert (again.seq, again.pk != popped.pk) == (3, True)


@pytest.mark.django_db
def test_message_pop_by_id_takes_only_the_newest(user, conversation):
    first, newest = append(user, conversation, USER_ASKS, ANSWER)
    before = state(conversation)

    with pytest.raises(services.MessageNotNewest):
        services.message_pop(user=user, conversation_id=conversation.pk, message_id=first.pk)
    assert state(conversation) == before

    popped = services.message_pop(user=user, conversation_id=conversation.pk, message_id=newest.pk)
    assert popped is not None
    assert popped.pk == newest.pk


@pytest.mark.django_db
def test_message_pop_of_an_empty_conversation_is_none(user):
    empty = ConversationFactory.create(user=user)

    assert services.message_pop(user=user, conversation_id=empty.pk) is None
    assert Conversation.objects.get(pk=empty.pk).message_count == 0


@pytest.mark.django_db
def test_message_pop_is_scoped_by_user(user, conversation, theirs):
    mine_elsewhere = append(user, ConversationFactory.create(user=user), ANSWER)[0]
    before = state(conversation)

    with pytest.raises(Conversation.DoesNotExist):
        services.message_pop(user=user, conversation_id=theirs.conversation.pk)
    with pytest.raises(Conversation.DoesNotExist):
        services.message_pop(user=user, conversation_id=theirs.conversation.pk, message_id=theirs.message.pk)
    with pytest.raises(Message.DoesNotExist):
        services.message_pop(user=user, conversation_id=conversation.pk, message_id=theirs.message.pk)
    with pytest.raises(Message.DoesNotExist):
        services.message_pop(user=user, conversation_id=conversation.pk, message_id=mine_elsewhere.pk)

    assert state(conversation) == before
    assert Message.objects.filter(pk=mine_elsewhere.pk).exists()


# conversation_clear


@pytest.mark.django_db
def test_conversation_clear_deletes_every_message_and_keeps_the_conversation(user, conversation):
    append(user, conversation, USER_ASKS, CALLING, ANSWER)
    version = selectors.conversation_version(user=user, conversation_id=conversation.pk)

    assert services.conversation_clear(user=user, conversation_id=conversation.pk) == 4

    kept = Conversation.objects.get(pk=conversation.pk)
    assert (kept.title, kept.message_count, kept.version) == (conversation.title, 0, version + 1)
    assert not Message.objects.filter(conversation=conversation).exists()
    assert append(user, conversation, USER_ASKS)[0].seq == 1
    assert services.conversation_clear(user=user, conversation_id=conversation.pk) == 1
    assert services.conversation_clear(user=user, conversation_id=conversation.pk) == 0


@pytest.mark.django_db
def test_conversation_clear_is_scoped_by_user(user, conversation, theirs):
    before = state(conversation)

    with pytest.raises(Conversation.DoesNotExist):
        services.conversation_clear(user=user, conversation_id=theirs.conversation.pk)
    with pytest.raises(Conversation.DoesNotExist):
        services.conversation_clear(user=theirs.user, conversation_id=conversation.pk)

    assert state(conversation) == before


# The async twins, under asyncio


@pytest_asyncio.fixture
async def sync_thread_connection():
    """Close the connection of Django's sync thread after the test (as test_agent_api.py)."""
    yield
    await sync_to_async(lambda: connection.close())()


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("sync_thread_connection")
async def test_the_write_api_under_asyncio(theirs):
    user = await sync_to_async(UserFactory.create)()
    conversation = await services.aconversation_create(user=user, title="Async turn")
    mine: dict[str, Any] = {"user": user, "conversation_id": conversation.pk}

    asked, calling = await services.amessages_append(**mine, messages=[USER_ASKS, CALLING])
    recorded = await services.atool_results_record(
        **mine, message_id=calling.pk, tool_results=[result("call_b", "09:00"), result("call_a")]
    )
    with pytest.raises(ToolResultAlreadyRecorded):
        await services.atool_results_record(**mine, message_id=calling.pk, tool_results=[result("call_a")])
    with pytest.raises(ToolResultsInvalid):
        await services.amessages_append(**mine, messages=[ANSWER, BROKEN_RESULTS["two for one call"]])
    answer = (await services.amessages_append(**mine, messages=[ANSWER]))[0]

    assert (asked.seq, calling.seq, answer.seq) == (1, 2, 3)
    assert recorded.tool_results == [stored("call_a"), stored("call_b", "09:00")]
    assert await services.amessage_pop(**mine) is not None
    with pytest.raises(services.MessageNotNewest):
        await services.amessage_pop(**mine, message_id=asked.pk)
    history = await selectors.ahistory_load(**mine)
    assert [item["role"] for item in history] == ["user", "assistant", "tool", "tool"]

    # Another user's ids, either way round.
    theirs_ids: dict[str, Any] = {"conversation_id": theirs.conversation.pk}
    with pytest.raises(Conversation.DoesNotExist):
        await services.amessages_append(user=user, **theirs_ids, messages=[USER_ASKS])
    with pytest.raises(Conversation.DoesNotExist):
        await services.atool_results_record(
            user=user, **theirs_ids, message_id=theirs.message.pk, tool_results=[result("call_theirs")]
        )
    with pytest.raises(Message.DoesNotExist):
        await services.atool_results_record(
            **mine, message_id=theirs.message.pk, tool_results=[result("call_theirs")]
        )
    with pytest.raises(Conversation.DoesNotExist):
        await services.amessage_pop(user=user, **theirs_ids)
    with pytest.raises(Conversation.DoesNotExist):
        await services.aconversation_clear(user=user, **theirs_ids)
    with pytest.raises(Conversation.DoesNotExist):
        await services.aconversation_clear(user=theirs.user, conversation_id=conversation.pk)

    assert await services.aconversation_clear(**mine) == 2
    assert (await selectors.aconversation_get(**mine)).message_count == 0
    assert await selectors.amessages_in_order(**mine) == []
