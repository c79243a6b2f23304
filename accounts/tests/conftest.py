import pytest
from django.core.cache import cache


@pytest.fixture(autouse=True)
def _fresh_throttle_counts():
    """The anonymous throttle counts in the locmem cache, which outlives a test; start at zero."""
    cache.clear()
    yield
    cache.clear()
