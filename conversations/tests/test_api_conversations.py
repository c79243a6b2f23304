import re
from datetime import timedelta
from http import HTTPStatus

import pytest
from django.urls import reverse
from django.utils import timezone

from conftest import client_for
from conversations.models import Conversation, Message

from .factories import ConversationFactory, MessageFactory, UserFactory

pytestmark = pytest.mark.django_db

TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
MISSING_ID = "01a2055f-25b0-700c-a19f-b33874f63511"
MALFORMED_ID = "not-a-uuid"


def list_url(**params):
    url = reverse("conversation-list")
    return url + ("?" + "&".join(f"{k}={v}" for k, v in params.items()) if params else "")


def detail_url(conversation_id):
    return reverse("conversation-detail", args=[conversation_id])


@pytest.fixture
def others_conversation(other_user):
    return MessageFactory.create(conversation=ConversationFactory.create(user=other_user)).conversation


def test_create_returns_the_contract_shape(auth_client, user):
    response = auth_client.post(list_url(), {"title": "Trip to Lisbon"})

    assert response.status_code == HTTPStatus.CREATED
    body = response.json()
    assert set(body) == {
        "id",
        "user_id",
        "title",
        "created_at",
        "updated_at",
        "message_count",
        "archived",
        "pinned",
        "metadata",
        "preview",
    }
    assert body["user_id"] == str(user.pk)
    assert body["title"] == "Trip to Lisbon"
    assert body["message_count"] == 0
    assert (body["archived"], body["pinned"], body["metadata"], body["preview"]) == (False, False, {}, None)
    assert TIMESTAMP.match(body["created_at"])
    assert TIMESTAMP.match(body["updated_at"])
    assert Conversation.objects.get(pk=body["id"]).user == user


def test_create_without_title_defaults_to_empty(auth_client):
    response = auth_client.post(list_url(), {})
    assert response.status_code == HTTPStatus.CREATED
    assert response.json()["title"] == ""


def test_title_of_200_characters_is_accepted_and_201_is_refused(auth_client):
    assert auth_client.post(list_url(), {"title": "t" * 200}).status_code == HTTPStatus.CREATED
    response = auth_client.post(list_url(), {"title": "t" * 201})
    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert "title" in response.json()


@pytest.mark.parametrize("title", [None, 42, ["a"], "nul\x00byte"])
def test_title_that_is_not_clean_text_is_a_400_naming_title(auth_client, title):
    response = auth_client.post(list_url(), {"title": title})
    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert "title" in response.json()


def test_list_shows_only_own_conversations_most_recently_updated_first(
    auth_client, user, others_conversation
):
    now = timezone.now()
    old = ConversationFactory.create(user=user, updated_at=now - timedelta(hours=2))
    new = ConversationFactory.create(user=user, updated_at=now - timedelta(hours=1))

    response = auth_client.get(list_url())

    assert response.status_code == HTTPStatus.OK
    body = response.json()
    assert set(body) == {"next", "previous", "results"}
    assert [c["id"] for c in body["results"]] == [str(new.pk), str(old.pk)]


@pytest.mark.parametrize(
    ("ordering", "key", "reverse"),
    [
        ("updated_at", "updated_at", False),
        ("-updated_at", "updated_at", True),
        ("created_at", "created_at", False),
        ("-created_at", "created_at", True),
    ],
)
def test_list_orderings(auth_client, user, ordering, key, reverse):
    now = timezone.now()
    for hours in (3, 1, 2):
        ConversationFactory.create(
            user=user, created_at=now - timedelta(hours=hours), updated_at=now - timedelta(hours=4 - hours)
        )

    results = auth_client.get(list_url(ordering=ordering)).json()["results"]

    values = [c[key] for c in results]
    assert values == sorted(values, reverse=reverse)


def test_unknown_ordering_is_a_400(auth_client):
    response = auth_client.get(list_url(ordering="title"))
    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert "ordering" in response.json()


def test_time_filters_are_exclusive_and_offsetless_times_are_utc(auth_client, user):
    now = timezone.now().replace(microsecond=0)
    early = ConversationFactory.create(user=user, created_at=now - timedelta(hours=2), updated_at=now)
    edge = ConversationFactory.create(user=user, created_at=now - timedelta(hours=1), updated_at=now)
    late = ConversationFactory.create(user=user, created_at=now, updated_at=now + timedelta(hours=1))
    edge_naive = (now - timedelta(hours=1)).replace(tzinfo=None).isoformat()

    def ids(**params):
        return {c["id"] for c in auth_client.get(list_url(**params)).json()["results"]}

    assert ids(created_after=edge_naive) == {str(late.pk)}
    assert ids(created_before=edge_naive) == {str(early.pk)}
    assert ids(created_after=(now - timedelta(hours=1)).isoformat().replace("+", "%2B")) == {str(late.pk)}
    assert ids(updated_after=now.isoformat().replace("+", "%2B")) == {str(late.pk)}
    assert ids(updated_before=(now + timedelta(minutes=1)).isoformat().replace("+", "%2B")) == {
        str(early.pk),
        str(edge.pk),
    }


@pytest.mark.parametrize(
    "query",
    [
        "created_after=yesterday",
        "created_before=2026-13-01T00:00:00",
        "updated_after=0001-01-01T00:00:00%2B05:00",
        "updated_before=%00",
        "page_size=0",
        "page_size=-3",
        "page_size=abc",
        "page_size=1.5",
        "cursor=garbage",
    ],
)
def test_bad_list_parameters_are_a_400(auth_client, query):
    response = auth_client.get(f"{list_url()}?{query}")
    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert response.json()


def test_page_size_defaults_to_20_and_clamps_to_100(auth_client, user):
    Conversation.objects.bulk_create(Conversation(user=user) for _ in range(105))

    assert len(auth_client.get(list_url()).json()["results"]) == 20
    assert len(auth_client.get(list_url(page_size=1000)).json()["results"]) == 100
    assert len(auth_client.get(list_url(page_size=1)).json()["results"]) == 1


def test_retrieve_own_conversation(auth_client, user):
    message = MessageFactory.create(conversation=ConversationFactory.create(user=user))
    response = auth_client.get(detail_url(message.conversation_id))
    assert response.status_code == HTTPStatus.OK
    assert response.json()["message_count"] == 1


def test_other_users_missing_and_malformed_conversations_are_the_same_404(auth_client, others_conversation):
    answers = [
        auth_client.get(detail_url(conversation_id))
        for conversation_id in (others_conversation.pk, MISSING_ID, MALFORMED_ID)
    ]
    assert {a.status_code for a in answers} == {HTTPStatus.NOT_FOUND}
    assert len({a.content for a in answers}) == 1
    assert answers[0].json() == {"detail": "Not found."}


@pytest.mark.parametrize("method", ["patch", "delete"])
def test_other_users_conversation_cannot_be_changed(auth_client, others_conversation, method):
    response = getattr(auth_client, method)(detail_url(others_conversation.pk), {"title": "mine now"})

    assert response.status_code == HTTPStatus.NOT_FOUND
    others_conversation.refresh_from_db()
    assert others_conversation.title != "mine now"
    assert others_conversation.messages.count() == 1


def test_staff_and_superusers_have_no_bypass(others_conversation):
    boss = UserFactory.create(is_staff=True, is_superuser=True)
    client = client_for(boss)

    assert client.get(detail_url(others_conversation.pk)).status_code == HTTPStatus.NOT_FOUND
    assert client.get(list_url()).json()["results"] == []


def test_patch_renames_and_moves_updated_at(auth_client, user):
    conversation = ConversationFactory.create(user=user, updated_at=timezone.now() - timedelta(days=1))

    response = auth_client.patch(detail_url(conversation.pk), {"title": "Renamed"})

    assert response.status_code == HTTPStatus.OK
    assert response.json()["title"] == "Renamed"
    conversation.refresh_from_db()
    assert conversation.title == "Renamed"
    assert conversation.updated_at > timezone.now() - timedelta(minutes=1)


def test_patch_of_nothing_is_a_400(auth_client, user):
    conversation = ConversationFactory.create(user=user)
    response = auth_client.patch(detail_url(conversation.pk), {})
    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert "title" in response.json()["detail"]


def test_put_is_not_allowed(auth_client, user):
    conversation = ConversationFactory.create(user=user)
    response = auth_client.put(detail_url(conversation.pk), {"title": "x"})
    assert response.status_code == HTTPStatus.METHOD_NOT_ALLOWED
    assert "detail" in response.json()


def test_delete_removes_the_conversation_and_its_messages(auth_client, user, others_conversation):
    conversation = ConversationFactory.create(user=user)
    MessageFactory.create_batch(3, conversation=conversation)

    response = auth_client.delete(detail_url(conversation.pk))

    assert response.status_code == HTTPStatus.NO_CONTENT
    assert not Conversation.objects.filter(pk=conversation.pk).exists()
    assert not Message.objects.filter(conversation_id=conversation.pk).exists()
    assert Message.objects.filter(conversation=others_conversation).count() == 1
    assert auth_client.delete(detail_url(conversation.pk)).status_code == HTTPStatus.NOT_FOUND


@pytest.mark.parametrize("where", ["body", "query"])
def test_someone_elses_user_id_is_a_403_before_anything_else(auth_client, other_user, where):
    body = {"title": "x", "user_id": str(other_user.pk)} if where == "body" else {"title": "x"}
    url = list_url(user_id=other_user.pk) if where == "query" else list_url()

    response = auth_client.post(url, body)

    assert response.status_code == HTTPStatus.FORBIDDEN
    assert "detail" in response.json()
    assert not Conversation.objects.exists()


@pytest.mark.parametrize("user_id", ["not-a-uuid", 12, None, ""])
def test_a_user_id_that_is_not_a_uuid_is_a_403(auth_client, user_id):
    assert auth_client.post(list_url(), {"user_id": user_id}).status_code == HTTPStatus.FORBIDDEN


def test_own_user_id_is_accepted_and_changes_nothing(auth_client, user):
    response = auth_client.post(f"{list_url()}?user_id={user.pk}", {"title": "x", "user_id": str(user.pk)})
    assert response.status_code == HTTPStatus.CREATED
    assert response.json()["user_id"] == str(user.pk)


def test_a_403_for_user_id_comes_before_the_404_lookup(auth_client, other_user):
    response = auth_client.patch(detail_url(MISSING_ID), {"title": "x", "user_id": str(other_user.pk)})
    assert response.status_code == HTTPStatus.FORBIDDEN


def test_unauthenticated_requests_are_401(api_client, others_conversation):
    for response in (
        api_client.get(list_url()),
        api_client.post(list_url(), {}),
        api_client.get(detail_url(others_conversation.pk)),
    ):
        assert response.status_code == HTTPStatus.UNAUTHORIZED
        assert "WWW-Authenticate" in response.headers


@pytest.mark.parametrize("rows", [1, 100])
def test_list_makes_the_same_queries_for_1_or_100_rows(auth_client, user, rows, assert_data_queries):
    Conversation.objects.bulk_create(Conversation(user=user) for _ in range(rows))
    # One to authenticate the token's user, one for the page; never a COUNT.
    with assert_data_queries(2) as queries:
        response = auth_client.get(list_url(page_size=100))
    assert len(response.json()["results"]) == rows
    assert not [q for q in queries if "COUNT(" in q.upper()]
