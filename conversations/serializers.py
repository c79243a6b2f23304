"""Input validation and output shape only; the rules of what may be stored live here and,
as the last line, in the database's constraints."""

from collections.abc import Mapping
from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from . import sizes
from . import tool_results as tool_results_rules
from .models import (
    CONTENT_MAX_LENGTH,
    METADATA_KEY_MAX_LENGTH,
    METADATA_MAX_KEYS,
    METADATA_VALUE_MAX_LENGTH,
    TITLE_MAX_LENGTH,
    Role,
)

TOOL_CALLS_MAX_ITEMS = 64
TOOL_CALL_ID_MAX_LENGTH = 255
TOOL_NAME_MAX_LENGTH = 255
TOOL_ARGUMENTS_MAX_LENGTH = 65_536
# All of one message's calls, as rendered (264 KiB): what one message adds to an answer is
# bounded, and one call with every field at its limit in 4-byte characters still fits.
TOOL_CALLS_MAX_BYTES = 4 * TOOL_ARGUMENTS_MAX_LENGTH + 8 * 1024


class TextField(serializers.CharField):
    """A JSON string stored exactly as sent: no trimming, no coercion of numbers or booleans
    to text. DRF's CharField already refuses U+0000 and unpaired surrogates."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("trim_whitespace", False)
        super().__init__(**kwargs)

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictBooleanField(serializers.BooleanField):
    """A JSON ``true`` or ``false``: DRF's BooleanField would also take "true", "yes", 1, 0."""

    def to_internal_value(self, data: Any) -> bool:
        if not isinstance(data, bool):
            self.fail("invalid", input=data)
        return data


class MaxRenderedBytes:
    """A JSON value of at most ``limit`` bytes as the API renders it (compact UTF-8)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit

    def __call__(self, value: Any) -> None:
        if sizes.rendered_size(value) > self.limit:
            raise serializers.ValidationError(f"At most {self.limit} bytes of JSON in all.")


class ClosedSerializer(serializers.Serializer[Any]):
    """A nested object that must have exactly its declared keys."""

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, Mapping) and (unknown := set(data) - set(self.fields)):
            raise serializers.ValidationError({key: ["Unknown field."] for key in sorted(unknown)})
        return super().to_internal_value(data)


class ToolCallFunctionSerializer(ClosedSerializer):
    name = TextField(max_length=TOOL_NAME_MAX_LENGTH)
    arguments = TextField(max_length=TOOL_ARGUMENTS_MAX_LENGTH, allow_blank=True)


class ToolCallSerializer(ClosedSerializer):
    id = TextField(max_length=TOOL_CALL_ID_MAX_LENGTH)
    type = serializers.ChoiceField(choices=["function"])
    function = ToolCallFunctionSerializer()


@extend_schema_field(ToolCallSerializer(many=True, allow_null=True))
class ToolCallsField(serializers.JSONField):
    """Stored tool calls, rendered as stored (they were validated on the way in); typed in the
    schema as the list of calls they are."""


class ToolResultSerializer(ClosedSerializer):
    tool_call_id = TextField(max_length=TOOL_CALL_ID_MAX_LENGTH)
    content = TextField(max_length=tool_results_rules.TOOL_RESULT_CONTENT_MAX_LENGTH, allow_blank=True)
    is_error = StrictBooleanField(default=False)


def tool_results_field(*, required: bool) -> serializers.ListField:
    """A list of tool results, shaped as the contract says; whether they fit their message's
    calls is ``tool_results_rules.checked``'s to say."""
    return serializers.ListField(
        child=ToolResultSerializer(),
        allow_null=not required,
        default=None if not required else serializers.empty,
        min_length=1,
        max_length=tool_results_rules.TOOL_RESULTS_MAX_ITEMS,
    )


@extend_schema_field(ToolResultSerializer(many=True, allow_null=True))
class ToolResultsField(serializers.JSONField):
    """Stored tool results, rendered as stored; typed in the schema as the list they are."""


class ToolResultsRecordSerializer(serializers.Serializer[Any]):
    tool_results = tool_results_field(required=True)


class MessageCreateSerializer(serializers.Serializer[Any]):
    role = serializers.ChoiceField(choices=Role.choices)
    content = TextField(max_length=CONTENT_MAX_LENGTH, allow_null=True, allow_blank=True, default=None)
    tool_calls = serializers.ListField(
        child=ToolCallSerializer(),
        allow_null=True,
        default=None,
        min_length=1,
        max_length=TOOL_CALLS_MAX_ITEMS,
        validators=[MaxRenderedBytes(TOOL_CALLS_MAX_BYTES)],
    )
    tool_results = tool_results_field(required=False)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        role, content, tool_calls = attrs["role"], attrs["content"], attrs["tool_calls"]
        if tool_calls is not None and role != Role.ASSISTANT:
            raise serializers.ValidationError(
                {"tool_calls": ["Only assistant messages may carry tool calls."]}
            )
        if role == Role.USER and not content:
            raise serializers.ValidationError({"content": ["A user message needs non-empty content."]})
        if content is None and tool_calls is None:
            raise serializers.ValidationError(
                {"content": ["Content may be null only when tool_calls are given."]}
            )
        if attrs["tool_results"] is not None:
            try:
                attrs["tool_results"] = tool_results_rules.checked(tool_calls, attrs["tool_results"])
            except tool_results_rules.ToolResultsInvalid as invalid:
                raise serializers.ValidationError({"tool_results": [str(invalid)]}) from None
        return attrs


# The answers' serializers declare their fields: a ModelSerializer rebuilds its fields from
# the model for every instance, which cost about a millisecond of each append's answer.


class MessageSerializer(serializers.Serializer[Any]):
    id = serializers.UUIDField(read_only=True)
    conversation_id = serializers.UUIDField(read_only=True)
    user_id = serializers.UUIDField(read_only=True)
    role = serializers.ChoiceField(choices=Role.choices, read_only=True)
    content = serializers.CharField(read_only=True, allow_null=True)
    tool_calls = ToolCallsField(read_only=True, allow_null=True)
    tool_results = ToolResultsField(read_only=True, allow_null=True)
    token_count = serializers.IntegerField(read_only=True)
    created_at = serializers.DateTimeField(read_only=True)


@extend_schema_field(
    {
        "type": "object",
        "maxProperties": METADATA_MAX_KEYS,
        "additionalProperties": {"type": "string", "maxLength": METADATA_VALUE_MAX_LENGTH},
        "description": f"The caller's own: at most {METADATA_MAX_KEYS} keys of 1 to "
        f"{METADATA_KEY_MAX_LENGTH} characters, each value a string of at most "
        f"{METADATA_VALUE_MAX_LENGTH} characters.",
        "example": {"project": "trip to Paris"},
    }
)
class MetadataField(serializers.Field[dict[str, str], dict[str, str], dict[str, str], Any]):
    """A JSON object of at most METADATA_MAX_KEYS string keys of 1 to
    METADATA_KEY_MAX_LENGTH characters, each value a string of at most
    METADATA_VALUE_MAX_LENGTH characters (OpenAI's convention); clean text, as every text
    field here (no NUL, no unpaired surrogate)."""

    default_error_messages = {
        "not_object": "Must be a JSON object.",
        "too_many": f"At most {METADATA_MAX_KEYS} keys.",
        "key": f"Keys are strings of 1 to {METADATA_KEY_MAX_LENGTH} characters.",
        "value": f"Values are strings of at most {METADATA_VALUE_MAX_LENGTH} characters.",
    }

    def __init__(self, **kwargs: Any) -> None:
        self.text = TextField(allow_blank=True)
        super().__init__(**kwargs)

    def to_internal_value(self, data: Any) -> dict[str, str]:
        if not isinstance(data, dict):
            self.fail("not_object")
        if len(data) > METADATA_MAX_KEYS:
            self.fail("too_many")
        for key, value in data.items():
            if not 1 <= len(key) <= METADATA_KEY_MAX_LENGTH or not self._clean(key):
                self.fail("key")
            if not isinstance(value, str) or len(value) > METADATA_VALUE_MAX_LENGTH or not self._clean(value):
                self.fail("value")
        return data

    def _clean(self, text: str) -> bool:
        try:
            self.text.run_validation(text)
        except serializers.ValidationError:
            return False
        return True

    def to_representation(self, value: dict[str, str]) -> dict[str, str]:
        return value


class ConversationCreateSerializer(serializers.Serializer[Any]):
    title = TextField(max_length=TITLE_MAX_LENGTH, allow_blank=True, default="")
    metadata = MetadataField(default=dict)


class ConversationUpdateSerializer(serializers.Serializer[Any]):
    """Any of the fields (the view refuses none at all)."""

    title = TextField(max_length=TITLE_MAX_LENGTH, allow_blank=True, required=False)
    archived = StrictBooleanField(required=False)
    pinned = StrictBooleanField(required=False)
    metadata = MetadataField(required=False)


class PreviewSerializer(serializers.Serializer[Any]):
    """The newest message: its role, its content's first 200 code points, its time."""

    role = serializers.ChoiceField(choices=Role.choices, read_only=True)
    content = serializers.CharField(read_only=True, allow_null=True)
    created_at = serializers.DateTimeField(read_only=True)


@extend_schema_field(PreviewSerializer(allow_null=True))
class PreviewField(serializers.Field[Any, Any, Any, Any]):
    """A conversation's preview, rendered straight from its columns: a nested serializer
    per listed row would cost the list page more than the columns do."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs["source"] = "*"
        super().__init__(read_only=True, **kwargs)
        self.time = serializers.DateTimeField()

    def to_representation(self, value: Any) -> dict[str, Any] | None:
        if value.preview_role is None:
            return None
        return {
            "role": value.preview_role,
            "content": value.preview_content,
            "created_at": self.time.to_representation(value.preview_created_at),
        }


class ConversationSerializer(serializers.Serializer[Any]):
    id = serializers.UUIDField(read_only=True)
    user_id = serializers.UUIDField(read_only=True)
    title = serializers.CharField(read_only=True)
    created_at = serializers.DateTimeField(read_only=True)
    updated_at = serializers.DateTimeField(read_only=True)
    message_count = serializers.IntegerField(read_only=True)
    archived = serializers.BooleanField(read_only=True)
    pinned = serializers.BooleanField(read_only=True)
    metadata = MetadataField(read_only=True)
    preview = PreviewField()
