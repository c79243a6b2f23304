"""The Agents SDK session over a conversation: how items map onto messages, calls and results
and come back, what is refused or left out, popping one item at a time, a real agent loop, and
isolation between users. (The SDK's own session tests: test_integration_openai_agents_sdk.py.)

Most tests are sync and drive the async session through ``async_to_sync``, which runs its
queries back in the test's thread, inside the test's transaction."""

import json
from copy import deepcopy

import pytest
from agents import Agent, Runner, function_tool, set_tracing_disabled
from agents.memory import Session
from agents.testing import ScriptedModel, assistant_message, function_call
from asgiref.sync import async_to_sync, sync_to_async
from django.db import connection

from accounts.models import User
from conversations import history_formats, selectors, services, tokens
from conversations.ids import uuid7
from conversations.integrations.openai_agents import ConversationSession, ItemRefused
from conversations.models import Conversation, Message
from conversations.tool_results import ToolResultAlreadyRecorded

from .factories import UserFactory

# The SDK sends its traces to OpenAI's API; no test here has anywhere to send them.
set_tracing_disabled(True)

WEATHER_CALL = {
    "type": "function_call",
    "call_id": "c1",
    "name": "get_weather",
    "arguments": '{"city":"Oslo"}',
}
WEATHER_OUTPUT = {"type": "function_call_output", "call_id": "c1", "output": "18 °C"}
USER_SECRET = {"role": "user", "content": "My secret"}

# One turn as the SDK writes it, with every shape this session keeps: a user message without
# ``type``, an output message with ids, status, annotations and logprobs, two calls of one
# model response, an output as a list of text parts, an answer of several parts (a refusal
# among them), a user message of input_text parts.
TURN = [
    {"role": "user", "content": "Weather in Oslo and Rome?"},
    {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "status": "completed",
        "content": [{"type": "output_text", "text": "Let me look.", "annotations": [], "logprobs": []}],
    },
    {**WEATHER_CALL, "id": "fc_1", "status": "completed"},
    {
        "type": "function_call",
        "call_id": "c2",
        "name": "get_weather",
        "arguments": '{"city":"Rome"}',
        "id": "fc_2",
    },
    WEATHER_OUTPUT,
    {
        "type": "function_call_output",
        "call_id": "c2",
        "output": [{"type": "input_text", "text": "21 "}, {"type": "input_text", "text": "°C"}],
    },
    {
        "type": "message",
        "role": "assistant",
        "content": [
            {"type": "output_text", "text": "Oslo: 18 °C. ", "annotations": [{"type": "url_citation"}]},
            {"type": "refusal", "refusal": "Rome: I would rather not say."},
        ],
    },
    {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Thanks"}]},
]


@pytest.fixture
def session(user):
    conversation = services.conversation_create(user=user)
    return ConversationSession(user=user, conversation_id=conversation.pk)


def add(session, items):
    async_to_sync(session.add_items)(deepcopy(items))


def get(session, limit=None):
    return async_to_sync(session.get_items)(limit)


def pop(session):
    return async_to_sync(session.pop_item)()


def rows(session) -> list[tuple]:
    return [
        (m.role, m.content, m.tool_calls, m.tool_results)
        for m in Message.objects.filter(conversation_id=session.conversation_id).order_by("seq")
    ]


def stored_call(call_id: str, city: str) -> dict:
    arguments = json.dumps({"city": city}, separators=(",", ":"))
    return {"id": call_id, "type": "function", "function": {"name": "get_weather", "arguments": arguments}}


def result(call_id: str, content: str) -> dict:
    return {"tool_call_id": call_id, "content": content, "is_error": False}


@pytest.mark.django_db
def test_items_come_back_as_they_were_added(session):
    add(session, TURN)

    assert get(session) == TURN


@pytest.mark.django_db
def test_a_turn_is_stored_as_messages_with_calls_and_their_results(session):
    add(session, TURN)

    assert rows(session) == [
        ("user", "Weather in Oslo and Rome?", None, None),
        (
            "assistant",
            "Let me look.",
            [stored_call("c1", "Oslo"), stored_call("c2", "Rome")],
            [result("c1", "18 °C"), result("c2", "21 °C")],
        ),
        ("assistant", "Oslo: 18 °C. Rome: I would rather not say.", None, None),
        ("user", "Thanks", None, None),
    ]


@pytest.mark.django_db
def test_outputs_that_come_in_a_later_add_items_are_recorded_on_their_call(session):
    add(session, [{"role": "user", "content": "Weather?"}, WEATHER_CALL])
    add(session, [WEATHER_OUTPUT])
    add(session, [{"role": "assistant", "content": "18 °C in Oslo."}])

    assert rows(session)[1] == ("assistant", None, [stored_call("c1", "Oslo")], [result("c1", "18 °C")])
    assert get(session) == [
        {"role": "user", "content": "Weather?"},
        WEATHER_CALL,
        WEATHER_OUTPUT,
        {"role": "assistant", "content": "18 °C in Oslo."},
    ]


@pytest.mark.django_db
def test_a_call_id_used_again_is_answered_on_the_newest_message_making_it(session):
    add(session, [WEATHER_CALL, WEATHER_OUTPUT, {"role": "user", "content": "And now?"}, WEATHER_CALL])
    add(session, [{**WEATHER_OUTPUT, "output": "19 °C"}])

    assert [row[3] for row in rows(session)] == [[result("c1", "18 °C")], None, [result("c1", "19 °C")]]


@pytest.mark.django_db
def test_an_output_whose_call_no_message_made_is_refused_and_nothing_is_written(session):
    with pytest.raises(ItemRefused, match="Item 1 is the output of the call 'c1'"):
        add(session, [{"role": "user", "content": "Hi"}, WEATHER_OUTPUT])

    assert rows(session) == []


@pytest.mark.django_db
def test_a_second_output_for_one_call_is_refused(session):
    with pytest.raises(ToolResultAlreadyRecorded):
        add(session, [WEATHER_CALL, WEATHER_OUTPUT, WEATHER_OUTPUT])
    add(session, [WEATHER_CALL, WEATHER_OUTPUT])

    with pytest.raises(ToolResultAlreadyRecorded):
        add(session, [{**WEATHER_OUTPUT, "output": "again"}])
    assert get(session) == [WEATHER_CALL, WEATHER_OUTPUT]


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("item", "why"),
    [
        ({"role": "system", "content": "Be brief."}, "'system' message: instructions"),
        ({"type": "message", "role": "developer", "content": "Be brief."}, "'developer' message"),
        (
            {"role": "user", "content": [{"type": "input_image", "image_url": "https://example.com/a.png"}]},
            "part of type 'input_image'",
        ),
        ({"role": "user", "content": [{"type": "input_file", "file_id": "file_1"}]}, "'input_file'"),
        ({"type": "web_search_call", "id": "ws_1", "status": "completed"}, "type 'web_search_call'"),
        ({"type": "item_reference", "id": "msg_0"}, "type 'item_reference'"),
        ({"type": "computer_call_output", "call_id": "c9", "output": {}}, "type 'computer_call_output'"),
        ({"role": "user", "content": "x" * 10_001}, "content"),
        ({"role": "user", "content": ""}, "non-empty content"),
        ({**WEATHER_CALL, "arguments": {"city": "Oslo"}}, "'arguments' is not a string"),
    ],
)
def test_items_the_conversation_cannot_hold_are_refused_with_their_batch(session, item, why):
    with pytest.raises(ItemRefused, match=why):
        add(session, [{"role": "user", "content": "Hi"}, item])

    assert rows(session) == []


@pytest.mark.django_db
def test_reasoning_is_left_out_with_the_ids_of_its_response(session):
    answer = {"id": "msg_2", "type": "message", "role": "assistant", "content": "It is 18 °C."}
    add(
        session,
        [
            {"role": "user", "content": "Weather?"},
            {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "…"},
            {"id": "msg_1", "type": "message", "role": "assistant", "content": "Let me look."},
            {**WEATHER_CALL, "id": "fc_1"},
            WEATHER_OUTPUT,
            answer,
        ],
    )

    assert get(session) == [
        {"role": "user", "content": "Weather?"},
        {"type": "message", "role": "assistant", "content": "Let me look."},
        WEATHER_CALL,
        WEATHER_OUTPUT,
        answer,
    ]


@pytest.mark.django_db
def test_get_items_limit_counts_items_not_messages(session):
    add(session, TURN)

    for limit in range(len(TURN) + 2):
        assert get(session, limit) == TURN[len(TURN) - min(limit, len(TURN)) :]
    with pytest.raises(ValueError, match="limit"):
        get(session, -1)


@pytest.mark.django_db
def test_pop_item_takes_back_one_item_at_a_time_and_re_adding_restores_them(session):
    add(session, TURN)

    popped = [pop(session) for _ in TURN]

    assert popped == TURN[::-1]
    assert pop(session) is None
    assert rows(session) == []
    for item in reversed(popped):  # the SDK's rewind puts popped items back one by one
        add(session, [item])
    assert get(session) == TURN


@pytest.mark.django_db
def test_popping_a_result_or_a_call_keeps_the_rest_of_its_message(session):
    add(session, TURN[:6])

    assert pop(session) == TURN[5]
    assert pop(session) == TURN[4]
    assert pop(session) == TURN[3]

    message = Message.objects.get(conversation_id=session.conversation_id, seq=2)
    assert (message.content, message.tool_calls, message.tool_results) == (
        "Let me look.",
        [stored_call("c1", "Oslo")],
        None,
    )
    assert message.token_count == tokens.message_tokens(message.content, message.tool_calls, None)
    assert get(session) == TURN[:3]


@pytest.mark.django_db
def test_clear_session_deletes_the_messages_and_keeps_the_conversation(session, user):
    add(session, TURN)

    async_to_sync(session.clear_session)()

    assert get(session) == []
    assert selectors.conversation_get(user=user, conversation_id=session.conversation_id).message_count == 0


@pytest.mark.django_db
def test_messages_written_through_the_api_read_as_the_responses_history_format(session, user):
    calls = [stored_call("c1", "Oslo")]
    results = [{**result("c1", "no such city"), "is_error": True}]
    new = [
        services.NewMessage(role="user", content="Weather?"),
        services.NewMessage(role="assistant", content="Looking.", tool_calls=calls, tool_results=results),
    ]
    services.messages_append(user=user, conversation_id=session.conversation_id, messages=new)

    assert get(session) == selectors.history_load(
        user=user, conversation_id=session.conversation_id, format="responses"
    )
    assert get(session) == history_formats.render(
        [history_formats.StoredMessage(m.role, m.content, m.tool_calls, m.tool_results, 0) for m in new],
        "responses",
    )


def test_a_session_is_made_without_touching_the_database():
    # No django_db mark: any query would fail this test.
    session = ConversationSession(
        user=User(username="a"), conversation_id=uuid7(), session_settings={"limit": 3}
    )

    assert isinstance(session, Session)
    assert session.session_settings is not None
    assert session.session_settings.limit == 3


@pytest.mark.django_db
def test_create_makes_a_conversation_of_the_users(user):
    session = ConversationSession.create(user=user, title="Weather")

    conversation = selectors.conversation_get(user=user, conversation_id=session.session_id)
    assert (conversation.title, str(conversation.pk)) == ("Weather", session.session_id)


# Isolation: the session of user A made with user B's conversation id.


@pytest.fixture
def theirs(other_user):
    """Another user's conversation, with a pending call that an output could try to answer."""
    conversation = services.conversation_create(user=other_user)
    add(ConversationSession(user=other_user, conversation_id=conversation.pk), [USER_SECRET, WEATHER_CALL])
    return conversation


def snapshot(conversation: Conversation) -> list[tuple]:
    return list(
        Message.objects.filter(conversation=conversation)
        .order_by("seq")
        .values_list("id", "role", "content", "tool_calls", "tool_results", "item_shapes")
    )


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("method", "arguments"),
    [
        ("get_items", ()),
        ("get_items", (0,)),
        ("get_items", (5,)),
        ("add_items", ([{"role": "user", "content": "Hi"}],)),
        ("add_items", ([WEATHER_OUTPUT],)),  # an output for their pending call
        ("add_items", ([{**WEATHER_CALL, "call_id": "c2"}],)),  # a call that would join their message
        ("pop_item", ()),
        ("clear_session", ()),
    ],
)
def test_a_session_of_another_users_conversation_neither_reads_nor_writes_it(user, theirs, method, arguments):
    before = snapshot(theirs)
    session = ConversationSession(user=user, conversation_id=theirs.pk)

    with pytest.raises(Conversation.DoesNotExist):
        async_to_sync(getattr(session, method))(*deepcopy(arguments))

    assert snapshot(theirs) == before
    assert Message.objects.filter(user=user).count() == 0


# A real agent loop.


@function_tool
def get_weather(city: str) -> str:
    """The weather in a city."""
    return f"18 °C in {city}"


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_the_second_turn_of_an_agent_sees_the_first_turns_call_and_its_result():
    user = await sync_to_async(UserFactory.create)()
    session = await ConversationSession.acreate(user=user, title="Weather")
    model = ScriptedModel()
    agent = Agent(name="weather", model=model, tools=[get_weather])
    try:
        model.enqueue([function_call("get_weather", {"city": "Oslo"}, call_id="call_1")])
        model.enqueue([assistant_message("It is 18 °C in Oslo.")])
        first = await Runner.run(agent, "Weather in Oslo?", session=session)
        model.enqueue([assistant_message("You asked about Oslo.")])
        second = await Runner.run(agent, "Which city did I ask about?", session=session)

        model_input = model.calls[-1].input
        call = next(item for item in model_input if item.get("type") == "function_call")
        output = next(item for item in model_input if item.get("type") == "function_call_output")
        assert (call["call_id"], call["name"], json.loads(call["arguments"])) == (
            "call_1",
            "get_weather",
            {"city": "Oslo"},
        )
        assert (output["call_id"], output["output"]) == ("call_1", "18 °C in Oslo")
        assert model_input[-1] == {"role": "user", "content": "Which city did I ask about?"}
        assert (first.final_output, second.final_output) == ("It is 18 °C in Oslo.", "You asked about Oslo.")
        stored = await selectors.amessages_in_order(user=user, conversation_id=session.conversation_id)
        assert [(m.role, m.content, m.tool_results) for m in stored] == [
            ("user", "Weather in Oslo?", None),
            ("assistant", None, [result("call_1", "18 °C in Oslo")]),
            ("assistant", "It is 18 °C in Oslo.", None),
            ("user", "Which city did I ask about?", None),
            ("assistant", "You asked about Oslo.", None),
        ]
    finally:
        await sync_to_async(lambda: connection.close())()
