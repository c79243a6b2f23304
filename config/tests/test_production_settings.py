"""config.settings.production, each case in a fresh process as a deployment starts it:
``manage.py check --deploy`` is clean with a real secret, and the settings refuse to load
with DEBUG on, without a real secret or signing key, or without allowed hosts."""

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings

from config.tests.test_development_mode import PUBLISHED_DEVELOPMENT_KEY

MANAGE_PY = str(Path(settings.BASE_DIR) / "manage.py")
REFUSAL = "django.core.exceptions.ImproperlyConfigured: "


def real_secret() -> str:
    return secrets.token_urlsafe(50)


# External tokens as a deployment should configure them: every case below breaks one part.
EXTERNAL_TOKENS = {
    "JWT_EXTERNAL_KEY": "the-identity-providers-32-character-or-longer-secret",
    "JWT_EXTERNAL_ALGORITHM": "HS256",
    "JWT_EXTERNAL_ISSUER": "https://id.chat.example/",
    "JWT_EXTERNAL_AUDIENCE": "conversation-history",
}


@pytest.fixture
def production_env(tmp_path):
    """What a deployment sets, and nothing of the environment running the tests: a real
    secret key, one allowed host, and a database that is not the repository's SQLite file."""
    return {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp_path),
        "PYTHONDONTWRITEBYTECODE": "1",
        "DJANGO_SETTINGS_MODULE": "config.settings.production",
        "DJANGO_SECRET_KEY": real_secret(),
        "DJANGO_ALLOWED_HOSTS": "example.com",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'production.sqlite3'}",
        # Where a development run (DEBUG on, refused here) would keep its key: not the checkout.
        "DJANGO_DEV_SECRET_FILE": str(tmp_path / "dev-secret-key"),
    }


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 (our own interpreter and manage.py)
        [sys.executable, *args],
        env=env,
        cwd=settings.BASE_DIR,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def manage(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return run(env, MANAGE_PY, *args)


def assert_refuses_to_start(result: subprocess.CompletedProcess[str], *, naming: str) -> None:
    """A non-zero exit whose last line is the ImproperlyConfigured naming what to set."""
    assert result.returncode != 0
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith(REFUSAL), result.stderr[-2000:]
    assert naming in last_line
    assert not result.stdout


def test_check_deploy_reports_no_issues_with_a_real_secret(production_env):
    result = manage(production_env, "check", "--deploy", "--fail-level", "WARNING")

    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "System check identified no issues (0 silenced)."


@pytest.mark.parametrize(
    ("change", "naming"),
    [
        ({"DJANGO_SECRET_KEY": None}, "DJANGO_SECRET_KEY"),
        ({"DJANGO_SECRET_KEY": PUBLISHED_DEVELOPMENT_KEY}, "DJANGO_SECRET_KEY"),
        ({"DJANGO_SECRET_KEY": f"django-insecure-{real_secret()}"}, "DJANGO_SECRET_KEY"),
        ({"DJANGO_DEBUG": "true"}, "DJANGO_DEBUG"),
        ({"DJANGO_DEBUG": "true", "DJANGO_SECRET_KEY": None}, "DJANGO_DEBUG"),
        ({"JWT_SIGNING_KEY": PUBLISHED_DEVELOPMENT_KEY}, "JWT_SIGNING_KEY"),
        ({"JWT_SIGNING_KEY": f"django-insecure-{real_secret()}"}, "JWT_SIGNING_KEY"),
        ({"JWT_SIGNING_KEY": ""}, "JWT_SIGNING_KEY"),
        ({"JWT_SIGNING_KEY": "too-short-for-hs256"}, "JWT_SIGNING_KEY"),
        ({"DJANGO_ALLOWED_HOSTS": None}, "DJANGO_ALLOWED_HOSTS"),
        ({"DJANGO_ALLOWED_HOSTS": " , "}, "DJANGO_ALLOWED_HOSTS"),
        ({"DJANGO_SECURE_PROXY_SSL_HEADER": "X-Forwarded-Proto"}, "DJANGO_SECURE_PROXY_SSL_HEADER"),
        ({**EXTERNAL_TOKENS, "JWT_EXTERNAL_ISSUER": None}, "JWT_EXTERNAL_ISSUER"),
        ({**EXTERNAL_TOKENS, "JWT_EXTERNAL_AUDIENCE": None}, "JWT_EXTERNAL_AUDIENCE"),
        ({**EXTERNAL_TOKENS, "JWT_EXTERNAL_AUDIENCE": " "}, "JWT_EXTERNAL_AUDIENCE"),
        ({**EXTERNAL_TOKENS, "JWT_EXTERNAL_KEY": "abc"}, "JWT_EXTERNAL_KEY"),
        ({**EXTERNAL_TOKENS, "JWT_EXTERNAL_KEY": "x" * 31}, "JWT_EXTERNAL_KEY"),
    ],
    ids=[
        "secret key unset",
        "secret key the development default once committed",
        "secret key marked insecure by django",
        "debug on",
        "debug on without a secret key",
        "signing key the development default once committed",
        "signing key marked insecure by django",
        "signing key empty",
        "signing key shorter than 32 characters",
        "allowed hosts unset",
        "allowed hosts empty",
        "proxy ssl header without its value",
        "external tokens without an issuer",
        "external tokens without an audience",
        "external tokens with a blank audience",
        "external hs256 key of 3 characters",
        "external hs256 key of 31 characters",
    ],
)
def test_production_refuses_to_start(production_env, change, naming):
    env = {**production_env, **{k: v for k, v in change.items() if v is not None}}
    for name in (k for k, v in change.items() if v is None):
        env.pop(name, None)

    assert_refuses_to_start(manage(env, "check", "--deploy"), naming=naming)


@pytest.mark.parametrize(
    ("change", "warned"),
    [
        ({"METRICS_ALLOW_LOOPBACK": "true"}, True),
        # Trusted proxies change nothing: /metrics judges the peer, never X-Forwarded-For.
        ({"METRICS_ALLOW_LOOPBACK": "true", "API_TRUSTED_PROXIES": "1"}, True),
        ({"API_TRUSTED_PROXIES": "1"}, False),
    ],
    ids=["loopback", "loopback behind a trusted proxy", "default"],
)
def test_check_deploy_warns_of_metrics_trusting_loopback(production_env, change, warned):
    result = manage({**production_env, **change}, "check", "--deploy", "--fail-level", "WARNING")

    assert (result.returncode != 0) == warned, result.stdout + result.stderr
    assert ("operations.W001" in result.stdout + result.stderr) == warned


# Never connected to: the checks below read settings only.
POSTGRES_URL = "postgres://chat:chat@127.0.0.1:9/chat"


@pytest.mark.parametrize(
    ("change", "warned"),
    [
        ({"DATABASE_URL": POSTGRES_URL}, True),
        ({"DATABASE_URL": POSTGRES_URL, "REDIS_URL": "redis://127.0.0.1:6379/0"}, False),
        ({}, False),
        (
            {
                "DATABASE_URL": POSTGRES_URL,
                "DJANGO_SETTINGS_MODULE": "config.settings.base",
                "DJANGO_DEBUG": "true",
            },
            False,
        ),
    ],
    ids=["postgresql without redis", "postgresql with redis", "sqlite", "postgresql in development"],
)
def test_check_warns_of_throttles_counted_per_process(production_env, change, warned):
    """Several workers or servers on PostgreSQL need REDIS_URL, or each counts its own quota.
    A plain ``check`` says so, as ``migrate`` at every container start does."""
    result = manage({**production_env, **change}, "check", "--fail-level", "WARNING")

    output = result.stdout + result.stderr
    assert (result.returncode != 0) == warned, output
    assert ("operations.W002" in output) == warned
    if warned:
        assert "REDIS_URL is unset" in output


PROBE = """
import json
import django
from django.conf import settings
from django.test import Client

django.setup()
client = Client()
plain_api = client.get("/api/v1/auth/me/")
print(json.dumps({
    "debug": settings.DEBUG,
    "browsable_api": settings.BROWSABLE_API,
    "authentication": settings.REST_FRAMEWORK["DEFAULT_AUTHENTICATION_CLASSES"],
    "signing_key_is_secret_key": settings.SIMPLE_JWT["SIGNING_KEY"] == settings.SECRET_KEY,
    "proxy_ssl_header": settings.SECURE_PROXY_SSL_HEADER,
    "plain_api": [plain_api.status_code, plain_api.get("Location")],
    "plain_healthz": client.get("/healthz").status_code,
    "metrics_loopback": settings.METRICS_ALLOW_LOOPBACK,
    "plain_metrics": client.get("/metrics", headers={"Authorization": "Bearer probe-token"}).status_code,
    "loopback_metrics": client.get("/metrics").status_code,
    "forwarded_https_api": client.get("/api/v1/auth/me/", headers={"X-Forwarded-Proto": "https"}).status_code,
    "https_api": client.get("/api/v1/auth/me/", secure=True).status_code,
    "hsts": client.get("/healthz", secure=True).get("Strict-Transport-Security"),
    "plain_root": [client.get("/").status_code, client.get("/").get("Location")],
    "https_root": [client.get("/", secure=True).status_code, client.get("/", secure=True).get("Location")],
    "https_docs": client.get("/api/docs/", secure=True).status_code,
    "nosniff": client.get("/healthz", secure=True).get("X-Content-Type-Options"),
}))
"""


def probe(env: dict[str, str]) -> dict:
    result = run({**env, "DJANGO_ALLOWED_HOSTS": "testserver", "METRICS_TOKEN": "probe-token"}, "-c", PROBE)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_production_serves_api_over_https_only_but_probes_and_metrics_over_plain_http(production_env):
    answers = probe(production_env)

    assert answers["debug"] is False
    assert answers["browsable_api"] is False
    assert answers["authentication"] == ["accounts.authentication.JWTAuthentication"]
    assert answers["signing_key_is_secret_key"] is True
    assert answers["plain_api"] == [301, "https://testserver/api/v1/auth/me/"]
    assert answers["plain_healthz"] == 200
    assert answers["plain_metrics"] == 200
    # Behind a proxy on the same host every client is loopback: production does not trust it.
    assert answers["metrics_loopback"] is False
    assert answers["loopback_metrics"] == 403
    assert answers["https_api"] == 401
    assert answers["hsts"] == "max-age=31536000; includeSubDomains; preload"
    assert answers["nosniff"] == "nosniff"
    # The root leads to the docs once on HTTPS, as any other page does.
    assert answers["plain_root"] == [301, "https://testserver/"]
    assert answers["https_root"] == [302, "/api/docs/"]
    assert answers["https_docs"] == 200
    # Without a configured proxy header, a client cannot claim HTTPS by sending one.
    assert answers["forwarded_https_api"] == 301


def test_behind_a_tls_proxy_its_header_marks_requests_as_https(production_env):
    answers = probe({**production_env, "DJANGO_SECURE_PROXY_SSL_HEADER": "X-Forwarded-Proto,https"})

    assert answers["proxy_ssl_header"] == ["HTTP_X_FORWARDED_PROTO", "https"]
    assert answers["forwarded_https_api"] == 401
    assert answers["plain_api"][0] == 301


def test_the_redirect_and_hsts_can_be_left_to_a_proxy(production_env):
    answers = probe(
        {**production_env, "DJANGO_SECURE_SSL_REDIRECT": "false", "DJANGO_SECURE_HSTS_SECONDS": "0"}
    )

    assert answers["plain_api"] == [401, None]
    assert answers["hsts"] is None


def test_check_deploy_reports_no_issues_with_external_tokens_fully_configured(production_env):
    result = manage({**production_env, **EXTERNAL_TOKENS}, "check", "--deploy", "--fail-level", "WARNING")

    assert result.returncode == 0, result.stdout + result.stderr


def test_a_signing_key_of_its_own_is_used_when_set(production_env):
    answers = probe({**production_env, "JWT_SIGNING_KEY": real_secret()})

    assert answers["signing_key_is_secret_key"] is False
