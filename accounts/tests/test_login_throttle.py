"""Finding 1 of issue 10: logins (``POST auth/token/``) are throttled per username and per client
address (``API_THROTTLE_LOGIN``), where the client address is the peer's unless
``API_TRUSTED_PROXIES`` trusts X-Forwarded-For hops (core/client.py)."""

import pytest
from django.apps import apps
from django.test import Client
from django.urls import reverse
from rest_framework import status
from rest_framework.test import APIClient
from rest_framework.throttling import SimpleRateThrottle

from conftest import client_for
from conversations.tests.factories import TEST_PASSWORD, UserFactory

pytestmark = pytest.mark.django_db

LOGIN_RATE = 10
ANON_RATE = 60
ATTACKER = "203.0.113.66"
LOOPBACK = "127.0.0.1"


@pytest.fixture(autouse=True)
def rates(settings, monkeypatch):
    """The deployment's default rates, whatever the environment running the tests says."""
    rates = {"anon": f"{ANON_RATE}/minute", "user": "1200/minute", "login": f"{LOGIN_RATE}/minute"}
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": rates}
    # DRF's throttles copy the rates when rest_framework.throttling is first imported.
    monkeypatch.setattr(SimpleRateThrottle, "THROTTLE_RATES", rates)
    settings.API_TRUSTED_PROXIES = 0
    return rates


WRONG_PASSWORD = "a-wrong-password"


def login(username, password=WRONG_PASSWORD, *, peer=ATTACKER, forwarded_for=None):
    extra = {"REMOTE_ADDR": peer}
    if forwarded_for is not None:
        extra["HTTP_X_FORWARDED_FOR"] = forwarded_for
    return APIClient().post(reverse("auth-token"), {"username": username, "password": password}, **extra)


def assert_throttled(response):
    assert response.status_code == status.HTTP_429_TOO_MANY_REQUESTS
    assert 0 < int(response["Retry-After"]) <= 60
    assert "detail" in response.json()


def test_rotating_x_forwarded_for_does_not_escape_the_address_limit():
    """The pen test's attack: 150 guesses, each with a new X-Forwarded-For and account."""
    statuses = [
        login(f"victim{n}", forwarded_for=f"198.51.{n // 250}.{n % 250 + 1}").status_code for n in range(150)
    ]

    assert statuses[:LOGIN_RATE] == [status.HTTP_401_UNAUTHORIZED] * LOGIN_RATE
    assert set(statuses[LOGIN_RATE:]) == {status.HTTP_429_TOO_MANY_REQUESTS}


def test_forging_the_loopback_address_does_not_use_up_the_loopback_clients_quota():
    user = UserFactory.create()
    for n in range(ANON_RATE + LOGIN_RATE):
        login(f"someone{n}", forwarded_for=LOOPBACK)
    assert_throttled(login("someone-else", forwarded_for=LOOPBACK))

    response = login(user.username, TEST_PASSWORD, peer=LOOPBACK)

    assert response.status_code == status.HTTP_200_OK
    assert set(response.json()) == {"access", "refresh"}


def test_one_username_attacked_from_many_addresses_is_throttled():
    user = UserFactory.create(username="alice")

    statuses = [login("alice", peer=f"10.0.{n // 250}.{n % 250 + 1}").status_code for n in range(50)]

    assert statuses[:LOGIN_RATE] == [status.HTTP_401_UNAUTHORIZED] * LOGIN_RATE
    assert set(statuses[LOGIN_RATE:]) == {status.HTTP_429_TOO_MANY_REQUESTS}
    # Refused before the password is checked: the right one is no way round the limit.
    assert_throttled(login(user.username, TEST_PASSWORD, peer="10.9.9.9"))
    # Another account from the same addresses is not affected.
    other = UserFactory.create()
    assert login(other.username, TEST_PASSWORD, peer="10.0.0.1").status_code == status.HTTP_200_OK


@pytest.mark.parametrize("spelling", ["ALICE", "Alice", " alice ", "\uff41lice"])
def test_the_username_limit_ignores_case_and_spelling(spelling):
    UserFactory.create(username="alice")
    for n in range(LOGIN_RATE):
        assert login("alice", peer=f"10.1.0.{n + 1}").status_code == status.HTTP_401_UNAUTHORIZED

    assert_throttled(login(spelling, peer="10.2.0.1"))


def test_a_very_long_username_is_throttled_like_any_other():
    name = "x" * 100_000
    for n in range(LOGIN_RATE):
        assert login(name, peer=f"10.1.0.{n + 1}").status_code == status.HTTP_401_UNAUTHORIZED

    assert_throttled(login(name, peer="10.2.0.1"))


def test_behind_one_trusted_proxy_the_last_hop_is_the_client(settings):
    settings.API_TRUSTED_PROXIES = 1
    proxy, client, neighbour = LOOPBACK, "198.51.100.7", "198.51.100.8"

    # The client rotates what it sends; the proxy appends the address it really came from.
    statuses = [
        login(f"victim{n}", peer=proxy, forwarded_for=f"10.9.0.{n + 1}, {client}").status_code
        for n in range(LOGIN_RATE + 5)
    ]

    assert statuses[:LOGIN_RATE] == [status.HTTP_401_UNAUTHORIZED] * LOGIN_RATE
    assert set(statuses[LOGIN_RATE:]) == {status.HTTP_429_TOO_MANY_REQUESTS}
    # Another client behind the same proxy has its own quota.
    assert login("victim0", peer=proxy, forwarded_for=neighbour).status_code == status.HTTP_401_UNAUTHORIZED


def test_none_switches_the_login_limit_off(rates, monkeypatch):
    monkeypatch.setitem(rates, "login", None)
    monkeypatch.setitem(rates, "anon", None)

    statuses = {login("alice").status_code for _ in range(LOGIN_RATE * 3)}

    assert statuses == {status.HTTP_401_UNAUTHORIZED}


@pytest.mark.parametrize("method", ["get", "post"])
def test_there_is_no_admin_login_to_guess_at(method, django_user_model):
    """The admin-free API: /admin/login/ took unthrottled guesses at superuser passwords."""
    superuser = django_user_model.objects.create_superuser("root", password=TEST_PASSWORD)

    credentials = {"username": superuser.username, "password": TEST_PASSWORD}

    response = getattr(Client(), method)("/admin/login/", credentials)

    assert response.status_code == status.HTTP_404_NOT_FOUND
    assert not apps.is_installed("django.contrib.admin")


def test_password_changes_spend_the_accounts_login_quota():
    """The old password is checked there too, so a stolen access token guesses no faster."""
    user = UserFactory.create()
    stolen = client_for(user)
    guesses = [
        stolen.post(
            reverse("auth-password"), {"old_password": f"guess-{n}", "new_password": "N3w-Passphrase-77"}
        ).status_code
        for n in range(LOGIN_RATE + 5)
    ]
    assert guesses[:LOGIN_RATE] == [status.HTTP_400_BAD_REQUEST] * LOGIN_RATE
    assert set(guesses[LOGIN_RATE:]) == {status.HTTP_429_TOO_MANY_REQUESTS}
    # The same account's login bucket is spent: logging in with the right password waits too.
    assert_throttled(login(user.username, TEST_PASSWORD, peer="198.51.100.20"))


def test_an_ipv6_client_gets_one_quota_for_its_whole_64():
    """Its 2**64 addresses would otherwise be 2**64 quotas."""
    statuses = [
        login(f"victim{n}", peer=f"2001:db8:1:2::{n + 1:x}").status_code for n in range(LOGIN_RATE + 3)
    ]

    assert statuses[:LOGIN_RATE] == [status.HTTP_401_UNAUTHORIZED] * LOGIN_RATE
    assert set(statuses[LOGIN_RATE:]) == {status.HTTP_429_TOO_MANY_REQUESTS}
    # Another /64 has a quota of its own.
    assert login("victim-x", peer="2001:db8:1:3::1").status_code == status.HTTP_401_UNAUTHORIZED
