"""Batch appends: a JSON array of 1–100 messages, in order, in one transaction, with one
Idempotency-Key for the whole array. Another user's data is present in every test and
checked untouched (``their_data``)."""

from http import HTTPStatus
from typing import Any

import pytest
from django.urls import reverse

from conversations.models import Conversation, IdempotencyKey, Message

from .factories import ConversationFactory, MessageFactory
from .test_api_conversations import MALFORMED_ID, MISSING_ID, detail_url
from .test_api_messages import message_url, messages_url
from .test_api_tool_results import (
    CALLS,
    THEIR_IDEMPOTENCY_KEY,
    call,
    post_json,
    result,
    stored,
    their_data,
)

pytestmark = pytest.mark.django_db

TURN: list[dict[str, Any]] = [
    {"role": "user", "content": "Weather and time in Oslo?"},
    {
        "role": "assistant",
        "content": None,
        "tool_calls": CALLS[:2],
        "tool_results": [result("call_b", "09:00"), result("call_a")],
    },
    {"role": "assistant", "content": "It is 9 o'clock, 18 °C and sunny."},
    {"role": "user", "content": "Thanks!"},
]


@pytest.fixture(autouse=True)
def theirs(other_user):
    yield from their_data(other_user)


@pytest.fixture
def conversation(user):
    """Ours, with two messages already."""
    conversation = ConversationFactory.create(user=user)
    MessageFactory.create(conversation=conversation, role="user", content="Hello")
    MessageFactory.create(conversation=conversation, role="assistant", content="Hi! How can I help?")
    conversation.refresh_from_db()
    return conversation


def state(conversation: Conversation) -> tuple[Any, ...]:
    """What any write to the conversation changes."""
    row = Conversation.objects.get(pk=conversation.pk)
    ids = list(Message.objects.filter(conversation=conversation).order_by("seq").values_list("pk", flat=True))
    return row.message_count, row.updated_at, row.version, ids


def numbered(n: int) -> list[dict[str, Any]]:
    return [{"role": "user" if i % 2 == 0 else "assistant", "content": f"message {i}"} for i in range(n)]


def append(client: Any, conversation: Conversation, body: Any, **headers: Any) -> Any:
    return post_json(client, messages_url(conversation.pk), body, **headers)


def listed_ids(client: Any, conversation: Conversation) -> list[str]:
    return [m["id"] for m in client.get(messages_url(conversation.pk), {"page_size": 200}).json()["results"]]


# Success


def test_a_batch_is_appended_in_order_with_consecutive_seqs(auth_client, user, conversation):
    response = append(auth_client, conversation, TURN)

    assert response.status_code == HTTPStatus.CREATED
    body = response.json()
    assert [(m["role"], m["content"]) for m in body] == [(m["role"], m["content"]) for m in TURN]
    assert {(m["conversation_id"], m["user_id"]) for m in body} == {(str(conversation.pk), str(user.pk))}
    rows = Message.objects.in_bulk([m["id"] for m in body])
    assert [rows[Message._meta.pk.to_python(m["id"])].seq for m in body] == [3, 4, 5, 6]
    assert listed_ids(auth_client, conversation)[2:] == [m["id"] for m in body]
    created = [m["created_at"] for m in body]
    assert created == sorted(created)
    conversation.refresh_from_db()
    assert conversation.message_count == 6
    assert conversation.updated_at == rows[Message._meta.pk.to_python(body[-1]["id"])].created_at


def test_a_batch_carries_tool_results_in_call_order(auth_client, conversation):
    response = append(auth_client, conversation, TURN)

    calling = response.json()[1]
    assert calling["tool_calls"] == CALLS[:2]
    assert calling["tool_results"] == [stored("call_a"), stored("call_b", "09:00")]
    assert Message.objects.get(pk=calling["id"]).tool_results == calling["tool_results"]
    assert [m["tool_results"] for m in response.json()[::2]] == [None, None]


@pytest.mark.parametrize("size", [1, 100])
def test_a_batch_of_1_to_100_messages_is_an_array(auth_client, conversation, size):
    response = append(auth_client, conversation, numbered(size))

    assert response.status_code == HTTPStatus.CREATED
    assert isinstance(response.json(), list)
    assert [m["content"] for m in response.json()] == [f"message {i}" for i in range(size)]
    assert Conversation.objects.get(pk=conversation.pk).message_count == 2 + size


def test_a_batch_is_retrievable_message_by_message(auth_client, conversation):
    for message in append(auth_client, conversation, TURN).json():
        assert auth_client.get(message_url(conversation.pk, message["id"])).json() == message


def test_the_callers_own_user_id_in_an_item_is_accepted(auth_client, user, conversation):
    body = [TURN[0] | {"user_id": str(user.pk)}, TURN[2]]
    assert append(auth_client, conversation, body).status_code == HTTPStatus.CREATED


# One transaction: an invalid item anywhere writes nothing


@pytest.mark.parametrize("position", [0, 2, 3])
def test_an_invalid_item_anywhere_writes_nothing(auth_client, conversation, position):
    body = [*TURN]
    body[position] = {"role": "user", "content": ""}
    before = state(conversation)

    response = append(auth_client, conversation, body)

    assert response.status_code == HTTPStatus.BAD_REQUEST
    errors = response.json()
    assert isinstance(errors, list)
    assert len(errors) == len(body)
    assert list(errors[position]) == ["content"]
    assert [e for i, e in enumerate(errors) if i != position] == [{}] * (len(body) - 1)
    assert state(conversation) == before


def test_each_invalid_item_has_its_own_field_errors(auth_client, conversation):
    body = [
        {"role": "tool", "content": "hi"},
        TURN[0],
        {"role": "user", "content": "hi", "tool_calls": CALLS},
        TURN[2],
        {"role": "assistant", "content": None, "tool_calls": CALLS, "tool_results": [result("call_z")]},
    ]
    before = state(conversation)

    response = append(auth_client, conversation, body)

    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert [sorted(e) for e in response.json()] == [["role"], [], ["tool_calls"], [], ["tool_results"]]
    assert state(conversation) == before


def test_results_must_name_calls_of_their_own_item(auth_client, conversation):
    """A result for a call of another message of the same batch is no answer to this one."""
    body = [
        {"role": "assistant", "content": None, "tool_calls": [call("call_1")]},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [call("call_2")],
            "tool_results": [result("call_1")],
        },
    ]
    before = state(conversation)

    response = append(auth_client, conversation, body)

    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert [sorted(e) for e in response.json()] == [[], ["tool_results"]]
    assert state(conversation) == before


@pytest.mark.parametrize("item", ["hello", 7, None, True, ["role", "user"], [TURN[0]]])
def test_an_item_that_is_not_an_object_is_a_400_in_its_place(auth_client, conversation, item):
    before = state(conversation)

    response = append(auth_client, conversation, [TURN[0], item, TURN[2]])

    assert response.status_code == HTTPStatus.BAD_REQUEST
    errors = response.json()
    assert len(errors) == 3
    assert errors[0] == errors[2] == {}
    assert errors[1]
    assert state(conversation) == before


@pytest.mark.parametrize("size", [0, 101])
def test_an_array_of_0_or_over_100_messages_is_a_400(auth_client, conversation, size):
    before = state(conversation)

    response = append(auth_client, conversation, numbered(size))

    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert state(conversation) == before


# Ownership


@pytest.mark.parametrize("position", [0, 3])
@pytest.mark.parametrize("named", ["other", "not a uuid", "missing"])
def test_a_user_id_other_than_the_callers_in_any_item_is_a_403(
    auth_client, other_user, conversation, position, named
):
    user_id = {"other": str(other_user.pk), "not a uuid": "me", "missing": MISSING_ID}[named]
    body = [*TURN]
    body[position] = body[position] | {"user_id": user_id}
    before = state(conversation)

    response = append(auth_client, conversation, body)

    assert response.status_code == HTTPStatus.FORBIDDEN
    assert "detail" in response.json()
    assert state(conversation) == before


def test_their_conversation_or_a_bad_id_is_the_same_404(auth_client, theirs):
    answers = [
        post_json(auth_client, messages_url(conversation_id), TURN)
        for conversation_id in (theirs.conversation.pk, MISSING_ID, MALFORMED_ID)
    ]

    assert {a.status_code for a in answers} == {HTTPStatus.NOT_FOUND}
    assert len({a.content for a in answers}) == 1


# Idempotency-Key


def keyed(client: Any, conversation: Conversation, body: Any, key: str = "turn-1") -> Any:
    return append(client, conversation, body, HTTP_IDEMPOTENCY_KEY=key)


def test_a_repeated_batch_replays_the_whole_array(auth_client, conversation):
    first = keyed(auth_client, conversation, TURN)
    after_first = state(conversation)

    again = keyed(auth_client, conversation, TURN)

    assert first.status_code == again.status_code == HTTPStatus.CREATED
    assert again.json() == first.json()
    assert len(again.json()) == len(TURN)
    assert again["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first
    assert state(conversation) == after_first


def test_a_key_is_the_callers_own(auth_client, conversation):
    """Their earlier append with the same key is no replay for us."""
    response = keyed(auth_client, conversation, TURN, key=THEIR_IDEMPOTENCY_KEY)

    assert response.status_code == HTTPStatus.CREATED
    assert "Idempotent-Replayed" not in response
    assert Conversation.objects.get(pk=conversation.pk).message_count == 2 + len(TURN)


def test_the_same_batch_with_another_key_is_appended_again(auth_client, conversation):
    first = keyed(auth_client, conversation, TURN, key="turn-1")
    second = keyed(auth_client, conversation, TURN, key="turn-2")

    assert second.status_code == HTTPStatus.CREATED
    assert "Idempotent-Replayed" not in second
    assert {m["id"] for m in first.json()}.isdisjoint(m["id"] for m in second.json())
    assert Conversation.objects.get(pk=conversation.pk).message_count == 2 + 2 * len(TURN)


@pytest.mark.parametrize(
    "other_body",
    [
        pytest.param(TURN[:3], id="fewer items"),
        pytest.param([*TURN[:3], {"role": "user", "content": "Thanks"}], id="one item changed"),
        pytest.param(TURN[::-1], id="another order"),
        pytest.param(TURN[0], id="its first item alone, as an object"),
        pytest.param([TURN[0]], id="its first item alone, as an array"),
    ],
)
def test_the_same_key_with_another_body_is_a_422(auth_client, conversation, other_body):
    keyed(auth_client, conversation, TURN)
    after_first = state(conversation)

    response = keyed(auth_client, conversation, other_body)

    assert response.status_code == HTTPStatus.UNPROCESSABLE_ENTITY
    assert "detail" in response.json()
    assert state(conversation) == after_first


def test_the_same_key_and_batch_in_another_conversation_is_a_422(auth_client, user, conversation):
    keyed(auth_client, conversation, TURN)
    elsewhere = ConversationFactory.create(user=user)

    assert keyed(auth_client, elsewhere, TURN).status_code == HTTPStatus.UNPROCESSABLE_ENTITY
    assert not Message.objects.filter(conversation=elsewhere).exists()


def pop_newest(client: Any, conversation: Conversation) -> None:
    newest = Message.objects.filter(conversation=conversation).order_by("-seq").first()
    assert newest is not None
    assert client.delete(message_url(conversation.pk, newest.pk)).status_code == HTTPStatus.NO_CONTENT


def clear(client: Any, conversation: Conversation) -> None:
    assert client.delete(messages_url(conversation.pk)).status_code == HTTPStatus.NO_CONTENT


@pytest.mark.parametrize("undo", [pop_newest, clear], ids=["popped", "cleared"])
@pytest.mark.parametrize("body", [TURN, TURN[0]], ids=["batch", "single"])
def test_a_key_whose_messages_were_deleted_since_is_a_409_and_creates_nothing(
    auth_client, conversation, undo, body
):
    keyed(auth_client, conversation, body)
    undo(auth_client, conversation)
    after_undo = state(conversation)

    response = keyed(auth_client, conversation, body)

    assert response.status_code == HTTPStatus.CONFLICT
    assert "detail" in response.json()
    assert state(conversation) == after_undo


def test_a_failed_batch_does_not_use_up_its_key(auth_client, conversation):
    invalid = [TURN[0], {"role": "user", "content": ""}]
    assert keyed(auth_client, conversation, invalid).status_code == HTTPStatus.BAD_REQUEST
    assert not IdempotencyKey.objects.filter(key="turn-1").exists()

    response = keyed(auth_client, conversation, TURN)

    assert response.status_code == HTTPStatus.CREATED
    assert "Idempotent-Replayed" not in response


def test_the_batch_makes_earlier_etags_stale(auth_client, conversation):
    urls = [
        detail_url(conversation.pk),
        messages_url(conversation.pk),
        reverse("conversation-history", args=[conversation.pk]),
    ]
    etags = {url: auth_client.get(url)["ETag"] for url in urls}

    append(auth_client, conversation, TURN)

    for url, etag in etags.items():
        assert auth_client.get(url, HTTP_IF_NONE_MATCH=etag).status_code == HTTPStatus.OK, url


# Cost: one transaction of a fixed number of statements, whatever the batch's size


@pytest.mark.parametrize(
    ("keyed_append", "most"),
    # The token's user; the count UPDATE (row lock, seqs, updated_at); one INSERT of all the
    # messages. With a key, also the row lock before the key's lookup, and its INSERT.
    [(False, 3), (True, 6)],
    ids=["plain", "with an Idempotency-Key"],
)
def test_a_batch_costs_the_same_queries_for_1_4_and_50_messages(
    auth_client, conversation, assert_data_queries, keyed_append, most
):
    def queries_of(size: int) -> list[str]:
        headers = {"HTTP_IDEMPOTENCY_KEY": f"key-{size}"} if keyed_append else {}
        with assert_data_queries(most) as queries:
            response = append(auth_client, conversation, numbered(size), **headers)
        assert response.status_code == HTTPStatus.CREATED
        return queries

    one, four, fifty = (queries_of(size) for size in (1, 4, 50))

    assert len(one) == len(four) == len(fifty)
    inserts = [q for q in fifty if q.lstrip().upper().startswith("INSERT")]
    assert len(inserts) == 1 + keyed_append


def test_four_single_appends_cost_four_times_the_writes_of_a_batch(
    auth_client, conversation, assert_data_queries
):
    """The batch's point, against an agent's four separate appends of one turn."""
    with assert_data_queries(3) as batch:
        append(auth_client, conversation, TURN)
    with assert_data_queries(12) as singles:
        for message in TURN:
            append(auth_client, conversation, message)

    def writes(queries: list[str]) -> int:
        return sum(q.lstrip().upper().startswith(("INSERT", "UPDATE")) for q in queries)

    assert (writes(batch), writes(singles)) == (2, 8)
