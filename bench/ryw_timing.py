"""Row 15c: what the read-your-writes decision costs a read, in a process of its own set up as
a serving process with one replica (``DATABASE_REPLICA_URLS``, Redis, the serving role):
``python -m bench.ryw_timing CALLS USER_ID…`` (three users, none of whom has written through
the service yet) prints one JSON line.

The decision is what every read of a GET request runs before its first statement:
``core.replicas.reads_for`` inside a ``read_only`` block, timed per call, the three readers'
calls interleaved. Each reader is in one state:

- ``none``: no write recorded (one Redis GET, then the replica);
- ``replayed``: a write recorded that the replica has replayed (the same GET, compared with
  the replica's position as this process last learnt it: the replica);
- ``ahead``: a write recorded past what the replica has replayed (its replay is paused for
  the measurement): the primary, the replica asked again at most every
  ``replicas.POSITION_MAX_AGE`` seconds, which the mean shows.

One Redis GET of a missing key is timed beside them: the floor of any check kept in Redis.
"""

import json
import logging
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

import psycopg

READY_TIMEOUT_SECONDS = 30.0


def _admin(host: str | None, port: int | str | None) -> psycopg.Connection[Any]:
    """Superuser ``postgres`` (trust on loopback, scripts/with-replicated-postgres)."""
    return psycopg.connect(host=host, port=port, user="postgres", dbname="postgres", autocommit=True)


def _standby_admin() -> psycopg.Connection[Any]:
    return _admin(os.environ.get("PGHOST_FOR_TESTS", "127.0.0.1"), os.environ["STANDBY_PORT_FOR_TESTS"])


def _primary_admin() -> psycopg.Connection[Any]:
    url = urlsplit(os.environ["DATABASE_URL"])
    return _admin(url.hostname, url.port)


@contextmanager
def replay_paused() -> Iterator[None]:
    """The standby stops replaying, and WAL it has not replayed follows (a logical message),
    so that a write recorded now is past the replica's position until the block ends."""
    with _standby_admin() as standby, _primary_admin() as primary:
        standby.execute("SELECT pg_wal_replay_pause()")
        try:
            while True:
                row = standby.execute("SELECT pg_get_wal_replay_pause_state()").fetchone()
                if row and row[0] == "paused":
                    break
                time.sleep(0.01)
            primary.execute("SELECT pg_logical_emit_message(false, 'bench', 'past the replica')")
            yield
        finally:
            standby.execute("SELECT pg_wal_replay_resume()")


def record_write(user_id: str) -> None:
    """What a write's transaction does for read-your-writes, as the service does it."""
    from django.db import transaction

    from core import replicas

    with transaction.atomic():
        replicas.written(user_id)


def decide(user_id: str) -> str:
    from core import replicas

    with replicas.read_only():
        return replicas.reads_for(user_id)


def wait_for(user_id: str, alias: str) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    while (chosen := decide(user_id)) != alias:
        if time.monotonic() > deadline:
            raise RuntimeError(f"reads of {user_id} go to {chosen}, not {alias}")
        time.sleep(0.01)


def timed(calls: int, named: dict[str, Callable[[], object]]) -> dict[str, dict[str, Any]]:
    """Each callable ``calls`` times, in turns; per-call times in milliseconds, and what the
    calls returned (each distinct value, counted)."""
    times: dict[str, list[float]] = {name: [] for name in named}
    answers: dict[str, dict[str, int]] = {name: {} for name in named}
    for _ in range(calls):
        for name, call in named.items():
            started = time.perf_counter_ns()
            answer = call()
            times[name].append((time.perf_counter_ns() - started) / 1e6)
            key = str(answer)
            answers[name][key] = answers[name].get(key, 0) + 1
    return {
        name: {
            "median_ms": statistics.median(t),
            "mean_ms": statistics.fmean(t),
            "p99_ms": sorted(t)[int(0.99 * (len(t) - 1))],
            "answers": answers[name],
        }
        for name, t in times.items()
    }


def main() -> None:
    calls, (none, replayed, ahead) = int(sys.argv[1]), sys.argv[2:5]
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")
    os.environ["DJANGO_DATABASE_ROLE"] = "app"  # as config.wsgi serves
    import django

    django.setup()
    logging.getLogger("audit").setLevel(logging.WARNING)
    from django.conf import settings
    from django.core.cache import cache

    from core import replicas

    (replica,) = settings.DATABASE_REPLICAS
    wait_for(none, replica)
    record_write(replayed)
    wait_for(replayed, replica)
    with replay_paused():
        record_write(ahead)
        wait_for(ahead, "default")
        figures: dict[str, Any] = timed(
            calls,
            {
                "none": lambda: decide(none),
                "replayed": lambda: decide(replayed),
                "ahead": lambda: decide(ahead),
                "redis_get": lambda: cache.get("bench:absent"),
            },
        )
    expected = {"none": replica, "replayed": replica, "ahead": "default"}
    for state, alias in expected.items():
        if set(figures[state]["answers"]) != {alias}:
            raise RuntimeError(f"{state}: reads went to {figures[state]['answers']}, not only {alias}")
    figures["calls"] = calls
    figures["position_max_age_ms"] = replicas.POSITION_MAX_AGE * 1000
    print("BENCH_RYW " + json.dumps(figures))


if __name__ == "__main__":
    main()
