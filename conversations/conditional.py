"""Conditional GET: ``ETag`` and ``If-None-Match`` for a conversation, its message pages and
its history.

The tag is computed from what identifies the answer's content without rendering it: the
request's path and query, and the version of the rows it shows (messages are immutable, so
their ``seq`` values identify them; a conversation's ``updated_at`` and ``message_count``
move with every change to it). A matching ``If-None-Match`` is answered 304 straight after
the one query the full answer needs anyway, before any serialization.
"""

import hashlib
from collections.abc import Iterable

from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response


def etag_for(request: Request, version: Iterable[object]) -> str:
    """A strong tag for this request's answer at ``version``."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(request.get_full_path().encode())
    digest.update(request.accepted_media_type.encode() if request.accepted_media_type else b"")
    for part in version:
        digest.update(b"\x1f")
        digest.update(str(part).encode())
    return f'"{digest.hexdigest()}"'


def matches(request: Request, etag: str) -> bool:
    """Whether ``If-None-Match`` names ``etag`` (or is ``*``); weak tags compare weakly."""
    header = request.headers.get("If-None-Match")
    if not header:
        return False
    candidates = {candidate.strip().removeprefix("W/") for candidate in header.split(",")}
    return "*" in candidates or etag in candidates


def not_modified(etag: str) -> Response:
    return Response(status=status.HTTP_304_NOT_MODIFIED, headers={"ETag": etag})
