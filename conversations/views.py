"""Thin viewsets: validate, call a service or selector, serialize."""

import time
import uuid
from contextlib import ExitStack
from typing import Any

from django.db import transaction
from django.db.models import QuerySet
from django.http import Http404, HttpRequest
from django.http.response import HttpResponseBase
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import APIException, NotFound, ValidationError
from rest_framework.request import Request
from rest_framework.response import Response

from accounts.models import User
from core import rls
from core.audit import api_request

from . import audit, conditional, selectors, services
from .filters import ConversationFilter, MessageFilter
from .models import Conversation, Message
from .pagination import ConversationPagination, MessagePagination, parse_bounded_int
from .serializers import (
    ConversationCreateSerializer,
    ConversationSerializer,
    ConversationUpdateSerializer,
    HistorySerializer,
    MessageCreateSerializer,
    MessageSerializer,
)

IDEMPOTENCY_KEY_HEADER = "Idempotency-Key"
IDEMPOTENCY_KEY_MAX_LENGTH = 255


# The schema of a conditional GET (conditional.py): If-None-Match in, ETag out, 304.
CONDITIONAL_PARAMETERS = [
    OpenApiParameter(
        "If-None-Match",
        OpenApiTypes.STR,
        OpenApiParameter.HEADER,
        description="An ETag of an earlier answer: a 304 with no body while nothing it shows has changed.",
    ),
    OpenApiParameter(
        "ETag",
        OpenApiTypes.STR,
        OpenApiParameter.HEADER,
        response=[200, 304],
        description="The version of this answer, for If-None-Match.",
    ),
]
NOT_MODIFIED = OpenApiResponse(description="Not modified since the ETag in If-None-Match; no body.")


class IdempotencyKeyConflict(APIException):
    status_code = status.HTTP_422_UNPROCESSABLE_ENTITY
    default_detail = "This Idempotency-Key was used with another conversation or another request body."
    default_code = "idempotency_key_reused"


def parse_id(value: str) -> uuid.UUID:
    """A UUID from the URL; a malformed one is the same 404 as a missing one."""
    try:
        return uuid.UUID(value)
    except ValueError:
        raise NotFound from None


class OwnedViewSet(viewsets.GenericViewSet[Any]):
    """Hands out only the caller's rows: querysets filtered by owner, and on PostgreSQL the
    whole request after authentication runs in the caller's row-level-security scope.

    Actions that only call a service, which scopes itself, skip the request-wide scope, so
    that their transaction (and an append's row lock) ends before the answer is rendered.
    """

    self_scoped_actions: frozenset[str] = frozenset()

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        started = time.perf_counter()
        response: HttpResponseBase | None = None
        try:
            with api_request(), ExitStack() as self.request_scope:
                response = super().dispatch(request, *args, **kwargs)
            return response
        finally:
            # Every operation's audit line, written here and nowhere else, once the request's
            # database scope has closed (a 404's security line may look across users).
            audit.api_operation(
                request=request,
                basename=self.basename,
                action=getattr(self, "action", None),
                kwargs=kwargs,
                response=response,
                started=started,
            )

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        super().initial(request, *args, **kwargs)  # authentication, permissions, throttles
        if self.action in self.self_scoped_actions:
            return
        self.owns_transaction = not rls.in_transaction()
        self.request_scope.enter_context(rls.user_scope(self.user))

    def finalize_response(self, request: Request, response: Response, *args: Any, **kwargs: Any) -> Any:
        if response.exception and getattr(self, "owns_transaction", False) and rls.in_transaction():
            # An error answer commits nothing the request may have begun.
            transaction.set_rollback(True)
        return super().finalize_response(request, response, *args, **kwargs)

    @property
    def user(self) -> User:
        user = self.request.user
        assert isinstance(user, User)  # noqa: S101 (IsAuthenticated ran first)
        return user

    @property
    def cursor_scope(self) -> str:
        """What this view's cursors page (see pagination.py): its list and the caller."""
        return f"{self.basename}:{self.user.pk}"

    def get_object(self) -> Any:
        # Django's Http404 names the model; every 404 here must read the same.
        try:
            return super().get_object()
        except Http404:
            raise NotFound from None


@extend_schema_view(
    list=extend_schema(summary="List your conversations, most recently updated first"),
    create=extend_schema(
        summary="Start a conversation",
        request=ConversationCreateSerializer,
        responses={201: ConversationSerializer},
    ),
    retrieve=extend_schema(
        summary="Get a conversation",
        parameters=CONDITIONAL_PARAMETERS,
        responses={200: ConversationSerializer, 304: NOT_MODIFIED},
    ),
    partial_update=extend_schema(
        summary="Rename a conversation",
        request=ConversationUpdateSerializer,
        responses=ConversationSerializer,
    ),
    destroy=extend_schema(summary="Delete a conversation and its messages"),
)
class ConversationViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    OwnedViewSet,
):
    serializer_class = ConversationSerializer
    pagination_class = ConversationPagination
    filterset_class = ConversationFilter
    self_scoped_actions = frozenset({"create", "partial_update", "destroy"})
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]

    def get_queryset(self) -> QuerySet[Conversation]:
        if getattr(self, "swagger_fake_view", False):  # schema generation has no user
            return Conversation.objects.none()
        return selectors.conversation_list(user=self.user)

    def create(self, request: Request) -> Response:
        data = self._validated(ConversationCreateSerializer)
        conversation = services.conversation_create(user=self.user, **data)
        return Response(ConversationSerializer(conversation).data, status=status.HTTP_201_CREATED)

    def partial_update(self, request: Request, pk: str) -> Response:
        data = self._validated(ConversationUpdateSerializer)
        try:
            conversation = services.conversation_update(user=self.user, conversation_id=parse_id(pk), **data)
        except Conversation.DoesNotExist:
            raise NotFound from None
        return Response(ConversationSerializer(conversation).data)

    def destroy(self, request: Request, pk: str) -> Response:
        try:
            services.conversation_delete(user=self.user, conversation_id=parse_id(pk))
        except Conversation.DoesNotExist:
            raise NotFound from None
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(
        summary="The last messages, ready to hand to a chat-completion model",
        parameters=[
            OpenApiParameter(
                "limit",
                OpenApiTypes.INT,
                description=f"How many of the latest messages, 1 to {selectors.HISTORY_MAX_LIMIT} "
                f"(default {selectors.HISTORY_DEFAULT_LIMIT}; larger is clamped).",
            ),
            *CONDITIONAL_PARAMETERS,
        ],
        responses={200: HistorySerializer, 304: NOT_MODIFIED},
    )
    @action(detail=True, methods=["get"], pagination_class=None, filterset_class=None)
    def history(self, request: Request, pk: str) -> Response:
        conversation_id = parse_id(pk)
        limit = parse_bounded_int(
            request.query_params,
            "limit",
            default=selectors.HISTORY_DEFAULT_LIMIT,
            maximum=selectors.HISTORY_MAX_LIMIT,
        )
        try:
            if request.headers.get("If-None-Match"):
                # seq is gap-free, so the newest message's seq is the conversation's
                # message_count: one row by primary key decides a 304, not the window.
                count = selectors.conversation_message_count(user=self.user, conversation_id=conversation_id)
                etag = conditional.etag_for(request, [count])
                if conditional.matches(request, etag):
                    return conditional.not_modified(etag)
            window = selectors.history_window(user=self.user, conversation_id=conversation_id, limit=limit)
        except Conversation.DoesNotExist:
            raise NotFound from None
        etag = conditional.etag_for(request, [window.last_seq])
        body = {"conversation_id": str(conversation_id), "messages": window.messages}
        return Response(body, headers={"ETag": etag})

    def retrieve(self, request: Request, pk: str) -> Response:
        conversation = self.get_object()
        # A rename moves updated_at too, so these two version everything the answer shows.
        etag = conditional.etag_for(
            request, [conversation.updated_at.isoformat(), conversation.message_count]
        )
        if conditional.matches(request, etag):
            return conditional.not_modified(etag)
        return Response(ConversationSerializer(conversation).data, headers={"ETag": etag})

    def _validated(
        self, serializer_class: type[ConversationCreateSerializer | ConversationUpdateSerializer]
    ) -> Any:
        serializer = serializer_class(data=self.request.data)
        serializer.is_valid(raise_exception=True)
        return serializer.validated_data


@extend_schema_view(
    list=extend_schema(
        summary="List a conversation's messages, oldest first",
        parameters=CONDITIONAL_PARAMETERS,
        responses={200: MessageSerializer(many=True), 304: NOT_MODIFIED},
    ),
    create=extend_schema(
        summary="Append a message",
        request=MessageCreateSerializer,
        parameters=[
            OpenApiParameter(
                IDEMPOTENCY_KEY_HEADER,
                OpenApiTypes.STR,
                OpenApiParameter.HEADER,
                description="Repeat a request safely: the same key and body replay the first answer.",
            ),
            OpenApiParameter(
                "Idempotent-Replayed",
                OpenApiTypes.STR,
                OpenApiParameter.HEADER,
                response=[201],
                enum=["true"],
                description="true when this answer replays the first one for its Idempotency-Key.",
            ),
        ],
        responses={
            201: MessageSerializer,
            # Its body is config/schema.py's Detail, as every error's.
            422: OpenApiResponse(description="Idempotency-Key reused with another conversation or body."),
        },
    ),
    retrieve=extend_schema(summary="Get one message"),
)
@extend_schema(parameters=[OpenApiParameter("conversation_pk", OpenApiTypes.UUID, OpenApiParameter.PATH)])
class MessageViewSet(mixins.RetrieveModelMixin, OwnedViewSet):
    serializer_class = MessageSerializer
    pagination_class = MessagePagination
    filterset_class = MessageFilter
    self_scoped_actions = frozenset({"create"})

    @property
    def conversation_id(self) -> uuid.UUID:
        return parse_id(self.kwargs["conversation_pk"])

    @property
    def cursor_scope(self) -> str:
        return f"{self.basename}:{self.conversation_id}:{self.user.pk}"

    def get_queryset(self) -> QuerySet[Message]:
        if getattr(self, "swagger_fake_view", False):  # schema generation has no user
            return Message.objects.none()
        return selectors.message_list(user=self.user, conversation_id=self.conversation_id)

    def list(self, request: Request, conversation_pk: str) -> Response:
        page = self.paginate_queryset(self.filter_queryset(self.get_queryset()))
        assert page is not None  # noqa: S101 (the viewset always paginates)
        try:
            selectors.ensure_conversation(
                user=self.user, conversation_id=self.conversation_id, found_rows=bool(page)
            )
        except Conversation.DoesNotExist:
            raise NotFound from None
        # Messages never change, so their seqs (and whether links lead on) version the page.
        paginator = self.paginator
        assert isinstance(paginator, MessagePagination)  # noqa: S101
        etag = conditional.etag_for(request, [*(m.seq for m in page), *paginator.edges])
        if conditional.matches(request, etag):
            return conditional.not_modified(etag)
        response = self.get_paginated_response(MessageSerializer(page, many=True).data)
        response["ETag"] = etag
        return response

    def create(self, request: Request, conversation_pk: str) -> Response:
        serializer = MessageCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        fields = serializer.validated_data
        key = self._idempotency_key()
        replayed = False
        try:
            if key is None:
                message = services.message_append(
                    user=self.user, conversation_id=self.conversation_id, **fields
                )
            else:
                message, replayed = services.message_append_idempotent(
                    user=self.user,
                    conversation_id=self.conversation_id,
                    idempotency_key=key,
                    request_body=request.data,
                    **fields,
                )
        except Conversation.DoesNotExist:
            raise NotFound from None
        except services.IdempotencyKeyReused:
            raise IdempotencyKeyConflict from None
        headers = {"Idempotent-Replayed": "true"} if replayed else {}
        return Response(MessageSerializer(message).data, status=status.HTTP_201_CREATED, headers=headers)

    def _idempotency_key(self) -> str | None:
        key = self.request.headers.get(IDEMPOTENCY_KEY_HEADER)
        if key is not None and (not 1 <= len(key) <= IDEMPOTENCY_KEY_MAX_LENGTH or "\x00" in key):
            rule = f"1 to {IDEMPOTENCY_KEY_MAX_LENGTH} characters, no NUL"
            raise ValidationError({"detail": f"{IDEMPOTENCY_KEY_HEADER} must be {rule}."})
        return key
