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
