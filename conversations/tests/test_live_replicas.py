"""Read replicas with read-your-writes, live (issue 15): two gunicorn servers on the primary of
``make test-cluster`` with its standby, which replays every commit 200 ms late, as their
replica (DATABASE_REPLICA_URLS), and the run's Redis.

A user who has just appended reads through the other server and must see the append; reads
of users with no recent write are served by the replica, counted from the servers' own
metrics (statements per database alias); when the replica dies under a read load, the reads
carry on from the primary.
"""

import os
import re
import secrets
import signal
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import pytest
import requests

from .live_server import (
    ClientThreads,
    LiveServer,
    PostgresCluster,
    postgres_database,
    same_database,
    start_gunicorn,
    stop_server,
)
from .test_live_http import CONVERSATIONS, Client, history_url, messages_url, register

pytestmark = [pytest.mark.cluster, pytest.mark.postgresql]

PAIRS = 1000
PAIR_THREADS = 4
STRICT_MAX_LAG = 2


@pytest.fixture
def servers(tmp_path) -> Iterator[list[LiveServer]]:
    with replica_servers(tmp_path) as started:
        yield started


@pytest.fixture
def strict_servers(tmp_path) -> Iterator[list[LiveServer]]:
    """``servers`` whose replica may lag 2 s at most (DATABASE_REPLICA_MAX_LAG)."""
    with replica_servers(tmp_path, DATABASE_REPLICA_MAX_LAG=str(STRICT_MAX_LAG)) as started:
        yield started


@contextmanager
def replica_servers(tmp_path: Path, **settings: str) -> Iterator[list[LiveServer]]:
    delay = int(os.environ.get("STANDBY_APPLY_DELAY_MS_FOR_TESTS", "0"))
    assert delay >= 200, "run by make test-cluster: the standby must replay at least 200 ms late"
    assert os.environ.get("REDIS_URL"), "run by make test-cluster: replicas need Redis"
    standby_port = os.environ["STANDBY_PORT_FOR_TESTS"]
    with postgres_database(os.environ["DATABASE_URL"]) as database_url:
        app_url = same_database(os.environ["DATABASE_APP_URL"], database_url)
        standby = f"chat_app:chat_app@127.0.0.1:{standby_port}"
        replica_url = urlsplit(app_url)._replace(netloc=standby).geturl()
        started: list[LiveServer] = []
        try:
            for n in range(2):
                metrics_dir = tmp_path / f"metrics{n}"
                metrics_dir.mkdir()
                workdir = tmp_path / f"server{n}"
                workdir.mkdir()
                env = {
                    # One signing key, so that a token from either server is good on the other.
                    "DJANGO_SECRET_KEY": "replicas-" + secrets.token_hex(24),
                    "DATABASE_REPLICA_URLS": replica_url,
                    "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
                    **settings,
                }
                if started:
                    env["DJANGO_SECRET_KEY"] = started[0].env["DJANGO_SECRET_KEY"]
                started.append(
                    start_gunicorn(workdir, database_url, app_database_url=app_url, workers=2, extra_env=env)
                )
            yield started
        finally:
            for server in started:
                stop_server(server)


def statements_by_alias(server: LiveServer) -> dict[str, float]:
    text = requests.get(f"{server.url}/metrics", timeout=10).text
    counts: dict[str, float] = {}
    for labels, value in re.findall(r"^django_db_queries_total\{([^}]*)\} (\S+)$", text, re.MULTILINE):
        alias = re.search(r'alias="([^"]*)"', labels)
        if alias:
            counts[alias.group(1)] = counts.get(alias.group(1), 0.0) + float(value)
    return counts


def on(client: Client, server: LiveServer) -> Client:
    """The same user's client, through ``server``."""
    other = Client(server, client.access)
    other.user_id = client.user_id
    return other


def new_conversation(client: Client) -> str:
    conversation_id: str = client.json(201, "POST", CONVERSATIONS, json={"title": "replicas"})["id"]
    return conversation_id


def test_a_user_always_reads_their_own_appends_through_either_server(servers):
    def pairs(worker: int) -> int:
        client = register(servers[worker % 2], f"ryw{worker}")
        clients = [on(client, server) for server in servers]
        conversation_id = new_conversation(clients[0])
        # A new conversation is the user's write too: the other server finds it at once.
        assert clients[1].json(200, "GET", f"{CONVERSATIONS}{conversation_id}/")["message_count"] == 0
        for n in range(PAIRS // PAIR_THREADS):
            content = f"append {worker}-{n}"
            writer, reader = clients[n % 2], clients[(n + 1) % 2]
            writer.json(201, "POST", messages_url(conversation_id), json={"role": "user", "content": content})
            history = reader.json(200, "GET", history_url(conversation_id))
            assert history["messages"][-1]["content"] == content, (n, history["messages"][-2:])
            conversation = reader.json(200, "GET", f"{CONVERSATIONS}{conversation_id}/")
            assert conversation["message_count"] == n + 1
        return PAIRS // PAIR_THREADS

    with ThreadPoolExecutor(PAIR_THREADS) as pool:
        assert sum(pool.map(pairs, range(PAIR_THREADS))) == PAIRS


def test_most_reads_of_a_read_mostly_load_are_served_by_the_replica(servers):
    users = [register(servers[n % 2], f"reader{n}") for n in range(8)]
    conversations = [new_conversation(user) for user in users]
    for user, conversation_id in zip(users, conversations, strict=True):
        user.json(201, "POST", messages_url(conversation_id), json={"role": "user", "content": "hello"})
    before = [statements_by_alias(server) for server in servers]
    reads = 0
    for round_ in range(20):
        writer = round_ % len(users)
        append = {"role": "user", "content": f"more {round_}"}
        writing = on(users[writer], servers[round_ % 2])
        writing.json(201, "POST", messages_url(conversations[writer]), json=append)
        for n, (user, conversation_id) in enumerate(zip(users, conversations, strict=True)):
            on(user, servers[n % 2]).json(200, "GET", history_url(conversation_id))
            reads += 1
    after = [statements_by_alias(server) for server in servers]
    on_replica = sum(a.get("replica1", 0) - b.get("replica1", 0) for a, b in zip(after, before, strict=True))
    on_primary = sum(a.get("default", 0) - b.get("default", 0) for a, b in zip(after, before, strict=True))
    # A read served by the replica is two statements there (the token's user lookup, which also
    # sets the identity, and the history); the writes add theirs on the primary.
    served_by_replica = on_replica / 2
    print(f"\n{reads} reads: {on_replica:.0f} statements on the replica, {on_primary:.0f} on the primary")
    assert served_by_replica >= reads / 2, (on_replica, on_primary, reads)


@pytest.fixture
def killable_standby(servers) -> Iterator[PostgresCluster]:
    """The standby, which the test may kill; started again afterwards (after ``servers``
    stop, before their database is dropped: a synchronous standby must be back for that
    commit), and streaming again before the next test."""
    standby = PostgresCluster(
        Path(os.environ["STANDBY_PGDATA_FOR_TESTS"]), Path(os.environ["PG_BIN_FOR_TESTS"])
    )
    yield standby
    if not standby.is_running():
        standby.start()
    superuser = f"host=127.0.0.1 port={os.environ['PGPORT_FOR_TESTS']} user=postgres dbname=postgres"
    deadline = time.monotonic() + 60
    with psycopg.connect(superuser, autocommit=True) as conn:
        while not conn.execute("SELECT FROM pg_stat_replication WHERE state = 'streaming'").fetchall():
            assert time.monotonic() < deadline, "the standby did not stream again within 60 s"
            time.sleep(0.1)


class Readers(ClientThreads):
    """Threads reading histories through both servers, one request after another, until
    stopped; every status kept with the time it came (``None``: no answer at all)."""

    def __init__(self, clients: list[Client], conversations: list[str], threads: int) -> None:
        self.clients, self.conversations = clients, conversations
        self.answers: list[tuple[float, int | None, str]] = []
        super().__init__(threads)

    def run(self, n: int) -> None:
        client, conversation_id = (
            self.clients[n % len(self.clients)],
            self.conversations[n % len(self.clients)],
        )
        while not self.stopping.is_set():
            try:
                response = client.request("GET", history_url(conversation_id))
            except requests.RequestException as exc:
                self.answers.append((time.monotonic(), None, repr(exc)))
                continue
            self.answers.append((time.monotonic(), response.status_code, response.text[:300]))


def test_reads_carry_on_from_the_primary_when_the_replica_dies(servers, killable_standby):
    users = [register(servers[n % 2], f"survivor{n}") for n in range(4)]
    conversations = [new_conversation(user) for user in users]
    for user, conversation_id in zip(users, conversations, strict=True):
        user.json(201, "POST", messages_url(conversation_id), json={"role": "user", "content": "hello"})
    time.sleep(1)  # the standby has replayed the appends (200 ms late): reads may go there
    # Each user reads through both servers, two threads each.
    clients = [on(user, server) for server in servers for user in users]
    before = [statements_by_alias(server) for server in servers]
    with Readers(clients, conversations * 2, threads=16) as readers:
        time.sleep(1)
        killable_standby.pg_ctl("stop", "-m", "immediate")
        killed = time.monotonic()
        time.sleep(3)
    after = [statements_by_alias(server) for server in servers]
    on_replica = sum(a.get("replica1", 0) - b.get("replica1", 0) for a, b in zip(after, before, strict=True))
    assert on_replica > 0, "no read went to the replica before it died: nothing was tested"
    statuses = Counter(status for _, status, _ in readers.answers)
    after_kill = [answer for answer in readers.answers if answer[0] > killed]
    assert len(after_kill) > 100, len(after_kill)
    failed = [answer for answer in readers.answers if answer[1] != 200]
    assert not failed, (statuses, failed[:5], servers[0].log_tail(3000))


def superuser_on(port: str) -> psycopg.Connection:
    return psycopg.connect(f"host=127.0.0.1 port={port} user=postgres dbname=postgres", autocommit=True)


def replica_reads(servers: list[LiveServer]) -> float:
    return sum(statements_by_alias(server).get("replica1", 0) for server in servers)


def test_a_replica_that_stops_receiving_serves_no_reads_past_the_lag_bound(strict_servers):
    """The standby's WAL receiver stopped (SIGSTOP): it has replayed all it received, so its
    own lag figure is 0, while the primary moves on. Past DATABASE_REPLICA_MAX_LAG the reads
    go to the primary; once it receives again, back to the replica."""
    servers = strict_servers
    users = [register(servers[n % 2], f"stalled{n}") for n in range(2)]
    conversations = [new_conversation(user) for user in users]
    time.sleep(1)  # replayed (200 ms late): these users' reads may use the replica

    def read_all() -> None:
        for user, conversation_id in zip(users, conversations, strict=True):
            for server in servers:
                on(user, server).json(200, "GET", history_url(conversation_id))

    before = replica_reads(servers)
    read_all()
    assert replica_reads(servers) > before, "the reads did not use the replica to begin with"

    with superuser_on(os.environ["STANDBY_PORT_FOR_TESTS"]) as standby:
        [(receiver,)] = standby.execute("SELECT pid FROM pg_stat_wal_receiver").fetchall()
    with superuser_on(os.environ["PGPORT_FOR_TESTS"]) as primary:
        # The primary's own work goes on (other users' writes, say), its commits not waiting
        # for the stalled standby.
        primary.execute("SET synchronous_commit = local")
        os.kill(receiver, signal.SIGSTOP)
        try:
            # Each worker judges the replica by the primary positions it has seen, from its
            # first check after the stall on: all of them within the bound and a few checks.
            deadline = time.monotonic() + STRICT_MAX_LAG + 15
            while True:
                primary.execute("CREATE TABLE stall_marker (); DROP TABLE stall_marker")
                before = replica_reads(servers)
                for _ in range(10):
                    read_all()  # the servers check the replica as they read
                    time.sleep(0.05)
                if replica_reads(servers) == before:
                    break  # 40 reads through both servers, none on the replica
                assert time.monotonic() < deadline, "a replica past the lag bound went on serving reads"
        finally:
            os.kill(receiver, signal.SIGCONT)

    deadline = time.monotonic() + 30  # caught up, then found well by a retry (every 5 s)
    before = replica_reads(servers)
    while replica_reads(servers) == before:
        assert time.monotonic() < deadline, "the replica never served reads again"
        read_all()
        time.sleep(0.2)
