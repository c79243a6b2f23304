"""The OpenAPI schema is valid OpenAPI 3 and documents every endpoint of the contract with
its request and response bodies."""

import io
import json
import warnings

import pytest
from django.core.management import call_command
from drf_spectacular.validation import validate_schema
from rest_framework import status

pytestmark = pytest.mark.django_db

# (path, method, success status, request body documented)
CONTRACT_OPERATIONS = [
    ("/api/v1/auth/register/", "post", "201", True),
    ("/api/v1/auth/token/", "post", "200", True),
    ("/api/v1/auth/token/refresh/", "post", "200", True),
    ("/api/v1/auth/me/", "get", "200", False),
    ("/api/v1/auth/password/", "post", "204", True),
    ("/api/v1/auth/logout/", "post", "204", True),
    ("/api/v1/conversations/", "get", "200", False),
    ("/api/v1/search/", "get", "200", False),
    ("/api/v1/conversations/", "post", "201", True),
    ("/api/v1/conversations/{id}/", "get", "200", False),
    ("/api/v1/conversations/{id}/", "patch", "200", True),
    ("/api/v1/conversations/{id}/", "delete", "204", False),
    ("/api/v1/conversations/{conversation_pk}/messages/", "get", "200", False),
    ("/api/v1/conversations/{conversation_pk}/messages/", "post", "201", True),
    ("/api/v1/conversations/{conversation_pk}/messages/{id}/", "get", "200", False),
    ("/api/v1/conversations/{id}/history/", "get", "200", False),
]


@pytest.fixture(scope="module")
def schema():
    from drf_spectacular.generators import SchemaGenerator

    return SchemaGenerator().get_schema(request=None, public=True)


def test_schema_validates_against_the_openapi_3_specification(schema):
    validate_schema(schema)


def test_schema_generation_has_no_warnings():
    call_command("spectacular", "--validate", "--fail-on-warn", stdout=io.StringIO())


@pytest.mark.parametrize(("path", "method", "success", "has_body"), CONTRACT_OPERATIONS)
def test_every_contract_operation_is_documented_with_its_bodies(schema, path, method, success, has_body):
    operation = schema["paths"][path][method]

    assert success in operation["responses"]
    if success != "204":
        assert "application/json" in operation["responses"][success]["content"]
    if has_body:
        assert "application/json" in operation["requestBody"]["content"]


@pytest.mark.parametrize(
    ("path", "statuses"),
    [("/api/v1/auth/password/", {"204", "400", "401"}), ("/api/v1/auth/logout/", {"204", "400", "401"})],
)
def test_the_revocation_operations_need_a_token_and_document_their_statuses(schema, path, statuses):
    operation = schema["paths"][path]["post"]

    assert statuses <= set(operation["responses"])
    assert {"jwtAuth": []} in operation["security"]
    assert {} not in operation["security"]


def test_list_operations_document_the_page_shape_and_parameters(schema):
    for path, names in [
        ("/api/v1/conversations/", {"cursor", "page_size", "ordering", "created_after", "updated_before"}),
        ("/api/v1/conversations/{conversation_pk}/messages/", {"cursor", "page_size", "ordering", "role"}),
    ]:
        operation = schema["paths"][path]["get"]
        ref = operation["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
        page = schema["components"]["schemas"][ref.rsplit("/", 1)[1]]
        assert set(page["required"]) == {"next", "previous", "results"}
        assert page["properties"]["results"]["type"] == "array"
        assert names <= {p["name"] for p in operation["parameters"]}


def test_patch_takes_any_of_title_flags_and_metadata(schema):
    body = schema["paths"]["/api/v1/conversations/{id}/"]["patch"]["requestBody"]["content"][
        "application/json"
    ]
    component = schema["components"]["schemas"][body["schema"]["$ref"].rsplit("/", 1)[1]]
    assert "required" not in component
    properties = component["properties"]
    assert set(properties) == {"title", "archived", "pinned", "metadata"}
    assert properties["archived"]["type"] == properties["pinned"]["type"] == "boolean"
    assert properties["metadata"]["type"] == "object"
    assert properties["metadata"]["maxProperties"] == 16
    assert properties["metadata"]["additionalProperties"] == {"type": "string", "maxLength": 512}


def test_the_conversation_object_types_every_new_field(schema):
    component = schema["components"]["schemas"]["Conversation"]
    properties = component["properties"]
    assert properties["archived"]["type"] == properties["pinned"]["type"] == "boolean"
    assert properties["metadata"]["type"] == "object"
    preview = properties["preview"]
    assert preview.get("nullable") is True
    target = preview["allOf"][0]["$ref"] if "allOf" in preview else preview["$ref"]
    shape = schema["components"]["schemas"][target.rsplit("/", 1)[1]]
    assert set(shape["properties"]) == {"role", "content", "created_at"}
    assert shape["properties"]["content"]["nullable"] is True
    assert shape["properties"]["created_at"]["format"] == "date-time"


def test_the_list_documents_its_filters_and_revalidation(schema):
    operation = schema["paths"]["/api/v1/conversations/"]["get"]
    parameters = {p["name"]: p for p in operation["parameters"]}
    assert parameters["archived"]["schema"]["enum"] == ["false", "true"]
    assert parameters["pinned"]["schema"]["enum"] == ["false", "true"]
    assert "If-None-Match" in parameters
    assert {"200", "304"} <= set(operation["responses"])


def test_append_documents_the_idempotency_key_header(schema):
    operation = schema["paths"]["/api/v1/conversations/{conversation_pk}/messages/"]["post"]
    assert "Idempotency-Key" in {p["name"] for p in operation["parameters"] if p["in"] == "header"}
    assert "422" in operation["responses"]


def test_every_operation_needs_a_bearer_token_except_auth(schema):
    assert "jwtAuth" in schema["components"]["securitySchemes"]
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            if path.startswith("/api/v1/conversations/"):
                assert {"jwtAuth": []} in operation.get("security", []), (path, method)


def test_schema_is_served_to_anonymous_clients(client):
    assert client.get("/api/schema/", {"format": "json"}).status_code == status.HTTP_200_OK


# --- a schema that generated clients can trust (issue 11) -----------------------------------

TYPED = {"type", "$ref", "oneOf", "anyOf", "allOf"}
CONDITIONAL_GETS = [
    "/api/v1/conversations/{id}/",
    "/api/v1/conversations/{conversation_pk}/messages/",
    "/api/v1/conversations/{id}/history/",
]
APPEND = ("/api/v1/conversations/{conversation_pk}/messages/", "post")


@pytest.fixture(scope="module")
def served_schema(django_db_blocker):
    """The schema as clients download it: JSON, as /api/schema/ renders it."""
    from rest_framework.test import APIClient

    with django_db_blocker.unblock():
        response = APIClient().get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == status.HTTP_200_OK
    return json.loads(response.content)


def operations(schema):
    for path, methods in schema["paths"].items():
        for method, operation in methods.items():
            yield path, method, operation


def untyped_schemas(node, where="#"):
    """Where a property, an array's items, a map's values, or a parameter's, header's or
    body's schema have no type: a generated client would make them ``unknown``."""
    if isinstance(node, list):
        for index, item in enumerate(node):
            yield from untyped_schemas(item, f"{where}/{index}")
        return
    if not isinstance(node, dict):
        return
    children = [(f"properties/{name}", value) for name, value in node.get("properties", {}).items()]
    children += [
        (k, node[k]) for k in ("items", "additionalProperties", "schema") if isinstance(node.get(k), dict)
    ]
    for key, child in children:
        if not TYPED & set(child):
            yield f"{where}/{key}"
    for key, value in node.items():
        yield from untyped_schemas(value, f"{where}/{key}")


def test_every_field_of_every_schema_is_typed(served_schema):
    assert list(untyped_schemas(served_schema)) == []


def test_tool_calls_are_typed_as_a_nullable_list_of_calls(served_schema):
    schemas = served_schema["components"]["schemas"]
    tool_calls = schemas["Message"]["properties"]["tool_calls"]
    assert tool_calls["type"] == "array"
    assert tool_calls["nullable"] is True
    call = schemas[tool_calls["items"]["$ref"].rsplit("/", 1)[1]]
    assert set(call["required"]) == {"id", "type", "function"}
    assert call["properties"]["id"]["type"] == "string"
    assert schemas[call["properties"]["type"]["$ref"].rsplit("/", 1)[1]]["enum"] == ["function"]
    function = schemas[call["properties"]["function"]["$ref"].rsplit("/", 1)[1]]
    assert function["properties"] == {
        "name": {"type": "string", "maxLength": 255},
        "arguments": {"type": "string", "maxLength": 65536},
    }
    assert set(function["required"]) == {"name", "arguments"}


def test_schema_passes_openapi_spec_validator_without_warnings(served_schema):
    from openapi_spec_validator import OpenAPIV30SpecValidator, validate

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        validate(served_schema, cls=OpenAPIV30SpecValidator)


def test_the_export_documents_its_format_and_both_media_types(served_schema):
    operation = served_schema["paths"]["/api/v1/export/"]["get"]

    (parameter,) = [p for p in operation["parameters"] if p["in"] == "query"]
    assert parameter["name"] == "format"
    assert parameter["schema"]["enum"] == ["jsonl", "markdown"]
    ok = operation["responses"]["200"]
    assert set(ok["content"]) == {"application/x-ndjson", "text/markdown"}
    assert "Content-Disposition" in ok["headers"]
    assert {"400", "401", "429"} <= set(operation["responses"])
    assert list(served_schema["paths"]["/api/v1/export/"]) == ["get"]


def test_operation_ids_read_well_in_a_generated_client(served_schema):
    ids = {(path, method): op["operationId"] for path, method, op in operations(served_schema)}

    assert ids[("/api/v1/conversations/", "get")] == "conversations_list"
    assert ids[APPEND] == "conversations_messages_create"
    assert ids[("/api/v1/auth/token/", "post")] == "auth_token_create"
    assert ids[("/api/v1/export/", "get")] == "export_download"
    assert not [i for i in ids.values() if i.startswith("v1_")]
    assert len(set(ids.values())) == len(ids)


def component(name):
    return {"$ref": f"#/components/schemas/{name}"}


def one_or_array_of(name):
    return {
        "oneOf": [
            component(name),
            {"type": "array", "items": component(name), "minItems": 1, "maxItems": 100},
        ]
    }


def test_every_error_status_has_its_body(served_schema):
    for path, method, operation in operations(served_schema):
        for code, response in operation["responses"].items():
            if int(code) < 400:
                continue
            body = response["content"]["application/json"]["schema"]
            if (path, method, code) == (*APPEND, "400"):  # an array body's errors: one per item
                assert body == one_or_array_of("FieldErrors")
                continue
            expected = "FieldErrors" if code == "400" else "Detail"
            assert body == component(expected), (path, method, code)


def test_error_bodies_are_detail_or_field_errors(served_schema):
    schemas = served_schema["components"]["schemas"]
    assert schemas["Detail"]["properties"] == {"detail": {"type": "string"}}
    assert schemas["Detail"]["required"] == ["detail"]
    field_errors = schemas["FieldErrors"]
    assert field_errors["properties"]["detail"] == {"type": "string"}
    assert field_errors["properties"]["non_field_errors"]["items"] == {"type": "string"}
    # A field's messages, or a nested field's errors (a tool call's, keyed by its index).
    assert {"type": "array", "items": {"type": "string"}} in field_errors["additionalProperties"]["oneOf"]


def test_the_append_documents_its_422_and_replay_header(served_schema):
    responses = served_schema["paths"][APPEND[0]][APPEND[1]]["responses"]
    body = responses["422"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/Detail"}
    replayed = responses["201"]["headers"]["Idempotent-Replayed"]
    assert replayed["schema"] == {"type": "string", "enum": ["true"]}


@pytest.mark.parametrize("path", CONDITIONAL_GETS)
def test_conditional_gets_document_if_none_match_etag_and_304(served_schema, path):
    operation = served_schema["paths"][path]["get"]
    headers = {p["name"] for p in operation["parameters"] if p["in"] == "header"}
    assert "If-None-Match" in headers
    assert "ETag" in operation["responses"]["200"]["headers"]
    assert "ETag" in operation["responses"]["304"]["headers"]
    assert "content" not in operation["responses"]["304"]


def test_every_response_documents_x_request_id_and_retries_retry_after(served_schema):
    for path, method, operation in operations(served_schema):
        for code, response in operation["responses"].items():
            headers = response["headers"]
            request_id = headers["X-Request-ID"]
            assert request_id == {"$ref": "#/components/headers/X-Request-ID"}, (path, method, code)
            assert ("Retry-After" in headers) == (code in {"429", "503"}), (path, method, code)


def test_optional_request_fields_carry_no_default(served_schema):
    """openapi-typescript makes a property with a default required: ``body: {}`` would not
    compile for a conversation, whose title is optional."""
    schemas = served_schema["components"]["schemas"]
    assert "title" not in schemas["ConversationCreateRequest"].get("required", [])
    for name, schema in schemas.items():
        if name.endswith("Request"):
            for field, value in schema.get("properties", {}).items():
                assert "default" not in value, (name, field)


# --- agent-ready history (issue 12): batches, tool results, undo and clear, formats ----------

TOOL_RESULTS_PATH = "/api/v1/conversations/{conversation_pk}/messages/{id}/tool-results/"
MESSAGE_PATH = "/api/v1/conversations/{conversation_pk}/messages/{id}/"
HISTORY_PATH = "/api/v1/conversations/{id}/history/"


def body_schema(part):
    return part["content"]["application/json"]["schema"]


def referenced(schemas, node):
    """The component that ``node`` (``{"$ref": …}``) names."""
    return schemas[node["$ref"].rsplit("/", 1)[1]]


def test_the_append_takes_and_answers_one_message_or_an_array_of_them(served_schema):
    schemas = served_schema["components"]["schemas"]
    operation = served_schema["paths"][APPEND[0]][APPEND[1]]

    request = referenced(schemas, body_schema(operation["requestBody"]))
    created = referenced(schemas, body_schema(operation["responses"]["201"]))

    assert request["oneOf"] == one_or_array_of("MessageCreateRequest")["oneOf"]
    assert created["oneOf"] == one_or_array_of("Message")["oneOf"]
    assert {"201", "400", "404", "409", "413", "422"} <= set(operation["responses"])


@pytest.mark.parametrize(
    ("path", "method", "statuses"),
    [
        (TOOL_RESULTS_PATH, "post", {"200", "400", "404", "409"}),
        (MESSAGE_PATH, "delete", {"204", "404", "409"}),
        (APPEND[0], "delete", {"204", "404"}),
    ],
)
def test_tool_results_undo_and_clear_document_their_statuses(served_schema, path, method, statuses):
    operation = served_schema["paths"][path][method]

    assert statuses <= set(operation["responses"])
    assert "content" not in operation["responses"].get("204", {})
    if "200" in statuses:
        assert body_schema(operation["responses"]["200"]) == component("Message")
        assert body_schema(operation["requestBody"]) == component("ToolResultsRecordRequest")


def test_clear_and_undo_have_their_own_operation_ids(served_schema):
    assert served_schema["paths"][APPEND[0]]["delete"]["operationId"] == "conversations_messages_clear"
    assert served_schema["paths"][MESSAGE_PATH]["delete"]["operationId"] == "conversations_messages_destroy"


def test_tool_results_are_typed_as_a_nullable_list_of_results(served_schema):
    schemas = served_schema["components"]["schemas"]
    tool_results = schemas["Message"]["properties"]["tool_results"]
    assert (tool_results["type"], tool_results["nullable"]) == ("array", True)
    result = referenced(schemas, tool_results["items"])
    assert result["properties"]["is_error"]["type"] == "boolean"
    assert set(result["required"]) >= {"tool_call_id", "content"}
    assert schemas["Message"]["properties"]["token_count"]["type"] == "integer"


def test_history_documents_its_parameters(served_schema):
    parameters = {p["name"]: p for p in served_schema["paths"][HISTORY_PATH]["get"]["parameters"]}

    assert set(parameters["format"]["schema"]["enum"]) == {"openai", "anthropic", "responses"}
    assert set(parameters["start"]["schema"]["enum"]) == {"any", "user"}
    assert parameters["limit"]["schema"]["type"] == parameters["max_tokens"]["schema"]["type"] == "integer"


HISTORY_ITEMS = {
    "openai": {"OpenAIMessage", "OpenAIToolMessage"},
    "anthropic": {"AnthropicMessage"},
    "responses": {"ResponsesMessage", "ResponsesFunctionCall", "ResponsesFunctionCallOutput"},
}


def test_history_is_one_typed_window_per_format(served_schema):
    schemas = served_schema["components"]["schemas"]
    history = referenced(
        schemas, body_schema(served_schema["paths"][HISTORY_PATH]["get"]["responses"]["200"])
    )

    assert history["discriminator"]["propertyName"] == "format"
    assert set(history["discriminator"]["mapping"]) == set(HISTORY_ITEMS)
    for history_format, ref in history["discriminator"]["mapping"].items():
        window = referenced(schemas, {"$ref": ref})
        assert {"$ref": ref} in history["oneOf"]
        assert set(window["required"]) == {"conversation_id", "format", "tokens", "messages"}
        assert referenced(schemas, window["properties"]["format"])["enum"] == [history_format]
        items = window["properties"]["messages"]["items"]
        names = {i["$ref"].rsplit("/", 1)[1] for i in items.get("oneOf", [items])}
        assert names == HISTORY_ITEMS[history_format]


@pytest.fixture
def agent_conversation(user, other_user):
    """Text, calls answered with the append and later (one an error), arguments that are no
    JSON object, a call never answered in an older message and one pending in the newest."""
    from conversations import services

    from .factories import ConversationFactory

    conversation = ConversationFactory.create(user=user)
    ConversationFactory.create(user=other_user)

    def call(call_id, arguments='{"city": "Oslo", "days": [1, 2], "metric": true, "note": null}'):
        return {
            "id": call_id,
            "type": "function",
            "function": {"name": "get_weather", "arguments": arguments},
        }

    def append(role, content, tool_calls=None, tool_results=None):
        return services.message_append(
            user=user,
            conversation_id=conversation.pk,
            role=role,
            content=content,
            tool_calls=tool_calls,
            tool_results=tool_results,
        )

    append("user", "Weather in Oslo and Bergen?")
    calling = append(
        "assistant",
        "Looking.",
        [call("a"), call("b", "not json"), call("never")],
        [{"tool_call_id": "a", "content": "4 °C"}],
    )
    services.tool_results_record(
        user=user,
        conversation_id=conversation.pk,
        message_id=calling.pk,
        tool_results=[{"tool_call_id": "b", "content": "no such city", "is_error": True}],
    )
    append("assistant", "Oslo: 4 °C.")
    append("user", "And tomorrow?")
    append("assistant", None, [call("pending", "[1]")])
    return conversation


@pytest.mark.parametrize("history_format", ["openai", "anthropic", "responses"])
def test_every_history_format_answers_as_its_schema_says(
    served_schema, auth_client, agent_conversation, history_format
):
    from openapi_schema_validator import OAS30Validator

    url = HISTORY_PATH.format(id=agent_conversation.pk)
    body = auth_client.get(url, {"format": history_format}).json()
    window = served_schema["components"]["schemas"]["History"]["discriminator"]["mapping"][history_format]
    document = {"components": served_schema["components"]}

    OAS30Validator({**document, "$ref": "#/components/schemas/History"}).validate(body)
    OAS30Validator({**document, "$ref": window}).validate(body)
    assert body["format"] == history_format
    assert len(body["messages"]) >= 6  # every kind of item is there


def test_search_is_a_page_of_named_hits_with_its_parameters(served_schema):
    operation = served_schema["paths"]["/api/v1/search/"]["get"]
    parameters = {p["name"]: p for p in operation["parameters"]}
    page = operation["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].split("/")[-1]
    results = served_schema["components"]["schemas"][page]["properties"]["results"]
    hit = served_schema["components"]["schemas"]["SearchHit"]

    assert results["items"] == {"$ref": "#/components/schemas/SearchHit"}
    assert set(hit["required"]) == {
        "conversation_id",
        "conversation_title",
        "message_id",
        "role",
        "created_at",
        "snippet",
    }
    assert hit["properties"]["message_id"]["nullable"] is True
    assert hit["properties"]["role"]["nullable"] is True
    assert parameters["q"]["required"] is True
    assert {"cursor", "page_size"} <= set(parameters)
    assert "ordering" not in parameters
    assert "400" in operation["responses"]
    listed = {p["name"] for p in served_schema["paths"]["/api/v1/conversations/"]["get"]["parameters"]}
    assert "search" in listed
