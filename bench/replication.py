"""Issue 15's rows: what a streaming standby costs the appends and gives the reads.

Runs inside ``scripts/with-redis scripts/with-replicated-postgres`` (a primary, its streaming
hot standby with no apply delay, and Redis), after ``bench.run`` in ``make bench`` and
``make bench-smoke``:

1. migrates the primary, creates readers and writers, loads their conversations with
   ``COPY`` (as ``bench.run`` does) and waits until the standby has replayed it all;
2. **15a**: appends through the service (primary only, no replicas), the same requests at
   one connection and at the profile's concurrency, with the primary's standby synchronous
   (``synchronous_standby_names = 'standby1'``: a commit waits for the standby's flush) and
   asynchronous (``''``), the two alternating by round; ``pg_stat_replication.sync_state`` is
   checked after each switch, before anything is measured;
3. **15b**: the readers' history pages through two servers started side by side, one with
   ``DATABASE_REPLICA_URLS`` naming the standby (as the serving role, same database) and one
   without, in interleaved rounds; the share of the replica server's statements that went to
   the replica comes from its own ``/metrics`` (statements per database alias), and the
   standby's ``pg_stat_database`` counts its transactions beside it;
4. **15c**: what the read-your-writes check costs a read (see ``ryw_cost``);
5. merges its rows and figures into the ``results.json`` that ``bench.run`` wrote in the
   same output directory (or starts one) and prints the whole table with ``bench.run``'s
   printer.

Everything runs on one machine: the standby shares the primary's cores, so a replica adds no
hardware here, and 15b says what routing costs and what a replica takes off the primary, not
what a second machine would add. The exit status is non-zero when a figure is missing (or
the replica server sent no statement to the replica), whatever the timings.
"""

import json
import os
import re
import statistics
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg

from bench import harness, loadgen, server
from bench.harness import TMP_DIR
from bench.loaddata import admin_url, load_stage, progress, vacuum_analyze
from bench.loadgen import Target
from bench.run import latency_ratio, print_table, round_ratios, with_database

# Every row of this module starts so; a merge replaces the rows of an earlier run.
ROW_PREFIX = "15"
STANDBY_NAME = "standby1"  # scripts/with-replicated-postgres's application_name
SWITCH_TIMEOUT_SECONDS = 15.0
REPLAY_TIMEOUT_SECONDS = 120.0
# The replica server must send at least this share of its statements to the replica, or
# the "with one replica" figure would describe the primary.
MIN_REPLICA_SHARE = 0.25


@dataclass(frozen=True)
class Profile:
    name: str
    readers: int  # users whose history is read (15b, 15c); they never append before 15c
    writers: int  # users who append (15a)
    messages: int  # loaded in all, about 50 a conversation
    seconds: float  # one throughput run
    latency_seconds: float  # one run at one connection
    repeats: int
    connections: int
    decision_calls: int  # in-process calls of the read-your-writes decision (15c)


PROFILES = {
    "full": Profile(
        name="full",
        readers=50,
        writers=50,
        messages=100_000,
        seconds=6,
        latency_seconds=3,
        repeats=4,
        connections=16,
        decision_calls=20_000,
    ),
    "smoke": Profile(
        name="smoke",
        readers=5,
        writers=5,
        messages=1_000,
        seconds=1,
        latency_seconds=1,
        repeats=1,
        connections=4,
        decision_calls=500,
    ),
}


# -- the replicated pair ---------------------------------------------------------------------


def admin_connection(database_url: str, *, port: int | None = None) -> psycopg.Connection[Any]:
    """Superuser ``postgres`` on the primary (or on ``port``: the standby), database
    ``postgres`` so that the harness's own statements are not counted in the service's."""
    url = urlsplit(admin_url(with_database(database_url, "postgres")))
    if port is not None:
        url = url._replace(netloc=f"{url.username}@{url.hostname}:{port}")
    return psycopg.connect(url.geturl(), autocommit=True, connect_timeout=5)


def set_synchronous(database_url: str, *, synchronous: bool) -> str:
    """Make the standby synchronous or not, and wait until ``pg_stat_replication`` says so."""
    wanted = "sync" if synchronous else "async"
    names = STANDBY_NAME if synchronous else ""
    with admin_connection(database_url) as conn:
        conn.execute(f"ALTER SYSTEM SET synchronous_standby_names = '{names}'")
        conn.execute("SELECT pg_reload_conf()")
        deadline = time.monotonic() + SWITCH_TIMEOUT_SECONDS
        while True:
            row = conn.execute(
                "SELECT sync_state FROM pg_stat_replication WHERE application_name = %s", (STANDBY_NAME,)
            ).fetchone()
            state = str(row[0]) if row else "not streaming"
            if state == wanted:
                return state
            if time.monotonic() > deadline:
                raise RuntimeError(f"the standby is {state!r}, not {wanted!r}, after the switch")
            time.sleep(0.05)


def wait_replayed(database_url: str, standby_port: int) -> float:
    """Wait until the standby has replayed everything the primary has written; seconds waited."""
    started = time.perf_counter()
    with admin_connection(database_url) as primary:
        row = primary.execute("SELECT pg_current_wal_lsn()").fetchone()
    assert row is not None
    with admin_connection(database_url, port=standby_port) as standby:
        while True:
            done = standby.execute("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (row[0],)).fetchone()
            if done and done[0]:
                return time.perf_counter() - started
            if time.perf_counter() - started > REPLAY_TIMEOUT_SECONDS:
                raise RuntimeError(f"the standby did not replay {row[0]} in {REPLAY_TIMEOUT_SECONDS:g} s")
            time.sleep(0.02)


def standby_transactions(database_url: str, standby_port: int, database: str) -> int:
    with admin_connection(database_url, port=standby_port) as conn:
        row = conn.execute(
            "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = %s", (database,)
        ).fetchone()
    return int(row[0]) if row else 0


def statements_by_alias(base_url: str) -> dict[str, float]:
    """The server's ``django_db_queries_total`` per database alias (its /metrics, summed over
    its workers by prometheus-client's multiprocess mode)."""
    with urllib.request.urlopen(f"{base_url}/metrics", timeout=10) as answer:  # noqa: S310
        text = answer.read().decode()
    counts: dict[str, float] = {}
    for match in re.finditer(r"^django_db_queries_total\{([^}]*)\} (\S+)$", text, re.MULTILINE):
        alias = re.search(r'alias="([^"]*)"', match.group(1))
        if alias:
            counts[alias.group(1)] = counts.get(alias.group(1), 0.0) + float(match.group(2))
    return counts


# -- the run ---------------------------------------------------------------------------------


class ReplicationBench(harness.Steps):
    def __init__(self, profile: Profile, database_url: str, env: dict[str, str]) -> None:
        super().__init__("bench.replication")
        self.p = profile
        self.database_url = database_url
        self.env = env
        self.standby_port = int(os.environ["STANDBY_PORT_FOR_TESTS"])
        self.database = urlsplit(database_url).path.lstrip("/")
        self.figures: dict[str, Any] = {}

    @property
    def replica_url(self) -> str:
        """The standby as the serving role (the primary's DATABASE_APP_URL on the standby's port)."""
        app = urlsplit(os.environ.get("DATABASE_APP_URL") or self.database_url)
        netloc = f"{app.username}:{app.password}@{app.hostname}:{self.standby_port}"
        return app._replace(netloc=netloc).geturl()

    def start_server(self, *, replicas: bool) -> server.Server:
        env = dict(self.env)
        if replicas:
            env["DATABASE_REPLICA_URLS"] = self.replica_url
        return harness.start_server("gthread", env)

    def wrk(
        self, srv: server.Server, targets: list[Target], *, seconds: float, connections: int
    ) -> dict[str, Any]:
        result = loadgen.wrk(srv.url, targets, seconds=seconds, connections=connections, tmp_dir=TMP_DIR)
        if result["errors"]:
            progress(f"bench.replication: WARNING {result['errors']} errors or non-2xx/3xx answers")
        return result

    # -- data ------------------------------------------------------------------------------

    def prepare_data(self) -> None:
        from django.core.management import call_command

        from bench.users import access_token, ensure_users

        call_command("migrate", verbosity=0)
        users = ensure_users(self.p.readers + self.p.writers)
        self.tokens = {str(u.pk): access_token(u) for u in users}
        self.readers = [str(u.pk) for u in users[: self.p.readers]]
        self.writers = [str(u.pk) for u in users[self.p.readers :]]
        loaded = load_stage(
            self.database_url,
            user_ids=self.readers + self.writers,
            messages=self.p.messages,
            conversations=max(len(users), self.p.messages // 50),
            seed=15,
            stage="replication",
        )
        vacuum_analyze(self.database_url)
        replay = wait_replayed(self.database_url, self.standby_port)
        readers = set(self.readers)
        read = sorted((c for c in loaded.conversations if c.user_id in readers), key=lambda c: -c.length)
        written = [c for c in loaded.conversations if c.user_id not in readers]
        self.history = [
            Target("GET", f"/api/v1/conversations/{c.id}/history/", self.tokens[c.user_id])
            for c in read[:500]
        ]
        self.reader_conversations = {c.user_id: c.id for c in reversed(read)}  # each reader's longest
        self.appends = [
            Target(
                "POST",
                f"/api/v1/conversations/{c.id}/messages/",
                self.tokens[c.user_id],
                json.dumps({"role": "user", "content": f"why does the pool time out here ({n})"}),
            )
            for n, c in enumerate(written[:1000])
        ]
        self.figures["data"] = {
            "messages": loaded.messages,
            "conversations": len(loaded.conversations),
            "readers": len(self.readers),
            "writers": len(self.writers),
            "load_seconds": loaded.seconds,
            "replayed_after_load_seconds": replay,
        }

    # -- 15a ------------------------------------------------------------------------------------

    def append_latency(self) -> None:
        """The same appends with the standby synchronous and asynchronous, alternating which
        goes first by round: p50/p99 at one connection, and at the profile's concurrency."""
        srv = self.start_server(replicas=False)
        runs: dict[str, list[dict[str, Any]]] = {
            f"{m}_c{c}": [] for m in ("sync", "async") for c in ("1", "n")
        }
        states: list[str] = []
        try:
            self.wrk(srv, self.appends, seconds=min(2, self.p.seconds), connections=self.p.connections)
            for n in range(self.p.repeats):
                for mode in ("sync", "async") if n % 2 == 0 else ("async", "sync"):
                    states.append(set_synchronous(self.database_url, synchronous=mode == "sync"))
                    runs[f"{mode}_c1"].append(
                        self.wrk(srv, self.appends, seconds=self.p.latency_seconds, connections=1)
                    )
                    runs[f"{mode}_cn"].append(
                        self.wrk(srv, self.appends, seconds=self.p.seconds, connections=self.p.connections)
                    )
        finally:
            srv.stop()
            set_synchronous(self.database_url, synchronous=True)  # as the script left it
        result: dict[str, Any] = {name: loadgen.median_of(r) for name, r in runs.items()}
        result["sync_states_seen"] = sorted(set(states))
        result["connections"] = self.p.connections
        for name in runs:
            f = result[name]
            progress(
                f"bench.replication:   append {name:9s} {f['rps']:8.1f} req/s  p50 {f['p50_ms']:6.2f} ms  "
                f"p99 {f['p99_ms']:6.2f} ms"
            )
        self.figures["append_sync"] = result

    # -- 15b ------------------------------------------------------------------------------------

    def history_throughput(self) -> None:
        """The readers' history pages through a server with the standby as its replica and
        one without, started together, in interleaved rounds (which goes first alternates)."""
        servers = {"replica": self.start_server(replicas=True), "primary": self.start_server(replicas=False)}
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in servers}
        try:
            for srv in servers.values():
                self.wrk(srv, self.history, seconds=min(2, self.p.seconds), connections=self.p.connections)
            before = statements_by_alias(servers["replica"].url)
            standby_before = standby_transactions(self.database_url, self.standby_port, self.database)
            for n in range(self.p.repeats):
                for name in ("replica", "primary") if n % 2 == 0 else ("primary", "replica"):
                    runs[name].append(
                        self.wrk(
                            servers[name],
                            self.history,
                            seconds=self.p.seconds,
                            connections=self.p.connections,
                        )
                    )
            after = statements_by_alias(servers["replica"].url)
        finally:
            for srv in servers.values():
                srv.stop()
        time.sleep(0.5)  # the standby's sessions end (and flush their statistics) with the server
        standby_after = standby_transactions(self.database_url, self.standby_port, self.database)
        by_alias = {alias: after.get(alias, 0.0) - before.get(alias, 0.0) for alias in after}
        total = sum(by_alias.values())
        replica = sum(v for alias, v in by_alias.items() if alias != "default")
        result: dict[str, Any] = {name: loadgen.median_of(r) for name, r in runs.items()}
        requests = sum(r["requests"] for r in runs["replica"])
        result["replica_server_statements"] = by_alias
        result["replica_share"] = replica / total if total else 0.0
        result["standby_transactions"] = standby_after - standby_before
        result["replica_server_requests"] = requests
        for name in servers:
            f = result[name]
            progress(
                f"bench.replication:   history via {name:8s} {f['rps']:8.1f} req/s  "
                f"p50 {f['p50_ms']:6.2f} ms  p99 {f['p99_ms']:6.2f} ms"
            )
        progress(
            f"bench.replication:   the replica server's statements by alias: {by_alias} "
            f"(standby transactions: {result['standby_transactions']:,} for {requests:,} requests)"
        )
        self.figures["history_replica"] = result
        if result["replica_share"] < MIN_REPLICA_SHARE:
            raise RuntimeError(
                f"the replica server sent {result['replica_share']:.0%} of its statements to a replica "
                f"(at least {MIN_REPLICA_SHARE:.0%} expected): {by_alias}"
            )

    # -- 15c ------------------------------------------------------------------------------------

    def ryw_cost(self) -> None:
        """The read-your-writes decision per read, timed in a process of its own set up as a
        serving process with the standby as its replica (``bench.ryw_timing``), for three
        readers: none with a write recorded, one whose write the replica has replayed, one
        whose write it has not. The lag bound is lifted there: the standby's replay is paused
        while the third is measured, and the bound would otherwise retire the replica."""
        env = {
            **os.environ,
            "DATABASE_REPLICA_URLS": self.replica_url,
            "DATABASE_REPLICA_MAX_LAG": "3600",
        }
        figures = self.figures["ryw"] = harness.figures_of(
            "bench.ryw_timing", str(self.p.decision_calls), *self.readers[:3], marker="BENCH_RYW", env=env
        )
        for state in ("none", "replayed", "ahead", "redis_get"):
            f = figures[state]
            progress(
                f"bench.replication:   decision {state:9s} median {f['median_ms']:.3f} ms  "
                f"mean {f['mean_ms']:.3f} ms  p99 {f['p99_ms']:.3f} ms  -> {f['answers']}"
            )

    def run(self) -> None:
        progress("bench.replication: load the data")
        self.prepare_data()
        with self.step("replication: 15b history throughput with one replica vs primary only"):
            self.history_throughput()
        with self.step("replication: 15c the read-your-writes check per read"):
            self.ryw_cost()
        with self.step("replication: 15a append latency with a synchronous standby vs asynchronous"):
            self.append_latency()
        self.figures["seconds_total"] = time.perf_counter() - self.started


# -- the rows ----------------------------------------------------------------------------------


def _latency_text(sync: dict[str, Any], async_: dict[str, Any]) -> str:
    return (
        f"p50 {sync['p50_ms']:.2f} / {async_['p50_ms']:.2f} ms, p99 {sync['p99_ms']:.2f} / "
        f"{async_['p99_ms']:.2f} ms, {sync['rps']:.0f} / {async_['rps']:.0f} req/s"
    )


def _decision_text(f: dict[str, Any]) -> str:
    return f"{f['median_ms']:.3f} ms ({f['mean_ms']:.3f})"


def rows(figures: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    append = figures.get("append_sync")
    figure = None
    if append:
        one, many = (append["sync_c1"], append["async_c1"]), (append["sync_cn"], append["async_cn"])
        figure = (
            f"sync / async: 1 connection {_latency_text(*one)} (per-round p50 ratio "
            f"{latency_ratio(*one):.2f}); {append['connections']} connections {_latency_text(*many)} "
            f"(per-round p50 ratio {latency_ratio(*many):.2f}); sync_state seen: "
            f"{', '.join(append['sync_states_seen'])}"
        )
    out.append({"name": "15a append latency: synchronous standby vs asynchronous", "figure": figure})
    history = figures.get("history_replica")
    figure = None
    if history and "replica" in history and "primary" in history:
        with_, without = history["replica"], history["primary"]
        ratios = round_ratios(with_, without)
        figure = (
            f"with {with_['rps']:.0f} / primary only {without['rps']:.0f} req/s (medians, "
            f"{with_['connections']} connections); per-round ratios {', '.join(f'{r:.2f}' for r in ratios)} "
            f"-> {statistics.median(ratios):.2f}; {history['replica_share']:.0%} of the replica server's "
            f"statements on the replica (same machine: no added cores)"
        )
    out.append({"name": "15b history throughput: one replica vs primary only", "figure": figure})
    ryw = figures.get("ryw")
    figure = None
    if ryw:
        figure = (
            f"core.replicas.reads_for per read, in-process, medians of {ryw['calls']:,} calls (mean): "
            f"no write recorded {_decision_text(ryw['none'])}, write replayed "
            f"{_decision_text(ryw['replayed'])} -> replica; write not replayed "
            f"{_decision_text(ryw['ahead'])} -> primary (replica re-asked at most every "
            f"{ryw['position_max_age_ms']:g} ms); "
            f"one Redis GET {_decision_text(ryw['redis_get'])}"
        )
    out.append({"name": "15c read-your-writes check per read", "figure": figure})
    return [{**row, "target": "printed", "met": bool(row["figure"])} for row in out]


# -- results ----------------------------------------------------------------------------------


def merge_results(
    output: Path, profile: Profile, new_rows: list[dict[str, Any]], figures: dict[str, Any], errors: list[Any]
) -> dict[str, Any]:
    """``bench.run``'s results.json in ``output`` with this run's rows, figures and errors in
    place of an earlier run's (a fresh file when there is none)."""
    path = output / "results.json"
    results: dict[str, Any] = {"targets": [], "figures": {}, "errors": []}
    if path.exists():
        results = json.loads(path.read_text())
    results["targets"] = [r for r in results["targets"] if not r["name"].startswith(ROW_PREFIX)] + new_rows
    results["figures"]["replication"] = figures
    results["replication_profile"] = asdict(profile)
    old_errors = [e for e in results.get("errors", []) if not e["step"].startswith("replication:")]
    results["errors"] = old_errors + errors
    output.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2, default=str) + "\n")
    return results


def main() -> None:
    args, database_url, env = harness.setup(
        __doc__ or "",
        PROFILES,
        usage="bench.replication: run through scripts/with-redis scripts/with-replicated-postgres",
        requires=("STANDBY_PORT_FOR_TESTS", "REDIS_URL"),
    )
    profile = PROFILES[args.profile]
    bench = ReplicationBench(profile, database_url, env)
    try:
        bench.run()
    finally:
        new_rows = rows(bench.figures)
        results = merge_results(args.output, profile, new_rows, bench.figures, bench.errors)
        print_table(results["targets"], results.get("worker_classes"))
        print(f"bench.replication: {args.output / 'results.json'}")
        print(f"bench.replication: {time.perf_counter() - bench.started:.0f} s in all")
    harness.exit_if_incomplete(
        "bench.replication", [r["name"] for r in new_rows if not r["figure"]], bench.errors
    )


if __name__ == "__main__":
    main()
