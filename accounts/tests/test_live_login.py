"""Finding 1 of issue 10 as the pen test ran it: wrong passwords over real HTTP against
gunicorn as deployed (production settings, PBKDF2), each with a new X-Forwarded-For."""

import contextlib
import os
import secrets

import pytest
import requests

from conversations.tests.live_server import is_postgres_url, postgres_database, start_gunicorn, stop_server

TOKEN = "/api/v1/auth/token/"
REGISTER = "/api/v1/auth/register/"
LOGIN_RATE = 10
ATTEMPTS = 150


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One worker, so its in-process cache holds every count (production shares them in Redis)."""
    workdir = tmp_path_factory.mktemp("live_login")
    owner_url = os.environ.get("DATABASE_URL")
    with contextlib.ExitStack() as stack:
        if owner_url and is_postgres_url(owner_url):
            database_url = stack.enter_context(postgres_database(owner_url))
        else:
            database_url = f"sqlite:///{workdir / 'db.sqlite3'}"
        rates = {"API_THROTTLE_LOGIN": f"{LOGIN_RATE}/minute", "API_THROTTLE_ANON": "1000/minute"}
        try:
            live = start_gunicorn(workdir, database_url, workers=1, threads=4, extra_env=rates)
        except RuntimeError as exc:
            pytest.fail(f"gunicorn did not start:\n{exc}")
        stack.callback(stop_server, live)
        yield live


def test_rotating_x_forwarded_for_does_not_escape_the_login_limit(server):
    username = f"victim-{secrets.token_hex(4)}"
    password = f"Lantern-{secrets.token_hex(6)}-Orbit"
    registered = requests.post(
        server.url + REGISTER, json={"username": username, "password": password}, timeout=30
    )
    assert registered.status_code == 201, server.log_tail()

    with requests.Session() as session:
        answers = [
            session.post(
                server.url + TOKEN,
                json={"username": username, "password": f"guess-{n}"},
                headers={"X-Forwarded-For": f"198.51.{n // 250}.{n % 250 + 1}"},
                timeout=30,
            )
            for n in range(ATTEMPTS)
        ]

    statuses = [answer.status_code for answer in answers]
    assert statuses[:LOGIN_RATE] == [401] * LOGIN_RATE, server.log_tail()
    assert set(statuses[LOGIN_RATE:]) == {429}, server.log_tail()
    throttled = answers[-1]
    assert 0 < int(throttled.headers["Retry-After"]) <= 60
    assert "detail" in throttled.json()
    # The right password is refused too while the limit holds: it is never checked.
    right = requests.post(server.url + TOKEN, json={"username": username, "password": password}, timeout=30)
    assert right.status_code == 429
