"""Migration 0002 (``User.is_external``) rolls back and marks the external users that existed
before it."""

import uuid

import pytest
from django.contrib.auth.hashers import make_password
from django.core.management import call_command
from django.db import connection

from accounts.models import User
from accounts.services import external_user_get_or_create
from conversations.tests.factories import UserFactory


def is_external_column_exists() -> bool:
    with connection.cursor() as cursor:
        columns = connection.introspection.get_table_description(cursor, User._meta.db_table)
    return "is_external" in {column.name for column in columns}


@pytest.mark.django_db(transaction=True)
def test_migration_0002_rolls_back_and_marks_only_the_accounts_made_for_external_tokens():
    external = external_user_get_or_create(user_id=uuid.uuid4())
    registered = UserFactory.create()
    promoted = external_user_get_or_create(user_id=uuid.uuid4())
    User.objects.filter(pk=promoted.pk).update(is_staff=True)
    lookalike = User.objects.create(username=f"ext-{uuid.uuid4().hex}", password=make_password(None))

    call_command("migrate", "accounts", "0001", verbosity=0)
    assert not is_external_column_exists()
    call_command("migrate", "accounts", verbosity=0)

    marked = set(User.objects.filter(is_external=True).values_list("pk", flat=True))
    assert marked == {external.pk}
    assert {registered.pk, promoted.pk, lookalike.pk}.isdisjoint(marked)
