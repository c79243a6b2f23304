"""Development mode (``make run`` with nothing configured) is no gift to an attacker: its secret
key is its own, random and kept private, and a foreign Host header gets a plain 400, never the
debug page with the process's environment on it.

The settings are loaded in fresh processes, as ``make run`` loads them, with the key file in a
temporary directory (DJANGO_DEV_SECRET_FILE), never in the checkout.
"""

import contextlib
import json
import os
import re
import secrets
import stat
import subprocess
import sys
import uuid
from http import HTTPStatus
from pathlib import Path

import jwt
import pytest
import requests
from django.conf import settings
from django.core.exceptions import DisallowedHost
from django.http import HttpRequest
from django.test import RequestFactory
from django.views.debug import technical_500_response

from conversations.tests.live_server import (
    LiveServer,
    is_postgres_url,
    postgres_database,
    start_server,
    stop_server,
)
from core import errors

# The key base.py used whenever DJANGO_SECRET_KEY was unset, in the repository for all to read.
PUBLISHED_DEVELOPMENT_KEY = "django-insecure-local-development-key-do-not-deploy"  # noqa: S105
PROBE = "import json, django; from django.conf import settings; django.setup(); " + (
    'print(json.dumps([settings.SECRET_KEY, settings.SIMPLE_JWT["SIGNING_KEY"]]))'
)
STARTING_TOGETHER = 4
REQUEST_TIMEOUT = 15


@pytest.fixture
def development_env(tmp_path):
    """A fresh checkout's environment: DEBUG on, no DJANGO_SECRET_KEY, the key file in tmp."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("DJANGO_", "JWT_"))}
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "config.settings.base",
            "DJANGO_DEBUG": "true",
            "DJANGO_DEV_SECRET_FILE": str(tmp_path / "keys" / "dev-secret-key"),
            "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
            "PYTHONDONTWRITEBYTECODE": "1",
        }
    )
    return env


def start_probe(env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(  # noqa: S603 (our own interpreter)
        [sys.executable, "-c", PROBE],
        env=env,
        cwd=settings.BASE_DIR,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def keys_of(process: subprocess.Popen[str]) -> tuple[str, str]:
    """(SECRET_KEY, the JWT signing key) as the probe ``process`` loaded them."""
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 0, stderr[-3000:]
    secret_key, signing_key = json.loads(stdout.strip().splitlines()[-1])
    return secret_key, signing_key


def test_processes_starting_together_make_and_share_one_private_random_key(development_env):
    key_file = Path(development_env["DJANGO_DEV_SECRET_FILE"])

    probes = [start_probe(development_env) for _ in range(STARTING_TOGETHER)]
    loaded = {keys_of(probe) for probe in probes}

    assert len(loaded) == 1, loaded
    ((secret_key, signing_key),) = loaded
    assert signing_key == secret_key
    assert secret_key != PUBLISHED_DEVELOPMENT_KEY
    assert re.fullmatch(r"[A-Za-z0-9_-]{50,}", secret_key)  # long, and no "$" for django-environ
    assert key_file.read_text().strip() == secret_key
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert sorted(path.name for path in key_file.parent.iterdir()) == [key_file.name]  # no leftovers
    # A later run keeps it.
    assert keys_of(start_probe(development_env)) == (secret_key, secret_key)


def test_another_key_file_gets_another_key(development_env, tmp_path):
    first = keys_of(start_probe(development_env))
    elsewhere = {**development_env, "DJANGO_DEV_SECRET_FILE": str(tmp_path / "other-secret-key")}

    assert keys_of(start_probe(elsewhere)) != first


def test_a_key_in_the_environment_is_used_and_no_file_is_made(development_env):
    key = "a-key-from-the-environment-" * 2

    assert keys_of(start_probe({**development_env, "DJANGO_SECRET_KEY": key})) == (key, key)
    assert not Path(development_env["DJANGO_DEV_SECRET_FILE"]).exists()


@pytest.mark.parametrize(
    ("change", "naming"),
    [
        ({"DJANGO_DEBUG": "false"}, "DJANGO_SECRET_KEY"),
        ({}, "holds no secret key"),
        ({"DJANGO_DEV_SECRET_FILE": "/proc/no-key-can-be-kept-here"}, "DJANGO_DEV_SECRET_FILE"),
    ],
    ids=["debug off", "empty key file", "key file not writable"],
)
def test_settings_refuse_to_load_without_a_usable_key(development_env, change, naming):
    key_file = Path(development_env["DJANGO_DEV_SECRET_FILE"])
    key_file.parent.mkdir()
    key_file.write_text("\n")

    process = start_probe({**development_env, **change})
    _, stderr = process.communicate(timeout=120)

    assert process.returncode != 0
    last_line = stderr.strip().splitlines()[-1]
    assert last_line.startswith("django.core.exceptions.ImproperlyConfigured: "), stderr[-2000:]
    assert naming in last_line


def debug_page_of_an_error(request: HttpRequest) -> str:
    """Django's debug page for an exception raised here, in a frame whose only local is ``request``."""
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        return technical_500_response(request, *sys.exc_info()).content.decode()


def test_debug_page_hides_urls_that_may_carry_passwords(rf: RequestFactory, settings):
    database_password, redis_password = secrets.token_hex(8), secrets.token_hex(8)
    settings.DEBUG = True
    settings.REDIS_URL = f"redis://:{redis_password}@cache:6379/0"
    # The settings repeat REDIS_URL as the cache's LOCATION (a locmem cache here: any name will do).
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
            "LOCATION": settings.REDIS_URL,
        }
    }
    # runserver's request META holds the process's environment.
    request = rf.get("/", DATABASE_URL=f"postgres://chat:{database_password}@db/chat")

    page = debug_page_of_an_error(request)

    assert "boom" in page
    assert "DATABASE_URL" in page
    assert database_password not in page
    assert redis_password not in page


@pytest.mark.parametrize("debug", [False, True])
def test_a_foreign_host_gets_the_400_handlers_answer_with_debug_on_or_off(client, rf, settings, debug):
    settings.DEBUG = debug

    api = client.get("/api/v1/auth/me/", HTTP_HOST="evil.example")
    page = client.get("/healthz", HTTP_HOST="evil.example")

    assert api.status_code == page.status_code == HTTPStatus.BAD_REQUEST
    assert json.loads(api.content) == {"detail": "Bad request."}
    assert page.content == errors.bad_request(rf.get("/healthz"), DisallowedHost()).content


# --- over HTTP, against runserver started as `make run` starts it --------------------------


@pytest.fixture
def database_url(tmp_path):
    """A database of its own: a new PostgreSQL database under scripts/with-postgres, else SQLite."""
    admin_url = os.environ.get("DATABASE_URL")
    if admin_url and is_postgres_url(admin_url):
        with postgres_database(admin_url) as url:
            yield url
    else:
        yield f"sqlite:///{tmp_path / 'db.sqlite3'}"


@contextlib.contextmanager
def make_run(workdir: Path, database_url: str):
    """``make run`` in a fresh checkout: the key file is kept in ``workdir`` between runs."""
    server = start_server(workdir, database_url, development=True)
    try:
        yield server
    finally:
        stop_server(server)


def get(server: LiveServer, path: str, **headers: str) -> requests.Response:
    return requests.get(f"{server.url}{path}", headers=headers, timeout=REQUEST_TIMEOUT)


def signed_with(key: str, token: str) -> dict[str, str]:
    """The Authorization header of ``token``'s claims signed with ``key`` instead."""
    claims = jwt.decode(token, options={"verify_signature": False})
    return {"Authorization": f"Bearer {jwt.encode(claims, key, algorithm='HS256')}"}


def test_make_run_signs_with_its_own_key_kept_across_restarts(tmp_path, database_url):
    credentials = {"username": f"dev-{uuid.uuid4().hex[:8]}", "password": "Lantern-Orbit-4417"}
    with make_run(tmp_path, database_url) as server:
        registered = requests.post(
            f"{server.url}/api/v1/auth/register/", json=credentials, timeout=REQUEST_TIMEOUT
        )
        assert registered.status_code == HTTPStatus.CREATED, registered.text
        issued = requests.post(f"{server.url}/api/v1/auth/token/", json=credentials, timeout=REQUEST_TIMEOUT)
        assert issued.status_code == HTTPStatus.OK, issued.text
        access = issued.json()["access"]

        forged = get(server, "/api/v1/auth/me/", **signed_with(PUBLISHED_DEVELOPMENT_KEY, access))
        assert forged.status_code == HTTPStatus.UNAUTHORIZED, forged.text

    key = (tmp_path / "dev-secret-key").read_text().strip()
    assert key != PUBLISHED_DEVELOPMENT_KEY
    with make_run(tmp_path, database_url) as server:
        # The second run signs with the first run's key, kept in the file: its tokens still work.
        me = get(server, "/api/v1/auth/me/", Authorization=f"Bearer {access}")
        assert me.status_code == HTTPStatus.OK, me.text + server.log_tail()
        resigned = get(server, "/api/v1/auth/me/", **signed_with(key, access))
        assert resigned.status_code == HTTPStatus.OK, resigned.text
        assert (tmp_path / "dev-secret-key").read_text().strip() == key


def test_a_foreign_host_is_a_plain_400_without_the_environment(tmp_path, database_url):
    with make_run(tmp_path, database_url) as server:
        refused = {
            path: get(server, path, Host="evil.example") for path in ("/api/v1/auth/me/", "/healthz", "/")
        }
        log = server.log()

    for path, answer in refused.items():
        assert answer.status_code == HTTPStatus.BAD_REQUEST, f"{path}: {answer.text[:3000]}"
        for leak in (database_url, "DATABASE_URL", "DJANGO_", "Traceback", "evil.example"):
            assert leak not in answer.text, f"{path}: {answer.text[:3000]}"
    assert refused["/api/v1/auth/me/"].json() == {"detail": "Bad request."}
    assert refused["/healthz"].headers["Content-Type"].startswith("text/html")
    assert "Invalid HTTP_HOST header: 'evil.example'" in log
