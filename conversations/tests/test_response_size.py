"""API_MAX_RESPONSE_BYTES: a list page ends early with a ``next`` that goes on from where it
stopped, a history window drops its oldest messages; and one message's ``tool_calls`` are
bounded on append, so no single row makes an answer large."""

import json
from http import HTTPStatus

import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from conversations import sizes
from conversations.models import Conversation, Message
from conversations.serializers import TOOL_CALLS_MAX_BYTES

from .factories import ConversationFactory, MessageFactory
from .test_api_conversations import list_url
from .test_api_messages import history_url, messages_url

pytestmark = pytest.mark.django_db

LIMIT = 20_000  # bytes of one answer in these tests
CONTENT = 3_000  # code points of each message: a handful fit in one answer


@pytest.fixture(autouse=True)
def _small_answers(settings):
    settings.API_MAX_RESPONSE_BYTES = LIMIT


def fill(conversation, count, size=CONTENT):
    """``count`` messages of ``size`` code points each (non-ASCII: 2 bytes each in UTF-8),
    every other one an assistant message with a tool call."""
    for n in range(count):
        calls = [{"id": f"c{n}", "type": "function", "function": {"name": "f", "arguments": "{}"}}]
        MessageFactory.create(
            conversation=conversation,
            role="assistant" if n % 2 else "user",
            content=f"{n}:" + "é" * size,
            tool_calls=calls if n % 2 else None,
        )


def walk(client, url, link="next"):
    """Every page of a walk with ``link``: each answer within the limit."""
    pages = []
    while url:
        response = client.get(url)
        assert response.status_code == HTTPStatus.OK
        assert len(response.content) <= LIMIT
        body = response.json()
        pages.append(body["results"])
        url = body[link]
    return pages


@pytest.fixture
def others_messages(other_user):
    conversation = ConversationFactory.create(user=other_user)
    fill(conversation, 6)
    return conversation


@pytest.mark.parametrize("ordering", ["created_at", "-created_at"])
def test_message_pages_end_early_and_a_walk_with_next_returns_every_message_once(
    auth_client, user, others_messages, ordering
):
    conversation = ConversationFactory.create(user=user)
    fill(conversation, 25)
    expected = [f"{n}:" for n in range(25)]
    if ordering == "-created_at":
        expected.reverse()

    pages = walk(auth_client, messages_url(conversation.pk, f"page_size=200&ordering={ordering}"))

    assert len(pages) > 3  # ended early, many times
    assert all(pages)
    seen = [m["content"].split(":")[0] + ":" for page in pages for m in page]
    assert seen == expected
    assert {m["conversation_id"] for page in pages for m in page} == {str(conversation.pk)}


def test_a_walk_back_with_previous_returns_every_message_once(auth_client, user, others_messages):
    conversation = ConversationFactory.create(user=user)
    fill(conversation, 25)
    forward = walk(auth_client, messages_url(conversation.pk, "page_size=200"))
    last_page = auth_client.get(messages_url(conversation.pk, "page_size=200")).json()
    while last_page["next"]:
        last_page = auth_client.get(last_page["next"]).json()

    backward = walk(auth_client, last_page["previous"], link="previous")

    seen = [m["id"] for page in reversed(backward) for m in page] + [m["id"] for m in last_page["results"]]
    assert seen == [m["id"] for page in forward for m in page]


def test_a_message_alone_over_the_limit_is_a_page_of_its_own_and_the_walk_goes_on(
    auth_client, user, settings
):
    conversation = ConversationFactory.create(user=user)
    fill(conversation, 4, size=1_000)
    settings.API_MAX_RESPONSE_BYTES = 1_000

    pages = walk_unbounded(auth_client, messages_url(conversation.pk))

    assert [len(page) for page in pages] == [1, 1, 1, 1]


def walk_unbounded(client, url):
    pages = []
    while url:
        body = client.get(url).json()
        pages.append(body["results"])
        url = body["next"]
    return pages


def test_conversation_pages_end_early_and_a_walk_returns_every_conversation_once(
    auth_client, user, other_user
):
    Conversation.objects.bulk_create(Conversation(user=user, title="é" * 200) for _ in range(60))
    ConversationFactory.create_batch(5, user=other_user)
    ids = set(Conversation.objects.filter(user=user).values_list("id", flat=True))

    pages = walk(auth_client, list_url(page_size=100))

    assert len(pages) > 1
    seen = [c["id"] for page in pages for c in page]
    assert len(seen) == len(set(seen)) == 60
    assert set(seen) == {str(i) for i in ids}


def test_history_drops_its_oldest_messages_to_fit(auth_client, user, others_messages):
    conversation = ConversationFactory.create(user=user)
    fill(conversation, 25)

    response = auth_client.get(history_url(conversation.pk, "limit=500"))

    assert response.status_code == HTTPStatus.OK
    assert len(response.content) <= LIMIT
    kept = [m["content"].split(":")[0] for m in response.json()["messages"]]
    assert 1 < len(kept) < 25
    assert kept == [str(n) for n in range(25 - len(kept), 25)]  # the newest, oldest first
    # A window that fits is the newest `limit` messages, as before.
    small = auth_client.get(history_url(conversation.pk, "limit=2")).json()["messages"]
    assert [m["content"].split(":")[0] for m in small] == ["23", "24"]


def test_with_the_default_limit_nothing_is_cut(auth_client, user, settings):
    settings.API_MAX_RESPONSE_BYTES = 8 * 1024 * 1024
    conversation = ConversationFactory.create(user=user)
    fill(conversation, 25)

    assert len(auth_client.get(messages_url(conversation.pk)).json()["results"]) == 25
    assert len(auth_client.get(history_url(conversation.pk)).json()["messages"]) == 25


def tool_calls_of(total_bytes):
    """Tool calls whose compact JSON takes about ``total_bytes``, in calls of 60,000 bytes."""
    calls, left, n = [], total_bytes, 0
    while left > 0:
        arguments = "a" * min(60_000, left)
        calls.append(
            {"id": f"call_{n}", "type": "function", "function": {"name": "f", "arguments": arguments}}
        )
        left -= len(arguments)
        n += 1
    return calls


def compact_size(value):
    return len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode())


def test_tool_calls_over_their_byte_bound_are_a_400_naming_them(auth_client, user):
    conversation = ConversationFactory.create(user=user)
    calls = tool_calls_of(TOOL_CALLS_MAX_BYTES)
    while compact_size(calls) > TOOL_CALLS_MAX_BYTES:
        calls[-1]["function"]["arguments"] = calls[-1]["function"]["arguments"][:-1]
    at_bound = {"role": "assistant", "content": None, "tool_calls": calls}
    over = json.loads(json.dumps(at_bound))
    over["tool_calls"][-1]["function"]["arguments"] += "a"

    refused = auth_client.post(messages_url(conversation.pk), over, format="json")
    accepted = auth_client.post(messages_url(conversation.pk), at_bound, format="json")

    assert refused.status_code == HTTPStatus.BAD_REQUEST
    assert list(refused.json()) == ["tool_calls"]
    assert accepted.status_code == HTTPStatus.CREATED
    assert Message.objects.filter(conversation=conversation).count() == 1


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)


@hypothesis_settings(max_examples=300, deadline=None)
@given(item=st.dictionaries(st.text(min_size=1, max_size=20), JSON_VALUES, min_size=1, max_size=8))
def test_the_cheap_size_bound_is_never_below_the_rendered_size(item):
    assert sizes.rendered_size(item) <= sizes.size_bound(item)


def test_an_indent_asked_for_is_not_taken(auth_client, user):
    """The limit counts compact JSON; DRF would otherwise indent on request and grow the answer."""
    conversation = ConversationFactory.create(user=user)
    fill(conversation, 3)

    compact = auth_client.get(messages_url(conversation.pk))
    asked = auth_client.get(messages_url(conversation.pk), HTTP_ACCEPT="application/json; indent=8")

    assert asked.status_code == HTTPStatus.OK
    assert asked.content == compact.content
