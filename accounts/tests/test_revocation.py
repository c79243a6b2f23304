"""Tokens die with the password, and a refresh token dies at logout (the contract's
Authentication section): ``POST auth/password/``, ``POST auth/logout/``, and a password
changed by an operator."""

import pytest
from django.urls import reverse
from rest_framework import status
from rest_framework.test import APIClient
from rest_framework_simplejwt.tokens import AccessToken, RefreshToken

from accounts.models import User
from accounts.tests.test_auth import assert_refused, get_me
from conversations.tests.factories import TEST_PASSWORD, UserFactory

pytestmark = pytest.mark.django_db

NEW_PASSWORD = "a-brand-new-passphrase-2026"


def log_in(username, password=TEST_PASSWORD):
    response = APIClient().post(reverse("auth-token"), {"username": username, "password": password})
    assert response.status_code == status.HTTP_200_OK, response.content
    return response.json()


def refresh(refresh_token):
    return APIClient().post(reverse("auth-token-refresh"), {"refresh": refresh_token})


def client_with(access_token):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {access_token}")
    return client


def change_password(access_token, body):
    return client_with(access_token).post(reverse("auth-password"), body, format="json")


def log_out(access_token, body):
    return client_with(access_token).post(reverse("auth-logout"), body, format="json")


def assert_tokens_refused(tokens):
    assert_refused(get_me(tokens["access"]))
    assert_refused(refresh(tokens["refresh"]))


def assert_tokens_work(tokens):
    assert get_me(tokens["access"]).status_code == status.HTTP_200_OK
    assert refresh(tokens["refresh"]).status_code == status.HTTP_200_OK


# POST auth/password/ ---------------------------------------------------------------------


def test_password_change_is_204_and_the_new_password_logs_in(user):
    tokens = log_in(user.username)

    response = change_password(
        tokens["access"], {"old_password": TEST_PASSWORD, "new_password": NEW_PASSWORD}
    )

    assert response.status_code == status.HTTP_204_NO_CONTENT
    assert not response.content
    assert_tokens_work(log_in(user.username, NEW_PASSWORD))
    user.refresh_from_db()
    assert user.check_password(NEW_PASSWORD)


def test_after_a_password_change_every_earlier_access_and_refresh_token_is_401(user):
    first, second = log_in(user.username), log_in(user.username)
    refreshed_access = refresh(first["refresh"]).json()["access"]

    change_password(second["access"], {"old_password": TEST_PASSWORD, "new_password": NEW_PASSWORD})

    assert_tokens_refused(first)
    assert_tokens_refused(second)
    assert_refused(get_me(refreshed_access))


def test_after_an_operator_changes_the_password_earlier_tokens_are_401(user):
    """What ``manage.py changepassword`` does: set_password, then save."""
    tokens = log_in(user.username)
    operator_view = User.objects.get(pk=user.pk)

    operator_view.set_password(NEW_PASSWORD)
    operator_view.save()

    assert_tokens_refused(tokens)
    assert_tokens_work(log_in(user.username, NEW_PASSWORD))


def test_setting_the_same_password_again_still_revokes_earlier_tokens(user):
    tokens = log_in(user.username)
    operator_view = User.objects.get(pk=user.pk)

    operator_view.set_password(TEST_PASSWORD)  # a new salt, so a new hash
    operator_view.save()

    assert_tokens_refused(tokens)


def test_password_change_with_a_wrong_old_password_is_400_naming_it_and_changes_nothing(user):
    tokens = log_in(user.username)

    response = change_password(tokens["access"], {"old_password": "not-it", "new_password": NEW_PASSWORD})

    assert response.status_code == status.HTTP_400_BAD_REQUEST
    assert set(response.json()) == {"old_password"}
    assert_tokens_work(tokens)
    user.refresh_from_db()
    assert user.check_password(TEST_PASSWORD)


@pytest.mark.parametrize("new_password", ["short1", "12345678901", "password123", "{username}-1"])
def test_password_change_to_a_password_the_validators_reject_is_400_naming_new_password(user, new_password):
    tokens = log_in(user.username)

    response = change_password(
        tokens["access"],
        {"old_password": TEST_PASSWORD, "new_password": new_password.format(username=user.username)},
    )

    assert response.status_code == status.HTTP_400_BAD_REQUEST
    assert set(response.json()) == {"new_password"}
    assert_tokens_work(tokens)


def test_password_change_reports_a_wrong_old_and_a_weak_new_password_together(user):
    tokens = log_in(user.username)

    response = change_password(tokens["access"], {"old_password": "not-it", "new_password": "123"})

    assert response.status_code == status.HTTP_400_BAD_REQUEST
    assert set(response.json()) == {"old_password", "new_password"}


@pytest.mark.parametrize(
    ("body", "naming"),
    [
        ({}, {"old_password", "new_password"}),
        ({"old_password": TEST_PASSWORD}, {"new_password"}),
        ({"old_password": TEST_PASSWORD, "new_password": None}, {"new_password"}),
        ({"old_password": TEST_PASSWORD, "new_password": ["a", "list"]}, {"new_password"}),
        ({"old_password": ["a"], "new_password": {"an": "object"}}, {"old_password", "new_password"}),
        ({"old_password": TEST_PASSWORD, "new_password": "x" * 5000}, {"new_password"}),
        ([TEST_PASSWORD, NEW_PASSWORD], {"non_field_errors"}),
    ],
    ids=["empty", "no new", "null new", "list new", "wrong types", "too long", "an array"],
)
def test_password_change_with_a_bad_body_is_400_not_500(user, body, naming):
    tokens = log_in(user.username)

    response = change_password(tokens["access"], body)

    assert response.status_code == status.HTTP_400_BAD_REQUEST
    assert set(response.json()) == naming
    user.refresh_from_db()
    assert user.check_password(TEST_PASSWORD)


@pytest.mark.parametrize("authorization", [None, "Bearer not-a-token"])
def test_password_change_needs_a_valid_access_token(user, authorization):
    client = APIClient()
    if authorization:
        client.credentials(HTTP_AUTHORIZATION=authorization)

    response = client.post(
        reverse("auth-password"), {"old_password": TEST_PASSWORD, "new_password": NEW_PASSWORD}, format="json"
    )

    assert_refused(response)
    user.refresh_from_db()
    assert user.check_password(TEST_PASSWORD)


# POST auth/logout/ -----------------------------------------------------------------------


def test_logout_is_204_and_its_refresh_token_is_then_401(user):
    tokens = log_in(user.username)

    response = log_out(tokens["access"], {"refresh": tokens["refresh"]})

    assert response.status_code == status.HTTP_204_NO_CONTENT
    assert not response.content
    assert_refused(refresh(tokens["refresh"]))


def test_logout_revokes_only_the_refresh_token_it_names(user):
    leaving, staying = log_in(user.username), log_in(user.username)

    log_out(leaving["access"], {"refresh": leaving["refresh"]})

    assert_tokens_work(staying)


def test_logout_without_an_access_token_is_401_and_revokes_nothing(user):
    tokens = log_in(user.username)

    assert_refused(APIClient().post(reverse("auth-logout"), {"refresh": tokens["refresh"]}, format="json"))
    assert_refused(log_out("not-a-token", {"refresh": tokens["refresh"]}))

    assert refresh(tokens["refresh"]).status_code == status.HTTP_200_OK


def test_logout_with_another_users_refresh_token_is_401_and_revokes_nothing(user, other_user):
    mine, theirs = log_in(user.username), log_in(other_user.username)

    assert_refused(log_out(mine["access"], {"refresh": theirs["refresh"]}))

    assert_tokens_work(theirs)


@pytest.mark.parametrize(
    "token",
    ["garbage", "a.b.c", "access token", "expired refresh token", "revoked refresh token"],
)
def test_logout_with_a_token_that_is_not_a_live_refresh_token_is_401(user, token):
    tokens = log_in(user.username)
    expired = RefreshToken.for_user(user)
    expired.set_exp(lifetime=-expired.lifetime)
    log_out(tokens["access"], {"refresh": (revoked := log_in(user.username)["refresh"])})
    value = {
        "access token": str(AccessToken.for_user(user)),
        "expired refresh token": str(expired),
        "revoked refresh token": revoked,
    }.get(token, token)

    assert_refused(log_out(tokens["access"], {"refresh": value}))
    assert refresh(tokens["refresh"]).status_code == status.HTTP_200_OK


@pytest.mark.parametrize(
    "body",
    [{}, {"refresh": ""}, {"refresh": None}, {"refresh": ["a"]}, {"refresh": {"a": "b"}}, ["refresh"]],
    ids=["empty", "blank", "null", "list", "object", "an array"],
)
def test_logout_with_a_bad_body_is_400_not_500(user, body):
    tokens = log_in(user.username)

    response = log_out(tokens["access"], body)

    assert response.status_code == status.HTTP_400_BAD_REQUEST
    assert set(response.json()) <= {"refresh", "non_field_errors"}
    assert refresh(tokens["refresh"]).status_code == status.HTTP_200_OK


# Rotation and the cost of the check ------------------------------------------------------


@pytest.mark.usefixtures("refresh_rotation_on")
def test_with_rotation_on_a_rotated_out_refresh_token_is_401(user):
    tokens = log_in(user.username)

    rotated = refresh(tokens["refresh"])

    assert rotated.status_code == status.HTTP_200_OK
    assert_refused(refresh(tokens["refresh"]))
    assert refresh(rotated.json()["refresh"]).status_code == status.HTTP_200_OK


def test_checking_an_access_token_is_still_the_one_user_lookup(user, django_assert_num_queries):
    access = log_in(user.username)["access"]

    with django_assert_num_queries(1):
        assert get_me(access).status_code == status.HTTP_200_OK


def test_another_users_password_change_leaves_these_tokens_working(user):
    tokens = log_in(user.username)
    other = UserFactory.create()
    other_tokens = log_in(other.username)

    change_password(other_tokens["access"], {"old_password": TEST_PASSWORD, "new_password": NEW_PASSWORD})

    assert_tokens_work(tokens)
