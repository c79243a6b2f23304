"""Bearer tokens: the service's own simplejwt access tokens and, when configured, the tokens
of an external identity provider.

Which verifier judges a token is decided by one fact: every token simplejwt makes carries its
``token_type`` claim (``TOKEN_TYPE_CLAIM``). A token with that claim is the service's own and is
verified by simplejwt alone (HS256 with ``SIMPLE_JWT["SIGNING_KEY"]``, access tokens only). A
token without it is an external token and is verified with PyJWT alone, with the key and the
single algorithm of ``settings.JWT_EXTERNAL``; when no external key is set it goes to simplejwt,
which refuses it. So each token meets exactly one verifier, the algorithm always comes from
settings (the header's ``alg`` must equal it, ``none`` is never allowed), and a failure in one
verifier never falls through to the other: an expired or refresh token of our own is never
retried with the external key's leeway, and a forged token cannot pick its verifier to any
advantage since it has to pass that verifier's signature check. An external provider whose
tokens carry a ``token_type`` claim is therefore not supported.

An external token reaches only an account that an external token created (``User.is_external``)
and that has not become a local one since (``User.may_use_external_tokens``): naming a
registered, staff or superuser account is a 401, so the provider cannot take those over.

Settings are read on every request, so ``override_settings`` and the ``settings`` fixture work.
"""

import functools
import logging
import uuid
from typing import Any

import jwt
from django.conf import settings
from django.db import DEFAULT_DB_ALIAS
from drf_spectacular.contrib.rest_framework_simplejwt import SimpleJWTScheme
from rest_framework.request import Request
from rest_framework_simplejwt import settings as simplejwt_settings
from rest_framework_simplejwt.authentication import JWTAuthentication as SimpleJWTAuthentication
from rest_framework_simplejwt.exceptions import AuthenticationFailed, InvalidToken
from rest_framework_simplejwt.tokens import Token
from rest_framework_simplejwt.utils import get_md5_hash_password

from accounts.models import User
from accounts.selectors import user_lookup
from accounts.services import ExternalUserConflict, external_user_get_or_create
from core import replicas

logger = logging.getLogger(__name__)

EXTERNAL_ALGORITHMS = frozenset({"HS256", "RS256", "ES256"})
# The contract allows at most this much clock skew on an external token's exp.
MAX_LEEWAY_SECONDS = 30

NO_USER_ID = "Token contained no recognizable user identification"


class JWTAuthentication(SimpleJWTAuthentication):
    """Own simplejwt access tokens, plus external tokens when ``JWT_EXTERNAL["KEY"]`` is set.

    A failure is a 401 whose ``WWW-Authenticate`` is ``Bearer realm="api"``.
    """

    def authenticate(self, request: Request) -> tuple[User, Token | dict[str, Any]] | None:  # type: ignore[override]
        header = self.get_header(request)
        if header is None:
            return None
        raw_token = self.get_raw_token(header)
        if raw_token is None:
            return None

        external = external_settings()
        if external is not None and not is_own_token(raw_token):
            claims = decode_external_token(raw_token, external)
            return self.get_external_user(claims, external), claims

        validated_token = self.get_validated_token(raw_token)
        return self.get_user(validated_token), validated_token

    def get_user(self, validated_token: Token) -> User:  # type: ignore[override]
        """simplejwt's checks, with the user fetched by ``accounts.selectors.user_lookup``: the lookup that
        also gives the connection the user's row-level-security identity."""
        api_settings = simplejwt_settings.api_settings
        try:
            user_id = uuid.UUID(str(validated_token[api_settings.USER_ID_CLAIM]))
        except (KeyError, ValueError) as exc:
            # No user_id, or a correctly signed token whose user_id is not a UUID.
            raise InvalidToken(NO_USER_ID) from exc
        user = user_lookup_for_reads(user_id)
        if user is None:
            raise AuthenticationFailed("User not found", code="user_not_found")
        if api_settings.CHECK_USER_IS_ACTIVE and not user.is_active:
            raise AuthenticationFailed("User is inactive", code="user_inactive")
        if api_settings.CHECK_REVOKE_TOKEN and validated_token.get(
            api_settings.REVOKE_TOKEN_CLAIM
        ) != get_md5_hash_password(user.password):
            raise AuthenticationFailed("The user's password has been changed.", code="password_changed")
        return user

    def get_external_user(self, claims: dict[str, Any], external: dict[str, Any]) -> User:
        user_id = external_user_id(claims, claim=external.get("USER_ID_CLAIM") or "sub")
        try:
            # Known users in the lookup that also sets their identity; created on first use.
            user = user_lookup_for_reads(user_id) or external_user_get_or_create(user_id=user_id)
        except ExternalUserConflict as exc:
            logger.warning("External user %s: its username belongs to another account", user_id)
            raise AuthenticationFailed("User not found", code="user_not_found") from exc
        if not user.may_use_external_tokens:
            # A leaked or misconfigured identity provider must not take over local accounts.
            logger.warning("External token naming %s, an account the external issuer did not create", user_id)
            raise AuthenticationFailed("User not found", code="user_not_found")
        if not user.is_active:
            raise AuthenticationFailed("User is inactive", code="user_inactive")
        return user


def user_lookup_for_reads(user_id: uuid.UUID) -> User | None:
    """``user_lookup`` on the database the request's reads use (a replica that has the user's
    writes, for a GET), or on the primary when that replica does not have the user yet."""
    using = replicas.reads_for(user_id)
    user = user_lookup(user_id, using=using)
    if user is None and using != DEFAULT_DB_ALIAS:
        replicas.use_primary()
        user = user_lookup(user_id)
    return user


class JWTAuthenticationScheme(SimpleJWTScheme):  # type: ignore[no-untyped-call]
    """Documents the class as simplejwt's bearer scheme (spectacular does not match subclasses)."""

    target_class = "accounts.authentication.JWTAuthentication"


def external_settings() -> dict[str, Any] | None:
    """``settings.JWT_EXTERNAL`` when it names a key, else None (external tokens refused)."""
    external: dict[str, Any] | None = getattr(settings, "JWT_EXTERNAL", None)
    if not external or not external.get("KEY"):
        return None
    return external


def is_own_token(raw_token: bytes) -> bool:
    """Whether ``raw_token`` claims to be one of simplejwt's; only routes it, proves nothing."""
    try:
        # Unverified on purpose: the verifier this picks checks the signature.
        unverified = jwt.decode(raw_token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return True  # Not a JWT at all: simplejwt refuses it with its usual message.
    return simplejwt_settings.api_settings.TOKEN_TYPE_CLAIM in unverified


@functools.lru_cache(maxsize=8)
def prepared_key(algorithm: str, key: str) -> Any:
    """The key parsed once (a PEM public key is not reparsed on every request)."""
    return jwt.get_algorithm_by_name(algorithm).prepare_key(key)


def decode_external_token(raw_token: bytes, external: dict[str, Any]) -> dict[str, Any]:
    """The claims of a valid external token; ``InvalidToken`` for anything else."""
    algorithm = external.get("ALGORITHM")
    if algorithm not in EXTERNAL_ALGORITHMS:
        logger.error("JWT_EXTERNAL ALGORITHM %r is not one of %s", algorithm, sorted(EXTERNAL_ALGORITHMS))
        raise InvalidToken()
    try:
        key = prepared_key(algorithm, external["KEY"])
    except (jwt.InvalidKeyError, ValueError, TypeError):
        logger.exception("JWT_EXTERNAL KEY cannot be used with %s", algorithm)
        raise InvalidToken() from None

    issuer = external.get("ISSUER") or None
    audience = external.get("AUDIENCE") or None
    configured_leeway = external.get("LEEWAY_SECONDS")
    leeway = MAX_LEEWAY_SECONDS if configured_leeway is None else int(configured_leeway)
    leeway = min(max(leeway, 0), MAX_LEEWAY_SECONDS)
    try:
        return jwt.decode(
            raw_token,
            key,
            algorithms=[algorithm],
            issuer=issuer,
            audience=audience,
            leeway=leeway,
            options={"require": ["exp"], "verify_aud": audience is not None},
        )
    except jwt.ExpiredSignatureError as exc:
        raise InvalidToken("Token is expired") from exc
    except jwt.PyJWTError as exc:
        raise InvalidToken("Token is invalid") from exc


def external_user_id(claims: dict[str, Any], *, claim: str) -> uuid.UUID:
    """The user id an external token names; ``InvalidToken`` when it names none.

    A user-id claim in the canonical UUID form (8-4-4-4-12 hex digits, any case) is the id
    itself; any other string maps to ``uuid5(NAMESPACE_URL, iss + "#" + value)`` with ``iss``
    the token's issuer or ``""``. Only the canonical form counts as a UUID, so an opaque id
    that happens to be 32 hex digits is mapped, not taken as someone's primary key.
    """
    value = claims.get(claim)
    if not isinstance(value, str) or not value:
        raise InvalidToken(NO_USER_ID)
    try:
        parsed = uuid.UUID(value)
    except ValueError:
        parsed = None
    if parsed is not None and str(parsed) == value.lower():
        return parsed
    issuer = claims.get("iss", "")
    if not isinstance(issuer, str):
        raise InvalidToken("Token is invalid")
    try:
        return uuid.uuid5(uuid.NAMESPACE_URL, f"{issuer}#{value}")
    except UnicodeEncodeError as exc:
        # JSON's \ud800 escapes decode to lone surrogates, which no UTF-8 id can hold.
        raise InvalidToken("Token is invalid") from exc
