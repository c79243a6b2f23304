import copy
import socket

import pytest
from django.core.cache import cache
from django.db import connections
from django.test import Client

from config.tests import views


@pytest.fixture(autouse=True)
def _empty_cache():
    """Throttle counters live in the cache; every test starts with none."""
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def client():
    """Django's test client, with CSRF checks on as in a browser (they are off by default)."""
    return Client(enforce_csrf_checks=True)


def closed_port() -> int:
    """A local TCP port that nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def unreachable_redis(settings):
    """Django's cache (where the throttles count) pointed at a Redis that is not there."""
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": f"redis://127.0.0.1:{closed_port()}/0",
        }
    }


def unreachable_copy(settings_dict: dict, missing_dir, *, pool_timeout: float | None) -> dict:
    """``settings_dict`` pointed at a database server that is not there.

    PostgreSQL: a closed local port, through a pool whose wait for a connection ends after
    ``pool_timeout`` seconds (the production path: psycopg_pool's PoolTimeout), or without a
    pool when ``pool_timeout`` is None. SQLite: a file in a directory that does not exist.
    """
    broken = copy.deepcopy(settings_dict)
    options = broken["OPTIONS"]
    if broken["ENGINE"] == "django.db.backends.postgresql":
        broken.update(HOST="127.0.0.1", PORT=str(closed_port()))
        if pool_timeout is None:
            options.pop("pool", None)
        else:
            options["pool"] = {"min_size": 0, "max_size": 1, "timeout": pool_timeout}
    else:
        broken["NAME"] = str(missing_dir / "no-such-directory" / "db.sqlite3")
    return broken


@pytest.fixture
def unreachable_database(monkeypatch, tmp_path):
    """What the test views in config.tests.views connect to: a server that is not there,
    through a pool on PostgreSQL (whose PoolTimeout Django wraps as OperationalError)."""
    broken = unreachable_copy(connections["default"].settings_dict, tmp_path, pool_timeout=0.5)
    monkeypatch.setattr(views, "unreachable_database", broken)
    yield broken
    close_pool = getattr(views.unreachable_connection(), "close_pool", None)
    if close_pool is not None:
        close_pool()


@pytest.fixture
def unreachable_default_database(db, monkeypatch, tmp_path):
    """The default alias's settings pointed at a server that is not there, for connection
    objects made from now on (as the readiness check makes one each time). This test's own
    connection stays open to the test database. No pool: the default alias's pool is open to
    the real server already, and a new connection object would take it over."""
    broken = unreachable_copy(connections["default"].settings_dict, tmp_path, pool_timeout=None)
    monkeypatch.setitem(connections.settings, "default", broken)
    return broken
