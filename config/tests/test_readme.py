"""The README's "First requests", run from the README's own text against the server as
``make run`` starts it, so that the commands a newcomer copies cannot drift from the API."""

import json
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings

from conftest import require_tool
from conversations.tests.live_server import (
    LiveServer,
    is_postgres_url,
    postgres_database,
    start_server,
    stop_server,
)


@pytest.fixture(autouse=True)
def _curl_installed():
    require_tool("curl", "curl")


README = Path(settings.BASE_DIR) / "README.md"
SECTION = "First requests"
# What the README's commands are written against: `make run`'s default address.
README_BASE_URL = "http://127.0.0.1:8000"
COMMANDS_TIMEOUT_SECONDS = 60
FENCED_SH = re.compile(r"^```sh\n(.*?)^```$", re.DOTALL | re.MULTILINE)


def section(markdown: str, title: str) -> str:
    """The text under the level-2 heading ``title``, up to the next level-2 heading."""
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", markdown, re.DOTALL | re.MULTILINE)
    assert match, f"README.md has no '## {title}' section"
    return match.group(1)


def first_requests() -> str:
    """The shell blocks of the README's "First requests" section, in order, as one script."""
    blocks = FENCED_SH.findall(section(README.read_text(), SECTION))
    assert blocks, f"README.md's '{SECTION}' section has no ```sh block"
    return "\n".join(blocks)


def json_documents(text: str) -> list[Any]:
    """The JSON documents printed one after another (``python3 -m json.tool``'s output)."""
    decoder = json.JSONDecoder()
    documents, position = [], 0
    while position < len(text := text.rstrip()):
        document, position = decoder.raw_decode(text, position)
        documents.append(document)
        position = len(text) - len(text[position:].lstrip())
    return documents


@pytest.fixture
def make_run(tmp_path) -> Iterator[LiveServer]:
    """``make run`` on a fresh clone (DEBUG on, no key, a new database: PostgreSQL under
    scripts/with-postgres, else SQLite) on a free port instead of 8000."""
    admin_url = os.environ.get("DATABASE_URL")
    if admin_url and is_postgres_url(admin_url):
        with postgres_database(admin_url) as database_url:
            server = start_server(tmp_path, database_url, development=True)
            yield server
            stop_server(server)
        return
    server = start_server(tmp_path, f"sqlite:///{tmp_path / 'db.sqlite3'}", development=True)
    yield server
    stop_server(server)


def test_the_first_requests_of_the_readme_succeed_in_order(make_run, tmp_path):
    script = first_requests()
    assert script.count(README_BASE_URL) >= 5, script  # register, token, create, append, history
    script = script.replace(README_BASE_URL, make_run.url)
    assert ":8000" not in script, script

    # A clean shell, as a newcomer's terminal: no curlrc, no variables of the test run.
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "LANG": "C.UTF-8"}
    result = subprocess.run(  # noqa: S603 (the README's own commands, against a loopback server)
        ["bash", "-euo", "pipefail", "-c", script],  # noqa: S607 (bash from PATH, as a user runs it)
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=COMMANDS_TIMEOUT_SECONDS,
        check=False,
    )

    report = f"exit {result.returncode}\n{result.stdout}\n{result.stderr}\n{make_run.log_tail()}"
    assert result.returncode == 0, report
    registered, appended, history = json_documents(result.stdout)
    assert registered["username"], report
    assert appended["role"] == "user", report
    assert appended["content"], report
    assert appended["content"] in script, report
    assert history["messages"][-1]["content"] == appended["content"], report
