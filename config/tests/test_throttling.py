"""Every throttle the project uses knows an anonymous client by ``client_address``, never by
whatever X-Forwarded-For the client sends (finding 1 of issue 10)."""

import pytest
from django.urls import reverse
from rest_framework import status
from rest_framework.test import APIClient
from rest_framework.throttling import SimpleRateThrottle

from core.throttling import throttle_ident

pytestmark = [pytest.mark.django_db, pytest.mark.urls("config.tests.urls")]

ANON_RATE = 5


@pytest.fixture(autouse=True)
def rates(settings, monkeypatch):
    rates = {"anon": f"{ANON_RATE}/minute", "user": "1200/minute", "login": "10/minute"}
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": rates}
    # DRF's throttles copy the rates when rest_framework.throttling is first imported.
    monkeypatch.setattr(SimpleRateThrottle, "THROTTLE_RATES", rates)
    settings.API_TRUSTED_PROXIES = 0


def echo(peer, forwarded_for=None):
    extra = {"REMOTE_ADDR": peer}
    if forwarded_for is not None:
        extra["HTTP_X_FORWARDED_FOR"] = forwarded_for
    return APIClient().get(reverse("test-echo"), **extra).status_code


def test_anonymous_limit_holds_whatever_x_forwarded_for_says():
    statuses = [echo("203.0.113.5", f"198.51.100.{n + 1}") for n in range(ANON_RATE + 3)]

    assert statuses[:ANON_RATE] == [status.HTTP_200_OK] * ANON_RATE
    assert set(statuses[ANON_RATE:]) == {status.HTTP_429_TOO_MANY_REQUESTS}


def test_a_forged_loopback_header_counts_against_the_sender_not_loopback():
    for _ in range(ANON_RATE + 1):
        echo("203.0.113.5", "127.0.0.1")

    assert echo("127.0.0.1") == status.HTTP_200_OK


def test_behind_a_trusted_proxy_each_client_has_its_own_quota(settings):
    settings.API_TRUSTED_PROXIES = 1
    statuses = [echo("127.0.0.1", f"10.0.0.{n}, 198.51.100.7") for n in range(ANON_RATE + 1)]

    assert statuses[-1] == status.HTTP_429_TOO_MANY_REQUESTS
    assert echo("127.0.0.1", "198.51.100.8") == status.HTTP_200_OK


def test_the_user_rate_of_an_anonymous_request_also_keys_on_the_client_address(monkeypatch):
    """Without a user, DRF's user throttle falls back to the address too."""
    monkeypatch.setitem(SimpleRateThrottle.THROTTLE_RATES, "anon", None)
    monkeypatch.setitem(SimpleRateThrottle.THROTTLE_RATES, "user", f"{ANON_RATE}/minute")

    statuses = [echo("203.0.113.5", f"198.51.100.{n + 1}") for n in range(ANON_RATE + 1)]

    assert statuses[-1] == status.HTTP_429_TOO_MANY_REQUESTS


@pytest.mark.parametrize(
    ("address", "ident"),
    [
        ("203.0.113.7", "203.0.113.7"),
        ("::ffff:203.0.113.7", "203.0.113.7"),
        ("2001:db8:1:2:aaaa:bbbb:cccc:dddd", "2001:db8:1:2::/64"),
        ("2001:db8:1:2::1", "2001:db8:1:2::/64"),
        ("", ""),
    ],
)
def test_a_quota_is_an_ipv4_address_or_an_ipv6_64(address, ident):
    assert throttle_ident(address) == ident
