from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError as DjangoValidationError
from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.exceptions import ValidationError
from rest_framework.permissions import AllowAny, BasePermission
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.serializers import as_serializer_error
from rest_framework.throttling import BaseThrottle
from rest_framework.views import APIView
from rest_framework_simplejwt.exceptions import InvalidToken, TokenError
from rest_framework_simplejwt.views import TokenObtainPairView

from accounts.models import User
from accounts.serializers import (
    LogoutSerializer,
    PasswordChangeSerializer,
    RegisterSerializer,
    UserSerializer,
)
from accounts.services import refresh_token_revoke, user_password_change, user_register
from core.throttling import LoginAddressRateThrottle, LoginUsernameRateThrottle, PasswordChangeRateThrottle


class RegistrationIsOpen(BasePermission):
    """Registration is allowed while ``settings.ALLOW_REGISTRATION`` is on."""

    message = "Registration is closed."

    def has_permission(self, request: Request, view: APIView) -> bool:
        return bool(settings.ALLOW_REGISTRATION)


class RegisterView(APIView):
    # No authenticators: a stale token does not get in the way, and a closed registration
    # answers 403 (with an authenticator DRF would turn the refusal into a 401).
    authentication_classes: list[Any] = []
    permission_classes = [AllowAny, RegistrationIsOpen]

    @extend_schema(request=RegisterSerializer, responses={201: UserSerializer})
    def post(self, request: Request) -> Response:
        serializer = RegisterSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            user = user_register(**serializer.validated_data)
        except DjangoValidationError as exc:
            raise ValidationError(as_serializer_error(exc)) from exc
        return Response(UserSerializer(user).data, status=status.HTTP_201_CREATED)


class LoginView(TokenObtainPairView):
    """simplejwt's token pair for a username and password, with the login limits on top of the
    default throttles; they refuse before the password is hashed (core/throttling.py)."""

    def get_throttles(self) -> list[BaseThrottle]:
        return [*super().get_throttles(), LoginAddressRateThrottle(), LoginUsernameRateThrottle()]


class MeView(APIView):
    @extend_schema(responses={200: UserSerializer})
    def get(self, request: Request) -> Response:
        user: User = request.user  # type: ignore[assignment]
        return Response(UserSerializer(user).data)


class PasswordChangeView(APIView):
    def get_throttles(self) -> list[BaseThrottle]:
        return [*super().get_throttles(), PasswordChangeRateThrottle()]

    @extend_schema(request=PasswordChangeSerializer, responses={204: None})
    def post(self, request: Request) -> Response:
        serializer = PasswordChangeSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        user: User = request.user  # type: ignore[assignment]
        try:
            user_password_change(user=user, **serializer.validated_data)
        except DjangoValidationError as exc:
            raise ValidationError(as_serializer_error(exc)) from exc
        return Response(status=status.HTTP_204_NO_CONTENT)


class LogoutView(APIView):
    @extend_schema(request=LogoutSerializer, responses={204: None})
    def post(self, request: Request) -> Response:
        serializer = LogoutSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        user: User = request.user  # type: ignore[assignment]
        try:
            refresh_token_revoke(user=user, refresh=serializer.validated_data["refresh"])
        except TokenError as exc:
            # As simplejwt's own token views answer a token they cannot use.
            raise InvalidToken(exc.args[0]) from exc
        return Response(status=status.HTTP_204_NO_CONTENT)
