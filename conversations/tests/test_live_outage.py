"""PostgreSQL stops while the service is busy, then comes back: over real HTTP, against
gunicorn as production runs it, on the throwaway cluster of ``scripts/with-postgres``.

While the server is down every API request is answered with 503, ``Retry-After`` and a JSON
``{"detail"}`` (never a traceback or an HTML page), ``/readyz`` says 503 and ``/healthz`` 200.
Once it is back, requests succeed again within seconds, served by the very same processes:
the connection pool reconnects by itself. Nothing is half-written: the messages whose append
was answered 201 are all there, those answered 503 are not, and the conversation's counter
matches its messages.

Stopping the cluster also ends this test process's own connections to pytest-django's test
database, which lives in the same cluster; the ``cluster`` fixture starts it again whatever
happens and drops those dead connections, so later tests are unaffected.
"""

import itertools
import json
import os
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests
from django.db import connections

from .live_server import (
    ClientThreads,
    PostgresCluster,
    ServedDatabase,
    gunicorn_on_own_database,
    is_postgres_url,
    owner_connection,
)
from .test_live_http import CONVERSATIONS, describe, history_url, messages_url, register

pytestmark = pytest.mark.skipif(
    not is_postgres_url(os.environ.get("DATABASE_URL")) or PostgresCluster.from_environment() is None,
    reason="stops and starts the PostgreSQL server: needs the throwaway cluster of scripts/with-postgres",
)

REQUEST_TIMEOUT = 30  # longer than the pool's wait for a connection (DATABASE_POOL_TIMEOUT, 10 s)
DRIVERS = 4  # client threads, half appending, half reading the history
# How long the server may take, after PostgreSQL accepts connections again, until requests
# succeed again. Measured: about 1 s (the pool's reconnect_timeout, see settings, bounds it).
RECOVERY_BOUND_SECONDS = 10.0
# The outage lasts until both kinds of request have been answered 503, at least one of them
# only after waiting the pool's whole timeout for a connection (the path of a pool that has
# none left), and /readyz has said 503; at most this long.
OUTAGE_MAX_SECONDS = 40.0
POOL_TIMEOUT_SECONDS = 10.0  # DATABASE_POOL_TIMEOUT's default, which the server runs with


@pytest.fixture
def served(tmp_path) -> Iterator[ServedDatabase]:
    """gunicorn as in production, two workers of four threads, on a database of its own."""
    try:
        with gunicorn_on_own_database(tmp_path, workers=2, threads=4) as served:
            yield served
    except RuntimeError as exc:
        pytest.fail(f"gunicorn did not start:\n{exc}")


@pytest.fixture
def cluster(served, django_db_blocker) -> Iterator[PostgresCluster]:
    """The cluster, running again after the test however it ended (before ``served`` drops
    its database), and this process's own connections to it (dead since it stopped) dropped
    with their pool, so that the tests after this one find the test database as before."""
    cluster = PostgresCluster.from_environment()
    assert cluster is not None
    try:
        yield cluster
    finally:
        if not cluster.is_running():
            cluster.start()
        for connection in connections.all():
            connection.close()
            if connection.vendor == "postgresql":
                connection.close_pool()  # type: ignore[attr-defined]
        with django_db_blocker.unblock(), connections["default"].cursor() as cursor:
            cursor.execute("SELECT 1")
        connections["default"].close()


@dataclass
class Answer:
    kind: str  # "append" or "history"
    content: str | None  # what an append sent
    started: float  # time.monotonic()
    ended: float
    status: int | None  # None: no answer at all (`error`)
    headers: dict[str, str] = field(default_factory=dict)
    text: str = ""
    error: str = ""
    described: str = ""


class Driver(ClientThreads):
    """Client threads sending appends and history reads, one after another, until stopped;
    every answer is kept. A connection per request, so that every worker gets some."""

    def __init__(self, served: ServedDatabase, token: str, cid: str) -> None:
        self.served, self.token, self.cid = served, token, cid
        self.answers: list[Answer] = []
        self.counter = itertools.count()
        super().__init__(DRIVERS)

    def run(self, n: int) -> None:
        url = self.served.server.url
        headers = {"Authorization": f"Bearer {self.token}"}
        while not self.stopping.is_set():
            started = time.monotonic()
            content = None
            try:
                if n % 2:
                    kind, content = "append", f"driver {n} message {next(self.counter)}"
                    response = requests.post(
                        f"{url}{messages_url(self.cid)}",
                        json={"role": "user", "content": content},
                        headers=headers,
                        timeout=REQUEST_TIMEOUT,
                    )
                else:
                    kind = "history"
                    response = requests.get(
                        f"{url}{history_url(self.cid)}", headers=headers, timeout=REQUEST_TIMEOUT
                    )
            except requests.RequestException as exc:
                self.answers.append(Answer(kind, content, started, time.monotonic(), None, error=repr(exc)))
                continue
            ok = response.status_code in {200, 201}
            self.answers.append(
                Answer(
                    kind,
                    content,
                    started,
                    time.monotonic(),
                    response.status_code,
                    dict(response.headers),
                    response.text,
                    described="" if ok else describe(self.served.server, response),
                )
            )

    def answered(self, *, after: float = 0.0) -> list[Answer]:
        return [answer for answer in list(self.answers) if answer.ended >= after]


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} within {timeout:g} s")
        time.sleep(0.05)


def assert_503_as_the_contract_says(answer: Answer) -> None:
    assert answer.status == 503, answer.described or answer.error
    assert answer.headers.get("Retry-After", "").isdigit(), answer.described
    assert answer.headers.get("Content-Type", "").startswith("application/json"), answer.described
    assert "Traceback" not in answer.text, answer.described
    body: Any = json.loads(answer.text)
    assert isinstance(body, dict), answer.described
    assert isinstance(body.get("detail"), str), answer.described


def test_outage_answers_503_then_the_same_processes_recover_by_themselves(served, cluster):
    server = served.server
    client = register(server, "outage")
    token = client.access
    assert token is not None
    cid = client.json(201, "POST", CONVERSATIONS, json={"title": "outage"})["id"]
    before = [
        client.json(201, "POST", messages_url(cid), json={"role": "user", "content": f"before {n}"})["id"]
        for n in range(20)
    ]
    workers = server.worker_pids()
    assert len(workers) == 2, workers

    with Driver(served, token, cid) as driver:
        wait_for(lambda: len(driver.answered()) >= 20, 30, "the drivers did not get 20 answers")

        # --- PostgreSQL stops ---------------------------------------------------------------
        stopped = time.monotonic()
        cluster.stop()

        def saw_outage() -> bool:
            during = driver.answered(after=stopped)
            kinds = {a.kind for a in during if a.status == 503}
            waited = any(a.status == 503 and a.ended - a.started >= POOL_TIMEOUT_SECONDS for a in during)
            return kinds == {"append", "history"} and waited

        ready = requests.get(f"{server.url}/readyz", timeout=REQUEST_TIMEOUT)
        assert ready.status_code == 503, describe(server, ready)
        assert ready.headers.get("Retry-After", "").isdigit(), describe(server, ready)
        assert "detail" in ready.json(), describe(server, ready)
        alive = requests.get(f"{server.url}/healthz", timeout=REQUEST_TIMEOUT)
        assert (alive.status_code, alive.json()) == (200, {"status": "ok"}), describe(server, alive)
        wait_for(
            saw_outage, OUTAGE_MAX_SECONDS, "no 503 for both kinds of request (one after the pool's wait)"
        )

        # --- PostgreSQL is back ---------------------------------------------------------------
        cluster.start()
        restarted = time.monotonic()

        def recovered() -> bool:
            kinds = {a.kind for a in driver.answered(after=restarted) if a.status in {200, 201}}
            return kinds == {"append", "history"}

        wait_for(recovered, RECOVERY_BOUND_SECONDS + POOL_TIMEOUT_SECONDS, "requests did not succeed again")
        time.sleep(2)  # and go on succeeding

    answers = driver.answered()
    unanswered = [a for a in answers if a.status is None]
    assert not unanswered, f"{len(unanswered)} requests got no answer, e.g. {unanswered[0].error}"
    for answer in answers:
        if answer.status not in {200, 201}:
            assert_503_as_the_contract_says(answer)
    failed_before = [a for a in answers if a.ended < stopped and a.status not in {200, 201}]
    assert not failed_before, failed_before[0].described

    # Requests succeed again within the bound, and every one answered later succeeds too.
    last_failure = max(a.ended for a in answers if a.status not in {200, 201})
    first_successes = [
        min(a.ended for a in answers if a.kind == kind and a.ended >= restarted and a.status in {200, 201})
        for kind in ("append", "history")
    ]
    recovery = max(last_failure, *first_successes) - restarted
    outage = Counter(a.status for a in answers if stopped <= a.ended < restarted)
    print(
        f"outage of {restarted - stopped:.1f} s: {dict(outage)}; requests succeed again "
        f"{recovery:.2f} s after PostgreSQL accepts connections; {len(answers)} answers in all"
    )
    assert recovery <= RECOVERY_BOUND_SECONDS, f"recovered only {recovery:.2f} s after the restart"
    assert sum(1 for a in answers if a.ended > restarted + recovery) >= 10

    wait_for(
        lambda: requests.get(f"{server.url}/readyz", timeout=REQUEST_TIMEOUT).status_code == 200,
        RECOVERY_BOUND_SECONDS,
        "/readyz did not say 200 again",
    )
    assert server.process.poll() is None, server.log_tail()
    assert server.worker_pids() == workers, "gunicorn's workers were replaced"
    assert "Traceback" not in server.log(), server.log_tail()

    # Nothing half-written: exactly the appends answered 201 (and those before) are there.
    created = {a.content for a in answers if a.kind == "append" and a.status == 201}
    refused = {a.content for a in answers if a.kind == "append" and a.status == 503}
    with owner_connection(served.database_url) as conn:
        rows = conn.execute(
            "SELECT id, seq, content FROM conversations_message WHERE conversation_id = %s ORDER BY seq",
            [cid],
        ).fetchall()
        [(count,)] = conn.execute(
            "SELECT message_count FROM conversations_conversation WHERE id = %s", [cid]
        ).fetchall()
    stored = [content for _, _, content in rows]
    assert [seq for _, seq, _ in rows] == list(range(1, len(rows) + 1)), "seq has gaps"
    assert count == len(rows), f"message_count {count}, {len(rows)} messages"
    assert [str(id_) for id_, _, _ in rows[: len(before)]] == before
    assert len(stored) == len(set(stored))
    assert set(stored) == {f"before {n}" for n in range(len(before))} | created
    assert refused, "no append was refused during the outage"
    assert not refused & set(stored), "an append answered 503 left a message behind"
