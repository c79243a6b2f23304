import pytest
from django.db import connection
from rest_framework.test import APIClient
from rest_framework_simplejwt.tokens import AccessToken

from accounts.models import User
from conversations.tests.factories import UserFactory


def pytest_report_header() -> str:
    return f"database: {connection.vendor} ({connection.settings_dict['NAME']})"


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
