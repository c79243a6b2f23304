"""accounts' migrations: the case-insensitive uniqueness of usernames (0002) comes and goes
with its migration and names the accounts that stand in its way; ``User.is_external`` (0003)
rolls back and marks the external users that existed before it."""

import uuid

import pytest
from django.contrib.auth.hashers import make_password
from django.core.management import call_command
from django.db import IntegrityError, connection, transaction

from accounts.models import User
from accounts.services import external_user_get_or_create
from conversations.tests.factories import UserFactory

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


def migrate_every_app() -> None:
    # Not "migrate accounts": going back in accounts also took back the migrations of other
    # apps that depend on it (conversations' 0011 on accounts' 0003), which the rest of the
    # session needs.
    call_command("migrate", verbosity=0)


@pytest.fixture
def before_the_constraint():
    call_command("migrate", "accounts", BEFORE, verbosity=0)
    yield
    migrate_every_app()


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


def is_external_column_exists() -> bool:
    with connection.cursor() as cursor:
        columns = connection.introspection.get_table_description(cursor, User._meta.db_table)
    return "is_external" in {column.name for column in columns}


def test_migration_0003_rolls_back_and_marks_only_the_accounts_made_for_external_tokens():
    external = external_user_get_or_create(user_id=uuid.uuid4())
    registered = UserFactory.create()
    promoted = external_user_get_or_create(user_id=uuid.uuid4())
    User.objects.filter(pk=promoted.pk).update(is_staff=True)
    lookalike = User.objects.create(username=f"ext-{uuid.uuid4().hex}", password=make_password(None))

    call_command("migrate", "accounts", AFTER, verbosity=0)
    assert not is_external_column_exists()
    migrate_every_app()

    marked = set(User.objects.filter(is_external=True).values_list("pk", flat=True))
    assert marked == {external.pk}
    assert {registered.pk, promoted.pk, lookalike.pk}.isdisjoint(marked)
