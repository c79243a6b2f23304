"""Attacks tried on every endpoint and method of the contract, and refused.

The one place that tries each hostile input on each operation: another user's ids (also
nested: A's conversation with B's message, B's conversation with A's message), forged, ``alg:
none``, expired and refresh tokens, the token of a deleted user, external tokens with the
wrong issuer or audience, and a ``user_id`` of someone else in the body or the query. Each
answer must be the contract's refusal (401 with ``WWW-Authenticate``, 403, or the one 404
body), never a success and never a 5xx, and afterwards every row of every user must be as
it was. The victim is B; their own token, used as a control, succeeds on every operation.
"""

import json
import uuid
from dataclasses import dataclass
from datetime import timedelta
from http import HTTPStatus
from typing import Any

import jwt
import pytest
from django.contrib.auth.hashers import make_password
from django.urls import reverse
from rest_framework.test import APIClient
from rest_framework_simplejwt.tokens import AccessToken, RefreshToken

from accounts.models import User
from accounts.tests.test_auth import (
    AUDIENCE,
    EXTERNAL_SECRET,
    ISSUER,
    WWW_AUTHENTICATE,
    configure_external,
    external_token,
    hand_made_token,
)
from conftest import client_for
from conversations import services
from conversations.models import Conversation, ConversationListVersion, IdempotencyKey, Message
from core import rls

from .factories import ConversationFactory, MessageFactory, UserFactory

pytestmark = [
    pytest.mark.django_db,
    # The HS512 forgery is signed with the service's (short) test key on purpose.
    pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning"),
]


@dataclass(frozen=True)
class Endpoint:
    method: str
    route: str
    ids: tuple[str, ...] = ()  # the path's ids, in order: "conversation", "message"
    body: Any = None
    query: str = ""  # what the operation needs in its query string


# Every operation of the contract that takes a bearer token.
ENDPOINTS = {
    "list conversations": Endpoint("get", "conversation-list"),
    "create conversation": Endpoint("post", "conversation-list", body={"title": "attacker's"}),
    "get conversation": Endpoint("get", "conversation-detail", ("conversation",)),
    "rename conversation": Endpoint(
        "patch", "conversation-detail", ("conversation",), body={"title": "attacker's"}
    ),
    "archive, pin and set metadata": Endpoint(
        "patch",
        "conversation-detail",
        ("conversation",),
        body={"archived": True, "pinned": True, "metadata": {"owner": "attacker"}},
    ),
    "delete conversation": Endpoint("delete", "conversation-detail", ("conversation",)),
    "list messages": Endpoint("get", "conversation-message-list", ("conversation",)),
    "append message": Endpoint(
        "post", "conversation-message-list", ("conversation",), body={"role": "user", "content": "attacker's"}
    ),
    "append a turn": Endpoint(
        "post",
        "conversation-message-list",
        ("conversation",),
        body=[{"role": "user", "content": "attacker's"}, {"role": "assistant", "content": "ok"}],
    ),
    "get message": Endpoint("get", "conversation-message-detail", ("conversation", "message")),
    "record tool results": Endpoint(
        "post",
        "conversation-message-tool-results",
        ("conversation", "message"),
        body={"tool_results": [{"tool_call_id": "call_1", "content": "attacker's"}]},
    ),
    "undo the last message": Endpoint("delete", "conversation-message-detail", ("conversation", "message")),
    "clear messages": Endpoint("delete", "conversation-message-list", ("conversation",)),
    "history": Endpoint("get", "conversation-history", ("conversation",)),
    "search": Endpoint("get", "search-list", query="q=secret"),
    "list conversations by search": Endpoint("get", "conversation-list", query="search=secret"),
    "me": Endpoint("get", "auth-me"),
    "export": Endpoint("get", "export"),
}
WITH_IDS = [name for name, endpoint in ENDPOINTS.items() if endpoint.ids]

# Methods the contract does not offer on a path, tried on B's objects: a 405, changing nothing.
OTHER_METHODS = [
    ("put", Endpoint("put", "conversation-list", body={"title": "attacker's"})),
    ("put", Endpoint("put", "conversation-detail", ("conversation",), body={"title": "attacker's"})),
    ("post", Endpoint("post", "conversation-detail", ("conversation",), body={"title": "attacker's"})),
    ("put", Endpoint("put", "conversation-message-list", ("conversation",), body={"role": "user"})),
    (
        "put",
        Endpoint("put", "conversation-message-detail", ("conversation", "message"), body={"content": "x"}),
    ),
    (
        "patch",
        Endpoint("patch", "conversation-message-detail", ("conversation", "message"), body={"content": "x"}),
    ),
    ("get", Endpoint("get", "conversation-message-tool-results", ("conversation", "message"))),
    ("post", Endpoint("post", "conversation-history", ("conversation",), body={})),
    ("delete", Endpoint("delete", "conversation-history", ("conversation",))),
    ("delete", Endpoint("delete", "auth-me")),
    ("post", Endpoint("post", "export", body={})),
    ("delete", Endpoint("delete", "export")),
]


@dataclass
class World:
    """A (the attacker) and B (the victim), each with a conversation and messages."""

    a: User
    b: User
    a_conversation: Conversation
    a_message: Message
    b_conversation: Conversation
    b_message: Message


@pytest.fixture
def world():
    a, b = UserFactory.create(username="attacker"), UserFactory.create(username="victim")
    a_message = MessageFactory.create(conversation=ConversationFactory.create(user=a))
    b_conversation = ConversationFactory.create(user=b)
    MessageFactory.create(conversation=b_conversation)
    # B's newest message, with a call awaiting its result: every endpoint has a valid target.
    b_message, _ = services.message_append_idempotent(
        user=b,
        conversation_id=b_conversation.pk,
        role="assistant",
        content="B's secret",
        tool_calls=[{"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}],
        idempotency_key="b-key",
    )
    return World(a, b, a_message.conversation, a_message, b_conversation, b_message)


def everything():
    """Every row an attack could touch, of every user."""
    return {
        "users": list(User.objects.order_by("pk").values("pk", "username", "password", "is_active")),
        "conversations": list(Conversation.objects.order_by("pk").values()),
        "messages": list(Message.objects.order_by("pk").values()),
        "idempotency keys": list(IdempotencyKey.objects.order_by("pk").values()),
        "list versions": list(ConversationListVersion.objects.order_by("pk").values()),
    }


def send(
    client: APIClient,
    endpoint: Endpoint,
    conversation_id: Any = None,
    message_id: Any = None,
    *,
    query: str = "",
    body: dict[str, Any] | None = None,
):
    ids = {"conversation": conversation_id, "message": message_id}
    url = reverse(endpoint.route, args=[ids[name] for name in endpoint.ids])
    query = "&".join(part for part in (endpoint.query, query) if part)
    url += f"?{query}" if query else ""
    data = endpoint.body if body is None else body
    if data is None:
        response = client.generic(endpoint.method.upper(), url)
    else:
        body_text = json.dumps(data)
        response = client.generic(endpoint.method.upper(), url, body_text, content_type="application/json")
    if response.streaming:  # the export: read to its end, which ends its snapshot and scope
        b"".join(response.streaming_content)
    return response


def send_to_victim(client: APIClient, endpoint: Endpoint, world: World, **kwargs: Any):
    return send(client, endpoint, world.b_conversation.pk, world.b_message.pk, **kwargs)


def assert_refused(response, expected: HTTPStatus) -> None:
    assert response.status_code == expected, (response.status_code, response.content[:300])
    body = response.json()
    assert "detail" in body, body
    if expected == HTTPStatus.UNAUTHORIZED:
        assert response["WWW-Authenticate"] == WWW_AUTHENTICATE
    if expected == HTTPStatus.NOT_FOUND:
        # The same body as for a missing or malformed id: nothing tells that B's exists.
        assert body == {"detail": "Not found."}


def with_token(token: str | None) -> APIClient:
    client = APIClient()
    if token is not None:
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client


# Tokens that must not get in -----------------------------------------------------------------


def access_payload(user: User) -> dict[str, Any]:
    payload = dict(AccessToken.for_user(user).payload)
    payload["user_id"] = str(payload["user_id"])
    return payload


def forged_with_another_key(world: World, settings) -> str:
    return jwt.encode(access_payload(world.b), "not-the-service-signing-key-at-all-0123456789")


def payload_swapped_under_own_signature(world: World, settings) -> str:
    header, _, signature = str(AccessToken.for_user(world.a)).split(".")
    return f"{header}.{str(AccessToken.for_user(world.b)).split('.')[1]}.{signature}"


def alg_none(world: World, settings) -> str:
    return hand_made_token({"alg": "none", "typ": "JWT"}, access_payload(world.b))


def alg_none_keeping_the_signature(world: World, settings) -> str:
    genuine = str(AccessToken.for_user(world.b)).split(".")
    forged = hand_made_token({"alg": "none", "typ": "JWT"}, access_payload(world.b)).split(".")
    return f"{forged[0]}.{genuine[1]}.{genuine[2]}"


def algorithm_switched_to_hs512(world: World, settings) -> str:
    return jwt.encode(access_payload(world.b), settings.SIMPLE_JWT["SIGNING_KEY"], algorithm="HS512")


def expired(world: World, settings) -> str:
    token = AccessToken.for_user(world.b)
    token.set_exp(lifetime=timedelta(seconds=-1))
    return str(token)


def refresh_used_as_access(world: World, settings) -> str:
    return str(RefreshToken.for_user(world.b))


def of_a_deleted_user(world: World, settings) -> str:
    """The token of C, who had a conversation and was deleted since (with their rows, which
    row-level security shows only in C's own scope)."""
    c = UserFactory.create()
    MessageFactory.create(conversation=ConversationFactory.create(user=c))
    token = str(AccessToken.for_user(c))
    with rls.user_scope(c):
        User.objects.filter(pk=c.pk).delete()
    return token


def external_with_wrong_issuer(world: World, settings) -> str:
    return external_token(str(world.b.pk), iss="https://evil.example/", aud=AUDIENCE)


def external_without_issuer(world: World, settings) -> str:
    return external_token(str(world.b.pk), aud=AUDIENCE)


def external_with_wrong_audience(world: World, settings) -> str:
    return external_token(str(world.b.pk), iss=ISSUER, aud="another-api")


def external_signed_with_another_key(world: World, settings) -> str:
    return external_token(str(world.b.pk), key=f"not-{EXTERNAL_SECRET}", iss=ISSUER, aud=AUDIENCE)


def external_expired_beyond_the_leeway(world: World, settings) -> str:
    return external_token(str(world.b.pk), iss=ISSUER, aud=AUDIENCE, expires_in=-45)


def external_alg_none(world: World, settings) -> str:
    return hand_made_token(
        {"alg": "none"}, {"sub": str(world.b.pk), "iss": ISSUER, "aud": AUDIENCE, "exp": 2**31}
    )


OWN_TOKEN_ATTACKS = {
    "no token": lambda world, settings: None,
    "signature forged with another key": forged_with_another_key,
    "B's payload under A's signature": payload_swapped_under_own_signature,
    "alg none": alg_none,
    "alg none keeping a genuine signature": alg_none_keeping_the_signature,
    "algorithm switched to HS512": algorithm_switched_to_hs512,
    "expired": expired,
    "refresh token used as access token": refresh_used_as_access,
    "token of a deleted user": of_a_deleted_user,
}
EXTERNAL_TOKEN_ATTACKS = {
    "external token with wrong issuer": external_with_wrong_issuer,
    "external token without issuer": external_without_issuer,
    "external token with wrong audience": external_with_wrong_audience,
    "external token signed with another key": external_signed_with_another_key,
    "external token expired beyond the leeway": external_expired_beyond_the_leeway,
    "external token with alg none": external_alg_none,
}
IDENTITY_PROVIDER = {
    "without an external provider": False,
    "with an external provider": True,
}


def trust_external_provider(settings) -> None:
    configure_external(settings, ISSUER=ISSUER, AUDIENCE=AUDIENCE)


def victim_created_by_the_provider(world: World) -> None:
    """B as an account the external provider made, so that an external token naming B is
    refused for its own flaw alone (the provider reaches no local account at all)."""
    User.objects.filter(pk=world.b.pk).update(is_external=True, password=make_password(None))
    world.b.refresh_from_db()


@pytest.mark.parametrize("provider", IDENTITY_PROVIDER)
@pytest.mark.parametrize("attack", OWN_TOKEN_ATTACKS)
@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_bad_own_tokens_are_401_on_every_endpoint_and_change_nothing(
    world, settings, endpoint, attack, provider
):
    if IDENTITY_PROVIDER[provider]:
        trust_external_provider(settings)
    else:
        configure_external(settings, KEY=None)
    client = with_token(OWN_TOKEN_ATTACKS[attack](world, settings))
    before = everything()

    response = send_to_victim(client, ENDPOINTS[endpoint], world)

    assert_refused(response, HTTPStatus.UNAUTHORIZED)
    assert everything() == before


@pytest.mark.parametrize("attack", EXTERNAL_TOKEN_ATTACKS)
@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_bad_external_tokens_naming_the_victim_are_401_on_every_endpoint_and_change_nothing(
    world, settings, endpoint, attack
):
    trust_external_provider(settings)
    victim_created_by_the_provider(world)
    client = with_token(EXTERNAL_TOKEN_ATTACKS[attack](world, settings))
    before = everything()

    response = send_to_victim(client, ENDPOINTS[endpoint], world)

    assert_refused(response, HTTPStatus.UNAUTHORIZED)
    assert everything() == before


@pytest.mark.parametrize("token", ["own", "external with the right issuer and audience"])
@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_control_the_victims_valid_tokens_succeed_on_every_endpoint(world, settings, endpoint, token):
    """The refusals above come from the token alone: B's genuine tokens get in everywhere."""
    trust_external_provider(settings)
    if token == "own":
        genuine = str(AccessToken.for_user(world.b))
    else:
        victim_created_by_the_provider(world)
        genuine = external_with_right_claims(world)

    response = send_to_victim(with_token(genuine), ENDPOINTS[endpoint], world)

    assert response.status_code in {HTTPStatus.OK, HTTPStatus.CREATED, HTTPStatus.NO_CONTENT}, (
        response.content
    )


def external_with_right_claims(world: World) -> str:
    return external_token(str(world.b.pk), iss=ISSUER, aud=AUDIENCE)


@pytest.mark.parametrize(
    "victim",
    [{}, {"is_staff": True}, {"is_staff": True, "is_superuser": True}],
    ids=["user", "staff", "superuser"],
)
@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_valid_external_tokens_naming_a_local_account_are_401_on_every_endpoint_and_change_nothing(
    world, settings, endpoint, victim
):
    """A leaked or misconfigured identity provider cannot take over a registered account."""
    trust_external_provider(settings)
    User.objects.filter(pk=world.b.pk).update(**victim)
    before = everything()

    response = send_to_victim(with_token(external_with_right_claims(world)), ENDPOINTS[endpoint], world)

    assert_refused(response, HTTPStatus.UNAUTHORIZED)
    assert everything() == before


# Another user's ids --------------------------------------------------------------------------


@pytest.fixture(params=["a user", "a staff superuser"])
def attacker(request, world):
    """A's client; as staff and superuser too, which gives no bypass."""
    if request.param == "a staff superuser":
        User.objects.filter(pk=world.a.pk).update(is_staff=True, is_superuser=True)
    return client_for(world.a)


@pytest.mark.parametrize("endpoint", WITH_IDS)
def test_the_victims_ids_are_the_same_404_on_every_endpoint_and_change_nothing(world, attacker, endpoint):
    before = everything()

    response = send_to_victim(attacker, ENDPOINTS[endpoint], world)

    assert_refused(response, HTTPStatus.NOT_FOUND)
    assert everything() == before


@pytest.mark.parametrize(
    "pair",
    ["own conversation with the victim's message", "the victim's conversation with own message"],
)
def test_nested_ids_of_two_owners_are_the_same_404_and_change_nothing(world, attacker, pair):
    if pair == "own conversation with the victim's message":
        ids = (world.a_conversation.pk, world.b_message.pk)
    else:
        ids = (world.b_conversation.pk, world.a_message.pk)
    before = everything()

    response = send(attacker, ENDPOINTS["get message"], *ids)

    assert_refused(response, HTTPStatus.NOT_FOUND)
    assert everything() == before


@pytest.mark.parametrize(
    ("method", "endpoint"), OTHER_METHODS, ids=[f"{m} {e.route}" for m, e in OTHER_METHODS]
)
def test_methods_outside_the_contract_on_the_victims_objects_are_405_and_change_nothing(
    world, attacker, method, endpoint
):
    before = everything()

    response = send_to_victim(attacker, endpoint, world)

    assert_refused(response, HTTPStatus.METHOD_NOT_ALLOWED)
    assert everything() == before


# user_id of someone else ---------------------------------------------------------------------


@pytest.mark.parametrize("value", ["the victim's id", "not a uuid"])
@pytest.mark.parametrize("place", ["in the query", "in the query after the caller's own", "in the body"])
@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_a_user_id_other_than_the_callers_is_403_on_every_endpoint_and_changes_nothing(
    world, endpoint, place, value
):
    """Sent with A's token about A's own objects, so the user_id alone is what is refused."""
    named = str(world.b.pk) if value == "the victim's id" else "not-a-uuid"
    spec = ENDPOINTS[endpoint]
    kwargs: dict[str, Any]
    if place == "in the body" and isinstance(spec.body, list):  # a batch: in its last item
        kwargs = {"body": [*spec.body[:-1], {**spec.body[-1], "user_id": named}]}
    elif place == "in the body":
        kwargs = {"body": {**(spec.body or {}), "user_id": named}}
    elif place == "in the query":
        kwargs = {"query": f"user_id={named}"}
    else:
        kwargs = {"query": f"user_id={world.a.pk}&user_id={named}"}
    client = client_for(world.a)
    before = everything()

    response = send(client, spec, world.a_conversation.pk, world.a_message.pk, **kwargs)

    assert_refused(response, HTTPStatus.FORBIDDEN)
    assert everything() == before


# Malformed metadata ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "metadata",
    [["a"], {f"k{n}": "v" for n in range(17)}, {"k": 1}, {"k" * 65: "v"}, {"k": "\x00"}, {"k": {"x": "y"}}],
    ids=["array", "17 keys", "number", "long key", "NUL", "nested"],
)
def test_malformed_metadata_is_the_same_400_for_any_conversation_and_changes_nothing(
    world, attacker, metadata
):
    """Checked before any lookup: the victim's conversation, the attacker's own and a missing
    one answer alike, naming ``metadata``."""
    endpoint = ENDPOINTS["archive, pin and set metadata"]
    before = everything()

    answers = [
        send(attacker, endpoint, conversation_id, body={"metadata": metadata})
        for conversation_id in (world.b_conversation.pk, world.a_conversation.pk, uuid.uuid4())
    ]

    assert {answer.status_code for answer in answers} == {HTTPStatus.BAD_REQUEST}
    assert len({answer.content for answer in answers}) == 1
    assert set(answers[0].json()) == {"metadata"}
    assert everything() == before
