"""The deployment: docker-compose.yml validates and wires what the service needs; the container's
start script and gunicorn settings; settings that come from the deployment's environment.

No container engine runs here: ``docker-compose config`` (Debian's docker-compose) parses,
interpolates and validates the file without one. The running stack's pieces are exercised
elsewhere: gunicorn's gthread workers on ``config.wsgi`` with these gunicorn settings by the
end-to-end test (e2e/), nginx with deploy/nginx's template in front of them by
config/tests/test_proxy.py, the serving role by the PostgreSQL runs.
"""

import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest
import yaml

from conftest import require_tool

PROJECT_DIR = Path(__file__).resolve().parents[2]
DOCKER_COMPOSE = shutil.which("docker-compose")
needs_compose = pytest.mark.skipif(
    DOCKER_COMPOSE is None,
    reason="Debian's docker-compose is not installed (apt-get install docker-compose; "
    "`make test` runs e2e/install-tools)",
)


def run_clean(
    command: list[str], *, drop: tuple[str, ...], env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    """``command`` in the project directory with ``env``, and without the caller's variables
    that start with ``drop``, so that the shell it runs from cannot change the result."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    return subprocess.run(  # noqa: S603 (our interpreter or Debian's docker-compose, our files)
        command,
        cwd=PROJECT_DIR,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def compose_config(**env: str) -> subprocess.CompletedProcess[str]:
    assert DOCKER_COMPOSE is not None
    return run_clean(
        [DOCKER_COMPOSE, "--project-directory", str(PROJECT_DIR), "-f", "docker-compose.yml", "config"],
        drop=("DJANGO_", "COMPOSE_", "DATABASE_", "WEB_"),
        env=env,
    )


@pytest.fixture(scope="module")
def compose() -> dict:
    require_tool("docker-compose", "docker-compose")
    result = compose_config(
        DJANGO_SECRET_KEY="a-real-secret-for-the-test", CORS_ALLOWED_ORIGINS="https://chat.example"
    )
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


@needs_compose
def test_compose_file_validates_and_runs_postgres_redis_and_the_app(compose):
    services = compose["services"]

    assert set(services) == {"db", "redis", "app", "nginx"}
    assert services["db"]["image"] == "postgres:15"
    assert services["redis"]["image"].startswith("redis:7")
    assert services["nginx"]["image"].startswith("nginx:")


@needs_compose
def test_only_nginx_is_published_and_the_app_trusts_it_as_its_one_proxy(compose):
    services = compose["services"]

    assert [service for service, config in services.items() if config.get("ports")] == ["nginx"]
    assert services["nginx"]["ports"] == [{"published": 8000, "target": 8080}]
    assert services["nginx"]["depends_on"] == {"app": {"condition": "service_healthy"}}
    assert services["app"]["environment"]["API_TRUSTED_PROXIES"] == "1"


@needs_compose
def test_nginx_runs_the_template_the_tests_run_with_every_variable_set(compose):
    """The nginx image's entrypoint substitutes only variables it has: one left unset would
    reach nginx as ``${…}``."""
    nginx = compose["services"]["nginx"]
    template = PROJECT_DIR / "deploy" / "nginx" / "default.conf.template"

    assert f"{template}:/etc/nginx/templates/default.conf.template:ro" in nginx["volumes"]
    assert set(re.findall(r"\$\{(\w+)\}", template.read_text())) == set(nginx["environment"])
    assert nginx["environment"] == {"APP_UPSTREAM": "app:8000", "NGINX_LISTEN": "8080"}


@needs_compose
def test_the_app_waits_for_healthy_database_and_redis_and_is_healthy_when_ready(compose):
    app = compose["services"]["app"]

    assert app["depends_on"] == {
        "db": {"condition": "service_healthy"},
        "redis": {"condition": "service_healthy"},
    }
    probe = " ".join(app["healthcheck"]["test"])
    assert "http://127.0.0.1:8000/readyz" in probe
    assert "redis-cli" in " ".join(compose["services"]["redis"]["healthcheck"]["test"])
    assert "pg_isready" in " ".join(compose["services"]["db"]["healthcheck"]["test"])


@needs_compose
def test_the_app_migrates_as_owner_and_serves_as_the_serving_role(compose):
    app = compose["services"]["app"]
    env = app["environment"]

    assert app["command"] == ["deploy/start.sh"]
    assert env["DJANGO_SETTINGS_MODULE"] == "config.settings.production"
    assert env["DATABASE_URL"].startswith("postgres://chat:")
    assert env["DATABASE_APP_URL"].startswith("postgres://chat_app:")
    assert env["REDIS_URL"] == "redis://redis:6379/0"
    assert env["DJANGO_DEBUG"] == "false"
    assert env["CORS_ALLOWED_ORIGINS"] == "https://chat.example"
    assert env["DJANGO_SECRET_KEY"] == "a-real-secret-for-the-test"
    assert (
        f"{PROJECT_DIR}/deploy/postgres/init-roles.sh:/docker-entrypoint-initdb.d/10-init-roles.sh:ro"
        in (compose["services"]["db"]["volumes"])
    )


@needs_compose
def test_the_app_runs_two_workers_of_four_threads_unless_told_otherwise(compose):
    env = compose["services"]["app"]["environment"]

    assert (env["WEB_WORKERS"], env["WEB_THREADS"]) == ("2", "4")
    resized = compose_config(DJANGO_SECRET_KEY="a-real-secret-for-the-test", WEB_WORKERS="3", WEB_THREADS="8")
    assert resized.returncode == 0, resized.stderr
    resized_env = yaml.safe_load(resized.stdout)["services"]["app"]["environment"]
    assert (resized_env["WEB_WORKERS"], resized_env["WEB_THREADS"]) == ("3", "8")


@needs_compose
def test_compose_refuses_to_start_without_a_secret_key():
    result = compose_config()

    assert result.returncode != 0
    assert "set DJANGO_SECRET_KEY" in result.stderr


def test_start_script_migrates_then_serves_config_wsgi_with_the_settings_worker_class():
    script = (PROJECT_DIR / "deploy" / "start.sh").read_text()
    commands = [line for line in script.splitlines() if line and not line.startswith("#")]

    assert os.access(PROJECT_DIR / "deploy" / "start.sh", os.X_OK)
    migrate = commands.index("python manage.py migrate --noinput")
    serve = next(i for i, line in enumerate(commands) if line.startswith("exec gunicorn"))
    assert migrate < serve
    assert commands[serve] == "exec gunicorn -c deploy/gunicorn_conf.py config.wsgi:application"


def test_dockerfile_runs_the_start_script_with_a_readiness_healthcheck():
    dockerfile = (PROJECT_DIR / "Dockerfile").read_text()

    assert 'CMD ["deploy/start.sh"]' in dockerfile
    assert "HEALTHCHECK" in dockerfile
    assert "/readyz" in dockerfile
    assert "collectstatic" in dockerfile


def test_postgres_init_script_makes_an_owner_and_a_serving_role_that_are_not_superusers():
    script = (PROJECT_DIR / "deploy" / "postgres" / "init-roles.sh").read_text()
    sql = script.split("<<'SQL'\n", 1)[1].split("\nSQL\n", 1)[0].splitlines()

    assert sql == [
        "CREATE ROLE chat LOGIN PASSWORD :'owner_password';",
        "CREATE ROLE chat_app LOGIN PASSWORD :'app_password';",
        "GRANT chat_app TO chat;",
        "CREATE DATABASE chat OWNER chat;",
    ]


def run_python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    return run_clean(
        [sys.executable, "-c", textwrap.dedent(code)],
        drop=("DJANGO_", "REDIS_", "CORS_", "METRICS_", "PROMETHEUS_", "WEB_"),
        # A key of its own: without one, the settings would make the development key file.
        env={"DJANGO_SECRET_KEY": secrets.token_urlsafe(50), **env},
    )


SHOW_SETTINGS = """
    import django, json, os
    os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings.base"
    from django.conf import settings
    print(json.dumps({
        "cache": settings.CACHES["default"],
        "cors": settings.CORS_ALLOWED_ORIGINS,
        "networks": settings.METRICS_ALLOWED_NETWORKS,
        "token": settings.METRICS_TOKEN,
    }))
"""


def test_settings_take_redis_cors_and_metrics_access_from_the_environment():
    result = run_python(
        SHOW_SETTINGS,
        REDIS_URL="redis://redis:6379/0",
        CORS_ALLOWED_ORIGINS="https://chat.example.com,http://localhost:5173",
        METRICS_ALLOWED_NETWORKS="10.0.0.0/8,fd00::/8",
        METRICS_TOKEN="scrape-me",
    )

    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    assert shown["cache"] == {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": "redis://redis:6379/0",
        "OPTIONS": {"socket_connect_timeout": 1.0, "socket_timeout": 1.0},
    }
    assert shown["cors"] == ["https://chat.example.com", "http://localhost:5173"]
    assert shown["networks"] == ["10.0.0.0/8", "fd00::/8"]
    assert shown["token"] == "scrape-me"


ASK_THE_CACHE = """
    import django, os, time
    os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings.base"
    django.setup()
    from django.core.cache import cache
    started = time.monotonic()
    try:
        cache.get("anything")
    except Exception as exc:
        print(type(exc).__name__, round(time.monotonic() - started, 1))
"""


def test_a_redis_that_stops_answering_fails_within_redis_timeout():
    """A listening socket that never answers, as a partitioned Redis looks: the request's
    cache read gives up after REDIS_TIMEOUT (which the API answers as a 503), not after TCP's
    minutes."""
    with socket.create_server(("127.0.0.1", 0)) as silent:
        port = silent.getsockname()[1]
        result = run_python(ASK_THE_CACHE, REDIS_URL=f"redis://127.0.0.1:{port}/0", REDIS_TIMEOUT="0.5")

    assert result.returncode == 0, result.stderr
    error, seconds = result.stdout.split()
    assert error == "TimeoutError"
    assert 0.4 <= float(seconds) < 3


def test_without_redis_the_cache_is_local_memory():
    result = run_python(SHOW_SETTINGS)

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["cache"]["BACKEND"] == "django.core.cache.backends.locmem.LocMemCache"
    assert json.loads(result.stdout)["cors"] == []


def test_a_malformed_metrics_network_stops_the_process():
    result = run_python(SHOW_SETTINGS, METRICS_ALLOWED_NETWORKS="10.0.0.0/8,not-a-network")

    assert result.returncode != 0
    assert "METRICS_ALLOWED_NETWORKS: 'not-a-network' is not a network" in result.stderr


def test_gunicorn_settings_run_gthread_workers_sized_from_the_environment_with_fresh_metrics(tmp_path):
    stale = tmp_path / "samples"
    stale.mkdir()
    (stale / "counter_1.db").write_bytes(b"old")
    result = run_python(
        """
        import os, runpy
        conf = runpy.run_path("deploy/gunicorn_conf.py")
        directory = os.environ["PROMETHEUS_MULTIPROC_DIR"]
        conf["on_starting"](None)
        print(directory, sorted(os.listdir(directory)))
        print(conf["worker_class"], conf["workers"], conf["threads"])
        """,
        PROMETHEUS_MULTIPROC_DIR=str(stale),
        WEB_WORKERS="3",
        WEB_THREADS="6",
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [str(stale), "[]", "gthread", "3", "6"]


def test_gunicorn_settings_default_to_two_workers_of_four_threads():
    result = run_python(
        """
        import runpy
        conf = runpy.run_path("deploy/gunicorn_conf.py")
        print(conf["worker_class"], conf["workers"], conf["threads"])
        conf["on_exit"](None)
        """
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["gthread", "2", "4"]


def test_gunicorn_settings_make_and_remove_a_temporary_samples_directory():
    result = run_python(
        """
        import os, runpy
        conf = runpy.run_path("deploy/gunicorn_conf.py")
        directory = os.environ["PROMETHEUS_MULTIPROC_DIR"]
        conf["on_starting"](None)
        existed = os.path.isdir(directory)
        conf["on_exit"](None)
        print(existed, os.path.exists(directory))
        """
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True", "False"]


@pytest.mark.skipif(
    not os.environ.get("PG_BIN_FOR_TESTS"), reason="needs PostgreSQL's binaries (scripts/with-postgres)"
)
def test_postgres_init_script_runs_on_an_empty_cluster():
    """What the postgres image does with deploy/postgres/init-roles.sh on its first start."""
    import psycopg

    from conversations.tests.live_server import free_port

    bin_dir = Path(os.environ["PG_BIN_FOR_TESTS"])
    as_postgres = ["runuser", "-u", "postgres", "--"] if os.getuid() == 0 else []
    # Not pytest's tmp_path: as root the server runs as `postgres`, which cannot enter it.
    tmp_path = Path(tempfile.mkdtemp(prefix="init-roles-"))
    if os.getuid() == 0:
        shutil.chown(tmp_path, "postgres")
    data, port = tmp_path / "data", free_port()

    def run(*command: str, **env: str) -> None:
        result = subprocess.run(  # noqa: S603 (PostgreSQL's programs, our script)
            [*as_postgres, *command],
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr

    run(str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8")
    options = f"-p {port} -k {tmp_path} -c listen_addresses=127.0.0.1 -c fsync=off"
    run(str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(tmp_path / "log"), "-w", "-o", options, "start")
    try:
        script = tmp_path / "init-roles.sh"
        shutil.copy(PROJECT_DIR / "deploy" / "postgres" / "init-roles.sh", script)
        script.chmod(0o755)
        run(
            "sh",
            str(script),
            POSTGRES_USER="postgres",
            PGHOST="127.0.0.1",
            PGPORT=str(port),
            PATH=f"{bin_dir}:{os.environ['PATH']}",
            CHAT_DB_PASSWORD="owner-pw'with quote",
            CHAT_APP_DB_PASSWORD="app-pw",
        )
        with psycopg.connect(f"host=127.0.0.1 port={port} user=chat dbname=chat") as conn:
            roles: dict[str, bool] = dict(
                conn.execute(
                    "SELECT rolname, rolsuper OR rolbypassrls OR rolcreaterole FROM pg_roles "
                    "WHERE rolname IN ('chat', 'chat_app')"
                ).fetchall()
            )
            owner = conn.execute("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'chat'")
            assert roles == {"chat": False, "chat_app": False}
            assert owner.fetchone() == ("chat",)
    finally:
        run(str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop")
        shutil.rmtree(tmp_path, ignore_errors=True)
