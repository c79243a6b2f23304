"""Appends racing over real HTTP, against the service as production runs it.

gunicorn serves ``config.wsgi`` with several workers and threads (as the Dockerfile does) on a
fresh PostgreSQL database migrated by the owner role, and connects as the serving role of
DATABASE_APP_URL, which row-level security binds. Eight clients append 200 messages each to
one conversation at once; then the same with every request sent twice, concurrently, with
one Idempotency-Key. What the clients were told is checked against the API and against the
tables themselves (SQL as the owner), and PostgreSQL's log against deadlocks.
"""

import os
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests

from .live_server import (
    PostgresCluster,
    ServedDatabase,
    gunicorn_on_own_database,
    is_postgres_url,
    owner_connection,
)
from .test_live_http import CONVERSATIONS, conversation_url, describe, messages_url, register

pytestmark = pytest.mark.skipif(
    not is_postgres_url(os.environ.get("DATABASE_URL")),
    reason="races between gunicorn workers need a PostgreSQL server (run under scripts/with-postgres)",
)

CLIENTS = 8
MESSAGES_PER_CLIENT = 200
TOTAL = CLIENTS * MESSAGES_PER_CLIENT
WORKERS, THREADS = 3, 4
REQUEST_TIMEOUT = 30  # a lock wait nobody resolves shows up as a timeout, not a hang


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """gunicorn on a database of its own, migrated as the owner, served as the app role."""
    try:
        with gunicorn_on_own_database(
            tmp_path_factory.mktemp("live_races"), workers=WORKERS, threads=THREADS
        ) as served:
            yield served
    except RuntimeError as exc:
        pytest.fail(f"gunicorn did not start:\n{exc}")


@pytest.fixture
def postgres_log():
    """Returns what PostgreSQL logged since the test began (empty outside scripts/with-postgres)."""
    cluster = PostgresCluster.from_environment()
    start = cluster.log_size() if cluster else 0
    return lambda: cluster.log(since=start) if cluster else ""


@dataclass
class Answer:
    client: int
    n: int  # the client's n-th message
    key: str | None
    status: int | None  # None: no answer (the exception is in `error`)
    body: dict[str, Any]  # {} when the answer was not a JSON object
    replayed: str | None  # the Idempotent-Replayed header
    error: str = ""
    described: str = ""


def send_append(
    session: requests.Session, served: ServedDatabase, token: str, cid: str, client: int, n: int, key
):
    headers = {"Authorization": f"Bearer {token}"}
    if key is not None:
        headers["Idempotency-Key"] = key
    content = f"client {client} message {n}"
    try:
        response = session.post(
            f"{served.server.url}{messages_url(cid)}",
            json={"role": "user", "content": content},
            headers=headers,
            timeout=REQUEST_TIMEOUT,
        )
    except requests.RequestException as exc:
        return Answer(client, n, key, None, {}, None, error=repr(exc))
    try:
        body = response.json()
    except ValueError:
        body = {}
    described = "" if response.status_code == 201 else describe(served.server, response)
    return Answer(
        client, n, key, response.status_code, body, response.headers.get("Idempotent-Replayed"), "", described
    )


def run_at_once(workers: list[Callable[[], None]]) -> float:
    """Start every worker at the same moment; return the seconds until the last one ended."""
    barrier = threading.Barrier(len(workers) + 1)

    def run(worker: Callable[[], None]) -> None:
        barrier.wait()
        worker()

    threads = [threading.Thread(target=run, args=(worker,)) for worker in workers]
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.monotonic()
    for thread in threads:
        thread.join()
    return time.monotonic() - started


def assert_all_answered_201(answers: list[Answer]) -> None:
    unanswered = [a for a in answers if a.status is None]
    assert not unanswered, f"{len(unanswered)} requests got no answer, e.g. {unanswered[0].error}"
    statuses = Counter(a.status for a in answers)
    wrong = [a for a in answers if a.status != 201]
    assert not wrong, f"statuses {dict(statuses)}; the first unexpected answer:\n{wrong[0].described}"


def assert_appended_in_order(
    served: ServedDatabase, client, cid: str, created: dict[tuple[int, int], dict[str, Any]], postgres_log
) -> None:
    """The conversation holds exactly the created messages, in an order consistent with
    every client's own order, with seq 1..TOTAL and created_at never going back: over the
    API and in the tables."""
    walked: list[dict[str, Any]] = []
    url: str | None = f"{messages_url(cid)}?page_size=200"
    while url:
        page = client.json(200, "GET", url)
        walked.extend(page["results"])
        url = page["next"]
    conversation = client.json(200, "GET", conversation_url(cid))
    assert conversation["message_count"] == TOTAL, conversation
    assert len(walked) == TOTAL, f"{len(walked)} messages listed"
    assert {m["id"] for m in walked} == {m["id"] for m in created.values()}
    stamps = [m["created_at"] for m in walked]
    assert stamps == sorted(stamps), "created_at decreases in the API's append order"
    assert conversation["updated_at"] >= stamps[-1]

    with owner_connection(served.database_url) as conn:
        rows = conn.execute(
            "SELECT id, seq, created_at, content FROM conversations_message"
            " WHERE conversation_id = %s ORDER BY seq",
            [cid],
        ).fetchall()
        [(count, updated_at)] = conn.execute(
            "SELECT message_count, updated_at FROM conversations_conversation WHERE id = %s", [cid]
        ).fetchall()
    assert len(rows) == TOTAL
    assert count == TOTAL
    assert [seq for _, seq, _, _ in rows] == list(range(1, TOTAL + 1)), "seq is not 1..N without gaps"
    times = [created_at for _, _, created_at, _ in rows]
    assert times == sorted(times), "created_at decreases in seq order"
    assert updated_at >= times[-1]
    assert [str(id_) for id_, *_ in rows] == [m["id"] for m in walked], "the API's order is not seq order"

    # Each client waited for every answer before sending its next message, so its messages
    # must appear in the order it sent them.
    position = {content: seq for _, seq, _, content in rows}
    for c in range(CLIENTS):
        seqs = [position[f"client {c} message {n}"] for n in range(MESSAGES_PER_CLIENT)]
        assert seqs == sorted(seqs), f"client {c}'s messages are out of order"

    assert "deadlock detected" not in postgres_log(), postgres_log()
    assert "Traceback" not in served.server.log(), served.server.log_tail()


def test_the_workers_connect_as_the_serving_role(served):
    client = register(served.server, "role")
    client.expect(200, "GET", CONVERSATIONS)
    name = urlsplit(served.database_url).path.lstrip("/")
    with owner_connection(served.database_url) as conn:
        roles = conn.execute(
            "SELECT DISTINCT usename FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            [name],
        ).fetchall()
    assert {role for (role,) in roles} == {served.serving_role}


def test_eight_clients_appending_at_once_get_one_gap_free_order(served, postgres_log):
    client = register(served.server, "racer")
    token = client.access
    assert token is not None
    cid = client.json(201, "POST", CONVERSATIONS, json={"title": "race"})["id"]
    answers: list[Answer] = []

    def appender(c: int) -> Callable[[], None]:
        def run() -> None:
            with requests.Session() as session:
                for n in range(MESSAGES_PER_CLIENT):
                    answers.append(send_append(session, served, token, cid, c, n, None))

        return run

    seconds = run_at_once([appender(c) for c in range(CLIENTS)])
    print(f"{TOTAL} appends by {CLIENTS} clients in {seconds:.2f} s")

    assert len(answers) == TOTAL
    assert_all_answered_201(answers)
    created = {(a.client, a.n): a.body for a in answers}
    assert len({body["id"] for body in created.values()}) == TOTAL
    assert_appended_in_order(served, client, cid, created, postgres_log)


def test_every_append_sent_twice_at_once_with_one_key_appends_once(served, postgres_log):
    client = register(served.server, "twice")
    token = client.access
    assert token is not None
    cid = client.json(201, "POST", CONVERSATIONS, json={"title": "race twice"})["id"]
    keys = {(c, n): f"race-{uuid.uuid4()}" for c in range(CLIENTS) for n in range(MESSAGES_PER_CLIENT)}
    answers: list[Answer] = []

    def twin(c: int, together: threading.Barrier) -> Callable[[], None]:
        """One of the two senders of client ``c``'s messages: the twins send each one at the
        same moment, with the same key and body."""

        def run() -> None:
            with requests.Session() as session:
                for n in range(MESSAGES_PER_CLIENT):
                    together.wait()
                    answers.append(send_append(session, served, token, cid, c, n, keys[c, n]))

        return run

    twins = []
    for c in range(CLIENTS):
        together = threading.Barrier(2)
        twins += [twin(c, together), twin(c, together)]
    seconds = run_at_once(twins)
    print(f"{2 * TOTAL} appends (each sent twice at once) by {2 * CLIENTS} clients in {seconds:.2f} s")

    assert len(answers) == 2 * TOTAL
    # The contract lets a duplicate in flight either wait and replay or get a 409; this
    # service waits (the conversation's row lock queues it) and replays, as asserted here.
    assert_all_answered_201(answers)
    by_key: dict[str | None, list[Answer]] = {}
    for answer in answers:
        by_key.setdefault(answer.key, []).append(answer)
    created: dict[tuple[int, int], dict[str, Any]] = {}
    for (c, n), key in keys.items():
        first, second = sorted(by_key[key], key=lambda a: a.replayed is not None)
        assert (first.replayed, second.replayed) == (None, "true"), (first, second)
        assert first.body == second.body, "the replay is not the first answer"
        created[c, n] = first.body
    assert len({body["id"] for body in created.values()}) == TOTAL

    assert_appended_in_order(served, client, cid, created, postgres_log)
    with owner_connection(served.database_url) as conn:
        [(keys_stored,)] = conn.execute(
            "SELECT count(*) FROM conversations_idempotencykey WHERE conversation_id = %s", [cid]
        ).fetchall()
    assert keys_stored == TOTAL
