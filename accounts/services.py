"""Writes on users: registration, password changes, logout, and the accounts of an external
identity provider."""

import uuid

from django.contrib.auth.hashers import make_password
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Value
from django.db.models.functions import Lower
from rest_framework_simplejwt import settings as simplejwt_settings
from rest_framework_simplejwt.exceptions import TokenError
from rest_framework_simplejwt.tokens import RefreshToken

from accounts.models import USERNAME_TAKEN, User
from core.rls import user_scope

# Usernames of accounts made for external tokens; registration may not take them.
EXTERNAL_USERNAME_PREFIX = "ext-"


class ExternalUserConflict(Exception):
    """The username an external user would get belongs to another account."""


def external_username(user_id: uuid.UUID) -> str:
    return f"{EXTERNAL_USERNAME_PREFIX}{user_id.hex}"


def user_register(*, username: str, password: str) -> User:
    """Create a user who signs in with ``username`` and ``password``.

    Raises ``ValidationError`` keyed by field for a taken (in any case) or reserved username and
    for a password that ``AUTH_PASSWORD_VALIDATORS`` reject. Two simultaneous registrations of one
    username end in one user and one ``ValidationError``, never an ``IntegrityError``.
    """
    # The same normalisation create_user applies, so the checks see the stored name.
    username = User.normalize_username(username)
    errors: dict[str, list[ValidationError]] = {}
    if username.lower().startswith(EXTERNAL_USERNAME_PREFIX):
        errors["username"] = [
            ValidationError(
                f'Usernames starting with "{EXTERNAL_USERNAME_PREFIX}" are reserved.', code="reserved"
            )
        ]
    elif username_taken(username):
        errors["username"] = [ValidationError(USERNAME_TAKEN, code="unique")]
    try:
        validate_password(password, user=User(username=username))
    except ValidationError as exc:
        errors["password"] = exc.error_list
    if errors:
        raise ValidationError(errors)

    try:
        with transaction.atomic():
            return User.objects.create_user(username=username, password=password)
    except IntegrityError:
        # A concurrent registration of the same name committed between the check and the insert.
        if username_taken(username):
            raise ValidationError({"username": [ValidationError(USERNAME_TAKEN, code="unique")]}) from None
        raise


def username_taken(username: str) -> bool:
    """Whether an account holds ``username`` in any case.

    The database's own test: ``LOWER(username) = LOWER(%s)``, the expression of the unique
    constraint (accounts.models), so the two never disagree about a letter (Django's ``iexact``
    compares UPPER() on PostgreSQL and ASCII-only LIKE on SQLite) and the constraint's index
    serves the lookup.
    """
    return User.objects.alias(folded=Lower("username")).filter(folded=Lower(Value(username))).exists()


def external_user_get_or_create(*, user_id: uuid.UUID) -> User:
    """The user with ``user_id``, created on first use for a token of the external issuer.

    Safe under concurrent first requests: ``get_or_create`` inserts in a savepoint and, when a
    concurrent request committed the same primary key first, catches the ``IntegrityError``
    and reads that row, so exactly one user is made. Raises ``ExternalUserConflict`` when the
    username ``ext-<hex>`` is held by an account with another id.
    """
    try:
        user, _created = User.objects.get_or_create(
            id=user_id,
            defaults={
                "username": external_username(user_id),
                "password": make_password(None),
                "is_external": True,
            },
        )
    except IntegrityError as exc:
        # get_or_create re-raises only when no row with user_id exists after the conflict.
        raise ExternalUserConflict(str(user_id)) from exc
    return user


def user_password_change(*, user: User, old_password: str, new_password: str) -> None:
    """Give ``user`` the password ``new_password``, which revokes every token issued before.

    Raises ``ValidationError`` keyed by field for a wrong ``old_password`` and for a
    ``new_password`` that ``AUTH_PASSWORD_VALIDATORS`` reject. Tokens carry a digest of the
    password hash (simplejwt's ``CHECK_REVOKE_TOKEN``), and the new hash has a new salt, so
    every earlier access and refresh token stops matching, whoever changes the password.
    """
    errors: dict[str, list[ValidationError]] = {}
    if not user.check_password(old_password):
        errors["old_password"] = [
            ValidationError("Your old password was entered incorrectly.", code="password_incorrect")
        ]
    try:
        validate_password(new_password, user=user)
    except ValidationError as exc:
        errors["new_password"] = exc.error_list
    if errors:
        raise ValidationError(errors)
    user.set_password(new_password)
    user.save(update_fields=["password"])  # the user's write (User.save): old tokens stop on replicas too


def refresh_token_revoke(*, user: User, refresh: str) -> None:
    """Blacklist ``refresh``, a live refresh token of ``user``.

    Raises simplejwt's ``TokenError`` for anything else, another user's refresh token
    included: logging out ends one's own session, never someone else's.
    """
    # TokenError when invalid, expired, blacklisted or not a refresh token. (simplejwt's
    # annotation says Token where it takes the encoded string.)
    token = RefreshToken(refresh)  # type: ignore[arg-type]
    if token.get(simplejwt_settings.api_settings.USER_ID_CLAIM) != str(user.pk):
        raise TokenError("Token is invalid")
    token.blacklist()


def user_delete(*, user: User) -> dict[str, int]:
    """Delete a user with all of their conversations, messages and idempotency keys; returns
    how many rows went, per model label (``"conversations.Message"``: 3), as Django's
    ``delete()`` counts them.

    Runs in the user's row-level-security scope: outside it PostgreSQL would hide their
    conversations from the cascade, and the delete would stop at the foreign key.
    """
    with user_scope(user, atomic=True):
        _total, deleted = user.delete()
    return deleted
