from typing import Any

from django.contrib.auth.validators import UnicodeUsernameValidator
from django.core.exceptions import ObjectDoesNotExist
from django.core.exceptions import ValidationError as DjangoValidationError
from drf_spectacular.contrib.rest_framework_simplejwt import TokenRefreshSerializerExtension
from rest_framework import serializers
from rest_framework.exceptions import AuthenticationFailed
from rest_framework_simplejwt.serializers import TokenRefreshSerializer as SimpleJWTTokenRefreshSerializer

from accounts.models import User


class RegisterSerializer(serializers.Serializer[None]):
    """The input of registration; uniqueness and password strength are the service's."""

    username = serializers.CharField(max_length=150, validators=[UnicodeUsernameValidator()])
    # Long enough for any passphrase, short enough to bound the validators' work.
    password = serializers.CharField(
        max_length=4096, write_only=True, trim_whitespace=False, style={"input_type": "password"}
    )


class UserSerializer(serializers.ModelSerializer[User]):
    class Meta:
        model = User
        fields = ["id", "username"]
        read_only_fields = fields


class TokenRefreshSerializer(SimpleJWTTokenRefreshSerializer):
    """simplejwt's, except that a refresh token of a deleted user is a 401, not a 500.

    simplejwt 5.5 looks the user up with ``objects.get`` and lets ``DoesNotExist`` escape.
    """

    def validate(self, attrs: dict[str, Any]) -> dict[str, str]:
        try:
            return super().validate(attrs)
        except (ObjectDoesNotExist, ValueError, DjangoValidationError) as exc:
            raise AuthenticationFailed(
                self.error_messages["no_active_account"], code="no_active_account"
            ) from exc


class TokenRefreshSchema(TokenRefreshSerializerExtension):  # type: ignore[no-untyped-call]
    """The schema spectacular gives simplejwt's refresh serializer, for the subclass too."""

    target_class = "accounts.serializers.TokenRefreshSerializer"
