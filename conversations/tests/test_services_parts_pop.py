"""Taking one call or one result back from the newest message (``tool_call_pop``,
``tool_result_pop``) and adding calls to it (``tool_calls_add``), as an agent session's
``pop_item`` and ``add_items`` do, and the shapes an integration keeps with calls and results."""

import pytest

from conversations import selectors, services, tokens
from conversations.models import Conversation, Message
from conversations.tool_results import ToolResultsInvalid

from .factories import ConversationFactory

pytestmark = pytest.mark.django_db


def call(call_id: str) -> dict:
    return {
        "id": call_id,
        "type": "function",
        "function": {"name": "weather", "arguments": '{"city":"Oslo"}'},
    }


def result(call_id: str, content: str = "18 °C") -> dict:
    return {"tool_call_id": call_id, "content": content, "is_error": False}


@pytest.fixture
def conversation(user):
    return ConversationFactory.create(user=user)


def append(conversation, *, content=None, calls=(), results=None, item_shapes=None) -> Message:
    (message,) = services.messages_append(
        user=conversation.user,
        conversation_id=conversation.pk,
        messages=[
            services.NewMessage(
                role="assistant",
                content=content,
                tool_calls=[call(call_id) for call_id in calls] or None,
                tool_results=results,
                item_shapes=item_shapes,
            )
        ],
    )
    return message


def stored(message: Message) -> Message:
    return Message.objects.get(pk=message.pk)


def test_tool_result_pop_deletes_that_result_only(conversation):
    shapes = {"calls": {"a": {"type": "function_call"}}, "results": {"a": {"id": "r"}, "b": {"id": "s"}}}
    message = append(
        conversation, calls=["a", "b"], results=[result("a"), result("b", "21 °C")], item_shapes=shapes
    )
    version = selectors.conversation_version(user=conversation.user, conversation_id=conversation.pk)

    services.tool_result_pop(
        user=conversation.user, conversation_id=conversation.pk, message_id=message.pk, tool_call_id="b"
    )

    after = stored(message)
    assert after.tool_calls == [call("a"), call("b")]
    assert after.tool_results == [result("a")]
    assert after.item_shapes == {"calls": {"a": {"type": "function_call"}}, "results": {"a": {"id": "r"}}}
    assert after.token_count == tokens.message_tokens(None, after.tool_calls, after.tool_results)
    assert selectors.conversation_version(user=conversation.user, conversation_id=conversation.pk) > version


def test_tool_result_pop_of_the_last_result_leaves_none(conversation):
    message = append(conversation, calls=["a"], results=[result("a")])

    services.tool_result_pop(
        user=conversation.user, conversation_id=conversation.pk, message_id=message.pk, tool_call_id="a"
    )

    assert stored(message).tool_results is None


def test_tool_result_pop_refuses_a_call_without_result_and_an_older_message(conversation):
    older = append(conversation, calls=["a"], results=[result("a")])
    newest = append(conversation, calls=["b"])
    pop = {"user": conversation.user, "conversation_id": conversation.pk}

    with pytest.raises(ToolResultsInvalid):
        services.tool_result_pop(**pop, message_id=newest.pk, tool_call_id="b")
    with pytest.raises(services.MessageNotNewest):
        services.tool_result_pop(**pop, message_id=older.pk, tool_call_id="a")
    assert stored(older).tool_results == [result("a")]


def test_tool_call_pop_deletes_a_call_without_result(conversation):
    message = append(conversation, content="Let me look.", calls=["a", "b"], item_shapes={"calls": {"b": {}}})

    services.tool_call_pop(
        user=conversation.user, conversation_id=conversation.pk, message_id=message.pk, tool_call_id="b"
    )
    services.tool_call_pop(
        user=conversation.user, conversation_id=conversation.pk, message_id=message.pk, tool_call_id="a"
    )

    after = stored(message)
    assert (after.content, after.tool_calls, after.item_shapes) == ("Let me look.", None, {"calls": {}})
    assert after.token_count == tokens.message_tokens("Let me look.", None, None)


@pytest.mark.parametrize(
    ("content", "calls", "results", "pop"),
    [
        ("Text", ["a"], None, "x"),  # not the message's call
        ("Text", ["a"], [result("a")], "a"),  # its result would be left without its call
        (None, ["a"], None, "a"),  # the message would hold nothing: pop the message
    ],
)
def test_tool_call_pop_refuses_what_would_leave_a_message_invalid(conversation, content, calls, results, pop):
    message = append(conversation, content=content, calls=calls, results=results)

    with pytest.raises(services.ToolCallRefused):
        services.tool_call_pop(
            user=conversation.user, conversation_id=conversation.pk, message_id=message.pk, tool_call_id=pop
        )
    assert stored(message).tool_calls == [call(call_id) for call_id in calls]


def test_another_users_message_is_not_found(conversation, other_user):
    message = append(conversation, content="Text", calls=["a", "b"], results=[result("a")])

    with pytest.raises(Conversation.DoesNotExist):
        services.tool_result_pop(
            user=other_user, conversation_id=conversation.pk, message_id=message.pk, tool_call_id="a"
        )
    with pytest.raises(Conversation.DoesNotExist):
        services.tool_call_pop(
            user=other_user, conversation_id=conversation.pk, message_id=message.pk, tool_call_id="b"
        )
    after = stored(message)
    assert (after.tool_calls, after.tool_results) == ([call("a"), call("b")], [result("a")])


def test_result_shapes_join_the_messages_shapes(conversation):
    message = append(
        conversation, calls=["a", "b"], results=[result("a")], item_shapes={"results": {"a": {}}}
    )

    services.tool_results_record(
        user=conversation.user,
        conversation_id=conversation.pk,
        message_id=message.pk,
        tool_results=[result("b")],
        result_shapes={"b": {"id": "out_b"}},
    )

    assert stored(message).item_shapes == {"results": {"a": {}, "b": {"id": "out_b"}}}


def test_tool_calls_add_goes_on_from_the_newest_messages_calls(conversation):
    message = append(conversation, content="Let me look.", calls=["a"], item_shapes={"calls": {"a": {}}})
    version = selectors.conversation_version(user=conversation.user, conversation_id=conversation.pk)

    services.tool_calls_add(
        user=conversation.user,
        conversation_id=conversation.pk,
        message_id=message.pk,
        tool_calls=[call("b")],
        call_shapes={"b": {"id": "fc_b"}},
    )

    after = stored(message)
    assert after.tool_calls == [call("a"), call("b")]
    assert after.item_shapes == {"calls": {"a": {}, "b": {"id": "fc_b"}}}
    assert after.token_count == tokens.message_tokens("Let me look.", after.tool_calls, None)
    assert selectors.conversation_version(user=conversation.user, conversation_id=conversation.pk) > version


@pytest.mark.parametrize(
    ("calls", "results", "new"),
    [
        (["a"], [result("a")], "b"),  # its calls have results: a new call would come after them
        (["a"], None, "a"),  # call ids are unique in a message
    ],
)
def test_tool_calls_add_refuses_what_would_break_a_message(conversation, calls, results, new):
    message = append(conversation, content="Text", calls=calls, results=results)

    with pytest.raises(services.ToolCallRefused):
        services.tool_calls_add(
            user=conversation.user,
            conversation_id=conversation.pk,
            message_id=message.pk,
            tool_calls=[call(new)],
        )
    assert stored(message).tool_calls == [call(call_id) for call_id in calls]


def test_tool_calls_add_refuses_a_user_message_and_an_older_message(conversation):
    older = append(conversation, content="Text", calls=["a"])
    user_message = services.message_append(
        user=conversation.user, conversation_id=conversation.pk, role="user", content="Hi"
    )
    add = {"user": conversation.user, "conversation_id": conversation.pk, "tool_calls": [call("b")]}

    with pytest.raises(services.ToolCallRefused):
        services.tool_calls_add(**add, message_id=user_message.pk)
    with pytest.raises(services.MessageNotNewest):
        services.tool_calls_add(**add, message_id=older.pk)
    assert stored(user_message).tool_calls is None
    assert stored(older).tool_calls == [call("a")]
