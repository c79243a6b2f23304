"""Undo and clear (the contract's Messages table): DELETE of the conversation's newest message,
DELETE of its message list; and what they do to conditional requests and idempotency keys.

Another user's conversation and messages are present in every test: their ids are the same
404 as a missing or malformed one, and nothing of theirs changes.
"""

from http import HTTPStatus
from typing import Any

import pytest
from asgiref.sync import sync_to_async

from conversations import selectors, services
from conversations.models import Conversation, Message

from .factories import ConversationFactory, MessageFactory, UserFactory
from .test_agent_api import sync_thread_connection  # noqa: F401 (a fixture)
from .test_api_conversations import MALFORMED_ID, MISSING_ID, detail_url
from .test_api_messages import history_url, message_url, messages_url

pytestmark = pytest.mark.django_db

NOT_FOUND = b'{"detail":"Not found."}'


@pytest.fixture
def conversation(user):
    return ConversationFactory.create(user=user, title="Trip to Lisbon")


@pytest.fixture
def theirs(other_user):
    """Another user's conversation, with more messages than the caller's: its seqs include
    those of the caller's newest messages."""
    conversation = ConversationFactory.create(user=other_user)
    MessageFactory.create_batch(5, conversation=conversation)
    return conversation


def append(client, conversation_id, content: str, role: str = "user", **headers: str) -> dict[str, Any]:
    response = client.post(
        messages_url(conversation_id), {"role": role, "content": content}, format="json", headers=headers
    )
    assert response.status_code == HTTPStatus.CREATED, response.content
    return response.json()


def listed(client, conversation_id) -> list[tuple[str, str]]:
    """The message list as the client sees it: (id, content), in order."""
    response = client.get(messages_url(conversation_id))
    assert response.status_code == HTTPStatus.OK
    return [(message["id"], message["content"]) for message in response.json()["results"]]


def stored(conversation: Conversation) -> tuple[Any, ...]:
    """Everything of a conversation in the database: its row and its messages' rows."""
    row = Conversation.objects.values().get(pk=conversation.pk)
    messages = list(Message.objects.filter(conversation=conversation).order_by("seq").values())
    return row, messages


def seqs(conversation: Conversation) -> list[tuple[int, str | None]]:
    rows = Message.objects.filter(conversation=conversation).order_by("seq")
    return list(rows.values_list("seq", "content"))


# Undo: DELETE …/messages/{id}/ of the newest message


def test_deleting_the_newest_message_is_a_204_and_takes_it_away(auth_client, conversation, theirs):
    first, second, newest = (append(auth_client, conversation.pk, text) for text in ("one", "two", "three"))
    before = stored(theirs)

    response = auth_client.delete(message_url(conversation.pk, newest["id"]))

    assert response.status_code == HTTPStatus.NO_CONTENT
    assert response.content == b""
    detail = auth_client.get(detail_url(conversation.pk)).json()
    assert (detail["id"], detail["title"], detail["message_count"]) == (
        str(conversation.pk),
        "Trip to Lisbon",
        2,
    )
    assert auth_client.get(message_url(conversation.pk, newest["id"])).status_code == HTTPStatus.NOT_FOUND
    assert listed(auth_client, conversation.pk) == [(first["id"], "one"), (second["id"], "two")]
    assert not Message.objects.filter(pk=newest["id"]).exists()
    assert stored(theirs) == before


def test_an_append_after_an_undo_takes_the_undone_messages_place(auth_client, conversation, theirs):
    first = append(auth_client, conversation.pk, "one")
    undone = append(auth_client, conversation.pk, "two")
    assert auth_client.delete(message_url(conversation.pk, undone["id"])).status_code == HTTPStatus.NO_CONTENT

    again = append(auth_client, conversation.pk, "two, reworded", role="assistant")

    assert again["id"] != undone["id"]
    assert seqs(conversation) == [(1, "one"), (2, "two, reworded")]
    assert listed(auth_client, conversation.pk) == [(first["id"], "one"), (again["id"], "two, reworded")]
    assert again["created_at"] >= first["created_at"]
    assert auth_client.get(detail_url(conversation.pk)).json()["message_count"] == 2
    assert auth_client.get(history_url(conversation.pk)).json()["messages"] == [
        {"role": "user", "content": "one"},
        {"role": "assistant", "content": "two, reworded"},
    ]
    # The message list's newest-first order agrees.
    newest_first = auth_client.get(messages_url(conversation.pk, "ordering=-created_at")).json()["results"]
    assert [message["id"] for message in newest_first] == [again["id"], first["id"]]


def test_undo_goes_back_turn_after_turn_and_appends_go_on_from_there(auth_client, conversation, theirs):
    messages = [append(auth_client, conversation.pk, str(n)) for n in range(4)]
    for message in reversed(messages[1:]):
        response = auth_client.delete(message_url(conversation.pk, message["id"]))
        assert response.status_code == HTTPStatus.NO_CONTENT

    assert listed(auth_client, conversation.pk) == [(messages[0]["id"], "0")]
    append(auth_client, conversation.pk, "a")
    append(auth_client, conversation.pk, "b")
    assert seqs(conversation) == [(1, "0"), (2, "a"), (3, "b")]
    assert auth_client.get(detail_url(conversation.pk)).json()["message_count"] == 3
    assert Conversation.objects.get(pk=theirs.pk).message_count == 5


def test_undoing_the_only_message_leaves_an_empty_conversation(auth_client, conversation, theirs):
    only = append(auth_client, conversation.pk, "one")
    assert auth_client.delete(message_url(conversation.pk, only["id"])).status_code == HTTPStatus.NO_CONTENT

    assert listed(auth_client, conversation.pk) == []
    assert auth_client.get(detail_url(conversation.pk)).json()["message_count"] == 0
    assert auth_client.get(history_url(conversation.pk)).json()["messages"] == []
    assert seqs(conversation) == []
    append(auth_client, conversation.pk, "fresh start")
    assert seqs(conversation) == [(1, "fresh start")]


def test_deleting_an_older_message_is_a_409_and_deletes_nothing(auth_client, conversation, theirs):
    messages = [append(auth_client, conversation.pk, str(n)) for n in range(3)]
    before = stored(conversation), stored(theirs)
    etag = auth_client.get(detail_url(conversation.pk))["ETag"]

    for older in messages[:-1]:
        response = auth_client.delete(message_url(conversation.pk, older["id"]))
        assert response.status_code == HTTPStatus.CONFLICT
        body = response.json()
        assert set(body) == {"detail"}
        assert isinstance(body["detail"], str)
        assert body["detail"]

    assert (stored(conversation), stored(theirs)) == before
    # A refused undo changes nothing, so no ETag either.
    response = auth_client.get(detail_url(conversation.pk), HTTP_IF_NONE_MATCH=etag)
    assert response.status_code == HTTPStatus.NOT_MODIFIED
    # The newest can still go.
    assert (
        auth_client.delete(message_url(conversation.pk, messages[-1]["id"])).status_code
        == HTTPStatus.NO_CONTENT
    )


def test_a_message_that_is_not_the_callers_or_not_there_cannot_be_deleted(
    auth_client, other_client, user, conversation, theirs
):
    mine = append(auth_client, conversation.pk, "mine")
    my_other = ConversationFactory.create(user=user)
    my_others_newest = MessageFactory.create(conversation=my_other)
    their_newest = Message.objects.filter(conversation=theirs).order_by("-seq").first()
    assert their_newest is not None
    before = stored(conversation), stored(my_other), stored(theirs)

    requests = [
        # Their newest message: through my conversation, and through theirs.
        (auth_client, message_url(conversation.pk, their_newest.pk)),
        (auth_client, message_url(theirs.pk, their_newest.pk)),
        # My newest message through their conversation, and through my other conversation.
        (auth_client, message_url(theirs.pk, mine["id"])),
        (auth_client, message_url(my_other.pk, mine["id"])),
        # My other conversation's newest through this one.
        (auth_client, message_url(conversation.pk, my_others_newest.pk)),
        (auth_client, message_url(conversation.pk, MISSING_ID)),
        (auth_client, message_url(conversation.pk, MALFORMED_ID)),
        (auth_client, message_url(MISSING_ID, mine["id"])),
        (auth_client, message_url(MALFORMED_ID, mine["id"])),
        # The other user, at my newest message.
        (other_client, message_url(conversation.pk, mine["id"])),
        (other_client, message_url(theirs.pk, mine["id"])),
    ]
    answers = [client.delete(url) for client, url in requests]

    assert [answer.status_code for answer in answers] == [HTTPStatus.NOT_FOUND] * len(requests)
    assert {answer.content for answer in answers} == {NOT_FOUND}
    assert (stored(conversation), stored(my_other), stored(theirs)) == before


# Clear: DELETE …/messages/


def test_clearing_keeps_the_conversation_and_empties_it(auth_client, user, conversation, theirs):
    old = [append(auth_client, conversation.pk, str(n)) for n in range(3)]
    my_other = ConversationFactory.create(user=user)
    MessageFactory.create(conversation=my_other)
    created_at = auth_client.get(detail_url(conversation.pk)).json()["created_at"]
    untouched = stored(my_other), stored(theirs)

    response = auth_client.delete(messages_url(conversation.pk))

    assert response.status_code == HTTPStatus.NO_CONTENT
    assert response.content == b""
    detail = auth_client.get(detail_url(conversation.pk)).json()
    assert (detail["id"], detail["title"], detail["created_at"], detail["message_count"]) == (
        str(conversation.pk),
        "Trip to Lisbon",
        created_at,
        0,
    )
    assert listed(auth_client, conversation.pk) == []
    assert auth_client.get(history_url(conversation.pk)).json()["messages"] == []
    assert not Message.objects.filter(conversation=conversation).exists()
    for message in old:
        url = message_url(conversation.pk, message["id"])
        assert auth_client.get(url).status_code == HTTPStatus.NOT_FOUND
        assert auth_client.delete(url).status_code == HTTPStatus.NOT_FOUND
    assert (stored(my_other), stored(theirs)) == untouched

    # Appends go on, numbered from the start again.
    fresh = append(auth_client, conversation.pk, "fresh start")
    append(auth_client, conversation.pk, "and more", role="assistant")
    assert seqs(conversation) == [(1, "fresh start"), (2, "and more")]
    assert auth_client.get(detail_url(conversation.pk)).json()["message_count"] == 2
    assert listed(auth_client, conversation.pk)[0] == (fresh["id"], "fresh start")


def test_clearing_an_empty_conversation_is_a_204(auth_client, conversation, theirs):
    before = stored(theirs)
    assert auth_client.delete(messages_url(conversation.pk)).status_code == HTTPStatus.NO_CONTENT
    assert auth_client.get(detail_url(conversation.pk)).json()["message_count"] == 0
    assert stored(theirs) == before


def test_clearing_a_conversation_that_is_not_the_callers_is_a_404_and_deletes_nothing(
    auth_client, other_client, conversation, theirs
):
    append(auth_client, conversation.pk, "mine")
    before = stored(conversation), stored(theirs)

    answers = [
        auth_client.delete(messages_url(theirs.pk)),
        auth_client.delete(messages_url(MISSING_ID)),
        auth_client.delete(messages_url(MALFORMED_ID)),
        other_client.delete(messages_url(conversation.pk)),
    ]

    assert [answer.status_code for answer in answers] == [HTTPStatus.NOT_FOUND] * len(answers)
    assert {answer.content for answer in answers} == {NOT_FOUND}
    assert (stored(conversation), stored(theirs)) == before


# Conditional requests stay exact: a pop or a clear, then other messages back to the same count.


def etag_urls(conversation_id) -> dict[str, str]:
    return {
        "conversation": detail_url(conversation_id),
        "messages": messages_url(conversation_id),
        "history": history_url(conversation_id),
    }


def undo_then_reappend(client, conversation_id, messages, content: str) -> None:
    response = client.delete(message_url(conversation_id, messages[-1]["id"]))
    assert response.status_code == HTTPStatus.NO_CONTENT
    append(client, conversation_id, content)


def clear_then_reappend(client, conversation_id, messages, content: str) -> None:
    assert client.delete(messages_url(conversation_id)).status_code == HTTPStatus.NO_CONTENT
    append(client, conversation_id, messages[0]["content"])
    append(client, conversation_id, content)


# A different message after the change: every view shows something else. The same content
# again: the conversation (its updated_at) and the message list (the new message's id and
# created_at) still show something else; the history may read the same, so it is left out.
STALE_CASES = [
    *((kind, "something else") for kind in ("conversation", "messages", "history")),
    *((kind, "two") for kind in ("conversation", "messages")),
]


@pytest.mark.parametrize(("kind", "content"), STALE_CASES)
@pytest.mark.parametrize("change", [undo_then_reappend, clear_then_reappend], ids=["undo", "clear"])
def test_an_etag_from_before_an_undo_or_a_clear_is_stale_at_the_same_count(
    auth_client, conversation, theirs, kind, change, content
):
    messages = [append(auth_client, conversation.pk, text) for text in ("one", "two")]
    url = etag_urls(conversation.pk)[kind]
    etag = auth_client.get(url)["ETag"]
    assert auth_client.get(url, HTTP_IF_NONE_MATCH=etag).status_code == HTTPStatus.NOT_MODIFIED

    change(auth_client, conversation.pk, messages, content)

    assert auth_client.get(detail_url(conversation.pk)).json()["message_count"] == 2
    response = auth_client.get(url, HTTP_IF_NONE_MATCH=etag)
    assert response.status_code == HTTPStatus.OK
    assert response["ETag"] != etag
    # The new tag is exact in turn.
    assert auth_client.get(url, HTTP_IF_NONE_MATCH=response["ETag"]).status_code == HTTPStatus.NOT_MODIFIED


@pytest.mark.parametrize("kind", ["conversation", "messages", "history"])
@pytest.mark.parametrize("clearing", [False, True], ids=["undo", "clear"])
def test_an_etag_from_before_an_undo_or_a_clear_is_stale(auth_client, conversation, theirs, kind, clearing):
    messages = [append(auth_client, conversation.pk, text) for text in ("one", "two")]
    url = etag_urls(conversation.pk)[kind]
    etag = auth_client.get(url)["ETag"]

    if clearing:
        response = auth_client.delete(messages_url(conversation.pk))
    else:
        response = auth_client.delete(message_url(conversation.pk, messages[-1]["id"]))
    assert response.status_code == HTTPStatus.NO_CONTENT

    assert auth_client.get(url, HTTP_IF_NONE_MATCH=etag).status_code == HTTPStatus.OK


def test_a_conversations_etag_is_stale_after_an_append_and_its_undo(auth_client, conversation, theirs):
    url = detail_url(conversation.pk)
    etag = auth_client.get(url)["ETag"]
    message = append(auth_client, conversation.pk, "one")
    auth_client.delete(message_url(conversation.pk, message["id"]))

    # Back to no messages, but its updated_at has moved.
    response = auth_client.get(url, HTTP_IF_NONE_MATCH=etag)

    assert response.status_code == HTTPStatus.OK
    assert response.json()["message_count"] == 0


def test_a_rename_and_a_rename_back_make_the_conversations_etag_stale(auth_client, conversation, theirs):
    url = detail_url(conversation.pk)
    etag = auth_client.get(url)["ETag"]
    assert auth_client.patch(url, {"title": "Renamed"}, format="json").status_code == HTTPStatus.OK
    assert auth_client.patch(url, {"title": "Trip to Lisbon"}, format="json").status_code == HTTPStatus.OK

    response = auth_client.get(url, HTTP_IF_NONE_MATCH=etag)

    assert response.status_code == HTTPStatus.OK
    assert response.json()["title"] == "Trip to Lisbon"
    assert response["ETag"] != etag


def test_another_users_undo_and_clear_leave_my_etags_fresh(auth_client, other_client, conversation, theirs):
    append(auth_client, conversation.pk, "one")
    etags = {kind: auth_client.get(url)["ETag"] for kind, url in etag_urls(conversation.pk).items()}
    their_newest = Message.objects.filter(conversation=theirs).order_by("-seq").first()
    assert their_newest is not None

    assert other_client.delete(message_url(theirs.pk, their_newest.pk)).status_code == 204
    assert other_client.delete(messages_url(theirs.pk)).status_code == HTTPStatus.NO_CONTENT

    for kind, url in etag_urls(conversation.pk).items():
        assert auth_client.get(url, HTTP_IF_NONE_MATCH=etags[kind]).status_code == 304, kind


# Idempotency keys whose messages were deleted


def replay(client, conversation_id, body, key: str):
    return client.post(messages_url(conversation_id), body, format="json", headers={"Idempotency-Key": key})


ONE = {"role": "user", "content": "Book a table"}
TURN = [{"role": "user", "content": "Book a table"}, {"role": "assistant", "content": "Booked."}]


def undo_newest(client, conversation_id, created) -> None:
    newest = created[-1] if isinstance(created, list) else created
    response = client.delete(message_url(conversation_id, newest["id"]))
    assert response.status_code == HTTPStatus.NO_CONTENT


def clear(client, conversation_id, created) -> None:
    assert client.delete(messages_url(conversation_id)).status_code == HTTPStatus.NO_CONTENT


@pytest.mark.parametrize("body", [ONE, TURN], ids=["one", "batch"])
@pytest.mark.parametrize("deletion", [undo_newest, clear], ids=["undo", "clear"])
def test_replaying_a_key_whose_messages_were_deleted_is_a_409_and_creates_nothing(
    auth_client, conversation, theirs, body, deletion
):
    first = replay(auth_client, conversation.pk, body, "turn-1")
    assert first.status_code == HTTPStatus.CREATED
    replayed = replay(auth_client, conversation.pk, body, "turn-1")
    assert (replayed.status_code, replayed["Idempotent-Replayed"]) == (HTTPStatus.CREATED, "true")
    deletion(auth_client, conversation.pk, first.json())
    # Another message now stands where the deleted one stood (the same seq).
    append(auth_client, conversation.pk, "Something else entirely")
    before = stored(conversation), stored(theirs)

    response = replay(auth_client, conversation.pk, body, "turn-1")

    assert response.status_code == HTTPStatus.CONFLICT
    assert set(response.json()) == {"detail"}
    assert "Idempotent-Replayed" not in response
    assert (stored(conversation), stored(theirs)) == before


# The Python API: the same services, scoped by user.


def test_message_pop_in_python_takes_the_newest_or_nothing(user, other_user, conversation, theirs):
    older = services.message_append(user=user, conversation_id=conversation.pk, role="user", content="a")
    newest = services.message_append(user=user, conversation_id=conversation.pk, role="user", content="b")
    before = stored(theirs)

    with pytest.raises(services.MessageNotNewest):
        services.message_pop(user=user, conversation_id=conversation.pk, message_id=older.pk)
    their_newest = Message.objects.filter(conversation=theirs).order_by("-seq").first()
    assert their_newest is not None
    with pytest.raises(Message.DoesNotExist):
        services.message_pop(user=user, conversation_id=conversation.pk, message_id=their_newest.pk)
    with pytest.raises(Conversation.DoesNotExist):
        services.message_pop(user=user, conversation_id=theirs.pk)
    with pytest.raises(Conversation.DoesNotExist):
        services.message_pop(user=other_user, conversation_id=conversation.pk)

    popped = services.message_pop(user=user, conversation_id=conversation.pk)
    assert popped is not None
    assert popped.pk == newest.pk
    assert services.message_pop(user=user, conversation_id=conversation.pk, message_id=older.pk) is not None
    assert services.message_pop(user=user, conversation_id=conversation.pk) is None
    assert Conversation.objects.get(pk=conversation.pk).message_count == 0
    assert stored(theirs) == before


def test_conversation_clear_in_python(user, other_user, conversation, theirs):
    for n in range(3):
        services.message_append(user=user, conversation_id=conversation.pk, role="user", content=str(n))
    before = stored(conversation), stored(theirs)

    with pytest.raises(Conversation.DoesNotExist):
        services.conversation_clear(user=user, conversation_id=theirs.pk)
    with pytest.raises(Conversation.DoesNotExist):
        services.conversation_clear(user=other_user, conversation_id=conversation.pk)
    assert (stored(conversation), stored(theirs)) == before

    assert services.conversation_clear(user=user, conversation_id=conversation.pk) == 3
    assert Conversation.objects.get(pk=conversation.pk).message_count == 0
    assert stored(theirs) == before[1]


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("sync_thread_connection")
async def test_undo_and_clear_under_asyncio():
    user, other = await sync_to_async(UserFactory.create)(), await sync_to_async(UserFactory.create)()
    conversation = await services.aconversation_create(user=user, title="Async")
    for content in ("a", "b", "c"):
        await services.amessage_append(
            user=user, conversation_id=conversation.pk, role="user", content=content
        )

    with pytest.raises(Conversation.DoesNotExist):
        await services.amessage_pop(user=other, conversation_id=conversation.pk)
    with pytest.raises(Conversation.DoesNotExist):
        await services.aconversation_clear(user=other, conversation_id=conversation.pk)
    popped = await services.amessage_pop(user=user, conversation_id=conversation.pk)
    assert popped is not None
    assert popped.content == "c"
    assert await services.aconversation_clear(user=user, conversation_id=conversation.pk) == 2
    refreshed = await selectors.aconversation_get(user=user, conversation_id=conversation.pk)
    assert (refreshed.message_count, refreshed.title) == (0, "Async")
    await services.aconversation_delete(user=user, conversation_id=conversation.pk)
