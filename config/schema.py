"""Error answers in the OpenAPI schema, added to every operation by one rule each, so the
schema documents every status the service can answer with (a schemathesis check)."""

from typing import Any

ERROR_COMPONENT = "Error"
ERROR_SCHEMA = {
    "type": "object",
    "description": 'Either {"detail": "…"} or field errors keyed by field name.',
    "properties": {"detail": {"type": "string"}},
    "additionalProperties": True,
}
# Operations answered 304 to a matching If-None-Match.
CONDITIONAL = {
    ("/api/v1/conversations/{id}/", "get"),
    ("/api/v1/conversations/{conversation_pk}/messages/", "get"),
    ("/api/v1/conversations/{id}/history/", "get"),
}
DESCRIPTIONS = {
    "400": "Invalid input: malformed JSON, a field or query parameter out of its rules.",
    "401": "Missing, malformed, tampered or expired token.",
    "403": "A user_id other than the token's own, or an action not allowed.",
    "404": "No such object of yours (the same answer for another user's, a missing and a malformed id).",
    "413": "The body is larger than API_MAX_BODY_BYTES.",
    "415": "The body is not application/json.",
    "429": "Too many requests; see Retry-After.",
    "503": "The database cannot be reached; see Retry-After.",
}


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


def add_error_responses(result: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    """drf-spectacular postprocessing hook."""
    result.setdefault("components", {}).setdefault("schemas", {})[ERROR_COMPONENT] = ERROR_SCHEMA
    error_content = {"application/json": {"schema": {"$ref": f"#/components/schemas/{ERROR_COMPONENT}"}}}
    for path, operations in result.get("paths", {}).items():
        for method, operation in operations.items():
            responses = operation.setdefault("responses", {})
            for status in error_statuses(path, method, operation):
                responses.setdefault(status, {"description": DESCRIPTIONS[status], "content": error_content})
            if (path, method) in CONDITIONAL:
                responses.setdefault("304", {"description": "Not modified since the ETag in If-None-Match."})
    return result
