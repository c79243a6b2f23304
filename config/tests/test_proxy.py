"""The deployment's front: Debian's nginx with deploy/nginx's configuration in front of gunicorn
with deploy/gunicorn_conf.py and the production settings, as docker-compose.yml runs them.

Over real sockets on loopback: slow clients wait in nginx, not in gunicorn's threads; no HEAD
answer carries a body; /metrics is not served through the proxy, and the app judges the client
the proxy names; what nginx refuses itself is answered in JSON.
"""

import contextlib
import json
import re
import secrets
import socket
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
import requests

from conftest import require_tool
from conversations.tests.live_server import (
    NGINX,
    LiveServer,
    free_port,
    gunicorn_on_this_runs_database,
    nginx_in_front_of,
)


@pytest.fixture(autouse=True)
def _nginx_installed():
    require_tool(NGINX, "nginx-light")


SLOW_CLIENTS = 50
METRICS_TOKEN = secrets.token_urlsafe(24)
SCRAPERS = "198.51.100.0/24"
# As compose runs the app (docker-compose.yml), on plain HTTP.
APP_ENV = {
    "GUNICORN_CMD_ARGS": "-c deploy/gunicorn_conf.py",
    "DJANGO_SETTINGS_MODULE": "config.settings.production",
    "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
    "DJANGO_SECURE_SSL_REDIRECT": "false",
    "API_TRUSTED_PROXIES": "1",
    "METRICS_ALLOWED_NETWORKS": SCRAPERS,
    "METRICS_TOKEN": METRICS_TOKEN,
}


@pytest.fixture(scope="module")
def app(tmp_path_factory) -> Iterator[LiveServer]:
    """gunicorn as the container runs it: 2 workers of 4 threads, gthread."""
    with gunicorn_on_this_runs_database(
        tmp_path_factory.mktemp("proxy"), workers=2, threads=4, extra_env=APP_ENV
    ) as server:
        assert "Using worker: gthread" in server.log(), server.log_tail()
        yield server


@pytest.fixture(scope="module")
def proxy(app) -> Iterator[LiveServer]:
    with nginx_in_front_of(app.url) as nginx:
        yield nginx


def address(server: LiveServer) -> tuple[str, int]:
    parts = urlsplit(server.url)
    return str(parts.hostname), int(parts.port or 80)


def raw_request(method: str, path: str, headers: dict[str, str] | None = None) -> bytes:
    fields = [f"{name}: {value}" for name, value in (headers or {}).items()]
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", *fields]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def read_until(sock: socket.socket, marker: bytes) -> bytes:
    received = b""
    while marker not in received:
        chunk = sock.recv(65536)
        if not chunk:
            break
        received += chunk
    return received


def read_to_end(sock: socket.socket) -> bytes:
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
    return received


def header(head: bytes, name: str) -> str | None:
    for line in head.decode("latin-1").split("\r\n")[1:]:
        key, _, value = line.partition(":")
        if key.strip().lower() == name.lower():
            return value.strip()
    return None


def wait_until_healthy(server: LiveServer, seconds: float = 15) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with contextlib.suppress(requests.RequestException):
            if requests.get(f"{server.url}/healthz", timeout=1).status_code == 200:
                return
        time.sleep(0.2)
    raise AssertionError(f"{server.url}/healthz did not recover:\n{server.log_tail()}")


# --- finding 2: slow clients ---------------------------------------------------------------


def hold_slow_clients(stack: contextlib.ExitStack, server: LiveServer, count: int) -> list[socket.socket]:
    """``count`` connections that send half a request header and then nothing, closed when
    ``stack`` closes; returned once the server has had time to take them up."""
    sockets = [
        stack.enter_context(socket.create_connection(address(server), timeout=5)) for _ in range(count)
    ]
    for sock in sockets:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Still-Typing: ")
    time.sleep(0.3)
    return sockets


def healthz_seconds(server: LiveServer, timeout: float = 1.0) -> float | None:
    """How long GET /healthz took to answer 200, or None when it did not within ``timeout``."""
    started = time.monotonic()
    try:
        response = requests.get(f"{server.url}/healthz", timeout=timeout)
    except requests.Timeout:
        return None
    assert response.status_code == 200, response.text
    return time.monotonic() - started


def test_through_nginx_healthz_answers_within_a_second_while_50_slow_clients_are_held(app, proxy):
    with contextlib.ExitStack() as held:
        hold_slow_clients(held, proxy, SLOW_CLIENTS)
        took = healthz_seconds(proxy)

    assert took is not None, proxy.log_tail()
    assert took < 1.0


def test_without_nginx_as_many_slow_clients_stall_gunicorn(app):
    """Why nginx is there: each half-sent header holds one of gunicorn's 8 threads until the
    client goes. Which of the 2 workers takes a connection is up to them, so the clients come
    ten at a time, with /healthz tried after each ten; it goes unanswered before all 50 are in."""
    took: float | None = 0.0
    try:
        with contextlib.ExitStack() as held:
            for _ in range(SLOW_CLIENTS // 10):
                hold_slow_clients(held, app, 10)
                took = healthz_seconds(app)
                if took is None:
                    break
    finally:
        wait_until_healthy(app)

    assert took is None


def test_nginx_drops_a_client_that_does_not_finish_its_header(proxy):
    with contextlib.ExitStack() as held:
        (sock,) = hold_slow_clients(held, proxy, 1)
        sock.settimeout(10)
        started = time.monotonic()
        # reset_timedout_connection: nginx resets it rather than closing it.
        with pytest.raises(ConnectionResetError):
            read_to_end(sock)

    assert time.monotonic() - started < 8  # client_header_timeout 5s


# --- finding 6: HEAD answers carry no body -------------------------------------------------


def head_then_get(server: LiveServer, path: str, headers: dict[str, str]) -> tuple[bytes, bytes]:
    """HEAD then GET of ``path`` on one kept-alive connection: the HEAD answer's header block,
    and every byte that followed it."""
    with socket.create_connection(address(server), timeout=5) as sock:
        sock.sendall(raw_request("HEAD", path, headers))
        received = read_until(sock, b"\r\n\r\n")
        sock.sendall(raw_request("GET", path, {**headers, "Connection": "close"}))
        received += read_to_end(sock)
    head, _, rest = received.partition(b"\r\n\r\n")
    return head, rest


@pytest.fixture(scope="module")
def access_token(app) -> str:
    credentials = {"username": f"head-{secrets.token_hex(4)}", "password": f"Lantern-{secrets.token_hex(6)}"}
    registered = requests.post(f"{app.url}/api/v1/auth/register/", json=credentials, timeout=10)
    assert registered.status_code == 201, registered.text
    tokens = requests.post(f"{app.url}/api/v1/auth/token/", json=credentials, timeout=10)
    assert tokens.status_code == 200, tokens.text
    return str(tokens.json()["access"])


@pytest.mark.parametrize(
    ("path", "authenticated", "status"),
    [
        ("/healthz", False, 200),
        ("/readyz", False, 200),
        ("/api/schema/", False, 200),
        ("/api/v1/auth/me/", True, 200),
        ("/api/v1/auth/me/", False, 401),
        ("/api/v1/no-such-endpoint/", False, 404),
    ],
)
def test_head_answers_end_at_their_headers_and_keep_the_gets_length(
    app, access_token, path, authenticated, status
):
    headers = {"Authorization": f"Bearer {access_token}"} if authenticated else {}

    head, rest = head_then_get(app, path, headers)

    get_head, _, get_body = rest.partition(b"\r\n\r\n")
    assert rest.startswith(b"HTTP/1.1 "), rest[:200]
    assert head.split(b" ")[1] == get_head.split(b" ")[1] == str(status).encode()
    assert header(head, "Content-Length") == header(get_head, "Content-Length") == str(len(get_body))


# --- finding 7: /metrics -------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/metrics", "/metrics/", "/%6detrics", "//metrics", "/metrics?x=1"])
def test_nginx_does_not_serve_metrics_even_with_the_token(proxy, path):
    response = requests.get(
        f"{proxy.url}{path}", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}, timeout=5
    )

    assert response.status_code == 404
    assert response.headers["Content-Type"] == "application/json"
    assert response.json() == {"detail": "Not found."}


@pytest.mark.parametrize(
    ("forwarded_for", "token", "status"),
    [
        (None, None, 403),  # loopback alone is not enough in production
        ("203.0.113.9", None, 403),
        ("127.0.0.1", None, 403),
        # A forwarded address is the caller's own word (nginx does not pass /metrics on): one
        # in METRICS_ALLOWED_NETWORKS does not let a loopback peer in.
        ("198.51.100.7", None, 403),
        ("203.0.113.9", METRICS_TOKEN, 200),
    ],
)
def test_the_app_judges_the_scrapers_own_address_never_loopback_alone(app, forwarded_for, token, status):
    headers = {}
    if forwarded_for:
        headers["X-Forwarded-For"] = forwarded_for
    if token:
        headers["Authorization"] = f"Bearer {token}"

    response = requests.get(f"{app.url}/metrics", headers=headers, timeout=5)

    assert response.status_code == status, response.text[:300]
    assert ("django_http_requests" in response.text) == (status == 200)


# --- finding 11c: what nginx refuses is JSON -----------------------------------------------


def assert_json_refusal(response: requests.Response, status: int) -> None:
    assert response.status_code == status, response.text[:300]
    assert response.headers["Content-Type"] == "application/json"
    assert response.headers["X-Request-ID"]
    assert set(response.json()) == {"detail"}


def test_an_over_long_uri_is_a_json_414(proxy):
    assert_json_refusal(requests.get(f"{proxy.url}/healthz?q={'x' * 5000}", timeout=5), 414)


def test_an_over_large_header_is_a_json_431(proxy):
    response = requests.get(f"{proxy.url}/healthz", headers={"X-Large": "x" * 5000}, timeout=5)

    assert_json_refusal(response, 431)


def test_a_malformed_request_is_a_json_400(proxy):
    with socket.create_connection(address(proxy), timeout=5) as sock:
        sock.sendall(b"NOT AN HTTP REQUEST\r\n\r\n")
        head, _, body = read_to_end(sock).partition(b"\r\n\r\n")

    assert head.startswith(b"HTTP/1.1 400 "), head
    assert header(head, "Content-Type") == "application/json"
    assert set(json.loads(body)) == {"detail"}


def test_an_over_large_body_is_a_json_413(proxy):
    response = requests.post(f"{proxy.url}/api/v1/auth/token/", data=b"x" * (1024 * 1024 + 1), timeout=5)

    assert_json_refusal(response, 413)


def test_an_app_that_does_not_answer_is_a_json_502():
    with nginx_in_front_of(f"http://127.0.0.1:{free_port()}", ready_status=502) as nginx:
        response = requests.get(f"{nginx.url}/api/v1/auth/me/", timeout=5)

    assert_json_refusal(response, 502)
    assert response.json() == {"detail": "The service is unavailable."}


def test_what_nginx_lets_through_gunicorn_accepts(proxy):
    """Limits below gunicorn's: 800 small header fields (gunicorn's default allows 100), a
    4,000-byte one, a 4,000-byte URI."""
    many = {f"X-F-{i}": "1" for i in range(800)}
    big = {"X-Big": "x" * 4000}

    for headers, path in [(many, "/healthz"), (big, "/healthz"), ({}, f"/healthz?q={'x' * 4000}")]:
        response = requests.get(f"{proxy.url}{path}", headers=headers, timeout=5)
        assert response.status_code == 200, response.text[:300]
        assert response.json() == {"status": "ok"}


def test_nginx_passes_a_sane_request_id_and_replaces_any_other_with_its_own(proxy):
    kept = requests.get(f"{proxy.url}/healthz", headers={"X-Request-ID": "trace-1234"}, timeout=5)
    replaced = requests.get(f"{proxy.url}/healthz", headers={"X-Request-ID": "not sane"}, timeout=5)

    assert kept.headers["X-Request-ID"] == "trace-1234"
    assert re.fullmatch(r"[0-9a-f]{32}", replaced.headers["X-Request-ID"])


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_through_nginx_the_root_redirects_to_the_docs(proxy, method):
    response = requests.request(method, f"{proxy.url}/", allow_redirects=False, timeout=5)

    assert response.status_code == 302
    assert response.headers["Location"] == "/api/docs/"
    docs = requests.get(f"{proxy.url}/", timeout=5)
    assert docs.status_code == 200
    assert docs.url == f"{proxy.url}/api/docs/"
    assert docs.headers["Content-Type"].startswith("text/html")
