import json
from http import HTTPStatus

import pytest
from django.urls import reverse

from conversations.models import Conversation, Message

from .factories import ConversationFactory, MessageFactory
from .test_api_conversations import MALFORMED_ID, MISSING_ID, TIMESTAMP, detail_url

pytestmark = pytest.mark.django_db

TOOL_CALL = {
    "id": "call_1",
    "type": "function",
    "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'},
}


def messages_url(conversation_id, query=""):
    return reverse("conversation-message-list", args=[conversation_id]) + (f"?{query}" if query else "")


def message_url(conversation_id, message_id):
    return reverse("conversation-message-detail", args=[conversation_id, message_id])


@pytest.fixture
def conversation(user):
    return ConversationFactory.create(user=user)


@pytest.fixture
def others_message(other_user):
    return MessageFactory.create(conversation=ConversationFactory.create(user=other_user))


def test_append_returns_the_contract_shape_and_moves_the_conversation(auth_client, user, conversation):
    response = auth_client.post(messages_url(conversation.pk), {"role": "user", "content": "Hello"})

    assert response.status_code == HTTPStatus.CREATED
    body = response.json()
    assert set(body) == {
        "id",
        "conversation_id",
        "user_id",
        "role",
        "content",
        "tool_calls",
        "tool_results",
        "token_count",
        "created_at",
    }
    assert body["conversation_id"] == str(conversation.pk)
    assert body["user_id"] == str(user.pk)
    assert (body["role"], body["content"], body["tool_calls"], body["tool_results"]) == (
        "user",
        "Hello",
        None,
        None,
    )
    assert body["token_count"] == 1  # "Hello" is one token of o200k_base
    assert TIMESTAMP.match(body["created_at"])
    conversation.refresh_from_db()
    assert conversation.message_count == 1
    assert conversation.updated_at == Message.objects.get(pk=body["id"]).created_at


def test_assistant_message_with_tool_calls_and_null_content(auth_client, conversation):
    response = auth_client.post(
        messages_url(conversation.pk), {"role": "assistant", "content": None, "tool_calls": [TOOL_CALL]}
    )
    assert response.status_code == HTTPStatus.CREATED
    assert response.json()["tool_calls"] == [TOOL_CALL]
    assert response.json()["content"] is None


def test_content_is_stored_exactly_as_sent(auth_client, conversation):
    content = "  leading and trailing spaces, tabs\t and\nnewlines, é, 😀  "
    response = auth_client.post(messages_url(conversation.pk), {"role": "user", "content": content})
    assert response.json()["content"] == content
    assert Message.objects.get().content == content


@pytest.mark.parametrize("character", ["a", "😀"])
def test_content_of_10000_code_points_is_accepted_and_10001_refused(auth_client, conversation, character):
    url = messages_url(conversation.pk)
    assert (
        auth_client.post(url, {"role": "user", "content": character * 10_000}).status_code
        == HTTPStatus.CREATED
    )
    response = auth_client.post(url, {"role": "user", "content": character * 10_001})
    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert "content" in response.json()


INVALID_BODIES = {
    "role missing": ({"content": "hi"}, "role"),
    "role system": ({"role": "system", "content": "hi"}, "role"),
    "role tool": ({"role": "tool", "content": "hi"}, "role"),
    "role null": ({"role": None, "content": "hi"}, "role"),
    "role number": ({"role": 1, "content": "hi"}, "role"),
    "role unpaired surrogate": ({"role": "\udfff", "content": "hi"}, "role"),
    "user content missing": ({"role": "user"}, "content"),
    "user content null": ({"role": "user", "content": None}, "content"),
    "user content empty": ({"role": "user", "content": ""}, "content"),
    "content number": ({"role": "user", "content": 42}, "content"),
    "content list": ({"role": "user", "content": ["hi"]}, "content"),
    "content with NUL": ({"role": "user", "content": "a\x00b"}, "content"),
    "content with unpaired surrogate": ({"role": "user", "content": "a\ud800b"}, "content"),
    "assistant null content without tools": ({"role": "assistant", "content": None}, "content"),
    "tool_calls on user message": (
        {"role": "user", "content": "hi", "tool_calls": [TOOL_CALL]},
        "tool_calls",
    ),
    "tool_calls empty list": ({"role": "assistant", "content": "hi", "tool_calls": []}, "tool_calls"),
    "tool_calls object": ({"role": "assistant", "content": "hi", "tool_calls": TOOL_CALL}, "tool_calls"),
    "tool_calls string": ({"role": "assistant", "content": "hi", "tool_calls": "call"}, "tool_calls"),
    "tool call wrong type": (
        {"role": "assistant", "content": None, "tool_calls": [TOOL_CALL | {"type": "retrieval"}]},
        "tool_calls",
    ),
    "tool call without function": (
        {"role": "assistant", "content": None, "tool_calls": [{"id": "c", "type": "function"}]},
        "tool_calls",
    ),
    "tool call arguments not a string": (
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [TOOL_CALL | {"function": {"name": "f", "arguments": {"city": "Oslo"}}}],
        },
        "tool_calls",
    ),
    "tool call id a number": (
        {"role": "assistant", "content": None, "tool_calls": [TOOL_CALL | {"id": 7}]},
        "tool_calls",
    ),
    "tool call extra key": (
        {"role": "assistant", "content": None, "tool_calls": [TOOL_CALL | {"extra": 1}]},
        "tool_calls",
    ),
}


@pytest.mark.parametrize("case", INVALID_BODIES)
def test_invalid_message_is_a_400_naming_the_field(auth_client, conversation, case):
    body, field = INVALID_BODIES[case]

    # Sent as JSON text, with \u escapes for what UTF-8 cannot carry (an unpaired surrogate).
    response = auth_client.post(
        messages_url(conversation.pk), json.dumps(body), content_type="application/json"
    )

    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert field in response.json()
    assert not Message.objects.exists()


def test_a_body_that_is_not_an_object_is_a_400(auth_client, conversation):
    assert (
        auth_client.post(messages_url(conversation.pk), ["role", "user"]).status_code
        == HTTPStatus.BAD_REQUEST
    )


def test_unknown_fields_are_ignored(auth_client, conversation):
    response = auth_client.post(
        messages_url(conversation.pk),
        {"role": "user", "content": "hi", "seq": 99, "conversation_id": MISSING_ID},
    )
    assert response.status_code == HTTPStatus.CREATED
    assert response.json()["conversation_id"] == str(conversation.pk)


def test_list_is_oldest_first_and_shows_only_this_conversation(auth_client, conversation, others_message):
    sent = [MessageFactory.create(conversation=conversation, content=str(n)) for n in range(3)]
    MessageFactory.create(conversation=ConversationFactory.create(user=conversation.user))

    body = auth_client.get(messages_url(conversation.pk)).json()

    assert set(body) == {"next", "previous", "results"}
    assert [m["id"] for m in body["results"]] == [str(m.pk) for m in sent]


def test_list_newest_first_and_role_filter(auth_client, conversation):
    user_message = MessageFactory.create(conversation=conversation, role="user")
    reply = MessageFactory.create(conversation=conversation, role="assistant")

    newest_first = auth_client.get(messages_url(conversation.pk, "ordering=-created_at")).json()["results"]
    replies = auth_client.get(messages_url(conversation.pk, "role=assistant")).json()["results"]

    assert [m["id"] for m in newest_first] == [str(reply.pk), str(user_message.pk)]
    assert [m["id"] for m in replies] == [str(reply.pk)]


@pytest.mark.parametrize(
    "query",
    ["role=system", "role=", "ordering=seq", "page_size=0", "page_size=x", "created_after=soon", "cursor=x"],
)
def test_bad_message_list_parameters_are_a_400(auth_client, conversation, query):
    assert auth_client.get(messages_url(conversation.pk, query)).status_code == HTTPStatus.BAD_REQUEST


def test_message_time_filters(auth_client, conversation):
    first, second, third = (MessageFactory.create(conversation=conversation) for _ in range(3))

    def ids(query):
        return [m["id"] for m in auth_client.get(messages_url(conversation.pk, query)).json()["results"]]

    stamp = second.created_at.isoformat().replace("+", "%2B")
    assert ids(f"created_after={stamp}") == [str(third.pk)]
    assert ids(f"created_before={stamp}") == [str(first.pk)]


def test_message_page_size_defaults_to_50_and_clamps_to_200(auth_client, conversation):
    for _ in range(201):
        MessageFactory.create(conversation=conversation, content="x")
    assert len(auth_client.get(messages_url(conversation.pk)).json()["results"]) == 50
    assert len(auth_client.get(messages_url(conversation.pk, "page_size=500")).json()["results"]) == 200


def test_empty_own_conversation_lists_no_messages(auth_client, conversation):
    response = auth_client.get(messages_url(conversation.pk))
    assert response.status_code == HTTPStatus.OK
    assert response.json() == {"next": None, "previous": None, "results": []}


def test_message_detail(auth_client, conversation):
    message = MessageFactory.create(conversation=conversation)
    response = auth_client.get(message_url(conversation.pk, message.pk))
    assert response.status_code == HTTPStatus.OK
    assert response.json()["id"] == str(message.pk)


def test_other_users_messages_are_the_same_404_everywhere(auth_client, conversation, others_message):
    own = MessageFactory.create(conversation=conversation)
    theirs_conversation = others_message.conversation_id
    requests = [
        ("get", messages_url(theirs_conversation)),
        ("post", messages_url(theirs_conversation)),
        ("get", message_url(theirs_conversation, others_message.pk)),
        # Own conversation with their message id, and their conversation with own message id.
        ("get", message_url(conversation.pk, others_message.pk)),
        ("get", message_url(theirs_conversation, own.pk)),
        ("get", message_url(conversation.pk, MISSING_ID)),
        ("get", message_url(conversation.pk, MALFORMED_ID)),
        ("get", messages_url(MISSING_ID)),
        ("get", messages_url(MALFORMED_ID)),
        ("post", messages_url(MALFORMED_ID)),
        ("get", reverse("conversation-history", args=[theirs_conversation])),
        ("get", reverse("conversation-history", args=[MISSING_ID])),
        ("get", reverse("conversation-history", args=[MALFORMED_ID])),
    ]
    answers = [
        getattr(auth_client, method)(url, {"role": "user", "content": "hi"}) for method, url in requests
    ]

    assert [a.status_code for a in answers] == [HTTPStatus.NOT_FOUND] * len(requests)
    assert {a.content for a in answers} == {b'{"detail":"Not found."}'}
    assert Message.objects.filter(conversation_id=theirs_conversation).count() == 1


def test_someone_elses_user_id_in_a_message_body_is_a_403(auth_client, conversation, other_user):
    response = auth_client.post(
        messages_url(conversation.pk), {"role": "user", "content": "hi", "user_id": str(other_user.pk)}
    )
    assert response.status_code == HTTPStatus.FORBIDDEN
    assert not Message.objects.exists()


@pytest.mark.parametrize("rows", [1, 200])
def test_a_message_page_makes_the_same_queries_for_1_or_200_rows(
    auth_client, conversation, rows, assert_data_queries
):
    Message.objects.bulk_create(
        Message(conversation=conversation, user=conversation.user, seq=n, role="user", content="x")
        for n in range(1, rows + 1)
    )
    with assert_data_queries(2):
        response = auth_client.get(messages_url(conversation.pk, "page_size=200"))
    assert len(response.json()["results"]) == rows


# History


def history_url(conversation_id, query=""):
    return reverse("conversation-history", args=[conversation_id]) + (f"?{query}" if query else "")


def test_history_is_the_last_n_in_chronological_order_in_chat_format(auth_client, user, conversation):
    for n in range(5):
        MessageFactory.create(conversation=conversation, role="user", content=f"q{n}")
    MessageFactory.create(conversation=conversation, role="assistant", content=None, tool_calls=[TOOL_CALL])

    body = auth_client.get(history_url(conversation.pk, "limit=3")).json()

    window = Message.objects.order_by("-seq")[:3]
    assert body == {
        "conversation_id": str(conversation.pk),
        "format": "openai",
        "tokens": sum(message.token_count for message in window),
        # The newest message's call has no result yet: it stays, for the agent to resume.
        "messages": [
            {"role": "user", "content": "q3"},
            {"role": "user", "content": "q4"},
            {"role": "assistant", "content": None, "tool_calls": [TOOL_CALL]},
        ],
    }


def test_history_defaults_to_50_and_clamps_to_500(auth_client, conversation):
    Message.objects.bulk_create(
        Message(conversation=conversation, user=conversation.user, seq=n, role="user", content=str(n))
        for n in range(1, 602)
    )
    assert len(auth_client.get(history_url(conversation.pk)).json()["messages"]) == 50
    clamped = auth_client.get(history_url(conversation.pk, "limit=1000")).json()["messages"]
    assert len(clamped) == 500
    assert clamped[-1]["content"] == "601"


@pytest.mark.parametrize("limit", ["0", "-1", "abc", "2.5", ""])
def test_history_bad_limit_is_a_400(auth_client, conversation, limit):
    response = auth_client.get(history_url(conversation.pk, f"limit={limit}"))
    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert "limit" in response.json()


def test_history_of_an_empty_conversation(auth_client, conversation):
    assert auth_client.get(history_url(conversation.pk)).json() == {
        "conversation_id": str(conversation.pk),
        "format": "openai",
        "tokens": 0,
        "messages": [],
    }


def test_history_is_one_query_after_auth(auth_client, conversation, assert_data_queries):
    MessageFactory.create_batch(3, conversation=conversation)
    with assert_data_queries(2):
        assert auth_client.get(history_url(conversation.pk)).status_code == HTTPStatus.OK


def test_conversation_count_survives_concurrent_looking_appends(auth_client, conversation):
    for n in range(5):
        auth_client.post(messages_url(conversation.pk), {"role": "user", "content": str(n)})
    conversation.refresh_from_db()
    assert conversation.message_count == 5
    assert list(Message.objects.order_by("seq").values_list("content", flat=True)) == [
        "0",
        "1",
        "2",
        "3",
        "4",
    ]
    assert Conversation.objects.get(pk=conversation.pk).updated_at == Message.objects.get(seq=5).created_at


# Conditional requests


@pytest.mark.parametrize("kind", ["conversation", "messages", "history"])
def test_conditional_get_answers_304_until_the_conversation_changes(auth_client, conversation, kind):
    MessageFactory.create(conversation=conversation)
    url = {
        "conversation": reverse("conversation-detail", args=[conversation.pk]),
        "messages": messages_url(conversation.pk),
        "history": history_url(conversation.pk),
    }[kind]
    first = auth_client.get(url)
    etag = first["ETag"]

    unchanged = auth_client.get(url, HTTP_IF_NONE_MATCH=etag)
    assert unchanged.status_code == HTTPStatus.NOT_MODIFIED
    assert unchanged.content == b""
    assert unchanged["ETag"] == etag
    assert auth_client.get(url, HTTP_IF_NONE_MATCH=f'"other", {etag}').status_code == HTTPStatus.NOT_MODIFIED

    auth_client.post(messages_url(conversation.pk), {"role": "assistant", "content": "new"})
    changed = auth_client.get(url, HTTP_IF_NONE_MATCH=etag)
    assert changed.status_code == HTTPStatus.OK
    assert changed["ETag"] != etag
    # The tag a 304 is decided on is the tag a full answer carries.
    assert auth_client.get(url, HTTP_IF_NONE_MATCH=changed["ETag"]).status_code == HTTPStatus.NOT_MODIFIED
    assert auth_client.get(url)["ETag"] == changed["ETag"]


def test_a_rename_changes_the_conversations_etag(auth_client, conversation):
    url = reverse("conversation-detail", args=[conversation.pk])
    etag = auth_client.get(url)["ETag"]
    auth_client.patch(url, {"title": "Renamed"})
    assert auth_client.get(url, HTTP_IF_NONE_MATCH=etag).status_code == HTTPStatus.OK


def test_etags_differ_between_pages_and_parameters(auth_client, conversation):
    MessageFactory.create_batch(3, conversation=conversation)
    first = auth_client.get(messages_url(conversation.pk, "page_size=2"))
    second = auth_client.get(first.json()["next"])
    assert (
        len({first["ETag"], second["ETag"], auth_client.get(history_url(conversation.pk, "limit=2"))["ETag"]})
        == 3
    )


def test_another_users_etag_gets_a_404_not_a_304(auth_client, other_client, conversation):
    etag = auth_client.get(history_url(conversation.pk))["ETag"]
    assert (
        other_client.get(history_url(conversation.pk), HTTP_IF_NONE_MATCH=etag).status_code
        == HTTPStatus.NOT_FOUND
    )


def test_a_304_runs_no_more_queries_than_the_full_answer(auth_client, conversation, assert_data_queries):
    MessageFactory.create_batch(3, conversation=conversation)
    etag = auth_client.get(history_url(conversation.pk))["ETag"]
    with assert_data_queries(2):
        assert auth_client.get(history_url(conversation.pk), HTTP_IF_NONE_MATCH=etag).status_code == 304


def test_an_append_is_the_counting_update_then_the_insert(auth_client, conversation, assert_data_queries):
    with assert_data_queries(3) as queries:  # the token's user, then the append's two
        response = auth_client.post(messages_url(conversation.pk), {"role": "user", "content": "hi"})
    assert response.status_code == HTTPStatus.CREATED
    assert [q.split()[0].upper() for q in queries[1:]] == ["UPDATE", "INSERT"]
    # The UPDATE takes the row lock that serialises appends, and hands back the new seq.
    assert "RETURNING" in queries[1].upper()
    assert response.json()["created_at"] == auth_client.get(detail_url(conversation.pk)).json()["updated_at"]


def test_any_change_to_the_messages_makes_every_page_etag_stale(auth_client, conversation):
    """Even a page that does not show the change: an append past it, results recorded on a
    message of another page, an undo then a different append that end at the same count."""
    for n in range(3):
        auth_client.post(messages_url(conversation.pk), {"role": "user", "content": f"m{n}"})
    first_page = f"{messages_url(conversation.pk)}?page_size=1"

    def stale_after(change) -> bool:
        etag = auth_client.get(first_page)["ETag"]
        change()
        return auth_client.get(first_page, HTTP_IF_NONE_MATCH=etag).status_code == HTTPStatus.OK

    def undo():
        newest = Message.objects.filter(conversation=conversation).latest("seq")
        return auth_client.delete(message_url(conversation.pk, newest.pk))

    assert stale_after(
        lambda: auth_client.post(messages_url(conversation.pk), {"role": "user", "content": "x"})
    )
    assert stale_after(undo)
    etag = auth_client.get(first_page)["ETag"]
    assert auth_client.get(first_page, HTTP_IF_NONE_MATCH=etag).status_code == HTTPStatus.NOT_MODIFIED
