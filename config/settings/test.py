"""Test settings: only what tests need differs from base."""

import os
import secrets

# A key of the test run's own, set before base is read: base would otherwise make and keep the
# development key file in the checkout.
os.environ.setdefault("DJANGO_SECRET_KEY", secrets.token_urlsafe(50))

from .base import *  # noqa: E402, F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
