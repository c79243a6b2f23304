"""Sizes in bytes of what the API renders: how much of a page or a history window fits in
one answer (``API_MAX_RESPONSE_BYTES``), and how large one stored JSON value may be.

Most answers are far below the limit, so an answer's items are first measured by a cheap
upper bound from their strings' lengths; only when those bounds add up to more than the
budget is each item rendered to measure it exactly.
"""

import json
from collections.abc import Mapping, Sequence
from typing import Any

from django.conf import settings

from config.renderers import SafeJSONRenderer

# The most bytes one code point of a string takes in a rendered answer: a "\uXXXX" escape.
# (An astral code point takes 12 only in a body rendered ASCII-escaped, which the renderer
# does only for text with an unpaired surrogate: validation keeps those out of stored rows.)
CODE_POINT_MAX_BYTES = 6
# Room for an answer's own keys and values around its items (ids, the page links' URLs).
ENVELOPE_BYTES = 4096

_renderer = SafeJSONRenderer()


def rendered_size(value: Any) -> int:
    """Bytes of ``value`` as the API renders it: compact UTF-8 JSON."""
    return len(_renderer.render(value))


def size_bound(item: Mapping[str, Any]) -> int:
    """An upper bound of ``rendered_size(item)`` for a serialized row, from lengths: each
    string counts its most per code point; anything else its ``json.dumps``, whose ASCII
    escapes and spaced separators are never shorter than the compact UTF-8 rendering."""
    total = 2
    for key, value in item.items():
        total += len(key) + 4  # its quotes, the colon and a comma
        if isinstance(value, str):
            total += 2 + CODE_POINT_MAX_BYTES * len(value)
        else:
            total += len(json.dumps(value, default=str))
    return total


def answer_budget(*, envelope: int = ENVELOPE_BYTES) -> int:
    """Bytes left for an answer's items once ``envelope`` bytes are kept for the rest."""
    max_bytes: int = settings.API_MAX_RESPONSE_BYTES
    return max_bytes - envelope


def leading_items_within(items: Sequence[Mapping[str, Any]], budget: int) -> int:
    """How many of ``items``, from the first, fit in ``budget`` bytes as members of a JSON
    array. Never fewer than one, so that a page always moves a walk on: an item alone over
    the budget is answered whole (content and tool calls are bounded on append, so only a
    limit set below one message's size can be exceeded, and by that one message)."""
    if sum(size_bound(item) + 1 for item in items) <= budget:
        return len(items)
    used = 0
    for count, item in enumerate(items):
        used += rendered_size(item) + 1  # and its comma
        if used > budget:
            return max(count, 1)
    return len(items)
