"""What every benchmark driver shares (``bench.run``, ``bench.replication``): where results
go, the deployment's environment, the command line and Django set-up, the steps whose
failure must not lose the other figures, the gunicorn workers, and the exit status."""

import argparse
import contextlib
import json
import logging
import os
import secrets
import subprocess
import sys
import time
import traceback
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from bench import server
from bench.loaddata import progress

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"
TMP_DIR = RESULTS_DIR / "tmp"


def server_environment(database_url: str) -> dict[str, str]:
    """The deployment's variables: DEBUG off, a real secret, the pool's defaults. Tokens
    outlive the run, and DRF's throttles are off so that a load generator sending a few
    thousand requests a second as 100 users measures the service rather than its 429s."""
    return {
        "DATABASE_URL": database_url,
        "DJANGO_SETTINGS_MODULE": "bench.settings",
        "DJANGO_DEBUG": "false",
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(40),
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
        "JWT_ACCESS_TOKEN_LIFETIME": str(6 * 3600),
        "API_THROTTLE_USER": "none",
        "API_THROTTLE_ANON": "none",
        "API_THROTTLE_LOGIN": "none",
        "API_THROTTLE_EXPORT": "none",
    }


def setup(
    description: str, profiles: Iterable[str], *, usage: str, requires: Iterable[str] = ()
) -> tuple[argparse.Namespace, str, dict[str, str]]:
    """Parse ``--profile``/``--output``, check that ``DATABASE_URL`` names PostgreSQL and that
    every variable of ``requires`` is set (else exit with ``usage``), and set Django up as the
    deployment: the arguments, the database URL and the servers' environment."""
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--profile", choices=sorted(profiles), default="full")
    parser.add_argument("--output", type=Path, default=RESULTS_DIR)
    args = parser.parse_args()
    database_url = os.environ.get("DATABASE_URL", "")
    missing = [name for name in requires if not os.environ.get(name)]
    if not database_url.startswith(("postgres://", "postgresql://")) or missing:
        sys.exit(usage)
    env = server_environment(database_url)
    os.environ.update(env)
    import django

    django.setup()
    # The service's audit log line per request is the server's business, not the harness's.
    logging.getLogger("audit").setLevel(logging.WARNING)
    TMP_DIR.mkdir(parents=True, exist_ok=True)
    return args, database_url, env


class Steps:
    """A run's clock and its failed steps; ``label`` starts every progress line."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.started = time.perf_counter()
        self.errors: list[dict[str, str]] = []

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[None]:
        progress(f"{self.label}: {name} (at {time.perf_counter() - self.started:.0f} s)")
        try:
            yield
        except Exception as exc:  # noqa: BLE001 (one failed figure must not lose the others)
            progress(f"{self.label}: {name} FAILED: {exc!r}")
            self.errors.append(
                {"step": name, "error": repr(exc), "traceback": traceback.format_exc()[-3000:]}
            )


def server_shape() -> tuple[int, int]:
    """Workers and threads a worker of the servers measured: ``BENCH_WORKERS`` (2) and
    ``BENCH_THREADS`` (4)."""
    return int(os.environ.get("BENCH_WORKERS", "2")), int(os.environ.get("BENCH_THREADS", "4"))


def start_server(kind: str, env: dict[str, str], *, workers: int | None = None) -> server.Server:
    """gunicorn (``kind``: its worker class) shaped by ``server_shape``, or with ``workers``."""
    count, threads = server_shape()
    return server.start(
        kind, env=env, workers=count if workers is None else workers, threads=threads, log_dir=TMP_DIR
    )


def figures_of(module: str, *args: str, marker: str, env: dict[str, str]) -> Any:
    """Run ``python -m module args`` in a process of its own (in-process timings measured
    away from the harness), and the JSON it printed after ``marker``."""
    done = subprocess.run(  # noqa: S603 (this interpreter and a bench module)
        [sys.executable, "-m", module, *args],
        cwd=BENCH_DIR.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith(f"{marker} ")]
    if not lines:
        raise RuntimeError(f"{module} printed nothing: {done.stderr[-3000:]}")
    return json.loads(lines[-1].removeprefix(f"{marker} "))


def exit_if_incomplete(label: str, missing: list[str], errors: list[dict[str, str]]) -> None:
    """Exit non-zero when a figure is missing or a step failed, whatever the timings."""
    if missing or errors:
        failed = [e["step"] for e in errors]
        print(f"{label}: figures missing: {missing}; failed steps: {failed}", file=sys.stderr)
        sys.exit(1)
