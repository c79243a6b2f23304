"""Two app servers on one database and one Redis behave as one (issue 15).

Two gunicorn servers, each with its own workers, serve one fresh PostgreSQL database (the
primary of ``make test-cluster``, as the serving role) and count throttles in the run's Redis
(REDIS_URL). They share the secret key, so a token from one is good on the other, as behind a
load balancer. Checked over real HTTP:

- a user's throttle holds across both: the limit is admitted, not twice it, whether the
  requests alternate between the servers or arrive at both at once; another user keeps his;
- duplicate idempotent appends sent to both at once create one message per key (counted with
  SQL as the owner), the duplicate replaying the first answer;
- conditional requests: both give the same ``ETag``, one's ``ETag`` is a 304 on the other, and
  an append through one makes the other's old ``ETag`` stale.
"""

import os
import secrets
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import requests

from .live_server import (
    LiveServer,
    is_postgres_url,
    owner_connection,
    postgres_database,
    same_database,
    start_gunicorn,
    stop_server,
)
from .test_live_http import CONVERSATIONS, REGISTER, TOKEN, conversation_url, history_url, messages_url

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.postgresql,
    pytest.mark.skipif(
        not is_postgres_url(os.environ.get("DATABASE_URL")) or not os.environ.get("REDIS_URL"),
        reason="needs PostgreSQL and Redis: run under make test-cluster",
    ),
]

REQUEST_TIMEOUT = 30
USER_LIMIT = 10  # API_THROTTLE_USER of the throttled pair, per hour: nothing expires mid-test
ROUNDS, KEYS_PER_ROUND = 6, 4


@dataclass
class Pair:
    """Two servers on one database and one Redis; ``database_url`` is the owner's URL."""

    servers: tuple[LiveServer, LiveServer]
    database_url: str


@pytest.fixture(scope="module")
def database() -> Iterator[tuple[str, str | None]]:
    """A fresh database on the primary: the owner's URL and the serving role's."""
    app_url = os.environ.get("DATABASE_APP_URL")
    with postgres_database(os.environ["DATABASE_URL"]) as database_url:
        yield database_url, same_database(app_url, database_url) if app_url else None


@pytest.fixture(scope="module")
def secret_key() -> str:
    """One secret key for every server: a token one of them signed is good on the others."""
    return secrets.token_urlsafe(50)


def serve_pair(workdir: Path, database: tuple[str, str | None], extra_env: dict[str, str]) -> Iterator[Pair]:
    database_url, app_database_url = database
    started: list[LiveServer] = []
    try:
        for name in ("one", "two"):
            directory = workdir / name
            directory.mkdir()
            started.append(
                start_gunicorn(
                    directory,
                    database_url,
                    app_database_url=app_database_url,
                    workers=2,
                    threads=4,
                    extra_env=extra_env,
                )
            )
        yield Pair((started[0], started[1]), database_url)
    except RuntimeError as exc:
        pytest.fail(f"gunicorn did not start:\n{exc}")
    finally:
        for server in started:
            stop_server(server)


@pytest.fixture(scope="module")
def pair(tmp_path_factory, database, secret_key) -> Iterator[Pair]:
    """Two servers with throttles off (server_env's default)."""
    yield from serve_pair(tmp_path_factory.mktemp("servers"), database, {"DJANGO_SECRET_KEY": secret_key})


@pytest.fixture(scope="module")
def throttled(tmp_path_factory, database, secret_key) -> Iterator[Pair]:
    """Two more servers on the same database, with a user rate of USER_LIMIT an hour. Users
    register through ``pair``: anonymous requests spend the "user" rate of their address."""
    env = {"DJANGO_SECRET_KEY": secret_key, "API_THROTTLE_USER": f"{USER_LIMIT}/hour"}
    yield from serve_pair(tmp_path_factory.mktemp("throttled"), database, env)


@dataclass
class User:
    token: str

    def request(self, server: LiveServer, method: str, path: str, **kwargs: Any) -> requests.Response:
        headers = {"Authorization": f"Bearer {self.token}", **kwargs.pop("headers", {})}
        return requests.request(
            method, f"{server.url}{path}", headers=headers, timeout=REQUEST_TIMEOUT, **kwargs
        )

    def json(self, server: LiveServer, status: int, method: str, path: str, **kwargs: Any) -> Any:
        response = self.request(server, method, path, **kwargs)
        assert response.status_code == status, (response.status_code, response.text, server.log_tail())
        return response.json()


def assert_no_traceback(pair: Pair) -> None:
    for server in pair.servers:
        assert "Traceback" not in server.log(), server.log_tail()


def register(server: LiveServer, prefix: str) -> User:
    """A new user, registered and logged in over HTTP."""
    username = f"{prefix}-{secrets.token_hex(4)}"
    password = f"Lantern-{secrets.token_hex(6)}-Orbit"
    credentials = {"username": username, "password": password}
    created = requests.post(f"{server.url}{REGISTER}", json=credentials, timeout=REQUEST_TIMEOUT)
    assert created.status_code == 201, created.text
    tokens = requests.post(f"{server.url}{TOKEN}", json=credentials, timeout=REQUEST_TIMEOUT)
    assert tokens.status_code == 200, tokens.text
    return User(tokens.json()["access"])


def at_once(calls: Sequence[Callable[[], requests.Response]]) -> list[requests.Response]:
    """Every call in a thread of its own, all released at the same moment; the answers in
    the order of ``calls``."""
    barrier = threading.Barrier(len(calls))
    answers: list[requests.Response | requests.RequestException | None] = [None] * len(calls)

    def run(index: int) -> None:
        barrier.wait()
        try:
            answers[index] = calls[index]()
        except requests.RequestException as exc:  # reported below, in the test's thread
            answers[index] = exc

    threads = [threading.Thread(target=run, args=(index,)) for index in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    failed = [answer for answer in answers if not isinstance(answer, requests.Response)]
    assert not failed, f"{len(failed)} requests got no answer, e.g. {failed[0]!r}"
    return [answer for answer in answers if isinstance(answer, requests.Response)]


# -- throttles ------------------------------------------------------------------------------


def assert_exactly_the_limit_admitted(answers: list[requests.Response]) -> None:
    statuses = Counter(answer.status_code for answer in answers)
    assert statuses == {200: USER_LIMIT, 429: len(answers) - USER_LIMIT}, dict(statuses)
    for answer in answers:
        if answer.status_code == 429:
            assert 0 < int(answer.headers["Retry-After"]) <= 3600, answer.headers


def test_a_users_limit_holds_across_both_servers_taking_turns(pair, throttled):
    user = register(pair.servers[0], "turns")
    answers = [
        user.request(throttled.servers[n % 2], "GET", CONVERSATIONS) for n in range(2 * USER_LIMIT + 2)
    ]

    assert [a.status_code for a in answers[:USER_LIMIT]] == [200] * USER_LIMIT
    assert_exactly_the_limit_admitted(answers)


def test_a_users_limit_holds_across_both_servers_at_once(pair, throttled):
    """Bursts at both servers at once, each through both servers' threads: the limit, not more."""
    for burst in range(3):
        user = register(pair.servers[0], f"burst{burst}")
        calls = [
            partial(user.request, throttled.servers[n % 2], "GET", CONVERSATIONS)
            for n in range(3 * USER_LIMIT)
        ]
        assert_exactly_the_limit_admitted(at_once(calls))
    assert_no_traceback(throttled)


def test_another_user_keeps_his_own_limit(pair, throttled):
    spent, other = register(pair.servers[0], "spent"), register(pair.servers[0], "other")
    for n in range(USER_LIMIT + 1):
        spent.request(throttled.servers[n % 2], "GET", CONVERSATIONS)
    assert spent.request(throttled.servers[0], "GET", CONVERSATIONS).status_code == 429

    answers = [other.request(server, "GET", CONVERSATIONS) for server in throttled.servers]

    assert [a.status_code for a in answers] == [200, 200]


# -- idempotency ----------------------------------------------------------------------------


def test_duplicate_appends_sent_to_both_servers_at_once_create_one_message(pair):
    user = register(pair.servers[0], "twice")
    cid = user.json(pair.servers[0], 201, "POST", CONVERSATIONS, json={"title": "twice"})["id"]
    answers: dict[str, list[requests.Response]] = {}
    for round_ in range(ROUNDS):
        keys = [f"round-{round_}-key-{k}-{secrets.token_hex(4)}" for k in range(KEYS_PER_ROUND)]
        calls = [
            partial(
                user.request,
                server,
                "POST",
                messages_url(cid),
                json={"role": "user", "content": key},
                headers={"Idempotency-Key": key},
            )
            for key in keys
            for server in pair.servers
        ]
        for key, answer in zip([k for k in keys for _ in pair.servers], at_once(calls), strict=True):
            answers.setdefault(key, []).append(answer)

    # The contract lets a duplicate in flight wait and replay or get a 409; this service
    # waits (the conversation's row lock queues it) and replays, as asserted here.
    for key, (one, two) in answers.items():
        assert (one.status_code, two.status_code) == (201, 201), (key, one.text, two.text)
        replayed = sorted(
            [one.headers.get("Idempotent-Replayed"), two.headers.get("Idempotent-Replayed")], key=str
        )
        assert replayed == [None, "true"], (key, replayed)
        assert one.json() == two.json(), "the replay is not the first answer"
        assert one.json()["content"] == key
    with owner_connection(pair.database_url) as conn:
        rows = conn.execute(
            "SELECT content, count(*) FROM conversations_message WHERE conversation_id = %s GROUP BY content",
            [cid],
        ).fetchall()
        [(keys_stored,)] = conn.execute(
            "SELECT count(*) FROM conversations_idempotencykey WHERE conversation_id = %s", [cid]
        ).fetchall()
    assert dict(rows) == dict.fromkeys(answers, 1)
    assert keys_stored == ROUNDS * KEYS_PER_ROUND
    ids = {one.json()["id"] for one, _ in answers.values()}
    assert len(ids) == ROUNDS * KEYS_PER_ROUND
    assert_no_traceback(pair)


# -- conditional requests -------------------------------------------------------------------


def conditional_paths(cid: str) -> list[str]:
    return [conversation_url(cid), messages_url(cid), history_url(cid), CONVERSATIONS]


def etags(user: User, server: LiveServer, paths: list[str]) -> dict[str, str]:
    found = {}
    for path in paths:
        response = user.request(server, "GET", path)
        assert response.status_code == 200, (path, response.text)
        assert response.headers.get("ETag"), f"GET {path} carries no ETag"
        found[path] = response.headers["ETag"]
    return found


def test_both_servers_give_one_etag_and_honour_each_others(pair):
    one, two = pair.servers
    user = register(one, "etag")
    cid = user.json(one, 201, "POST", CONVERSATIONS, json={"title": "etag"})["id"]
    user.json(two, 201, "POST", messages_url(cid), json={"role": "user", "content": "hi"})
    paths = conditional_paths(cid)

    before = etags(user, one, paths)
    assert etags(user, two, paths) == before
    for path, etag in before.items():
        for server in pair.servers:
            unchanged = user.request(server, "GET", path, headers={"If-None-Match": etag})
            assert (unchanged.status_code, unchanged.content) == (304, b""), (path, server.url)

    user.json(one, 201, "POST", messages_url(cid), json={"role": "assistant", "content": "hello"})

    for path, etag in before.items():
        changed = user.request(two, "GET", path, headers={"If-None-Match": etag})
        assert changed.status_code == 200, (path, changed.status_code)
        assert changed.headers["ETag"] != etag, path
    after = etags(user, two, paths)
    assert etags(user, one, paths) == after
    for path, etag in after.items():
        assert user.request(one, "GET", path, headers={"If-None-Match": etag}).status_code == 304, path
    assert_no_traceback(pair)


# -- pages ----------------------------------------------------------------------------------


def test_a_cursor_from_one_server_goes_on_at_the_other(pair):
    """Cursors are signed with the secret key both servers share."""
    user = register(pair.servers[0], "pages")
    cid = user.json(pair.servers[0], 201, "POST", CONVERSATIONS, json={"title": "pages"})["id"]
    sent = [f"message {n}" for n in range(5)]
    user.json(
        pair.servers[1], 201, "POST", messages_url(cid), json=[{"role": "user", "content": c} for c in sent]
    )

    walked, path, turn = [], f"{messages_url(cid)}?page_size=2", 0
    while path:
        server = pair.servers[turn % 2]
        page = user.json(server, 200, "GET", path)
        walked += [message["content"] for message in page["results"]]
        path = page["next"] and page["next"].removeprefix(server.url)
        turn += 1

    assert walked == sent
    assert turn == 3
