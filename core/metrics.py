"""Prometheus metrics, served at /metrics in the text format (prometheus-client).

What is measured, and where:

- HTTP requests: count and latency per method, view (URL name) and status, by
  ``MetricsMiddleware``, outside all but ``HeadWithoutBodyMiddleware``.
- Database queries: count, errors and duration per database alias, by an execute wrapper
  that ``instrument_connection`` puts on every connection Django opens.
- Connection pool (PostgreSQL): open, idle and maximum connections and waiting requests
  from psycopg_pool's ``get_stats()``, refreshed after each request and at each scrape.
- Messages appended: one counter, moved when an inserted message commits, whoever
  appended it (REST API, agent API, import).

Several worker processes (gunicorn): prometheus-client's multiprocess mode. With
``PROMETHEUS_MULTIPROC_DIR`` set (to an empty directory, before the process starts) every
worker writes its samples to files there and a scrape of any worker adds them all up;
``deploy/gunicorn.conf.py`` empties the directory at start and marks dead workers.
Unset, the process's own registry is served (runserver, tests).

Who may scrape: loopback clients (when ``METRICS_ALLOW_LOOPBACK`` is on: by default, not in
production), clients from ``METRICS_ALLOWED_NETWORKS`` (CIDR list), and requests with
``Authorization: Bearer <METRICS_TOKEN>``; anyone else gets 403. The client is the
connection's peer, never an X-Forwarded-For entry: the shipped proxy (deploy/nginx) does not
pass /metrics on, so scrapers come straight to the service and a forwarded address would be
their own word. Behind a proxy on the same host that did pass it on, every peer would be
loopback: hence production's METRICS_ALLOW_LOOPBACK off (and ``check --deploy``'s
operations.W001 when it is on).
"""

import hmac
import ipaddress
import os
import time
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.db import connections, transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.http import HttpRequest, HttpResponse
from django.http.response import HttpResponseBase
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_safe
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

MULTIPROCESS_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNRESOLVED_VIEW = "<unresolved>"

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0)
QUERY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

HTTP_REQUESTS = Counter(
    "django_http_requests",
    "HTTP requests answered, by method, view and status.",
    ["method", "view", "status"],
)
HTTP_LATENCY = Histogram(
    "django_http_request_duration_seconds",
    "Time from the request entering Django to its response leaving it.",
    ["method", "view", "status"],
    buckets=LATENCY_BUCKETS,
)
DB_QUERIES = Counter("django_db_queries", "Database statements executed.", ["alias", "vendor"])
DB_QUERY_ERRORS = Counter("django_db_query_errors", "Database statements that raised.", ["alias", "vendor"])
DB_QUERY_LATENCY = Histogram(
    "django_db_query_duration_seconds",
    "Time spent executing a database statement.",
    ["alias", "vendor"],
    buckets=QUERY_BUCKETS,
)
# Gauges of every live worker add up ("livesum"): the deployment's connections in all.
DB_POOL_CONNECTIONS = Gauge(
    "django_db_pool_connections",
    "Connection pool: open (size), idle (available) and maximum (max) connections.",
    ["alias", "state"],
    multiprocess_mode="livesum",
)
DB_POOL_WAITING = Gauge(
    "django_db_pool_requests_waiting",
    "Requests waiting for a connection from the pool.",
    ["alias"],
    multiprocess_mode="livesum",
)
MESSAGES_APPENDED = Counter("conversations_messages_appended", "Messages appended (committed).")


# --- HTTP requests ---------------------------------------------------------------------------


def view_label(request: HttpRequest) -> str:
    """The URL pattern's name (``conversation-detail``), never the path with its ids."""
    match = getattr(request, "resolver_match", None)
    return match.view_name if match is not None else UNRESOLVED_VIEW


class MetricsMiddleware:
    """Counts and times every request; refreshes the pool gauges afterwards."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        started = time.perf_counter()
        response = self.get_response(request)
        elapsed = time.perf_counter() - started
        method = request.method if request.method in KNOWN_METHODS else "other"
        labels = (method, view_label(request), str(response.status_code))
        HTTP_REQUESTS.labels(*labels).inc()
        HTTP_LATENCY.labels(*labels).observe(elapsed)
        update_pool_gauges()
        return response


# --- database ------------------------------------------------------------------------------


class QueryMetrics:
    """An execute wrapper (``connection.execute_wrappers``) that counts and times statements."""

    def __init__(self, alias: str, vendor: str) -> None:
        # The labelled series, looked up once: this runs around every statement.
        self.errors = DB_QUERY_ERRORS.labels(alias, vendor)
        self.queries = DB_QUERIES.labels(alias, vendor)
        self.latency = DB_QUERY_LATENCY.labels(alias, vendor)

    def __call__(self, execute: Callable[..., Any], sql: Any, params: Any, many: bool, context: Any) -> Any:
        started = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        except Exception:
            self.errors.inc()
            raise
        finally:
            self.queries.inc()
            self.latency.observe(time.perf_counter() - started)


def instrument_connection(sender: object, connection: BaseDatabaseWrapper, **kwargs: Any) -> None:
    """``connection_created``: wrap the connection's statements, once per connection object."""
    if not any(isinstance(wrapper, QueryMetrics) for wrapper in connection.execute_wrappers):
        connection.execute_wrappers.append(QueryMetrics(connection.alias, connection.vendor))


def update_pool_gauges() -> None:
    """Copy psycopg_pool's statistics of each pooled alias into the gauges. Only pools this
    process has opened are read; none is opened for it."""
    for alias in connections:
        connection = connections[alias]
        pools: dict[str, Any] = getattr(type(connection), "_connection_pools", {})
        pool = pools.get(alias)
        if pool is None:
            continue
        stats = pool.get_stats()
        DB_POOL_CONNECTIONS.labels(alias, "size").set(stats.get("pool_size", 0))
        DB_POOL_CONNECTIONS.labels(alias, "available").set(stats.get("pool_available", 0))
        DB_POOL_CONNECTIONS.labels(alias, "max").set(stats.get("pool_max", 0))
        DB_POOL_WAITING.labels(alias).set(stats.get("requests_waiting", 0))


# --- messages --------------------------------------------------------------------------------


def count_appended_message(
    sender: object, instance: object, created: bool, raw: bool = False, using: str = "default", **kwargs: Any
) -> None:
    """``post_save`` of Message: count an insert once its transaction commits."""
    if created and not raw:
        transaction.on_commit(MESSAGES_APPENDED.inc, using=using)


# --- the endpoint ----------------------------------------------------------------------------


def scrape_allowed(request: HttpRequest) -> bool:
    """Loopback (by default), an allowed network, or the configured bearer token."""
    token: str = settings.METRICS_TOKEN
    if token:
        scheme, _, sent = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(sent.strip().encode(), token.encode()):
            return True
    # The peer only, never X-Forwarded-For: the shipped proxy does not pass /metrics on, so a
    # scrape comes straight to the service and any forwarded address in it is the caller's own.
    try:
        address = ipaddress.ip_address(request.META.get("REMOTE_ADDR", ""))
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if settings.METRICS_ALLOW_LOOPBACK and address.is_loopback:
        return True
    return any(
        address in ipaddress.ip_network(network, strict=False)
        for network in settings.METRICS_ALLOWED_NETWORKS
    )


def registry() -> CollectorRegistry:
    """The samples of every worker in multiprocess mode, else this process's registry."""
    if os.environ.get(MULTIPROCESS_DIR_VARIABLE):
        combined = CollectorRegistry()
        multiprocess.MultiProcessCollector(combined)  # type: ignore[no-untyped-call]
        return combined
    return REGISTRY


@csrf_exempt  # nothing to protect, and other methods get 405 rather than a CSRF 403
@never_cache
@require_safe
def metrics_view(request: HttpRequest) -> HttpResponse:
    if not scrape_allowed(request):
        return HttpResponse("Forbidden.\n", status=403, content_type="text/plain; charset=utf-8")
    update_pool_gauges()
    return HttpResponse(generate_latest(registry()), content_type=CONTENT_TYPE_LATEST)
