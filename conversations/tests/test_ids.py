"""UUIDv7 primary keys (conversations/ids.py)."""

import time
import uuid

from conversations.ids import uuid7


def test_ids_are_version_7_with_the_rfc_variant_and_the_current_time():
    before = time.time_ns() // 1_000_000
    made = uuid7()
    after = time.time_ns() // 1_000_000

    assert made.version == 7
    assert made.variant == uuid.RFC_4122
    assert before <= made.int >> 80 <= after


def test_ids_made_in_the_same_millisecond_increase():
    """Ordering by id is creation order within a process (an export orders by id)."""
    made = [uuid7() for _ in range(20_000)]  # thousands per millisecond

    assert made == sorted(made, key=lambda value: value.int)
    assert len(set(made)) == len(made)
    assert len({value.int >> 80 for value in made}) < len(made)  # many shared a millisecond
