"""Checks of the service's own settings: deployment checks (``manage.py check --deploy``) and
those of production-like settings (DEBUG off), which every ``manage.py`` command runs."""

from collections.abc import Sequence
from typing import Any

from django.apps import AppConfig
from django.conf import settings
from django.core.checks import CheckMessage, Tags, Warning, register
from django.db import DEFAULT_DB_ALIAS, connections


@register(Tags.security, deploy=True)
def metrics_open_to_loopback(
    app_configs: Sequence[AppConfig] | None = None, **kwargs: Any
) -> list[CheckMessage]:
    """Loopback trusted for /metrics: /metrics judges the connection's peer, and behind a
    proxy on the same host that passes it on, every outside client is loopback."""
    if not settings.METRICS_ALLOW_LOOPBACK:
        return []
    return [
        Warning(
            "METRICS_ALLOW_LOOPBACK is on: behind a proxy on the same host that passes /metrics "
            "on, every client is loopback and may read /metrics.",
            hint="Set METRICS_ALLOW_LOOPBACK=false and give scrapers METRICS_ALLOWED_NETWORKS or "
            "METRICS_TOKEN.",
            id="operations.W001",
        )
    ]


@register(Tags.caches)
def throttles_counted_per_process(
    app_configs: Sequence[AppConfig] | None = None, **kwargs: Any
) -> list[CheckMessage]:
    """Without REDIS_URL the cache is each process's memory, and the throttles count there: a
    deployment on PostgreSQL runs several workers, often several servers, and each admits a
    whole quota. SQLite means one machine in development, and DEBUG on means development."""
    if settings.DEBUG or settings.REDIS_URL or connections[DEFAULT_DB_ALIAS].vendor != "postgresql":
        return []
    return [
        Warning(
            "REDIS_URL is unset: the throttles (API_THROTTLE_USER, _ANON, _LOGIN, _EXPORT) count in "
            "each process's memory, so every gunicorn worker on every server admits a whole quota "
            "of its own.",
            hint="Set REDIS_URL to a Redis that every worker and server shares (README, Deployment).",
            id="operations.W002",
        )
    ]
