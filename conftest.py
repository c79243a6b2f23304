import pytest
from django.db import connection

from conversations.tests.factories import UserFactory


def pytest_report_header() -> str:
    return f"database: {connection.vendor} ({connection.settings_dict['NAME']})"


@pytest.fixture
def user():
    return UserFactory.create()


@pytest.fixture
def other_user():
    return UserFactory.create()
