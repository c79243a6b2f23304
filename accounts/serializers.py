from typing import Any

from django.contrib.auth.validators import UnicodeUsernameValidator
from django.core.exceptions import ObjectDoesNotExist
from django.core.exceptions import ValidationError as DjangoValidationError
from drf_spectacular.contrib.rest_framework_simplejwt import TokenRefreshSerializerExtension
from rest_framework import serializers
from rest_framework.exceptions import AuthenticationFailed
from rest_framework_simplejwt.serializers import TokenRefreshSerializer as SimpleJWTTokenRefreshSerializer

from accounts.authentication import JWTAuthentication
from accounts.models import User


class RegisterSerializer(serializers.Serializer[None]):
    """The input of registration; uniqueness and password strength are the service's."""

    username = serializers.CharField(max_length=150, validators=[UnicodeUsernameValidator()])
    # Long enough for any passphrase, short enough to bound the validators' work.
    password = serializers.CharField(
        max_length=4096, write_only=True, trim_whitespace=False, style={"input_type": "password"}
    )


class PasswordChangeSerializer(serializers.Serializer[None]):
    """The input of a password change; checking both passwords is the service's."""

    old_password = serializers.CharField(
        max_length=4096, write_only=True, trim_whitespace=False, style={"input_type": "password"}
    )
    new_password = serializers.CharField(
        max_length=4096, write_only=True, trim_whitespace=False, style={"input_type": "password"}
    )


class LogoutSerializer(serializers.Serializer[None]):
    """The input of a logout: the refresh token to revoke."""

    refresh = serializers.CharField(write_only=True)


class UserSerializer(serializers.ModelSerializer[User]):
    class Meta:
        model = User
        fields = ["id", "username"]
        read_only_fields = fields


class TokenRefreshSerializer(SimpleJWTTokenRefreshSerializer):
    """simplejwt's, with the refresh token's user checked as an access token's is: a 401
    when that user is gone or inactive, or changed their password since (simplejwt 5.5
    checks the revoke claim of access tokens only, and lets ``DoesNotExist`` escape as a 500).
    """

    def validate(self, attrs: dict[str, Any]) -> dict[str, str]:
        # TokenError (invalid, expired, blacklisted) is the view's 401.
        JWTAuthentication().get_user(self.token_class(attrs["refresh"]))
        try:
            return super().validate(attrs)
        # simplejwt's own lookup, should the user be deleted in between.
        except (ObjectDoesNotExist, ValueError, DjangoValidationError) as exc:
            raise AuthenticationFailed(
                self.error_messages["no_active_account"], code="no_active_account"
            ) from exc


class TokenRefreshSchema(TokenRefreshSerializerExtension):  # type: ignore[no-untyped-call]
    """The schema spectacular gives simplejwt's refresh serializer, for the subclass too."""

    target_class = "accounts.serializers.TokenRefreshSerializer"
