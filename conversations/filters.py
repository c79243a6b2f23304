from datetime import UTC, datetime
from typing import Any

from django import forms
from django.db.models import QuerySet
from django_filters import rest_framework as filters
from django_filters.fields import IsoDateTimeField
from rest_framework.exceptions import ValidationError

from accounts.models import User

from . import search
from .models import Conversation, Message, Role


class UtcDateTimeField(IsoDateTimeField):
    """ISO 8601; no offset means UTC. A value that cannot be placed in UTC is invalid."""

    def to_python(self, value: Any) -> datetime | None:
        if isinstance(value, str) and "\x00" in value:
            # Python's ISO parser stops at NUL and would accept what follows unread.
            raise forms.ValidationError("Enter a valid date/time.", code="invalid")
        parsed = super().to_python(value)
        if parsed is None:
            return None
        try:
            return parsed.astimezone(UTC)
        except (OverflowError, ValueError):
            raise forms.ValidationError("Enter a valid date/time.", code="invalid") from None


class UtcDateTimeFilter(filters.IsoDateTimeFilter):
    field_class = UtcDateTimeField


class PresentMeansValidForm(forms.Form):
    """A filter parameter that is sent must hold a valid value: ``role=`` is a 400, not
    "no filter" (django-filter's default)."""

    def clean(self) -> dict[str, Any]:
        for name in self.fields:
            if self.data.get(name) == "":
                self.add_error(name, "This parameter may not be empty.")
        return super().clean() or {}


class FlagFilter(filters.ChoiceFilter):
    """A boolean field: ``true`` or ``false`` exactly (anything else is a 400 naming the
    parameter); absent, ``default`` (None: either)."""

    def __init__(self, *, default: bool | None = None, **kwargs: Any) -> None:
        super().__init__(choices=[("true", "true"), ("false", "false")], **kwargs)
        self.default = default

    def filter(self, qs: QuerySet[Any], value: Any) -> QuerySet[Any]:
        flag = self.default if value in ("", None) else value == "true"
        return qs if flag is None else qs.filter(**{str(self.field_name): flag})


class ConversationFilter(filters.FilterSet):
    # Unstripped, so that a blank search is refused rather than taken for none.
    search = filters.CharFilter(
        method="filter_search",
        strip=False,
        label="Only conversations whose title or a message matches (the syntax of /search/'s q).",
    )
    archived = FlagFilter(
        default=False, help_text="true: only archived conversations; false (the default): all others."
    )
    pinned = FlagFilter(help_text="true: only pinned conversations; false: only the others; absent: both.")
    created_after = UtcDateTimeFilter(field_name="created_at", lookup_expr="gt")
    created_before = UtcDateTimeFilter(field_name="created_at", lookup_expr="lt")
    updated_after = UtcDateTimeFilter(field_name="updated_at", lookup_expr="gt")
    updated_before = UtcDateTimeFilter(field_name="updated_at", lookup_expr="lt")

    class Meta:
        model = Conversation
        fields: list[str] = []
        form = PresentMeansValidForm

    def filter_search(
        self, queryset: QuerySet[Conversation], name: str, value: str
    ) -> QuerySet[Conversation]:
        """Conversations whose title or any message matches (conversations/search.py)."""
        try:
            query = search.parse(value)
        except search.InvalidSearch as invalid:
            raise ValidationError({name: [str(invalid)]}) from None
        user = getattr(self.request, "user", None)
        assert isinstance(user, User)  # noqa: S101 (the list needs a token)
        return queryset.filter(pk__in=search.matching_conversations(user=user, query=query))


class MessageFilter(filters.FilterSet):
    role = filters.ChoiceFilter(choices=Role.choices)
    created_after = UtcDateTimeFilter(field_name="created_at", lookup_expr="gt")
    created_before = UtcDateTimeFilter(field_name="created_at", lookup_expr="lt")

    class Meta:
        model = Message
        fields: list[str] = []
        form = PresentMeansValidForm
