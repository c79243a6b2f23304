# ruff: noqa: S101 (assert is how pytest tests speak; pyproject exempts only */tests/*)
"""End to end in a real browser: Debian's Chromium, headless, driven by Playwright.

The server runs as the container runs it (gunicorn's gthread workers on ``config.wsgi``, with
``deploy/gunicorn_conf.py``, two workers of four threads sharing their metrics), with DEBUG on
for the browsable API and its session login, on a database of its own (SQLite, or a fresh
PostgreSQL database served as the ``DATABASE_APP_URL`` role under ``scripts/with-postgres``).

A person logs in to the browsable API, starts a conversation and appends a message through its
forms, sees both listed, and opens the Swagger UI, which must render the schema with no request
leaving the machine. The browser reaches the server under a made-up host name that it maps to
127.0.0.1 itself (``--host-resolver-rules``), as it would a real deployment's name: pages that
treat ``localhost`` or ``127.0.0.1`` specially (Swagger UI skips its online-validator badge
there) behave as in production. Every request the pages make is recorded and must have been
answered from 127.0.0.1; anything else is blocked and fails the test. Screenshots of each step
are written to ``e2e/artifacts/``.

Playwright's Python package brings its driver inside the wheel and launches the system's
Chromium (``executable_path``); nothing is downloaded. Without ``/usr/bin/chromium`` the tests
skip (``e2e/install-tools`` installs it from Debian's packages).
"""

import contextlib
import json
import os
import re
import secrets
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests
from playwright.sync_api import BrowserContext, Page, Request, Route, expect, sync_playwright
from prometheus_client.parser import text_string_to_metric_families

from conftest import require_tool
from conversations.tests.live_server import (
    PROJECT_DIR,
    LiveServer,
    is_postgres_url,
    postgres_database,
    same_database,
    start_gunicorn,
    stop_server,
)

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture(autouse=True)
def _chromium_installed() -> None:
    require_tool(CHROMIUM, "chromium")


ARTIFACTS = PROJECT_DIR / "e2e" / "artifacts"
# A host name only this browser knows: it maps it to the server's loopback address itself.
SITE_HOST = "chat.e2e.test"
LOOPBACK = {"127.0.0.1", "::1"}
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    f"--host-resolver-rules=MAP {SITE_HOST} 127.0.0.1",
]
TIMEOUT_MS = 20_000
UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    workdir = tmp_path_factory.mktemp("e2e")
    admin_url = os.environ.get("DATABASE_URL")
    with contextlib.ExitStack() as stack:
        app_url = None
        if admin_url and is_postgres_url(admin_url):
            database_url = stack.enter_context(postgres_database(admin_url))
            serving = os.environ.get("DATABASE_APP_URL")
            app_url = same_database(serving, database_url) if serving else None
        else:
            database_url = f"sqlite:///{workdir / 'db.sqlite3'}"
        live = start_gunicorn(
            workdir,
            database_url,
            app_database_url=app_url,
            # The container's defaults (WEB_WORKERS, WEB_THREADS); the worker class is the
            # settings' (gthread), as deploy/start.sh leaves it.
            workers=2,
            threads=4,
            extra_env={
                # The container's gunicorn settings and hooks (metrics of several workers).
                "GUNICORN_CMD_ARGS": "-c deploy/gunicorn_conf.py",
                "DJANGO_DEBUG": "true",
                "DJANGO_ALLOWED_HOSTS": f"127.0.0.1,localhost,{SITE_HOST}",
            },
        )
        stack.callback(stop_server, live)
        assert "Using worker: gthread" in live.log(), live.log_tail()
        yield live


@dataclass
class Traffic:
    """Every request the browser made, and those it was not allowed to make."""

    urls: list[str] = field(default_factory=list)
    answered_from: dict[str, str] = field(default_factory=dict)
    blocked: list[str] = field(default_factory=list)

    def assert_stayed_on_this_machine(self) -> None:
        assert self.urls, "the browser made no request at all"
        assert self.blocked == [], f"requests to other hosts: {self.blocked}"
        for url in self.urls:
            parts = urlsplit(url)
            assert parts.scheme in {"http", "data", "blob", "about"}, url
            if parts.scheme == "http":
                assert parts.hostname in {SITE_HOST, "127.0.0.1", "localhost"}, url
        elsewhere = {url: address for url, address in self.answered_from.items() if address not in LOOPBACK}
        assert elsewhere == {}, f"answered from outside this machine: {elsewhere}"


def is_local(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme in {"data", "blob", "about"} or parts.hostname in {
        SITE_HOST,
        "127.0.0.1",
        "localhost",
    }


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[tuple[BrowserContext, Traffic]]:
    traffic = Traffic()
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),  # a fresh profile for every test
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_FLAGS,
            viewport={"width": 1280, "height": 900},
        )
        context.set_default_timeout(TIMEOUT_MS)

        def on_request(request: Request) -> None:
            traffic.urls.append(request.url)

        def on_finished(request: Request) -> None:
            response = request.response()
            address = response.server_addr() if response is not None else None
            if address is not None:
                traffic.answered_from[request.url] = address["ipAddress"].strip("[]")

        def guard(route: Route) -> None:
            # Nothing leaves the machine, even if a page tries: blocked, recorded, failed.
            if is_local(route.request.url):
                route.continue_()
            else:
                traffic.blocked.append(route.request.url)
                route.abort("blockedbyclient")

        context.on("request", on_request)
        context.on("requestfinished", on_finished)
        context.route("**/*", guard)
        try:
            yield context, traffic
        finally:
            context.close()


def screenshot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def site(server: LiveServer) -> str:
    return server.url.replace("127.0.0.1", SITE_HOST)


def register(server: LiveServer) -> tuple[str, str]:
    """A new user, through the contract's registration endpoint."""
    username = f"e2e-{secrets.token_hex(4)}"
    password = f"Lantern-{secrets.token_hex(6)}-Orbit"
    response = requests.post(
        f"{server.url}/api/v1/auth/register/", json={"username": username, "password": password}, timeout=15
    )
    assert response.status_code == 201, response.text
    return username, password


def post_raw_json(page: Page, body: dict[str, str]) -> str:
    """Submit the browsable API's "Raw data" form (the only one it offers: the API parses JSON
    only) with ``body``; returns the id of the object created."""
    form = page.locator("#post-generic-content-form form")
    expect(form.locator("select[name=_content_type]")).to_have_value("application/json")
    form.locator("textarea[name=_content]").fill(json.dumps(body))
    form.get_by_role("button", name="POST").click()
    response_info = page.locator(".response-info")
    expect(response_info).to_contain_text("HTTP 201 Created")
    match = re.search(rf'"id": "({UUID})"', response_info.inner_text())
    assert match, response_info.inner_text()
    return match.group(1)


def scrape(server: LiveServer) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    response = requests.get(f"{server.url}/metrics", timeout=15)
    assert response.status_code == 200, response.text
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def test_log_in_create_a_conversation_and_a_message_and_see_them_listed(
    server: LiveServer, browser: tuple[BrowserContext, Traffic]
) -> None:
    context, traffic = browser
    username, password = register(server)
    title = f"Trip to Oslo {secrets.token_hex(3)}"
    content = f"Which museums open on Mondays? {secrets.token_hex(8)}"
    base = site(server)
    log_start = len(server.log())
    page = context.new_page()

    page.goto(f"{base}/api-auth/login/?next=/api/v1/conversations/")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    screenshot(page, "01-login")
    page.click("#submit-id-submit")
    expect(page).to_have_url(f"{base}/api/v1/conversations/")
    expect(page.locator(".navbar")).to_contain_text(username)
    screenshot(page, "02-conversations-empty")

    conversation_id = post_raw_json(page, {"title": title})
    screenshot(page, "03-conversation-created")

    page.goto(f"{base}/api/v1/conversations/{conversation_id}/messages/")
    message_id = post_raw_json(page, {"role": "user", "content": content})
    screenshot(page, "04-message-appended")

    page.goto(f"{base}/api/v1/conversations/")
    listing = page.locator(".response-info")
    expect(listing).to_contain_text(conversation_id)
    expect(listing).to_contain_text(title)
    expect(listing).to_contain_text('"message_count": 1')
    screenshot(page, "05-conversations-listed")

    page.goto(f"{base}/api/v1/conversations/{conversation_id}/messages/")
    messages = page.locator(".response-info")
    expect(messages).to_contain_text(message_id)
    expect(messages).to_contain_text(content)
    screenshot(page, "06-messages-listed")

    traffic.assert_stayed_on_this_machine()

    # The operator's side of the same session: audit lines with the user, never the content.
    log = server.log()[log_start:]
    audit = [json.loads(line) for line in log.splitlines() if line.startswith('{"time"')]
    actions = {(line.get("action"), line.get("outcome")) for line in audit if line["logger"] == "audit"}
    assert {("conversation.create", "ok"), ("message.append", "ok"), ("message.list", "ok")} <= actions
    appended = next(line for line in audit if line.get("action") == "message.append")
    assert (appended["conversation_id"], appended["message_id"]) == (conversation_id, message_id)
    assert appended["user_id"]
    assert content not in log
    assert title not in log
    assert password not in log

    # Metrics of both workers, added up: the append and the requests are counted.
    samples = scrape(server)
    assert samples[("conversations_messages_appended_total", frozenset())] >= 1
    created = frozenset({"method": "POST", "view": "conversation-list", "status": "201"}.items())
    assert samples[("django_http_requests_total", created)] >= 1


def test_swagger_ui_renders_the_schema_without_leaving_the_machine(
    server: LiveServer, browser: tuple[BrowserContext, Traffic]
) -> None:
    context, traffic = browser
    page = context.new_page()

    page.goto(f"{site(server)}/api/docs/")
    operations = page.locator(".opblock")
    expect(operations.first).to_be_visible()
    expect(page.locator(".info .title")).to_contain_text("Conversation history API")
    paths = page.locator(".opblock-summary-path")
    expect(paths.filter(has_text="/api/v1/conversations/{id}/history/")).to_have_count(1)
    expect(paths.filter(has_text="/api/v1/search/")).to_have_count(1)
    assert operations.count() >= 13
    page.locator(".opblock-summary-path", has_text="/api/v1/conversations/{id}/history/").click()
    expect(page.locator(".opblock-body").first).to_be_visible()
    screenshot(page, "07-swagger-ui")

    assert any(url.endswith("/api/schema/") for url in traffic.urls), traffic.urls
    assert any("swagger-ui-bundle.js" in url for url in traffic.urls), traffic.urls
    traffic.assert_stayed_on_this_machine()


def swagger_operation(page: Page, server: LiveServer, path: str) -> None:
    """Swagger UI lists exactly one operation at ``path`` (as the schema's paths name it)."""
    page.goto(f"{site(server)}/api/docs/")
    expect(page.locator(".opblock").first).to_be_visible()
    summary = page.locator(".opblock-summary-path").filter(has_text=re.compile(rf"^{re.escape(path)}$"))
    expect(summary).to_have_count(1)


def test_swagger_ui_shows_the_export_with_its_format_and_media_types(
    server: LiveServer, browser: tuple[BrowserContext, Traffic]
) -> None:
    context, traffic = browser
    page = context.new_page()

    swagger_operation(page, server, "/api/v1/export/")
    operation = page.locator(
        ".opblock-get", has=page.locator(".opblock-summary-path", has_text="/api/v1/export/")
    )
    operation.locator(".opblock-summary").click()
    body = operation.locator(".opblock-body")
    expect(body).to_be_visible()
    expect(body.locator(".parameters")).to_contain_text("format")
    expect(body).to_contain_text("application/x-ndjson")
    expect(body).to_contain_text("text/markdown")
    screenshot(page, "08-swagger-ui-export")
    traffic.assert_stayed_on_this_machine()


def test_swagger_ui_shows_the_search_with_its_query(
    server: LiveServer, browser: tuple[BrowserContext, Traffic]
) -> None:
    context, traffic = browser
    page = context.new_page()

    swagger_operation(page, server, "/api/v1/search/")
    operation = page.locator(
        ".opblock-get", has=page.locator(".opblock-summary-path", has_text="/api/v1/search/")
    )
    operation.locator(".opblock-summary").click()
    body = operation.locator(".opblock-body")
    expect(body).to_be_visible()
    expect(body.locator(".parameters")).to_contain_text("q")
    expect(body.locator(".parameters")).to_contain_text("quoted phrases")
    screenshot(page, "09-swagger-ui-search")
    traffic.assert_stayed_on_this_machine()
