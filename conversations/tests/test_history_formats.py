"""The history formats, checked with the model APIs' own validators and their pairing rules.

Every window (every ``limit``, with and without ``start=user``) of every state of a conversation
with several tool exchanges, and of hypothesis-made conversations, must be input its API takes:
langgraph's ``_validate_chat_history`` and the stricter Chat Completions rule for ``openai``, the
tool_use/tool_result rule and the ``anthropic`` SDK's types for ``anthropic``, the Agents SDK's
``Converter.items_to_messages`` for ``responses``. Validity alone would pass an empty list, so
each window is also checked to carry every text, kept call and recorded result, in order.
Pure functions: no database.
"""

import json
from collections.abc import Iterator, Sequence
from typing import Any, cast

import pydantic
import pytest
from agents.models.chatcmpl_converter import Converter
from anthropic.types import MessageParam
from hypothesis import given, settings
from hypothesis import strategies as st
from langchain_core.messages import convert_to_messages
from langgraph.prebuilt.chat_agent_executor import _validate_chat_history
from openai.types.chat import ChatCompletionMessageParam
from openai.types.responses import ResponseInputItemParam

from conversations.history_formats import FORMATS, StoredMessage, render, start_at_user


def call(call_id: str, name: str, arguments: str) -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def result(call_id: str, content: str, is_error: bool = False) -> dict[str, Any]:
    return {"tool_call_id": call_id, "content": content, "is_error": is_error}


def user(content: str) -> StoredMessage:
    return StoredMessage(role="user", content=content, tool_calls=None, tool_results=None, token_count=5)


def assistant(content: str | None, calls=None, results=None) -> StoredMessage:
    return StoredMessage(
        role="assistant", content=content, tool_calls=calls, tool_results=results, token_count=7
    )


PARIS = call("call_paris", "get_weather", '{"city": "Paris"}')
ROME = call("call_rome", "get_weather", '{"city": "Rome"}')
FIND = call("call_find", "find_restaurant", "sushi near the Louvre")  # not JSON at all
BOOK = call("call_book", "book_table", "[1, 2]")  # JSON, but not an object
FORGOTTEN = call("call_forgotten", "send_sms", "{}")
LOOKUP = call("call_lookup", "lookup_menu", '{"q": "menu"}')
TODAY = call("call_today", "get_forecast", '"Paris"')  # a JSON string
TOMORROW = call("call_tomorrow", "get_forecast", '{"city": "Paris", "day": "tomorrow"}')

CONVERSATION = [
    user("Weather in Paris and Rome?"),
    # Results recorded in another order than the calls.
    assistant(
        "Let me check both.", [PARIS, ROME], [result("call_rome", "24°C"), result("call_paris", "18°C")]
    ),
    assistant("Paris 18°C, Rome 24°C."),
    user("Book sushi for two."),
    # Two calls, one never answered.
    assistant(None, [FIND, BOOK], [result("call_book", "Booked for 2.")]),
    # Null content and only an unanswered call: vanishes unless it is the newest.
    assistant(None, [FORGOTTEN]),
    # Empty content: no text, in any format.
    assistant("", [LOOKUP], [result("call_lookup", "no menu online", is_error=True)]),
    assistant("Booked."),
    user("And the forecast?"),
    # The newest: one call answered, one pending.
    assistant("Checking today and tomorrow.", [TODAY, TOMORROW], [result("call_tomorrow", "Sunny")]),
]


# The conversation in each format, written out.


def test_openai_format_of_the_whole_conversation():
    assert render(CONVERSATION, "openai") == [
        {"role": "user", "content": "Weather in Paris and Rome?"},
        {"role": "assistant", "content": "Let me check both.", "tool_calls": [PARIS, ROME]},
        {"role": "tool", "tool_call_id": "call_paris", "content": "18°C"},
        {"role": "tool", "tool_call_id": "call_rome", "content": "24°C"},
        {"role": "assistant", "content": "Paris 18°C, Rome 24°C."},
        {"role": "user", "content": "Book sushi for two."},
        {"role": "assistant", "content": None, "tool_calls": [BOOK]},
        {"role": "tool", "tool_call_id": "call_book", "content": "Booked for 2."},
        {"role": "assistant", "content": "", "tool_calls": [LOOKUP]},
        {"role": "tool", "tool_call_id": "call_lookup", "content": "no menu online"},
        {"role": "assistant", "content": "Booked."},
        {"role": "user", "content": "And the forecast?"},
        {"role": "assistant", "content": "Checking today and tomorrow.", "tool_calls": [TODAY, TOMORROW]},
        {"role": "tool", "tool_call_id": "call_tomorrow", "content": "Sunny"},
    ]


def text(value: str) -> dict[str, Any]:
    return {"type": "text", "text": value}


def tool_use(call_id: str, name: str, tool_input: dict[str, Any]) -> dict[str, Any]:
    return {"type": "tool_use", "id": call_id, "name": name, "input": tool_input}


def tool_result(call_id: str, content: str, is_error: bool = False) -> dict[str, Any]:
    return {"type": "tool_result", "tool_use_id": call_id, "content": content, "is_error": is_error}


def test_anthropic_format_of_the_whole_conversation():
    assert render(CONVERSATION, "anthropic") == [
        {"role": "user", "content": [text("Weather in Paris and Rome?")]},
        {
            "role": "assistant",
            "content": [
                text("Let me check both."),
                tool_use("call_paris", "get_weather", {"city": "Paris"}),
                tool_use("call_rome", "get_weather", {"city": "Rome"}),
            ],
        },
        {"role": "user", "content": [tool_result("call_paris", "18°C"), tool_result("call_rome", "24°C")]},
        {"role": "assistant", "content": [text("Paris 18°C, Rome 24°C.")]},
        {"role": "user", "content": [text("Book sushi for two.")]},
        {"role": "assistant", "content": [tool_use("call_book", "book_table", {"arguments": "[1, 2]"})]},
        {"role": "user", "content": [tool_result("call_book", "Booked for 2.")]},
        {"role": "assistant", "content": [tool_use("call_lookup", "lookup_menu", {"q": "menu"})]},
        {"role": "user", "content": [tool_result("call_lookup", "no menu online", is_error=True)]},
        {"role": "assistant", "content": [text("Booked.")]},
        {"role": "user", "content": [text("And the forecast?")]},
        {
            "role": "assistant",
            "content": [
                text("Checking today and tomorrow."),
                tool_use("call_today", "get_forecast", {"arguments": '"Paris"'}),
                tool_use("call_tomorrow", "get_forecast", {"city": "Paris", "day": "tomorrow"}),
            ],
        },
        {"role": "user", "content": [tool_result("call_tomorrow", "Sunny")]},
    ]


def message(role: str, content: str) -> dict[str, Any]:
    return {"type": "message", "role": role, "content": content}


def function_call(stored: dict[str, Any]) -> dict[str, Any]:
    function = stored["function"]
    return {
        "type": "function_call",
        "call_id": stored["id"],
        "name": function["name"],
        "arguments": function["arguments"],
    }


def output(call_id: str, content: str) -> dict[str, Any]:
    return {"type": "function_call_output", "call_id": call_id, "output": content}


def test_responses_format_of_the_whole_conversation():
    assert render(CONVERSATION, "responses") == [
        message("user", "Weather in Paris and Rome?"),
        message("assistant", "Let me check both."),
        function_call(PARIS),
        function_call(ROME),
        output("call_paris", "18°C"),
        output("call_rome", "24°C"),
        message("assistant", "Paris 18°C, Rome 24°C."),
        message("user", "Book sushi for two."),
        function_call(BOOK),
        output("call_book", "Booked for 2."),
        function_call(LOOKUP),
        output("call_lookup", "no menu online"),
        message("assistant", "Booked."),
        message("user", "And the forecast?"),
        message("assistant", "Checking today and tomorrow."),
        function_call(TODAY),
        function_call(TOMORROW),
        output("call_tomorrow", "Sunny"),
    ]


def test_the_newest_message_keeps_its_unanswered_calls():
    # The conversation as it was when the booking message was the newest.
    assert render(CONVERSATION[3:5], "openai") == [
        {"role": "user", "content": "Book sushi for two."},
        {"role": "assistant", "content": None, "tool_calls": [FIND, BOOK]},
        {"role": "tool", "tool_call_id": "call_book", "content": "Booked for 2."},
    ]
    assert render(CONVERSATION[4:6], "responses") == [
        function_call(BOOK),
        output("call_book", "Booked for 2."),
        function_call(FORGOTTEN),
    ]


def test_a_message_left_with_nothing_is_left_out_but_not_when_newest():
    assert render([assistant(None, [FORGOTTEN]), user("Hello?")], "anthropic") == [
        {"role": "user", "content": [text("Hello?")]}
    ]
    assert render([user("Hello?"), assistant(None, [FORGOTTEN])], "anthropic") == [
        {"role": "user", "content": [text("Hello?")]},
        {"role": "assistant", "content": [tool_use("call_forgotten", "send_sms", {})]},
    ]


@pytest.mark.parametrize("fmt", FORMATS)
def test_an_empty_assistant_message_is_left_out(fmt):
    assert render([user("Hi"), assistant(""), user("Still there?")], fmt) == render(
        [user("Hi"), user("Still there?")], fmt
    )


@pytest.mark.parametrize(
    ("arguments", "tool_input"),
    [
        ('{"city": "Paris", "days": [1, 2]}', {"city": "Paris", "days": [1, 2]}),
        ("{}", {}),
        ("[1, 2]", {"arguments": "[1, 2]"}),
        ('"Paris"', {"arguments": '"Paris"'}),
        ("3", {"arguments": "3"}),
        ("null", {"arguments": "null"}),
        ("", {"arguments": ""}),
        ("sushi near the Louvre", {"arguments": "sushi near the Louvre"}),
        ('{"x": NaN}', {"arguments": '{"x": NaN}'}),
        ("[" * 100_000, {"arguments": "[" * 100_000}),
    ],
)
def test_anthropic_input_is_the_arguments_object_else_the_string_as_stored(arguments, tool_input):
    [item] = render([assistant(None, [call("c", "f", arguments)])], "anthropic")
    assert item["content"] == [tool_use("c", "f", tool_input)]
    json.dumps(item, allow_nan=False)  # the answer is JSON


def test_is_error_defaults_to_false():
    stored = assistant(None, [FORGOTTEN], [{"tool_call_id": "call_forgotten", "content": "sent"}])
    assert render([stored], "anthropic")[1]["content"] == [tool_result("call_forgotten", "sent")]


@pytest.mark.parametrize("fmt", FORMATS)
def test_an_empty_window_renders_empty(fmt):
    assert render([], fmt) == []


def test_an_unknown_format_is_refused():
    with pytest.raises(ValueError, match="unknown history format 'gemini'"):
        render(CONVERSATION, "gemini")


def test_start_at_user_drops_leading_messages_until_a_user_message():
    assert start_at_user(CONVERSATION[4:]) == CONVERSATION[8:]
    assert start_at_user(CONVERSATION[3:]) == CONVERSATION[3:]
    assert start_at_user(CONVERSATION[4:8]) == []
    assert start_at_user([]) == []


# The validators.


def drain(value: Any) -> None:
    """Consume the lazy validators pydantic puts on the SDKs' ``Iterable`` fields."""
    if isinstance(value, dict):
        for item in value.values():
            drain(item)
    elif not isinstance(value, str | bytes | int | float | bool | None):
        for item in value:
            drain(item)


CHAT_MESSAGES: pydantic.TypeAdapter[list[ChatCompletionMessageParam]]
CHAT_MESSAGES = pydantic.TypeAdapter(list[ChatCompletionMessageParam])
ANTHROPIC_MESSAGES: pydantic.TypeAdapter[list[MessageParam]] = pydantic.TypeAdapter(list[MessageParam])
RESPONSES_ITEMS: pydantic.TypeAdapter[list[ResponseInputItemParam]]
RESPONSES_ITEMS = pydantic.TypeAdapter(list[ResponseInputItemParam])


def in_order(answers: list[str], calls: list[str]) -> bool:
    """Each answer is one of the calls, at most once, in the calls' order."""
    remaining = iter(calls)
    return all(answer in remaining for answer in answers)


def openai_unanswered(items: list[dict[str, Any]]) -> list[str]:
    """Chat Completions' rule, stricter than langgraph's: an assistant message's tool calls are
    followed at once by their tool messages, in call order, and a tool message answers only the
    calls just before it. Answers the ids left unanswered, which only the last assistant message
    may have, with nothing after it but its tool messages."""
    unanswered: list[str] = []
    index = 0
    while index < len(items):
        item = items[index]
        index += 1
        assert item["role"] != "tool", f"item {index - 1}: a tool message without its call before it"
        assert "tool_calls" not in item or item["tool_calls"], "an empty tool_calls list"
        assert item["content"] is not None or item.get("tool_calls"), "an empty assistant message"
        calls = [tool_call["id"] for tool_call in item.get("tool_calls") or ()]
        answers = []
        while index < len(items) and items[index]["role"] == "tool":
            answers.append(items[index]["tool_call_id"])
            index += 1
        assert in_order(answers, calls), f"tool messages {answers} do not answer calls {calls}"
        if missing := [call_id for call_id in calls if call_id not in answers]:
            assert index == len(items), f"calls {missing} left unanswered before the end"
            unanswered = missing
    return unanswered


def without_calls(items: list[dict[str, Any]], call_ids: list[str]) -> list[dict[str, Any]]:
    """The items as langgraph would get them once an agent has dropped the pending calls."""
    kept = []
    for item in items:
        calls = [tool_call for tool_call in item.get("tool_calls") or () if tool_call["id"] not in call_ids]
        kept.append({key: value for key, value in item.items() if key != "tool_calls"})
        if calls:
            kept[-1]["tool_calls"] = calls
    return kept


def langchain_arguments(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """langchain-core's ``convert_to_messages`` parses ``arguments`` and takes nothing but a JSON
    object (Chat Completions takes any string): other arguments become ``{}`` for langgraph, which
    only looks at the call ids."""

    def parsed_object(arguments: str) -> bool:
        try:
            return isinstance(json.loads(arguments), dict)
        except (ValueError, RecursionError):
            return False

    def fixed(tool_call: dict[str, Any]) -> dict[str, Any]:
        if parsed_object(tool_call["function"]["arguments"]):
            return tool_call
        return {**tool_call, "function": {**tool_call["function"], "arguments": "{}"}}

    return [
        {**item, "tool_calls": [fixed(tool_call) for tool_call in item["tool_calls"]]}
        if "tool_calls" in item
        else item
        for item in items
    ]


def check_openai(items: list[dict[str, Any]], pending: list[str]) -> None:
    drain(CHAT_MESSAGES.validate_python(items, strict=True))
    assert openai_unanswered(items) == pending
    _validate_chat_history(convert_to_messages(langchain_arguments(without_calls(items, pending))))
    if pending:
        with pytest.raises(ValueError, match="do not have a corresponding ToolMessage"):
            _validate_chat_history(convert_to_messages(langchain_arguments(items)))


def anthropic_unanswered(items: list[dict[str, Any]]) -> list[str]:
    """The Messages API's rule: an assistant message's tool_use ids all have tool_result blocks
    in the next message, a user message; tool_result blocks come first in their message and answer
    only tool_use ids of the message just before. No empty content, no empty text block. Answers
    the ids left unanswered, which only the last assistant message may have, with nothing after it
    but its own results. Roles need not alternate: the API joins consecutive turns of one role."""
    unanswered: list[str] = []
    previous_uses: list[str] = []
    for index, item in enumerate(items):
        blocks = item["content"]
        assert blocks, f"item {index}: empty content"
        assert all(block["text"] for block in blocks if block["type"] == "text"), "an empty text block"
        results = [block["tool_use_id"] for block in blocks if block["type"] == "tool_result"]
        uses = [block["id"] for block in blocks if block["type"] == "tool_use"]
        assert all(block["type"] == "tool_result" for block in blocks[: len(results)]), "results not first"
        assert not results or item["role"] == "user", f"item {index}: results in an assistant message"
        assert not uses or item["role"] == "assistant", f"item {index}: tool_use in a user message"
        assert in_order(results, previous_uses), f"results {results} do not answer {previous_uses}"
        if previous_uses and (missing := [use for use in previous_uses if use not in results]):
            assert index == len(items) - 1, f"tool_use ids {missing} left unanswered before the end"
            assert results, f"tool_use ids {missing} left unanswered"
            unanswered = missing
        previous_uses = uses
    return previous_uses or unanswered


def check_anthropic(items: list[dict[str, Any]], pending: list[str]) -> None:
    drain(ANTHROPIC_MESSAGES.validate_python(items, strict=True))
    assert anthropic_unanswered(items) == pending


def check_responses(items: list[dict[str, Any]], pending: list[str]) -> None:
    drain(RESPONSES_ITEMS.validate_python(items, strict=True))
    messages = [dict(chat_message) for chat_message in Converter.items_to_messages(cast(Any, items))]
    drain(CHAT_MESSAGES.validate_python(messages, strict=True))
    assert openai_unanswered(messages) == pending


CHECKS = {"openai": check_openai, "anthropic": check_anthropic, "responses": check_responses}


# What a window must carry: every text, kept call and recorded result, in order.


def kept(window: Sequence[StoredMessage]) -> tuple[list[tuple[str, str]], list[dict], list[dict]]:
    texts, calls, results = [], [], []
    for index, stored in enumerate(window):
        if stored.content:
            texts.append((stored.role, stored.content))
        answers = {answer["tool_call_id"]: answer for answer in stored.tool_results or ()}
        for tool_call in stored.tool_calls or ():
            if tool_call["id"] in answers:
                calls.append(tool_call)
                results.append(answers[tool_call["id"]])
            elif index == len(window) - 1:
                calls.append(tool_call)
    return texts, calls, results


def pending_calls(window: Sequence[StoredMessage]) -> list[str]:
    """The newest message's calls that have no result yet."""
    if not window:
        return []
    answered = {answer["tool_call_id"] for answer in window[-1].tool_results or ()}
    return [tool_call["id"] for tool_call in window[-1].tool_calls or () if tool_call["id"] not in answered]


def anthropic_input(arguments: str) -> dict[str, Any]:
    """The contract's ``input``: the arguments if they are a JSON object, else the string."""

    def not_json(constant: str) -> None:
        raise ValueError(constant)  # NaN and Infinity: Python reads them, JSON has none

    try:
        parsed = json.loads(arguments, parse_constant=not_json)
    except (ValueError, RecursionError):
        return {"arguments": arguments}
    return parsed if isinstance(parsed, dict) else {"arguments": arguments}


def carried(fmt: str, items: list[dict[str, Any]]) -> tuple[list, list, list]:
    if fmt == "openai":
        return (
            [(item["role"], item["content"]) for item in items if item["role"] != "tool" and item["content"]],
            [tool_call for item in items for tool_call in item.get("tool_calls") or ()],
            [(item["tool_call_id"], item["content"]) for item in items if item["role"] == "tool"],
        )
    if fmt == "anthropic":
        blocks = [(item["role"], block) for item in items for block in item["content"]]
        return (
            [(role, block["text"]) for role, block in blocks if block["type"] == "text"],
            [(b["id"], b["name"], b["input"]) for _, b in blocks if b["type"] == "tool_use"],
            [
                (block["tool_use_id"], block["content"], block["is_error"])
                for _, block in blocks
                if block["type"] == "tool_result"
            ],
        )
    return (
        [(item["role"], item["content"]) for item in items if item["type"] == "message"],
        [(i["call_id"], i["name"], i["arguments"]) for i in items if i["type"] == "function_call"],
        [(item["call_id"], item["output"]) for item in items if item["type"] == "function_call_output"],
    )


def expected(fmt: str, window: Sequence[StoredMessage]) -> tuple[list, list, list]:
    texts, calls, results = kept(window)
    if fmt == "openai":
        return texts, calls, [(answer["tool_call_id"], answer["content"]) for answer in results]
    if fmt == "anthropic":
        return (
            texts,
            [(c["id"], c["function"]["name"], anthropic_input(c["function"]["arguments"])) for c in calls],
            [(a["tool_call_id"], a["content"], a.get("is_error", False)) for a in results],
        )
    return (
        texts,
        [(c["id"], c["function"]["name"], c["function"]["arguments"]) for c in calls],
        [(answer["tool_call_id"], answer["content"]) for answer in results],
    )


def assert_valid(fmt: str, window: Sequence[StoredMessage]) -> None:
    items = render(window, fmt)
    CHECKS[fmt](items, pending_calls(window))
    assert carried(fmt, items) == expected(fmt, window)


def windows(conversation: list[StoredMessage]) -> Iterator[Sequence[StoredMessage]]:
    """Every ``limit`` from 1 to the conversation's length, with and without ``start=user``."""
    for limit in range(1, len(conversation) + 1):
        yield conversation[-limit:]
        yield start_at_user(conversation[-limit:])


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_window_of_every_state_of_the_conversation_is_valid(fmt):
    # Each state: the conversation when its newest message was message n.
    for size in range(1, len(CONVERSATION) + 1):
        for window in windows(CONVERSATION[:size]):
            assert_valid(fmt, window)


def keeping_every_call(window: Sequence[StoredMessage], fmt: str) -> list[dict[str, Any]]:
    """A wrong rendering: each message as if it were the newest, so unanswered calls stay."""
    return [item for stored in window for item in render([stored], fmt)]


@pytest.mark.parametrize("fmt", FORMATS)
def test_the_checks_refuse_a_call_left_without_its_result(fmt):
    with pytest.raises(AssertionError, match="left unanswered"):
        CHECKS[fmt](keeping_every_call(CONVERSATION, fmt), pending_calls(CONVERSATION))


@pytest.mark.parametrize(
    ("fmt", "items"),
    [
        ("openai", render(CONVERSATION[:2], "openai")[::-1]),  # tool messages before their call
        ("openai", [*render(CONVERSATION[:2], "openai")[:2], *render(CONVERSATION[:2], "openai")[:1:-1]]),
        ("openai", [*render(CONVERSATION[:2], "openai")[:3], {"role": "user", "content": "?"}]),
        ("anthropic", [*render(CONVERSATION[:2], "anthropic"), *render(CONVERSATION[:2], "anthropic")[2:]]),
        ("anthropic", [render(CONVERSATION[:2], "anthropic")[2], *render(CONVERSATION[:2], "anthropic")]),
        ("anthropic", [{"role": "assistant", "content": []}]),
        ("anthropic", [{"role": "assistant", "content": [text("")]}]),
        ("responses", [*render(CONVERSATION[:2], "responses")[:3], message("user", "?")]),
        ("responses", [output("call_paris", "18°C"), *render(CONVERSATION[:2], "responses")]),
    ],
)
def test_the_checks_refuse_broken_pairings(fmt, items):
    with pytest.raises(AssertionError):
        CHECKS[fmt](items, [])


ARGUMENTS = st.one_of(
    st.dictionaries(st.text(max_size=4), st.integers() | st.text(max_size=4), max_size=3).map(json.dumps),
    st.sampled_from(["", "{}", "not json", "[1, 2]", '"Paris"', "3", "null", '{"x": NaN}', "{"]),
    st.text(max_size=12),
)


@st.composite
def conversations(draw: st.DrawFn) -> list[StoredMessage]:
    stored = []
    for index in range(draw(st.integers(min_value=1, max_value=10))):
        if draw(st.booleans()):
            stored.append(user(draw(st.text(min_size=1, max_size=8))))
            continue
        calls = [
            call(f"call_{index}_{number}", draw(st.sampled_from(["search", "fetch"])), draw(ARGUMENTS))
            for number in range(draw(st.integers(min_value=0, max_value=3)))
        ]
        answered = draw(st.permutations(calls))[: draw(st.integers(min_value=0, max_value=len(calls)))]
        results = [result(c["id"], draw(st.text(max_size=8)), draw(st.booleans())) for c in answered]
        contents = st.none() | st.just("") | st.text(min_size=1, max_size=8) if calls else st.text(max_size=8)
        stored.append(assistant(draw(contents), calls or None, results or None))
    return stored


@settings(max_examples=200, deadline=None)
@given(conversations())
def test_every_window_of_any_conversation_is_valid_in_every_format(conversation):
    for window in windows(conversation):
        for fmt in FORMATS:
            assert_valid(fmt, window)
