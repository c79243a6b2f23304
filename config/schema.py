"""drf-spectacular postprocessing hooks: what every operation shares, added by one rule each,
so that the schema documents every status the service can answer with, its body and its
headers (a schemathesis check), and a client generated from it needs no cast.

What one operation alone does (its 304 and ETag, Idempotency-Key, its 422) is declared on
its view with ``extend_schema``."""

import json
from typing import Any

DETAIL_COMPONENT = "Detail"
FIELD_ERRORS_COMPONENT = "FieldErrors"
STRINGS = {"type": "array", "items": {"type": "string"}}
SCHEMAS = {
    DETAIL_COMPONENT: {
        "type": "object",
        "description": "An error that concerns no field in particular.",
        "properties": {"detail": {"type": "string"}},
        "required": ["detail"],
    },
    # DRF's ValidationError body: messages keyed by field name, nested for nested fields
    # (a tool call's are keyed by its index, then by its own fields).
    FIELD_ERRORS_COMPONENT: {
        "type": "object",
        "description": 'Messages keyed by field name, e.g. {"content": ["…"]}; {"detail": "…"} for '
        "a body that is not JSON or a bad header.",
        "properties": {"detail": {"type": "string"}, "non_field_errors": STRINGS},
        "additionalProperties": {
            "oneOf": [STRINGS, {"$ref": f"#/components/schemas/{FIELD_ERRORS_COMPONENT}"}]
        },
    },
}
HEADERS = {
    "X-Request-ID": {
        "description": "The request's X-Request-ID when it sent one, else a new id; in the audit log too.",
        "schema": {"type": "string"},
    },
    "Retry-After": {"description": "Seconds to wait before trying again.", "schema": {"type": "integer"}},
}
DESCRIPTIONS = {
    "400": "Invalid input: malformed JSON, a field or query parameter out of its rules.",
    "401": "Missing, malformed, tampered or expired token.",
    "403": "A user_id other than the token's own, or an action not allowed.",
    "404": "No such object of yours (the same answer for another user's, a missing and a malformed id).",
    "413": "The body is larger than API_MAX_BODY_BYTES.",
    "415": "The body is not application/json.",
    "429": "Too many requests; see Retry-After.",
    "503": "The database or Redis cannot be reached; see Retry-After.",
}
RETRY_STATUSES = {"429", "503"}


def ref(kind: str, name: str) -> dict[str, str]:
    return {"$ref": f"#/components/{kind}/{name}"}


def error_statuses(path: str, method: str, operation: dict[str, Any]) -> list[str]:
    statuses = ["400", "415", "429", "503"]
    if operation.get("security") and {} not in operation["security"]:
        statuses += ["401", "403"]
    elif path == "/api/v1/auth/register/":
        statuses.append("403")
    elif path.startswith("/api/v1/auth/token/"):
        statuses.append("401")  # bad credentials or refresh token
    if "{" in path:
        statuses.append("404")
    if "requestBody" in operation:
        statuses.append("413")
    return statuses


def error_body(status: str) -> dict[str, Any]:
    name = FIELD_ERRORS_COMPONENT if status == "400" else DETAIL_COMPONENT
    return {"application/json": {"schema": ref("schemas", name)}}


def complete_response(status: str, response: dict[str, Any]) -> None:
    """Every error answer's body, and the headers that any answer of ``status`` carries."""
    if int(status) >= 400:
        response.setdefault("content", error_body(status))
    headers = response.setdefault("headers", {})
    headers["X-Request-ID"] = ref("headers", "X-Request-ID")
    if status in RETRY_STATUSES:
        headers["Retry-After"] = ref("headers", "Retry-After")


def optional_without_default(schema: dict[str, Any]) -> None:
    """A request field that may be left out, with its default told in words: openapi-typescript
    makes a property with a ``default`` required (its defaultNonNullable), so ``body: {}``
    would not compile where the API takes it."""
    required = set(schema.get("required", []))
    for name, field in schema.get("properties", {}).items():
        if name not in required and "default" in field:
            default = field.pop("default")
            told = f"Default: {json.dumps(default)}."
            field["description"] = " ".join(filter(None, [field.get("description"), told]))


def add_error_responses(result: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    """drf-spectacular postprocessing hook."""
    components = result.setdefault("components", {})
    components.setdefault("schemas", {}).update(SCHEMAS)
    components.setdefault("headers", {}).update(HEADERS)
    for name, schema in components["schemas"].items():
        if name.endswith("Request"):  # COMPONENT_SPLIT_REQUEST's request bodies
            optional_without_default(schema)
    for path, operations in result.get("paths", {}).items():
        for method, operation in operations.items():
            responses = operation.setdefault("responses", {})
            for status in error_statuses(path, method, operation):
                responses.setdefault(status, {"description": DESCRIPTIONS[status]})
            for status, response in responses.items():
                complete_response(status, response)
    return result
