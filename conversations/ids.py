"""Time-ordered primary keys."""

import secrets
import threading
import time
import uuid

# 74 bits of a UUIDv7 follow its 48-bit timestamp: 12 in rand_a, 62 in rand_b (the version
# and variant bits sit between and around them).
_RANDOM_BITS = 74
_last = 0
_lock = threading.Lock()


def uuid7() -> uuid.UUID:
    """Return a version 7 UUID (RFC 9562): 48 bits of Unix milliseconds, then randomness.

    New rows land at the right-hand end of the primary-key B-tree instead of a random page,
    which keeps inserts cheap as the message table grows. Python 3.11 has no ``uuid.uuid7``.

    Within a process the ids strictly increase (RFC 9562, 6.2, method 2: a random value that
    is incremented when the clock has not moved on), so ordering by id is creation order even
    for rows made in the same millisecond: an export, which orders by id, lists them as made.
    """
    global _last
    candidate = time.time_ns() // 1_000_000 << _RANDOM_BITS | secrets.randbits(_RANDOM_BITS)
    with _lock:
        _last = max(candidate, _last + 1)
        value = _last
    unix_ms, rand = value >> _RANDOM_BITS, value & (1 << _RANDOM_BITS) - 1
    rand_a, rand_b = rand >> 62, rand & (1 << 62) - 1
    return uuid.UUID(int=(unix_ms & (1 << 48) - 1) << 80 | 0x7 << 76 | rand_a << 64 | 0b10 << 62 | rand_b)
