import pytest
from django.db import connection, connections
from rest_framework.test import APIClient
from rest_framework_simplejwt.tokens import AccessToken

from accounts.models import User
from conversations.tests.factories import UserFactory


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
                conn.close_pool()  # type: ignore[attr-defined]


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
