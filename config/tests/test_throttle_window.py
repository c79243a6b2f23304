"""``core.throttling.WindowThrottle`` answers as DRF's ``SimpleRateThrottle`` does, request for
request, on both caches the service runs on: this process's memory and Redis (REDIS_URL; the
Redis cases run under ``make test-cluster``, which starts one). Its check and record are one
step, so requests arriving at once never admit more than the limit."""

import os
import secrets
import sys
import threading

import pytest
from django.core.cache import caches
from django.urls import reverse
from rest_framework import status
from rest_framework.test import APIClient
from rest_framework.throttling import SimpleRateThrottle

from core.throttling import WindowThrottle, spend

pytestmark = pytest.mark.urls("config.tests.urls")

LIMIT, DURATION = 3, 60
# A time.time() of this decade, with the fractions the clock gives.
T0 = 1_790_000_000.123456


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.cluster)])
def cache_kind(request, settings):
    """The cache of each kind, with keys of this test's own."""
    if request.param == "redis":
        url = os.environ.get("REDIS_URL")
        if not url:
            pytest.skip("needs REDIS_URL: run under make test-cluster")
        backend = {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": url}
    else:
        backend = {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}
    settings.CACHES = {"default": {**backend, "KEY_PREFIX": f"test-{secrets.token_hex(6)}"}}
    return request.param


@pytest.fixture
def rates(monkeypatch):
    rates = {"quota": f"{LIMIT}/minute", "off": None, "zero": "0/minute"}
    # DRF's throttles copy the rates when rest_framework.throttling is first imported.
    monkeypatch.setattr(SimpleRateThrottle, "THROTTLE_RATES", rates)
    return rates


class Drf(SimpleRateThrottle):
    """DRF's own throttle: the reference."""

    scope = "quota"

    def get_cache_key(self, request, view):
        return "throttle_reference"


class Windowed(WindowThrottle):
    scope = "quota"

    def get_cache_key(self, request, view):
        return "throttle_windowed"


def attempt(throttle_class, at, scope="quota"):
    """A request at time ``at``: whether it is admitted, and the wait DRF would say when not."""
    throttle_class = type(throttle_class.__name__, (throttle_class,), {"scope": scope})
    throttle = throttle_class()
    throttle.timer = lambda: at
    if throttle.allow_request(None, None):
        return True, None
    return False, throttle.wait()


# Admitted, refused, the oldest leaving exactly at its minute, a refusal not counted, fractions.
TIMES = [0, 10.5, 20.25, 30, 59.999999, 60, 60.000001, 70.5, 70.5, 80.25, 119.9, 130.5, 300, 300, 300, 300]


def test_answers_as_drf_request_for_request(cache_kind, rates):
    ours = [attempt(Windowed, T0 + t) for t in TIMES]
    drf = [attempt(Drf, T0 + t) for t in TIMES]

    assert ours == drf
    assert [admitted for admitted, _ in ours] == [
        *(True, True, True, False, False, True, False, True, False, True, False, True),
        *(True, True, True, False),
    ]
    assert ours[3] == (False, DURATION - 30)  # Retry-After: until the oldest leaves


def test_a_refused_request_is_not_counted(cache_kind, rates):
    for t in (0, 1, 2):
        assert attempt(Windowed, T0 + t) == (True, None)
    for t in range(3, 60):
        assert attempt(Windowed, T0 + t)[0] is False

    assert attempt(Windowed, T0 + 60) == (True, None)


def test_rate_none_admits_everything_and_rate_zero_nothing(cache_kind, rates):
    assert all(attempt(Windowed, T0 + n / 10, scope="off") == (True, None) for n in range(20))
    assert [attempt(Windowed, T0, scope="zero") for _ in range(2)] == [(False, DURATION)] * 2


def test_scopes_count_apart(cache_kind, rates, monkeypatch):
    monkeypatch.setitem(rates, "other", f"{LIMIT}/minute")

    for t in range(LIMIT):
        assert attempt(Windowed, T0 + t)[0]
        assert attempt(type("Other", (Windowed,), {"get_cache_key": lambda *_: "other"}), T0 + t, "other")[0]

    assert attempt(Windowed, T0 + LIMIT)[0] is False


@pytest.fixture
def fast_thread_switches():
    """Threads switch every microsecond rather than every 5 ms: in memory, a check and a
    record that were two steps would be interleaved."""
    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(previous)


@pytest.mark.parametrize("round_", range(3))
def test_requests_at_once_admit_the_limit_not_more(cache_kind, fast_thread_switches, round_):
    """Threads spending one quota at the same moment, as several servers' workers do."""
    admitted, threads = [], 24
    barrier = threading.Barrier(threads)

    def request():
        barrier.wait()
        window = spend(caches["default"], "throttle_at_once", now=T0, limit=5, duration=DURATION)
        admitted.append(window.admitted)

    workers = [threading.Thread(target=request) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()

    assert sorted(admitted) == [False] * (threads - 5) + [True] * 5


def test_a_throttled_request_is_429_with_retry_after(cache_kind, settings, monkeypatch):
    rates = {"anon": "2/minute", "user": None, "login": None}
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": rates}
    monkeypatch.setattr(SimpleRateThrottle, "THROTTLE_RATES", rates)
    client = APIClient()

    answers = [client.get(reverse("test-echo"), REMOTE_ADDR="203.0.113.9") for _ in range(3)]

    assert [a.status_code for a in answers] == [status.HTTP_200_OK] * 2 + [status.HTTP_429_TOO_MANY_REQUESTS]
    assert 0 < int(answers[2]["Retry-After"]) <= DURATION
    assert client.get(reverse("test-echo"), REMOTE_ADDR="203.0.113.10").status_code == status.HTTP_200_OK


def test_an_unreachable_redis_is_a_503_with_retry_after(unreachable_redis, monkeypatch):
    """Not a 500: the throttles cannot count, so nothing is served until Redis is back."""
    rates = {"anon": "2/minute", "user": None, "login": None}
    monkeypatch.setattr(SimpleRateThrottle, "THROTTLE_RATES", rates)

    response = APIClient().get(reverse("test-echo"), REMOTE_ADDR="203.0.113.9")

    assert response.status_code == status.HTTP_503_SERVICE_UNAVAILABLE
    assert response["Retry-After"] == "5"
    assert response.json() == {"detail": "The shared cache is unavailable. Try again shortly."}
