import pytest
from django.core.cache import cache
from rest_framework_simplejwt import serializers as simplejwt_serializers
from rest_framework_simplejwt import settings as simplejwt_settings


@pytest.fixture(autouse=True)
def _fresh_throttle_counts():
    """The anonymous throttle counts in the locmem cache, which outlives a test; start at zero."""
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def refresh_rotation_on(settings, monkeypatch):
    settings.SIMPLE_JWT = {**settings.SIMPLE_JWT, "ROTATE_REFRESH_TOKENS": True}
    # simplejwt rebuilds rest_framework_simplejwt.settings.api_settings on setting_changed,
    # but its serializers module keeps the object it imported, so the override alone is not
    # seen there (simplejwt issue #58); point it at the rebuilt one.
    assert simplejwt_settings.api_settings.ROTATE_REFRESH_TOKENS is True
    monkeypatch.setattr(simplejwt_serializers, "api_settings", simplejwt_settings.api_settings)
