"""What decides fingerd-web.socket's Accept=: per-connection start-up against one process.

    /usr/bin/python3 bench/web.py [--rounds 20] [--requests 5000]

1. Per process, CPU time (user+sys, from wait4) of Debian's interpreter starting, variants
   interleaved round by round, medians: a bare ``python3 -I``; importing h11; importing what a
   per-connection web handler would need (h11 and fingerd's web modules, no asyncio); and the
   long-running server's imports (asyncio too).
2. The long-running ``fingerd web`` (asyncio + h11, a static backend, a log line per request
   to /dev/null) answering ``--requests`` HTTP/1.1 requests on loopback, one connection each
   (as nginx sends them by default), 16 at a time: its CPU time per request, from
   /proc/PID/stat.

A per-connection unit would pay (1) on every request, plus systemd's set-up of a sandboxed
instance (about 30 ms: the shipped fingerd@.service answers 25 to 30 queries a second in a
booted bookworm, README "Flood protection"); the long-running one pays (2). Loopback only,
every run bounded.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
PYTHON = "/usr/bin/python3"
sys.path.insert(0, str(BENCH))

from loadgen import run as loadgen  # noqa: E402

PREFIX = f"import sys; sys.path.insert(0, {str(REPO)!r}); "
VARIANTS = {
    "python3 -I -c pass": "pass",
    "import h11": "import h11",
    "per-connection web handler imports": PREFIX + (
        "import h11, fingerd.web.routes, fingerd.web.webfinger, fingerd.backends, fingerd.handler"),
    "long-running fingerd web imports": PREFIX + "import fingerd.web.server",
}
CONFIG = """\
[[backend]]
type = "static"
[backend.users]
moshez = "Happy and well"
"""


def cpu_ms(code: str) -> float:
    pid = os.fork()
    if pid == 0:  # pragma: no cover (the child)
        os.execv(PYTHON, [PYTHON, "-I", "-c", code])  # noqa: S606 (wait4 needs our own child)
    _, status, usage = os.wait4(pid, 0)
    if status != 0:
        raise RuntimeError(f"{code!r} failed: {status}")
    return (usage.ru_utime + usage.ru_stime) * 1000


def proc_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def long_running(requests: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as directory:
        config = Path(directory) / "fingerd.toml"
        config.write_text(CONFIG)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)}
        user = ["--user", "nobody"] if os.geteuid() == 0 else []
        if user:
            os.chmod(directory, 0o755)  # noqa: S103 (nobody reads the config in it)
            config.chmod(0o644)
        proc = subprocess.Popen([PYTHON, "-m", "fingerd", "web", "--config", str(config),
                                 "--listen", f"127.0.0.1:{port}", *user], env=env,
                                stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
            query = (b"GET /moshez?format=text HTTP/1.1\r\nHost: localhost\r\n"
                     b"Connection: close\r\n\r\n")
            loadgen("127.0.0.1", port, query, None, 16, 200, 60)  # warm-up
            before = proc_cpu(proc.pid)
            result = loadgen("127.0.0.1", port, query, None, 16, requests, 120)
            used = proc_cpu(proc.pid) - before
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    requests = int(result["requests"])
    return {"requests": requests, "errors": float(result["errors"]),
            "cpu_ms_per_request": used * 1000 / max(1, requests), "rps": float(result["rps"])}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--requests", type=int, default=5000)
    args = parser.parse_args()
    samples: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for code in VARIANTS.values():
        cpu_ms(code)  # warm the page cache and .pyc files
    for _ in range(max(1, args.rounds)):
        for name, code in VARIANTS.items():
            samples[name].append(cpu_ms(code))
    base = statistics.median(samples["python3 -I -c pass"])
    print(f"per process, CPU ms (median of {args.rounds}, Debian's {PYTHON} -I):")
    for name, values in samples.items():
        median = statistics.median(values)
        print(f"  {name:38s} {median:7.2f}  {median / base:5.2f}x")
    result = long_running(max(100, args.requests))
    print(f"long-running fingerd web, {int(result['requests'])} requests, c=16, "
          f"one connection each: {result['cpu_ms_per_request']:.3f} ms CPU per request, "
          f"{result['rps']:.0f} req/s, errors {int(result['errors'])}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
