import re

import pytest
from django.urls import reverse
from rest_framework import status

pytestmark = pytest.mark.django_db

UUID4_HEX = re.compile(r"[0-9a-f]{32}")


def test_response_carries_a_new_request_id_when_none_is_sent(client):
    first = client.get(reverse("healthz"))
    second = client.get(reverse("healthz"))

    assert UUID4_HEX.fullmatch(first["X-Request-ID"])
    assert first["X-Request-ID"] != second["X-Request-ID"]


@pytest.mark.parametrize("sent", ["abc-123", "0f1e2d3c-aaaa-bbbb-cccc-000000000000", "x" * 200, "a!~:/=+"])
def test_callers_request_id_is_echoed(client, sent):
    response = client.get(reverse("healthz"), headers={"X-Request-ID": sent})

    assert response["X-Request-ID"] == sent


@pytest.mark.parametrize("sent", ["", "has space", "x" * 201, "naïve", "tab\there", "bell\x07"])
def test_insane_request_id_is_replaced_with_a_new_one(client, sent):
    response = client.get(reverse("healthz"), headers={"X-Request-ID": sent})

    assert UUID4_HEX.fullmatch(response["X-Request-ID"])


@pytest.mark.urls("config.tests.urls")
def test_request_id_is_on_the_request_and_on_error_responses(client):
    client.raise_request_exception = False
    for path in ["/api/no-such-thing/", reverse("test-fails"), reverse("test-echo")]:
        response = client.get(path, headers={"X-Request-ID": "trace-me"})
        assert response["X-Request-ID"] == "trace-me"
        assert response.wsgi_request.request_id == "trace-me"


def test_static_files_carry_a_request_id_too(client):
    response = client.get("/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui.css")

    assert response.status_code == status.HTTP_200_OK
    assert UUID4_HEX.fullmatch(response["X-Request-ID"])
