"""The token's user lookup, hand-written in ``accounts.statements``, answers exactly what its
ORM twin answers (same user, same field values and types), on SQLite and on PostgreSQL."""

import uuid

import pytest
from django.db import connection
from django.utils import timezone

from accounts import statements
from accounts.models import User
from conftest import assert_same
from conversations.tests.factories import UserFactory

pytestmark = pytest.mark.django_db

on_postgresql = pytest.mark.skipif(connection.vendor != "postgresql", reason="set_config is PostgreSQL's")
identities = pytest.mark.parametrize(
    "identify", [False, pytest.param(True, marks=on_postgresql)], ids=["plain", "with the identity"]
)


def fields(user: User) -> list[tuple[str, object]]:
    values = [(f.attname, getattr(user, f.attname)) for f in User._meta.concrete_fields]
    return [*values, ("rls_identity", getattr(user, "rls_identity", None))]


def current_identity() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_setting('app.user_id', true)")
        return str(cursor.fetchone()[0] or "")


@identities
def test_the_user_lookup_is_its_orm_twins(identify):
    user = UserFactory.create(first_name="Zoë", is_external=True, last_login=timezone.now())
    UserFactory.create()
    hand = statements.user_row(user.pk, identify=identify)
    orm = statements.user_row_orm(user.pk, identify=identify)
    assert hand is not None
    assert orm is not None
    assert hand.pk == user.pk
    assert hand.get_deferred_fields() == set()  # every column read by the one statement
    assert_same(fields(hand), fields(orm))
    if identify:
        assert hand.rls_identity == str(user.pk)  # type: ignore[attr-defined]


@on_postgresql
def test_both_set_the_same_identity():
    a, b = UserFactory.create(), UserFactory.create()
    statements.user_row(a.pk, identify=True)
    assert current_identity() == str(a.pk)
    statements.user_row_orm(b.pk, identify=True)
    assert current_identity() == str(b.pk)


@identities
def test_a_missing_user_is_none_for_both(identify):
    UserFactory.create()
    missing = uuid.uuid4()
    assert statements.user_row(missing, identify=identify) is None
    assert statements.user_row_orm(missing, identify=identify) is None
