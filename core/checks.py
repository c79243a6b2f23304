"""Deployment checks of the service's own settings (``manage.py check --deploy``)."""

from collections.abc import Sequence
from typing import Any

from django.apps import AppConfig
from django.conf import settings
from django.core.checks import CheckMessage, Tags, Warning, register


@register(Tags.security, deploy=True)
def metrics_loopback_needs_trusted_proxies(
    app_configs: Sequence[AppConfig] | None = None, **kwargs: Any
) -> list[CheckMessage]:
    """Loopback trusted for /metrics while every peer is taken as the client: behind a proxy
    on the same host, every outside client is loopback."""
    if not settings.METRICS_ALLOW_LOOPBACK or settings.API_TRUSTED_PROXIES > 0:
        return []
    return [
        Warning(
            "METRICS_ALLOW_LOOPBACK is on and API_TRUSTED_PROXIES is 0: behind a proxy on the "
            "same host every client is loopback and may read /metrics.",
            hint="Set METRICS_ALLOW_LOOPBACK=false and give scrapers METRICS_ALLOWED_NETWORKS or "
            "METRICS_TOKEN, or set API_TRUSTED_PROXIES to the number of proxies in front.",
            id="operations.W001",
        )
    ]
