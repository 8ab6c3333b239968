"""What holds when ``fingerd serve`` is attacked (issue 15): the code before the fixes and now,
measured in one run, scenario by scenario.

    /usr/bin/python3 bench/hostile.py [--old 4ae1cab] [--quick] [--only 1a,2c]
                                                              (as root: `make bench-hostile`)

``--old`` is the code before the fixes: a commit of this repository (default 4ae1cab, the
last one before issue 15's fixes; its ``fingerd/`` is taken with ``git archive``) or a
directory holding a ``fingerd`` package; the new code is this checkout. Each is put in a
public temporary directory and run from there by Debian's ``/usr/bin/python3 -m fingerd
serve`` (as ``nobody`` when we are root), with the same config file for both, on loopback.

1. A slow upstream. The chain: ``static`` (``moshez``), then ``http`` against an HTTP server
   on loopback that drips one byte a second (timeout 3 s). 1a: 16 clients from 127.0.0.2 loop
   on a user only the upstream knows; 127.0.0.3 asks ``moshez``, one query after another,
   0.1 s apart. 1b: 64 such clients from 4 addresses; 127.0.0.6 asks ``moshez``, and
   ``quick`` (an http user the upstream answers at once), the same way.
2. Connections that hold the table (``max_connections`` 256, 16 per source, ``read_timeout``
   10 s: the defaults). 2a: 300 connections from 20 addresses that send nothing; 2b: the same
   dribbling a byte a second (never a line); 2c: 2000 idle ones from 100 addresses; 2d: 256
   clients from 16 addresses looping on the dripping upstream (their connections wait for a
   lookup: not idle). Every connection the server closes is opened again 1 s later (2a-2c),
   or at once (2d): the attack lasts. A client at 127.0.0.1 asks ``moshez`` every 0.25 s.
3. Clients that never read: ``max_answer_bytes`` 16 MiB, a 4 MiB answer from a ``file``
   backend (a config file is at most 1 MiB), ``max_connections`` 1024 so that all fit; 256
   clients from 16 addresses ask for it and never read (a 4 KiB receive buffer); meanwhile
   127.0.0.1 asks ``moshez`` every 0.25 s. The new code bounds the answers not yet taken by
   the kernel with ``max_unsent_bytes`` (its default, 64 MiB). One client reads the answer
   before the attack, so that the file is parsed and cached; ``--cold`` leaves that out, and
   the first lookups then all find it unparsed at once (the old code parses it on every
   worker thread: 696 MiB at peak; the new one parses it once, since the file backend
   takes a lock to parse: 92 MiB, as warm).

Per scenario a table: the measured client's queries (answered, busy, failed; its wait at
p50/p99/max over all its queries; how long until its first answer) and the server's peak RSS
(VmHWM), peak open descriptors and threads (sampled every 0.2 s) and CPU time. The last column
is new/old. Figures, never pass/fail. Everything on loopback, every loop bounded.

About 500 lines: the scenarios, the server they run and the report read best together; the
hostile side (upstream, clients, holders) is bench/hostile_peers.py.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
PYTHON = "/usr/bin/python3"  # Debian's interpreter, by path: `python3` on PATH may be a shim
sys.path.insert(0, str(BENCH))

import hostile_peers as peers  # noqa: E402
from machine import cpu_model, loadavg  # noqa: E402

STATIC = """
[[backend]]
type = "static"
[backend.users]
moshez = "Happy and well"
"""
BIG = 4 * 1024 * 1024
BEFORE = "4ae1cab"  # the last commit before issue 15's fixes
Row = dict[str, float]


def say(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def sources(prefix: str, count: int) -> list[str]:
    return [f"{prefix}.{n}" for n in range(1, count + 1)]


# -- the server under test ----------------------------------------------------------------------


def proc_status(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Served:
    """``fingerd serve`` from ``tree`` on a free loopback port, its log in a file; a thread
    samples its open descriptors and threads."""

    def __init__(self, tree: Path, config: str, work: Path, label: str,
                 env: dict[str, str] | None = None) -> None:
        path = work / f"{label}.toml"
        path.write_text(config)
        path.chmod(0o644)
        self.port = free_port()
        self.log = work / f"{label}.log"
        user = ["--user", "nobody"] if os.geteuid() == 0 else []
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [PYTHON, "-m", "fingerd", "serve", "--config", str(path), "--listen",
                 f"127.0.0.1:{self.port}", *user],
                env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(tree), "LANG": "C.UTF-8",
                     **(env or {})},
                cwd="/", stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log)
        deadline = time.monotonic() + 30
        while b"serving on" not in self.log.read_bytes():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{label}: fingerd serve did not start: "
                                   f"{self.log.read_text(errors='replace')[-2000:]}")
            time.sleep(0.05)
        pid = self.proc.pid
        self.rss_start = proc_status(pid, "VmRSS")
        self.cpu_start = cpu_seconds(pid)
        self.fds = self.threads = 0
        self.sampling = threading.Event()
        self.sampler = threading.Thread(target=self._sample, daemon=True)
        self.sampler.start()

    def _sample(self) -> None:
        pid = self.proc.pid
        while not self.sampling.wait(0.2):
            try:
                self.fds = max(self.fds, len(os.listdir(f"/proc/{pid}/fd")))
                self.threads = max(self.threads, proc_status(pid, "Threads"))
            except (OSError, KeyError):
                return

    def stats(self) -> Row:
        pid = self.proc.pid
        return {"rss_start": self.rss_start / 1024, "rss_peak": proc_status(pid, "VmHWM") / 1024,
                "fds": self.fds, "threads": self.threads,
                "cpu": cpu_seconds(pid) - self.cpu_start}

    def stop(self) -> None:
        if hasattr(self, "sampling"):
            self.sampling.set()
            self.sampler.join(5)
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(15)


def probe_row(prefix: str, results: list[tuple[float, str, float]]) -> Row:
    """The measured client's queries: counts by outcome, its waits, its first answer."""
    waits = sorted(wait for _, _, wait in results)
    ok = [started + wait for started, result, wait in results if result == "ok"]

    def pct(q: float) -> float:
        if not waits:
            return float("nan")
        return waits[min(len(waits) - 1, round(q * (len(waits) - 1)))] * 1000

    outcomes = [result for _, result, _ in results]
    return {f"{prefix}queries": len(results), f"{prefix}answered": outcomes.count("ok"),
            f"{prefix}busy": outcomes.count("busy"),
            f"{prefix}failed": len(results) - outcomes.count("ok") - outcomes.count("busy"),
            f"{prefix}p50": pct(0.5), f"{prefix}p99": pct(0.99),
            f"{prefix}max": waits[-1] * 1000 if waits else float("nan"),
            f"{prefix}first": min(ok) if ok else float("nan")}


# -- the scenarios: each runs one server and returns its row ------------------------------------


def http_config(upstream: peers.Upstream, server: str = "") -> str:
    return (server + STATIC + f'[[backend]]\ntype = "http"\nurl = "{upstream.url()}"\n'
            "timeout = 3\n")


def slow_upstream(tree: Path, work: Path, label: str, args: argparse.Namespace,
                  flooders: list[str], probe_from: str, quick_too: bool) -> Row:
    with contextlib.ExitStack() as stack:  # stopped in reverse order, whatever fails
        upstream = peers.Upstream()
        stack.callback(upstream.close)
        server = Served(tree, http_config(upstream), work, label)
        stack.callback(server.stop)
        loopers = peers.Loopers(server.port, flooders, 16, b"slowpoke\r\n")
        stack.callback(loopers.close)
        time.sleep(1.5)  # every looper waits on the upstream by now
        probes = [peers.Prober(server.port, probe_from, b"moshez\r\n", peers.ANSWER,
                               args.seconds, 0.1)]
        if quick_too:
            probes.append(peers.Prober(server.port, probe_from, b"quick\r\n", peers.QUICK,
                                       args.seconds, 0.1))
        for probe in probes:
            probe.start()
        for probe in probes:
            probe.join(args.seconds + 30)
        row = probe_row("", probes[0].results)
        if quick_too:
            row.update(probe_row("quick ", probes[1].results))
        row.update(server.stats())
    row["attack"] = sum(loopers.outcomes.values())
    return row


def held_table(tree: Path, work: Path, label: str, args: argparse.Namespace,
               holders: list[str], each: int, mode: str) -> Row:
    server = Served(tree, STATIC, work, label)
    seconds = args.seconds + 1.5
    try:
        proc = subprocess.Popen(
            [PYTHON, str(BENCH / "hostile_peers.py"), "hold", "--port", str(server.port),
             "--sources", ",".join(holders), "--each", str(each), "--mode", mode,
             "--seconds", str(seconds)], stdout=subprocess.PIPE, text=True)
    except BaseException:
        server.stop()
        raise
    try:
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != "ready":
            raise RuntimeError("the connection holders did not start")
        time.sleep(1.0)  # the table is full by now
        probe = peers.Prober(server.port, "127.0.0.1", b"moshez\r\n", peers.ANSWER,
                             args.seconds, 0.25)
        probe.run()
        row = probe_row("", probe.results)
        row.update(server.stats())
        counts = json.loads(proc.communicate(timeout=seconds + 30)[0] or "{}")
        row["attack"] = counts.get("connects", 0)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        server.stop()
    return row


def slow_lookups_hold(tree: Path, work: Path, label: str, args: argparse.Namespace) -> Row:
    with contextlib.ExitStack() as stack:
        upstream = peers.Upstream()
        stack.callback(upstream.close)
        server = Served(tree, http_config(upstream), work, label)
        stack.callback(server.stop)
        loopers = peers.Loopers(server.port, sources("127.0.4", 16), 16, b"slowpoke\r\n")
        stack.callback(loopers.close)
        time.sleep(1.5)
        probe = peers.Prober(server.port, "127.0.0.1", b"moshez\r\n", peers.ANSWER,
                             args.seconds, 0.25)
        probe.run()
        row = probe_row("", probe.results)
        row.update(server.stats())
    row["attack"] = sum(loopers.outcomes.values())
    return row


def never_read(tree: Path, work: Path, label: str, args: argparse.Namespace) -> Row:
    # A status file, as in tests/test_hostile.py: a config is at most 1 MiB. Parsed once and
    # kept (it is not "racily" new: an hour old).
    status = work / f"{label}.status"
    status.write_text("big: " + "y" * BIG + "\n")
    status.chmod(0o644)
    os.utime(status, (time.time() - 3600,) * 2)
    config = ("[server]\nmax_answer_bytes = 16777216\nmax_connections = 1024\n" + STATIC
              + f'[[backend]]\ntype = "file"\npath = "{status}"\nmax_bytes = 8388608\n')
    server = Served(tree, config, work, label, env=args.malloc_env)
    stalled: list[socket.socket] = []
    try:
        # One reader first, so that the file is parsed and cached before the attack, and
        # what is measured is the unsent answers alone (--cold: the attack meets it unparsed).
        if not args.cold:
            peers.ask_from("127.0.0.1", server.port, b"big\r\n", b"", 60.0)
        rss_before = proc_status(server.proc.pid, "VmRSS") / 1024
        probe = peers.Prober(server.port, "127.0.0.1", b"moshez\r\n", peers.ANSWER,
                             args.seconds, 0.25)
        probe.start()
        started = time.monotonic()
        stalled = peers.stalled_clients(server.port, sources("127.0.5", 16), args.stalled // 16,
                                        b"big\r\n", started + args.seconds)
        connected = time.monotonic() - started
        probe.join(args.seconds + 30)
        row = probe_row("", probe.results)
        row.update(server.stats())
        seen = peers.first_bytes(stalled, b"yyyy")
        row.update({"rss_before": rss_before,
                    "stalled answer": seen["answer"], "stalled busy": seen["busy"],
                    "stalled nothing": seen["nothing"] + seen["error"],
                    "connect all": connected})
    finally:
        for s in stalled:
            s.close()
        server.stop()
    return row


# -- the report ---------------------------------------------------------------------------------

PROBE_ROWS = [("queries", "queries", "{:.0f}"), ("answered", "  answered", "{:.0f}"),
              ("busy", "  busy", "{:.0f}"), ("failed", "  failed", "{:.0f}"),
              ("p50", "  wait p50 ms", "{:.1f}"), ("p99", "  wait p99 ms", "{:.1f}"),
              ("max", "  wait max ms", "{:.1f}"), ("first", "  first answer after s", "{:.2f}")]
SERVER_ROWS = [("rss_start", "server RSS at start MiB", "{:.1f}"),
               ("rss_peak", "server peak RSS MiB", "{:.1f}"),
               ("fds", "server peak fds", "{:.0f}"), ("threads", "server peak threads", "{:.0f}"),
               ("cpu", "server CPU s", "{:.2f}")]


def rows_for(probe: str, extra: list[tuple[str, str, str]],
             quick: bool = False) -> list[tuple[str, str, str]]:
    rows = [(key, f"{probe}: {label.strip()}" if key == "queries" else label, fmt)
            for key, label, fmt in PROBE_ROWS]
    if quick:
        rows += [("quick " + key, "`quick` (http, at once): " + label.strip()
                  if key == "queries" else label, fmt) for key, label, fmt in PROBE_ROWS]
    return rows + extra + SERVER_ROWS


def table(old: Row, new: Row, rows: list[tuple[str, str, str]]) -> str:
    lines = [f"  {'':42s} {'old':>10s} {'new':>10s} {'new/old':>9s}"]
    for key, label, fmt in rows:
        a, b = old.get(key, float("nan")), new.get(key, float("nan"))
        ratio = f"{b / a:.2g}x" if a == a and b == b and a else "-"
        sa = fmt.format(a) if a == a else "-"
        sb = fmt.format(b) if b == b else "-"
        lines.append(f"  {label:42s} {sa:>10s} {sb:>10s} {ratio:>9s}")
    return "\n".join(lines)


Scenario = Callable[[Path, Path, str, argparse.Namespace], Row]


def scenarios(args: argparse.Namespace) -> list[tuple[str, str, Scenario, list[tuple[str, str,
                                                                                       str]]]]:
    attack = [("attack", "attack: connections made", "{:.0f}")]
    loops = [("attack", "attack: queries of the loopers", "{:.0f}")]
    a, b, c = args.holders_2ab, args.holders_2c, args.stalled
    return [
        ("1a", "slow upstream: 16 clients from 127.0.0.2 loop on a user the http backend "
               "drips (1 B/s, timeout 3 s); 127.0.0.3 asks `moshez` (static), 0.1 s apart",
         lambda t, w, n, s: slow_upstream(t, w, n, s, ["127.0.0.2"], "127.0.0.3", False),
         rows_for("`moshez` from 127.0.0.3", loops)),
        ("1b", "slow upstream: 64 clients from 127.0.0.2-5 loop on it; 127.0.0.6 asks "
               "`moshez` and `quick` (http, answered at once), each 0.1 s apart",
         lambda t, w, n, s: slow_upstream(t, w, n, s, sources("127.0.0", 5)[1:], "127.0.0.6",
                                          True),
         rows_for("`moshez` from 127.0.0.6", loops, quick=True)),
        ("2a", f"{a} connections from 20 addresses send nothing (reopened 1 s after the "
               "server closes them); 127.0.0.1 asks `moshez` every 0.25 s",
         lambda t, w, n, s: held_table(t, w, n, s, sources("127.0.1", 20), a // 20, "idle"),
         rows_for("`moshez` from 127.0.0.1", attack)),
        ("2b", f"{a} connections from 20 addresses dribble a byte a second, never a line "
               "(reopened 1 s after); 127.0.0.1 asks `moshez` every 0.25 s",
         lambda t, w, n, s: held_table(t, w, n, s, sources("127.0.1", 20), a // 20, "dribble"),
         rows_for("`moshez` from 127.0.0.1", attack)),
        ("2c", f"{b} idle connections from 100 addresses (reopened 1 s after); 127.0.0.1 "
               "asks `moshez` every 0.25 s",
         lambda t, w, n, s: held_table(t, w, n, s, sources("127.0.2", 100), b // 100, "idle"),
         rows_for("`moshez` from 127.0.0.1", attack)),
        ("2d", "256 clients from 16 addresses loop on the dripping upstream (connections "
               "waiting for a lookup, not idle); 127.0.0.1 asks `moshez` every 0.25 s",
         slow_lookups_hold, rows_for("`moshez` from 127.0.0.1", loops)),
        ("3", f"{c} clients from 16 addresses ask for a 4 MiB answer and never read "
              "(max_answer_bytes 16 MiB, max_connections 1024); 127.0.0.1 asks `moshez` "
              "every 0.25 s",
         never_read,
         rows_for("`moshez` from 127.0.0.1", [
             ("connect all", "stalled: all connected after s", "{:.2f}"),
             ("stalled answer", "stalled: sent the answer", "{:.0f}"),
             ("stalled busy", "stalled: told busy", "{:.0f}"),
             ("stalled nothing", "stalled: sent nothing yet", "{:.0f}"),
             ("rss_before", "server RSS before the attack MiB", "{:.1f}")])),
    ]


def public_copy(tree: Path, into: Path) -> Path:
    """The tree's fingerd package, where ``nobody`` can import it."""
    shutil.copytree(tree / "fingerd", into / "fingerd",
                    ignore=shutil.ignore_patterns("__pycache__"))
    for path in [into, *into.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return into


def old_code(old: str, into: Path) -> tuple[Path, str]:
    """The code before the fixes, in ``into``: from a directory, or a commit of this repository
    (``git archive``); and what to call it."""
    if Path(old).is_dir():
        tree = Path(old).resolve()
        if not (tree / "fingerd" / "server.py").is_file():
            raise FileNotFoundError(f"{tree}/fingerd/server.py does not exist")
        return public_copy(tree, into), f"{tree} at {describe(tree)}"
    into.mkdir()
    archive = subprocess.run(["git", "-C", str(REPO), "archive", "--format=tar", old, "fingerd"],
                             capture_output=True, timeout=60)
    if archive.returncode:
        raise subprocess.SubprocessError(
            archive.stderr.decode(errors="replace").strip() + " (a shallow clone lacks it: "
            "`git fetch --unshallow`)")
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True, timeout=60)
    for path in [into, *into.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return into, f"commit {old}"


def describe(tree: Path) -> str:
    def git(*argv: str) -> str:
        return subprocess.run(["git", "-C", str(tree), *argv], capture_output=True, text=True,
                              timeout=30).stdout.strip()
    dirty = " (with uncommitted changes to fingerd/)" if git("status", "--porcelain",
                                                             "fingerd") else ""
    return f"{git('rev-parse', '--short', 'HEAD') or 'unknown'}{dirty}"


def machine() -> str:
    python = subprocess.run([PYTHON, "--version"], capture_output=True, text=True,
                            timeout=30).stdout.strip()
    return f"{os.cpu_count()} CPUs ({cpu_model()}), kernel {os.uname().release}, {python}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", default=BEFORE,
                        help=f"the code before the fixes: a commit (default {BEFORE}) or a "
                             "directory with a fingerd package")
    parser.add_argument("--seconds", type=float, default=15.0,
                        help="how long the measured client asks, per scenario and server "
                             "(default 15)")
    parser.add_argument("--only", default="", help="comma-separated scenarios (1a,...,3)")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: 3 s per scenario, fewer idle connections (2c) "
                             "and readers that never read (3); numbers meaningless")
    parser.add_argument("--cold", action="store_true",
                        help="scenario 3 without a first reader: the attack meets the status "
                             "file unparsed")
    parser.add_argument("--malloc-mmap-threshold", type=int, metavar="BYTES",
                        help="scenario 3's servers get MALLOC_MMAP_THRESHOLD_=BYTES: large "
                             "blocks are mmap()ed and given back when freed, so RSS is what "
                             "is held, not what glibc keeps for reuse")
    args = parser.parse_args()
    args.malloc_env = ({"MALLOC_MMAP_THRESHOLD_": str(args.malloc_mmap_threshold)}
                       if args.malloc_mmap_threshold else None)
    args.holders_2ab, args.holders_2c, args.stalled = 300, 2000, 256
    if args.quick:
        args.seconds, args.holders_2ab, args.holders_2c, args.stalled = 3.0, 300, 400, 32
    args.seconds = min(max(1.0, args.seconds), 120.0)
    want = {name for name in args.only.split(",") if name}
    chosen = [s for s in scenarios(args) if not want or s[0] in want]
    # 2000 held connections and their server: descriptors for both (the server inherits it).
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 8192 and os.geteuid() == 0:
        hard = 8192  # root may raise it
    resource.setrlimit(resource.RLIMIT_NOFILE, (8192 if hard == resource.RLIM_INFINITY
                                                else min(8192, hard), hard))
    load_before = loadavg()
    print(f"# fingerd serve under attack (issue 15), {time.strftime('%Y-%m-%d %H:%M:%S')}")
    print(f"machine: {machine()}")
    print(f"command: {shlex.join([PYTHON, 'bench/hostile.py', *sys.argv[1:]])}")
    with tempfile.TemporaryDirectory(prefix="fingerd-bench-hostile-") as tmp:
        work = Path(tmp)
        work.chmod(0o755)
        try:
            old_tree, old_name = old_code(args.old, work / "old")
        except (OSError, subprocess.SubprocessError) as e:
            say(f"--old {args.old}: {e}")
            return 2
        trees = (old_tree, public_copy(REPO, work / "new"))
        print(f"old: {old_name}; new: {REPO} at {describe(REPO)}; each scenario runs old, "
              f"then new; the measured client asks for {args.seconds:g} s")
        print(f"load average at start: {load_before}", flush=True)
        for key, title, run, rows in chosen:
            results = []
            for tree, label in zip(trees, ("old", "new"), strict=True):
                say(f"{key}: {label}")
                results.append(run(tree, work, f"{key}-{label}", args))
            print(f"\n## {key}. {title}")
            print(table(results[0], results[1], rows), flush=True)
    print(f"\nload average at end: {loadavg()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
