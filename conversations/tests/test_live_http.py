"""The API contract, driven over real HTTP with ``requests`` against the server started as the
README starts it (``manage.py migrate`` then ``manage.py runserver``, production settings,
DEBUG off), on SQLite or, under ``scripts/with-postgres``, on a PostgreSQL database of its own.

The client knows nothing of the code: only paths, bodies, headers and status codes of the
README's REST API and the schema at /api/schema/. The server's output is part of every failure message.
"""

import base64
import contextlib
import json
import os
import re
import secrets
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jwt
import pytest
import requests

from .live_server import LiveServer, is_postgres_url, postgres_database, start_server, stop_server

TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
REQUEST_TIMEOUT = 15
MISSING_ID = "00000000-0000-4000-8000-000000000000"

REGISTER = "/api/v1/auth/register/"
TOKEN = "/api/v1/auth/token/"
REFRESH = "/api/v1/auth/token/refresh/"
ME = "/api/v1/auth/me/"
PASSWORD = "/api/v1/auth/password/"
LOGOUT = "/api/v1/auth/logout/"
CONVERSATIONS = "/api/v1/conversations/"

CONVERSATION_FIELDS = {
    "id",
    "user_id",
    "title",
    "created_at",
    "updated_at",
    "message_count",
    "archived",
    "pinned",
    "metadata",
    "preview",
}
MESSAGE_FIELDS = {
    "id",
    "conversation_id",
    "user_id",
    "role",
    "content",
    "tool_calls",
    "tool_results",
    "token_count",
    "created_at",
}
PAGE_FIELDS = {"next", "previous", "results"}

WEATHER_CALL = {
    "id": "call_1",
    "type": "function",
    "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
}
WEATHER_RESULT = {"tool_call_id": "call_1", "content": "4 °C, rain", "is_error": False}


def conversation_url(conversation_id: str) -> str:
    return f"{CONVERSATIONS}{conversation_id}/"


def messages_url(conversation_id: str) -> str:
    return f"{CONVERSATIONS}{conversation_id}/messages/"


def message_url(conversation_id: str, message_id: str) -> str:
    return f"{CONVERSATIONS}{conversation_id}/messages/{message_id}/"


def history_url(conversation_id: str) -> str:
    return f"{CONVERSATIONS}{conversation_id}/history/"


class Client:
    """A plain HTTP client of the API, like the chat front end; ``access`` is its bearer token."""

    def __init__(self, server: LiveServer, access: str | None = None) -> None:
        self.server = server
        self.access = access
        self.user_id = ""
        self.username = ""
        self.password = ""
        self.refresh = ""

    def request(self, method, path, *, auth=True, headers=None, **kwargs) -> requests.Response:
        url = path if path.startswith("http") else f"{self.server.url}{path}"
        headers = dict(headers or {})
        if auth and self.access is not None:
            headers.setdefault("Authorization", f"Bearer {self.access}")
        # A connection per request, as a browser's fetch may do: runserver's keep-alive
        # connections stall on delayed ACKs (about 40 ms a request).
        return requests.request(method, url, headers=headers, timeout=REQUEST_TIMEOUT, **kwargs)

    def expect(self, status, method, path, **kwargs) -> requests.Response:
        """The response, after failing the test with everything useful unless it has ``status``."""
        response = self.request(method, path, **kwargs)
        check_status(self.server, response, status)
        return response

    def json(self, status, method, path, **kwargs):
        response = self.expect(status, method, path, **kwargs)
        return body_of(self.server, response)


def describe(server: LiveServer, response: requests.Response) -> str:
    request = response.request
    sent = request.body if isinstance(request.body, str | None) else request.body.decode(errors="replace")
    return (
        f"{request.method} {request.url}\nrequest headers: {dict(request.headers)}\n"
        f"request body: {(sent or '')[:1000]}\n"
        f"-> {response.status_code}\nresponse headers: {dict(response.headers)}\n"
        f"response body: {response.text[:3000]}\n"
        f"--- server output (tail) ---\n{server.log_tail()}"
    )


def check_status(server: LiveServer, response: requests.Response, status: int) -> None:
    if response.status_code != status:
        pytest.fail(f"expected {status} {HTTPStatus(status).phrase}\n{describe(server, response)}")


def body_of(server: LiveServer, response: requests.Response):
    """The JSON body; the contract makes every API body JSON, errors included."""
    content_type = response.headers.get("Content-Type", "")
    if not content_type.startswith("application/json"):
        pytest.fail(f"expected a JSON body, got Content-Type {content_type!r}\n{describe(server, response)}")
    try:
        return response.json()
    except ValueError:
        pytest.fail(f"the body is not valid JSON\n{describe(server, response)}")


def error_body(client: Client, status: int, method: str, path: str, **kwargs) -> dict[str, Any]:
    """The JSON error body of a request that must fail with ``status``."""
    body = client.json(status, method, path, **kwargs)
    assert isinstance(body, dict), body
    return body


def assert_timestamp(value) -> None:
    assert isinstance(value, str), value
    assert TIMESTAMP.match(value), f"{value!r} is not a UTC timestamp with microseconds"


def assert_conversation(body, *, user_id: str) -> None:
    assert set(body) == CONVERSATION_FIELDS, body
    uuid.UUID(body["id"])
    assert body["user_id"] == user_id
    assert isinstance(body["title"], str)
    assert isinstance(body["message_count"], int)
    assert_timestamp(body["created_at"])
    assert_timestamp(body["updated_at"])


def assert_message(body, *, user_id: str, conversation_id: str) -> None:
    assert set(body) == MESSAGE_FIELDS, body
    uuid.UUID(body["id"])
    assert body["user_id"] == user_id
    assert body["conversation_id"] == conversation_id
    assert_timestamp(body["created_at"])


def assert_page(body, base_url: str) -> None:
    """The contract's page: next/previous are absolute URLs or null."""
    assert set(body) == PAGE_FIELDS, body
    assert isinstance(body["results"], list)
    for link in (body["next"], body["previous"]):
        assert link is None or link.startswith(f"{base_url}/"), f"{link!r} is not an absolute URL"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwt_payload(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    claims: dict[str, Any] = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return claims


# --- the server and its users ------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The server as ``make run`` starts it, on a database of its own, for this module."""
    workdir = tmp_path_factory.mktemp("live_http")
    admin_url = os.environ.get("DATABASE_URL")
    with contextlib.ExitStack() as stack:
        if admin_url and is_postgres_url(admin_url):
            database_url = stack.enter_context(postgres_database(admin_url))
        else:
            database_url = f"sqlite:///{workdir / 'db.sqlite3'}"
        try:
            live = start_server(workdir, database_url)
        except RuntimeError as exc:
            pytest.fail(f"the server did not start as the README says:\n{exc}")
        stack.callback(stop_server, live)
        yield live


@pytest.fixture(autouse=True)
def server_output(server):
    """Prints what the server wrote during the test; pytest shows it when the test fails."""
    start = server.log_path.stat().st_size
    yield
    with server.log_path.open("rb") as log:
        log.seek(start)
        print(f"--- server output during this test ---\n{log.read().decode(errors='replace')}")


def register(server: LiveServer, prefix: str) -> Client:
    """A new user, registered and logged in over HTTP."""
    anonymous = Client(server)
    username = f"{prefix}-{secrets.token_hex(4)}"
    password = f"Lantern-{secrets.token_hex(6)}-Orbit"
    created = anonymous.json(201, "POST", REGISTER, json={"username": username, "password": password})
    assert set(created) == {"id", "username"}, created
    assert created["username"] == username
    uuid.UUID(created["id"])
    tokens = anonymous.json(200, "POST", TOKEN, json={"username": username, "password": password})
    assert {"access", "refresh"} <= set(tokens), tokens
    client = Client(server, tokens["access"])
    client.user_id, client.username, client.password = created["id"], username, password
    client.refresh = tokens["refresh"]
    return client


@pytest.fixture(scope="module")
def alice(server):
    return register(server, "alice")


@pytest.fixture(scope="module")
def bob(server):
    return register(server, "bob")


@pytest.fixture
def anonymous(server):
    return Client(server)


# --- operations ------------------------------------------------------------------------


def test_health_and_readiness_answer_without_auth(anonymous):
    assert anonymous.json(200, "GET", "/healthz") == {"status": "ok"}
    anonymous.expect(200, "GET", "/readyz")


def test_schema_describes_the_contracts_paths(anonymous):
    anonymous.expect(200, "GET", "/api/schema/")
    # The schema's media type is application/vnd.oai.openapi+json, not application/json; it
    # is chosen by Accept (no ?format= switch anywhere in this API).
    accept = {"Accept": "application/vnd.oai.openapi+json"}
    schema = anonymous.expect(200, "GET", "/api/schema/", headers=accept).json()
    assert schema["openapi"].startswith("3."), schema["openapi"]
    for path in [
        REGISTER,
        TOKEN,
        REFRESH,
        ME,
        CONVERSATIONS,
        "/api/v1/conversations/{id}/",
        "/api/v1/conversations/{id}/history/",
        "/api/v1/conversations/{conversation_pk}/messages/",
        "/api/v1/conversations/{conversation_pk}/messages/{id}/",
    ]:
        assert path in schema["paths"], f"{path} is missing from the schema: {sorted(schema['paths'])}"
    schemes = schema.get("components", {}).get("securitySchemes", {})
    assert any(s.get("type") == "http" and s.get("scheme") == "bearer" for s in schemes.values()), (
        f"the schema documents no bearer authentication: {schemes}"
    )


class AssetLinks(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        if tag == "script" and attributes.get("src"):
            self.urls.append(attributes["src"])
        if tag == "link" and attributes.get("href"):
            self.urls.append(attributes["href"])


def test_swagger_ui_is_served_without_any_cdn(anonymous, server):
    response = anonymous.expect(200, "GET", "/api/docs/")
    assert response.headers["Content-Type"].startswith("text/html")
    links = AssetLinks()
    links.feed(response.text)
    assert any(url.endswith(".js") for url in links.urls), links.urls
    for url in links.urls:
        assert not urlsplit(url).netloc, f"external asset {url!r}"
        anonymous.expect(200, "GET", url)
    external = re.findall(r"""(?:src|href)\s*=\s*["']?(?:https?:)?//[^"'\s>]+""", response.text)
    assert not external, external


def test_every_response_carries_a_request_id(alice, anonymous, server):
    conversation = alice.json(201, "POST", CONVERSATIONS, json={})
    responses = [
        anonymous.request("GET", "/healthz"),
        anonymous.request("GET", "/readyz"),
        anonymous.request("GET", "/api/docs/"),
        anonymous.request("GET", CONVERSATIONS),  # 401
        anonymous.request("GET", "/api/v1/no-such-thing/"),  # 404
        alice.request("GET", CONVERSATIONS),
        alice.request("GET", conversation_url(conversation["id"])),
        alice.request("GET", conversation_url(MISSING_ID)),  # 404
        alice.request("PUT", conversation_url(conversation["id"]), json={}),  # 405
        alice.request("POST", CONVERSATIONS, data="{", headers={"Content-Type": "application/json"}),
        alice.request("POST", CONVERSATIONS, data="x", headers={"Content-Type": "text/plain"}),
        alice.request("DELETE", conversation_url(conversation["id"])),  # 204
    ]
    for response in responses:
        assert response.headers.get("X-Request-ID"), describe(server, response)
    assert len({r.headers.get("X-Request-ID") for r in responses}) == len(responses)

    for path in ["/healthz", CONVERSATIONS, "/api/v1/no-such-thing/"]:
        sent = f"live-{secrets.token_hex(8)}"
        response = alice.request("GET", path, headers={"X-Request-ID": sent})
        assert response.headers.get("X-Request-ID") == sent, describe(server, response)


# --- authentication ----------------------------------------------------------------------


def test_register_token_refresh_and_me(server, anonymous):
    carol = register(server, "carol")
    me = carol.json(200, "GET", ME)
    assert me == {"id": carol.user_id, "username": carol.username}

    taken = error_body(
        anonymous, 400, "POST", REGISTER, json={"username": carol.username, "password": carol.password}
    )
    assert "username" in taken, taken
    weak = error_body(
        anonymous, 400, "POST", REGISTER, json={"username": f"w-{carol.username}", "password": "1"}
    )
    assert "password" in weak, weak

    wrong = {"username": carol.username, "password": "not-the-password"}
    anonymous.expect(401, "POST", TOKEN, json=wrong)

    refreshed = anonymous.json(200, "POST", REFRESH, json={"refresh": carol.refresh})
    assert "access" in refreshed, refreshed
    again = Client(server, refreshed["access"])
    assert again.json(200, "GET", ME) == me
    anonymous.expect(401, "POST", REFRESH, json={"refresh": "garbage"})
    anonymous.expect(401, "POST", REFRESH, json={"refresh": carol.access})  # an access token is no refresh


def test_a_password_change_revokes_earlier_tokens_and_logout_its_refresh_token(server, anonymous):
    dave = register(server, "dave")
    new_password = f"Harbour-{secrets.token_hex(6)}-Comet"
    change = {"old_password": dave.password, "new_password": new_password}

    dave.expect(204, "POST", PASSWORD, json=change)

    dave.expect(401, "GET", ME)
    anonymous.expect(401, "POST", REFRESH, json={"refresh": dave.refresh})
    tokens = anonymous.json(200, "POST", TOKEN, json={"username": dave.username, "password": new_password})
    fresh = Client(server, tokens["access"])
    assert fresh.json(200, "GET", ME)["id"] == dave.user_id
    fresh.expect(204, "POST", LOGOUT, json={"refresh": tokens["refresh"]})
    anonymous.expect(401, "POST", REFRESH, json={"refresh": tokens["refresh"]})
    anonymous.expect(401, "POST", LOGOUT, json={"refresh": tokens["refresh"]})


def test_missing_or_bad_token_is_401_with_www_authenticate(alice, bob, anonymous, server):
    secret = server.env["DJANGO_SECRET_KEY"]
    now = datetime.now(UTC)

    def own_token(**claims) -> str:
        payload = {
            "token_type": "access",
            "user_id": alice.user_id,
            "jti": uuid.uuid4().hex,
            "iat": int(now.timestamp()),
            "exp": int((now + timedelta(minutes=5)).timestamp()),
            # The digest of alice's password hash that every token of hers carries (revocation).
            "hash_password": jwt_payload(alice.access)["hash_password"],
            **claims,
        }
        return jwt.encode(payload, secret, algorithm="HS256")

    # The crafted token is accepted while valid, so its expired twin is refused for expiry alone.
    assert Client(server, own_token()).json(200, "GET", ME)["id"] == alice.user_id

    header, _, signature = alice.access.split(".")
    tampered_payload = b64url(json.dumps({**jwt_payload(alice.access), "user_id": bob.user_id}).encode())
    unsigned = b64url(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    bad_authorizations = {
        "missing": None,
        "garbage": "Bearer garbage",
        "empty bearer": "Bearer ",
        "other scheme": f"Basic {b64url(b'alice:secret')}",
        "refresh token": f"Bearer {alice.refresh}",
        "tampered": f"Bearer {header}.{tampered_payload}.{signature}",
        "alg none": f"Bearer {unsigned}.{b64url(json.dumps(jwt_payload(alice.access)).encode())}.",
        "expired": f"Bearer {own_token(exp=int((now - timedelta(minutes=5)).timestamp()))}",
        "wrong key": f"Bearer {jwt.encode(jwt_payload(alice.access), 'another-key-' * 4, algorithm='HS256')}",
    }
    for case, authorization in bad_authorizations.items():
        headers = {} if authorization is None else {"Authorization": authorization}
        for path in [ME, CONVERSATIONS]:
            response = anonymous.request("GET", path, headers=headers)
            assert response.status_code == 401, f"{case}: {describe(server, response)}"
            assert response.headers.get("WWW-Authenticate", "").startswith("Bearer"), (
                f"{case}: {describe(server, response)}"
            )
            assert "detail" in body_of(server, response), f"{case}: {describe(server, response)}"


# --- conversations -----------------------------------------------------------------------


def test_conversation_create_retrieve_and_rename(alice, server):
    default = alice.json(201, "POST", CONVERSATIONS, json={})
    assert_conversation(default, user_id=alice.user_id)
    assert default["title"] == ""
    assert default["message_count"] == 0

    created = alice.json(201, "POST", CONVERSATIONS, json={"title": "Trip to Oslo"})
    assert_conversation(created, user_id=alice.user_id)
    assert created["title"] == "Trip to Oslo"
    assert alice.json(200, "GET", conversation_url(created["id"])) == created

    time.sleep(0.002)
    renamed = alice.json(200, "PATCH", conversation_url(created["id"]), json={"title": "Oslo, March"})
    assert_conversation(renamed, user_id=alice.user_id)
    assert renamed["title"] == "Oslo, March"
    assert renamed["created_at"] == created["created_at"]
    assert renamed["updated_at"] > created["updated_at"], "PATCH did not move updated_at"
    assert alice.json(200, "GET", conversation_url(created["id"])) == renamed

    too_long = error_body(alice, 400, "PATCH", conversation_url(created["id"]), json={"title": "x" * 201})
    assert "title" in too_long, too_long
    assert "title" in error_body(alice, 400, "POST", CONVERSATIONS, json={"title": "x" * 201})
    alice.expect(201, "POST", CONVERSATIONS, json={"title": "x" * 200})


def test_conversation_list_pages_orderings_and_filters(server):
    dave = register(server, "dave")
    first, second, third = (
        dave.json(201, "POST", CONVERSATIONS, json={"title": title}) for title in ["first", "second", "third"]
    )
    time.sleep(0.002)
    dave.expect(201, "POST", messages_url(first["id"]), json={"role": "user", "content": "bump"})

    def ids(query: str) -> list[str]:
        page = dave.json(200, "GET", f"{CONVERSATIONS}?{query}")
        assert_page(page, server.url)
        for row in page["results"]:
            assert_conversation(row, user_id=dave.user_id)
        return [row["id"] for row in page["results"]]

    by_activity = [first["id"], third["id"], second["id"]]
    assert ids("") == by_activity, "default order is not most recently updated first"
    assert ids("ordering=-updated_at") == by_activity
    assert ids("ordering=updated_at") == by_activity[::-1]
    assert ids("ordering=created_at") == [first["id"], second["id"], third["id"]]
    assert ids("ordering=-created_at") == [third["id"], second["id"], first["id"]]
    bumped = dave.json(200, "GET", conversation_url(first["id"]))
    assert bumped["message_count"] == 1
    assert bumped["updated_at"] > first["updated_at"], "appending a message did not move updated_at"

    assert ids(f"ordering=created_at&created_after={second['created_at']}") == [third["id"]]
    assert ids(f"ordering=created_at&created_before={second['created_at']}") == [first["id"]]
    assert ids(f"ordering=created_at&updated_after={third['updated_at']}") == [first["id"]]
    for query in ["ordering=title", "created_after=yesterday", "updated_before=2026-13-40"]:
        assert query.split("=")[0] in error_body(dave, 400, "GET", f"{CONVERSATIONS}?{query}")
    undecodable = dave.request("GET", f"{CONVERSATIONS}?cursor=not-a-cursor")
    assert undecodable.status_code in {400, 404}, describe(server, undecodable)
    body_of(server, undecodable)
    assert ids(f"ordering=created_at&user_id={dave.user_id}") == [first["id"], second["id"], third["id"]]

    for bad in ["0", "abc", "-1", "1.5", ""]:
        body = error_body(dave, 400, "GET", f"{CONVERSATIONS}?page_size={bad}")
        assert "page_size" in body, body

    # Eight clients at once, as the threaded server allows: quicker than one after another.
    with ThreadPoolExecutor(max_workers=8) as pool:
        created = pool.map(
            lambda n: dave.json(201, "POST", CONVERSATIONS, json={"title": f"bulk {n}"}), range(98)
        )
        assert len(list(created)) == 98
    page = dave.json(200, "GET", f"{CONVERSATIONS}?page_size=1000")
    assert_page(page, server.url)
    assert len(page["results"]) == 100, "page_size=1000 is not clamped to 100"
    assert page["previous"] is None
    assert page["next"] is not None
    rest = dave.json(200, "GET", page["next"])
    assert_page(rest, server.url)
    assert len(rest["results"]) == 1
    assert rest["next"] is None
    assert rest["previous"] is not None
    seen = [row["id"] for row in page["results"] + rest["results"]]
    assert len(set(seen)) == 101
    assert len(dave.json(200, "GET", CONVERSATIONS)["results"]) == 20, "default page size is not 20"


# --- messages ----------------------------------------------------------------------------


def test_messages_append_list_walk_detail_and_history(alice, server):
    conversation = alice.json(201, "POST", CONVERSATIONS, json={"title": "Weather"})
    cid = conversation["id"]
    bodies: list[dict[str, Any]] = [
        {"role": "user", "content": "What's the weather in Oslo?"},
        {"role": "assistant", "content": "Let me check."},
        {"role": "user", "content": "  Please hurry \n"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [WEATHER_CALL],
            "tool_results": [WEATHER_RESULT],
        },
        {"role": "assistant", "content": "It is 4 °C and raining in Oslo. 🌧"},
    ]
    posted = []
    for body in bodies:
        message = alice.json(201, "POST", messages_url(cid), json=body)
        assert_message(message, user_id=alice.user_id, conversation_id=cid)
        assert message["role"] == body["role"]
        assert message["content"] == body["content"], "content is not stored exactly as sent"
        assert message["tool_calls"] == body.get("tool_calls")
        posted.append(message)
    stamps = [m["created_at"] for m in posted]
    assert stamps == sorted(stamps), "created_at decreased in append order"

    after = alice.json(200, "GET", conversation_url(cid))
    assert after["message_count"] == 5
    assert after["updated_at"] >= posted[-1]["created_at"]

    page = alice.json(200, "GET", messages_url(cid))
    assert_page(page, server.url)
    assert page["results"] == posted, "messages are not listed oldest first"
    assert (page["next"], page["previous"]) == (None, None)
    newest_first = alice.json(200, "GET", f"{messages_url(cid)}?ordering=-created_at")["results"]
    assert newest_first == posted[::-1]
    assistant = alice.json(200, "GET", f"{messages_url(cid)}?role=assistant")["results"]
    assert assistant == [posted[1], posted[3], posted[4]]
    assert "role" in error_body(alice, 400, "GET", f"{messages_url(cid)}?role=system")
    for bad in ["0", "abc"]:
        assert "page_size" in error_body(alice, 400, "GET", f"{messages_url(cid)}?page_size={bad}")

    walked, pages, url = [], [], f"{messages_url(cid)}?page_size=2"
    while url is not None:
        page = alice.json(200, "GET", url)
        assert_page(page, server.url)
        assert len(page["results"]) <= 2
        pages.append(page)
        walked.extend(page["results"])
        url = page["next"]
        if url is not None:
            assert url.startswith(f"{server.url}{messages_url(cid)}?"), url
            assert parse_qs(urlsplit(url).query).get("page_size") == ["2"], url
        assert len(pages) <= 5, "the cursor walk does not end"
    assert walked == posted
    assert [len(p["results"]) for p in pages] == [2, 2, 1]
    assert pages[0]["previous"] is None
    back = alice.json(200, "GET", pages[1]["previous"])
    assert back["results"] == posted[:2], "previous of the second page is not the first page"

    for message in posted:
        assert alice.json(200, "GET", message_url(cid, message["id"])) == message

    history = alice.json(200, "GET", f"{history_url(cid)}?limit=2")
    assert history == {
        "conversation_id": cid,
        "format": "openai",
        "tokens": posted[3]["token_count"] + posted[4]["token_count"],
        "messages": [
            {"role": "assistant", "content": None, "tool_calls": [WEATHER_CALL]},
            {"role": "tool", "tool_call_id": WEATHER_CALL["id"], "content": WEATHER_RESULT["content"]},
            {"role": "assistant", "content": "It is 4 °C and raining in Oslo. 🌧"},
        ],
    }
    full = alice.json(200, "GET", history_url(cid))
    contents = [b["content"] for b in bodies]
    assert [m["content"] for m in full["messages"]] == [*contents[:4], WEATHER_RESULT["content"], contents[4]]
    assert [set(m) for m in full["messages"]] == [{"role", "content"}] * 3 + [
        {"role", "content", "tool_calls"},
        {"role", "tool_call_id", "content"},
        {"role", "content"},
    ]
    assert alice.json(200, "GET", f"{history_url(cid)}?limit=1000") == full, "limit is not clamped"
    for bad in ["0", "abc", "-3"]:
        assert "limit" in error_body(alice, 400, "GET", f"{history_url(cid)}?limit={bad}")


def test_message_validation_names_the_field(alice):
    cid = alice.json(201, "POST", CONVERSATIONS, json={})["id"]
    cases = [
        ({"role": "system", "content": "hi"}, "role"),
        ({"content": "hi"}, "role"),
        ({"role": "user", "content": ""}, "content"),
        ({"role": "user", "content": None}, "content"),
        ({"role": "assistant", "content": None}, "content"),
        ({"role": "user", "content": 42}, "content"),
        ({"role": "user", "content": "x" * 10_001}, "content"),
        ({"role": "user", "content": "a\u0000b"}, "content"),
        ({"role": "user", "content": "hi", "tool_calls": [WEATHER_CALL]}, "tool_calls"),
        ({"role": "assistant", "content": "hi", "tool_calls": []}, "tool_calls"),
        ({"role": "assistant", "content": "hi", "tool_calls": [{"id": "x"}]}, "tool_calls"),
    ]
    for body, field in cases:
        error = error_body(alice, 400, "POST", messages_url(cid), json=body)
        assert field in error, f"{body!r}: {error}"
    unpaired = '{"role": "user", "content": "a\\ud800b"}'
    error = error_body(
        alice, 400, "POST", messages_url(cid), data=unpaired, headers={"Content-Type": "application/json"}
    )
    assert "content" in error, error
    longest = alice.json(201, "POST", messages_url(cid), json={"role": "user", "content": "é" * 10_000})
    assert longest["content"] == "é" * 10_000
    ignored = alice.json(201, "POST", messages_url(cid), json={"role": "user", "content": "x", "mood": "ok"})
    assert "mood" not in ignored
    assert alice.json(200, "GET", conversation_url(cid))["message_count"] == 2


def test_idempotent_append_replays_and_refuses_another_body(alice, server):
    cid = alice.json(201, "POST", CONVERSATIONS, json={})["id"]
    other_cid = alice.json(201, "POST", CONVERSATIONS, json={})["id"]
    key = {"Idempotency-Key": f"live-{uuid.uuid4()}"}
    body = {"role": "user", "content": "Book a table for two."}

    first = alice.expect(201, "POST", messages_url(cid), json=body, headers=key)
    assert first.headers.get("Idempotent-Replayed") != "true"
    replay = alice.expect(201, "POST", messages_url(cid), json=body, headers=key)
    assert replay.headers.get("Idempotent-Replayed") == "true", describe(server, replay)
    assert body_of(server, replay) == body_of(server, first)

    changed = {**body, "content": "Book a table for three."}
    assert "detail" in error_body(alice, 422, "POST", messages_url(cid), json=changed, headers=key)
    assert "detail" in error_body(alice, 422, "POST", messages_url(other_cid), json=body, headers=key)
    assert [m["id"] for m in alice.json(200, "GET", messages_url(cid))["results"]] == [first.json()["id"]]
    assert alice.json(200, "GET", messages_url(other_cid))["results"] == []

    for bad_key in ["", "k" * 256]:
        response = alice.request("POST", messages_url(cid), json=body, headers={"Idempotency-Key": bad_key})
        check_status(server, response, 400)
    assert len(alice.json(200, "GET", messages_url(cid))["results"]) == 1


# --- ownership and errors ----------------------------------------------------------------


def test_other_users_objects_are_the_same_404_as_missing_and_malformed_ids(alice, bob, server):
    conversation = alice.json(201, "POST", CONVERSATIONS, json={"title": "private"})
    cid = conversation["id"]
    message = alice.json(201, "POST", messages_url(cid), json={"role": "user", "content": "secret"})
    own_cid = bob.json(201, "POST", CONVERSATIONS, json={})["id"]
    append = {"role": "user", "content": "intrusion"}

    bodies = {}
    for label, target in [("another user's", cid), ("missing", MISSING_ID), ("malformed", "not-a-uuid")]:
        requests_to_make = [
            ("GET", conversation_url(target), {}),
            ("PATCH", conversation_url(target), {"json": {"title": "mine now"}}),
            ("DELETE", conversation_url(target), {}),
            ("GET", messages_url(target), {}),
            ("POST", messages_url(target), {"json": append}),
            ("GET", history_url(target), {}),
            ("GET", message_url(target, message["id"] if target == cid else MISSING_ID), {}),
        ]
        for method, path, kwargs in requests_to_make:
            bodies[f"{label}: {method} {path}"] = error_body(bob, 404, method, path, **kwargs)
    for label, message_id in [
        ("another user's message", message["id"]),
        ("missing message", MISSING_ID),
        ("malformed message id", "not-a-uuid"),
    ]:
        path = message_url(own_cid, message_id)
        bodies[f"{label}: GET {path}"] = error_body(bob, 404, "GET", path)
    distinct = {json.dumps(b, sort_keys=True) for b in bodies.values()}
    assert len(distinct) == 1, "404 bodies differ:\n" + "\n".join(f"{k}: {v}" for k, v in bodies.items())

    listed = [c["id"] for c in bob.json(200, "GET", f"{CONVERSATIONS}?page_size=100")["results"]]
    assert cid not in listed
    after = alice.json(200, "GET", conversation_url(cid))
    assert (after["title"], after["message_count"]) == ("private", 1)
    assert alice.json(200, "GET", messages_url(cid))["results"] == [message]


def test_someone_elses_user_id_is_403_before_lookup_and_validation(alice, bob, server):
    own_cid = bob.json(201, "POST", CONVERSATIONS, json={})["id"]
    for user_id in [alice.user_id, "not-a-uuid", MISSING_ID, 7]:
        cases = [
            ("POST", CONVERSATIONS, {"json": {"title": "t", "user_id": user_id}}),
            ("PATCH", conversation_url(own_cid), {"json": {"title": "t", "user_id": user_id}}),
            ("POST", messages_url(own_cid), {"json": {"role": "user", "content": "x", "user_id": user_id}}),
            ("POST", messages_url(own_cid), {"json": {"role": "nobody", "user_id": user_id}}),
            (
                "POST",
                messages_url(MISSING_ID),
                {"json": {"role": "user", "content": "x", "user_id": user_id}},
            ),
            ("GET", f"{CONVERSATIONS}?user_id={user_id}", {}),
            ("GET", f"{messages_url(own_cid)}?user_id={user_id}", {}),
        ]
        for method, path, kwargs in cases:
            assert "detail" in error_body(bob, 403, method, path, **kwargs)
    own = bob.json(201, "POST", CONVERSATIONS, json={"title": "mine", "user_id": bob.user_id})
    assert own["user_id"] == bob.user_id
    message = bob.json(
        201, "POST", messages_url(own["id"]), json={"role": "user", "content": "x", "user_id": bob.user_id}
    )
    assert message["user_id"] == bob.user_id
    assert bob.json(200, "GET", messages_url(own_cid))["results"] == []


def test_malformed_json_wrong_content_type_and_unknown_paths_are_json_errors(alice, anonymous, server):
    json_type = {"Content-Type": "application/json"}
    for path in [CONVERSATIONS, REGISTER]:
        assert "detail" in error_body(alice, 400, "POST", path, data='{"title": ', headers=json_type)
    cid = alice.json(201, "POST", CONVERSATIONS, json={})["id"]
    assert "detail" in error_body(alice, 400, "POST", messages_url(cid), data="[1, 2", headers=json_type)

    plain = {"Content-Type": "text/plain"}
    assert "detail" in error_body(alice, 415, "POST", CONVERSATIONS, data="hello", headers=plain)
    assert "detail" in error_body(alice, 415, "POST", messages_url(cid), data="hello", headers=plain)
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    assert "detail" in error_body(alice, 415, "POST", CONVERSATIONS, data="title=x", headers=form)

    for client in [alice, anonymous]:
        for method, path in [
            ("GET", "/api/v1/no-such-thing/"),
            ("POST", "/api/v1/no-such-thing/"),
            ("GET", "/api/nothing"),
            ("GET", f"{conversation_url(cid)}no-such-action/"),
        ]:
            assert "detail" in error_body(client, 404, method, path)
    assert "detail" in error_body(alice, 405, "PUT", conversation_url(cid), json={"title": "x"})
    assert "detail" in error_body(alice, 405, "DELETE", CONVERSATIONS)


def test_body_over_the_limit_is_413(alice, server):
    cid = alice.json(201, "POST", CONVERSATIONS, json={})["id"]
    oversized = json.dumps({"role": "user", "content": "x" * (1024 * 1024)})
    response = alice.request(
        "POST", messages_url(cid), data=oversized, headers={"Content-Type": "application/json"}
    )
    check_status(server, response, 413)
    assert "detail" in body_of(server, response)


def test_delete_is_204_then_404(alice, server):
    cid = alice.json(201, "POST", CONVERSATIONS, json={"title": "doomed"})["id"]
    mid = alice.json(201, "POST", messages_url(cid), json={"role": "user", "content": "bye"})["id"]
    response = alice.expect(204, "DELETE", conversation_url(cid))
    assert response.content == b""
    for method, path in [
        ("GET", conversation_url(cid)),
        ("DELETE", conversation_url(cid)),
        ("GET", messages_url(cid)),
        ("GET", message_url(cid, mid)),
        ("GET", history_url(cid)),
    ]:
        error_body(alice, 404, method, path)
    listed = [c["id"] for c in alice.json(200, "GET", f"{CONVERSATIONS}?page_size=100")["results"]]
    assert cid not in listed


def test_conditional_get_answers_304_until_the_conversation_changes(alice, server):
    cid = alice.json(201, "POST", CONVERSATIONS, json={})["id"]
    alice.expect(201, "POST", messages_url(cid), json={"role": "user", "content": "hi"})
    for path in [conversation_url(cid), messages_url(cid), history_url(cid)]:
        etag = alice.expect(200, "GET", path).headers.get("ETag")
        assert etag, f"GET {path} carries no ETag"
        unchanged = alice.expect(304, "GET", path, headers={"If-None-Match": etag})
        assert unchanged.content == b""
    etags = {
        path: alice.request("GET", path).headers["ETag"] for path in [conversation_url(cid), history_url(cid)]
    }
    alice.expect(201, "POST", messages_url(cid), json={"role": "assistant", "content": "hello"})
    for path, etag in etags.items():
        alice.expect(200, "GET", path, headers={"If-None-Match": etag})


def test_metrics_are_open_to_loopback_clients(anonymous):
    response = anonymous.expect(200, "GET", "/metrics")
    assert response.headers["Content-Type"].startswith("text/plain")
    assert "# TYPE" in response.text
