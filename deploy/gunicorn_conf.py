"""gunicorn's settings for the container (``gunicorn -c deploy/gunicorn_conf.py``).

Threaded sync workers (``gthread``: ``WEB_WORKERS`` processes of ``WEB_THREADS`` threads) serve
``config.wsgi``. Every view is synchronous, so WSGI runs them directly, several at once per
worker; measured by ``make bench`` (README, Performance), 2 workers x 4 threads served about 3x
the requests of uvicorn workers, which run each view one at a time through ``sync_to_async``.
The ASGI application (``config/asgi.py``) still works, for instance
``gunicorn -c deploy/gunicorn_conf.py -k uvicorn.workers.UvicornWorker config.asgi:application``
(``-k`` on the command line wins over ``worker_class`` here).

Metrics of several workers: prometheus-client's multiprocess mode, switched on here and only
here. The master picks the samples directory (``PROMETHEUS_MULTIPROC_DIR`` when set, else a
new temporary one) and puts it in the environment the workers inherit, before any of them
imports prometheus_client; a scrape of any worker then adds up every worker's samples. It is
emptied when the master starts, a worker that exits is marked dead (its gauges leave the
sums, its counts stay), and a temporary one is removed when the master exits. Management
commands (``manage.py migrate``, exports) do not see the variable and keep their samples to
themselves. Options given on the command line win over the values here.
"""

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

MULTIPROC_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
_chosen_dir = os.environ.get(MULTIPROC_DIR_VARIABLE)
_temporary_dir = not _chosen_dir
os.environ[MULTIPROC_DIR_VARIABLE] = _chosen_dir or tempfile.mkdtemp(prefix="prometheus-multiproc-")

# Imported here, once the variable is set: importing it first inside child_exit, during a
# worker's exit, failed with a circular import.
from prometheus_client import multiprocess  # noqa: E402

bind = f"0.0.0.0:{os.environ.get('PORT', '8000')}"  # noqa: S104 (inside a container)
workers = int(os.environ.get("WEB_WORKERS", "2"))
worker_class = "gthread"
threads = int(os.environ.get("WEB_THREADS", "4"))
timeout = int(os.environ.get("WEB_TIMEOUT", "30"))
graceful_timeout = 20
keepalive = 5
# Only these peers' X-Forwarded-For / X-Forwarded-Proto are believed (a reverse proxy's).
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")
# nginx (deploy/nginx) refuses longer request lines and header fields than these, in JSON,
# so that gunicorn's own HTML refusals are never what a client sees: the line at its maximum,
# each field twice nginx's 4 KiB buffer, more fields than fit in nginx's header buffers.
limit_request_line = 8190
limit_request_field_size = 8190
limit_request_fields = 8192
accesslog = "-"
errorlog = "-"


def on_starting(server: Any) -> None:
    """Start with an empty samples directory: files of an earlier run's workers would
    otherwise be added to this run's counters."""
    path = Path(os.environ[MULTIPROC_DIR_VARIABLE])
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True, exist_ok=True)


def post_worker_init(worker: Any) -> None:
    """Load the tokenizer's vocabulary (about 0.7 s) as the worker starts, not in its first
    append's answer."""
    from conversations import tokens

    tokens.load()


def child_exit(server: Any, worker: Any) -> None:
    multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]


def on_exit(server: Any) -> None:
    if _temporary_dir:
        shutil.rmtree(os.environ[MULTIPROC_DIR_VARIABLE], ignore_errors=True)
