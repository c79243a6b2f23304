"""Time-ordered primary keys."""

import secrets
import time
import uuid


def uuid7() -> uuid.UUID:
    """Return a version 7 UUID (RFC 9562): 48 bits of Unix milliseconds, then randomness.

    New rows land at the right-hand end of the primary-key B-tree instead of a random page,
    which keeps inserts cheap as the message table grows. Python 3.11 has no ``uuid.uuid7``.
    """
    unix_ms = time.time_ns() // 1_000_000
    rand_a = secrets.randbits(12)
    rand_b = secrets.randbits(62)
    value = (unix_ms & (1 << 48) - 1) << 80 | 0x7 << 76 | rand_a << 64 | 0b10 << 62 | rand_b
    return uuid.UUID(int=value)
