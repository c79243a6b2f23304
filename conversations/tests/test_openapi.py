"""The OpenAPI schema is valid OpenAPI 3 and documents every endpoint of the contract with
its request and response bodies."""

import io

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


def test_rename_requires_a_title(schema):
    body = schema["paths"]["/api/v1/conversations/{id}/"]["patch"]["requestBody"]["content"][
        "application/json"
    ]
    component = schema["components"]["schemas"][body["schema"]["$ref"].rsplit("/", 1)[1]]
    assert component["required"] == ["title"]


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
