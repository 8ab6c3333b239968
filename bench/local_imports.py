"""What a ``local`` lookup costs the per-connection handler in imports.

    /usr/bin/python3 bench/local_imports.py [--repo PATH] [--runs N] [--query '/W root']

Runs the handler as ``fingerd@.service`` does (Debian's ``/usr/bin/python3 -I``, the config
read through the marshal cache, the query on stdin) with ``-X importtime``, ``--runs`` times,
and prints, for each module imported after ``fingerd.handler`` (what the local backend
adds), the median self and cumulative import time in µs, and the median and the minimum of
their sum (on a busy machine the minimum is the better estimate: importtime is wall time). The
config is a ``local`` backend over every UID (so root is shown), ``list_users`` on; extra
``[[backend]]`` keys can be given with ``--option key=TOML``. ``--repo`` names the checkout
whose ``fingerd`` package is measured (default: this one), so two versions can be compared.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

PYTHON = "/usr/bin/python3"
REPO = Path(__file__).resolve().parent.parent


def one_run(repo: Path, config: Path, cache: Path, query: str) -> list[tuple[str, int, int]]:
    """(module, self µs, cumulative µs) of the imports after fingerd.handler, in order."""
    code = (f"import sys; sys.path.insert(0, {str(repo)!r}); "
            f"sys.argv = ['fingerd', '--config', {str(config)!r}]; "
            "from fingerd.cli import run; run()")
    proc = subprocess.run([PYTHON, "-I", "-X", "importtime", "-c", code],
                          input=f"{query}\r\n".encode(), capture_output=True, timeout=60,
                          env={"CACHE_DIRECTORY": str(cache), "PATH": os.environ["PATH"],
                               "TZ": "UTC"}, check=False)
    rows: list[tuple[str, int, int]] = []
    seen_handler = False
    for line in proc.stderr.decode("utf-8", "replace").splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        self_us, cumulative, name = line[len("import time:"):].split("|")
        name = name.strip()
        if seen_handler:
            rows.append((name, int(self_us), int(cumulative)))
        seen_handler = seen_handler or name == "fingerd.handler"
    if not seen_handler:
        raise SystemExit(f"the handler did not run:\n{proc.stderr.decode()}")
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repo", type=Path, default=REPO)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--query", default="/W root")
    parser.add_argument("--option", action="append", default=[])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="fingerd-bench-") as tmp:
        config = Path(tmp) / "fingerd.toml"
        config.write_text("[server]\nlist_users = true\n\n[[backend]]\ntype = \"local\"\n"
                          "uid_min = 0\nuid_max = 65534\n" + "".join(
                              f"{o}\n" for o in args.option))
        cache = Path(tmp) / "cache"
        cache.mkdir()
        one_run(args.repo, config, cache, args.query)  # fills the config cache
        runs = [one_run(args.repo, config, cache, args.query) for _ in range(args.runs)]
    names = [name for name, _, _ in runs[-1]]
    print(f"{PYTHON} -I -X importtime, handler, query {args.query!r}, repo {args.repo}, "
          f"median of {args.runs} runs")
    print(f"{'self us':>8} {'cumul us':>9}  module (imported after fingerd.handler)")
    for name in names:
        selfs = [s for run in runs for n, s, _ in run if n == name]
        cumuls = [c for run in runs for n, _, c in run if n == name]
        print(f"{statistics.median(selfs):>8.0f} {statistics.median(cumuls):>9.0f}  {name}")
    totals = [sum(s for _, s, _ in run) for run in runs]
    print(f"{statistics.median(totals):>8.0f} {'':>9}  in all ({len(names)} modules); "
          f"fastest run {min(totals)} us (the least disturbed by other load)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
