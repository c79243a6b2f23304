"""Thin viewsets: validate, call a service or selector, serialize."""

import time
import uuid
from collections.abc import AsyncIterator, Generator, Iterable, Iterator, Mapping, Sequence
from contextlib import ExitStack
from typing import Any

from asgiref.sync import sync_to_async
from django.core.handlers.asgi import ASGIRequest
from django.db import transaction
from django.db.models import F, QuerySet
from django.http import Http404, HttpRequest, StreamingHttpResponse
from django.http.response import HttpResponseBase
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import APIException, NotFound, ValidationError
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.parsers import BaseParser
from rest_framework.renderers import BaseRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.models import User
from core import rls
from core.audit import api_request
from core.throttling import ExportRateThrottle

from . import audit, conditional, history_formats, portability, search, selectors, services
from . import tool_results as tool_results_rules
from .filters import ConversationFilter, MessageFilter
from .models import Conversation, Message
from .pagination import ConversationPagination, MessagePagination, SearchPagination, parse_bounded_int
from .schema import (
    APPEND_EXAMPLES,
    APPEND_INVALID,
    TOOL_RESULTS_EXAMPLES,
    HistorySerializer,
    MessageAppendSerializer,
    SearchHitSerializer,
)
from .serializers import (
    ConversationCreateSerializer,
    ConversationSerializer,
    ConversationUpdateSerializer,
    MessageCreateSerializer,
    MessageSerializer,
    ToolResultsRecordSerializer,
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


class Conflict(APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "The request conflicts with the conversation's current state."
    default_code = "conflict"


NOT_NEWEST = "Only the conversation's newest message can be deleted."
IDEMPOTENCY_KEY_STALE = (
    "The messages this Idempotency-Key created have been deleted since; nothing was created."
)
# Its body is config/schema.py's Detail, as every error's.
CONFLICT = OpenApiResponse(description="Conflicts with the conversation's current state.")


class IdempotencyKeyConflict(APIException):
    status_code = status.HTTP_422_UNPROCESSABLE_ENTITY
    default_detail = "This Idempotency-Key was used with another conversation or another request body."
    default_code = "idempotency_key_reused"


def parse_choice(params: Mapping[str, str], name: str, choices: Sequence[str]) -> str:
    """A query parameter that is one of ``choices``, the first by default; else a 400 naming it."""
    value = params.get(name, choices[0])
    if value not in choices:
        raise ValidationError({name: [f"Must be one of: {', '.join(choices)}."]})
    return value


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
    list=extend_schema(
        summary="List your conversations, most recently updated first",
        parameters=CONDITIONAL_PARAMETERS,
        responses={200: ConversationSerializer(many=True), 304: NOT_MODIFIED},
    ),
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
        summary="Rename, archive, pin or set the metadata of a conversation",
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
        if self.action == "list":
            return selectors.conversation_list_versioned(user=self.user)
        return selectors.conversation_list(user=self.user)

    def filter_queryset(self, queryset: QuerySet[Conversation]) -> QuerySet[Conversation]:
        # The list's filters (archived ones left out by default) are the list's alone: a
        # conversation is found by its id whatever its flags.
        return super().filter_queryset(queryset) if self.action == "list" else queryset

    def create(self, request: Request) -> Response:
        data = self._validated(ConversationCreateSerializer)
        conversation = services.conversation_create(user=self.user, **data)
        return Response(ConversationSerializer(conversation).data, status=status.HTTP_201_CREATED)

    def partial_update(self, request: Request, pk: str) -> Response:
        data = self._validated(ConversationUpdateSerializer)
        if not data:
            raise ValidationError({"detail": "Send at least one of: title, archived, pinned, metadata."})
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
        summary="The last messages, ready to hand to a model API",
        parameters=[
            OpenApiParameter(
                "limit",
                OpenApiTypes.INT,
                description=f"How many of the latest stored messages, 1 to {selectors.HISTORY_MAX_LIMIT} "
                f"(default {selectors.HISTORY_DEFAULT_LIMIT}; larger is clamped).",
            ),
            OpenApiParameter(
                "max_tokens",
                OpenApiTypes.INT,
                description="At least 1: the newest messages whose token_counts add up to at most this.",
            ),
            OpenApiParameter(
                "start",
                OpenApiTypes.STR,
                enum=list(selectors.HISTORY_STARTS),
                description="user: drop leading messages until the window begins with a user message.",
            ),
            OpenApiParameter(
                "format",
                OpenApiTypes.STR,
                enum=list(history_formats.FORMATS),
                description="The model API the messages are shaped for (default openai).",
            ),
            *CONDITIONAL_PARAMETERS,
        ],
        responses={200: HistorySerializer, 304: NOT_MODIFIED},
    )
    @action(detail=True, methods=["get"], pagination_class=None, filterset_class=None)
    def history(self, request: Request, pk: str) -> Response:
        conversation_id = parse_id(pk)
        params = request.query_params
        limit = parse_bounded_int(
            params, "limit", default=selectors.HISTORY_DEFAULT_LIMIT, maximum=selectors.HISTORY_MAX_LIMIT
        )
        max_tokens = (
            parse_bounded_int(params, "max_tokens", default=0, maximum=selectors.HISTORY_MAX_TOKENS) or None
        )
        start = parse_choice(params, "start", selectors.HISTORY_STARTS)
        history_format = parse_choice(params, "format", history_formats.FORMATS)
        try:
            if request.headers.get("If-None-Match"):
                # The conversation's version moves with every change to its messages: one
                # row by primary key decides a 304, not the window.
                version = selectors.conversation_version(user=self.user, conversation_id=conversation_id)
                etag = conditional.etag_for(request, [version])
                if conditional.matches(request, etag):
                    return conditional.not_modified(etag)
            window = selectors.history_window(
                user=self.user,
                conversation_id=conversation_id,
                limit=limit,
                max_tokens=max_tokens,
                start=start,
                format=history_format,
            )
        except Conversation.DoesNotExist:
            raise NotFound from None
        body = {
            "conversation_id": str(conversation_id),
            "format": history_format,
            "tokens": window.tokens,
            "messages": window.messages,
        }
        return Response(body, headers={"ETag": conditional.etag_for(request, [window.version])})

    def retrieve(self, request: Request, pk: str) -> Response:
        conversation = self.get_object()
        etag = conditional.etag_for(request, [conversation.version])
        if conditional.matches(request, etag):
            return conditional.not_modified(etag)
        return Response(ConversationSerializer(conversation).data, headers={"ETag": etag})

    def _validated(
        self, serializer_class: type[ConversationCreateSerializer | ConversationUpdateSerializer]
    ) -> Any:
        serializer = serializer_class(data=self.request.data)
        serializer.is_valid(raise_exception=True)
        return serializer.validated_data

    # Last in the class body: its name would hide the builtin list from what follows.
    def list(self, request: Request) -> Response:
        # The user's list version moves with any change to any of their conversations (a
        # trigger's work, migration 0011); the tag is made of it and the full path, so each
        # page and filter has its own. With If-None-Match, that one row by key decides a 304
        # before any page is read. Otherwise the page's own statement carries the version:
        # one snapshot, so the tag never names rows older than what it says.
        if request.headers.get("If-None-Match"):
            etag = conditional.etag_for(request, [selectors.conversation_list_version(user=self.user)])
            if conditional.matches(request, etag):
                return conditional.not_modified(etag)
        page = self._page()
        if page:
            version = _list_version(page[0])
        else:
            # No row to carry it: the version alone, then the page again, so that a
            # conversation made between the two reads is in the page or newer than the tag.
            version = selectors.conversation_list_version(user=self.user)
            page = self._page()
            version = _list_version(page[0]) if page else version
        rows = self.get_serializer_class()(page, many=True).data
        response = self.get_paginated_response(rows)
        response["ETag"] = conditional.etag_for(request, [version])
        return response

    def _page(self) -> Sequence[Conversation]:
        page = self.paginate_queryset(self.filter_queryset(self.get_queryset()))
        assert page is not None  # noqa: S101 (the viewset always paginates)
        return page


@extend_schema_view(
    list=extend_schema(
        summary="List a conversation's messages, oldest first",
        parameters=CONDITIONAL_PARAMETERS,
        responses={200: MessageSerializer(many=True), 304: NOT_MODIFIED},
    ),
    create=extend_schema(
        summary="Append a message, or an array of messages in one transaction",
        request=MessageAppendSerializer,
        examples=APPEND_EXAMPLES,
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
            201: MessageAppendSerializer,
            400: APPEND_INVALID,
            # Their bodies are config/schema.py's Detail, as every error's.
            409: OpenApiResponse(description="The messages of this Idempotency-Key have been deleted since."),
            422: OpenApiResponse(description="Idempotency-Key reused with another conversation or body."),
        },
    ),
    retrieve=extend_schema(summary="Get one message"),
    destroy=extend_schema(
        summary="Delete the conversation's newest message (undo the last turn)",
        responses={204: None, 409: CONFLICT},
    ),
)
@extend_schema(parameters=[OpenApiParameter("conversation_pk", OpenApiTypes.UUID, OpenApiParameter.PATH)])
class MessageViewSet(mixins.RetrieveModelMixin, OwnedViewSet):
    serializer_class = MessageSerializer
    pagination_class = MessagePagination
    filterset_class = MessageFilter
    self_scoped_actions = frozenset({"create", "destroy", "clear", "tool_results"})

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
        # The conversation's version moves with every change to its messages (an append,
        # results, an undo, a clear): read with the page, by a join on its key, it versions
        # the answer; alone when the page is empty, it also tells an empty conversation
        # from one that is not the caller's.
        messages = self.filter_queryset(self.get_queryset()).annotate(version=F("conversation__version"))
        page = self.paginate_queryset(messages)
        assert page is not None  # noqa: S101 (the viewset always paginates)
        try:
            version = page[0].version if page else self._conversation_version()
        except Conversation.DoesNotExist:
            raise NotFound from None
        etag = conditional.etag_for(request, [version])
        if conditional.matches(request, etag):
            return conditional.not_modified(etag)
        response = self.get_paginated_response(MessageSerializer(page, many=True).data)
        response["ETag"] = etag
        return response

    def _conversation_version(self) -> int:
        return selectors.conversation_version(user=self.user, conversation_id=self.conversation_id)

    def create(self, request: Request, conversation_pk: str) -> Response:
        data: Any = request.data
        batch = isinstance(data, list)
        messages = self._validated_messages(data if batch else [data])
        key = self._idempotency_key()
        replayed = False
        try:
            if key is None:
                created = services.messages_append(
                    user=self.user, conversation_id=self.conversation_id, messages=messages
                )
            else:
                created, replayed = services.messages_append_idempotent(
                    user=self.user,
                    conversation_id=self.conversation_id,
                    messages=messages,
                    idempotency_key=key,
                    request_body=request.data,
                )
        except Conversation.DoesNotExist:
            raise NotFound from None
        except services.IdempotencyKeyReused:
            raise IdempotencyKeyConflict from None
        except services.IdempotencyKeyStale:
            raise Conflict(IDEMPOTENCY_KEY_STALE) from None
        headers = {"Idempotent-Replayed": "true"} if replayed else {}
        data = MessageSerializer(created, many=True).data if batch else MessageSerializer(created[0]).data
        return Response(data, status=status.HTTP_201_CREATED, headers=headers)

    def destroy(self, request: Request, conversation_pk: str, pk: str) -> Response:
        try:
            services.message_pop(
                user=self.user, conversation_id=self.conversation_id, message_id=parse_id(pk)
            )
        except (Conversation.DoesNotExist, Message.DoesNotExist):
            raise NotFound from None
        except services.MessageNotNewest:
            raise Conflict(NOT_NEWEST) from None
        return Response(status=status.HTTP_204_NO_CONTENT)

    # Not a standard action, so not one that extend_schema_view can name.
    @extend_schema(
        summary="Delete every message and keep the conversation",
        operation_id="conversations_messages_clear",
        responses={204: None},
    )
    def clear(self, request: Request, conversation_pk: str) -> Response:
        try:
            services.conversation_clear(user=self.user, conversation_id=self.conversation_id)
        except Conversation.DoesNotExist:
            raise NotFound from None
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(
        summary="Record results of a message's tool calls",
        request=ToolResultsRecordSerializer,
        examples=TOOL_RESULTS_EXAMPLES,
        responses={200: MessageSerializer, 409: CONFLICT},
    )
    @action(
        detail=True, methods=["post"], url_path="tool-results", pagination_class=None, filterset_class=None
    )
    def tool_results(self, request: Request, conversation_pk: str, pk: str) -> Response:
        serializer = ToolResultsRecordSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            message = services.tool_results_record(
                user=self.user,
                conversation_id=self.conversation_id,
                message_id=parse_id(pk),
                tool_results=serializer.validated_data["tool_results"],
            )
        except (Conversation.DoesNotExist, Message.DoesNotExist):
            raise NotFound from None
        except tool_results_rules.ToolResultsInvalid as invalid:
            raise ValidationError({"tool_results": [str(invalid)]}) from None
        except tool_results_rules.ToolResultAlreadyRecorded as recorded:
            raise Conflict(str(recorded)) from None
        return Response(MessageSerializer(message).data)

    def _validated_messages(self, bodies: Sequence[Any]) -> Sequence[services.NewMessage]:
        """Each body validated; any error is a 400 with nothing written: for an array body,
        an array with one error object per item (``{}`` for a valid one)."""
        if not 1 <= len(bodies) <= services.BATCH_MAX_MESSAGES:
            raise ValidationError(
                {"detail": f"Append 1 to {services.BATCH_MAX_MESSAGES} messages at a time."}
            )
        serializers = [MessageCreateSerializer(data=body) for body in bodies]
        valid = [serializer.is_valid() for serializer in serializers]
        if not all(valid):
            errors = [serializer.errors for serializer in serializers]
            raise ValidationError(errors if isinstance(self.request.data, list) else errors[0])
        return [services.NewMessage(**serializer.validated_data) for serializer in serializers]

    def _idempotency_key(self) -> str | None:
        key = self.request.headers.get(IDEMPOTENCY_KEY_HEADER)
        if key is not None and (not 1 <= len(key) <= IDEMPOTENCY_KEY_MAX_LENGTH or "\x00" in key):
            rule = f"1 to {IDEMPOTENCY_KEY_MAX_LENGTH} characters, no NUL"
            raise ValidationError({"detail": f"{IDEMPOTENCY_KEY_HEADER} must be {rule}."})
        return key


# The export's media types, and the extension of its attachment's name.
EXPORT_CONTENT_TYPES = {"jsonl": "application/x-ndjson", "markdown": "text/markdown; charset=utf-8"}
EXPORT_EXTENSIONS = {"jsonl": "jsonl", "markdown": "md"}
EXPORT_DESCRIPTION = (
    "All of your conversations, each followed by its messages in append order, streamed as an "
    "attachment. `format=jsonl` (default, `application/x-ndjson`): the JSON Lines that the "
    "`export_conversations` command writes, one conversation object per line followed by its "
    "messages (tool calls and results included), which `import_conversations` reads back. "
    "`format=markdown` (`text/markdown`): a transcript for reading. Throttled per user "
    "(`API_THROTTLE_EXPORT`)."
)


class ExportBody:
    """The export's generator as a streamed answer's body, started in the view: the snapshot,
    the totals and the first rows are read while the view runs, so that a database that
    cannot be reached is the usual 503, not a 200 cut short. ``close``, which Django calls
    when the answer ends or the client goes away, closes the generator (its snapshot is
    rolled back) before the request's end hands the connection back to the pool."""

    def __init__(self, chunks: Generator[str]) -> None:
        self.chunks = chunks
        self.first = next(chunks, None)

    def next_chunk(self) -> str | None:
        chunk, self.first = self.first, None
        return chunk if chunk is not None else next(self.chunks, None)

    def close(self) -> None:
        self.chunks.close()


class WsgiExportBody(ExportBody):
    def __iter__(self) -> Iterator[str]:
        while (chunk := self.next_chunk()) is not None:
            yield chunk


class AsgiExportBody(ExportBody):
    """Under ASGI Django reads a synchronous iterator whole before sending a byte: an
    asynchronous one whose every step runs on the request's own thread (``thread_sensitive``),
    where its connection and the generator's transaction are; Django calls ``close`` there
    too."""

    async def __aiter__(self) -> AsyncIterator[str]:
        pull = sync_to_async(self.next_chunk, thread_sensitive=True)
        while (chunk := await pull()) is not None:
            yield chunk


class ErrorsInJson(BaseContentNegotiation):
    """The export's answer has its own content type whatever ``Accept`` asks for (no 406 for
    ``Accept: text/markdown``), and its errors are JSON, as every error under /api/."""

    def select_parser(self, request: Request, parsers: Iterable[BaseParser]) -> BaseParser | None:
        return next(iter(parsers), None)

    def select_renderer(
        self, request: Request, renderers: Iterable[BaseRenderer], format_suffix: str | None = None
    ) -> tuple[BaseRenderer, str]:
        renderer = next(iter(renderers))
        return renderer, renderer.media_type


EXPORT_SCHEMA = extend_schema(
    summary="Download all your conversations and messages",
    description=EXPORT_DESCRIPTION,
    operation_id="export_download",
    parameters=[
        OpenApiParameter(
            "format",
            OpenApiTypes.STR,
            enum=list(portability.EXPORT_FORMATS),
            description="jsonl (default): JSON Lines; markdown: a transcript. Anything else is a 400.",
        ),
        OpenApiParameter(
            "Content-Disposition",
            OpenApiTypes.STR,
            OpenApiParameter.HEADER,
            response=[200],
            description='attachment; filename="conversations-<date>.jsonl" (.md for markdown).',
        ),
    ],
    responses={
        (200, content_type.split(";")[0]): OpenApiResponse(
            response=OpenApiTypes.STR,
            description="The export, streamed: application/x-ndjson for jsonl, text/markdown for markdown.",
        )
        for content_type in EXPORT_CONTENT_TYPES.values()
    },
)


class ExportView(APIView):
    """All of the caller's conversations and messages, streamed from the code of the
    ``export_conversations`` command (``portability.export_chunks``), which holds its own
    snapshot and user scope while the answer is sent and writes the export's audit line."""

    http_method_names = ["get", "options"]
    throttle_classes = [*APIView.throttle_classes, ExportRateThrottle]
    content_negotiation_class = ErrorsInJson

    @EXPORT_SCHEMA
    def get(self, request: Request) -> StreamingHttpResponse:
        output_format = parse_choice(request.query_params, "format", list(portability.EXPORT_FORMATS))
        user = request.user
        assert isinstance(user, User)  # noqa: S101 (IsAuthenticated ran first)
        chunks = portability.export_chunks(
            user=user, output_format=output_format, request_id=getattr(request, "request_id", None)
        )
        body_class = AsgiExportBody if isinstance(request._request, ASGIRequest) else WsgiExportBody
        response = StreamingHttpResponse(body_class(chunks), content_type=EXPORT_CONTENT_TYPES[output_format])
        filename = f"conversations-{timezone.now():%Y-%m-%d}.{EXPORT_EXTENSIONS[output_format]}"
        response["Content-Disposition"] = f'attachment; filename="{filename}"'
        response["Cache-Control"] = "private, no-store"
        return response


SEARCH_SYNTAX = (
    'Web-search syntax, 1 to 200 characters: words (all must match, stemmed), "quoted phrases", '
    "-excluded words, OR between alternatives."
)


@extend_schema_view(
    list=extend_schema(
        summary="Search your messages and conversation titles, best match first",
        parameters=[OpenApiParameter("q", OpenApiTypes.STR, required=True, description=SEARCH_SYNTAX)],
        responses={200: SearchHitSerializer(many=True)},
    ),
)
class SearchViewSet(OwnedViewSet):
    serializer_class = SearchHitSerializer
    pagination_class = SearchPagination
    filter_backends: list[Any] = []
    # Hits are not rows of one model: conversations/search.py reads them. This is only what
    # the schema generator asks of a view.
    queryset = Message.objects.none()

    def list(self, request: Request) -> Response:
        query = parse_search(request.query_params, "q")
        paginator = SearchPagination()

        def fetch(limit: int, after: tuple[float, uuid.UUID] | None, backwards: bool) -> list[search.Hit]:
            return search.search_hits(
                user=self.user, query=query, limit=limit, after=after, backwards=backwards
            )

        hits = paginator.paginate_hits(fetch, request, self)
        return paginator.get_paginated_response(SearchHitSerializer(hits, many=True).data)


def parse_search(params: Mapping[str, str], name: str) -> search.SearchQuery:
    """The search in the query parameter ``name``; missing or breaking a rule, a 400 naming it."""
    text = params.get(name)
    if text is None:
        raise ValidationError({name: ["This parameter is required."]})
    try:
        return search.parse(text)
    except search.InvalidSearch as invalid:
        raise ValidationError({name: [str(invalid)]}) from None


def _list_version(conversation: Conversation) -> int:
    """The list version a row of ``selectors.conversation_list_versioned`` carries."""
    version: int = getattr(conversation, "list_version")  # noqa: B009 (an annotation)
    return version
