import uuid
from unittest import mock

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models.query import QuerySet

from accounts.models import User
from accounts.services import ExternalUserConflict, external_user_get_or_create, user_register
from conversations.tests.factories import UserFactory

pytestmark = pytest.mark.django_db


def test_user_register_stores_a_hashed_password():
    user = user_register(username="ada", password="analytical-engine-1843")

    assert user.password != "analytical-engine-1843"
    assert user.check_password("analytical-engine-1843")


def test_user_register_checks_uniqueness_of_the_normalised_username():
    UserFactory.create(username="Ada")

    # NFKC folds the full-width letters into "Ada", the name create_user would store.
    with pytest.raises(ValidationError) as excinfo:
        user_register(username="\uff21\uff44\uff41", password="analytical-engine-1843")

    assert set(excinfo.value.message_dict) == {"username"}


def test_user_register_turns_a_concurrent_insert_of_the_username_into_a_validation_error():
    UserFactory.create(username="racer")

    # The pre-check misses, as it does when the other registration commits just after it.
    with (
        mock.patch.object(QuerySet, "exists", side_effect=[False, True]),
        pytest.raises(ValidationError) as excinfo,
    ):
        user_register(username="racer", password="a-perfectly-good-passphrase")

    assert excinfo.value.message_dict == {"username": ["A user with that username already exists."]}
    assert User.objects.filter(username="racer").count() == 1


def test_external_user_get_or_create_creates_the_user_with_an_unusable_password():
    user_id = uuid.uuid4()

    user = external_user_get_or_create(user_id=user_id)

    assert user.id == user_id
    assert user.username == f"ext-{user_id.hex}"
    assert not user.has_usable_password()


def test_external_user_get_or_create_returns_an_existing_user_unchanged():
    existing = UserFactory.create()

    user = external_user_get_or_create(user_id=existing.id)

    assert user == existing
    assert user.username == existing.username
    assert user.has_usable_password()


def test_external_user_get_or_create_returns_the_row_a_concurrent_request_inserted(monkeypatch):
    user_id = uuid.uuid4()
    winner = external_user_get_or_create(user_id=user_id)
    real_get = QuerySet.get
    lookups = []

    def miss_first_lookup(self, *args, **kwargs):
        # As if the lookup ran just before the concurrent request committed its insert.
        lookups.append(kwargs)
        if len(lookups) == 1:
            raise self.model.DoesNotExist
        return real_get(self, *args, **kwargs)

    monkeypatch.setattr(QuerySet, "get", miss_first_lookup)

    user = external_user_get_or_create(user_id=user_id)

    assert user == winner
    assert len(lookups) == 2
    assert User.objects.filter(id=user_id).count() == 1


def test_external_user_get_or_create_raises_conflict_when_its_username_belongs_to_another_id():
    user_id = uuid.uuid4()
    UserFactory.create(username=f"ext-{user_id.hex}")

    with pytest.raises(ExternalUserConflict):
        external_user_get_or_create(user_id=user_id)

    assert not User.objects.filter(id=user_id).exists()


# Usernames are unique regardless of case (issue 10, finding 11a) ------------------------------


@pytest.mark.parametrize("taken", ["ALICE", "Alice", "aLiCe"])
def test_user_register_refuses_a_username_that_differs_only_in_case(taken):
    UserFactory.create(username="alice")

    with pytest.raises(ValidationError) as excinfo:
        user_register(username=taken, password="a-perfectly-good-passphrase")

    assert excinfo.value.message_dict == {"username": ["A user with that username already exists."]}
    assert User.objects.count() == 1


def test_user_register_turns_a_concurrent_insert_in_another_case_into_a_validation_error():
    UserFactory.create(username="racer")

    # The pre-check misses, as it does when the other registration commits just after it.
    with (
        mock.patch.object(QuerySet, "exists", side_effect=[False, True]),
        pytest.raises(ValidationError) as excinfo,
    ):
        user_register(username="RACER", password="a-perfectly-good-passphrase")

    assert excinfo.value.message_dict == {"username": ["A user with that username already exists."]}
    assert User.objects.count() == 1


def test_the_database_refuses_a_username_that_differs_only_in_case():
    User.objects.create(username="alice")

    with pytest.raises(IntegrityError), transaction.atomic():
        User.objects.create(username="ALICE")

    assert list(User.objects.values_list("username", flat=True)) == ["alice"]


def test_external_user_whose_username_is_held_in_another_case_is_a_conflict():
    user_id = uuid.uuid4()
    UserFactory.create(username=f"EXT-{user_id.hex.upper()}")

    with pytest.raises(ExternalUserConflict):
        external_user_get_or_create(user_id=user_id)
