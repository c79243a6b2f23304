"""The production settings (``config.settings.base``, read from the environment as
deployed) plus the control views' URLs: the service and control F1 run in one server."""

from config.settings.base import *  # noqa: F403

ROOT_URLCONF = "bench.urls"
