"""History, as the contract's History and Conditional requests sections say, over REST and
through the agent's ``history_load``, on real rows of either database.

The answer's shape; ``limit`` and ``max_tokens`` windows (one statement either way);
``start=user``; the three formats, the same from REST and from Python; bad parameters; ETags.
And issue 12's first acceptance point: every window of a conversation with several tool
exchanges (results recorded late, a call never answered in an older message, one pending in the
newest), at every state it goes through, is input that the model APIs' own validators take
(the checks of test_history_formats.py). Another user's conversation, with the same tool-call
ids, is present throughout: its ids are 404 and nothing of it reaches a window.
"""

import random
from collections.abc import Sequence
from dataclasses import replace
from http import HTTPStatus
from itertools import accumulate
from typing import Any

import pytest
from asgiref.sync import sync_to_async

from conversations import selectors, services
from conversations.history_formats import FORMATS, StoredMessage
from conversations.models import Conversation, Message

from .factories import ConversationFactory, UserFactory
from .test_agent_api import sync_thread_connection  # noqa: F401 (a fixture)
from .test_api_conversations import MALFORMED_ID, MISSING_ID
from .test_api_messages import history_url, messages_url
from .test_history_formats import CHECKS, CONVERSATION, call, carried, expected, pending_calls, result

pytestmark = pytest.mark.django_db

NOT_FOUND = b'{"detail":"Not found."}'


def history(client, conversation_id, if_none_match: str | None = None, **params: Any):
    """GET the history with ``params`` as its query."""
    headers = {"If-None-Match": if_none_match} if if_none_match else {}
    return client.get(history_url(conversation_id), params, headers=headers)


def append(user, conversation, role: str, content: str | None, calls=None, results=None) -> Message:
    return services.message_append(
        user=user,
        conversation_id=conversation.pk,
        role=role,
        content=content,
        tool_calls=calls,
        tool_results=results,
    )


def record(user, conversation, message: Message, results: list[dict[str, Any]]) -> Message:
    return services.tool_results_record(
        user=user, conversation_id=conversation.pk, message_id=message.pk, tool_results=results
    )


def costs_newest_first(conversation: Conversation) -> list[int]:
    return list(
        Message.objects.filter(conversation=conversation)
        .order_by("-seq")
        .values_list("token_count", flat=True)
    )


@pytest.fixture
def conversation(user):
    return ConversationFactory.create(user=user)


@pytest.fixture
def theirs(other_user):
    """Another user's conversation, with the tool-call ids of CONVERSATION and their own results,
    and a pending call in its newest message."""
    conversation = ConversationFactory.create(user=other_user)
    append(other_user, conversation, "user", "Their question")
    paris = call("call_paris", "get_weather", '{"city": "Paris"}')
    asked = append(other_user, conversation, "assistant", "Their call", [paris])
    record(other_user, conversation, asked, [result("call_paris", "THEIR RESULT")])
    append(other_user, conversation, "assistant", None, [call("call_today", "get_forecast", "{}")])
    return conversation


# The answer


def test_the_answer_is_the_conversation_its_format_its_tokens_and_its_messages(
    auth_client, user, conversation, theirs
):
    append(user, conversation, "user", "Hello there")
    append(user, conversation, "assistant", "Hi! How can I help?")
    costs = costs_newest_first(conversation)

    for fmt in (None, *FORMATS):
        response = history(auth_client, conversation.pk, **({"format": fmt} if fmt else {}))
        assert response.status_code == HTTPStatus.OK
        body = response.json()
        assert list(body) == ["conversation_id", "format", "tokens", "messages"]
        assert body["conversation_id"] == str(conversation.pk)
        assert body["format"] == (fmt or "openai")
        assert body["tokens"] == sum(costs)
        assert len(body["messages"]) == 2


# limit


def test_each_limit_is_the_newest_messages_oldest_first(auth_client, user, conversation, theirs):
    for n in range(6):
        append(user, conversation, "user" if n % 2 == 0 else "assistant", f"message {n} " * (n + 1))
    costs = costs_newest_first(conversation)

    for limit in range(1, 9):
        body = history(auth_client, conversation.pk, limit=limit).json()
        assert [m["content"] for m in body["messages"]] == [
            f"message {n} " * (n + 1) for n in range(max(0, 6 - limit), 6)
        ]
        assert body["tokens"] == sum(costs[:limit])


# max_tokens


@pytest.fixture
def budgeted(user, conversation, theirs):
    """A conversation whose messages cost from 1 to a few hundred tokens each, with a tool
    exchange whose result was recorded late (its cost grew) and a message that every format
    leaves out (an unanswered call, not the newest) but that still costs its tokens."""
    rng = random.Random(12)
    words = ["weather", "Paris", "sushi", "🙂", "tomorrow", "booking", "x", "déjà vu", "42", "the"]
    for n in range(14):
        size = rng.choice([1, 1, 2, 3, 5, 8, 13, 40, 120, 300])
        append(
            user, conversation, "user" if n % 3 == 0 else "assistant", " ".join(rng.choices(words, k=size))
        )
        if n == 5:
            asked = append(
                user, conversation, "assistant", "Looking.", [call("c5", "search", '{"q": "menu"}')]
            )
            append(user, conversation, "assistant", None, [call("c_never", "send_sms", '{"to": "me"}')])
            record(user, conversation, asked, [result("c5", "a long menu " * 30)])
    costs = costs_newest_first(conversation)
    # Every message costs something, so the sums of the newest ones name the window.
    assert min(costs) >= 1
    return conversation


def budgets(costs: list[int], seed: int) -> list[int]:
    """Every edge (each window's cost, one less, one more), random budgets, and a huge one."""
    rng = random.Random(seed)
    edges = {total + delta for total in accumulate(costs) for delta in (-1, 0, 1)}
    randoms = {rng.randint(1, sum(costs) + 10) for _ in range(40)}
    return sorted({1, 10**30, *randoms, *(budget for budget in edges if budget >= 1)})


@pytest.mark.parametrize("limit", [None, 1, 3, 8, 16])
def test_a_token_budget_takes_the_newest_messages_that_fit(auth_client, user, budgeted, limit):
    costs = costs_newest_first(budgeted)
    sums = [0, *accumulate(costs)]  # sums[n]: the cost of the newest n messages
    by_size = {
        n: history(auth_client, budgeted.pk, limit=n).json()["messages"] for n in range(1, len(costs) + 1)
    }
    by_size[0] = []
    bounds = {"limit": limit} if limit else {}

    for budget in budgets(costs, seed=limit or 0):
        body = history(auth_client, budgeted.pk, max_tokens=budget, **bounds).json()
        tokens = body["tokens"]
        assert tokens in sums, f"{tokens} tokens are not the cost of any newest messages"
        size = sums.index(tokens)
        assert tokens <= budget
        assert limit is None or size <= limit
        if size < len(costs) and size != limit:
            assert tokens + costs[size] > budget, f"budget {budget}: the next older message fits too"
        assert body["messages"] == by_size[size]
        # The Python API: the same window.
        window = selectors.history_window(user=user, conversation_id=budgeted.pk, max_tokens=budget, **bounds)
        assert (window.messages, window.tokens) == (body["messages"], tokens)


def test_a_newest_message_over_the_budget_alone_gives_an_empty_window(auth_client, user, budgeted):
    newest = costs_newest_first(budgeted)[0]
    assert history(auth_client, budgeted.pk, max_tokens=newest).json()["tokens"] == newest
    for params in ({}, {"limit": 5}, {"start": "user"}, {"format": "anthropic"}):
        body = history(auth_client, budgeted.pk, max_tokens=newest - 1, **params).json()
        assert (body["tokens"], body["messages"]) == (0, [])
    assert selectors.history_load(user=user, conversation_id=budgeted.pk, max_tokens=newest - 1) == []


def test_a_result_recorded_later_counts_against_the_budget(auth_client, user, conversation, theirs):
    asked = append(
        user, conversation, "assistant", "Checking.", [call("c1", "get_weather", '{"city": "Oslo"}')]
    )
    before = costs_newest_first(conversation)[0]
    assert history(auth_client, conversation.pk, max_tokens=before).json()["tokens"] == before

    record(user, conversation, asked, [result("c1", "Cloudy, 4 °C, wind from the north-west")])

    after = costs_newest_first(conversation)[0]
    assert after > before
    body = history(auth_client, conversation.pk, max_tokens=after - 1).json()
    assert (body["tokens"], body["messages"]) == (0, [])
    assert history(auth_client, conversation.pk, max_tokens=after).json()["tokens"] == after


def test_a_budget_larger_than_any_integer_is_no_bound(auth_client, user, budgeted):
    everything = history(auth_client, budgeted.pk).json()
    for huge in (2**62, 2**63, 10**30):
        assert history(auth_client, budgeted.pk, max_tokens=huge).json() == everything
        window = selectors.history_window(user=user, conversation_id=budgeted.pk, max_tokens=huge)
        assert (window.messages, window.tokens) == (everything["messages"], everything["tokens"])


# One statement, whatever the window


@pytest.fixture
def long_conversation(user, conversation, theirs):
    """150 messages: more than the statement's first fetch of rows."""
    Message.objects.bulk_create(
        Message(
            conversation=conversation,
            user=user,
            seq=n,
            role="user" if n % 2 else "assistant",
            content=f"message {n}",
            token_count=n % 7 + 1,
        )
        for n in range(1, 151)
    )
    Conversation.objects.filter(pk=conversation.pk).update(message_count=150)
    return conversation


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"limit": 3},
        {"limit": 150},
        {"max_tokens": 40},
        {"max_tokens": 10**6, "limit": 150},
        {"limit": 120, "max_tokens": 300, "start": "user", "format": "anthropic"},
        {"max_tokens": 40, "format": "responses"},
    ],
)
def test_a_window_is_one_query(user, long_conversation, params, assert_data_queries):
    with assert_data_queries(1) as queries:
        window = selectors.history_window(user=user, conversation_id=long_conversation.pk, **params)
    assert len(queries) == 1
    assert window.messages
    if "max_tokens" in params:
        # The budget is a running sum in SQL, not a loop over rows.
        assert "OVER" in queries[0].upper()


def test_an_empty_conversation_and_one_not_the_users_are_one_query(
    user, conversation, theirs, assert_data_queries
):
    every: list[dict[str, Any]] = [{}, {"max_tokens": 10}]
    for params in every:
        with assert_data_queries(1) as queries:
            window = selectors.history_window(user=user, conversation_id=conversation.pk, **params)
        assert (len(queries), window.messages, window.tokens) == (1, [], 0)
        for other in (theirs.pk, MISSING_ID):
            with assert_data_queries(1) as queries, pytest.raises(Conversation.DoesNotExist):
                selectors.history_window(user=user, conversation_id=other, **params)
            assert len(queries) == 1


# start=user


@pytest.fixture
def assistant_first(user, conversation, theirs):
    """assistant, user, assistant, assistant (a tool exchange), user, assistant."""
    append(user, conversation, "assistant", "Welcome back!")
    append(user, conversation, "user", "Weather in Oslo?")
    append(user, conversation, "assistant", "Let me look.")
    asked = append(user, conversation, "assistant", None, [call("c1", "get_weather", '{"city": "Oslo"}')])
    record(user, conversation, asked, [result("c1", "4 °C")])
    append(user, conversation, "user", "And tomorrow?")
    append(user, conversation, "assistant", "Snow.")
    return conversation


@pytest.mark.parametrize(
    ("limit", "contents"),
    [
        (6, ["Weather in Oslo?", "Let me look.", None, "4 °C", "And tomorrow?", "Snow."]),
        (5, ["Weather in Oslo?", "Let me look.", None, "4 °C", "And tomorrow?", "Snow."]),
        (4, ["And tomorrow?", "Snow."]),
        (2, ["And tomorrow?", "Snow."]),
        (1, []),
    ],
)
def test_start_user_drops_leading_messages_until_a_user_message(
    auth_client, user, assistant_first, limit, contents
):
    costs = costs_newest_first(assistant_first)
    body = history(auth_client, assistant_first.pk, limit=limit, start="user").json()

    assert [item["content"] for item in body["messages"]] == contents
    if contents:
        assert body["messages"][0] == {"role": "user", "content": contents[0]}
    kept = {6: 5, 5: 5, 4: 2, 2: 2, 1: 0}[limit]
    assert body["tokens"] == sum(costs[:kept])
    assert (
        selectors.history_load(user=user, conversation_id=assistant_first.pk, limit=limit, start="user")
        == body["messages"]
    )


def test_start_user_with_no_user_message_is_empty(auth_client, user, conversation, theirs):
    append(user, conversation, "assistant", "Hello!")
    append(user, conversation, "assistant", "Anyone there?")

    assert history(auth_client, conversation.pk, start="user").json()["messages"] == []
    assert history(auth_client, conversation.pk, start="user").json()["tokens"] == 0
    assert len(history(auth_client, conversation.pk, start="any").json()["messages"]) == 2
    assert selectors.history_load(user=user, conversation_id=conversation.pk, start="user") == []


def test_start_user_applies_after_the_token_budget(auth_client, user, assistant_first):
    costs = costs_newest_first(assistant_first)  # Snow., And tomorrow?, the call, Let me look., …
    # The budget reaches back to "Let me look.": the window begins at "And tomorrow?".
    body = history(auth_client, assistant_first.pk, max_tokens=sum(costs[:4]), start="user").json()
    assert [item["content"] for item in body["messages"]] == ["And tomorrow?", "Snow."]
    assert body["tokens"] == sum(costs[:2])


# Formats: REST and Python alike


def test_each_format_is_the_same_from_rest_and_from_python(auth_client, user, assistant_first):
    for fmt in FORMATS:
        for params in ({}, {"limit": 3}, {"start": "user"}, {"max_tokens": 20, "limit": 4}):
            body = history(auth_client, assistant_first.pk, format=fmt, **params).json()
            assert body["format"] == fmt
            loaded = selectors.history_load(
                user=user, conversation_id=assistant_first.pk, format=fmt, **params
            )
            assert loaded == body["messages"]
    # The formats differ: each is its API's shape.
    whole = {fmt: history(auth_client, assistant_first.pk, format=fmt).json()["messages"] for fmt in FORMATS}
    assert whole["openai"][3] == {
        "role": "assistant",
        "content": None,
        "tool_calls": [call("c1", "get_weather", '{"city": "Oslo"}')],
    }
    assert whole["anthropic"][4] == {
        "role": "user",
        "content": [{"type": "tool_result", "tool_use_id": "c1", "content": "4 °C", "is_error": False}],
    }
    assert whole["responses"][4] == {"type": "function_call_output", "call_id": "c1", "output": "4 °C"}


# Bad parameters


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("max_tokens", "0"),
        ("max_tokens", "-1"),
        ("max_tokens", "abc"),
        ("max_tokens", "1.5"),
        ("max_tokens", ""),
        ("limit", "0"),
        ("limit", "abc"),
        ("start", "foo"),
        ("start", "USER"),
        ("start", ""),
        ("format", "xml"),
        ("format", "api"),
        ("format", "json"),
        ("format", "OpenAI"),
    ],
)
def test_a_bad_parameter_is_a_400_naming_it(auth_client, conversation, theirs, name, value):
    response = history(auth_client, conversation.pk, **{name: value})
    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert response["Content-Type"] == "application/json"
    assert list(response.json()) == [name]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("limit", 0),
        ("limit", 501),
        ("max_tokens", 0),
        ("max_tokens", -1),
        ("start", "foo"),
        ("format", "xml"),
        ("format", "api"),
    ],
)
def test_a_bad_parameter_in_python_is_a_value_error_naming_it(user, conversation, name, value):
    with pytest.raises(ValueError, match=name):
        selectors.history_load(user=user, conversation_id=conversation.pk, **{name: value})


# Another user's conversation


def test_another_users_or_a_missing_conversations_history_is_a_404(
    auth_client, other_client, user, conversation, theirs
):
    append(user, conversation, "user", "Mine")
    etag = history(auth_client, conversation.pk)["ETag"]
    answers = [
        client.get(history_url(conversation_id), {"format": fmt, **params}, HTTP_IF_NONE_MATCH=etag)
        for fmt in FORMATS
        for params in ({}, {"max_tokens": 10}, {"start": "user", "limit": 1})
        for client, conversation_id in (
            (auth_client, theirs.pk),
            (auth_client, MISSING_ID),
            (auth_client, MALFORMED_ID),
            (other_client, conversation.pk),
        )
    ]
    assert {answer.status_code for answer in answers} == {HTTPStatus.NOT_FOUND}
    assert {answer.content for answer in answers} == {NOT_FOUND}
    for conversation_id in (theirs.pk, MISSING_ID):
        with pytest.raises(Conversation.DoesNotExist):
            selectors.history_load(user=user, conversation_id=conversation_id, format="anthropic")


# Issue 12's first acceptance point


def drop_leading_until_user(window: Sequence[Any], roles: Sequence[str]) -> Sequence[Any]:
    for index, role in enumerate(roles):
        if role == "user":
            return window[index:]
    return window[:0]


class ToolConversation:
    """CONVERSATION of test_history_formats.py stored step by step, with what the test expects
    it to hold (``model``) beside the stored messages' ids."""

    def __init__(self, user, conversation) -> None:
        self.user, self.conversation = user, conversation
        self.model: list[StoredMessage] = []
        self.messages: list[Message] = []

    def append(self, index: int, *, with_results: bool) -> None:
        source = CONVERSATION[index]
        results = source.tool_results if with_results else None
        message = append(
            self.user, self.conversation, source.role, source.content, source.tool_calls, results
        )
        self.messages.append(message)
        self.model.append(replace(source, tool_results=results))

    def record(self, index: int, call_ids: list[str]) -> None:
        results = [
            answer for answer in CONVERSATION[index].tool_results or () if answer["tool_call_id"] in call_ids
        ]
        assert len(results) == len(call_ids)
        record(self.user, self.conversation, self.messages[index], results)
        self.model[index] = replace(
            self.model[index], tool_results=[*(self.model[index].tool_results or ()), *results]
        )

    def steps(self):
        """Each state the conversation goes through, in order."""
        steps = [
            lambda: self.append(0, with_results=False),
            lambda: self.append(1, with_results=False),  # both calls pending
            lambda: self.record(1, ["call_rome"]),  # one result late, the other still pending
            lambda: self.record(1, ["call_paris"]),
            lambda: self.append(2, with_results=False),
            lambda: self.append(3, with_results=False),
            lambda: self.append(4, with_results=False),  # FIND and BOOK pending
            lambda: self.append(5, with_results=False),  # FORGOTTEN, never answered
            lambda: self.record(4, ["call_book"]),  # late, in an older message; FIND never answered
            lambda: self.append(6, with_results=True),  # results with the append
            lambda: self.append(7, with_results=False),
            lambda: self.append(8, with_results=False),
            lambda: self.append(9, with_results=False),
            lambda: self.record(9, ["call_tomorrow"]),  # TODAY stays pending in the newest
        ]
        for step in steps:
            step()
            yield


def check_every_window(client, tool: ToolConversation) -> int:
    """Every limit from 1 to past the conversation's length, with start=any and start=user, in
    every format: valid input for its API, carrying what the window holds, the same from Python.
    Answers how many windows were checked."""
    costs = dict(Message.objects.filter(conversation=tool.conversation).values_list("pk", "token_count"))
    checked = 0
    for limit in range(1, len(tool.model) + 2):
        for start in ("any", "user"):
            window: Sequence[StoredMessage] = tool.model[-limit:]
            messages: Sequence[Message] = tool.messages[-limit:]
            if start == "user":
                roles = [message.role for message in window]
                window, messages = (
                    drop_leading_until_user(window, roles),
                    drop_leading_until_user(messages, roles),
                )
            for fmt in FORMATS:
                params: dict[str, Any] = {"limit": limit, "start": start, "format": fmt}
                body = history(client, tool.conversation.pk, **params).json()
                items = body["messages"]
                where = f"{params} after {len(tool.model)} messages"
                CHECKS[fmt](items, pending_calls(window))
                assert carried(fmt, items) == expected(fmt, window), where
                assert body["tokens"] == sum(costs[message.pk] for message in messages), where
                if start == "user" and items:
                    assert items[0]["role"] == "user", where
                loaded = selectors.history_load(
                    user=tool.user, conversation_id=tool.conversation.pk, **params
                )
                assert loaded == items, where
                checked += 1
    return checked


def test_every_window_of_a_conversation_with_tool_exchanges_is_valid_in_every_format(
    auth_client, user, conversation, theirs
):
    # The caller's other conversation, with the same call ids and other results.
    elsewhere = ConversationFactory.create(user=user)
    asked = append(user, elsewhere, "assistant", "Elsewhere", [call("call_paris", "get_weather", "{}")])
    record(user, elsewhere, asked, [result("call_paris", "MY OTHER RESULT")])
    tool = ToolConversation(user, conversation)
    checked = sum(check_every_window(auth_client, tool) for _ in tool.steps())

    assert [message.role for message in tool.model] == [message.role for message in CONVERSATION]
    assert tool.model[4].tool_results == [result("call_book", "Booked for 2.")]  # FIND never answered
    assert checked == sum(
        2 * len(FORMATS) * (size + 1) for size in (1, 2, 2, 2, 3, 4, 5, 6, 6, 7, 8, 9, 10, 10)
    )
    # Other conversations' results for the same call ids never reached a window.
    whole = history(auth_client, conversation.pk, limit=500).content.decode()
    assert "THEIR RESULT" not in whole
    assert "MY OTHER RESULT" not in whole


# Conditional requests


QUERIES: list[dict[str, Any]] = [
    {},
    {"format": "openai"},
    {"format": "anthropic"},
    {"format": "responses"},
    {"limit": 2},
    {"max_tokens": 5},
    {"start": "user"},
    {"limit": 2, "max_tokens": 50, "start": "user", "format": "anthropic"},
    {"limit": 3, "format": "responses"},
]


@pytest.fixture
def pending(user, conversation, theirs):
    """A conversation whose newest message has a call without its result yet."""
    append(user, conversation, "user", "Weather in Oslo?")
    return append(
        user, conversation, "assistant", "Looking.", [call("c1", "get_weather", '{"city": "Oslo"}')]
    )


@pytest.mark.parametrize(
    "params", QUERIES, ids=lambda params: "&".join(f"{k}={v}" for k, v in params.items())
)
def test_a_304_for_each_format_and_parameter_is_one_query(
    auth_client, conversation, pending, params, assert_data_queries
):
    first = history(auth_client, conversation.pk, **params)
    etag = first["ETag"]
    assert etag.startswith('"')

    with assert_data_queries(2) as queries:  # the token's user, then the conversation's version
        again = history(auth_client, conversation.pk, **params, if_none_match=etag)

    assert again.status_code == HTTPStatus.NOT_MODIFIED
    assert (again.content, again["ETag"]) == (b"", etag)
    assert len(queries) == 2
    assert not any(Message._meta.db_table in query for query in queries)


def test_each_set_of_parameters_has_its_own_etag(auth_client, conversation, pending):
    etags = [history(auth_client, conversation.pk, **params)["ETag"] for params in QUERIES]

    assert len(set(etags)) == len(QUERIES)
    for params, etag in zip(QUERIES, etags, strict=True):
        for other in QUERIES:
            if other != params:
                response = history(auth_client, conversation.pk, **other, if_none_match=etag)
                assert response.status_code == HTTPStatus.OK, (params, other)


def test_recording_a_result_makes_every_history_etag_stale(
    auth_client, other_client, user, conversation, pending, theirs
):
    etags = [history(auth_client, conversation.pk, **params)["ETag"] for params in QUERIES]
    # Other conversations changing (mine, theirs) leave these tags fresh.
    mine = ConversationFactory.create(user=user)
    append(user, mine, "user", "Elsewhere")
    assert other_client.delete(messages_url(theirs.pk)).status_code == HTTPStatus.NO_CONTENT
    for params, etag in zip(QUERIES, etags, strict=True):
        response = history(auth_client, conversation.pk, **params, if_none_match=etag)
        assert response.status_code == HTTPStatus.NOT_MODIFIED, params

    record(user, conversation, pending, [result("c1", "4 °C")])

    for params, etag in zip(QUERIES, etags, strict=True):
        response = history(auth_client, conversation.pk, **params, if_none_match=etag)
        assert response.status_code == HTTPStatus.OK, params
        assert response["ETag"] != etag


# The async twin


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("sync_thread_connection")
async def test_ahistory_load_takes_every_parameter():
    user, other = await sync_to_async(UserFactory.create)(), await sync_to_async(UserFactory.create)()
    conversation = await services.aconversation_create(user=user, title="Async")
    await services.amessage_append(
        user=user, conversation_id=conversation.pk, role="assistant", content="Hi!"
    )
    await services.amessage_append(user=user, conversation_id=conversation.pk, role="user", content="Hello")
    await services.amessage_append(
        user=user, conversation_id=conversation.pk, role="assistant", content="Yes?"
    )

    loaded = await selectors.ahistory_load(
        user=user, conversation_id=conversation.pk, limit=3, max_tokens=100, start="user", format="anthropic"
    )
    assert loaded == [
        {"role": "user", "content": [{"type": "text", "text": "Hello"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "Yes?"}]},
    ]
    with pytest.raises(Conversation.DoesNotExist):
        await selectors.ahistory_load(user=other, conversation_id=conversation.pk, format="responses")
    await services.aconversation_delete(user=user, conversation_id=conversation.pk)
