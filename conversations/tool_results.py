"""The rules of tool results, which are recorded on the assistant message that made the calls:
at most one per call, only for that message's call ids, never replaced once recorded.

One place for them: the REST serializers (shape, then these rules on an append) and the
services (these rules again on the stored message when results come later, and on every
Python caller's append) both call ``checked``.
"""

import re
from collections.abc import Mapping
from typing import Any

from . import sizes

ToolCalls = list[dict[str, Any]]
ToolResults = list[dict[str, Any]]

TOOL_RESULTS_MAX_ITEMS = 64
TOOL_RESULT_CONTENT_MAX_LENGTH = 65_536
# All of one message's results, as rendered (264 KiB), the bound its calls have too.
TOOL_RESULTS_MAX_BYTES = 4 * TOOL_RESULT_CONTENT_MAX_LENGTH + 8 * 1024
REQUIRED_KEYS = frozenset({"tool_call_id", "content"})
KEYS = REQUIRED_KEYS | {"is_error"}
# What neither database stores in JSON text (PostgreSQL refuses \u0000 in jsonb).
UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


class ToolResultsInvalid(ValueError):
    """Results that break a rule: a 400 naming ``tool_results``, with this message."""


class ToolResultAlreadyRecorded(Exception):
    """A result for a call that has one already: a 409, and the first one stays."""


def checked(
    tool_calls: ToolCalls | None, new: ToolResults, recorded: ToolResults | None = None
) -> ToolResults:
    """All of the message's results, ``recorded`` and ``new``, in the order of its calls.

    Raises ``ToolResultsInvalid`` when the message has no calls, when a new result names no
    call of it, or when two new results name one call; ``ToolResultAlreadyRecorded`` when a
    call already has its result.
    """
    if not tool_calls:
        raise ToolResultsInvalid("Only a message with tool_calls can have tool results.")
    if not isinstance(new, list) or not new:
        raise ToolResultsInvalid("Tool results are null or a non-empty list.")
    new = [normalized(result) for result in new]
    position = {call["id"]: index for index, call in enumerate(tool_calls)}
    answered = {result["tool_call_id"] for result in recorded or ()}
    seen: set[str] = set()
    for result in new:
        call_id = result["tool_call_id"]
        if call_id not in position:
            raise ToolResultsInvalid(f"{call_id!r} is not the id of one of this message's tool calls.")
        if call_id in seen:
            raise ToolResultsInvalid(f"More than one result for the tool call {call_id!r}.")
        seen.add(call_id)
        if call_id in answered:
            raise ToolResultAlreadyRecorded(f"The tool call {call_id!r} already has its result.")
    merged = sorted([*(recorded or ()), *new], key=lambda r: position[r["tool_call_id"]])
    if sizes.rendered_size(merged) > TOOL_RESULTS_MAX_BYTES:
        raise ToolResultsInvalid(f"At most {TOOL_RESULTS_MAX_BYTES} bytes of JSON in all.")
    return merged


def normalized(result: Any) -> dict[str, Any]:
    """A result as stored: its three keys, ``is_error`` false unless said.

    Raises ``ToolResultsInvalid`` for anything else. A REST body was checked field by field
    already (serializers.py); a Python caller's results are checked here, so that it meets
    the same rules on both databases rather than whatever each makes of a NUL.
    """
    if not isinstance(result, Mapping) or not REQUIRED_KEYS <= result.keys() <= KEYS:
        raise ToolResultsInvalid(
            f"A tool result is an object of {', '.join(sorted(KEYS))} (is_error optional)."
        )
    call_id, content, is_error = result["tool_call_id"], result["content"], result.get("is_error", False)
    if not (isinstance(call_id, str) and isinstance(content, str) and isinstance(is_error, bool)):
        raise ToolResultsInvalid("tool_call_id and content are strings, is_error a boolean.")
    if len(content) > TOOL_RESULT_CONTENT_MAX_LENGTH:
        raise ToolResultsInvalid(
            f"A result's content is at most {TOOL_RESULT_CONTENT_MAX_LENGTH} characters."
        )
    if UNSTORABLE.search(call_id) or UNSTORABLE.search(content):
        raise ToolResultsInvalid("A result may not contain U+0000 or an unpaired surrogate.")
    return {"tool_call_id": call_id, "content": content, "is_error": is_error}
