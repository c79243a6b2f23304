"""Tool results over REST: with the append, and later through …/messages/{id}/tool-results/.
Another user's data is present in every test (``their_data``) and checked untouched."""

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from http import HTTPStatus
from typing import Any

import pytest
from django.db import IntegrityError, transaction
from django.urls import reverse
from django.utils import timezone

from accounts.models import User
from conversations import services, tokens
from conversations.models import Conversation, IdempotencyKey, Message
from core import rls

from .factories import ConversationFactory, MessageFactory
from .test_api_conversations import MALFORMED_ID, MISSING_ID, detail_url
from .test_api_messages import messages_url

pytestmark = pytest.mark.django_db


def call(call_id: str, name: str = "get_weather", arguments: str = '{"city": "Oslo"}') -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def result(call_id: str, content: str = "18 °C and sunny", **extra: Any) -> dict[str, Any]:
    return {"tool_call_id": call_id, "content": content, **extra}


def stored(call_id: str, content: str = "18 °C and sunny", *, is_error: bool = False) -> dict[str, Any]:
    """A result as the service stores and answers it."""
    return {"tool_call_id": call_id, "content": content, "is_error": is_error}


CALLS = [call("call_a"), call("call_b", "get_time", '{"tz": "Europe/Oslo"}'), call("call_c", "get_news")]
CALLING = {"role": "assistant", "content": None, "tool_calls": CALLS}
THEIR_IDEMPOTENCY_KEY = "key-1"


def results_url(conversation_id: Any, message_id: Any) -> str:
    return reverse("conversation-message-tool-results", args=[conversation_id, message_id])


def history_url(conversation_id: Any) -> str:
    return reverse("conversation-history", args=[conversation_id])


def post_json(client: Any, url: str, body: Any, **headers: Any) -> Any:
    """Sent as JSON text, with \\u escapes for what UTF-8 cannot carry (an unpaired surrogate)."""
    return client.post(url, json.dumps(body), content_type="application/json", **headers)


@dataclass
class Theirs:
    user: User
    conversation: Conversation
    message: Message
    changed_on_purpose: bool = False


def snapshot(user: User) -> list[Any]:
    """Everything of ``user``'s that a write could touch."""
    conversations = Conversation.objects.filter(user=user).order_by("pk")
    messages = Message.objects.filter(user=user).order_by("pk")
    with rls.all_users(reason="the test checks another user's rows"):  # in transactional tests too
        return [
            list(conversations.values_list("pk", "version", "updated_at", "message_count")),
            list(messages.values_list("pk", "seq", "content", "tool_calls", "tool_results", "token_count")),
            list(IdempotencyKey.objects.filter(user=user).order_by("pk").values_list("key", "message_ids")),
        ]


def their_data(other_user: User) -> Iterator[Theirs]:
    """Another user's conversation with an assistant message whose calls reuse one of our
    call ids (``call_a``, answered) and add one of theirs (``call_theirs``, unanswered),
    appended with the Idempotency-Key ``THEIR_IDEMPOTENCY_KEY``; at
    the end, unless a test changed them on purpose, the check that nothing of theirs moved.
    For an autouse fixture: ``yield from their_data(other_user)``."""
    conversation = ConversationFactory.create(user=other_user)
    message, _ = services.message_append_idempotent(
        user=other_user,
        conversation_id=conversation.pk,
        role="assistant",
        content=None,
        tool_calls=[call("call_a"), call("call_theirs")],
        tool_results=[result("call_a", "theirs")],
        idempotency_key=THEIR_IDEMPOTENCY_KEY,
    )
    before = snapshot(other_user)
    data = Theirs(other_user, conversation, message)
    yield data
    if not data.changed_on_purpose:
        assert snapshot(other_user) == before


@pytest.fixture(autouse=True)
def theirs(other_user):
    yield from their_data(other_user)


@pytest.fixture
def conversation(user):
    return ConversationFactory.create(user=user)


@pytest.fixture
def calling(conversation):
    """An assistant message of ours with three calls and no results yet."""
    return MessageFactory.create(conversation=conversation, **CALLING)


def record(client: Any, message: Message, results: Any, conversation_id: Any = None) -> Any:
    return post_json(client, results_url(conversation_id or message.conversation_id, message.pk), results)


def reloaded(message: Message) -> Message:
    return Message.objects.get(pk=message.pk)


def stored_results(message_id: str) -> list[dict[str, Any]]:
    results = Message.objects.get(pk=message_id).tool_results
    assert results is not None
    return list(results)


# With the append


def test_results_come_with_the_append_in_call_order(auth_client, conversation):
    body = CALLING | {
        "tool_results": [result("call_c", "no news"), result("call_a"), result("call_b", "09:00")]
    }

    response = post_json(auth_client, messages_url(conversation.pk), body)

    assert response.status_code == HTTPStatus.CREATED
    expected = [stored("call_a"), stored("call_b", "09:00"), stored("call_c", "no news")]
    assert response.json()["tool_results"] == expected
    assert Message.objects.get(pk=response.json()["id"]).tool_results == expected


def test_results_may_be_null_on_the_append(auth_client, conversation):
    response = post_json(auth_client, messages_url(conversation.pk), CALLING | {"tool_results": None})

    assert response.status_code == HTTPStatus.CREATED
    assert response.json()["tool_results"] is None
    assert Message.objects.get(pk=response.json()["id"]).tool_results is None


def test_is_error_defaults_to_false_and_is_stored(auth_client, conversation):
    body = CALLING | {
        "tool_results": [
            result("call_a"),
            result("call_b", "timeout", is_error=True),
            result("call_c", is_error=False),
        ]
    }

    response = post_json(auth_client, messages_url(conversation.pk), body)

    assert response.status_code == HTTPStatus.CREATED
    flags = [(r["tool_call_id"], r["is_error"]) for r in stored_results(response.json()["id"])]
    assert flags == [("call_a", False), ("call_b", True), ("call_c", False)]


def test_a_result_of_65536_code_points_is_accepted(auth_client, conversation):
    content = "😀" * 65_536  # astral: one code point, two UTF-16 units, four UTF-8 bytes

    response = post_json(
        auth_client, messages_url(conversation.pk), CALLING | {"tool_results": [result("call_a", content)]}
    )

    assert response.status_code == HTTPStatus.CREATED
    assert stored_results(response.json()["id"])[0]["content"] == content


def test_the_append_counts_the_results_tokens(auth_client, conversation):
    results = [result("call_a", "It is 18 degrees in Oslo."), result("call_b", "09:00")]

    response = post_json(auth_client, messages_url(conversation.pk), CALLING | {"tool_results": results})

    assert response.json()["token_count"] == tokens.message_tokens(None, CALLS, results)
    without = post_json(auth_client, messages_url(conversation.pk), CALLING).json()["token_count"]
    assert response.json()["token_count"] - without == tokens.tool_results_tokens(results) > 0


INVALID_RESULTS_ON_APPEND = {
    "on a message without tool_calls": {
        "role": "assistant",
        "content": "Hi",
        "tool_results": [result("call_a")],
    },
    "on a user message": {"role": "user", "content": "Hi", "tool_results": [result("call_a")]},
    "unknown call id": CALLING | {"tool_results": [result("call_z")]},
    "another user's call id": CALLING | {"tool_results": [result("call_theirs")]},
    "two results for one call": CALLING | {"tool_results": [result("call_a"), result("call_a", "again")]},
    "content over 65536 code points": CALLING | {"tool_results": [result("call_a", "😀" * 65_537)]},
    "content with U+0000": CALLING | {"tool_results": [result("call_a", "a\x00b")]},
    "content with an unpaired surrogate": CALLING | {"tool_results": [result("call_a", "a\ud800b")]},
    "an extra key": CALLING | {"tool_results": [result("call_a", name="get_weather")]},
    "an empty list": CALLING | {"tool_results": []},
    "an object": CALLING | {"tool_results": result("call_a")},
    "a string": CALLING | {"tool_results": "18 °C"},
    "an item that is a string": CALLING | {"tool_results": ["18 °C"]},
    "an item that is null": CALLING | {"tool_results": [None]},
    "tool_call_id missing": CALLING | {"tool_results": [{"content": "18 °C"}]},
    "tool_call_id a number": CALLING | {"tool_results": [result(1)]},  # type: ignore[arg-type]
    "tool_call_id empty": CALLING | {"tool_results": [result("")]},
    "content missing": CALLING | {"tool_results": [{"tool_call_id": "call_a"}]},
    "content null": CALLING | {"tool_results": [result("call_a", None)]},  # type: ignore[arg-type]
    "content a number": CALLING | {"tool_results": [result("call_a", 18)]},  # type: ignore[arg-type]
    "content an object": CALLING | {"tool_results": [result("call_a", {"temp": 18})]},  # type: ignore[arg-type]
    "is_error null": CALLING | {"tool_results": [result("call_a", is_error=None)]},
    "is_error a string": CALLING | {"tool_results": [result("call_a", is_error="true")]},
    "is_error a number": CALLING | {"tool_results": [result("call_a", is_error=1)]},
}


@pytest.mark.parametrize("case", INVALID_RESULTS_ON_APPEND)
def test_invalid_results_on_the_append_are_a_400_naming_tool_results(auth_client, conversation, case):
    response = post_json(auth_client, messages_url(conversation.pk), INVALID_RESULTS_ON_APPEND[case])

    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert list(response.json()) == ["tool_results"]
    assert not Message.objects.filter(conversation=conversation).exists()
    conversation.refresh_from_db()
    assert conversation.message_count == 0


# Later, through …/messages/{id}/tool-results/


def test_recording_answers_the_message_with_results_in_call_order(auth_client, user, conversation, calling):
    response = record(auth_client, calling, {"tool_results": [result("call_c", "no news"), result("call_a")]})

    assert response.status_code == HTTPStatus.OK
    body = response.json()
    assert (body["id"], body["conversation_id"], body["user_id"]) == (
        str(calling.pk),
        str(conversation.pk),
        str(user.pk),
    )
    assert body["tool_calls"] == CALLS
    assert body["tool_results"] == [stored("call_a"), stored("call_c", "no news")]
    assert reloaded(calling).tool_results == body["tool_results"]
    assert body["token_count"] == reloaded(calling).token_count


def test_some_results_then_the_rest(auth_client, calling):
    first = record(auth_client, calling, {"tool_results": [result("call_b", "09:00", is_error=True)]})
    rest = record(auth_client, calling, {"tool_results": [result("call_c", "no news"), result("call_a")]})

    assert first.status_code == rest.status_code == HTTPStatus.OK
    assert first.json()["tool_results"] == [stored("call_b", "09:00", is_error=True)]
    expected = [stored("call_a"), stored("call_b", "09:00", is_error=True), stored("call_c", "no news")]
    assert rest.json()["tool_results"] == reloaded(calling).tool_results == expected


def test_results_recorded_with_the_append_can_be_completed_later(auth_client, conversation):
    appended = post_json(
        auth_client, messages_url(conversation.pk), CALLING | {"tool_results": [result("call_b", "09:00")]}
    ).json()

    response = post_json(
        auth_client, results_url(conversation.pk, appended["id"]), {"tool_results": [result("call_a")]}
    )

    assert response.status_code == HTTPStatus.OK
    assert response.json()["tool_results"] == [stored("call_a"), stored("call_b", "09:00")]


def test_a_second_result_for_an_answered_call_is_a_409_and_the_first_stays(auth_client, calling):
    record(auth_client, calling, {"tool_results": [result("call_a", "first")]})
    before = reloaded(calling)

    response = record(auth_client, calling, {"tool_results": [result("call_a", "second")]})

    assert response.status_code == HTTPStatus.CONFLICT
    assert "detail" in response.json()
    after = reloaded(calling)
    assert after.tool_results == [stored("call_a", "first")]
    assert after.token_count == before.token_count


@pytest.mark.parametrize("order", ["new first", "answered first"])
def test_a_new_result_with_an_answered_one_is_a_409_and_records_neither(
    auth_client, conversation, calling, order
):
    record(auth_client, calling, {"tool_results": [result("call_a", "first")]})
    conversation.refresh_from_db()
    both = [result("call_b", "09:00"), result("call_a", "second")]

    response = record(auth_client, calling, {"tool_results": both if order == "new first" else both[::-1]})

    assert response.status_code == HTTPStatus.CONFLICT
    assert "detail" in response.json()
    assert reloaded(calling).tool_results == [stored("call_a", "first")]
    assert Conversation.objects.get(pk=conversation.pk).updated_at == conversation.updated_at


def test_recording_on_a_message_without_calls_is_a_400_naming_tool_results(auth_client, conversation):
    for message in (
        MessageFactory.create(conversation=conversation, role="user", content="Weather?"),
        MessageFactory.create(conversation=conversation, role="assistant", content="Sunny."),
    ):
        response = record(auth_client, message, {"tool_results": [result("call_a")]})

        assert response.status_code == HTTPStatus.BAD_REQUEST
        assert list(response.json()) == ["tool_results"]
        assert reloaded(message).tool_results is None


INVALID_RECORD_BODIES = {
    "unknown call id": {"tool_results": [result("call_z")]},
    "another user's call id": {"tool_results": [result("call_theirs")]},
    "two results for one call": {"tool_results": [result("call_a"), result("call_a", "again")]},
    "a valid one and an unknown one": {"tool_results": [result("call_a"), result("call_z")]},
    "content over 65536 code points": {"tool_results": [result("call_a", "x" * 65_537)]},
    "content with U+0000": {"tool_results": [result("call_a", "\x00")]},
    "content with an unpaired surrogate": {"tool_results": [result("call_a", "\udc00")]},
    "an extra key": {"tool_results": [result("call_a", status="ok")]},
    "is_error a string": {"tool_results": [result("call_a", is_error="yes")]},
    "missing": {},
    "null": {"tool_results": None},
    "an empty list": {"tool_results": []},
    "an object": {"tool_results": result("call_a")},
}


@pytest.mark.parametrize("case", INVALID_RECORD_BODIES)
def test_invalid_results_recorded_later_are_a_400_naming_tool_results(auth_client, calling, case):
    response = record(auth_client, calling, INVALID_RECORD_BODIES[case])

    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert list(response.json()) == ["tool_results"]
    assert reloaded(calling).tool_results is None


def test_other_users_ids_and_bad_ids_are_the_same_404(auth_client, user, conversation, calling, theirs):
    mine_elsewhere = MessageFactory.create(conversation=ConversationFactory.create(user=user), **CALLING)
    body = {"tool_results": [result("call_a"), result("call_theirs")]}
    cases = {
        "their message under my conversation": (conversation.pk, theirs.message.pk),
        "their message under their conversation": (theirs.conversation.pk, theirs.message.pk),
        "my message under their conversation": (theirs.conversation.pk, calling.pk),
        "my message of another conversation": (conversation.pk, mine_elsewhere.pk),
        "a missing message": (conversation.pk, MISSING_ID),
        "a malformed message id": (conversation.pk, MALFORMED_ID),
        "a missing conversation": (MISSING_ID, calling.pk),
        "a malformed conversation id": (MALFORMED_ID, calling.pk),
    }

    answers = {case: post_json(auth_client, results_url(*ids), body) for case, ids in cases.items()}

    assert {case: a.status_code for case, a in answers.items()} == dict.fromkeys(cases, HTTPStatus.NOT_FOUND)
    assert len({a.content for a in answers.values()}) == 1
    assert reloaded(calling).tool_results is None
    assert reloaded(mine_elsewhere).tool_results is None


def test_their_own_calls_stay_theirs(other_client, auth_client, theirs):
    """The owner records a result of their call; the same request from us is a 404."""
    body = {"tool_results": [result("call_theirs")]}
    assert record(auth_client, theirs.message, body).status_code == HTTPStatus.NOT_FOUND

    response = record(other_client, theirs.message, body)

    assert response.status_code == HTTPStatus.OK
    assert response.json()["tool_results"] == [stored("call_a", "theirs"), stored("call_theirs")]
    theirs.changed_on_purpose = True


def test_recording_grows_token_count_by_exactly_the_new_results_tokens(auth_client, calling):
    first = [result("call_b", "It is nine in the morning in Oslo.")]
    rest = [result("call_a", "18 °C, light wind from the west"), result("call_c", "Nothing new today.")]
    start = reloaded(calling).token_count

    after_first = record(auth_client, calling, {"tool_results": first}).json()["token_count"]
    after_rest = record(auth_client, calling, {"tool_results": rest}).json()["token_count"]

    assert after_first - start == tokens.tool_results_tokens(first) > 0
    assert after_rest - after_first == tokens.tool_results_tokens(rest) > 0
    # The same as if every result had come with the append.
    assert after_rest == reloaded(calling).token_count == tokens.message_tokens(None, CALLS, first + rest)


def test_recording_moves_updated_at(auth_client, conversation, calling):
    an_hour_ago = timezone.now() - timedelta(hours=1)
    Conversation.objects.filter(pk=conversation.pk).update(updated_at=an_hour_ago)
    started = timezone.now()

    record(auth_client, calling, {"tool_results": [result("call_a")]})

    conversation.refresh_from_db()
    assert conversation.updated_at >= started
    listed = auth_client.get(reverse("conversation-list")).json()["results"]
    assert listed[0]["id"] == str(conversation.pk)


def test_recording_makes_earlier_etags_stale(auth_client, conversation, calling):
    urls = [detail_url(conversation.pk), messages_url(conversation.pk), history_url(conversation.pk)]
    etags = {url: auth_client.get(url)["ETag"] for url in urls}
    for url, etag in etags.items():
        assert auth_client.get(url, HTTP_IF_NONE_MATCH=etag).status_code == HTTPStatus.NOT_MODIFIED, url

    record(auth_client, calling, {"tool_results": [result("call_a")]})

    for url, etag in etags.items():
        response = auth_client.get(url, HTTP_IF_NONE_MATCH=etag)
        assert response.status_code == HTTPStatus.OK, url
        assert response["ETag"] != etag, url


def test_a_refused_recording_leaves_etags_current(auth_client, conversation, calling):
    record(auth_client, calling, {"tool_results": [result("call_a")]})
    urls = [detail_url(conversation.pk), messages_url(conversation.pk), history_url(conversation.pk)]
    etags = {url: auth_client.get(url)["ETag"] for url in urls}

    assert (
        record(auth_client, calling, {"tool_results": [result("call_a")]}).status_code == HTTPStatus.CONFLICT
    )
    assert (
        record(auth_client, calling, {"tool_results": [result("call_z")]}).status_code
        == HTTPStatus.BAD_REQUEST
    )

    for url, etag in etags.items():
        assert auth_client.get(url, HTTP_IF_NONE_MATCH=etag).status_code == HTTPStatus.NOT_MODIFIED, url


# The database's own checks, the last line under every code path


def test_the_database_refuses_results_without_calls(user, conversation):
    row = Message(
        conversation=conversation,
        user=user,
        seq=1,
        role="assistant",
        content="Sunny.",
        tool_results=[stored("call_a")],
    )
    with pytest.raises(IntegrityError), transaction.atomic():
        row.save(force_insert=True)


def test_the_database_refuses_calls_on_a_user_message(user, conversation):
    row = Message(conversation=conversation, user=user, seq=1, role="user", content="Hi", tool_calls=CALLS)
    with pytest.raises(IntegrityError), transaction.atomic():
        row.save(force_insert=True)


def test_the_database_takes_results_with_their_calls(user, conversation):
    """The control of the two above: the same row with calls is stored."""
    Message(
        conversation=conversation,
        user=user,
        seq=1,
        role="assistant",
        tool_calls=CALLS,
        tool_results=[stored("call_a")],
    ).save(force_insert=True)
    assert Message.objects.filter(conversation=conversation).count() == 1
