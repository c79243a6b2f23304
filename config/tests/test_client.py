"""The client address (core/client.py): X-Forwarded-For is read only as far as trusted."""

import pytest
from django.test import RequestFactory

from core.client import client_address

factory = RequestFactory()


def request_from(peer: str, forwarded_for: str | None = None):
    request = factory.get("/", REMOTE_ADDR=peer)
    if forwarded_for is not None:
        request.META["HTTP_X_FORWARDED_FOR"] = forwarded_for
    return request


def test_without_trusted_proxies_a_forged_header_is_ignored(settings):
    settings.API_TRUSTED_PROXIES = 0
    assert client_address(request_from("203.0.113.7", "127.0.0.1")) == "203.0.113.7"


@pytest.mark.parametrize(
    ("trusted", "forwarded_for", "expected"),
    [
        # One proxy (nginx) appends the peer it saw; what the client sent stays to its left.
        (1, "198.51.100.9", "198.51.100.9"),
        (1, "127.0.0.1, 198.51.100.9", "198.51.100.9"),
        (1, " 10.0.0.1 ,, 198.51.100.9 ", "198.51.100.9"),
        # Two proxies: the second appended the first's address; the first appended the client.
        (2, "127.0.0.1, 198.51.100.9, 10.0.0.2", "198.51.100.9"),
    ],
)
def test_trusted_proxies_name_the_client_from_the_right(settings, trusted, forwarded_for, expected):
    settings.API_TRUSTED_PROXIES = trusted
    assert client_address(request_from("10.0.0.3", forwarded_for)) == expected


@pytest.mark.parametrize("forwarded_for", [None, "", " , "])
def test_a_request_that_skipped_the_proxies_is_the_peer(settings, forwarded_for):
    settings.API_TRUSTED_PROXIES = 2
    assert client_address(request_from("10.0.0.3", forwarded_for)) == "10.0.0.3"
    assert client_address(request_from("10.0.0.3", "198.51.100.9")) == "10.0.0.3"
