"""CORS for the chat front end's origins (CORS_ALLOWED_ORIGINS), under /api/ only."""

from http import HTTPStatus

import pytest
from django.urls import reverse

pytestmark = pytest.mark.django_db

FRONT_END = "https://chat.example.com"


@pytest.fixture(autouse=True)
def _front_end_origin(settings):
    settings.CORS_ALLOWED_ORIGINS = [FRONT_END, "http://localhost:5173"]


def header_set(response, name: str) -> set[str]:
    return {value.strip().lower() for value in response.get(name, "").split(",") if value.strip()}


def test_preflight_from_the_front_end_allows_the_api_headers(client):
    response = client.options(
        reverse("conversation-message-list", args=["00000000-0000-4000-8000-000000000000"]),
        HTTP_ORIGIN=FRONT_END,
        HTTP_ACCESS_CONTROL_REQUEST_METHOD="POST",
        HTTP_ACCESS_CONTROL_REQUEST_HEADERS="authorization, content-type, idempotency-key, if-none-match",
    )

    assert response.status_code == HTTPStatus.OK
    assert response["Access-Control-Allow-Origin"] == FRONT_END
    assert {
        "authorization",
        "content-type",
        "idempotency-key",
        "if-none-match",
        "x-request-id",
    } <= header_set(response, "Access-Control-Allow-Headers")
    assert {"get", "post", "patch", "delete"} <= header_set(response, "Access-Control-Allow-Methods")
    assert "Access-Control-Allow-Credentials" not in response
    assert response["X-Request-ID"]


def test_answers_expose_the_headers_the_front_end_reads(client):
    response = client.get(reverse("conversation-list"), HTTP_ORIGIN=FRONT_END)

    assert response.status_code == HTTPStatus.UNAUTHORIZED  # errors are readable cross-origin too
    assert response["Access-Control-Allow-Origin"] == FRONT_END
    assert header_set(response, "Access-Control-Expose-Headers") == {
        "x-request-id",
        "idempotent-replayed",
        "etag",
        "retry-after",
    }


def test_an_oversized_body_refused_by_middleware_still_carries_cors_headers(client, settings):
    settings.API_MAX_BODY_BYTES = 10

    response = client.post(
        reverse("conversation-list"), "x" * 100, content_type="application/json", HTTP_ORIGIN=FRONT_END
    )

    assert response.status_code == HTTPStatus.REQUEST_ENTITY_TOO_LARGE
    assert response["Access-Control-Allow-Origin"] == FRONT_END


def test_other_origins_get_no_cors_headers(client):
    preflight = client.options(
        reverse("conversation-list"),
        HTTP_ORIGIN="https://evil.example.net",
        HTTP_ACCESS_CONTROL_REQUEST_METHOD="POST",
    )

    assert "Access-Control-Allow-Origin" not in preflight


def test_only_the_api_is_shared_cross_origin(client):
    response = client.get(reverse("healthz"), HTTP_ORIGIN=FRONT_END)

    assert "Access-Control-Allow-Origin" not in response
