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


HOSTILE_SCENARIOS = ["1a", "1b", "2a", "2b", "2c", "2d", "3"]
HOSTILE_SERVER_ROWS = ["server peak RSS MiB", "server peak fds", "server peak threads",
                       "server CPU s"]


@pytest.mark.root
def test_make_bench_hostile_quick_prints_every_attack() -> None:
    """`make bench-hostile` with `--quick` runs every attack against both servers and prints
    its table with every row. `--old` names this tree, so both columns are today's code (and a
    shallow clone without the commit before the fixes runs it too): in both, the measured
    client asked and was answered while the attack ran. No figure is asserted."""
    require(shutil.which("make") is not None, "make not installed")
    proc = subprocess.run(["make", "--no-print-directory", "bench-hostile",
                           f"BENCH_HOSTILE_ARGS=--quick --old {REPO}"], cwd=REPO,
                          capture_output=True, text=True, timeout=900,
                          env={**os.environ, "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    sections = {part.split(".", 1)[0]: part for part in proc.stdout.split("\n## ")[1:]}
    assert sorted(sections) == HOSTILE_SCENARIOS, proc.stdout
    for key, text in sections.items():
        lines = text.splitlines()
        assert lines[1].split() == ["old", "new", "new/old"], text
        probes: dict[str, dict[str, list[str]]] = {}  # per measured client, its rows
        server: dict[str, list[str]] = {}
        for line in lines[2:]:
            cells = line.split()
            label, old_new = " ".join(cells[:-3]), cells[-3:-1]
            if line.startswith("  `"):  # "  `moshez` from 127.0.0.3: queries  30  30  1x"
                probe = probes[label.rsplit(":", 1)[0]] = {"queries": old_new}
            elif line.startswith("    "):
                probe[label] = old_new
            elif line.strip():
                server[label] = old_new
        assert probes, text
        for name, rows in probes.items():
            for row in ("queries", "answered", "busy", "failed"):
                assert row in rows, f"{key}: {name}: no row {row!r}:\n{text}"
            assert all(int(n) > 0 for n in rows["answered"]), (key, name, rows)
        for row in HOSTILE_SERVER_ROWS:
            assert row in server, f"{key}: missing row {row!r}:\n{text}"
            if row != "server CPU s":  # (a quiet 3 s may round to 0.00)
                assert all(float(n) > 0 for n in server[row]), (key, row, server[row])
