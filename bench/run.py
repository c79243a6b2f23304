"""The benchmark: ``make bench`` (full) or ``make bench-smoke`` (tiny data, seconds per figure).

Runs inside ``scripts/with-postgres`` (a throwaway PostgreSQL 15 and its ``DATABASE_URL``):

1. migrates, creates the users, and loads one database per data size (10,000, 100,000 and
   1,000,000 messages), each starting with the same base rows;
2. starts the service on each as in production (gunicorn, ``config.wsgi``, gthread workers,
   DEBUG off, JWT auth, the serving role) with control F1 mounted beside it
   (``bench.settings``), and measures the latency of the same history and conversation-list
   pages, S and F1, one request at a time, the sizes interleaved (target 4);
3. on the largest, the throughput of S against F1 (targets 2, 3, 6), the statements per
   request (1), the agent's
   in-process calls against control P (5), a page at depth 500 by keyset and by OFFSET,
   the delete of a 100,000-message conversation (8), the latency of appends at 80% of
   the peak rate (3), the appends' throughput with and without the time indexes of
   migration 0006 (3c, their cost), the workers' memory over 100,000 requests (7), uvicorn
   workers against gthread workers, each hand-written data statement against its ORM
   twin (9), an agent's turn of four messages as one batch against four appends (10a, 10b),
   the history page with ``max_tokens`` and in each format (10c, 10d), the conversation
   list with previews against the same page without them (12b), and one worker's
   memory while it streams the export of the user with the 100,000-message conversation (12d);
4. prints one table, writes ``bench/results/results.json`` and ``bench/results/latency.png``.

Figures are ratios within one run: the machine is shared and noisy. wrk (and hey for the
fixed-rate run) is the HTTP client; the harness's own Python only sets up, and measures the
in-process figures in its own process, never the server's.

The exit status is non-zero when a figure could not be produced (not when a target is
missed), which is what ``make bench-smoke`` asserts.
"""

import contextlib
import importlib
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

from bench import harness, loadgen
from bench.harness import TMP_DIR
from bench.loaddata import ConversationInfo, load_conversation, load_stage, progress, vacuum_analyze, verify
from bench.loadgen import Target

# A budget that cuts most 50-message windows short (about 58 tokens a message in the data).
BINDING_BUDGET = 1_000
# The leading time indexes (conversations' migration 0006) that every append maintains.
TIME_INDEXES = ("conversation_updated_idx", "conversation_created_idx", "message_created_idx")
# Full-text search (conversations' migration 0012): the GIN indexes every append maintains.
SEARCH_INDEXES = {
    "message_search_idx": (
        "CREATE INDEX message_search_idx ON conversations_message USING gin (user_id, content_search)"
    ),
    "conversation_search_idx": (
        "CREATE INDEX conversation_search_idx ON conversations_conversation USING gin (user_id, title_search)"
    ),
}
# What a user types into a chat sidebar's search box, in the loaded data's vocabulary
# (bench/loaddata.py): common words, a phrase, an exclusion, an alternative.
SEARCH_QUERIES = (
    "database",
    "timeout",
    "server error",
    '"stack trace"',
    "python -error",
    "cache OR memory",
    "deploy container",
    "explain why",
)
# Control of row 12b: the service's list page without previews (bench.controls).
WITHOUT_PREVIEW_LIST = "/bench/control/conversations-without-preview/"


@dataclass(frozen=True)
class Profile:
    name: str
    users: int
    probe_users: int  # owners of the small data set, whose list pages are measured
    probe_conversations: int  # conversations of each probe user in the small data set
    sizes: tuple[int, ...]  # messages in each database; the first and last are compared (target 4)
    delete_messages: int  # the conversation deleted at the end (and paged to depth)
    depth_pages: int
    seconds: float  # one throughput measurement
    latency_seconds: float  # one latency measurement, one connection
    repeats: int
    connections: int
    memory_requests: tuple[int, int]
    memory_max_seconds: float  # on a busy machine, stop short and say so
    agent_repeat: int
    profile_seconds: float  # py-spy per endpoint, 0 for none


PROFILES = {
    "full": Profile(
        name="full",
        users=100,
        probe_users=10,
        probe_conversations=25,
        sizes=(10_000, 100_000, 1_000_000),
        delete_messages=100_000,
        depth_pages=500,
        seconds=8,
        latency_seconds=4,
        repeats=5,  # the machine drifts up to 2x between runs: the median of five pairs
        connections=16,
        memory_requests=(10_000, 100_000),
        memory_max_seconds=360,
        agent_repeat=100,
        profile_seconds=8,
    ),
    "smoke": Profile(
        name="smoke",
        users=20,
        probe_users=5,
        probe_conversations=5,
        sizes=(500, 2_000),
        delete_messages=2_000,
        depth_pages=10,
        seconds=2,
        latency_seconds=1,
        repeats=1,
        connections=8,
        memory_requests=(300, 1_000),
        memory_max_seconds=15,
        agent_repeat=10,
        profile_seconds=0,
    ),
}


def http(
    url: str, *, token: str, method: str = "GET", body: str = "", headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """One setup request from the harness (never used to measure)."""
    request = urllib.request.Request(url, data=body.encode() or None, method=method)  # noqa: S310
    request.add_header("Authorization", f"Bearer {token}")
    if body:
        request.add_header("Content-Type", "application/json")
    for name, value in (headers or {}).items():
        request.add_header(name, value)
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:  # noqa: S310
            return answer.status, dict(answer.headers), answer.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def path_of(url: str) -> str:
    parts = urlsplit(url)
    return parts.path + (f"?{parts.query}" if parts.query else "")


def machine() -> dict[str, Any]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory_kib = 0
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory_kib = int(line.split()[1])
    wrk_version = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False).stdout.split(
        "\n"
    )[0]
    versions = {}
    for package in ("django", "rest_framework", "psycopg", "gunicorn", "uvicorn", "langchain_postgres"):
        with contextlib.suppress(Exception):
            versions[package] = str(getattr(importlib.import_module(package), "__version__", "?"))
    return {
        "cpu_model": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(memory_kib / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "wrk": wrk_version.strip(),
        "packages": versions,
    }


class Bench(harness.Steps):
    def __init__(self, profile: Profile, database_url: str, env: dict[str, str]) -> None:
        super().__init__("bench")
        self.p = profile
        self.database_url = database_url
        self.env = env
        self.figures: dict[str, Any] = {}
        self.rng = random.Random(5)
        self.base_url = ""
        self.main_server: Any = None
        self.main_requests = 0
        self.memory_points: list[dict[str, int]] = []

    # -- plumbing ---------------------------------------------------------------------

    def wrk(
        self, targets: list[Target], *, seconds: float, connections: int, base_url: str = ""
    ) -> dict[str, Any]:
        url = base_url or self.base_url
        result = loadgen.wrk(url, targets, seconds=seconds, connections=connections, tmp_dir=TMP_DIR)
        if self.main_server is not None and url == self.main_server.url:
            self.main_requests += int(result["requests"])
            if not self.memory_points and self.main_requests >= self.p.memory_requests[0]:
                self.memory_point()
        return result

    def memory_point(self) -> None:
        """The main server's workers' RSS now, with the number of requests it has served
        (every request wrk sent it: S and F1, reads and appends alike)."""
        assert self.main_server is not None
        point = {"requests": self.main_requests, "rss_kib": self.main_server.rss_kib()}
        self.memory_points.append(point)
        progress(
            f"bench:   after {point['requests']:,} requests: workers' RSS {point['rss_kib'] / 1024:.1f} MiB"
        )

    def series(
        self, named: dict[str, tuple[str, list[Target]]], *, seconds: float, connections: int
    ) -> dict[str, dict[str, Any]]:
        """Each named request mix (base URL, requests) ``repeats`` times, interleaved so that
        the machine's drift touches all alike, and the median of each."""
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in named}
        order = list(named)
        for _ in range(self.p.repeats):
            for name in order:
                base_url, targets = named[name]
                runs[name].append(
                    self.wrk(targets, seconds=seconds, connections=connections, base_url=base_url)
                )
            self.rng.shuffle(order)  # no mix always runs first (or right after another)
        result = {name: loadgen.median_of(r) for name, r in runs.items()}
        for name, figures in result.items():
            if figures["errors"]:
                progress(f"bench: WARNING {name}: {figures['errors']} errors or non-2xx/3xx answers")
            progress(
                f"bench:   {name:28s} {figures['rps']:9.1f} req/s  p50 {figures['p50_ms']:7.2f} ms  "
                f"p99 {figures['p99_ms']:7.2f} ms  (c={connections})"
            )
        return result

    def latency(self, named: dict[str, list[Target]]) -> dict[str, dict[str, Any]]:
        on_main = {name: (self.base_url, targets) for name, targets in named.items()}
        return self.series(on_main, seconds=self.p.latency_seconds, connections=1)

    def throughput(self, named: dict[str, list[Target]]) -> dict[str, dict[str, Any]]:
        on_main = {name: (self.base_url, targets) for name, targets in named.items()}
        return self.series(on_main, seconds=self.p.seconds, connections=self.p.connections)

    def start_server(self, kind: str, *, database: str | None = None, main: bool = True) -> Any:
        """gunicorn on the main database, or on the database named ``database``."""
        env = dict(self.env)
        if database:
            env["DATABASE_URL"] = with_database(self.database_url, database)
            if os.environ.get("DATABASE_APP_URL"):
                env["DATABASE_APP_URL"] = with_database(os.environ["DATABASE_APP_URL"], database)
        srv = harness.start_server(kind, env)
        workers, threads = harness.server_shape()
        if main:
            self.base_url = srv.url
            self.figures.setdefault("servers", {})[kind] = {
                "command": " ".join(srv.command[1:]),
                "workers": workers,
                "threads": threads if kind == "gthread" else None,
                # config.wsgi/asgi serve as DATABASE_APP_URL's role when it is set (RLS binds it).
                "database_role": urlsplit(os.environ.get("DATABASE_APP_URL") or self.database_url).username,
            }
        return srv

    def warm_up(self, base_url: str = "") -> None:
        mix = self.scale_history[:50] + self.scale_list[:20] + self.scale_history_f1[:50]
        self.wrk(mix, seconds=min(3, self.p.seconds), connections=self.p.connections, base_url=base_url)

    # -- data and targets -----------------------------------------------------------------

    def prepare_data(self) -> None:
        """The main database holds the largest size; each smaller size gets a database of
        its own made from the main one as a template right after migrating (schema, grants,
        policies and users alike). Every database starts with the same base data (same
        seed, same clock), so the pages measured for target 4 are the same rows at every
        size; the rest is filler up to the size."""
        from django.core.management import call_command
        from django.db import connections

        from bench.users import access_token, ensure_users

        call_command("migrate", verbosity=0)
        # One user more than the profile's: the search user (row 12a), whose messages are
        # the same in the main database and in a database of their own, and nobody else's.
        *self.users, self.search_user = ensure_users(self.p.users + 1)
        self.user_by_id = {str(u.pk): u for u in self.users}
        self.tokens = {str(u.pk): access_token(u) for u in [*self.users, self.search_user]}
        self.figures["search_leakproof"] = mark_search_match_leakproof(self.database_url)
        for conn in connections.all():  # CREATE DATABASE … TEMPLATE needs the template idle
            conn.close()
            if hasattr(conn, "close_pool"):
                conn.close_pool()
        main_db = urlsplit(self.database_url).path.lstrip("/")
        self.size_databases: dict[int, str | None] = {}
        for size in self.p.sizes[:-1]:
            name = f"{main_db}_size_{size}"
            create_database_from(self.database_url, name, template=main_db)
            self.size_databases[size] = name
        self.size_databases[self.p.sizes[-1]] = None
        self.search_database = f"{main_db}_search"
        create_database_from(self.database_url, self.search_database, template=main_db)

        probe_users = [str(u.pk) for u in self.users[: self.p.probe_users]]
        weights = [1 / (rank + 1) ** 0.5 for rank in range(len(self.users))]  # some users are busier
        now_us = self.now_us = time.time_ns() // 1000
        small = self.p.sizes[0]
        described: dict[str, Any] = {}
        for size, database in self.size_databases.items():
            url = with_database(self.database_url, database) if database else self.database_url
            base = load_stage(
                url,
                user_ids=probe_users,
                messages=small,
                conversations=self.p.probe_users * self.p.probe_conversations,
                seed=1,
                stage=f"base of {size:,}",
                now_us=now_us,
            )
            conversations, seconds = list(base.conversations), base.seconds
            # The largest holds the search user's messages within its size.
            searched = self.load_search_user(url) if database is None else 0
            if size > small:
                filler = load_stage(
                    url,
                    user_ids=[str(u.pk) for u in self.users],
                    messages=size - small - searched,
                    conversations=max(1, round((size - small - searched) / 50)),
                    seed=2,
                    stage=f"rest of {size:,}",
                    now_us=now_us,
                    user_weights=weights,
                )
                conversations += filler.conversations
                seconds += filler.seconds
            described[str(size)] = self.describe(conversations, seconds, base.superuser)
            described[str(size)]["vacuum_analyze_seconds"] = vacuum_analyze(url)
            if database is None:
                self.base_conversations = list(base.conversations)
                self.conversations = conversations
                started = time.perf_counter()
                described["verify"] = verify(url)
                described["verify_seconds"] = time.perf_counter() - started
                progress(f"bench: data verified: {described['verify']}")
        described["largest"] = str(self.p.sizes[-1])
        self.figures["data"] = described
        search_url = with_database(self.database_url, self.search_database)
        self.load_search_user(search_url)
        self.figures["search_data"] = {
            "messages": self.search_messages,
            "vacuum_analyze_seconds": vacuum_analyze(search_url),
        }
        self.search_targets = [
            Target("GET", f"/api/v1/search/?{urlencode({'q': q})}", self.tokens[str(self.search_user.pk)])
            for q in SEARCH_QUERIES
        ]

        long_enough = sorted((c for c in self.base_conversations if c.length >= 50), key=lambda c: -c.length)
        if len(long_enough) < 5:
            long_enough = sorted(self.base_conversations, key=lambda c: -c.length)[:10]
        probes = long_enough[:50]
        self.scale_history = [self.t("GET", f"/api/v1/conversations/{c.id}/history/", c) for c in probes]
        self.scale_history_f1 = [self.t("GET", f"/bench/f1/conversations/{c.id}/history/", c) for c in probes]
        self.scale_list = [Target("GET", "/api/v1/conversations/", self.tokens[u]) for u in probe_users]
        self.scale_list_f1 = [Target("GET", "/bench/f1/conversations/", self.tokens[u]) for u in probe_users]

        base_ids = {c.id for c in self.base_conversations}
        sample = [c for c in self.conversations if c.length >= 50 and c.id not in base_ids]
        self.rng.shuffle(sample)
        history = sample[:500] or probes
        self.history_targets = [self.t("GET", f"/api/v1/conversations/{c.id}/history/", c) for c in history]
        self.f1_history_targets = [
            self.t("GET", f"/bench/f1/conversations/{c.id}/history/", c) for c in history
        ]
        self.list_targets = [Target("GET", "/api/v1/conversations/", t) for t in self.tokens.values()]
        self.f1_list_targets = [Target("GET", "/bench/f1/conversations/", t) for t in self.tokens.values()]
        chosen = {c.id for c in history} | base_ids
        rest = [c for c in self.conversations if c.id not in chosen]
        self.rng.shuffle(rest)
        self.append_conversations = rest[:1000]
        self.message_page_targets = [
            self.t("GET", f"/api/v1/conversations/{c.id}/messages/", c) for c in history[:200]
        ]

    @property
    def search_messages(self) -> int:
        """The search user's messages: as many as the smallest database holds in all."""
        return self.p.sizes[0]

    def load_search_user(self, url: str) -> int:
        """The search user's conversations, the same rows wherever loaded (one seed)."""
        load_stage(
            url,
            user_ids=[str(self.search_user.pk)],
            messages=self.search_messages,
            conversations=max(1, self.search_messages // 50),
            seed=3,
            stage="search user",
            now_us=self.now_us,
        )
        return self.search_messages

    def t(self, method: str, path: str, conversation: ConversationInfo, body: str = "") -> Target:
        return Target(method, path, self.tokens[conversation.user_id], body)

    def append_targets(self, prefix: str) -> list[Target]:
        targets = []
        for c in self.append_conversations:
            content = " ".join(
                self.rng.choice(("why", "does", "the", "pool", "time", "out", "here")) for _ in range(20)
            )
            body = json.dumps({"role": "user", "content": content})
            targets.append(self.t("POST", f"{prefix}/conversations/{c.id}/messages/", c, body))
        return targets

    @staticmethod
    def describe(conversations: list[ConversationInfo], seconds: float, superuser: bool) -> dict[str, Any]:
        lengths = sorted(c.length for c in conversations)
        return {
            "messages": sum(lengths),
            "conversations": len(lengths),
            "users": len({c.user_id for c in conversations}),
            "length_median": statistics.median(lengths),
            "length_p90": lengths[int(0.9 * (len(lengths) - 1))],
            "length_max": lengths[-1],
            "length_1000": sum(1 for n in lengths if n == 1000),
            "seconds": seconds,
            "copy_as_superuser": superuser,
        }

    # -- measurements -----------------------------------------------------------------------

    def scale(self, servers: dict[int, Any]) -> None:
        """The same pages at every size, one connection, the sizes' servers interleaved."""
        keys = {
            "history_s": self.scale_history,
            "history_f1": self.scale_history_f1,
            "list_s": self.scale_list,
            "list_f1": self.scale_list_f1,
        }
        named = {
            f"{key}@{size}": (srv.url, targets)
            for size, srv in servers.items()
            for key, targets in keys.items()
        }
        result = self.series(named, seconds=self.p.latency_seconds, connections=1)
        self.figures["scale"] = {
            str(size): {key: result[f"{key}@{size}"] for key in keys} for size in servers
        }

    def search_scale(self, main: Any) -> None:
        """Row 12a: the search user's searches, one connection, on the main database (their
        messages among everyone's) and on their own (their messages alone), interleaved."""
        small = self.start_server("gthread", database=self.search_database, main=False)
        try:
            for srv in (main, small):
                self.wrk(self.search_targets, seconds=min(3, self.p.seconds), connections=2, base_url=srv.url)
            result = self.series(
                {
                    "search@alone": (small.url, self.search_targets),
                    "search@all": (main.url, self.search_targets),
                },
                seconds=self.p.latency_seconds,
                connections=1,
            )
        finally:
            small.stop()
        self.figures["search_scale"] = result

    def search_indexes(self) -> None:
        """Row 12c: appends with the search indexes and without them (dropped, then rebuilt),
        which half goes first alternating by round; the index is dropped or rebuilt only when
        the next half needs it (a GIN build over the whole table is slow)."""
        targets = self.append_targets("/api/v1")
        runs: dict[str, list[dict[str, Any]]] = {"with": [], "without": []}
        present = True
        try:
            for n in range(self.p.repeats):
                for name in ("with", "without") if n % 2 == 0 else ("without", "with"):
                    if (name == "with") != present:
                        present = set_search_indexes(present=name == "with")
                    runs[name].append(
                        self.wrk(targets, seconds=self.p.seconds, connections=self.p.connections)
                    )
        finally:
            if not present:
                set_search_indexes(present=True)
        result = {name: loadgen.median_of(r) for name, r in runs.items()}
        progress(
            f"bench:   append with the search indexes {result['with']['rps']:.1f} req/s, "
            f"without {result['without']['rps']:.1f} req/s"
        )
        self.figures["search_indexes"] = result

    def check_answers(self) -> None:
        """S and F1 answer 2xx with the same JSON for the same history page and list page."""
        c = self.history_targets[0]
        s_status, _, s_body = http(self.base_url + c.path, token=c.token)
        f_status, _, f_body = http(self.base_url + c.path.replace("/api/v1/", "/bench/f1/"), token=c.token)
        ls_status, _, ls_body = http(self.base_url + "/api/v1/conversations/", token=c.token)
        lf_status, _, lf_body = http(self.base_url + "/bench/f1/conversations/", token=c.token)
        same_history = s_status == f_status == 200 and json.loads(s_body) == json.loads(f_body)
        same_list = (
            ls_status == lf_status == 200 and json.loads(ls_body)["results"] == json.loads(lf_body)["results"]
        )
        self.figures["f1_same_json"] = {"history": same_history, "list_results": same_list}
        if not (same_history and same_list):
            progress(f"bench: WARNING F1 and S answer differently: {self.figures['f1_same_json']}")

    def read_throughput(self) -> None:
        self.figures["throughput"] = self.throughput(
            {
                "history_s": self.history_targets,
                "history_f1": self.f1_history_targets,
                "list_s": self.list_targets,
                "list_f1": self.f1_list_targets,
            }
        )

    def list_previews(self) -> None:
        """Row 12b: the list page with previews against the same page without them (the
        service's own viewset, ``bench.controls``), every user's first page, in turns."""
        without = [Target("GET", WITHOUT_PREVIEW_LIST, t.token) for t in self.list_targets]
        self.figures["list_previews"] = self.throughput({"with": self.list_targets, "without": without})

    def conditional_get(self) -> None:
        first = self.history_targets[0]
        status, headers, _ = http(self.base_url + first.path, token=first.token)
        etag = {k.lower(): v for k, v in headers.items()}.get("etag")
        if status != 200 or not etag:
            self.figures["conditional"] = {"implemented": False, "reason": "no ETag on the history page"}
            return
        again, _, _ = http(self.base_url + first.path, token=first.token, headers={"If-None-Match": etag})
        if again != 304:
            self.figures["conditional"] = {"implemented": False, "reason": f"If-None-Match answered {again}"}
            return
        pages, f1_pages = self.history_targets[:200], self.f1_history_targets[:200]
        result = self.throughput(
            {
                "history_304": self.revalidations(pages),
                "history_200": pages,
                # The floor: F1's bare view answers the same 304 after the same two statements.
                "history_304_f1": self.revalidations(f1_pages),
                "history_200_f1": f1_pages,
            }
        )
        self.figures["conditional"] = {"implemented": True, **result}

    def revalidations(self, pages: list[Target]) -> list[Target]:
        """``pages`` again, each with ``If-None-Match`` set to the ETag it answers now."""
        targets = []
        for target in pages:
            _, h, _ = http(self.base_url + target.path, token=target.token)
            tag = {k.lower(): v for k, v in h.items()}.get("etag")
            if tag:
                targets.append(Target("GET", target.path, target.token, headers=(("If-None-Match", tag),)))
        return targets

    def history_options(self) -> None:
        """The history page with ``max_tokens`` against ``limit`` alone, and in each format:
        the same pages, one connection, the variants interleaved (rows 10c and 10d)."""
        from bench.inprocess import NEVER_BINDING_BUDGET

        def variant(query: str) -> list[Target]:
            return [Target(t.method, f"{t.path}?{query}", t.token) for t in self.history_targets]

        self.figures["history_options"] = self.latency(
            {
                "limit": variant("limit=50"),
                "max_tokens": variant(f"limit=50&max_tokens={NEVER_BINDING_BUDGET}"),
                "max_tokens_binding": variant(f"max_tokens={BINDING_BUDGET}"),
                "anthropic": variant("format=anthropic"),
                "responses": variant("format=responses"),
            }
        )

    def turns(self) -> None:
        """An agent's turn of four messages: one POST of a JSON array (one transaction)
        against four POSTs of one message each (four), over HTTP at the append's
        concurrency; and the same through the Python API, in this process."""
        from bench import inprocess

        turns = {
            c: [_message_body(m) for m in inprocess.agent_turn(self.rng)] for c in self.append_conversations
        }
        path = "/api/v1/conversations/{}/messages/"
        batches = [self.t("POST", path.format(c.id), c, json.dumps(turn)) for c, turn in turns.items()]
        # Each conversation's messages in order, a round of the conversations' n-th messages at a
        # time: concurrent requests go to different conversations, as with the batches.
        singles = [
            self.t("POST", path.format(c.id), c, json.dumps(turn[n]))
            for n in range(inprocess.TURN_MESSAGES)
            for c, turn in turns.items()
        ]
        rest = self.throughput({"batch": batches, "singles": singles})
        c = self.append_conversations[0]
        python = inprocess.turn_comparison(
            user=self.user_by_id[c.user_id], conversation_id=c.id, repeat=self.p.agent_repeat
        )
        self.figures["turns"] = {"messages": inprocess.TURN_MESSAGES, "rest": rest, "python": python}
        progress(
            f"bench:   turn of 4 in-process: batch {python['batch']['median_ms']:.2f} ms, "
            f"4 appends {python['singles']['median_ms']:.2f} ms"
        )

    def in_process(self) -> None:
        from bench import inprocess

        c = self.history_targets[0]
        conversation_id = c.path.split("/")[4]
        append_to = self.append_conversations[-1]
        self.figures["queries"] = inprocess.queries_per_request(
            token=c.token,
            conversation_id=conversation_id,
            append_token=self.tokens[append_to.user_id],
            append_conversation_id=append_to.id,
        )
        self.figures["rls"] = {
            "module": "core.rls" if inprocess.RLS is not None else None,
            "user_scope": inprocess.USER_SCOPE_AVAILABLE,
        }

    def agent(self) -> None:
        """Target 5 in processes of their own (``bench.agent``): with the serving role, the
        one the target is judged on, and with the tables' owner, whose RLS policies differ."""
        longest = max((c for c in self.conversations if c.length <= 1000), key=lambda c: c.length)
        roles = {"owner": "owner"}
        if os.environ.get("DATABASE_APP_URL"):
            roles = {"serving": "app", **roles}
        by_role = {}
        for label, role in roles.items():
            by_role[label] = harness.figures_of(
                "bench.agent",
                longest.user_id,
                longest.id,
                str(self.p.agent_repeat),
                marker="BENCH_AGENT",
                env={**os.environ, "DJANGO_DATABASE_ROLE": role},
            )
            ours, p = (
                by_role[label]["ours_history_50"]["median_ms"],
                by_role[label]["p_get_messages"]["median_ms"],
            )
            progress(f"bench:   agent as {label}: history_load(50) {ours:.2f} ms, P get_messages {p:.2f} ms")
        self.figures["agent"] = next(iter(by_role.values()))
        self.figures["agent_by_role"] = by_role

    def statement_timings(self) -> None:
        """Each hand-written data statement against its ORM twin (``bench.statement_timings``),
        as the serving role when there is one, on the conversation of the agent's figures."""
        longest = max((c for c in self.conversations if c.length <= 1000), key=lambda c: c.length)
        rounds = str(self.p.agent_repeat * STATEMENT_ROUNDS_PER_AGENT_REPEAT)
        role = "app" if os.environ.get("DATABASE_APP_URL") else "owner"
        figures = self.figures["statements"] = harness.figures_of(
            "bench.statement_timings",
            longest.user_id,
            longest.id,
            rounds,
            marker="BENCH_STATEMENTS",
            env={**os.environ, "DJANGO_DATABASE_ROLE": role},
        )
        for name in STATEMENTS:
            f = figures[name]
            progress(
                f"bench:   {name:16s} hand-written {f['hand_ms']:.3f} ms, ORM {f['orm_ms']:.3f} ms "
                f"= {f['hand_over_orm']:.2f}"
            )

    def depth_and_delete(self) -> None:
        owner = self.users[-1]
        big = load_conversation(
            self.database_url, user_id=str(owner.pk), length=self.p.delete_messages, seed=3, stage="big"
        )
        vacuum_analyze(self.database_url)
        token = self.tokens[big.user_id]
        with self.step("page at depth: keyset against LIMIT/OFFSET"):
            path = f"/api/v1/conversations/{big.id}/messages/"
            pages = [path]
            for _ in range(self.p.depth_pages - 1):  # follow `next` as a client would
                status, _, body = http(self.base_url + path, token=token)
                if status != 200:
                    raise RuntimeError(f"message list answered {status}")
                path = path_of(json.loads(body)["next"])
                pages.append(path)
            offset = (self.p.depth_pages - 1) * 50
            f1 = f"/bench/f1/conversations/{big.id}/messages/"
            self.figures["depth"] = {
                "conversation_messages": big.length,
                "page": self.p.depth_pages,
                "offset": offset,
                **self.latency(
                    {
                        "keyset_s_page_1": [
                            Target("GET", f"/api/v1/conversations/{big.id}/messages/", token)
                        ],
                        "keyset_s_page_2": [Target("GET", pages[1], token)],
                        "keyset_s_deep": [Target("GET", path, token)],
                        "keyset_f1_deep": [Target("GET", f"{f1}?after={offset}", token)],
                        "offset_f1_page_1": [Target("GET", f"{f1}?offset=0", token)],
                        "offset_f1_deep": [Target("GET", f"{f1}?offset={offset}", token)],
                    }
                ),
            }
        with self.step("export: one worker's memory over a whole user's export"):
            self.export_memory(owner)
        with self.step("delete a large conversation"):
            from bench import inprocess

            self.figures["delete"] = inprocess.delete_conversation(
                user=owner, conversation_id=big.id, messages=big.length
            )

    def export_memory(self, owner: Any) -> None:
        """Row 12d: a gunicorn of one worker (so the worker measured is the one serving) on
        the main database streams the export of the user who holds the delete target's
        conversation (in the full run 100,000 messages, plus their share of the rest). The
        figure is that worker's peak resident set (VmHWM, reset after a warm-up export of
        another user) over its resident set before."""
        srv = harness.start_server("gthread", self.env, workers=1)
        try:
            (pid,) = srv.worker_pids()
            status, _, _ = http(f"{srv.url}/api/v1/export/", token=self.tokens[str(self.users[0].pk)])
            if status != 200:
                raise RuntimeError(f"the warm-up export answered {status}")
            before = proc_status_kib(pid, "VmRSS")
            Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM starts over from VmRSS
            streamed = stream_export(f"{srv.url}/api/v1/export/", token=self.tokens[str(owner.pk)])
            peak = proc_status_kib(pid, "VmHWM")
            after = proc_status_kib(pid, "VmRSS")
        finally:
            srv.stop()
        figures = {**streamed, "rss_before_kib": before, "peak_kib": peak, "rss_after_kib": after}
        figures["growth_kib"] = peak - before
        progress(
            f"bench:   export of {streamed['messages']:,} messages ({streamed['bytes'] / 2**20:.0f} MiB in "
            f"{streamed['seconds']:.1f} s): worker RSS {before / 1024:.1f} MiB, "
            f"peak +{(peak - before) / 1024:.1f} MiB"
        )
        self.figures["export"] = figures

    def appends(self) -> None:
        result = self.throughput(
            {"append_s": self.append_targets("/api/v1"), "append_f1": self.append_targets("/bench/f1")}
        )
        peak = float(result["append_s"]["rps"])
        rated = loadgen.hey_at_rate(
            self.base_url,
            self.append_targets("/api/v1")[:8],
            rate=0.8 * peak,
            seconds=self.p.seconds,
            tmp_dir=TMP_DIR,
        )
        progress(
            f"bench:   append at {rated['target_rps']:.0f} req/s (achieved {rated['achieved_rps']:.0f}): "
            f"p50 {rated['p50_ms']:.2f} ms p99 {rated['p99_ms']:.2f} ms"
        )
        self.figures["append"] = {**result, "at_80_percent": rated}

    def time_indexes(self) -> None:
        """What the time indexes cost an append: in each round, appends with them and
        without them (dropped, then rebuilt), which half goes first alternating by round."""
        targets = self.append_targets("/api/v1")
        runs: dict[str, list[dict[str, Any]]] = {"with": [], "without": []}
        for n in range(self.p.repeats):
            for name in ("with", "without") if n % 2 == 0 else ("without", "with"):
                with time_indexes_dropped() if name == "without" else contextlib.nullcontext():
                    runs[name].append(
                        self.wrk(targets, seconds=self.p.seconds, connections=self.p.connections)
                    )
        result = {name: loadgen.median_of(r) for name, r in runs.items()}
        progress(
            f"bench:   append with the time indexes {result['with']['rps']:.1f} req/s, "
            f"without {result['without']['rps']:.1f} req/s"
        )
        self.figures["time_indexes"] = result

    def profile(self, srv: Any) -> None:
        """py-spy on one worker while wrk drives it: where a request's time goes."""
        seconds = float(os.environ.get("BENCH_PROFILE_SECONDS", self.p.profile_seconds))
        if not seconds:
            return
        pid = srv.worker_pids()[0]
        summaries = {}
        for name, targets in (("history", self.history_targets), ("append", self.append_targets("/api/v1"))):
            raw = TMP_DIR / f"py-spy-{name}.txt"
            command = [str(Path(sys.executable).parent / "py-spy"), "record", "--pid", str(pid)]
            command += ["--duration", str(round(seconds)), "--format", "raw"]
            # --gil: only the thread holding the GIL, i.e. where the workers' Python CPU goes
            # (waits on PostgreSQL and on sockets drop out).
            command += ["--output", str(raw), "--nonblocking", "--gil"]
            spy_log = (TMP_DIR / f"py-spy-{name}.log").open("wb")
            spy = subprocess.Popen(command, stdout=spy_log, stderr=subprocess.STDOUT)
            self.wrk(targets, seconds=seconds + 1, connections=self.p.connections)
            spy.wait(timeout=60)
            spy_log.close()
            summaries[name] = summarize_profile(raw)
            if not summaries[name].get("samples"):
                summaries[name]["py_spy_output"] = (TMP_DIR / f"py-spy-{name}.log").read_text()[-1000:]
        self.figures["profile"] = summaries

    def memory(self) -> None:
        """Target 7 on the main server, which has served every earlier measurement: more
        requests of a read mix until it has served the goal (or the time cap runs out)."""
        first, goal = self.p.memory_requests
        mix = self.history_targets[:200] + self.list_targets + self.message_page_targets[:100]
        self.rng.shuffle(mix)
        rate = float(_get(self.figures, "throughput", "history_s", "rps") or 200.0)
        deadline = time.monotonic() + self.p.memory_max_seconds
        while self.main_requests < goal and time.monotonic() < deadline:
            seconds = min(30.0, max(1.0, (goal - self.main_requests) / rate))
            run = self.wrk(mix, seconds=seconds, connections=self.p.connections)
            rate = max(50.0, float(run["rps"]))
        self.memory_point()
        points = self.memory_points
        self.figures["memory"] = {
            "points": points,
            "ratio": points[-1]["rss_kib"] / points[0]["rss_kib"],
            "goal_requests": [first, goal],
            "time_capped": self.main_requests < goal,
            "workers": len(self.main_server.worker_pids()),
        }

    def uvicorn(self) -> None:
        srv = self.start_server("uvicorn")
        try:
            self.warm_up(srv.url)
            self.figures["uvicorn"] = self.throughput(
                {
                    "history_s": self.history_targets,
                    "list_s": self.list_targets,
                    "append_s": self.append_targets("/api/v1"),
                }
            )
        finally:
            srv.stop()

    # -- the run ------------------------------------------------------------------------------

    def run(self) -> None:
        self.figures["machine"] = machine()
        self.figures["machine"]["postgresql"] = postgres_version(self.database_url)
        progress("bench: load the data")
        self.prepare_data()  # nothing can be measured without it
        srv = self.main_server = self.start_server("gthread")
        try:
            with self.step("latency against data size"):
                servers = {self.p.sizes[-1]: srv}
                try:
                    for size, database in self.size_databases.items():
                        if database:
                            servers[size] = self.start_server("gthread", database=database, main=False)
                    for each in servers.values():
                        self.warm_up(each.url)
                    self.scale(dict(sorted(servers.items())))
                finally:
                    for each in servers.values():
                        if each is not srv:
                            each.stop()
            with self.step("search latency: the search user's messages among everyone's vs alone"):
                self.search_scale(srv)
            with self.step("check that F1 answers as S does"):
                self.check_answers()
            with self.step("read throughput, S against F1"):
                self.read_throughput()
            with self.step("conversation list with previews against without"):
                self.list_previews()
            with self.step("conditional GET"):
                self.conditional_get()
            with self.step("history: max_tokens against limit alone, and each format"):
                self.history_options()
            with self.step("statements per request"):
                self.in_process()
            with self.step("agent: in-process selectors against langchain-postgres"):
                self.agent()
            with self.step("hand-written statements against their ORM twins"):
                self.statement_timings()
            self.depth_and_delete()
            with self.step("append throughput and latency at 80% of the peak"):
                self.appends()
            with self.step("append throughput with and without the time indexes"):
                self.time_indexes()
            with self.step("append throughput with and without the search indexes"):
                self.search_indexes()
            with self.step("an agent's turn: one batch against four appends"):
                self.turns()
            with self.step("py-spy profiles"):
                self.profile(srv)
            with self.step("memory over requests"):
                self.memory()
        finally:
            srv.stop()
        with self.step("uvicorn workers"):
            self.uvicorn()
        self.figures["seconds_total"] = time.perf_counter() - self.started


def proc_status_kib(pid: int, field: str) -> int:
    """A field of /proc/<pid>/status in KiB: VmRSS (resident now) or VmHWM (peak)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/{pid}/status")


def stream_export(url: str, *, token: str) -> dict[str, Any]:
    """GET the JSONL export at ``url``, read as it comes and dropped: its size, its lines by
    type, its time and the time to its first bytes."""
    request = urllib.request.Request(url)  # noqa: S310
    request.add_header("Authorization", f"Bearer {token}")
    started = time.perf_counter()
    first = None
    size = conversations = messages = 0
    rest = b""
    with urllib.request.urlopen(request, timeout=600) as answer:  # noqa: S310
        while chunk := answer.read(64 * 1024):
            first = first if first is not None else time.perf_counter() - started
            size += len(chunk)
            *lines, rest = (rest + chunk).split(b"\n")
            for line in lines:
                if line.startswith(b'{"type":"message"'):
                    messages += 1
                elif line.startswith(b'{"type":"conversation"'):
                    conversations += 1
    return {
        "bytes": size,
        "conversations": conversations,
        "messages": messages,
        "seconds": time.perf_counter() - started,
        "first_bytes_seconds": first,
    }


@contextlib.contextmanager
def time_indexes_dropped() -> Iterator[None]:
    """The main database without the ``TIME_INDEXES`` for the block, as the models declare
    them before and after (the harness connects as the tables' owner)."""
    from django.db import connection

    from conversations.models import Conversation, Message

    indexes = [(m, i) for m in (Conversation, Message) for i in m._meta.indexes if i.name in TIME_INDEXES]
    assert len(indexes) == len(TIME_INDEXES), indexes
    with connection.schema_editor() as editor:
        for model, index in indexes:
            editor.remove_index(model, index)
    try:
        yield
    finally:
        with connection.schema_editor() as editor:
            for model, index in indexes:
                editor.add_index(model, index)


def set_search_indexes(*, present: bool) -> bool:
    """Drop or rebuild the ``SEARCH_INDEXES`` on the main database (the harness connects as
    the tables' owner); returns ``present``."""
    from django.db import connection

    with connection.cursor() as cursor:
        for name, create in SEARCH_INDEXES.items():
            cursor.execute(create if present else f"DROP INDEX {name}")
    return present


def mark_search_match_leakproof(database_url: str) -> bool:
    """What the README asks of a deployment for search (conversations/checks.py, W002): the
    superuser marks the full-text match LEAKPROOF, so that under row-level security the GIN
    index serves it. Done before the size databases are copied from this one, so all have
    it. False when the harness cannot connect as a superuser."""
    from bench.loaddata import connect_for_load
    from conversations.checks import LEAKPROOF_MATCH

    conn, superuser = connect_for_load(database_url)
    try:
        if superuser:
            conn.execute(LEAKPROOF_MATCH)
    finally:
        conn.close()
    return superuser


def _message_body(message: Any) -> dict[str, Any]:
    """A ``services.NewMessage`` as the API's request body for it."""
    body = {"role": message.role, "content": message.content}
    if message.tool_calls is not None:
        body["tool_calls"] = message.tool_calls
    if message.tool_results is not None:
        body["tool_results"] = message.tool_results
    return body


def with_database(url: str, database: str) -> str:
    parts = urlsplit(url)
    return parts._replace(path=f"/{database}").geturl()


def create_database_from(database_url: str, name: str, *, template: str) -> None:
    from bench.loaddata import connect_for_load

    conn, _ = connect_for_load(with_database(database_url, "postgres"))
    try:
        owner = urlsplit(database_url).username or "postgres"
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}" OWNER "{owner}" TEMPLATE "{template}"')
    finally:
        conn.close()


def postgres_version(database_url: str) -> str:
    import psycopg

    with psycopg.connect(database_url) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    return str(row[0]) if row else "?"


def summarize_profile(raw: Path, top: int = 25) -> dict[str, Any]:
    """Share of samples by function (inclusive) and by the project's own frames."""
    inclusive: dict[str, int] = {}
    leaf: dict[str, int] = {}
    total = 0
    if not raw.exists():
        return {"error": "py-spy wrote nothing (ptrace not permitted?)"}
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        if not any("handle_request" in f or "get_response" in f for f in frames):
            continue  # idle threads: gunicorn's poller, pool workers
        total += count
        for frame in set(frames):
            inclusive[frame] = inclusive.get(frame, 0) + count
        leaf[frames[-1]] = leaf.get(frames[-1], 0) + count

    def ranked(table: dict[str, int]) -> list[tuple[str, float]]:
        return (
            [(f, round(100 * n / total, 1)) for f, n in sorted(table.items(), key=lambda kv: -kv[1])[:top]]
            if total
            else []
        )

    # Frames on nearly every stack (the server loop, the handler, the middleware chain) say
    # nothing; the rest ranks where a request's CPU goes.
    interesting = {f: n for f, n in inclusive.items() if n < 0.8 * total}
    return {"samples": total, "inclusive": ranked(interesting), "self": ranked(leaf)}


# -- the report ------------------------------------------------------------------------------


def _get(figures: dict[str, Any], *path: str) -> Any:
    value: Any = figures
    for key in path:
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value


def round_ratios(a: dict[str, Any], b: dict[str, Any]) -> list[float]:
    """a's throughput over b's in each round of ``series`` (the runs are in round order)."""
    return [x["rps"] / y["rps"] for x, y in zip(a["runs"], b["runs"], strict=True) if y["rps"]]


def paired_ratio(a: dict[str, Any], b: dict[str, Any]) -> float:
    return statistics.median(round_ratios(a, b))


def target_rows(figures: dict[str, Any]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []

    def row(name: str, figure: str | None, target: str, met: bool) -> None:
        rows.append({"name": name, "figure": figure, "target": target, "met": bool(met) if figure else False})

    def statements(key: str, *, reads: bool) -> tuple[str | None, bool]:
        """The figure, and whether it meets the target: a read is the user's lookup (auth)
        and one SELECT, with no COUNT and no transaction; a write is one transaction (one
        BEGIN/COMMIT pair) of at most 3 statements besides the lookup."""
        q = _get(figures, "queries", key)
        if not q:
            return None, False
        kinds = q["by_kind"]
        text = (
            f"{q['statements']} statements: auth {kinds['auth']}, data {kinds['data']} "
            f"({q['data_selects']} SELECT), rls {kinds['rls']}, txn {kinds['transaction']}, "
            f"COUNT {q['count_queries']} [HTTP {q['status']}]"
        )
        work = kinds["data"] + kinds["rls"]
        if reads:
            met = work == q["data_selects"] == 1 and kinds["transaction"] == 0
        else:
            met = 0 < work <= 3 and kinds["transaction"] == 2
        return text, met and kinds["auth"] == 1 and q["count_queries"] == 0

    for name, key, reads, target in (
        ("1a queries: history page", "history", True, "1 SELECT + auth, no COUNT, no transaction"),
        ("1b queries: conversation list page", "list", True, "1 SELECT + auth, no COUNT, no transaction"),
        ("1c queries: append", "append", False, "auth + 1 transaction of <= 3 statements"),
    ):
        text, met = statements(key, reads=reads)
        row(name, text, target, met)

    def throughput_ratio(name: str, group: str, a: str, b: str, goal: float) -> None:
        """a/b as the median of each round's ratio: a round runs both back to back
        (``series``), so the machine's drift between rounds (here up to 2x) cancels out."""
        first, second = _get(figures, group, a), _get(figures, group, b)
        if not (first and second):
            row(name, None, f">= {goal:.2f}", False)
            return
        ratio = paired_ratio(first, second)
        row(
            name,
            f"{a} {first['rps']:.0f} / {b} {second['rps']:.0f} req/s (medians); "
            f"per-round ratios {', '.join(f'{r:.2f}' for r in round_ratios(first, second))} -> {ratio:.2f}",
            f">= {goal:.2f}",
            ratio >= goal,
        )

    throughput_ratio("2 history page throughput S/F1", "throughput", "history_s", "history_f1", 0.6)
    throughput_ratio("3a append throughput S/F1", "append", "append_s", "append_f1", 0.5)
    rated = _get(figures, "append", "at_80_percent")
    row(
        "3b append p99 at 80% of S's peak",
        f"p99 {rated['p99_ms']:.1f} ms (p50 {rated['p50_ms']:.1f}) at {rated['achieved_rps']:.0f} of "
        f"{rated['target_rps']:.0f} req/s offered (hey -q)"
        if rated
        else None,
        "printed",
        bool(rated),
    )

    with_, without = _get(figures, "time_indexes", "with"), _get(figures, "time_indexes", "without")
    row(
        "3c append throughput with time indexes / without",
        f"with {with_['rps']:.0f} / without {without['rps']:.0f} req/s (medians); per-round ratios "
        f"{', '.join(f'{r:.2f}' for r in round_ratios(with_, without))} -> {paired_ratio(with_, without):.2f}"
        if with_ and without
        else None,
        "printed",
        bool(with_ and without),
    )

    scale = _get(figures, "scale") or {}
    sizes = sorted(int(size) for size in scale)
    for key, label in (("history_s", "4a scale: history page p50"), ("list_s", "4b scale: list page p50")):
        small = float(_get(scale, str(sizes[0]), key, "p50_ms") or 0) if sizes else 0.0
        large = float(_get(scale, str(sizes[-1]), key, "p50_ms") or 0) if sizes else 0.0
        figure = None
        if small and large:
            figure = (
                f"{small:.2f} -> {large:.2f} ms = {large / small:.2f} ({sizes[0]:,} -> {sizes[-1]:,} msgs)"
            )
        row(label, figure, "<= 1.20", bool(small and large) and large / small <= 1.2)
    depth = _get(figures, "depth")

    def p50(key: str) -> float:
        return float(depth[key]["p50_ms"])

    if depth:
        text = (
            f"page {depth['page']} (OFFSET {depth['offset']:,}) of {depth['conversation_messages']:,}: "
            f"S keyset {p50('keyset_s_deep'):.2f} ms (page 2 {p50('keyset_s_page_2'):.2f}, "
            f"page 1 {p50('keyset_s_page_1'):.2f}); "
            f"F1 keyset {p50('keyset_f1_deep'):.2f} ms; "
            f"F1 LIMIT/OFFSET {p50('offset_f1_deep'):.2f} ms (page 1 {p50('offset_f1_page_1'):.2f})"
        )
        # Keyset pages cost the same at any depth (page 2 is the first with a cursor, so it
        # does the same work as the deep one); OFFSET pages grow with the depth.
        met = p50("keyset_s_deep") <= 1.2 * p50("keyset_s_page_2")
    else:
        text, met = None, False
    row("4c control: LimitOffset at depth (p50)", text, "printed; S deep <= 1.2x S page 2", met)

    agent = _get(figures, "agent")
    if agent and "ours_history_50" in agent:
        ours, p = agent["ours_history_50"]["median_ms"], agent["p_get_messages"]["median_ms"]
        row(
            "5a agent: history_load(50) vs P get_messages()",
            f"ours {ours:.2f} ms, P {p:.2f} ms = {p / ours:.1f}x "
            f"({agent['messages']} msgs, role {agent.get('database_role')})",
            ">= 10x",
            p / ours >= 10,
        )
        ours_all = agent["ours_message_list_all"]["median_ms"]
        row(
            "5b agent: all messages via message_list vs P",
            f"ours {ours_all:.2f} ms, P {p:.2f} ms = {p / ours_all:.2f}x",
            ">= 1.0x (no slower)",
            p / ours_all >= 1.0,
        )
    else:
        row("5a agent: history_load(50) vs P get_messages()", None, ">= 10x", False)
        row("5b agent: all messages via message_list vs P", None, ">= 1.0x (no slower)", False)

    # What an agent process gets by default (DATABASE_URL) and all a single-role deployment has.
    as_owner = (_get(figures, "agent_by_role") or {}).get("owner")
    if as_owner and "ours_history_50" in as_owner:
        ours, p = as_owner["ours_history_50"]["median_ms"], as_owner["p_get_messages"]["median_ms"]
        messages = as_owner["messages"]
        text = f"ours {ours:.2f} ms, P {p:.2f} ms = {p / ours:.1f}x ({messages} msgs, role: owner)"
        row("5c agent as the owner role: history_load(50) vs P", text, ">= 10x", p / ours >= 10)
    else:
        row("5c agent as the owner role: history_load(50) vs P", None, ">= 10x", False)

    conditional = _get(figures, "conditional")
    if conditional and conditional.get("implemented"):
        ratio = paired_ratio(conditional["history_304"], conditional["history_200"])
        floor = ""
        if "history_304_f1" in conditional:
            f1_ratio = paired_ratio(conditional["history_304_f1"], conditional["history_200_f1"])
            f1_over_s = paired_ratio(conditional["history_304_f1"], conditional["history_200"])
            floor = f"; floor F1: its 304 / its 200 = {f1_ratio:.2f}, its 304 / S's 200 = {f1_over_s:.2f}"
        row(
            "6 conditional GET: 304 vs full history",
            f"304 {conditional['history_304']['rps']:.0f} / 200 {conditional['history_200']['rps']:.0f} "
            f"req/s (medians) -> per-round {ratio:.2f}{floor}",
            ">= 2.0",
            ratio >= 2.0,
        )
    elif conditional:
        row(
            "6 conditional GET: 304 vs full history",
            f"not implemented ({conditional['reason']})",
            ">= 2.0",
            False,
        )
    else:
        row("6 conditional GET: 304 vs full history", None, ">= 2.0", False)

    memory = _get(figures, "memory")
    if memory:
        a, b = memory["points"][0], memory["points"][-1]
        row(
            "7 memory: workers' RSS after N vs after n requests",
            f"{b['rss_kib'] / 1024:.1f} MiB @ {b['requests']:,} / "
            f"{a['rss_kib'] / 1024:.1f} MiB @ {a['requests']:,} = {memory['ratio']:.3f}"
            + (
                f" (time cap: {b['requests']:,} of {memory['goal_requests'][-1]:,})"
                if memory["time_capped"]
                else ""
            ),
            "<= 1.10 at the goal counts",
            memory["ratio"] <= 1.10 and not memory["time_capped"],
        )
    else:
        row("7 memory: workers' RSS after N vs after n requests", None, "<= 1.10", False)

    delete = _get(figures, "delete")
    row(
        "8 delete a conversation",
        f"{delete['messages']:,} msgs: {delete['work_statements']} statements "
        f"(+{delete['by_kind']['transaction']} BEGIN/COMMIT), {delete['seconds']:.2f} s"
        if delete
        else None,
        "<= 6 statements at any size, < 2 s",
        bool(delete) and delete["work_statements"] <= 6 and delete["seconds"] < 2.0,
    )

    data = _get(figures, "data")
    largest = _get(figures, "data", str(_get(figures, "data", "largest")))
    if data and largest and "verify" in data:
        broken = sum(data["verify"].values())
        row(
            "data: load via COPY",
            f"{largest['messages']:,} msgs in {largest['seconds']:.1f} s; invariants broken: {broken}",
            "< 60 s, 0 broken",
            largest["seconds"] < 60 and broken == 0,
        )
    else:
        row("data: load via COPY", None, "< 60 s, 0 broken", False)
    rows.extend(statement_rows(figures))
    rows.extend(agent_history_rows(figures))
    rows.extend(adapter_rows(figures))
    rows.extend(conversation_field_rows(figures))
    rows.extend(search_rows(figures))
    rows.extend(export_rows(figures))
    return rows


def search_rows(figures: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows 12a and 12c: search latency flat in other users' data, and what the search
    indexes cost an append."""
    rows = []
    scale, data = _get(figures, "search_scale"), _get(figures, "search_data")
    largest = _get(figures, "data", str(_get(figures, "data", "largest")))
    name = "12a search p50: user with 10,000 messages in 1,000,000 vs 10,000 in all"
    if scale and data and largest:
        alone, among = scale["search@alone"], scale["search@all"]
        ratio = latency_ratio(among, alone)
        figure = (
            f"{among['p50_ms']:.2f} ms among {largest['messages'] + data['messages']:,} msgs / "
            f"{alone['p50_ms']:.2f} ms alone "
            f"({data['messages']:,} msgs of the user's); per-round ratio median {ratio:.2f} "
            f"(p99 {among['p99_ms']:.1f} / {alone['p99_ms']:.1f} ms; LEAKPROOF match: "
            f"{_get(figures, 'search_leakproof')})"
        )
        rows.append(
            {
                "name": name,
                "figure": figure,
                "target": "<= 1.20 and < 25 ms",
                "met": ratio <= 1.2 and among["p50_ms"] < 25,
            }
        )
    else:
        rows.append({"name": name, "figure": None, "target": "<= 1.20 and < 25 ms", "met": False})
    with_, without = _get(figures, "search_indexes", "with"), _get(figures, "search_indexes", "without")
    name = "12c append throughput with the search index / without"
    if with_ and without:
        ratio = paired_ratio(with_, without)
        figure = (
            f"with {with_['rps']:.0f} / without {without['rps']:.0f} req/s (medians); per-round ratios "
            f"{', '.join(f'{r:.2f}' for r in round_ratios(with_, without))} -> {ratio:.2f}"
        )
        rows.append({"name": name, "figure": figure, "target": ">= 0.85", "met": ratio >= 0.85})
    else:
        rows.append({"name": name, "figure": None, "target": ">= 0.85", "met": False})
    return rows


# Row 12d's goal: the issue's "exporting 100,000 messages does not grow the worker's RSS by
# more than 20 MiB".
EXPORT_GROWTH_GOAL_KIB = 20 * 1024


def export_rows(figures: dict[str, Any]) -> list[dict[str, Any]]:
    """Row 12d: the peak RSS growth of the worker that streams a whole user's export."""
    export = _get(figures, "export")
    figure = None
    if export and export["first_bytes_seconds"] is not None:
        figure = (
            f"+{export['growth_kib'] / 1024:.1f} MiB peak (VmHWM) "
            f"over {export['rss_before_kib'] / 1024:.1f} MiB, one worker, {export['messages']:,} msgs "
            f"({export['bytes'] / 2**20:.0f} MiB in "
            f"{export['seconds']:.1f} s, first bytes at {export['first_bytes_seconds']:.2f} s)"
        )
    met = bool(figure) and export["growth_kib"] <= EXPORT_GROWTH_GOAL_KIB
    return [
        {
            "name": "12d export memory: RSS growth over 100,000 messages",
            "figure": figure,
            "target": "<= 20 MiB",
            "met": met,
        }
    ]


def conversation_field_rows(figures: dict[str, Any]) -> list[dict[str, Any]]:
    """Row 12b: what the previews cost the list page, as the time of a page with them over
    the time without (the throughput without over with, the median of each round's ratio:
    both run back to back in every round, so the machine's drift cancels out)."""
    with_, without = _get(figures, "list_previews", "with"), _get(figures, "list_previews", "without")
    figure, met = None, False
    if with_ and without:
        ratios = round_ratios(without, with_)
        ratio = statistics.median(ratios)
        figure = (
            f"with {with_['rps']:.0f} / without {without['rps']:.0f} req/s (medians); per-round time "
            f"ratios {', '.join(f'{r:.2f}' for r in ratios)} -> {ratio:.2f}"
        )
        met = ratio <= 1.1
    return [{"name": "12b list with previews vs without", "figure": figure, "target": "<= 1.10", "met": met}]


def agent_history_rows(figures: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows 10a-10d: an agent's turn as one batch against four appends, in the Python API and
    over HTTP; the history page with ``max_tokens`` against ``limit`` alone (no slower than
    1.2x), and in each format."""
    agent = _get(figures, "agent") or {}
    options = _get(figures, "history_options")
    max_tokens, met = _max_tokens_figure(options, agent)
    rows = [
        (
            "10a agent turn of 4, Python API: batch vs 4 appends",
            _turn_python_figure(figures),
            "printed",
            True,
        ),
        ("10b agent turn of 4, HTTP: batch vs 4 appends", _turn_http_figure(figures), "printed", True),
        ("10c history: max_tokens vs limit alone", max_tokens, "<= 1.20", met),
        ("10d history in each format", _formats_figure(options, agent), "printed", True),
    ]
    return [
        {"name": name, "figure": text, "target": goal, "met": bool(text) and ok}
        for name, text, goal, ok in rows
    ]


def _turn_python_figure(figures: dict[str, Any]) -> str | None:
    python = _get(figures, "turns", "python")
    if not python:
        return None
    batch, singles = python["batch"]["median_ms"], python["singles"]["median_ms"]
    b, s = python["batch_statements"], python["singles_statements"]
    return (
        f"messages_append {batch:.2f} ms ({b['transactions']} transaction, {b['work']} statements) vs "
        f"4 message_append {singles:.2f} ms ({s['transactions']} transactions, {s['work']} statements) "
        f"= {singles / batch:.2f}x (medians of {python['batch']['runs']:.0f}, role {python['database_role']})"
    )


def _turn_http_figure(figures: dict[str, Any]) -> str | None:
    rest = _get(figures, "turns", "rest")
    if not rest:
        return None
    batch, singles, n = rest["batch"], rest["singles"], figures["turns"]["messages"]
    per_round = [
        b["rps"] / (s["rps"] / n) for b, s in zip(batch["runs"], singles["runs"], strict=True) if s["rps"]
    ]
    return (
        f"JSON array {batch['rps']:.0f} turns/s vs {n} POSTs {singles['rps'] / n:.0f} turns/s "
        f"({singles['rps']:.0f} req/s) (medians); per-round ratios "
        f"{', '.join(f'{r:.2f}' for r in per_round)} -> {statistics.median(per_round):.2f}x"
    )


def _max_tokens_figure(options: dict[str, Any] | None, agent: dict[str, Any]) -> tuple[str | None, bool]:
    """The same 50 messages with a budget that never binds (only the running sum differs),
    per-round p50 ratio; a binding budget's p50 beside it, and the Python API's ratio."""
    if not options:
        return None, False
    ratio = latency_ratio(options["max_tokens"], options["limit"])
    text = (
        f"p50 max_tokens {options['max_tokens']['p50_ms']:.2f} / limit {options['limit']['p50_ms']:.2f} ms, "
        f"per-round -> {ratio:.2f} (same 50 messages; a budget of {BINDING_BUDGET:,}: "
        f"{options['max_tokens_binding']['p50_ms']:.2f} ms)"
    )
    if "ours_history_50_max_tokens" in agent:
        ours = agent["ours_history_50_max_tokens"]["median_ms"] / agent["ours_history_50"]["median_ms"]
        text += f"; history_load {ours:.2f}"
    return text, ratio <= 1.2


def _formats_figure(options: dict[str, Any] | None, agent: dict[str, Any]) -> str | None:
    if not options:
        return None
    openai = options["limit"]["p50_ms"]
    names = {"openai": ("limit", "ours_history_50")}
    names |= {f: (f, f"ours_history_50_{f}") for f in ("anthropic", "responses")}
    text = "p50 " + ", ".join(
        f"{name} {options[key]['p50_ms']:.2f} ms ({options[key]['p50_ms'] / openai:.2f})"
        for name, (key, _) in names.items()
    )
    if all(key in agent for _, key in names.values()):
        text += "; history_load " + ", ".join(
            f"{name} {agent[key]['median_ms']:.2f} ms" for name, (_, key) in names.items()
        )
    return text


def adapter_rows(figures: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows 11a-11b: the agent frameworks' adapters against what their users run today, on the
    agent's conversation, with the role of target 5a."""
    adapters = _get(figures, "agent", "adapters") or {}

    def versus(ours: str, theirs: str, their_name: str, data: str) -> str | None:
        if ours not in adapters:
            return None
        a, b = adapters[ours]["median_ms"], adapters[theirs]["median_ms"]
        return f"ours {a:.2f} ms, {their_name} {b:.2f} ms = {b / a:.1f}x ({data})"

    session = versus(
        "ours_get_items_50", "sqlite_get_items_50", "SQLiteSession (file)", f"{adapters.get('items')} items"
    )
    history = versus(
        "ours_aget_messages", "lc_aget_messages", "langchain-postgres", f"{adapters.get('messages')} msgs"
    )
    if history:
        history += f"; ours with limit=50 {adapters['ours_aget_messages_limit_50']['median_ms']:.2f} ms"
    rows = [
        ("11a Agents SDK session: get_items(limit=50) vs SQLiteSession", session),
        ("11b LangChain history: aget_messages() vs langchain-postgres", history),
    ]
    return [{"name": name, "figure": text, "target": "printed", "met": bool(text)} for name, text in rows]


def latency_ratio(a: dict[str, Any], b: dict[str, Any]) -> float:
    """a's p50 over b's in each round of ``series``, the median of the rounds."""
    return float(
        statistics.median(x["p50_ms"] / y["p50_ms"] for x, y in zip(a["runs"], b["runs"], strict=True))
    )


# The hand-written data statements (bench.inprocess.statement_figures), as the table names them.
STATEMENTS = {
    "user_lookup": "token's user lookup",
    "history_window": "history window",
    "conversation_version": "revalidation's version",
    "append_count": "append's UPDATE",
}
# Calls of each statement and of its twin per call of the agent's figures (smoke 300, full 3,000).
STATEMENT_ROUNDS_PER_AGENT_REPEAT = 30


def statement_rows(figures: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per hand-written statement: its median time per call beside its ORM twin's;
    met while it still pays (at most ``keep_at_most`` of the twin's time)."""
    timed = _get(figures, "statements") or {}
    rows = []
    for i, (name, label) in enumerate(STATEMENTS.items()):
        f = timed.get(name)
        figure, met = None, False
        if f:
            figure = (
                f"hand-written {f['hand_ms']:.3f} ms, ORM twin {f['orm_ms']:.3f} ms "
                f"= {f['hand_over_orm']:.2f} (median of {timed['rounds']:,} calls each, "
                f"role {timed.get('database_role')})"
            )
            met = f["hand_over_orm"] <= timed["keep_at_most"]
        goal = f"hand <= {timed.get('keep_at_most', 0.85):.2f}x ORM"
        rows.append(
            {"name": f"9{'abcd'[i]} SQL by hand: {label}", "figure": figure, "target": goal, "met": met}
        )
    return rows


def worker_comparison(figures: dict[str, Any]) -> dict[str, Any] | None:
    uv = _get(figures, "uvicorn")
    if not uv:
        return None
    gthread = {
        "history_s": _get(figures, "throughput", "history_s", "rps"),
        "list_s": _get(figures, "throughput", "list_s", "rps"),
        "append_s": _get(figures, "append", "append_s", "rps"),
    }
    out = {}
    for key, g in gthread.items():
        u = _get(uv, key, "rps")
        if g and u:
            out[key] = {"gthread_rps": g, "uvicorn_rps": u, "uvicorn_over_gthread": u / g}
    ratios = [v["uvicorn_over_gthread"] for v in out.values()]
    if ratios:
        geo = statistics.geometric_mean(ratios)
        out["faster"] = {"class": "uvicorn" if geo > 1 else "gthread", "geomean_uvicorn_over_gthread": geo}
    return out


def print_table(rows: list[dict[str, Any]], workers: dict[str, Any] | None) -> None:
    width = max(len(r["name"]) for r in rows)
    fig_width = min(110, max(len(r["figure"] or "MISSING") for r in rows))
    print()
    print(f"{'target':{width}}  {'figure':{fig_width}}  {'goal':32}  met")
    print("-" * (width + fig_width + 44))
    for r in rows:
        figure = r["figure"] or "MISSING"
        print(f"{r['name']:{width}}  {figure:{fig_width}}  {r['target']:32}  {'yes' if r['met'] else 'NO'}")
    if workers:
        print()
        for key, v in workers.items():
            if key == "faster":
                mean = v["geomean_uvicorn_over_gthread"]
                print(f"worker class: {v['class']} faster (uvicorn/gthread, geometric mean: {mean:.2f})")
            else:
                print(
                    f"  {key:9s} gthread {v['gthread_rps']:7.0f} req/s  uvicorn {v['uvicorn_rps']:7.0f} req/s"
                    f"   uvicorn/gthread {v['uvicorn_over_gthread']:.2f}"
                )
    print()


def plot(figures: dict[str, Any], path: Path) -> bool:
    scale = figures.get("scale") or {}
    sizes = sorted(int(size) for size in scale)
    if len(sizes) < 2:
        return False
    matplotlib = importlib.import_module("matplotlib")
    matplotlib.use("Agg")
    plt = importlib.import_module("matplotlib.pyplot")
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    labels = {
        "history_s": "history page (S)",
        "history_f1": "history page (F1 floor)",
        "list_s": "conversation list (S)",
        "list_f1": "conversation list (F1 floor)",
    }
    for key, label in labels.items():
        values = [_get(scale, str(size), key, "p50_ms") for size in sizes]
        if all(values):
            ax.plot(sizes, values, marker="o", linestyle="--" if key.endswith("f1") else "-", label=label)
    ax.set_xscale("log")
    ax.set_xlabel("messages in the database")
    ax.set_ylabel("p50 latency (ms), one connection")
    ax.set_ylim(bottom=0)
    ax.set_title("p50 latency against data size")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right", fontsize=8, framealpha=0.9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


def main() -> None:
    args, database_url, env = harness.setup(
        __doc__ or "",
        PROFILES,
        usage="bench: DATABASE_URL must name a PostgreSQL database (run through scripts/with-postgres)",
    )
    profile = PROFILES[args.profile]
    for old in [*TMP_DIR.glob("server-*.log"), *TMP_DIR.glob("py-spy-*")]:
        old.unlink()  # an earlier run's logs and profiles
    bench = Bench(profile, database_url, env)
    try:
        bench.run()
    finally:
        figures = bench.figures
        rows = target_rows(figures)
        workers = worker_comparison(figures)
        args.output.mkdir(parents=True, exist_ok=True)
        plotted = False
        with contextlib.suppress(Exception):
            plotted = plot(figures, args.output / "latency.png")
        results = {
            "profile": asdict(profile),
            "targets": rows,
            "worker_classes": workers,
            "figures": figures,
            "plot": "latency.png" if plotted else None,
            "errors": bench.errors,
        }
        (args.output / "results.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
        print_table(rows, workers)
        print(
            f"bench: {args.output / 'results.json'}" + (f", {args.output / 'latency.png'}" if plotted else "")
        )
        print(f"bench: {time.perf_counter() - bench.started:.0f} s in all")
    missing = [r["name"] for r in rows if not r["figure"]]
    if not workers or "faster" not in workers:
        missing.append("worker class comparison")
    if not plotted:
        missing.append("latency plot")
    harness.exit_if_incomplete("bench", missing, bench.errors)


if __name__ == "__main__":
    main()
