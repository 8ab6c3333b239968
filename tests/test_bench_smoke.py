"""The benchmark runs end to end and prints its one table with every row (no timing asserted)."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
from conftest import REPO, require

ROWS = [
    ("python3 -I -c pass", "one process"),
    ("python3 -I -S -c pass", "one process"),
    ("fingerd (bin/fingerd)", "one process"),
    ("fingerd (console script)", "one process"),
    ("fingerd (bin/fingerd, no config cache)", "one process"),
    ("in.fingerd (C)", "one process"),
    *((name, "inetd -a", c) for c in ("1", "32")
      for name in ("fingerd", "in.fingerd (C)", "floor: python3 -I -S")),
    ("Twisted finger11", "long-running"),
    ("fingerd serve", "long-running"),
    ("fingerd serve, stderr log", "long-running"),
    ("asyncio.Protocol floor", "long-running"),
]


# root: namespaces, taskset, apt; the first run also downloads its peers (Twisted, in.fingerd).
@pytest.mark.root
def test_make_bench_quick_prints_the_table_with_every_row() -> None:
    """`make bench BENCH_ARGS=--quick` sets up its peers and prints every row of the table,
    the verdicts, and the import profile."""
    require(shutil.which("make") is not None, "make not installed")
    proc = subprocess.run(["make", "--no-print-directory", "bench", "BENCH_ARGS=--quick"],
                          cwd=REPO, capture_output=True, text=True, timeout=1500,
                          env={**os.environ, "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = [line.split("|")[1:-1] for line in proc.stdout.splitlines() if line.startswith("| ")]
    cells = [[cell.strip() for cell in row] for row in table]
    assert cells[0][:4] == ["server", "mode", "c", "req/s"]
    for row in ROWS:
        assert any(tuple(c[:len(row)]) == row for c in cells), f"missing row {row}"
    for c in cells[1:]:
        assert "errors 0, wrong 0" in c[-1] or c[1] == "one process", c
    assert "- per connection: CPU" in proc.stdout
    assert "- long-running: CPU/request" in proc.stdout
    assert "- load generator" in proc.stdout
    assert "python3 -X importtime, bin/fingerd" in proc.stdout
    assert "fingerd.handler" in proc.stdout


SANDBOX_ROWS = ["before #16 (baseline)", "shipped (no network)", "shipped + network.conf",
                "unhardened", "C floor, shipped sandbox", "C floor, unhardened"]


@pytest.mark.systemd
def test_make_bench_sandbox_quick_prints_every_unit() -> None:
    """`make bench-sandbox BENCH_SANDBOX_ARGS=--quick` boots the container, installs the
    package ($FINGERD_DEB, or builds it) and prints one row per unit with its exposure, every
    query answered (no timing asserted)."""
    require(os.geteuid() == 0, "the benchmark needs root (a booted container)")
    require(shutil.which("make") is not None, "make not installed")
    proc = subprocess.run(["make", "--no-print-directory", "bench-sandbox",
                           "BENCH_SANDBOX_ARGS=--quick"], cwd=REPO, capture_output=True,
                          text=True, timeout=1800,
                          env={**os.environ, "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = {cells[0]: cells for cells in
            ([c.strip() for c in line.split("|")[1:-1]] for line in proc.stdout.splitlines()
             if line.startswith("| "))}
    assert rows["unit"][:3] == ["unit", "exposure", "req/s"]
    for name in SANDBOX_ROWS:
        assert name in rows, f"missing row {name!r}:\n{proc.stdout}"
        assert float(rows[name][1]) <= 1.5 or "unhardened" in name, rows[name]
        assert rows[name][-2:] == ["0", "0"], rows[name]  # errors, wrong answers
