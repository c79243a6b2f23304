"""Keyset (cursor) pagination: each page is one index range scan, however deep.

A cursor is the position of the page edge (the ordering key of its first or last row),
signed so that clients cannot forge one, and bound to the list it pages (the view's
``cursor_scope``: which list, whose) so that it cannot be replayed on another. The queryset
it is applied to is always the user's own, so no cursor, however made, reaches another
user's rows.
"""

import hashlib
import re
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, TypedDict
from uuid import UUID

from django.core import signing
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import Field, Model, Q, QuerySet
from rest_framework.exceptions import ValidationError
from rest_framework.pagination import BasePagination
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.utils.urls import replace_query_param
from rest_framework.views import APIView

from . import sizes
from .search import finite_rank

CURSOR_SALT = "conversations.pagination.cursor"


class CursorPayload(TypedDict):
    o: str  # the ordering it was made for
    k: list[Any]  # the key of the edge row
    r: bool  # True: the page before the edge; False: the page after it
    s: str  # digest of the list it pages (see scope_digest)


def _encode_key_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, UUID):
        return str(value)
    return value


class KeysetPagination(BasePagination):
    """Pages ordered by a unique key, with ``next``/``previous`` cursors and no COUNT.

    ``orderings`` maps each allowed value of the ``ordering`` query parameter to the model
    fields of a unique sort key (``-`` for descending); an index must serve each.
    """

    orderings: Mapping[str, Sequence[str]]
    default_ordering: str
    default_page_size: int
    max_page_size: int
    cursor_query_param = "cursor"
    page_size_query_param = "page_size"
    ordering_query_param = "ordering"
    display_page_controls = False

    def paginate_queryset(
        self, queryset: QuerySet[Any], request: Request, view: APIView | None = None
    ) -> list[Any]:
        self.request = request
        self.url = request.build_absolute_uri()  # the links' base, and their length's
        self.scope = scope_digest(getattr(view, "cursor_scope", ""))
        self.ordering = self._ordering(request)
        page_size = self._page_size(request)
        self.cursor = cursor = self._cursor(request)
        fields = self.orderings[self.ordering]
        backwards = cursor is not None and cursor["r"]
        if backwards:
            fields = [_flip(field) for field in fields]
        if cursor is not None:
            queryset = queryset.filter(self._after(queryset.model, fields, cursor["k"]))
        rows = list(queryset.order_by(*fields)[: page_size + 1])
        more = len(rows) > page_size
        rows = rows[:page_size]
        if backwards:
            rows.reverse()
        self.rows = rows
        self.edges = self._edges(rows, cursor, more)
        return rows

    def get_paginated_response(self, data: Any) -> Response:
        results = self._within_answer_size(data)
        return Response(
            {"next": self.get_next_link(), "previous": self.get_previous_link(), "results": results}
        )

    def _within_answer_size(self, items: Sequence[Any]) -> Sequence[Any]:
        """The serialized page cut to API_MAX_RESPONSE_BYTES: rows are dropped from the end
        away from the cursor, and the link on that side goes on from the last row kept, so
        a walk still returns every row once."""
        links = 2 * len(self.url)  # next and previous
        budget = sizes.answer_budget(envelope=sizes.ENVELOPE_BYTES + links)
        backwards = self.cursor is not None and self.cursor["r"]
        kept = len(sizes.leading_items_within(items[::-1] if backwards else items, budget))
        if kept == len(items):
            return items
        if backwards:
            self.edges = (self._key(self.rows[-kept]), self.edges[1])
            return items[-kept:]
        self.edges = (self.edges[0], self._key(self.rows[kept - 1]))
        return items[:kept]

    def get_next_link(self) -> str | None:
        return self._link(self.edges[1], backwards=False)

    def get_previous_link(self) -> str | None:
        return self._link(self.edges[0], backwards=True)

    def get_paginated_response_schema(self, schema: dict[str, Any]) -> dict[str, Any]:
        link = {"type": "string", "format": "uri", "nullable": True}
        return {
            "type": "object",
            "required": ["next", "previous", "results"],
            "properties": {"next": link, "previous": link, "results": schema},
        }

    def get_schema_operation_parameters(self, view: APIView) -> list[dict[str, Any]]:
        return [
            {
                "name": self.cursor_query_param,
                "in": "query",
                "required": False,
                "description": "Opaque position from a previous page's next or previous link.",
                "schema": {"type": "string"},
            },
            {
                "name": self.page_size_query_param,
                "in": "query",
                "required": False,
                "description": f"Rows per page, 1 to {self.max_page_size} (larger is clamped).",
                "schema": {"type": "integer", "minimum": 1, "default": self.default_page_size},
            },
            {
                "name": self.ordering_query_param,
                "in": "query",
                "required": False,
                "description": "Sort order.",
                "schema": {"type": "string", "enum": list(self.orderings), "default": self.default_ordering},
            },
        ]

    def _ordering(self, request: Request) -> str:
        ordering = request.query_params.get(self.ordering_query_param, self.default_ordering)
        if ordering not in self.orderings:
            raise ValidationError(
                {self.ordering_query_param: [f"Must be one of: {', '.join(self.orderings)}."]}
            )
        return ordering

    def _page_size(self, request: Request) -> int:
        return parse_bounded_int(
            request.query_params,
            self.page_size_query_param,
            default=self.default_page_size,
            maximum=self.max_page_size,
        )

    def _cursor(self, request: Request) -> CursorPayload | None:
        token = request.query_params.get(self.cursor_query_param)
        if token is None:
            return None
        try:
            payload = signing.loads(token, salt=CURSOR_SALT)
        except signing.BadSignature:
            payload = None
        if not (
            isinstance(payload, dict)
            and isinstance(payload.get("k"), list)
            and len(payload["k"]) == len(self.orderings[self.ordering])
            and isinstance(payload.get("r"), bool)
        ):
            raise ValidationError({self.cursor_query_param: ["Invalid cursor."]})
        if payload.get("s") != self.scope:
            raise ValidationError({self.cursor_query_param: ["This cursor belongs to another list."]})
        if payload.get("o") != self.ordering:
            raise ValidationError({self.cursor_query_param: ["This cursor belongs to another ordering."]})
        return CursorPayload(o=payload["o"], k=payload["k"], r=payload["r"], s=payload["s"])

    def _after(self, model: type[Model], fields: Sequence[str], key: list[Any]) -> Q:
        """Rows strictly after ``key`` in the order of ``fields``, as a condition whose first
        term bounds the index range scan: f1 >= k1 AND (f1 > k1 OR (f1 = k1 AND f2 > k2))."""
        names = [field.lstrip("-") for field in fields]
        try:
            values = [
                _model_field(model, name).to_python(value) for name, value in zip(names, key, strict=True)
            ]
        except (DjangoValidationError, ValueError, TypeError):
            raise ValidationError({self.cursor_query_param: ["Invalid cursor."]}) from None
        condition: Q | None = None
        for field, name, value in reversed(list(zip(fields, names, values, strict=True))):
            beyond = Q(**{f"{name}__{'lt' if field.startswith('-') else 'gt'}": value})
            condition = beyond if condition is None else beyond | (Q(**{name: value}) & condition)
        assert condition is not None  # noqa: S101 (every ordering has at least one field)
        first_bound = Q(**{f"{names[0]}__{'lte' if fields[0].startswith('-') else 'gte'}": values[0]})
        return first_bound & condition if len(fields) > 1 else condition

    def _edges(
        self, rows: list[Any], cursor: CursorPayload | None, more: bool
    ) -> tuple[list[Any] | None, list[Any] | None]:
        """The keys to link from: (before the first row, after the last row), or None for
        no link. Coming from a cursor, the way back is always open."""
        first = self._key(rows[0]) if rows else None
        last = self._key(rows[-1]) if rows else None
        if cursor is None:
            return None, last if more else None
        if cursor["r"]:
            return (first if more else None), (last or cursor["k"])
        return (first or cursor["k"]), (last if more else None)

    def _key(self, row: Any) -> list[Any]:
        """The row's position in the ordering, as a cursor holds it."""
        return [_encode_key_value(getattr(row, field.lstrip("-"))) for field in self.orderings[self.ordering]]

    def _link(self, key: list[Any] | None, *, backwards: bool) -> str | None:
        if key is None:
            return None
        payload: CursorPayload = {"o": self.ordering, "k": key, "r": backwards, "s": self.scope}
        cursor = signing.dumps(payload, salt=CURSOR_SALT)
        return replace_query_param(self.url, self.cursor_query_param, cursor)


def scope_digest(scope: str) -> str:
    """A short stand-in for what a cursor pages: the cursor is signed, so equality is all
    that is checked, and a digest keeps ids out of the (readable) cursor and the URL short."""
    return hashlib.blake2b(scope.encode(), digest_size=8).hexdigest()


def _model_field(model: type[Model], name: str) -> Field[Any, Any]:
    field = model._meta.get_field(name)
    assert isinstance(field, Field)  # noqa: S101 (orderings name concrete fields)
    return field


def _flip(field: str) -> str:
    return field[1:] if field.startswith("-") else f"-{field}"


def parse_bounded_int(params: Mapping[str, str], name: str, *, default: int, maximum: int) -> int:
    """A positive integer query parameter: absent gives ``default``, above ``maximum`` is
    clamped to it, anything that is not an integer of at least 1 is a 400 naming it."""
    raw = params.get(name)
    if raw is None:
        return default
    if not re.fullmatch(r"-?[0-9]+", raw):
        raise ValidationError({name: ["A whole number is required."]})
    value = int(raw) if len(raw) <= 18 else (maximum if raw[0] != "-" else 0)
    if value < 1:
        raise ValidationError({name: ["Must be at least 1."]})
    return min(value, maximum)


class ConversationPagination(KeysetPagination):
    orderings = {
        "-updated_at": ("-updated_at", "-id"),
        "updated_at": ("updated_at", "id"),
        "-created_at": ("-created_at", "-id"),
        "created_at": ("created_at", "id"),
    }
    default_ordering = "-updated_at"
    default_page_size = 20
    max_page_size = 100


class MessagePagination(KeysetPagination):
    # seq is the append order, in which created_at never decreases.
    orderings = {"created_at": ("seq",), "-created_at": ("-seq",)}
    default_ordering = "created_at"
    default_page_size = 50
    max_page_size = 200


class SearchPagination(KeysetPagination):
    """Search hits, best first: a keyset on (rank, hit id), both descending. A hit's rank is
    a function of its own text and the query alone (conversations/search.py), so the keyset
    holds still while other rows change and a walk returns every hit once."""

    orderings = {"rank": ("-rank", "-hit_id")}
    default_ordering = "rank"
    default_page_size = 20
    max_page_size = 50

    def paginate_hits(self, fetch: "HitFetcher", request: Request, view: APIView | None = None) -> list[Any]:
        """The page of hits that ``fetch(limit, after, backwards)`` gives for the request's
        cursor and page size."""
        self.request = request
        self.url = request.build_absolute_uri()
        self.scope = scope_digest(getattr(view, "cursor_scope", ""))
        self.ordering = self.default_ordering
        page_size = self._page_size(request)
        self.cursor = cursor = self._cursor(request)
        backwards = cursor is not None and cursor["r"]
        after = None
        if cursor is not None:
            try:
                rank, hit_id = cursor["k"]
                after = (finite_rank(rank), UUID(hit_id))
            except (ValueError, TypeError, AttributeError):
                raise ValidationError({self.cursor_query_param: ["Invalid cursor."]}) from None
        rows = fetch(page_size + 1, after, backwards)
        more = len(rows) > page_size
        # Fetched best first either way: going backwards, the extra row is the first one.
        rows = rows[len(rows) - page_size :] if backwards and more else rows[:page_size]
        self.rows = rows
        self.edges = self._edges(rows, cursor, more)
        return rows

    def get_schema_operation_parameters(self, view: APIView) -> list[dict[str, Any]]:
        return [
            p for p in super().get_schema_operation_parameters(view) if p["name"] != self.ordering_query_param
        ]


HitFetcher = Callable[[int, "tuple[float, UUID] | None", bool], list[Any]]
