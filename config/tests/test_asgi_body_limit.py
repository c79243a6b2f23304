"""The body limit under ASGI (uvicorn), where a chunked body reaches Django without a length."""

import asyncio
import json

import pytest
from django.core.handlers.asgi import ASGIHandler
from rest_framework import status

pytestmark = [pytest.mark.asyncio, pytest.mark.urls("config.tests.urls")]


async def chunked_post(path, chunks):
    """POST ``chunks`` to the ASGI application as a server does with a chunked request."""
    messages = [{"type": "http.request", "body": chunk, "more_body": True} for chunk in chunks]
    messages.append({"type": "http.request", "body": b"", "more_body": False})
    sent = []
    never = asyncio.Event()

    async def receive():
        if messages:
            return messages.pop(0)
        await never.wait()  # the client stays connected

    async def send(message):
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"localhost"),
            (b"content-type", b"application/json"),
            (b"transfer-encoding", b"chunked"),
            (b"x-request-id", b"asgi-chunked"),
        ],
        "client": ("127.0.0.1", 40000),
        "server": ("localhost", 8000),
    }
    await ASGIHandler()(scope, receive, send)
    start = next(message for message in sent if message["type"] == "http.response.start")
    body = b"".join(message.get("body", b"") for message in sent if message["type"] == "http.response.body")
    return start["status"], {name.lower(): value for name, value in start["headers"]}, body


async def test_chunked_body_over_the_limit_is_413_json(settings):
    settings.API_MAX_BODY_BYTES = 1000
    status_code, headers, body = await chunked_post("/api/test/echo/", [b'{"content": "', b"x" * 1000, b'"}'])

    assert status_code == status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    assert headers[b"content-type"] == b"application/json"
    assert headers[b"x-request-id"] == b"asgi-chunked"
    assert "1000 bytes" in json.loads(body)["detail"]


async def test_chunked_body_within_the_limit_is_parsed(settings):
    settings.API_MAX_BODY_BYTES = 1000
    status_code, _, body = await chunked_post("/api/test/echo/", [b'{"title": ', b'"chunked"}'])

    assert status_code == status.HTTP_200_OK
    assert json.loads(body) == {"received": {"title": "chunked"}}
