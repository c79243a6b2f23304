"""The OpenAPI schema and Swagger UI, served from this process with no CDN."""

import re

import pytest
from django.urls import reverse
from rest_framework import status

pytestmark = pytest.mark.django_db

ASSET_URL = re.compile(r"""<(?:script|link)\b[^>]*?\b(?:src|href)="([^"]+)\"""")


def test_schema_is_openapi_3(client):
    # By Accept: there is no ?format= renderer switch in this API.
    response = client.get(reverse("schema"), headers={"Accept": "application/vnd.oai.openapi+json"})

    assert response.status_code == status.HTTP_200_OK
    schema = response.json()
    assert schema["openapi"].startswith("3.")
    assert schema["info"]["title"] == "Conversation history API"
    assert all(path.startswith("/api/") for path in schema["paths"])


def test_schema_is_yaml_by_default(client):
    response = client.get(reverse("schema"))

    assert response.status_code == status.HTTP_200_OK
    assert response.content.startswith(b"openapi: 3.")


def swagger_asset_urls(client):
    response = client.get(reverse("swagger-ui"))
    assert response.status_code == status.HTTP_200_OK
    assert response["Content-Type"].startswith("text/html")
    return response.content.decode(), ASSET_URL.findall(response.content.decode())


def test_swagger_ui_loads_only_local_assets(client):
    html, urls = swagger_asset_urls(client)

    assert len(urls) >= 3  # stylesheet, favicon, bundle, preset
    assert all(url.startswith("/static/") for url in urls), urls
    assert "http://" not in html
    assert "https://" not in html
    assert '"/api/schema/"' in html


def test_swagger_ui_assets_are_served_with_debug_off(client, settings):
    settings.DEBUG = False
    _, urls = swagger_asset_urls(client)

    for url in urls:
        response = client.get(url)
        assert response.status_code == status.HTTP_200_OK, url
        assert b"".join(response.streaming_content)


@pytest.mark.parametrize("method", ["get", "head"])
def test_the_root_redirects_to_the_docs_without_authentication(client, method):
    response = getattr(client, method)("/")

    assert response.status_code == status.HTTP_302_FOUND
    assert response["Location"] == reverse("swagger-ui") == "/api/docs/"
    assert client.get(response["Location"]).status_code == status.HTTP_200_OK


def test_the_root_only_redirects_reads(client):
    # OPTIONS, as CSRF lets it through: any method but GET and HEAD is refused, not redirected.
    assert client.options("/").status_code == status.HTTP_405_METHOD_NOT_ALLOWED
