"""A real client generated from the live schema: openapi-typescript's types for
``/api/schema/``, a typed session script (e2e/typescript/client.ts, openapi-fetch) compiled
with ``tsc --strict`` and run with node against the server as ``make run`` starts it.

A field the schema leaves untyped, an error without its body or a request field made required
by mistake breaks the compilation, so this fails; the script's own checks fail on a wrong
answer. The npm packages are pinned in e2e/typescript/package-lock.json and installed by
``e2e/install-tools`` (``npm ci``); without node the test fails and says what to install.
"""

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from conftest import require_tool
from conversations.tests.live_server import (
    LiveServer,
    is_postgres_url,
    postgres_database,
    start_server,
    stop_server,
)

CLIENT_DIR = Path(__file__).resolve().parent / "typescript"
NODE_MODULES = CLIENT_DIR / "node_modules"
BIN = NODE_MODULES / ".bin"
# Generous for 2 busy cores: tsc alone takes a few seconds.
GENERATE_TIMEOUT_SECONDS = 120
COMPILE_TIMEOUT_SECONDS = 300
SESSION_TIMEOUT_SECONDS = 120


@pytest.fixture(autouse=True)
def _node_installed() -> None:
    require_tool("node", "nodejs")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    workdir = tmp_path_factory.mktemp("typescript_client")
    admin_url = os.environ.get("DATABASE_URL")
    with contextlib.ExitStack() as stack:
        if admin_url and is_postgres_url(admin_url):
            database_url = stack.enter_context(postgres_database(admin_url))
        else:
            database_url = f"sqlite:///{workdir / 'db.sqlite3'}"
        live = start_server(workdir, database_url)
        stack.callback(stop_server, live)
        yield live


def run(command: list[str], cwd: Path, timeout: float) -> str:
    """``command``'s output; fails the test with it when the command fails."""
    result = subprocess.run(  # noqa: S603 (our own tools, fixed arguments)
        command, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"{' '.join(command)} failed:\n{output}"
    return output


def client_project(workdir: Path, schema: bytes) -> Path:
    """The client's sources beside the generated types, in a directory of this run's own."""
    for name in ("client.ts", "tsconfig.json", "package.json"):
        shutil.copy(CLIENT_DIR / name, workdir / name)
    (workdir / "node_modules").symlink_to(NODE_MODULES)
    (workdir / "schema.json").write_bytes(schema)
    generate = [str(BIN / "openapi-typescript"), "schema.json", "-o", "schema.d.ts"]
    run(generate, workdir, GENERATE_TIMEOUT_SECONDS)
    return workdir


def test_a_generated_typescript_client_runs_a_whole_session(server: LiveServer, tmp_path: Path) -> None:
    assert (BIN / "tsc").exists(), "the npm packages are missing: run e2e/install-tools"
    response = requests.get(
        f"{server.url}/api/schema/", headers={"Accept": "application/vnd.oai.openapi+json"}, timeout=30
    )
    assert response.status_code == requests.codes.ok, response.text
    project = client_project(tmp_path, response.content)

    run([str(BIN / "tsc"), "--strict", "-p", "."], project, COMPILE_TIMEOUT_SECONDS)
    output = run(["node", "build/client.js", server.url], project, SESSION_TIMEOUT_SECONDS)

    assert "session complete: 3 messages" in output, output
