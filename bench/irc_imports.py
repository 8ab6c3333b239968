"""Import cost of the IRC libraries Debian bookworm offers, against what `fingerd irc` imports.

    /usr/bin/python3 bench/irc_imports.py [PYRCB2_DIR]

CPU time (user + system, from wait4) of `/usr/bin/python3 -I -c STATEMENT`, median of 15
runs each, interleaved; `pass` is the interpreter's own start. python3-irc must be installed;
python3-pyrcb2 may be unpacked anywhere (`apt-get download python3-pyrcb2; dpkg -x ...`) and
its dist-packages directory given as PYRCB2_DIR.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROUNDS = 15


def cpu(statement: str) -> float:
    proc = subprocess.Popen(["/usr/bin/python3", "-I", "-c", statement],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    if status:
        raise RuntimeError(f"{statement!r} failed")
    return (usage.ru_utime + usage.ru_stime) * 1000


def main() -> None:
    statements = {
        "python3 -I -c pass": "pass",
        "import asyncio, ssl": "import asyncio, ssl",
        "fingerd irc (fingerd.irc.main)":
            f"import sys; sys.path.insert(0, {REPO!r}); import fingerd.irc.main",
        "python3-irc 8.5.3 (irc.client)": "import irc.client",
    }
    if len(sys.argv) > 1:
        statements["python3-pyrcb2 0.6.2 (pyrcb2)"] = (
            f"import sys; sys.path.insert(0, {sys.argv[1]!r}); import pyrcb2")
    times: dict[str, list[float]] = {name: [] for name in statements}
    for _ in range(ROUNDS):
        for name, statement in statements.items():
            times[name].append(cpu(statement))
    base = statistics.median(times["python3 -I -c pass"])
    print(f"{'what':34} {'CPU ms':>8} {'above pass':>11}")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:34} {median:8.1f} {median - base:11.1f}")


if __name__ == "__main__":
    main()
