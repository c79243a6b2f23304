"""The throttles of every view, counting in Django's cache (``REDIS_URL`` shares it).

An anonymous client is known by ``core.client.client_address``: DRF's own ``get_ident`` takes
the whole X-Forwarded-For header while ``NUM_PROXIES`` is unset, so rotating it escaped every
limit and forging ``127.0.0.1`` spent the loopback client's quota.

Logins have two more limits of rate ``login`` (``API_THROTTLE_LOGIN``), one per client address
and one per username. DRF checks throttles in ``APIView.initial``, so both refuse before the
serializer hashes the password: a throttled guess costs no PBKDF2. A password change checks
the old password, so it spends its account's login quota too: a stolen access token is no
faster way to guess the password than the login.

Several servers (or workers) share one limit only if checking the quota and spending it is one
step: DRF's ``SimpleRateThrottle`` reads a user's request times, decides, and writes them back,
so two servers taking that user's requests at once both admit the last slot (measured with two
gunicorn servers on one Redis: 18 of a burst admitted under a limit of 10). ``WindowThrottle``
keeps DRF's sliding window and its answers (the limit, Retry-After, scopes, ``none``) and makes
the step atomic: one Lua script on Redis, a lock around DRF's own steps in this process's
memory (the cache without REDIS_URL, which no other process sees anyway).
"""

import hashlib
import ipaddress
import secrets
import threading
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from django.core.cache import DEFAULT_CACHE_ALIAS, BaseCache, caches
from django.core.cache.backends.redis import RedisCache, RedisCacheClient
from rest_framework import throttling
from rest_framework.request import Request

if TYPE_CHECKING:  # DRF imports this module while rest_framework.views is still loading.
    from rest_framework.views import APIView

from core.client import client_address


@dataclass(frozen=True)
class Window:
    """What a request found in its quota's window: whether it was admitted, how many requests
    the window holds (this one included when admitted), and the oldest one's time."""

    admitted: bool
    count: int
    oldest: float | None


class WindowThrottle(throttling.SimpleRateThrottle):
    """DRF's throttle, whose check and record of a request are one atomic step in the cache.

    As DRF's: a request is admitted when fewer than ``num_requests`` requests were admitted in
    the last ``duration`` seconds (those at ``now - duration`` or before have left the window),
    and only an admitted one is recorded; a refusal's wait is DRF's ``wait()``.
    """

    # Set by DRF's __init__ from the rate (None with rate ``none``, which is never checked).
    num_requests: int
    duration: int
    window: Window

    def allow_request(self, request: Request, view: "APIView") -> bool:
        if self.rate is None:
            return True
        self.key = self.get_cache_key(request, view)
        if self.key is None:
            return True
        self.now = self.timer()
        self.window = spend(
            caches[DEFAULT_CACHE_ALIAS],
            self.key,
            now=self.now,
            limit=self.num_requests,
            duration=self.duration,
        )
        return self.window.admitted

    def wait(self) -> float | None:
        """DRF's, of the window the refused request found."""
        oldest = self.window.oldest
        remaining = self.duration if oldest is None else self.duration - (self.now - oldest)
        available = self.num_requests - self.window.count + 1
        return None if available <= 0 else remaining / float(available)


def spend(cache: BaseCache, key: str, *, now: float, limit: int, duration: int) -> Window:
    """Admit a request at ``now`` to the window of ``key`` if it has room, and record it. The
    settings make the cache Redis (REDIS_URL) or this process's memory, nothing else."""
    if isinstance(cache, RedisCache):
        return _spend_in_redis(cache, key, now=now, limit=limit, duration=duration)
    return _spend_in_this_process(cache, key, now=now, limit=limit, duration=duration)


# KEYS[1]: the window, a sorted set of request times. ARGV: the time at or before which requests
# have left it, the limit, this request's time, a member name of its own, the window's lifetime
# in seconds. Times travel as Python's exact decimal strings: Lua would print numbers with 14
# digits, rounding them to 0.1 ms.
WINDOW_SCRIPT = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
local count = redis.call('ZCARD', KEYS[1])
if count >= tonumber(ARGV[2]) then
    local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
    return {0, count, oldest[2]}
end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[4])
redis.call('EXPIRE', KEYS[1], ARGV[5])
return {1, count + 1}
"""


def _spend_in_redis(cache: RedisCache, key: str, *, now: float, limit: int, duration: int) -> Window:
    """One Lua script: Redis runs it alone, so no other server's request comes in between.
    The window is a key of its own (``…:window``), not DRF's list: servers of an older
    release, still reading that list during a rolling upgrade, find no sorted set there."""
    window_key = cache.make_and_validate_key(f"{key}:window")
    client = cast(RedisCacheClient, cache._cache).get_client(window_key, write=True)  # type: ignore[attr-defined]
    member = f"{now!r}:{secrets.token_hex(8)}"  # two requests at one time are two entries
    reply = client.register_script(WINDOW_SCRIPT)(
        keys=[window_key], args=[repr(now - duration), limit, repr(now), member, duration]
    )
    oldest = float(reply[2]) if len(reply) > 2 else None
    return Window(admitted=bool(reply[0]), count=int(reply[1]), oldest=oldest)


# Guards the read-modify-write below: the cache it runs on lives in this process's memory.
_THIS_PROCESS = threading.Lock()


def _spend_in_this_process(cache: BaseCache, key: str, *, now: float, limit: int, duration: int) -> Window:
    """DRF's own steps (its history list, newest first) under a lock of this process."""
    with _THIS_PROCESS:
        history: list[float] = cache.get(key, [])
        while history and history[-1] <= now - duration:
            history.pop()
        if len(history) >= limit:
            return Window(admitted=False, count=len(history), oldest=history[-1] if history else None)
        history.insert(0, now)
        cache.set(key, history, duration)
        return Window(admitted=True, count=len(history), oldest=history[-1])


# Longer than any username (150), short enough to bound the normalisation of a forged one.
USERNAME_KEY_LENGTH = 256


# An IPv6 client usually holds a whole /64 (the smallest prefix a site is handed), so
# counting per address would give it 2**64 quotas.
IPV6_CLIENT_PREFIX = 64


class ClientAddressIdent:
    """Names an anonymous client by the address ``core.client`` trusts: an IPv4 address, or
    the /64 network of an IPv6 one."""

    def get_ident(self, request: Request) -> str:
        return throttle_ident(client_address(request._request))


def throttle_ident(address: str) -> str:
    """``address`` as one quota: itself for IPv4 (also IPv4-mapped IPv6), its /64 for IPv6."""
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(parsed, ipaddress.IPv6Address):
        if parsed.ipv4_mapped is not None:
            return str(parsed.ipv4_mapped)
        return str(ipaddress.IPv6Network((parsed, IPV6_CLIENT_PREFIX), strict=False))
    return str(parsed)


class AnonRateThrottle(ClientAddressIdent, WindowThrottle, throttling.AnonRateThrottle):
    """Rate ``anon`` (``API_THROTTLE_ANON``) per client address, for requests without a user."""


class UserRateThrottle(ClientAddressIdent, WindowThrottle, throttling.UserRateThrottle):
    """Rate ``user`` (``API_THROTTLE_USER``) per user; per client address without one."""


class LoginAddressRateThrottle(ClientAddressIdent, WindowThrottle):
    """Rate ``login`` per client address: guessing many accounts from one place."""

    scope = "login"

    def get_cache_key(self, request: Request, view: "APIView") -> str:
        return f"throttle_login_address_{self.get_ident(request)}"


class LoginUsernameRateThrottle(WindowThrottle):
    """Rate ``login`` per username, whatever the address: guessing one account from many."""

    scope = "login"

    def get_cache_key(self, request: Request, view: "APIView") -> str | None:
        username = username_key(self.username(request))
        return None if username is None else f"throttle_login_username_{username}"

    def username(self, request: Request) -> Any:
        data = request.data  # parsed here, before the view: a malformed body is already a 400
        return data.get("username") if isinstance(data, Mapping) else None


class PasswordChangeRateThrottle(LoginUsernameRateThrottle):
    """The caller's account's login quota, spent by each password change (it checks the old
    password)."""

    def username(self, request: Request) -> Any:
        return request.user.get_username()


def username_key(value: Any) -> str | None:
    """One key for every spelling of a username that could reach the same account.

    Trimmed as the serializer's CharField trims it, NFKC-normalised as registration stores it,
    casefolded as usernames are unique regardless of case; hashed so the key is short and
    made of safe characters. None when the value is no username the serializer would take.
    """
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return None
    folded = unicodedata.normalize("NFKC", str(value).strip()[:USERNAME_KEY_LENGTH]).casefold()
    return hashlib.sha256(folded.encode(errors="surrogatepass")).hexdigest()


class ExportRateThrottle(UserRateThrottle):
    """Rate ``export`` (``API_THROTTLE_EXPORT``) per user, on top of ``user``: an export reads
    every one of the user's messages."""

    scope = "export"
