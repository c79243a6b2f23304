"""GET /api/v1/export/ against gunicorn as deployed, on PostgreSQL as the serving role: a
worker's memory over an export of 100,000 messages, and clients that go away mid-stream.

The stated bounds: the worker's peak resident set (``VmHWM``, reset before the export)
grows by at most 20 MiB while it streams 100,000 messages (the issue's acceptance); a client
that disconnects leaves no transaction open and no connection out of the pool, so after more
aborted exports than the pool has connections, the next request is served at once.
"""

import json
import time

import pytest
import requests
from django.db import connection

from bench.loaddata import load_conversation

from .live_server import gunicorn_on_own_database, owner_connection
from .test_live_answer_memory import MIB, memory_kib, reset_peak
from .test_live_http import CONVERSATIONS, register

pytestmark = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="the pool and pg_stat_activity are PostgreSQL's"
)

EXPORT = "/api/v1/export/"
MESSAGES = 100_000
GROWTH_LIMIT = 20 * MIB
POOL_MAX_SIZE = 3
SETTLE_SECONDS = 15


@pytest.fixture(scope="module", params=["gthread", "uvicorn"])
def served(request, tmp_path_factory):
    """One worker: the deployment's gthread (config.wsgi), or uvicorn's (config.asgi), under
    which the view hands Django an asynchronous iterator (a synchronous one is read whole)."""
    workdir = tmp_path_factory.mktemp(f"live_export_{request.param}")
    pool = {"DATABASE_POOL_MIN_SIZE": "1", "DATABASE_POOL_MAX_SIZE": str(POOL_MAX_SIZE)}
    asgi = request.param == "uvicorn"
    with gunicorn_on_own_database(workdir, workers=1, threads=4, asgi=asgi, extra_env=pool) as served:
        yield served


def stream(client, path: str) -> requests.Response:
    return requests.get(
        f"{client.server.url}{path}",
        headers={"Authorization": f"Bearer {client.access}"},
        stream=True,
        timeout=120,
    )


def sessions_in_transaction(database_url: str, role: str) -> list[tuple]:
    with owner_connection(database_url) as conn:
        return conn.execute(
            "SELECT pid, state, left(query, 80) FROM pg_stat_activity "
            "WHERE datname = current_database() AND usename = %s "
            "AND (state LIKE 'idle in transaction%%' OR (state = 'active' AND pid <> pg_backend_pid()))",
            [role],
        ).fetchall()


def test_an_export_of_100000_messages_grows_the_workers_memory_by_at_most_20_mib(served):
    server = served.server
    alice, bob = register(server, "alice"), register(server, "bob")
    load_conversation(served.database_url, user_id=alice.user_id, length=MESSAGES, seed=14, stage="export")
    conversation = bob.json(201, "POST", CONVERSATIONS, json={"title": "warm-up"})["id"]
    bob.expect(
        201, "POST", f"{CONVERSATIONS}{conversation}/messages/", json={"role": "user", "content": "hi"}
    )
    bob.expect(200, "GET", EXPORT)  # warm-up: the code paths' imports and caches
    (worker,) = server.worker_pids()

    before = memory_kib(worker, "VmRSS") * 1024
    reset_peak(worker)
    started = time.monotonic()
    lines = received = 0
    first_chunk_at = None
    with stream(alice, EXPORT) as response:
        assert response.status_code == 200
        assert response.headers["Content-Type"] == "application/x-ndjson"
        for chunk in response.iter_content(64 * 1024):
            if first_chunk_at is None:
                first_chunk_at = time.monotonic() - started
            received += len(chunk)
            lines += chunk.count(b"\n")
    elapsed = time.monotonic() - started
    peak = memory_kib(worker, "VmHWM") * 1024

    assert lines == 1 + MESSAGES
    growth = peak - before
    exported = f"{MESSAGES:,} messages ({received / MIB:.0f} MiB) in {elapsed:.1f} s"
    print(f"export of {exported}: the worker's peak +{growth / MIB:.1f} MiB")  # shown by pytest -rP
    assert growth <= GROWTH_LIMIT, (
        f"{received / MIB:.0f} MiB exported in {elapsed:.1f} s; the worker went from {before / MIB:.1f} MiB "
        f"to a peak of {peak / MIB:.1f} MiB (+{growth / MIB:.1f})"
    )
    # Streamed: the first bytes came long before the last.
    assert first_chunk_at is not None
    assert first_chunk_at < elapsed / 4, (first_chunk_at, elapsed)


def test_clients_that_go_away_leave_no_transaction_and_no_connection_out_of_the_pool(served):
    server = served.server
    alice = register(server, "carol")
    load_conversation(served.database_url, user_id=alice.user_id, length=20_000, seed=15, stage="abort")

    for _ in range(2 * POOL_MAX_SIZE):
        with stream(alice, EXPORT) as response:
            assert response.status_code == 200
            next(response.iter_content(16 * 1024))
        # Leaving the block closes the connection with most of the export unsent.

    deadline = time.monotonic() + SETTLE_SECONDS
    while (
        left := sessions_in_transaction(served.database_url, served.serving_role)
    ) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert left == [], left
    started = time.monotonic()
    alice.expect(200, "GET", CONVERSATIONS)
    assert time.monotonic() - started < 5, "the pool had no connection to give"
    log = server.log()
    assert "Traceback" not in log, log[-4000:]
    outcomes = [
        json.loads(line)["outcome"]
        for line in log.splitlines()
        if line.startswith("{") and '"conversation.export"' in line and alice.user_id in line
    ]
    assert outcomes.count("aborted") == 2 * POOL_MAX_SIZE, outcomes


def test_the_export_is_read_back_whole_after_aborted_ones(served):
    server = served.server
    dave = register(server, "dave")
    load_conversation(served.database_url, user_id=dave.user_id, length=3_000, seed=16, stage="whole")
    with stream(dave, EXPORT) as response:
        next(response.iter_content(1024))
    with stream(dave, f"{EXPORT}?format=markdown") as response:
        text = response.content.decode()

    assert text.startswith(f"# Conversations of {dave.username}\n\n1 conversations, 3000 messages.\n")
    assert text.count("\n### ") == 3_000
