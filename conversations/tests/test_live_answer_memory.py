"""Large answers against gunicorn as deployed: their size, and a worker's memory.

The penetration test filled a conversation with about 1 MB of ``tool_calls`` per message;
then one history and one message page answered 61.7 MB each, and the worker's resident set
grew from 123 to 295 MiB and stayed. Here one gunicorn worker (4 threads, with
API_MAX_RESPONSE_BYTES of 2 MiB) serves 60 messages with tool calls near their bound
(TOOL_CALLS_MAX_BYTES, 14 MB in all), while eight clients read the whole history and the
largest message page at once, 24 times.

The stated bound: the worker's peak resident set (``VmHWM``, reset before the reads) grows by
less than PEAK_GROWTH_LIMIT. Each of the 4 threads holds at most one read's rows as the
database hands them over (the page's rows, here 14 MB) and one bounded answer; measured, the
peak grew by about 185-235 MiB on SQLite and PostgreSQL, and by 500-515 MiB before answers
were bounded (when each read also rendered the whole 14 MB, as text and as bytes).
"""

import contextlib
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from .live_server import LiveServer, is_postgres_url, postgres_database, start_gunicorn, stop_server
from .test_live_http import CONVERSATIONS, history_url, messages_url, register

MIB = 1024 * 1024
MAX_RESPONSE_BYTES = 2 * MIB
MESSAGES = 60
CALLS, CALL_ARGUMENTS = 4, 60_000  # one message's tool calls: near TOOL_CALLS_MAX_BYTES
READERS, ROUNDS = 8, 3
PEAK_GROWTH_LIMIT = 320 * MIB
TIME_LIMIT_SECONDS = 60


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("live_answer_memory")
    admin_url = os.environ.get("DATABASE_URL")
    with postgres_or_sqlite(admin_url, workdir) as database_url:
        try:
            live = start_gunicorn(
                workdir,
                database_url,
                workers=1,
                threads=4,
                extra_env={"API_MAX_RESPONSE_BYTES": str(MAX_RESPONSE_BYTES)},
            )
        except RuntimeError as exc:
            pytest.fail(f"gunicorn did not start:\n{exc}")
        try:
            yield live
        finally:
            stop_server(live)


def postgres_or_sqlite(admin_url, workdir):
    if admin_url and is_postgres_url(admin_url):
        return postgres_database(admin_url)
    return contextlib.nullcontext(f"sqlite:///{workdir / 'db.sqlite3'}")


def memory_kib(pid: int, field: str) -> int:
    """A field of /proc/<pid>/status in KiB: VmRSS (resident now) or VmHWM (peak)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def reset_peak(pid: int) -> None:
    """Start VmHWM over from the current resident set (Linux's clear_refs, value 5)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def test_concurrent_large_reads_keep_answers_and_a_workers_memory_bounded(server: LiveServer):
    started = time.monotonic()
    alice = register(server, "alice")
    conversation = alice.json(201, "POST", CONVERSATIONS, json={"title": "large"})["id"]
    for n in range(MESSAGES):
        function = {"name": "f", "arguments": "a" * CALL_ARGUMENTS}
        calls = [{"id": f"call_{n}_{c}", "type": "function", "function": function} for c in range(CALLS)]
        body = {"role": "assistant", "content": None, "tool_calls": calls}
        alice.expect(201, "POST", messages_url(conversation), json=body)
    (worker,) = server.worker_pids()
    urls = [f"{history_url(conversation)}?limit=500", f"{messages_url(conversation)}?page_size=200"]

    def read(n: int) -> int:
        return len(alice.expect(200, "GET", urls[n % 2]).content)

    before = memory_kib(worker, "VmRSS") * MIB // 1024
    reset_peak(worker)
    with ThreadPoolExecutor(READERS) as pool:
        sizes = list(pool.map(read, range(READERS * ROUNDS)))
    peak = memory_kib(worker, "VmHWM") * MIB // 1024

    assert peak - before < PEAK_GROWTH_LIMIT, f"from {before / MIB:.0f} MiB to a peak of {peak / MIB:.0f} MiB"
    assert max(sizes) <= MAX_RESPONSE_BYTES
    assert time.monotonic() - started < TIME_LIMIT_SECONDS
