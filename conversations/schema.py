"""The OpenAPI schema of the bodies that no serializer can describe: an append's one message or
array of messages (and its answer), and a history window's items, whose shapes are the model
APIs' (history_formats.py). drf-spectacular serializer extensions, registered as views.py
imports this module; the marker serializers below stand for these bodies in ``extend_schema``.

Each shape is a named component, so that a generated client has a type to name for it.
"""

from typing import Any

from drf_spectacular.extensions import OpenApiSerializerExtension
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.plumbing import ResolvedComponent, build_choice_field
from drf_spectacular.utils import Direction, OpenApiExample, OpenApiResponse
from rest_framework import serializers

from . import history_formats
from .models import Role
from .serializers import MessageCreateSerializer, MessageSerializer, ToolCallSerializer
from .services import BATCH_MAX_MESSAGES

Schema = dict[str, Any]


def _string() -> Schema:
    return {"type": "string"}


def _one_of(*values: str) -> Schema:
    return {"type": "string", "enum": list(values)}


def _array(items: Schema, *, at_most: int | None = None) -> Schema:
    """An array of at least one ``items``, and of at most ``at_most``."""
    schema: Schema = {"type": "array", "items": items, "minItems": 1}
    if at_most is not None:
        schema["maxItems"] = at_most
    return schema


def _object(properties: Schema, *, optional: tuple[str, ...] = (), description: str = "") -> Schema:
    schema: Schema = {"type": "object", "properties": properties}
    schema["required"] = [name for name in properties if name not in optional]
    if description:
        schema["description"] = description
    return schema


def _component(auto_schema: AutoSchema, name: str, schema: Schema) -> Schema:
    """A reference to the component ``name``, registered with ``schema`` if it is new."""
    component = ResolvedComponent(  # type: ignore[no-untyped-call]
        name=name, type=ResolvedComponent.SCHEMA, object=name, schema=schema
    )
    auto_schema.registry.register_on_missing(component)
    ref: Schema = component.ref
    return ref


# --- an append: one message or an array of them -------------------------------------------


class MessageAppendSerializer(serializers.Serializer[Any]):
    """Schema only: the append's body (one message or an array of 1 to BATCH_MAX_MESSAGES)
    and its 201 answer (the message, or the array of messages)."""


class MessageAppendExtension(OpenApiSerializerExtension):  # type: ignore[no-untyped-call]
    target_class = MessageAppendSerializer

    def get_name(self, auto_schema: AutoSchema, direction: Direction) -> str:
        return "MessageAppend"  # MessageAppendRequest for the body

    def map_serializer(self, auto_schema: AutoSchema, direction: Direction) -> Schema:
        item = MessageCreateSerializer if direction == "request" else MessageSerializer
        one = auto_schema.resolve_serializer(item, direction).ref
        return {
            "oneOf": [one, _array(one, at_most=BATCH_MAX_MESSAGES)],
            "description": "One message, or an array of messages appended in one transaction.",
        }


WEATHER_CALL = {
    "id": "call_1",
    "type": "function",
    "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
}
APPEND_EXAMPLES = [
    OpenApiExample(
        "One message", value={"role": "user", "content": "What is the weather in Oslo?"}, request_only=True
    ),
    OpenApiExample(
        "An agent turn in one transaction",
        value=[
            {"role": "user", "content": "What is the weather in Oslo?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [WEATHER_CALL],
                "tool_results": [{"tool_call_id": "call_1", "content": "4 °C, cloudy"}],
            },
            {"role": "assistant", "content": "It is 4 °C and cloudy in Oslo."},
        ],
        request_only=True,
    ),
]

TOOL_RESULTS_EXAMPLES = [
    OpenApiExample(
        "The result of call_1",
        value={"tool_results": [{"tool_call_id": "call_1", "content": "4 °C, cloudy", "is_error": False}]},
        request_only=True,
    )
]


# The append's 400: field errors, or for an array body an array of them, one per item ({}
# for a valid one). FieldErrors is config/schema.py's, as every other 400's body.
FIELD_ERRORS_REF = {"$ref": "#/components/schemas/FieldErrors"}
APPEND_INVALID = OpenApiResponse(
    response={
        "oneOf": [
            FIELD_ERRORS_REF,
            _array(FIELD_ERRORS_REF, at_most=BATCH_MAX_MESSAGES),
        ]
    },
    description="Invalid input: field errors; for an array body, an array of them, one per item "
    "({} for a valid one), and nothing is written.",
)


# --- the history: items in the shape of each model API --------------------------------------

# A stored message's role, as the messages' own schema has it: one RoleEnum for both.
CHAT_ROLE = build_choice_field(serializers.ChoiceField(choices=Role.choices))


def _openai_items(auto_schema: AutoSchema) -> list[Schema]:
    tool_call = auto_schema.resolve_serializer(ToolCallSerializer, "response").ref
    message = _object(
        {
            "role": CHAT_ROLE,
            "content": {"type": "string", "nullable": True},
            "tool_calls": _array(tool_call),
        },
        optional=("tool_calls",),
        description="A Chat Completions message; tool_calls as stored.",
    )
    tool = _object(
        {"role": _one_of("tool"), "tool_call_id": _string(), "content": _string()},
        description="The result of one call of the assistant message before it.",
    )
    return [
        _component(auto_schema, "OpenAIMessage", message),
        _component(auto_schema, "OpenAIToolMessage", tool),
    ]


def _anthropic_items(auto_schema: AutoSchema) -> list[Schema]:
    text = _object({"type": _one_of("text"), "text": _string()})
    tool_use = _object(
        {
            "type": _one_of("tool_use"),
            "id": _string(),
            "name": _string(),
            # Any JSON values: a generated client reads them as unknown, as Anthropic's SDKs
            # do (a self-referencing JSON value type does not compile in openapi-typescript's).
            "input": {
                "type": "object",
                "additionalProperties": True,
                "description": 'The call\'s arguments parsed, or {"arguments": "<as stored>"} when they '
                "are not a JSON object.",
            },
        }
    )
    tool_result = _object(
        {
            "type": _one_of("tool_result"),
            "tool_use_id": _string(),
            "content": _string(),
            "is_error": {"type": "boolean"},
        }
    )
    blocks = [
        _component(auto_schema, "AnthropicTextBlock", text),
        _component(auto_schema, "AnthropicToolUseBlock", tool_use),
        _component(auto_schema, "AnthropicToolResultBlock", tool_result),
    ]
    message = _object(
        {"role": CHAT_ROLE, "content": {"type": "array", "items": {"oneOf": blocks}}},
        description="A Messages API message; tool results come as a user message of tool_result blocks.",
    )
    return [_component(auto_schema, "AnthropicMessage", message)]


def _responses_items(auto_schema: AutoSchema) -> list[Schema]:
    message = _object({"type": _one_of("message"), "role": CHAT_ROLE, "content": _string()})
    call = _object(
        {"type": _one_of("function_call"), "call_id": _string(), "name": _string(), "arguments": _string()}
    )
    output = _object({"type": _one_of("function_call_output"), "call_id": _string(), "output": _string()})
    return [
        _component(auto_schema, "ResponsesMessage", message),
        _component(auto_schema, "ResponsesFunctionCall", call),
        _component(auto_schema, "ResponsesFunctionCallOutput", output),
    ]


# Each format's window and its items; a format without an entry fails schema generation.
HISTORY_ITEMS = {
    "openai": ("OpenAIHistory", _openai_items),
    "anthropic": ("AnthropicHistory", _anthropic_items),
    "responses": ("ResponsesHistory", _responses_items),
}


class HistorySerializer(serializers.Serializer[Any]):
    """Schema only: the history answer, whose items are shaped by its ``format``."""


class HistoryExtension(OpenApiSerializerExtension):  # type: ignore[no-untyped-call]
    target_class = HistorySerializer

    def get_name(self, auto_schema: AutoSchema, direction: Direction) -> str:
        return "History"

    def map_serializer(self, auto_schema: AutoSchema, direction: Direction) -> Schema:
        variants = {}
        for history_format in history_formats.FORMATS:
            name, items = HISTORY_ITEMS[history_format]
            variants[history_format] = _component(
                auto_schema, name, self._window(history_format, items(auto_schema))
            )
        return {
            "oneOf": list(variants.values()),
            "discriminator": {
                "propertyName": "format",
                "mapping": {history_format: ref["$ref"] for history_format, ref in variants.items()},
            },
        }

    @staticmethod
    def _window(history_format: str, items: list[Schema]) -> Schema:
        return _object(
            {
                "conversation_id": {"type": "string", "format": "uuid"},
                "format": _one_of(history_format),
                "tokens": {"type": "integer", "description": "The sum of the window's token_counts."},
                "messages": {"type": "array", "items": items[0] if len(items) == 1 else {"oneOf": items}},
            },
            description=f"The history window in the {history_format} format, oldest first.",
        )


# --- a search hit -----------------------------------------------------------------------------


class SearchHitSerializer(serializers.Serializer[Any]):
    """A message or a conversation title that matches a search (component ``SearchHit``)."""

    conversation_id = serializers.UUIDField()
    conversation_title = serializers.CharField()
    message_id = serializers.UUIDField(allow_null=True, help_text="null for a hit on the title")
    role = serializers.ChoiceField(
        choices=Role.choices, allow_null=True, help_text="null for a hit on the title"
    )
    created_at = serializers.DateTimeField(help_text="the message's, or the conversation's for a title")
    snippet = serializers.CharField(
        help_text="At most 300 characters of the matching text, HTML-escaped, "
        "each matched word in <mark>…</mark>."
    )
