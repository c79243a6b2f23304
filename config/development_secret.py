"""The secret key of development runs without DJANGO_SECRET_KEY: random, made on first use and
kept in a local file that git and Docker ignore, so that no key anyone else knows signs this
machine's sessions and tokens, and restarts keep them valid."""

import os
import secrets
import tempfile
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured


def development_secret_key(path: Path) -> str:
    """The key kept in ``path``, which is created (mode 0600) with a new random key if missing."""
    try:
        if not path.exists():
            create_key_file(path, new_key())
        key = path.read_text().strip()
    except OSError as exc:
        raise ImproperlyConfigured(
            f"Cannot keep the development key in {path} ({exc.strerror}): set DJANGO_SECRET_KEY, "
            "or DJANGO_DEV_SECRET_FILE to a writable place."
        ) from exc
    if not key:
        raise ImproperlyConfigured(f"{path} holds no secret key: delete it to have a new one made.")
    return key


def new_key() -> str:
    """67 URL-safe characters: none is ``$``, which django-environ would read as a reference to
    another variable when the key becomes a default (JWT_SIGNING_KEY's), as Django's own
    ``get_random_secret_key`` may start one."""
    return secrets.token_urlsafe(50)


def create_key_file(path: Path, key: str) -> None:
    """Write ``key`` to ``path`` unless another process got there first, whose key then stays.

    The key is written to a temporary file (mkstemp makes it 0600) that is then linked to
    ``path``: the link appears whole or not at all, and fails if ``path`` exists, so processes
    starting together (``make run``'s migrate and runserver, several workers) all read one key.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(descriptor, "w") as file:
            file.write(f"{key}\n")
        os.link(temporary, path)
    except FileExistsError:
        pass
    finally:
        os.unlink(temporary)
