"""Sizes in bytes of what the API renders: how much of a page or a history window fits in
one answer (``API_MAX_RESPONSE_BYTES``), and how large one stored JSON value may be.

Most answers are far below the limit, so an answer's items are first measured by a cheap
upper bound from their strings' lengths; only when those bounds add up to more than the
budget is each item rendered to measure it exactly.
"""

from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

from django.conf import settings

from core.renderers import SafeJSONRenderer

# The most bytes one code point of a string takes in a rendered answer: a "\uXXXX" escape.
# (An astral code point takes 12 only in a body rendered ASCII-escaped, which the renderer
# does only for text with an unpaired surrogate: validation keeps those out of stored rows.)
CODE_POINT_MAX_BYTES = 6
# A row's key as rendered, with what surrounds a field: quotes, colon, comma, a value's quotes.
KEY_MAX_BYTES = 64
# Room for an answer's own keys and values around its items (ids, the page links' URLs).
ENVELOPE_BYTES = 4096

_renderer = SafeJSONRenderer()

T = TypeVar("T", bound=Mapping[str, Any])


def rendered_size(value: Any) -> int:
    """Bytes of ``value`` as the API renders it: compact UTF-8 JSON."""
    return len(_renderer.render(value))


def size_bound(item: Mapping[str, Any]) -> int:
    """An upper bound of ``rendered_size(item)`` for a serialized row, from lengths alone:
    each code point of a string value, and each character of any other value's ``repr``,
    counts the most a code point renders to (a ``repr`` has a character for each code point
    of its strings and at least as many for its punctuation and literals as JSON has). About
    a microsecond a row, a fraction of rendering it."""
    total = 2 + KEY_MAX_BYTES * len(item)
    for value in item.values():
        total += CODE_POINT_MAX_BYTES * len(value if value.__class__ is str else repr(value))
    return total


def answer_budget(*, envelope: int = ENVELOPE_BYTES) -> int:
    """Bytes left for an answer's items once ``envelope`` bytes are kept for the rest."""
    max_bytes: int = settings.API_MAX_RESPONSE_BYTES
    return max_bytes - envelope


def leading_items_within(items: Iterable[T], budget: int) -> list[T]:
    """The leading ``items`` that fit in ``budget`` bytes as members of a JSON array, taken
    from ``items`` only as far as needed (a generator's rest is never built). Never fewer
    than one, so that a page always moves a walk on: an item alone over the budget is
    answered whole (content and tool calls are bounded on append, so only a limit set below
    one message's size is exceeded, and by that one message)."""
    kept: list[T] = []
    bound = 0
    exact: int | None = None  # the kept items' exact size, once their bounds no longer fit
    for item in items:
        if exact is None:
            bound += size_bound(item) + 1  # and its comma
            if bound <= budget:
                kept.append(item)
                continue
            exact = sum(rendered_size(earlier) + 1 for earlier in kept)
        exact += rendered_size(item) + 1
        if exact > budget and kept:
            break
        kept.append(item)
    return kept
