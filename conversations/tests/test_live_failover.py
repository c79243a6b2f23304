"""The primary dies under a steady append load and its synchronous standby is promoted: no
acknowledged message is lost, and the same app server processes carry on with the new primary.

On the pair of ``scripts/with-replicated-postgres`` (``make test-failover``): two gunicorn
servers serve one database, both configured with a ``DATABASE_URL`` and ``DATABASE_APP_URL``
naming both hosts with ``target_session_attrs=read-write``, as docs/scaling.md's Failover
section tells an operator to. Eight clients append, each through both servers in turn; the
primary is killed (``pg_ctl stop -m immediate``: no checkpoint, no goodbye to its clients),
the standby promoted, and the load goes on until appends succeed again, then a while more.

Every append answered 201 must be on the promoted server, with its content: the primary
acknowledged it only once the standby had flushed it (``synchronous_commit = on``). Every
other answer must be the service's 503 with ``Retry-After``, never a 500. An append whose
COMMIT was cut off may be stored though answered 503; that is allowed and counted.

The test uses up the pair: afterwards the old primary is down and the standby is the primary.
The test process's own connection (pytest-django's test database, replicated like any other)
is pointed at both hosts too, so that dropping that database at the end reaches the new
primary.
"""

import itertools
import os
import secrets
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode, urlsplit, urlunsplit

import psycopg
import pytest
import requests
from django.db import connections

from .live_server import (
    ClientThreads,
    LiveServer,
    PostgresCluster,
    owner_connection,
    postgres_database,
    same_database,
    start_gunicorn,
    stop_server,
)
from .test_live_http import CONVERSATIONS, Client, messages_url, register

pytestmark = [
    pytest.mark.failover,
    pytest.mark.postgresql,
    pytest.mark.skipif(
        not os.environ.get("STANDBY_PGDATA_FOR_TESTS"),
        reason="kills a primary and promotes its standby: needs scripts/with-replicated-postgres",
    ),
]

CLIENTS = 8
USERS = 4  # two clients per user, each client in a conversation of its own
LOAD_BEFORE_KILL_SECONDS = 2.0
# Between the kill and the promotion: a failover tool's detection, shortened. Meanwhile no
# server accepts writes (one is down, the other read-only), so the clients see 503s.
DETECTION_SECONDS = 1.0
RECOVERY_BOUND_SECONDS = 10.0  # the bound, from the promotion's end to the first 201
LOAD_AFTER_RECOVERY_SECONDS = 4.0
REQUEST_TIMEOUT = 30  # longer than the pool's wait for a connection (DATABASE_POOL_TIMEOUT, 10 s)


def both_hosts(url: str, primary_port: str, standby_port: str) -> str:
    """``url`` (one host) naming the primary and the standby, for a read-write session: libpq
    tries them in turn and keeps the first that accepts writes."""
    parts = urlsplit(url)
    credentials = parts.netloc.rpartition("@")[0]
    hosts = f"{parts.hostname}:{primary_port},{parts.hostname}:{standby_port}"
    query = urlencode({"target_session_attrs": "read-write"})
    return urlunsplit(parts._replace(netloc=f"{credentials}@{hosts}", query=query))


@dataclass
class Pair:
    primary: PostgresCluster
    standby: PostgresCluster
    primary_port: str
    standby_port: str

    def follow(self, url: str) -> str:
        return both_hosts(url, self.primary_port, self.standby_port)


@pytest.fixture
def pair(django_db_blocker) -> Iterator[Pair]:
    """The primary and its synchronous standby; the test process's own connection follows
    whichever of them accepts writes (see the module's docstring)."""
    bin_dir = Path(os.environ["PG_BIN_FOR_TESTS"])
    pair = Pair(
        PostgresCluster(Path(os.environ["PGDATA_FOR_TESTS"]), bin_dir),
        PostgresCluster(Path(os.environ["STANDBY_PGDATA_FOR_TESTS"]), bin_dir),
        os.environ["PGPORT_FOR_TESTS"],
        os.environ["STANDBY_PORT_FOR_TESTS"],
    )
    assert os.environ.get("REPLICATION_SYNCHRONOUS_FOR_TESTS") == "true", "the standby must be synchronous"
    default = connections["default"]
    with django_db_blocker.unblock():
        default.close()
        default.close_pool()  # type: ignore[attr-defined]  # made with the primary's address alone
    host = default.settings_dict["HOST"]
    default.settings_dict["HOST"] = f"{host},{host}"
    default.settings_dict["PORT"] = f"{pair.primary_port},{pair.standby_port}"
    default.settings_dict["OPTIONS"]["target_session_attrs"] = "read-write"
    yield pair
    with django_db_blocker.unblock():
        default.close()
        default.close_pool()  # type: ignore[attr-defined]  # its connections went to the old primary


@dataclass
class Served:
    servers: list[LiveServer]
    database_url: str  # the owner's, naming both hosts


@pytest.fixture
def served(tmp_path, pair) -> Iterator[Served]:
    """Two gunicorn servers (two workers of four threads each, as the serving role) on a new
    database, replicated to the standby; both name both hosts."""
    admin_url = pair.follow(os.environ["DATABASE_URL"])
    with postgres_database(admin_url) as database_url:
        app_url = same_database(pair.follow(os.environ["DATABASE_APP_URL"]), database_url)
        # One signing key, so that a token from either server is good on the other.
        shared = {"DJANGO_SECRET_KEY": secrets.token_urlsafe(50)}
        servers: list[LiveServer] = []
        try:
            for n in range(2):
                workdir = tmp_path / f"server{n}"
                workdir.mkdir()
                servers.append(
                    start_gunicorn(
                        workdir,
                        database_url,
                        app_database_url=app_url,
                        workers=2,
                        threads=4,
                        extra_env=shared,
                    )
                )
            yield Served(servers, database_url)
        finally:
            for server in servers:
                stop_server(server)


@dataclass
class Answer:
    client: int
    server: int
    content: str
    conversation: str
    started: float  # time.monotonic()
    ended: float
    status: int | None  # None: no answer at all (`error`)
    retry_after: str | None = None
    message_id: str | None = None  # a 201's
    message_conversation: str | None = None  # a 201's conversation_id
    error: str = ""
    body: str = ""


class Load(ClientThreads):
    """``CLIENTS`` threads appending one message after another, each through the servers in
    turn, until stopped; every answer is kept. A connection per request, so that every worker
    of a server gets some."""

    def __init__(self, servers: list[LiveServer], clients: list[tuple[Client, str]]) -> None:
        self.servers, self.clients = servers, clients
        self.answers: list[Answer] = []
        super().__init__(len(clients))

    def run(self, n: int) -> None:
        client, cid = self.clients[n]
        for count in itertools.count():
            if self.stopping.is_set():
                return
            server = count % len(self.servers)
            content = f"client {n} message {count}"
            started = time.monotonic()
            try:
                response = requests.post(
                    f"{self.servers[server].url}{messages_url(cid)}",
                    json={"role": "user", "content": content},
                    headers={"Authorization": f"Bearer {client.access}"},
                    timeout=REQUEST_TIMEOUT,
                )
            except requests.RequestException as exc:
                ended = time.monotonic()
                self.answers.append(Answer(n, server, content, cid, started, ended, None, error=repr(exc)))
                continue
            answer = Answer(
                n,
                server,
                content,
                cid,
                started,
                time.monotonic(),
                response.status_code,
                retry_after=response.headers.get("Retry-After"),
                body=response.text[:500],
            )
            if response.status_code == 201:
                created = response.json()
                answer.message_id, answer.message_conversation = created["id"], created["conversation_id"]
            self.answers.append(answer)

    def answered(self) -> list[Answer]:
        return list(self.answers)


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} within {timeout:g} s")
        time.sleep(0.05)


def test_failover_keeps_every_acknowledged_append_and_the_servers_carry_on(served, pair):
    servers = served.servers
    clients: list[tuple[Client, str]] = []
    users = [register(servers[n % 2], f"failover{n}") for n in range(USERS)]
    for n in range(CLIENTS):
        user = users[n % USERS]
        cid = user.json(201, "POST", CONVERSATIONS, json={"title": f"client {n}"})["id"]
        clients.append((user, cid))
    pids = [(server.process.pid, server.worker_pids()) for server in servers]
    # As the superuser: other roles see pg_stat_replication's columns as null.
    superuser = f"host=127.0.0.1 port={pair.primary_port} user=postgres dbname=postgres"
    with psycopg.connect(superuser) as conn:
        [(sync_state,)] = conn.execute("SELECT sync_state FROM pg_stat_replication").fetchall()
    assert sync_state == "sync"

    with Load(servers, clients) as load:
        time.sleep(LOAD_BEFORE_KILL_SECONDS)
        assert any(a.status == 201 for a in load.answered()), "no append succeeded before the kill"

        # --- the primary dies; after a moment the standby is promoted -----------------------
        killed = time.monotonic()
        pair.primary.pg_ctl("stop", "-m", "immediate")
        time.sleep(DETECTION_SECONDS)
        # pg_ctl promote, as the operator or a failover tool runs it: pg_auto_failover's and
        # Patroni's promotion end in this same request to the standby, after their own
        # detection and fencing. Running a pg_auto_failover monitor here would test its
        # timeouts (about 20 s to declare a node dead) rather than the service's recovery.
        promoting = time.monotonic()
        pair.standby.pg_ctl("promote", "-w")
        promoted = time.monotonic()

        def appends_succeed_again() -> bool:
            return any(a.status == 201 and a.ended > promoted for a in load.answered())

        wait_for(appends_succeed_again, RECOVERY_BOUND_SECONDS + REQUEST_TIMEOUT, "no append succeeded again")
        time.sleep(LOAD_AFTER_RECOVERY_SECONDS)

    answers = load.answered()
    first_success = min(a.ended for a in answers if a.status == 201 and a.ended > promoted)
    statuses = Counter(a.status for a in answers)
    print(
        f"\nfailover: {len(answers)} appends; 201 before the kill "
        f"{sum(1 for a in answers if a.status == 201 and a.ended < killed)}, after the promotion "
        f"{sum(1 for a in answers if a.status == 201 and a.ended > promoted)}; "
        f"503: {statuses[503]}; statuses {dict(statuses)}; promotion took {promoted - promoting:.2f} s; "
        f"first 201 {first_success - promoted:.2f} s after it; longest answer "
        f"{max(a.ended - a.started for a in answers):.2f} s"
    )

    unanswered = [a for a in answers if a.status is None]
    assert not unanswered, f"{len(unanswered)} appends got no answer, e.g. {unanswered[0].error}"
    others = [a for a in answers if a.status not in {201, 503}]
    assert not others, f"{len(others)} answers neither 201 nor 503, e.g. {others[0].status} {others[0].body}"
    without_retry_after = [a for a in answers if a.status == 503 and not (a.retry_after or "").isdigit()]
    assert not without_retry_after, f"a 503 without Retry-After: {without_retry_after[0].body}"
    assert first_success - promoted <= RECOVERY_BOUND_SECONDS
    for server, (pid, workers) in zip(servers, pids, strict=True):
        assert server.process.poll() is None, server.log_tail()
        assert (server.process.pid, server.worker_pids()) == (pid, workers), "a process was restarted"

    # Every 201's message is on the new primary, as acknowledged.
    acknowledged = {a.message_id: a for a in answers if a.status == 201}
    with owner_connection(served.database_url) as conn:
        [(port, in_recovery)] = conn.execute("SELECT inet_server_port(), pg_is_in_recovery()").fetchall()
        assert (str(port), in_recovery) == (pair.standby_port, False), "not the promoted standby"
        rows = conn.execute(
            "SELECT id::text, conversation_id::text, content FROM conversations_message "
            "WHERE conversation_id = ANY(%s::uuid[])",
            [[cid for _, cid in clients]],
        ).fetchall()
        counts = conn.execute(
            "SELECT c.message_count, count(m.id), coalesce(max(m.seq), 0) FROM conversations_conversation c "
            "LEFT JOIN conversations_message m ON m.conversation_id = c.id WHERE c.id = ANY(%s::uuid[]) "
            "GROUP BY c.id",
            [[cid for _, cid in clients]],
        ).fetchall()
    stored = {id_: (cid, content) for id_, cid, content in rows}
    missing = [a for id_, a in acknowledged.items() if stored.get(str(id_)) != (a.conversation, a.content)]
    assert not missing, f"{len(missing)} acknowledged appends are not on the new primary, e.g. {missing[0]}"
    assert all(a.message_conversation == a.conversation for a in acknowledged.values())
    # The counters came over with the messages, and no seq is missing.
    assert all(count == messages == top for count, messages, top in counts), counts
    sent_503 = {(a.conversation, a.content) for a in answers if a.status == 503}
    print(f"failover: {len(sent_503 & set(stored.values()))} appends answered 503 were stored all the same")
