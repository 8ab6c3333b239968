"""What the ``status`` backend costs the per-connection handler (README, "Users set their own
status"). Needs nothing but this checkout and Debian's /usr/bin/python3; as root the status
service runs as nobody.

    /usr/bin/python3 bench/status_lookup.py [--rounds 10] [--per-round 20]

1. Per connection: the handler (``/usr/bin/python3 -I``, config from the marshal cache, as
   fingerd@.service runs it) answering one query on a socketpair, CPU time (user+sys, from
   wait4) and wall time per process, with a ``static`` backend and with the ``status``
   backend (a status set; the status service running). Interleaved round by round; medians.
2. Imports: ``python3 -I -X importtime`` of that handler run, cumulative µs of
   fingerd.backends.status (which includes fingerd.status_protocol and _socket); median.
3. In process: one ``lookup()`` through the backend (connect, GET, reply), hit and miss;
   median µs.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PYTHON = "/usr/bin/python3"
sys.path.insert(0, str(REPO))


def handler_run(config: Path, cache: Path, query: bytes, importtime: bool = False
                ) -> tuple[float, float, bytes, str]:
    """(CPU seconds, wall seconds, answer, stderr) of one handler process."""
    code = (f"import sys; sys.path.insert(0, {str(REPO)!r}); "
            f"sys.argv = ['fingerd', '--config', {str(config)!r}]; "
            "from fingerd.cli import run; run()")
    ours, theirs = socket.socketpair()
    started = time.monotonic()
    with ours, theirs:
        proc = subprocess.Popen([PYTHON, "-I", *(["-X", "importtime"] if importtime else []),
                                 "-c", code], stdin=theirs, stdout=theirs,
                                stderr=subprocess.PIPE, env={"CACHE_DIRECTORY": str(cache)})
        theirs.close()
        ours.sendall(query)
        ours.settimeout(30)
        answer = b""
        while chunk := ours.recv(65536):
            answer += chunk
        assert proc.stderr is not None
        err = proc.stderr.read().decode()
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.monotonic() - started
    return usage.ru_utime + usage.ru_stime, wall, answer, err


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--per-round", type=int, default=20)
    args = parser.parse_args()
    me = __import__("pwd").getpwuid(os.getuid()).pw_name
    work = Path(tempfile.mkdtemp(prefix="fingerd-bench-status-"))
    work.chmod(0o755)
    server = None
    try:
        run_dir, state = work / "run", work / "state"
        for d in (run_dir, state):
            d.mkdir()
            if os.geteuid() == 0:
                os.chown(d, 65534, 65534)
        sock = run_dir / "status.sock"
        prefix = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--"] \
            if os.geteuid() == 0 else []
        env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)}
        server = subprocess.Popen([*prefix, PYTHON, "-m", "fingerd", "status-server",
                                   "--socket", str(sock), "--state-dir", str(state)],
                                  env=env, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while not sock.exists():
            if time.monotonic() > deadline:
                raise SystemExit("status-server did not start")
            time.sleep(0.05)
        time.sleep(0.2)
        subprocess.run([PYTHON, "-m", "fingerd", "status", "set", "--socket", str(sock),
                        "Happy and well"], env=env, check=True, capture_output=True)
        configs = {
            "static": f'[[backend]]\ntype = "static"\n[backend.users]\n{me} = "Happy and well"\n',
            "status": f'[[backend]]\ntype = "status"\nsocket = "{sock}"\n',
        }
        paths = {}
        for name, text in configs.items():
            path = work / f"{name}.toml"
            path.write_text(text)
            cache = work / f"cache-{name}"
            cache.mkdir()
            paths[name] = (path, cache)
            answer = handler_run(path, cache, me.encode() + b"\r\n")[2]  # fills the cache
            assert answer == b"Happy and well\r\n", (name, answer)
        cpu: dict[str, list[float]] = {n: [] for n in configs}
        wall: dict[str, list[float]] = {n: [] for n in configs}
        for _ in range(args.rounds):
            for name, (path, cache) in paths.items():
                for _ in range(args.per_round):
                    c, w, _, _ = handler_run(path, cache, me.encode() + b"\r\n")
                    cpu[name].append(c)
                    wall[name].append(w)
        print(f"per connection, {args.rounds} x {args.per_round} handler runs each, medians:")
        for name in configs:
            print(f"  {name:7} CPU {statistics.median(cpu[name]) * 1000:6.2f} ms   "
                  f"wall {statistics.median(wall[name]) * 1000:6.2f} ms")
        extra_cpu = statistics.median(cpu["status"]) - statistics.median(cpu["static"])
        extra_wall = statistics.median(wall["status"]) - statistics.median(wall["static"])
        print(f"  status - static: CPU {extra_cpu * 1000:+.2f} ms, "
              f"wall {extra_wall * 1000:+.2f} ms")
        costs = []
        modules: set[str] = set()
        for _ in range(15):
            err = handler_run(*paths["status"], me.encode() + b"\r\n", importtime=True)[3]
            found = re.search(r"^import time:\s+\d+ \|\s+(\d+) \|\s*fingerd\.backends\.status$",
                              err, re.MULTILINE)
            assert found, err
            costs.append(int(found.group(1)))
            modules = set(re.findall(r"^import time:\s+\d+ \|\s+\d+ \|\s*(\S+)$", err,
                                     re.MULTILINE))
        print(f"import fingerd.backends.status (cumulative, median of 15): "
              f"{statistics.median(costs):.0f} us")
        print(f"  heavy modules imported: "
              f"{sorted({'json', 're', 'socket', 'enum', 'asyncio'} & modules) or 'none'}")
        from fingerd.backends.status import StatusBackend
        from fingerd.config import Options
        from fingerd.protocol import Query

        backend = StatusBackend(Options({"socket": str(sock)}, "bench", "backend"))
        for query, label in ((Query(me), "hit"), (Query("no-such-account-x"), "miss")):
            times = []
            for _ in range(1000):
                t = time.perf_counter()
                backend.lookup(query)
                times.append(time.perf_counter() - t)
            print(f"lookup() in process, {label}: median {statistics.median(times) * 1e6:.0f} us")
    finally:
        if server is not None:
            server.terminate()
            server.wait(10)
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
