"""The real server, started the way the README starts it, for tests that drive it over HTTP.

``make run`` is ``python manage.py migrate --noinput && python manage.py runserver``, with the
production settings module (``config.settings.base``). ``start_server`` does exactly that in
a subprocess, with DEBUG off and a real secret key as in production (or, asked to, with
neither, as in development), on a database of its own:
a SQLite file, or a fresh PostgreSQL database when the test process runs against PostgreSQL
(``scripts/with-postgres``). pytest-django's test database is never involved.

``start_gunicorn`` starts it as the Dockerfile does instead (gunicorn, several workers and
threads, serving as ``DATABASE_APP_URL``'s role when one is given), ``start_nginx`` puts
Debian's nginx in front of it with the deployment's configuration, and ``PostgresCluster``
stops and restarts the throwaway cluster of ``scripts/with-postgres``, for the tests of races
and outages.
"""

import contextlib
import os
import secrets
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self
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

    def worker_pids(self) -> set[int]:
        """The pids of the server process's children: gunicorn's workers (Linux only)."""
        pid = self.process.pid
        return {int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()}


class ClientThreads:
    """``count`` threads, each calling ``run(n)``: a ``with`` block starts them, and at its
    end sets ``stopping`` (which ``run`` watches between requests) and joins them."""

    def __init__(self, count: int) -> None:
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self.run, args=(n,)) for n in range(count)]

    def __enter__(self) -> Self:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join()

    def run(self, n: int) -> None:
        raise NotImplementedError


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
        drop = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        deadline = time.monotonic() + 15
        with psycopg.connect(conninfo, autocommit=True) as conn:
            while True:
                try:
                    # FORCE ends connections the killed server's pool may have left behind, but
                    # only the owner's: the serving role's end by themselves once they read
                    # their killed client's end of the socket, a moment later.
                    conn.execute(drop)
                    break
                except (psycopg.errors.InsufficientPrivilege, psycopg.errors.ObjectInUse):
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)


@contextlib.contextmanager
def owner_connection(database_url: str) -> Iterator[psycopg.Connection[tuple[Any, ...]]]:
    """A plain connection as ``database_url``'s role (the tables' owner, which ran the
    migrations) that sees every user's rows (``app.all_users``, see core/rls.py):
    for checking with SQL what the server wrote."""
    conninfo = urlunsplit(urlsplit(database_url)._replace(scheme="postgresql"))
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("SELECT set_config('app.all_users', 'on', false)")
        yield conn


def same_database(url: str, database_url: str) -> str:
    """``url`` (its role, password, host and port) pointed at ``database_url``'s database."""
    return urlunsplit(urlsplit(url)._replace(path=urlsplit(database_url).path))


def server_env(database_url: str, *, app_database_url: str | None = None) -> dict[str, str]:
    """The environment of a production-like run: the README's settings module, DEBUG off, a
    real secret key, the given database, throttles off so many quick requests are fine.
    ``app_database_url`` is the serving role's DATABASE_APP_URL, when there is one."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(SETTINGS_PREFIXES)}
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "config.settings.base",
            "DJANGO_DEBUG": "false",
            "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
            "DATABASE_URL": database_url,
            "API_THROTTLE_USER": "none",
            "API_THROTTLE_ANON": "none",
            "API_THROTTLE_LOGIN": "none",
            "API_THROTTLE_EXPORT": "none",
            "PYTHONUNBUFFERED": "1",
        }
    )
    if app_database_url:
        env["DATABASE_APP_URL"] = app_database_url
    return env


def _wait_until_ready(server: LiveServer, name: str = "runserver", ready_status: int = 200) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(
                f"{name} exited with {server.process.returncode} before answering /healthz:\n"
                f"{server.log_tail()}"
            )
        try:
            if requests.get(f"{server.url}/healthz", timeout=1).status_code == ready_status:
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise RuntimeError(
        f"{name} did not answer GET /healthz with {ready_status} within {READY_TIMEOUT_SECONDS:.0f} s:\n"
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


def migrate(env: dict[str, str]) -> None:
    """``manage.py migrate`` in ``env``: as DATABASE_URL's role, which owns the tables."""
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


def _serve(
    workdir: Path,
    env: dict[str, str],
    command: Callable[[int], list[str]],
    *,
    name: str,
    port_in_use: str,
    attempts: int,
    ready_status: int = 200,
) -> LiveServer:
    """Run ``command(port)`` on a free loopback port until it answers /healthz. The port is
    chosen before the server binds it, so a port taken in between (the server's output
    contains ``port_in_use``) is retried."""
    for attempt in range(1, attempts + 1):
        port = free_port()
        log_path = workdir / f"{name}-{attempt}.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(  # noqa: S603 (our own interpreter and programs)
                command(port), cwd=PROJECT_DIR, env=env, stdout=log, stderr=subprocess.STDOUT
            )
        server = LiveServer(url=f"http://127.0.0.1:{port}", log_path=log_path, process=process, env=env)
        try:
            _wait_until_ready(server, name, ready_status)
        except RuntimeError:
            stop_server(server)
            if attempt < attempts and port_in_use in server.log():
                continue
            raise
        return server
    raise AssertionError("unreachable")


def development_env(env: dict[str, str], workdir: Path) -> dict[str, str]:
    """``env`` as a fresh checkout's ``make run`` has it: DEBUG on and no DJANGO_SECRET_KEY, so
    the settings make and keep their own key, here in ``workdir`` (DJANGO_DEV_SECRET_FILE)."""
    development = {key: value for key, value in env.items() if key != "DJANGO_SECRET_KEY"}
    development.update({"DJANGO_DEBUG": "true", "DJANGO_DEV_SECRET_FILE": str(workdir / "dev-secret-key")})
    return development


def start_server(
    workdir: Path, database_url: str, attempts: int = 3, *, development: bool = False
) -> LiveServer:
    """Migrate, then serve on a free loopback port; raises with the server's output if it
    does not come up. The port is chosen before the server binds it, so a port taken in
    between is retried. ``development``: as ``make run`` without any settings in the
    environment (``development_env``) rather than production-like."""
    env = server_env(database_url)
    if development:
        env = development_env(env, workdir)
    migrate(env)
    return _serve(
        workdir,
        env,
        lambda port: [sys.executable, "manage.py", "runserver", "--noreload", f"127.0.0.1:{port}"],
        name="runserver",
        port_in_use="port is already in use",
        attempts=attempts,
    )


def start_gunicorn(
    workdir: Path,
    database_url: str,
    *,
    app_database_url: str | None = None,
    workers: int = 3,
    threads: int = 4,
    asgi: bool = False,
    extra_env: dict[str, str] | None = None,
    attempts: int = 3,
) -> LiveServer:
    """Migrate as ``database_url``'s role, then serve as the Dockerfile does: gunicorn with
    ``config.wsgi`` and ``threads`` threads per worker, or uvicorn workers with ``config.asgi``
    when ``asgi``. Both modules make the workers connect as ``app_database_url``'s role when it
    is given (DATABASE_APP_URL). Raises with the server's output if it does not come up."""
    env = server_env(database_url, app_database_url=app_database_url)
    migrate(env)
    env.update(extra_env or {})
    if asgi:
        app = ["config.asgi:application", "--worker-class", "uvicorn.workers.UvicornWorker"]
    else:
        app = ["config.wsgi:application", "--threads", str(threads)]
    return _serve(
        workdir,
        env,
        lambda port: [
            *(sys.executable, "-m", "gunicorn", *app),
            *("--bind", f"127.0.0.1:{port}", "--workers", str(workers), "--graceful-timeout", "5"),
        ],
        name="gunicorn",
        port_in_use="Connection in use",
        attempts=attempts,
    )


NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
NGINX_SITE_TEMPLATE = PROJECT_DIR / "deploy" / "nginx" / "default.conf.template"
# nginx.conf of the nginx image, cut to what a foreground nginx of the tests needs: everything
# in its own directory, the deployment's server as the image includes it.
NGINX_MAIN_CONF = """\
daemon off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log stderr notice;
{user}
events {{ worker_connections 1024; }}
http {{
    default_type application/octet-stream;
    access_log {dir}/access.log;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    include {dir}/default.conf;
}}
"""


def nginx_site(upstream: str, listen: str) -> str:
    """deploy/nginx/default.conf.template with the values the nginx image's envsubst puts in."""
    site = NGINX_SITE_TEMPLATE.read_text()
    return site.replace("${APP_UPSTREAM}", upstream).replace("${NGINX_LISTEN}", listen)


@contextlib.contextmanager
def nginx_in_front_of(app_url: str, *, ready_status: int = 200) -> Iterator[LiveServer]:
    """Debian's nginx on a free loopback port, configured by deploy/nginx, in front of the
    server at ``app_url``; yields it once /healthz answers ``ready_status`` through it (nginx's
    502 when nothing listens there), and stops it afterwards.

    Not under pytest's tmp_path: as root nginx's workers drop to ``nobody``, which must reach
    their temporary directories, and pytest's directories are closed to other users."""
    workdir = Path(tempfile.mkdtemp(prefix="nginx-"))
    workdir.chmod(0o755)
    as_root = os.getuid() == 0
    main_conf = NGINX_MAIN_CONF.format(dir=workdir, user="user nobody nogroup;" if as_root else "")
    (workdir / "nginx.conf").write_text(main_conf)
    upstream = urlsplit(app_url).netloc

    def command(port: int) -> list[str]:
        (workdir / "default.conf").write_text(nginx_site(upstream, f"127.0.0.1:{port}"))
        return [NGINX, "-p", str(workdir), "-c", str(workdir / "nginx.conf"), "-e", "stderr"]

    try:
        proxy = _serve(
            workdir,
            dict(os.environ),
            command,
            name="nginx",
            port_in_use="Address already in use",
            attempts=3,
            ready_status=ready_status,
        )
        try:
            yield proxy
        finally:
            stop_server(proxy)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


@dataclass
class ServedDatabase:
    server: LiveServer
    database_url: str  # the owner's URL of the server's own database, for checks with SQL
    serving_role: str  # the role the server's workers connect as


@contextlib.contextmanager
def gunicorn_on_own_database(workdir: Path, **options: Any) -> Iterator[ServedDatabase]:
    """``start_gunicorn`` (with ``options``) on a new database of the test run's PostgreSQL
    server, migrated as DATABASE_URL's role and served as DATABASE_APP_URL's role when the
    run has one (``scripts/with-postgres`` does); stopped and dropped afterwards."""
    app_url = os.environ.get("DATABASE_APP_URL")
    with postgres_database(os.environ["DATABASE_URL"]) as database_url:
        app_database_url = same_database(app_url, database_url) if app_url else None
        server = start_gunicorn(workdir, database_url, app_database_url=app_database_url, **options)
        try:
            role = urlsplit(app_database_url or database_url).username
            yield ServedDatabase(server, database_url, str(role))
        finally:
            stop_server(server)


@contextlib.contextmanager
def gunicorn_on_this_runs_database(workdir: Path, **options: Any) -> Iterator[LiveServer]:
    """``start_gunicorn`` (with ``options``) on a database of its own: a new one on the test
    run's PostgreSQL server when the run has one, else a SQLite file; stopped afterwards."""
    if is_postgres_url(os.environ.get("DATABASE_URL")):
        with gunicorn_on_own_database(workdir, **options) as served:
            yield served.server
        return
    server = start_gunicorn(workdir, f"sqlite:///{workdir / 'db.sqlite3'}", **options)
    try:
        yield server
    finally:
        stop_server(server)


@dataclass
class PostgresCluster:
    """The throwaway cluster of ``scripts/with-postgres``, which the tests may stop and start
    again. As root the server runs as the ``postgres`` user, and so must ``pg_ctl``."""

    data_dir: Path
    bin_dir: Path

    @classmethod
    def from_environment(cls) -> "PostgresCluster | None":
        """The cluster ``scripts/with-postgres`` started, or None when it did not start one."""
        data_dir = os.environ.get("PGDATA_FOR_TESTS")
        bin_dir = os.environ.get("PG_BIN_FOR_TESTS")
        if not data_dir or not bin_dir:
            return None
        return cls(Path(data_dir), Path(bin_dir))

    @property
    def log_path(self) -> Path:
        """The server's log, where ``scripts/with-postgres`` puts it."""
        return self.data_dir.parent / "server.log"

    def log(self, since: int = 0) -> str:
        """The server's log from byte ``since`` on (``log_size()`` before a test, say)."""
        with self.log_path.open("rb") as log:
            log.seek(since)
            return log.read().decode(errors="replace")

    def log_size(self) -> int:
        return self.log_path.stat().st_size

    def pg_ctl(self, *args: str, timeout: float = 60) -> str:
        command = [str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), *args]
        if os.getuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        result = subprocess.run(  # noqa: S603 (PostgreSQL's own pg_ctl)
            command, capture_output=True, text=True, timeout=timeout, check=False
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"{shlex.join(command)} exited with {result.returncode}:\n{result.stdout}{result.stderr}"
            )
        return result.stdout

    def is_running(self) -> bool:
        return (self.data_dir / "postmaster.pid").exists()

    def stop(self) -> None:
        """Stop the server as an operator would: ``-m fast`` rolls back open transactions and
        ends every session."""
        self.pg_ctl("stop", "-w", "-m", "fast")

    def start(self) -> None:
        """Start the server again with the options it last started with (``postmaster.opts``
        holds its command line) and wait until it accepts connections."""
        options = shlex.split((self.data_dir / "postmaster.opts").read_text())[1:]  # not the program
        if "-D" in options:  # pg_ctl passes the data directory itself
            del options[options.index("-D") : options.index("-D") + 2]
        self.pg_ctl("start", "-w", "-l", str(self.log_path), "-o", shlex.join(options))
