"""Deployment checks of the service's own settings (``manage.py check --deploy``)."""

from collections.abc import Sequence
from typing import Any

from django.apps import AppConfig
from django.conf import settings
from django.core.checks import CheckMessage, Tags, Warning, register


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
