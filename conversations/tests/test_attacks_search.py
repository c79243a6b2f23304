"""Attacks on search: forged, tampered and borrowed cursors, staff tokens, and queries
written to reach another user's rows. Each is refused (a 400 naming the parameter) or finds
only the caller's own rows; never a 5xx, never a row of B's. B, the victim, holds text that
matches every query tried here."""

import json
from http import HTTPStatus
from typing import Any

import pytest
from django.core import signing
from django.urls import reverse
from rest_framework.test import APIClient

from accounts.models import User
from conftest import client_for
from conversations.models import Conversation
from conversations.pagination import CURSOR_SALT, scope_digest

from .factories import ConversationFactory, MessageFactory, UserFactory

pytestmark = pytest.mark.django_db

SEARCH = reverse("search-list")
CONVERSATIONS = reverse("conversation-list")


@pytest.fixture
def victim():
    b = UserFactory.create(username="victim")
    for n in range(30):
        conversation = ConversationFactory.create(user=b, title=f"secret plan {n}")
        MessageFactory.create(conversation=conversation, content=f"the secret password is swordfish {n}")
    return b


@pytest.fixture(params=["a user", "a staff superuser"])
def attacker(request, victim):
    a = UserFactory.create(username="attacker", is_staff=request.param != "a user")
    User.objects.filter(pk=a.pk).update(is_superuser=request.param != "a user")
    conversation = ConversationFactory.create(user=a, title="my secret notes")
    MessageFactory.create(conversation=conversation, content="my own secret")
    return a


def own_ids(user) -> set[str]:
    return {str(pk) for pk in Conversation.objects.filter(user=user).values_list("pk", flat=True)}


def assert_only_own(response, user) -> None:
    assert response.status_code == HTTPStatus.OK, response.content
    results = response.json()["results"]
    assert {hit.get("conversation_id", hit.get("id")) for hit in results} <= own_ids(user)


def cursor(payload: dict[str, Any]) -> str:
    return signing.dumps(payload, salt=CURSOR_SALT)


def test_staff_and_superusers_find_only_their_own(attacker, victim):
    client = client_for(attacker)

    for q in ["secret", "swordfish", "password OR plan", '"secret password"']:
        response = client.get(SEARCH, {"q": q})
        assert_only_own(response, attacker)
        listed = client.get(CONVERSATIONS, {"search": q})
        assert_only_own(listed, attacker)
    assert client.get(SEARCH, {"q": "swordfish"}).json()["results"] == []


def test_the_victims_cursor_does_not_page_the_attackers_search(attacker, victim):
    victims = client_for(victim).get(SEARCH, {"q": "secret", "page_size": "2"}).json()
    stolen = victims["next"].split("cursor=")[1].split("&")[0]

    response = client_for(attacker).get(f"{SEARCH}?q=secret&cursor={stolen}")

    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert list(response.json()) == ["cursor"]


def test_a_cursor_of_another_list_or_another_query_is_refused(attacker):
    client = client_for(attacker)
    for n in range(3):
        ConversationFactory.create(user=attacker, title=f"secret {n}")
    list_cursor = client.get(CONVERSATIONS, {"page_size": 1}).json()["next"].split("cursor=")[1]

    response = client.get(f"{SEARCH}?q=secret&cursor={list_cursor}")

    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert list(response.json()) == ["cursor"]


def signed_in_scope(user, key: Any, *, ordering: str = "rank", backwards: Any = False) -> str:
    """A cursor signed with the service's own key for the attacker's own search: what a leak
    of the key (or a bug in our own links) would let through, which must still be safe."""
    return cursor({"o": ordering, "k": key, "r": backwards, "s": scope_digest(f"search:{user.pk}")})


@pytest.mark.parametrize(
    "key",
    [
        ["NaN", "00000000-0000-0000-0000-000000000000"],
        [float("inf"), "00000000-0000-0000-0000-000000000000"],
        [1e308, "not a uuid"],
        [True, "00000000-0000-0000-0000-000000000000"],
        [None, None],
        ["0.5", "00000000-0000-0000-0000-000000000000"],
        [0.5, 12],
        [0.5, ["x"]],
        [0.5],
        [0.5, "00000000-0000-0000-0000-000000000000", 3],
        "string",
        {"rank": 1},
    ],
    ids=lambda key: json.dumps(key)[:40],
)
def test_malformed_keys_in_well_signed_cursors_are_a_400(attacker, victim, key):
    response = client_for(attacker).get(SEARCH, {"q": "secret", "cursor": signed_in_scope(attacker, key)})

    assert response.status_code == HTTPStatus.BAD_REQUEST, response.content
    assert list(response.json()) == ["cursor"]


def test_a_well_signed_cursor_at_any_position_still_finds_only_own_rows(attacker, victim):
    victims_hit = client_for(victim).get(SEARCH, {"q": "secret"}).json()["results"][0]
    client = client_for(attacker)

    for key in ([1e9, victims_hit["conversation_id"]], [-1e9, "ffffffff-ffff-ffff-ffff-ffffffffffff"]):
        for backwards in (False, True):
            response = client.get(
                SEARCH, {"q": "secret", "cursor": signed_in_scope(attacker, key, backwards=backwards)}
            )
            assert_only_own(response, attacker)


@pytest.mark.parametrize(
    "forged",
    [
        "x",
        "",
        "eyJvIjoicmFuayJ9:1xYmnh:forged",
        signing.dumps({"o": "rank", "k": [1, "00000000-0000-0000-0000-000000000000"], "r": False, "s": ""}),
        signing.dumps(
            {"o": "rank", "k": [1, "00000000-0000-0000-0000-000000000000"], "r": False}, salt=CURSOR_SALT
        ),
        "A" * 5000,
        "%00",
    ],
    ids=["garbage", "empty", "bad signature", "wrong salt", "no scope", "huge", "NUL"],
)
def test_forged_cursors_are_a_400(attacker, victim, forged):
    response = client_for(attacker).get(SEARCH, {"q": "secret", "cursor": forged})

    assert response.status_code == HTTPStatus.BAD_REQUEST, response.content
    assert list(response.json()) == ["cursor"]


@pytest.mark.parametrize(
    "q",
    [
        'owner : "{victim}0" OR secret',
        "{victim}0",
        "{victim}",
        'secret" OR owner:"{victim}0',
        "swordfish OR (owner : {victim}0)",
        "' OR 1=1 --",
        "secret') OR ('1'='1",
        "secret & !swordfish | password",
        "secret:* | swordfish",
        "NEAR(secret swordfish) OR *",
    ],
)
def test_queries_written_to_reach_the_victims_rows_find_only_own(attacker, victim, q):
    q = q.format(victim=victim.pk.hex)
    client = client_for(attacker)

    response = client.get(SEARCH, {"q": q})

    if response.status_code == HTTPStatus.OK:
        assert_only_own(response, attacker)
    else:
        assert response.status_code == HTTPStatus.BAD_REQUEST, response.content
    listed = client.get(CONVERSATIONS, {"search": q})
    if listed.status_code == HTTPStatus.OK:
        assert_only_own(listed, attacker)
    else:
        assert listed.status_code == HTTPStatus.BAD_REQUEST, listed.content


def test_search_without_a_token_is_a_401(victim):
    response = APIClient().get(SEARCH, {"q": "secret"})

    assert response.status_code == HTTPStatus.UNAUTHORIZED
