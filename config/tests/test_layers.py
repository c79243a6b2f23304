"""The layers contract (pyproject.toml, `make lint`): config above the apps, conversations above
accounts, both above core. lint-imports keeps it, and breaks on an upward import."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT_DIR = Path(__file__).resolve().parents[2]
PACKAGES = ("config", "conversations", "accounts", "core")
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(project: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 (our own virtualenv's tool)
        [str(LINT_IMPORTS), "--no-cache"],
        cwd=project,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(project)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def project_copy(tmp_path):
    skip_caches = shutil.ignore_patterns("__pycache__")
    for package in PACKAGES:
        shutil.copytree(PROJECT_DIR / package, tmp_path / package, ignore=skip_caches)
    shutil.copy(PROJECT_DIR / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def test_the_layers_are_kept(project_copy):
    result = lint_imports(project_copy)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 kept, 0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "upward_import"),
    [
        ("core/metrics.py", "import conversations.models"),
        ("core/rls.py", "from accounts.models import User"),
        ("accounts/services.py", "from conversations.models import Conversation"),
        ("conversations/selectors.py", "from config import urls"),
    ],
)
def test_an_upward_import_breaks_the_contract(project_copy, module, upward_import):
    path = project_copy / module
    path.write_text(path.read_text() + f"\n{upward_import}  # noqa\n")

    result = lint_imports(project_copy)

    assert result.returncode != 0
    assert "BROKEN" in result.stdout
