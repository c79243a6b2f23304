"""accounts' migrations: the case-insensitive uniqueness of usernames (issue 10, finding 11a)
comes and goes with its migration, and names the accounts that stand in its way."""

import uuid

import pytest
from django.core.management import call_command
from django.db import IntegrityError, connection, transaction

pytestmark = pytest.mark.django_db(transaction=True)

BEFORE, AFTER = "0001_initial", "0002_username_unique_regardless_of_case"


def insert_user(username):
    """A row as the schema of the moment takes it (the model may be ahead of the table)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO accounts_user (id, password, is_superuser, username, first_name, last_name,"
            " email, is_staff, is_active, date_joined)"
            " VALUES (%s, '', %s, %s, '', '', '', %s, %s, CURRENT_TIMESTAMP)",
            [uuid.uuid4().hex, False, username, False, True],
        )


@pytest.fixture
def before_the_constraint():
    call_command("migrate", "accounts", BEFORE, verbosity=0)
    yield
    call_command("migrate", "accounts", verbosity=0)


@pytest.mark.usefixtures("before_the_constraint")
def test_the_constraint_rolls_back_and_reapplies():
    insert_user("alice")
    insert_user("ALICE")  # allowed before 0002
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM accounts_user WHERE username = 'ALICE'")

    call_command("migrate", "accounts", AFTER, verbosity=0)

    with pytest.raises(IntegrityError), transaction.atomic():
        insert_user("Alice")


@pytest.mark.usefixtures("before_the_constraint")
def test_migrating_names_the_usernames_that_differ_only_in_case():
    insert_user("bob")
    insert_user("Bob")
    insert_user("carol")

    with pytest.raises(RuntimeError, match="'bob'"):
        call_command("migrate", "accounts", AFTER, verbosity=0)

    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM accounts_user WHERE username = 'Bob'")
    call_command("migrate", "accounts", AFTER, verbosity=0)
