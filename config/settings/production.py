"""Production settings: base, with DEBUG off and HTTPS hardening; ``manage.py check --deploy``
reports nothing with them.

Refuses to start (ImproperlyConfigured) when DEBUG is on, when DJANGO_SECRET_KEY is unset
(base's check, which DEBUG off turns on), when it or the JWT signing key is a key Django marks
insecure (``django-insecure-…``, as the development key this project once committed was), when
the signing key is empty, when external tokens are on (JWT_EXTERNAL_KEY) without
JWT_EXTERNAL_ISSUER and JWT_EXTERNAL_AUDIENCE or with an HS256 key under 32 characters,
and when DJANGO_ALLOWED_HOSTS is unset or empty.

TLS often ends at a proxy in front of the app. Then set DJANGO_SECURE_PROXY_SSL_HEADER to the
header and value the proxy sets on HTTPS requests (``X-Forwarded-Proto,https``; only when the
proxy always sets or strips that header), or switch the redirect off with
DJANGO_SECURE_SSL_REDIRECT=false when the proxy redirects plain HTTP itself. The probes and
/metrics are never redirected: orchestrators and scrapers call them over plain HTTP.

/metrics does not trust loopback unless METRICS_ALLOW_LOOPBACK says so: behind a proxy on the
same host every client is loopback. Scrapers use METRICS_ALLOWED_NETWORKS or METRICS_TOKEN;
``check --deploy`` warns when loopback is trusted without API_TRUSTED_PROXIES (core/checks.py).
"""

import os

from django.core.checks.security.base import SECRET_KEY_INSECURE_PREFIX
from django.core.exceptions import ImproperlyConfigured

# Off unless the environment says otherwise, and base then requires DJANGO_SECRET_KEY; on is
# refused below. Set before base is read: base derives the browsable API and the session
# login from DEBUG.
os.environ.setdefault("DJANGO_DEBUG", "false")
os.environ.setdefault("METRICS_ALLOW_LOOPBACK", "false")

from .base import *  # noqa: E402, F403
from .base import JWT_EXTERNAL, SECRET_KEY, SIMPLE_JWT, env  # noqa: E402

if DEBUG:  # noqa: F405
    raise ImproperlyConfigured("DJANGO_DEBUG must be false with config.settings.production.")

# The prefix of the keys `startproject` writes and `check --deploy` warns of: published keys.
if SECRET_KEY.startswith(SECRET_KEY_INSECURE_PREFIX):
    raise ImproperlyConfigured(
        f"DJANGO_SECRET_KEY must be a secret, not a {SECRET_KEY_INSECURE_PREFIX}… key."
    )

# HS256 keys shorter than the hash's 256 bits are open to offline guessing (RFC 7518, 3.2).
JWT_SIGNING_KEY_MIN_LENGTH = 32
_signing_key = SIMPLE_JWT["SIGNING_KEY"]
if not _signing_key or _signing_key.startswith(SECRET_KEY_INSECURE_PREFIX):
    raise ImproperlyConfigured(
        "Set JWT_SIGNING_KEY to a secret of its own, or leave it unset to use DJANGO_SECRET_KEY: "
        f"an empty key or a {SECRET_KEY_INSECURE_PREFIX}… key is refused."
    )
if "JWT_SIGNING_KEY" in os.environ and len(_signing_key) < JWT_SIGNING_KEY_MIN_LENGTH:
    raise ImproperlyConfigured(f"JWT_SIGNING_KEY must be at least {JWT_SIGNING_KEY_MIN_LENGTH} characters.")

# External tokens (base's JWT_EXTERNAL): a provider trusted without an issuer and audience
# check would let tokens minted for another application in, and a short HS256 key is
# guessable offline.
if JWT_EXTERNAL["KEY"]:
    for _claim in ("ISSUER", "AUDIENCE"):
        if not (JWT_EXTERNAL[_claim] or "").strip():
            raise ImproperlyConfigured(
                f"Set JWT_EXTERNAL_{_claim} when JWT_EXTERNAL_KEY is set: production checks the "
                "issuer and audience of external tokens."
            )
    if JWT_EXTERNAL["ALGORITHM"] == "HS256" and len(JWT_EXTERNAL["KEY"]) < JWT_SIGNING_KEY_MIN_LENGTH:
        raise ImproperlyConfigured(
            f"JWT_EXTERNAL_KEY must be at least {JWT_SIGNING_KEY_MIN_LENGTH} characters with HS256."
        )

# No default: the host names this deployment answers to.
ALLOWED_HOSTS = [host.strip() for host in env.list("DJANGO_ALLOWED_HOSTS", default=[]) if host.strip()]
if not ALLOWED_HOSTS:
    raise ImproperlyConfigured(
        "Set DJANGO_ALLOWED_HOSTS to the comma-separated host names of this deployment."
    )


def proxy_ssl_header(value: str) -> tuple[str, str] | None:
    """``X-Forwarded-Proto,https`` as Django's ``("HTTP_X_FORWARDED_PROTO", "https")``."""
    if not value:
        return None
    header, _, expected = (part.strip() for part in value.partition(","))
    if not header or not expected or "," in expected:
        raise ImproperlyConfigured(
            "DJANGO_SECURE_PROXY_SSL_HEADER must be a header name and its HTTPS value, "
            "e.g. X-Forwarded-Proto,https."
        )
    name = header.upper().replace("-", "_")
    return (name if name.startswith("HTTP_") else f"HTTP_{name}", expected)


SECURE_PROXY_SSL_HEADER = proxy_ssl_header(env.str("DJANGO_SECURE_PROXY_SSL_HEADER", default=""))
SECURE_SSL_REDIRECT = env.bool("DJANGO_SECURE_SSL_REDIRECT", default=True)
# Matched against the path without its leading slash.
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]

SECURE_HSTS_SECONDS = env.int("DJANGO_SECURE_HSTS_SECONDS", default=365 * 24 * 3600)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS", default=True)
SECURE_HSTS_PRELOAD = env.bool("DJANGO_SECURE_HSTS_PRELOAD", default=True)

SESSION_COOKIE_SECURE = True
CSRF_COOKIE_SECURE = True
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
