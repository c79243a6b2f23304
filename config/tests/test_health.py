import socket
import time

import pytest
from django.db import connection, connections
from django.urls import reverse
from rest_framework import status

from core import health
from core.errors import DATABASE_RETRY_AFTER_SECONDS

postgresql_only = pytest.mark.skipif(connection.vendor != "postgresql", reason="needs a PostgreSQL server")


def test_healthz_is_ok_without_auth_or_database(client):
    """No django_db mark: any database access here would fail the test."""
    response = client.get(reverse("healthz"))

    assert response.status_code == status.HTTP_200_OK
    assert response.json() == {"status": "ok"}
    assert "no-cache" in response["Cache-Control"]


@pytest.mark.parametrize("name", ["healthz", "readyz"])
@pytest.mark.django_db
def test_probes_answer_head_and_refuse_other_methods(client, name):
    assert client.head(reverse(name)).status_code == status.HTTP_200_OK
    assert client.post(reverse(name)).status_code == status.HTTP_405_METHOD_NOT_ALLOWED


@pytest.mark.django_db
def test_readyz_is_ok_when_the_database_answers(client):
    response = client.get(reverse("readyz"))

    assert response.status_code == status.HTTP_200_OK
    assert response.json() == {"status": "ok"}


@pytest.mark.django_db
def test_readyz_ignores_a_bad_token(client):
    response = client.get(reverse("readyz"), headers={"Authorization": "Bearer not-a-token"})

    assert response.status_code == status.HTTP_200_OK


def test_readyz_is_503_when_the_database_cannot_be_reached(client, unreachable_default_database):
    response = client.get(reverse("readyz"))

    assert response.status_code == status.HTTP_503_SERVICE_UNAVAILABLE
    assert response.json() == {"status": "unavailable", "detail": "The database cannot be reached."}
    assert response["Retry-After"] == str(DATABASE_RETRY_AFTER_SECONDS)


def test_readyz_recovers_when_the_database_is_back(client, unreachable_default_database, monkeypatch):
    assert client.get(reverse("readyz")).status_code == status.HTTP_503_SERVICE_UNAVAILABLE

    monkeypatch.undo()

    assert client.get(reverse("readyz")).status_code == status.HTTP_200_OK


@pytest.mark.django_db
def test_readyz_is_503_when_redis_cannot_be_reached(client, unreachable_redis):
    """Every API request counts its throttles in Redis: a server without it cannot serve."""
    response = client.get(reverse("readyz"))

    assert response.status_code == status.HTTP_503_SERVICE_UNAVAILABLE
    assert response.json() == {"status": "unavailable", "detail": "The shared cache cannot be reached."}
    assert response["Retry-After"] == str(DATABASE_RETRY_AFTER_SECONDS)


@pytest.fixture
def silent_server():
    """A TCP server that accepts connections and never says a word: a hung database."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        yield listener.getsockname()[1]
    # Closing the listener resets the connections waiting in its queue, which frees the
    # readiness checker's thread; wait for it so later checks start on time.
    health._checker.submit(lambda: None).result(timeout=10)


@postgresql_only
def test_readiness_check_gives_up_on_a_hung_database(db, silent_server, monkeypatch):
    hung = {**connections["default"].settings_dict, "HOST": "127.0.0.1", "PORT": str(silent_server)}
    hung["OPTIONS"] = {key: value for key, value in hung["OPTIONS"].items() if key != "pool"}
    hung["OPTIONS"]["connect_timeout"] = 5  # the thread left behind ends on its own, too
    monkeypatch.setitem(connections.settings, "default", hung)

    started = time.monotonic()
    reason = health.database_unavailable_reason(timeout=0.5)

    assert reason == "The database did not answer within 0.5 seconds."
    assert time.monotonic() - started < 2
