import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from rest_framework.permissions import BasePermission
from rest_framework.request import Request

if TYPE_CHECKING:  # DRF imports this module while rest_framework.views is still loading.
    from rest_framework.views import APIView


class UserIdIsCaller(BasePermission):
    """A ``user_id`` named in the query or the body must be the caller's own: ownership
    comes from the token, never from the request."""

    message = "user_id must be your own user id; ownership comes from the access token."

    def has_permission(self, request: Request, view: "APIView") -> bool:
        named: list[Any] = list(request.query_params.getlist("user_id"))
        # A batch append's body is an array of objects: each one is checked.
        bodies = request.data if isinstance(request.data, list) else [request.data]
        named.extend(body["user_id"] for body in bodies if isinstance(body, Mapping) and "user_id" in body)
        return all(_is_uuid_of(value, request.user.pk) for value in named)


def _is_uuid_of(value: Any, user_id: uuid.UUID | None) -> bool:
    try:
        return isinstance(value, str) and uuid.UUID(value) == user_id
    except ValueError:
        return False
