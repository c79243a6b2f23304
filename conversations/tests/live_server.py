"""The real server, started the way the README starts it, for tests that drive it over HTTP.

``make run`` is ``python manage.py migrate --noinput && python manage.py runserver``, with the
production settings module (``config.settings.base``). ``start_server`` does exactly that in
a subprocess, with DEBUG off and a real secret key as in production, on a database of its own:
a SQLite file, or a fresh PostgreSQL database when the test process runs against PostgreSQL
(``scripts/with-postgres``). pytest-django's test database is never involved.
"""

import contextlib
import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import requests
from psycopg import sql

PROJECT_DIR = Path(__file__).resolve().parents[2]
READY_TIMEOUT_SECONDS = 30.0
MIGRATE_TIMEOUT_SECONDS = 120.0
# Variables of the test process that would change the server's settings.
SETTINGS_PREFIXES = ("DJANGO_", "JWT_", "API_", "DATABASE_")


@dataclass
class LiveServer:
    url: str  # e.g. http://127.0.0.1:54321, no trailing slash
    log_path: Path
    process: subprocess.Popen[bytes]
    env: dict[str, str]  # the server's environment, e.g. for its DJANGO_SECRET_KEY

    def log(self) -> str:
        """Everything the server wrote to stdout and stderr so far."""
        return self.log_path.read_text(errors="replace")

    def log_tail(self, chars: int = 6000) -> str:
        return self.log()[-chars:]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def is_postgres_url(url: str | None) -> bool:
    return bool(url) and urlsplit(url).scheme in {"postgres", "postgresql", "pgsql", "psql"}


@contextlib.contextmanager
def postgres_database(admin_url: str) -> Iterator[str]:
    """A new, empty database on the server of ``admin_url`` (whose role has CREATEDB), dropped
    afterwards; yields its URL."""
    name = f"live_http_{secrets.token_hex(6)}"
    parts = urlsplit(admin_url)
    conninfo = urlunsplit(parts._replace(scheme="postgresql"))
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield urlunsplit(parts._replace(path=f"/{name}"))
    finally:
        with psycopg.connect(conninfo, autocommit=True) as conn:
            # FORCE ends connections the killed server's pool may have left behind.
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def server_env(database_url: str) -> dict[str, str]:
    """The environment of a production-like run: the README's settings module, DEBUG off, a
    real secret key, the given database, throttles off so many quick requests are fine."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(SETTINGS_PREFIXES)}
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "config.settings.base",
            "DJANGO_DEBUG": "false",
            "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
            "DATABASE_URL": database_url,
            "API_THROTTLE_USER": "none",
            "API_THROTTLE_ANON": "none",
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


def _wait_until_ready(server: LiveServer) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(
                f"runserver exited with {server.process.returncode} before answering /healthz:\n"
                f"{server.log_tail()}"
            )
        try:
            if requests.get(f"{server.url}/healthz", timeout=1).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise RuntimeError(
        f"runserver did not answer GET /healthz with 200 within {READY_TIMEOUT_SECONDS:.0f} s:\n"
        f"{server.log_tail()}"
    )


def stop_server(server: LiveServer) -> None:
    if server.process.poll() is None:
        server.process.terminate()
        try:
            server.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait(timeout=10)


def start_server(workdir: Path, database_url: str, attempts: int = 3) -> LiveServer:
    """Migrate, then serve on a free loopback port; raises with the server's output if it
    does not come up. The port is chosen before the server binds it, so a port taken in
    between is retried."""
    env = server_env(database_url)
    migrate = subprocess.run(  # noqa: S603 (our own interpreter and manage.py)
        [sys.executable, "manage.py", "migrate", "--noinput"],
        cwd=PROJECT_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=MIGRATE_TIMEOUT_SECONDS,
        check=False,
    )
    if migrate.returncode != 0:
        raise RuntimeError(
            f"manage.py migrate exited with {migrate.returncode}:\n{migrate.stdout}\n{migrate.stderr}"
        )
    for attempt in range(1, attempts + 1):
        port = free_port()
        log_path = workdir / f"runserver-{attempt}.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(  # noqa: S603 (our own interpreter and manage.py)
                [sys.executable, "manage.py", "runserver", "--noreload", f"127.0.0.1:{port}"],
                cwd=PROJECT_DIR,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        server = LiveServer(url=f"http://127.0.0.1:{port}", log_path=log_path, process=process, env=env)
        try:
            _wait_until_ready(server)
        except RuntimeError:
            stop_server(server)
            if attempt < attempts and "port is already in use" in server.log():
                continue
            raise
        return server
    raise AssertionError("unreachable")
