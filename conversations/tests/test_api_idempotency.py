import threading
from http import HTTPStatus

import pytest
from django.db import connection

from conftest import client_for
from conversations.models import IdempotencyKey, Message
from core.rls import all_users

from .factories import ConversationFactory
from .test_api_messages import messages_url

pytestmark = pytest.mark.django_db

BODY = {"role": "user", "content": "What is the weather in Oslo?"}


@pytest.fixture
def conversation(user):
    return ConversationFactory.create(user=user)


def post(client, conversation_id, body=BODY, key="key-1"):
    return client.post(messages_url(conversation_id), body, HTTP_IDEMPOTENCY_KEY=key)


def test_repeating_a_request_with_the_same_key_replays_the_first_answer(auth_client, conversation):
    first = post(auth_client, conversation.pk)
    again = post(auth_client, conversation.pk)

    assert first.status_code == again.status_code == HTTPStatus.CREATED
    assert again.json() == first.json()
    assert again.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers
    assert Message.objects.count() == 1
    conversation.refresh_from_db()
    assert conversation.message_count == 1


def test_same_key_with_another_body_is_a_422(auth_client, conversation):
    post(auth_client, conversation.pk)
    response = post(auth_client, conversation.pk, body=BODY | {"content": "Something else"})
    assert response.status_code == HTTPStatus.UNPROCESSABLE_ENTITY
    assert "detail" in response.json()
    assert Message.objects.count() == 1


def test_same_key_with_an_extra_unknown_field_is_another_body(auth_client, conversation):
    post(auth_client, conversation.pk)
    assert (
        post(auth_client, conversation.pk, body=BODY | {"x": 1}).status_code
        == HTTPStatus.UNPROCESSABLE_ENTITY
    )


def test_same_key_with_another_conversation_is_a_422(auth_client, user, conversation):
    post(auth_client, conversation.pk)
    other = ConversationFactory.create(user=user)
    assert post(auth_client, other.pk).status_code == HTTPStatus.UNPROCESSABLE_ENTITY
    assert not other.messages.exists()


def test_keys_are_per_user(auth_client, other_client, conversation, other_user):
    post(auth_client, conversation.pk)
    theirs = ConversationFactory.create(user=other_user)

    response = post(other_client, theirs.pk)

    assert response.status_code == HTTPStatus.CREATED
    assert "Idempotent-Replayed" not in response.headers
    assert Message.objects.count() == 2


def test_a_key_cannot_be_replayed_into_someone_elses_conversation(auth_client, other_client, conversation):
    post(auth_client, conversation.pk)
    assert post(other_client, conversation.pk).status_code == HTTPStatus.NOT_FOUND


def test_a_failed_request_does_not_use_up_its_key(auth_client, conversation):
    assert post(auth_client, conversation.pk, body={"role": "user"}).status_code == HTTPStatus.BAD_REQUEST
    assert post(auth_client, conversation.pk).status_code == HTTPStatus.CREATED
    assert not IdempotencyKey.objects.filter(fingerprint="").exists()


@pytest.mark.parametrize("key", ["", "k" * 256])
def test_key_outside_1_to_255_characters_is_a_400(auth_client, conversation, key):
    response = post(auth_client, conversation.pk, key=key)
    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert "detail" in response.json()
    assert not Message.objects.exists()


def test_key_of_255_characters_is_accepted(auth_client, conversation):
    assert post(auth_client, conversation.pk, key="k" * 255).status_code == HTTPStatus.CREATED


@pytest.mark.skipif(
    connection.vendor != "postgresql", reason="needs concurrent connections of a server database"
)
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("same_conversation", [True, False])
def test_duplicates_racing_in_flight_create_one_message(user, same_conversation):
    conversations = [ConversationFactory.create(user=user) for _ in range(2)]
    barrier = threading.Barrier(8)
    statuses: list[int] = []

    def send(n: int) -> None:
        target = conversations[0] if same_conversation else conversations[n % 2]
        barrier.wait()
        try:
            statuses.append(post(client_for(user), target.pk).status_code)
        finally:
            connection.close()

    threads = [threading.Thread(target=send, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    with all_users(reason="count what every thread wrote"):
        assert Message.objects.count() == 1
    assert statuses.count(HTTPStatus.CREATED) == (8 if same_conversation else 4)
    assert set(statuses) <= {HTTPStatus.CREATED, HTTPStatus.UNPROCESSABLE_ENTITY, HTTPStatus.CONFLICT}
