"""What the per-connection sandbox costs: fingerd@.service variants side by side, in a booted
systemd, in one run.

    /usr/bin/python3 bench/sandbox.py [--rounds 5] [--requests 240] [--concurrency 16]
                                      [--deb dist/fingerd_*.deb] [--variant KEY=UNIT] ...
    make bench-sandbox                (as root; BENCH_SANDBOX_ARGS=... passes options)

Boots the test container (tests/container.py: Debian bookworm, systemd 252, under
systemd-nspawn), installs the .deb ($FINGERD_DEB, --deb, or built now) and gives every variant
a socket of its own: a copy of the installed fingerd.socket on another port with
``MaxConnectionsPerSource=`` raised to ``MaxConnections=`` (the load comes from one address, which
the shipped limit of 8 would mostly turn away), and a copy of the variant's service template.
Then it runs bench/loadgen.py inside the container against each variant in turn, ``--rounds``
times, each round in a rotated order so that drift and the other users of the CPU hit every
variant alike, and prints the medians: requests/s, p50 and p99 latency, and ratios to the unit on
main before issue 16 (the baseline of its 1.5x/2x targets) and to the unhardened unit.

The variants:
  * baseline: bench/baseline@.service, fingerd@.service as it was before issue 16;
  * shipped: the installed fingerd@.service (the no-network sandbox, the default);
  * shipped + network.conf: the same with the installed network drop-in (the `http` backend's
    and forwarding's form);
  * unhardened: fingerd as User=nobody, no sandbox at all;
  * C floor in the shipped sandbox, and unhardened: bench/floor.c, a handler that reads a line
    and writes one, so the sandbox's own cost shows apart from Python's;
  * --variant KEY=PATH adds any other unit file (a template; ExecStart= and all).

Every variant's ``systemd-analyze security --offline=true`` exposure is printed with it, and its
CPU time per connection: that of the container's systemd and of everything it reaped (each
instance's set-up and handler), steadier than requests per second where other work shares the
CPU. Errors systemd logs during the run (e.g. "Failed to attach to cgroup") are counted. The
container is the e2e tests' by default; ``--host-like`` boots it without nspawn's read-only mounts
below /proc (ten, where a booted host has one or two, and ProtectProc= unmounts each in every
instance), ``--unified`` with the unified cgroup tree a bookworm host has. The numbers are noisy
where other work shares the CPU: read the ratios, and re-run on a quiet machine before quoting
absolute figures.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(REPO / "tests"))
import container  # noqa: E402  (tests/container.py: the booted bookworm the e2e tests use)
from machine import cpu_model, loadavg  # noqa: E402  (bench/machine.py, beside this file)

PYTHON = "/usr/bin/python3"
ANSWER = "Happy and well"
CONFIG = f"""\
[[backend]]
type = "static"
[backend.users]
moshez = "{ANSWER}"
"""
FIRST_PORT = 7901
FLOOR = "/usr/local/bin/finger-floor"
UNHARDENED = """\
[Unit]
Description=bench: fingerd with no sandbox
CollectMode=inactive-or-failed

[Service]
ExecStart=/usr/bin/fingerd
StandardInput=socket
StandardOutput=socket
StandardError=journal
RuntimeMaxSec=30s
User=nobody
CacheDirectory=fingerd
"""


def say(message: str) -> None:
    print(f"bench-sandbox: {message}", file=sys.stderr, flush=True)


@dataclass
class Variant:
    key: str
    label: str
    unit: str
    port: int = 0
    exposure: float | None = None
    runs: list[dict[str, float]] = field(default_factory=list)

    @property
    def service(self) -> str:
        return f"fbench-{self.key}@.service"

    @property
    def socket(self) -> str:
        return f"fbench-{self.key}.socket"


# -- setup -----------------------------------------------------------------------------------------

def find_deb(args: argparse.Namespace, work: Path) -> Path:
    given = args.deb or os.environ.get("FINGERD_DEB")
    if given:
        return Path(given).resolve()
    say("building the .deb (make -f mk/deb.mk deb, nocheck)")
    env = {**os.environ, "DEB_BUILD_OPTIONS": "nocheck"}
    subprocess.run(["make", "-s", "-f", "mk/deb.mk", "deb", f"DEBPKG_DIST={work}"], cwd=REPO,
                   check=True, env=env, stdout=subprocess.DEVNULL, timeout=1800)
    (deb,) = work.glob("fingerd_*_all.deb")
    return deb


def build_floor(work: Path) -> Path:
    out = work / "finger-floor"
    subprocess.run(["cc", "-O2", "-static", "-Wall", "-o", str(out), str(BENCH / "floor.c")],
                   check=True, timeout=120)
    return out


def score(box: container.Container, path: str) -> float | None:
    out = box.run(["systemd-analyze", "security", "--offline=true", "--no-pager", path],
                  check=False).stdout
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", out)
    return float(match.group(1)) if match else None


def socket_unit(installed: str, port: int) -> str:
    """The installed fingerd.socket on another port, MaxConnectionsPerSource= as high as
    MaxConnections=: the load generator is one address."""
    text = installed.split("[Install]")[0]
    text = re.sub(r"^ListenStream=.*$", f"ListenStream={port}", text, flags=re.MULTILINE)
    total = re.search(r"^MaxConnections=(\d+)$", text, flags=re.MULTILINE)
    assert total, "fingerd.socket has no MaxConnections="
    return re.sub(r"^MaxConnectionsPerSource=.*$", f"MaxConnectionsPerSource={total.group(1)}",
                  text, flags=re.MULTILINE)


def service_unit(text: str, key: str, exec_start: str | None = None) -> str:
    """A variant's template: its own cache directory (so that no two variants' users fight
    over one), and its own ExecStart= where given."""
    text = re.sub(r"^CacheDirectory=.*$", f"CacheDirectory=fbench-{key}", text,
                  flags=re.MULTILINE)
    if exec_start:
        text = re.sub(r"^ExecStart=.*$", f"ExecStart={exec_start}", text, flags=re.MULTILINE)
    return text


def variants(box: container.Container, extra: list[str]) -> list[Variant]:
    shipped = box.run(["cat", "/lib/systemd/system/fingerd@.service"]).stdout
    network = box.run(["cat", "/usr/share/fingerd/network.conf"], check=False)
    out = [
        Variant("baseline", "before #16 (baseline)", (BENCH / "baseline@.service").read_text()),
        Variant("shipped", "shipped (no network)", shipped),
    ]
    if network.returncode == 0:
        out.append(Variant("network", "shipped + network.conf", shipped + "\n" + network.stdout))
    out += [
        Variant("unhardened", "unhardened", UNHARDENED),
        Variant("c-shipped", "C floor, shipped sandbox", shipped),
        Variant("c-unhardened", "C floor, unhardened", UNHARDENED),
    ]
    for spec in extra:
        key, _, path = spec.partition("=")
        if not re.fullmatch(r"[a-z0-9-]{1,20}", key) or not path:
            raise SystemExit(f"--variant {spec!r}: want KEY=PATH, KEY of a-z, 0-9 and -")
        out.append(Variant(key, key, Path(path).read_text()))
    for number, v in enumerate(out):
        v.port = FIRST_PORT + number
        v.unit = service_unit(v.unit, v.key, FLOOR if v.key.startswith("c-") else None)
    return out


def install_package(box: container.Container, deb: Path, floor: Path) -> None:
    box.copy_in(deb, "/root/")
    box.run(["apt-get", "install", "-y", f"/root/{deb.name}"], timeout=300)
    box.write_file("/etc/fingerd/fingerd.toml", CONFIG)
    box.copy_in(floor, FLOOR, 0o755)
    box.copy_in(BENCH / "loadgen.py", "/root/")


def install_variants(box: container.Container, vs: list[Variant]) -> None:
    installed_socket = box.run(["cat", "/lib/systemd/system/fingerd.socket"]).stdout
    for v in vs:
        box.write_file(f"/etc/systemd/system/{v.service}", v.unit)
        box.write_file(f"/etc/systemd/system/{v.socket}", socket_unit(installed_socket, v.port))
    box.run(["systemctl", "daemon-reload"])
    box.run(["systemctl", "start", *(v.socket for v in vs)])
    for v in vs:
        v.exposure = score(box, f"/etc/systemd/system/{v.service}")


# -- measuring -------------------------------------------------------------------------------------

def instances(box: container.Container) -> int:
    out = box.run(["systemctl", "list-units", "--all", "--plain", "--no-legend",
                   "fbench-*@*"]).stdout
    return len([line for line in out.splitlines() if line.strip()])


def wait_idle(box: container.Container, timeout: float = 60.0) -> None:
    """Until the last instance of the previous run is gone, so that runs do not overlap."""
    deadline = time.monotonic() + timeout
    while instances(box) and time.monotonic() < deadline:
        time.sleep(0.2)


def load(box: container.Container, v: Variant, count: int, concurrency: int) -> dict[str, float]:
    out = box.run([PYTHON, "/root/loadgen.py", "--port", str(v.port), "--concurrency",
                   str(concurrency), "--count", str(count), "--duration", "300",
                   "--expect", ANSWER], timeout=330).stdout
    result: dict[str, float] = json.loads(out)
    return result


def pid1_cpu(box: container.Container) -> float:
    """CPU seconds of the container's systemd and of every process it has reaped: each
    instance's set-up (forked from PID 1, namespaces and all) and the handler it then runs."""
    fields = box.run(["cat", "/proc/1/stat"]).stdout.rpartition(")")[2].split()
    ticks = sum(int(f) for f in fields[11:15])  # utime stime cutime cstime
    return ticks / os.sysconf("SC_CLK_TCK")


def spawn_failures(box: container.Container, cursor: str) -> dict[str, int]:
    """Errors systemd (PID 1) logged since ``cursor``, counted by message (instance names
    and numbers blanked)."""
    out = box.run(["journalctl", "--no-pager", "-o", "cat", "_PID=1", "-p", "err",
                   f"--after-cursor={cursor}"], check=False).stdout
    counts: dict[str, int] = {}
    for line in out.splitlines():
        line = re.sub(r"fbench-[\w-]+@[^ :]*", "fbench-X@…", line)
        counts[line] = counts.get(line, 0) + 1
    return counts


def measure(box: container.Container, vs: list[Variant], args: argparse.Namespace) -> None:
    for v in vs:
        say(f"warm-up: {v.label}")
        load(box, v, 2 * args.concurrency, args.concurrency)
        wait_idle(box)
    for number in range(args.rounds):
        order = vs[number % len(vs):] + vs[:number % len(vs)]
        for v in order:
            cpu = pid1_cpu(box)
            result = load(box, v, args.requests, args.concurrency)
            wait_idle(box)
            result["cpu_ms"] = (pid1_cpu(box) - cpu) / args.requests * 1000
            say(f"round {number + 1}/{args.rounds}: {v.label}: {result['rps']:.1f} req/s, "
                f"{result['cpu_ms']:.1f} ms CPU per connection, errors {result['errors']}, "
                f"wrong {result['wrong']}")
            v.runs.append(result)


# -- the report ------------------------------------------------------------------------------------

def median(v: Variant, key: str) -> float:
    return statistics.median(r[key] for r in v.runs)


def report(vs: list[Variant], args: argparse.Namespace, failures: dict[str, int],
           load_before: str, load_after: str, machine: str) -> str:
    base = next(v for v in vs if v.key == "baseline")
    plain = next(v for v in vs if v.key == "unhardened")
    head = ["unit", "exposure", "req/s", "x baseline", "x unhardened", "p50 ms", "p99 ms",
            "CPU ms/conn", "CPU x baseline", "runs (req/s)", "errors", "wrong"]
    lines = ["| " + " | ".join(head) + " |",
             "|---|" + "---:|" * (len(head) - 1)]
    for v in vs:
        rps, cpu = median(v, "rps"), median(v, "cpu_ms")
        lines.append("| " + " | ".join([
            v.label, f"{v.exposure:.1f}" if v.exposure is not None else "-", f"{rps:.1f}",
            f"{rps / median(base, 'rps'):.2f}", f"{rps / median(plain, 'rps'):.2f}",
            f"{median(v, 'p50_ms'):.0f}", f"{median(v, 'p99_ms'):.0f}", f"{cpu:.1f}",
            f"{median(base, 'cpu_ms') / cpu:.2f}",
            " ".join(f"{r['rps']:.0f}" for r in v.runs),
            str(sum(int(r["errors"]) for r in v.runs)),
            str(sum(int(r["wrong"]) for r in v.runs))]) + " |")
    cgroups = "unified" if args.unified else "as nspawn picks (hybrid on a host without systemd)"
    proc = ("2 mounts below /proc, as on a booted host (--host-like)" if args.host_like
            else "10 mounts below /proc, as nspawn makes them (the e2e tests' container)")
    out = [f"# fingerd sandbox benchmark, {time.strftime('%Y-%m-%d %H:%M:%S')}",
           f"machine: {machine}",
           f"container: cgroup hierarchy {cgroups}; {proc}",
           f"command: {' '.join([PYTHON, 'bench/sandbox.py', *sys.argv[1:]])}",
           f"{args.rounds} interleaved rounds of {args.requests} queries at concurrency "
           f"{args.concurrency} per unit, medians; load average before {load_before}, "
           f"after {load_after}",
           "CPU ms/conn: CPU time of the container's systemd and of what it reaped (each "
           "instance's set-up and handler) per connection; steadier than req/s where other "
           "work shares the CPU",
           "", *lines, ""]
    if failures:
        out.append("systemd (PID 1) errors during the run:")
        out += [f"  {n:5d}  {message}" for message, n in sorted(failures.items())]
    else:
        out.append("systemd (PID 1) logged no errors during the run")
    return "\n".join(out)


def machine_line() -> str:
    return f"{os.cpu_count()} CPUs ({cpu_model()}), host kernel {os.uname().release}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    parser.add_argument("--requests", type=int, default=240,
                        help="queries per unit and round (default 240)")
    parser.add_argument("--concurrency", type=int, default=16,
                        help="connections in flight (default 16)")
    parser.add_argument("--deb", help="the package to install (default: $FINGERD_DEB, else "
                                      "built now)")
    parser.add_argument("--variant", action="append", default=[], metavar="KEY=UNIT",
                        help="also measure this service template (repeatable)")
    parser.add_argument("--unified", action="store_true",
                        help="boot the container with the unified cgroup hierarchy, as a "
                             "bookworm host has (default: what nspawn picks on this host, as "
                             "in the e2e tests; on a host without systemd, the hybrid one)")
    parser.add_argument("--host-like", action="store_true",
                        help="boot the container without nspawn's read-only mounts below /proc "
                             "and /sys (SYSTEMD_NSPAWN_API_VFS_WRITABLE=yes): /proc then has "
                             "2 mounts below it, as on a booted host, not 10, and "
                             "ProtectProc= unmounts each in every instance")
    parser.add_argument("--json", metavar="FILE", help="also write the raw results here")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: 1 round of 32 queries; numbers meaningless")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.requests = 1, 32
    reason = container.unavailable_reason()
    if reason:
        say(f"cannot boot the container: {reason}")
        return 2
    if shutil.which("cc") is None:
        say("needs a C compiler for bench/floor.c (apt-get install gcc libc6-dev)")
        return 2
    if args.unified:
        os.environ["SYSTEMD_NSPAWN_UNIFIED_HIERARCHY"] = "1"  # read by systemd-nspawn
    if args.host_like:
        os.environ["SYSTEMD_NSPAWN_API_VFS_WRITABLE"] = "yes"
    with tempfile.TemporaryDirectory(prefix="fingerd-bench-sandbox-") as tmp:
        work = Path(tmp)
        deb = find_deb(args, work)
        floor = build_floor(work)
        say("booting the container")
        with container.Container(container.cached_root()) as box:
            install_package(box, deb, floor)
            vs = variants(box, args.variant)
            install_variants(box, vs)
            cursor = box.run(["journalctl", "-n0", "--show-cursor", "--no-pager"]).stdout
            cursor = cursor.strip().rpartition("cursor: ")[2]
            before = loadavg()
            measure(box, vs, args)
            failures = spawn_failures(box, cursor)
            print(report(vs, args, failures, before, loadavg(), machine_line()))
    if args.json:
        Path(args.json).write_text(json.dumps(
            {v.key: {"label": v.label, "exposure": v.exposure, "runs": v.runs} for v in vs},
            indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
