import shutil
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import pytest
from django.db import connection, connections
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient
from rest_framework_simplejwt.tokens import AccessToken

from accounts.models import User
from conversations.tests.factories import UserFactory
from core import rls


def pytest_report_header() -> str:
    return f"database: {connection.vendor} ({connection.settings_dict['NAME']})"


@pytest.fixture(scope="session", autouse=True)
def _close_connection_pools(django_db_setup, django_db_blocker):
    """Return the pool's idle connections before pytest-django drops the test database,
    which PostgreSQL refuses while any session is still connected to it."""
    yield
    with django_db_blocker.unblock():
        for conn in connections.all():
            if conn.vendor == "postgresql":
                conn.close()
                conn.close_pool()  # type: ignore[attr-defined]


@pytest.fixture(autouse=True)
def _test_code_sees_every_user(request):
    """Test code sets up and checks rows of several users, so inside a test's transaction
    row-level security lets it see them all. The code under test still narrows itself:
    every API request and service call enters its own user's scope, which replaces this
    one while it runs. Tests of row-level security itself leave this scope explicitly."""
    marker = request.node.get_closest_marker("django_db")
    if marker is None or marker.kwargs.get("transaction") or (marker.args and marker.args[0]):
        yield
        return
    request.getfixturevalue("db")
    with rls.all_users(reason="test set-up and assertions"):
        yield


# Statements that carry no data: savepoints of the test's own transaction, and the
# row-level-security scope, which inside the test's transaction is set on its own (in
# production a request's is set by the token's user lookup, counted as that query).
_BOOKKEEPING = ("SAVEPOINT", "RELEASE SAVEPOINT", "ROLLBACK TO SAVEPOINT", "SELECT SET_CONFIG(")


@pytest.fixture
def assert_data_queries():
    """``with assert_data_queries(n) as queries:`` fails when the block runs more than ``n``
    statements that read or write rows; ``queries`` lists them."""

    @contextmanager
    def check(most: int):
        with CaptureQueriesContext(connection) as captured:
            queries: list[str] = []
            yield queries
        queries.extend(
            q["sql"]
            for q in captured.captured_queries
            if not q["sql"].lstrip().upper().startswith(_BOOKKEEPING)
        )
        assert len(queries) <= most, "\n".join(queries)

    return check


def assert_same(hand: Any, orm: Any) -> None:
    """Equal, and of the same types all the way down; datetimes aware, at the same offset."""
    assert hand == orm
    assert type(hand) is type(orm), (hand, orm)
    if isinstance(hand, list | tuple):
        for h, o in zip(hand, orm, strict=True):
            assert_same(h, o)
    elif isinstance(hand, dict):
        for k in hand:
            assert_same(hand[k], orm[k])
    elif isinstance(hand, datetime):
        assert hand.tzinfo is not None
        assert hand.utcoffset() == orm.utcoffset()


def client_for(user: User) -> APIClient:
    """An API client that sends ``user``'s access token, as the chat front end does."""
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {AccessToken.for_user(user)}")
    return client


@pytest.fixture
def user():
    return UserFactory.create()


@pytest.fixture
def other_user():
    return UserFactory.create()


@pytest.fixture
def api_client():
    """No credentials."""
    return APIClient()


@pytest.fixture
def auth_client(user):
    return client_for(user)


@pytest.fixture
def other_client(other_user):
    return client_for(other_user)


def require_tool(command: str, package: str) -> str:
    """The path of ``command``, which ``make test-tools`` (e2e/install-tools) installs from
    Debian's ``package``. Missing, the test fails rather than skips: a tool a test needs is
    part of the test run, never an optional extra."""
    path = shutil.which(command)
    if path is None:
        pytest.fail(f"{command} is not installed: run `make test-tools` (apt-get install {package})")
    return path
