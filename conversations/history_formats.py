"""A history window in the three model-API formats of the contract's History section.

Pure functions over plain values, no database: the REST view and the agent's ``history_load``
both call ``render`` on the same window, so the formats have one code path.

The rule every format shares (``_exchange``): a call whose result was never recorded is left
out, because every model API rejects a call without its answer; only the newest message of the
conversation keeps its unanswered calls, so that an agent can resume them. A message left with
no text and no call says nothing to a model and is left out in every format; empty content
(``""``) counts as no text, since Anthropic rejects an empty text block, and leaving the same
messages out of every format keeps the three windows alike.
"""

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

FORMATS = ("openai", "anthropic", "responses")
DEFAULT_FORMAT = FORMATS[0]

Item = dict[str, Any]


@dataclass(frozen=True, slots=True)
class StoredMessage:
    role: str  # "user" | "assistant"
    content: str | None
    # [{"id", "type": "function", "function": {"name", "arguments"}}], as stored.
    tool_calls: list[dict[str, Any]] | None
    # [{"tool_call_id", "content", "is_error"}], in any order, at most one per call.
    tool_results: list[dict[str, Any]] | None
    token_count: int


@dataclass(frozen=True, slots=True)
class _Exchange:
    """A message as a model sees it: its kept calls, each with its result (None: pending)."""

    role: str
    content: str | None
    calls: list[tuple[dict[str, Any], dict[str, Any] | None]]

    @property
    def text(self) -> str | None:
        return self.content or None

    @property
    def results(self) -> list[dict[str, Any]]:
        """The recorded results, in call order whatever order they were stored in."""
        return [result for _, result in self.calls if result is not None]


def start_at_user(window: Sequence[StoredMessage]) -> Sequence[StoredMessage]:
    """Drop leading messages until the first user message (``start=user``); none: empty."""
    for index, message in enumerate(window):
        if message.role == "user":
            return window[index:]
    return window[:0]


def render(window: Sequence[StoredMessage], format: str) -> list[Item]:
    """The window (oldest first, its last message the conversation's newest) as ``format``."""
    newest = len(window) - 1
    return [
        item
        for index, message in enumerate(window)
        for item in render_message(message, format, newest=index == newest)
    ]


def render_message(message: StoredMessage, format: str, *, newest: bool) -> list[Item]:
    """One message's items in ``format``; ``newest``: it is the conversation's newest, whose
    unanswered calls stay. A window's items are its messages' items in order, so a caller
    that cuts a window (by size, say) can render it a message at a time."""
    if format not in _FORMATTERS:
        raise ValueError(f"unknown history format {format!r}: expected one of {', '.join(FORMATS)}")
    exchange = _exchange(message, newest=newest)
    return _FORMATTERS[format](exchange) if exchange is not None else []


def _exchange(message: StoredMessage, *, newest: bool) -> _Exchange | None:
    results = {result["tool_call_id"]: result for result in message.tool_results or ()}
    calls = [
        (call, results.get(call["id"]))
        for call in message.tool_calls or ()
        if call["id"] in results or newest
    ]
    if not (message.content or calls):
        return None
    return _Exchange(role=message.role, content=message.content, calls=calls)


def _openai(exchange: _Exchange) -> list[Item]:
    item: Item = {"role": exchange.role, "content": exchange.content}
    if exchange.calls:
        item["tool_calls"] = [call for call, _ in exchange.calls]
    return [
        item,
        *(
            {"role": "tool", "tool_call_id": result["tool_call_id"], "content": result["content"]}
            for result in exchange.results
        ),
    ]


def _anthropic(exchange: _Exchange) -> list[Item]:
    blocks: list[Item] = [{"type": "text", "text": exchange.text}] if exchange.text else []
    blocks.extend(
        {
            "type": "tool_use",
            "id": call["id"],
            "name": call["function"]["name"],
            "input": _tool_input(call["function"]["arguments"]),
        }
        for call, _ in exchange.calls
    )
    items: list[Item] = [{"role": exchange.role, "content": blocks}]
    if exchange.results:
        items.append({"role": "user", "content": [_tool_result_block(r) for r in exchange.results]})
    return items


def _responses(exchange: _Exchange) -> list[Item]:
    items: list[Item] = []
    if exchange.text:
        items.append({"type": "message", "role": exchange.role, "content": exchange.text})
    items.extend(
        {
            "type": "function_call",
            "call_id": call["id"],
            "name": call["function"]["name"],
            "arguments": call["function"]["arguments"],
        }
        for call, _ in exchange.calls
    )
    items.extend(
        {"type": "function_call_output", "call_id": result["tool_call_id"], "output": result["content"]}
        for result in exchange.results
    )
    return items


def _tool_result_block(result: dict[str, Any]) -> Item:
    return {
        "type": "tool_result",
        "tool_use_id": result["tool_call_id"],
        "content": result["content"],
        "is_error": bool(result.get("is_error", False)),
    }


def _tool_input(arguments: str) -> dict[str, Any]:
    """Anthropic's ``input`` must be an object: the parsed arguments if they are one, else the string.

    NaN and Infinity are refused (they are not JSON, and the answer must serialize as JSON), and
    so is nesting too deep for the parser, which would otherwise fail the whole history.
    """
    try:
        parsed = json.loads(arguments, parse_constant=_refuse_constant)
    except (ValueError, RecursionError):
        parsed = None
    return parsed if isinstance(parsed, dict) else {"arguments": arguments}


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


_FORMATTERS: dict[str, Callable[[_Exchange], list[Item]]] = {
    "openai": _openai,
    "anthropic": _anthropic,
    "responses": _responses,
}
