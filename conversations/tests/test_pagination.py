import uuid
from http import HTTPStatus

import pytest
from django.core import signing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conversations.models import Conversation, Message
from conversations.pagination import CURSOR_SALT

from .factories import ConversationFactory, MessageFactory
from .test_api_conversations import list_url
from .test_api_messages import messages_url

pytestmark = pytest.mark.django_db


def bulk_messages(conversation, count, start=1):
    Message.objects.bulk_create(
        Message(conversation=conversation, user=conversation.user, seq=n, role="user", content=f"m{n}")
        for n in range(start, start + count)
    )
    Conversation.objects.filter(pk=conversation.pk).update(message_count=start + count - 1)


def walk(client, url, link="next"):
    seen: list[str] = []
    while url:
        response = client.get(url)
        assert response.status_code == HTTPStatus.OK
        body = response.json()
        seen.extend(m["content"] if "content" in m else m["id"] for m in body["results"])
        url = body[link]
    return seen


def test_walking_1000_messages_returns_each_once_in_order(auth_client, user):
    conversation = ConversationFactory.create(user=user)
    bulk_messages(conversation, 1000)

    assert walk(auth_client, messages_url(conversation.pk, "page_size=37")) == [
        f"m{n}" for n in range(1, 1001)
    ]


def test_walking_while_messages_are_appended_returns_every_earlier_message_once(auth_client, user):
    conversation = ConversationFactory.create(user=user)
    bulk_messages(conversation, 1000)
    url, seen = messages_url(conversation.pk, "page_size=50"), list[str]()
    while url:
        body = auth_client.get(url).json()
        seen.extend(m["content"] for m in body["results"])
        url = body["next"]
        auth_client.post(messages_url(conversation.pk), {"role": "user", "content": f"late{len(seen)}"})

    assert seen[:1000] == [f"m{n}" for n in range(1, 1001)]
    assert len(seen) == len(set(seen))
    assert [c for c in seen[1000:]] == [c for c in seen[1000:] if c.startswith("late")]


def test_walking_newest_first_and_back_with_previous(auth_client, user):
    conversation = ConversationFactory.create(user=user)
    bulk_messages(conversation, 25)
    forward_url = messages_url(conversation.pk, "page_size=10&ordering=-created_at")

    newest_first = walk(auth_client, forward_url)
    assert newest_first == [f"m{n}" for n in range(25, 0, -1)]

    last_page = auth_client.get(forward_url).json()
    while last_page["next"]:
        last_page = auth_client.get(last_page["next"]).json()
    backwards = [m["content"] for m in last_page["results"]]
    url = last_page["previous"]
    while url:
        body = auth_client.get(url).json()
        backwards = [m["content"] for m in body["results"]] + backwards
        url = body["previous"]
    assert backwards == newest_first


def test_conversation_pages_walk_every_conversation_once(auth_client, user, other_user):
    Conversation.objects.bulk_create(Conversation(user=user, title=str(n)) for n in range(45))
    ConversationFactory.create_batch(5, user=other_user)
    for ordering in ("-updated_at", "updated_at", "created_at", "-created_at"):
        ids = walk(auth_client, list_url(page_size=10, ordering=ordering))
        assert len(ids) == len(set(ids)) == 45


def cursor_of(link):
    return link.split("cursor=")[1].split("&")[0]


def test_a_cursor_from_another_users_walk_shows_none_of_their_rows(
    auth_client, other_client, user, other_user
):
    mine = ConversationFactory.create(user=user)
    bulk_messages(mine, 5)
    theirs = ConversationFactory.create(user=other_user)
    bulk_messages(theirs, 5)
    their_next = other_client.get(messages_url(theirs.pk, "page_size=2")).json()["next"]

    # Their cursor is bound to their list: refused on it, on mine and on a missing one alike,
    # so the answer does not tell whether their conversation exists.
    for conversation_id in (theirs.pk, mine.pk, uuid.uuid4()):
        response = auth_client.get(
            messages_url(conversation_id, f"cursor={cursor_of(their_next)}&page_size=2")
        )
        assert response.status_code == HTTPStatus.BAD_REQUEST
        assert response.json() == {"cursor": ["This cursor belongs to another list."]}


def test_a_cursor_from_one_conversation_is_refused_on_another_of_the_same_user(auth_client, user, other_user):
    first, second = ConversationFactory.create_batch(2, user=user)
    bulk_messages(first, 5)
    bulk_messages(second, 5)
    bulk_messages(ConversationFactory.create(user=other_user), 5)
    for ordering in ("created_at", "-created_at"):
        page = auth_client.get(messages_url(first.pk, f"page_size=2&ordering={ordering}")).json()
        for link in (page["next"], auth_client.get(page["next"]).json()["previous"]):
            response = auth_client.get(
                messages_url(second.pk, f"cursor={cursor_of(link)}&ordering={ordering}")
            )
            assert response.status_code == HTTPStatus.BAD_REQUEST
            assert "cursor" in response.json()
            # The cursor still works where it was made.
            assert auth_client.get(link).status_code == HTTPStatus.OK


def test_a_message_cursor_is_refused_on_the_conversation_list_and_back(auth_client, user, other_user):
    conversation = ConversationFactory.create(user=user)
    bulk_messages(conversation, 5)
    ConversationFactory.create_batch(3, user=user)
    ConversationFactory.create_batch(3, user=other_user)
    message_next = auth_client.get(messages_url(conversation.pk, "page_size=2")).json()["next"]
    conversation_next = auth_client.get(list_url(page_size=2, ordering="created_at")).json()["next"]

    on_list = auth_client.get(list_url(cursor=cursor_of(message_next), ordering="created_at"))
    on_messages = auth_client.get(messages_url(conversation.pk, f"cursor={cursor_of(conversation_next)}"))

    assert on_list.status_code == on_messages.status_code == HTTPStatus.BAD_REQUEST
    assert "cursor" in on_list.json()
    assert "cursor" in on_messages.json()


@pytest.mark.parametrize(
    "payload",
    [
        {"o": "created_at", "k": ["not-a-number"], "r": False},
        {"o": "created_at", "k": [], "r": False},
        {"o": "created_at", "k": [1, 2], "r": False},
        {"o": "-created_at", "k": [1], "r": False},
        {"o": "created_at", "k": None, "r": False},
        {"o": "created_at"},
        ["a", "list"],
    ],
)
def test_a_signed_but_nonsensical_cursor_is_a_400_not_a_500(auth_client, user, payload):
    conversation = ConversationFactory.create(user=user)
    MessageFactory.create(conversation=conversation)
    cursor = signing.dumps(payload, salt=CURSOR_SALT)
    assert (
        auth_client.get(messages_url(conversation.pk, f"cursor={cursor}")).status_code
        == HTTPStatus.BAD_REQUEST
    )


@pytest.mark.parametrize("cursor", ["", "x", "eyJvIjoiY3JlYXRlZF9hdCJ9", "%00", "a" * 5000])
def test_an_undecodable_cursor_is_a_400(auth_client, user, cursor):
    conversation = ConversationFactory.create(user=user)
    assert (
        auth_client.get(messages_url(conversation.pk, f"cursor={cursor}")).status_code
        == HTTPStatus.BAD_REQUEST
    )


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    batches=st.lists(st.integers(min_value=0, max_value=12), min_size=1, max_size=6),
    page_size=st.integers(min_value=1, max_value=15),
    newest_first=st.booleans(),
)
def test_any_appends_and_page_size_walk_every_message_once_in_order(
    auth_client, user, batches, page_size, newest_first
):
    conversation = ConversationFactory.create(user=user)
    for count in batches:
        MessageFactory.create_batch(count, conversation=conversation, content="x")
    expected = list(
        Message.objects.filter(conversation=conversation).order_by("seq").values_list("id", flat=True)
    )
    if newest_first:
        expected.reverse()
    ordering = "-created_at" if newest_first else "created_at"

    url, seen = messages_url(conversation.pk, f"page_size={page_size}&ordering={ordering}"), list[str]()
    while url:
        body = auth_client.get(url).json()
        seen.extend(m["id"] for m in body["results"])
        url = body["next"]

    assert seen == [str(i) for i in expected]
