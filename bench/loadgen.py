"""The load generators: wrk (throughput and latency) and hey (a capped request rate).

Neither is Python: the service's own interpreter is never the client. Every function
here returns plain dicts that go into ``results.json`` unchanged.
"""

import csv
import json
import statistics
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
ROTATE_LUA = BENCH_DIR / "wrk" / "rotate.lua"


@dataclass(frozen=True)
class Target:
    """One HTTP request: ``path`` includes the query string."""

    method: str
    path: str
    token: str
    body: str = ""
    headers: tuple[tuple[str, str], ...] = field(default_factory=tuple)

    def line(self) -> str:
        fields = [self.method, self.path, self.body, f"Authorization: Bearer {self.token}"]
        fields += [f"{name}: {value}" for name, value in self.headers]
        if any("\t" in f or "\n" in f for f in fields):
            raise ValueError(f"tab or newline in a request of {self.path}")
        return "\t".join(fields)


def write_targets(targets: Sequence[Target], directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(
        "w", dir=directory, prefix="targets-", suffix=".tsv", delete=False, encoding="utf-8"
    ) as handle:
        handle.write("\n".join(t.line() for t in targets) + "\n")
        return Path(handle.name)


def wrk(
    base_url: str,
    targets: Sequence[Target],
    *,
    seconds: float,
    connections: int,
    threads: int = 1,
    tmp_dir: Path,
) -> dict[str, Any]:
    """One wrk run over ``targets`` in turn; requests per second and latency percentiles."""
    targets_file = write_targets(targets, tmp_dir)
    env = {"BENCH_TARGETS": str(targets_file), "PATH": "/usr/bin:/bin:/usr/local/bin"}
    command = [
        "wrk",
        f"-t{threads}",
        f"-c{max(connections, threads)}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "10s",
        "-s",
        str(ROTATE_LUA),
        base_url,
    ]
    completed = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=seconds + 60, check=False
    )
    targets_file.unlink(missing_ok=True)
    for line in completed.stdout.splitlines():
        if line.startswith("BENCH_RESULT "):
            raw: dict[str, Any] = json.loads(line.removeprefix("BENCH_RESULT "))
            duration = raw["duration_us"] / 1e6
            errors = raw["errors"]
            return {
                "rps": raw["requests"] / duration if duration else 0.0,
                "requests": raw["requests"],
                "seconds": duration,
                "connections": connections,
                "p50_ms": raw["latency_us"]["p50"] / 1000,
                "p90_ms": raw["latency_us"]["p90"] / 1000,
                "p99_ms": raw["latency_us"]["p99"] / 1000,
                "mean_ms": raw["latency_us"]["mean"] / 1000,
                "max_ms": raw["latency_us"]["max"] / 1000,
                "errors": sum(errors.values()),
                "non_2xx_3xx": errors["status"],
            }
    raise RuntimeError(f"wrk printed no result (exit {completed.returncode}): {completed.stderr[-2000:]}")


def median_of(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median throughput, and every run's figures beside it."""
    ordered = sorted(runs, key=lambda r: float(r["rps"]))
    middle = dict(ordered[(len(ordered) - 1) // 2])
    middle["rps"] = statistics.median(float(r["rps"]) for r in runs)
    middle["p50_ms"] = statistics.median(float(r["p50_ms"]) for r in runs)
    middle["p99_ms"] = statistics.median(float(r["p99_ms"]) for r in runs)
    middle["runs"] = [{k: r[k] for k in ("rps", "p50_ms", "p99_ms", "errors")} for r in runs]
    middle["errors"] = sum(int(r["errors"]) for r in runs)
    return middle


def hey_at_rate(
    base_url: str,
    targets: Sequence[Target],
    *,
    rate: float,
    seconds: float,
    tmp_dir: Path,
) -> dict[str, Any]:
    """Latency at a capped rate: one hey process per target (one connection each, a
    request every ``len(targets) / rate`` seconds), run together, results merged.

    wrk has no fixed-rate mode (wrk2 is not in Debian); hey's ``-q`` spaces each worker's
    requests by a ticker, which holds the offered rate while the server keeps up. A slow
    answer delays that worker's next request, so latency under overload is understated:
    the achieved rate is reported beside the target rate to show whether the cap held.
    """
    per_process = rate / len(targets)
    tmp_dir.mkdir(parents=True, exist_ok=True)
    processes: list[tuple[subprocess.Popen[bytes], Path]] = []
    for target in targets:
        out = Path(tempfile.mkstemp(dir=tmp_dir, prefix="hey-", suffix=".csv")[1])
        command = ["hey", "-z", f"{max(1, round(seconds))}s", "-c", "1", "-q", f"{per_process:.3f}"]
        command += ["-o", "csv", "-m", target.method, "-H", f"Authorization: Bearer {target.token}"]
        for name, value in target.headers:
            command += ["-H", f"{name}: {value}"]
        if target.body:
            command += ["-T", "application/json", "-d", target.body]
        command.append(base_url.rstrip("/") + target.path)
        with out.open("wb") as sink:
            processes.append((subprocess.Popen(command, stdout=sink, stderr=subprocess.DEVNULL), out))
    latencies: list[float] = []
    errors = 0
    for process, _ in processes:
        process.wait(timeout=seconds + 60)
    for _, out in processes:
        with out.open(encoding="utf-8") as handle:
            for row in csv.DictReader(handle):
                latencies.append(float(row["response-time"]) * 1000)
                if not row["status-code"].startswith("2"):
                    errors += 1
        out.unlink(missing_ok=True)
    if not latencies:
        raise RuntimeError("hey recorded no request")
    latencies.sort()

    def percentile(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p / 100 * len(latencies)))]

    return {
        "target_rps": rate,
        "achieved_rps": len(latencies) / seconds,
        "requests": len(latencies),
        "processes": len(targets),
        "p50_ms": percentile(50),
        "p90_ms": percentile(90),
        "p99_ms": percentile(99),
        "max_ms": latencies[-1],
        "errors": errors,
    }
