"""The throttles of every view, counting in Django's cache (``REDIS_URL`` shares it).

An anonymous client is known by ``core.client.client_address``: DRF's own ``get_ident`` takes
the whole X-Forwarded-For header while ``NUM_PROXIES`` is unset, so rotating it escaped every
limit and forging ``127.0.0.1`` spent the loopback client's quota.

Logins have two more limits of rate ``login`` (``API_THROTTLE_LOGIN``), one per client address
and one per username. DRF checks throttles in ``APIView.initial``, so both refuse before the
serializer hashes the password: a throttled guess costs no PBKDF2. A password change checks
the old password, so it spends its account's login quota too: a stolen access token is no
faster way to guess the password than the login.
"""

import hashlib
import ipaddress
import unicodedata
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from rest_framework import throttling
from rest_framework.request import Request

if TYPE_CHECKING:  # DRF imports this module while rest_framework.views is still loading.
    from rest_framework.views import APIView

from core.client import client_address

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


class AnonRateThrottle(ClientAddressIdent, throttling.AnonRateThrottle):
    """Rate ``anon`` (``API_THROTTLE_ANON``) per client address, for requests without a user."""


class UserRateThrottle(ClientAddressIdent, throttling.UserRateThrottle):
    """Rate ``user`` (``API_THROTTLE_USER``) per user; per client address without one."""


class LoginAddressRateThrottle(ClientAddressIdent, throttling.SimpleRateThrottle):
    """Rate ``login`` per client address: guessing many accounts from one place."""

    scope = "login"

    def get_cache_key(self, request: Request, view: "APIView") -> str:
        return f"throttle_login_address_{self.get_ident(request)}"


class LoginUsernameRateThrottle(throttling.SimpleRateThrottle):
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
