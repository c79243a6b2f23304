"""DRF's format suffixes and ``?format=`` renderer switch are not part of this API.

The router's ``<id>.json`` routes passed a ``format`` argument that the views do not take (a
500), and ``?format=`` picked a renderer, which would hijack the history's own ``format``
(the model API: openai, anthropic or responses), where a renderer's name is a 400.
"""

from http import HTTPStatus

import pytest

from .factories import ConversationFactory, MessageFactory
from .test_api_conversations import detail_url
from .test_api_messages import history_url, message_url, messages_url

pytestmark = pytest.mark.django_db

SUFFIXED_PATHS = {
    "conversation": "/api/v1/conversations/{id}.json",
    "conversation-slash": "/api/v1/conversations/{id}.json/",
    "history": "/api/v1/conversations/{id}/history.json",
    "messages": "/api/v1/conversations/{id}/messages.json",
    "message": "/api/v1/conversations/{id}/messages/{message_id}.json",
    "list": "/api/v1/conversations.json",
}


@pytest.mark.parametrize("method", ["get", "patch", "delete", "post"])
@pytest.mark.parametrize("path", SUFFIXED_PATHS.values(), ids=SUFFIXED_PATHS.keys())
def test_format_suffixed_paths_are_the_json_404_of_any_unknown_path(auth_client, user, method, path):
    conversation = ConversationFactory.create(user=user, title="kept")
    message = MessageFactory.create(conversation=conversation)
    url = path.format(id=conversation.pk, message_id=message.id)

    response = getattr(auth_client, method)(url, {"title": "renamed"}, format="json")

    assert response.status_code == HTTPStatus.NOT_FOUND
    assert response["Content-Type"] == "application/json"
    assert response.json() == auth_client.get("/api/v1/no-such-path").json()
    conversation.refresh_from_db()
    assert conversation.title == "kept"


def urls_without_a_format_parameter(conversation):
    return [
        messages_url(conversation.pk),
        detail_url(conversation.pk),
        "/api/v1/conversations/",
        message_url(conversation.pk, conversation.messages.get().pk),
    ]


@pytest.mark.parametrize("value", ["openai", "anthropic", "responses", "api", "json"])
def test_a_format_query_parameter_does_not_pick_a_renderer(auth_client, user, value):
    """Elsewhere ``format`` is no parameter at all: ignored, the answer is JSON."""
    conversation = ConversationFactory.create(user=user)
    MessageFactory.create(conversation=conversation, content="hello")

    for url in urls_without_a_format_parameter(conversation):
        response = auth_client.get(url, {"format": value})
        assert response.status_code == HTTPStatus.OK, url
        assert response["Content-Type"] == "application/json", url
        assert response.json() == auth_client.get(url).json(), url


@pytest.mark.parametrize("value", ["openai", "anthropic", "responses"])
def test_the_historys_format_names_the_model_api(auth_client, user, value):
    conversation = ConversationFactory.create(user=user)
    MessageFactory.create(conversation=conversation, content="hello")

    response = auth_client.get(history_url(conversation.pk, f"format={value}"))

    assert response.status_code == HTTPStatus.OK
    assert response["Content-Type"] == "application/json"
    assert response.json()["format"] == value


@pytest.mark.parametrize("value", ["api", "json", "JSON", ""])
def test_a_renderer_name_as_the_historys_format_is_a_400_naming_format(auth_client, user, value):
    """The history's ``format`` is the model API's (the contract's History section), never
    DRF's renderer switch: a renderer's name is no model API."""
    conversation = ConversationFactory.create(user=user)
    MessageFactory.create(conversation=conversation, content="hello")

    response = auth_client.get(history_url(conversation.pk, f"format={value}"))

    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert response["Content-Type"] == "application/json"
    assert list(response.json()) == ["format"]
