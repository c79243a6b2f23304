"""The service under gunicorn, started as in production, on a free loopback port."""

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parent.parent
# The deployment's gunicorn settings (deploy/start.sh); command-line options win over them.
GUNICORN_CONF = PROJECT_DIR / "deploy" / "gunicorn_conf.py"
READY_TIMEOUT_SECONDS = 60.0


@dataclass
class Server:
    kind: str
    command: list[str]
    process: subprocess.Popen[bytes]
    url: str
    log_path: Path

    def worker_pids(self) -> list[int]:
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        return [int(pid) for pid in children.read_text().split()]

    def rss_kib(self) -> int:
        """Resident memory of the workers, summed (VmRSS of /proc/<pid>/status)."""
        total = 0
        for pid in self.worker_pids():
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        return total

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start(kind: str, *, env: dict[str, str], workers: int, threads: int, log_dir: Path) -> Server:
    """gunicorn as deployed (``-c deploy/gunicorn_conf.py`` when the project has it: its
    access log, keep-alive and metrics set-up) on a loopback port, with ``config.wsgi`` sync
    workers with threads (``gthread``) or uvicorn workers on ``config.asgi``."""
    port = free_port()
    command = [sys.executable, "-m", "gunicorn"]
    if GUNICORN_CONF.is_file():
        command += ["--config", str(GUNICORN_CONF.relative_to(PROJECT_DIR))]
    command += ["--bind", f"127.0.0.1:{port}", "--workers", str(workers), "--graceful-timeout", "5"]
    if kind == "gthread":
        command += ["--worker-class", "gthread", "--threads", str(threads), "config.wsgi:application"]
    elif kind == "uvicorn":
        command += ["--worker-class", "uvicorn.workers.UvicornWorker", "config.asgi:application"]
    else:
        raise ValueError(kind)
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"server-{kind}-{port}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command, cwd=PROJECT_DIR, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT
        )
    server = Server(
        kind=kind, command=command, process=process, url=f"http://127.0.0.1:{port}", log_path=log_path
    )
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"{kind} server exited at start:\n{server.log_tail()}")
        try:
            with urllib.request.urlopen(f"{server.url}/readyz", timeout=2) as answer:  # noqa: S310
                if answer.status == 200 and len(server.worker_pids()) >= workers:
                    return server
        except OSError:
            pass
        if time.monotonic() > deadline:
            server.stop()
            raise RuntimeError(
                f"{kind} server not ready in {READY_TIMEOUT_SECONDS:g} s:\n{server.log_tail()}"
            )
        time.sleep(0.2)
