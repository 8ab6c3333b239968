"""What the ``http`` backend costs in imports, on Debian's interpreter, per connection.

    /usr/bin/python3 bench/importcost.py [--runs 15] [--source DIR]

Two tables, every figure the median and the minimum of ``--runs`` fresh ``/usr/bin/python3 -I
-X importtime`` processes (importtime measures wall time: on a busy machine the minimum is the
steadier figure) (``-I``: no PYTHON* variables, no user site, as ``#!/usr/bin/python3 -I`` runs the
handler; never a venv, whose ``.pth`` files import ``re`` before the first line):

- the cumulative import time of single modules (``-c "import MODULE"``);
- what the backend and one lookup import after the handler's own modules (``import
  fingerd.handler``): the sum of the self times of those modules, and their names. The lookups
  go to servers on loopback that this script starts (HTTP, and HTTPS with a self-signed
  certificate made with the openssl command, given as ``ca_file``).

``--realtime`` (root only) runs each measured interpreter under ``chrt -f 10`` (SCHED_FIFO),
so that other work on a shared machine does not stretch its wall-clock import times.

``--source`` is the directory that holds the ``fingerd`` package (default: this checkout),
put first on ``sys.path`` by the probe itself, so an older tree can be measured the same way.
Nothing is asserted: the README quotes these figures.
"""

from __future__ import annotations

import argparse
import http.server
import json
import ssl
import statistics
import subprocess
import tempfile
import threading
from pathlib import Path

PYTHON = "/usr/bin/python3"  # Debian's interpreter, by path: `python3` on PATH may be a shim
REPO = Path(__file__).resolve().parent.parent
MODULES = ("urllib.request", "http.client", "ssl", "socket", "json", "re", "encodings.idna",
           "_socket")
MARK = "-- lookup --"
PROBE = f"""
import sys
sys.path.insert(0, sys.argv[1])
import fingerd.handler
print({MARK!r}, file=sys.stderr, flush=True)
from fingerd.backends.http import HttpBackend
from fingerd.config import Options
from fingerd.protocol import Query
table = {{"url": sys.argv[2]}}
if sys.argv[3]:
    table["ca_file"] = sys.argv[3]
backend = HttpBackend(Options(table, "x", "b"))
answer = backend.lookup(Query(sys.argv[4]))
assert answer is not None and answer.startswith("answer"), answer
"""


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        if self.path.endswith("/json"):
            body, ctype = json.dumps({"status": "answer (JSON)"}).encode(), "application/json"
        else:
            body, ctype = b"answer (text)", "text/plain; charset=utf-8"
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)
        self.close_connection = True

    def log_message(self, format: str, *args: object) -> None:
        pass


def serve(tls: ssl.SSLContext | None = None) -> http.server.ThreadingHTTPServer:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True,
                                        do_handshake_on_connect=False)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                     daemon=True).start()
    return server


def self_signed(directory: Path) -> tuple[Path, ssl.SSLContext]:
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=localhost", "-addext",
                    "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=60)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return cert, context


PREFIX: list[str] = []  # ["chrt", "-f", "10"] with --realtime


def importtime(args: list[str]) -> list[tuple[int, int, str]]:
    """(self us, cumulative us, name with its nesting indent) for each import, in order;
    a row with name MARK where the probe printed it."""
    proc = subprocess.run([*PREFIX, PYTHON, "-I", "-X", "importtime", *args], capture_output=True,
                          text=True, timeout=60, env={"PATH": "/usr/bin:/bin", "LC_ALL": "C"})
    if proc.returncode != 0:
        raise SystemExit(f"{args[:2]} failed:\n{proc.stderr[-2000:]}")
    rows = []
    for line in proc.stderr.splitlines():
        if line == MARK:
            rows.append((0, 0, MARK))
        elif line.startswith("import time:") and "self [us]" not in line:
            self_us, cumulative, name = line[len("import time:"):].split("|")
            rows.append((int(self_us), int(cumulative), name[1:]))
    return rows


def module_cost(module: str, runs: int) -> list[int]:
    costs = []
    for _ in range(runs):
        rows = importtime(["-c", f"import {module}"])
        costs.append(next(c for _, c, name in rows if name == module))
    return costs


def lookup_cost(source: Path, url: str, ca_file: str, user: str,
                runs: int) -> tuple[list[int], list[str]]:
    costs, names = [], []
    for _ in range(runs):
        rows = importtime(["-c", PROBE, str(source), url, ca_file, user])
        after = rows[[name for _, _, name in rows].index(MARK) + 1:]
        costs.append(sum(s for s, _, _ in after))
        names = sorted(name.strip() for _, _, name in after)
    return costs, names


def us(costs: list[int]) -> str:
    """``median | minimum``, in thousands separated by a blank."""
    return " | ".join(f"{int(value):,}".replace(",", " ")
                      for value in (statistics.median(costs), min(costs)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--source", type=Path, default=REPO)
    parser.add_argument("--realtime", action="store_true",
                        help="run the measured interpreters under chrt -f 10 (root only)")
    args = parser.parse_args()
    if args.realtime:
        PREFIX[:] = ["chrt", "-f", "10"]
    mode = ", under chrt -f 10" if args.realtime else ""
    print(f"{PYTHON} -I -X importtime, {args.runs} runs{mode}, cumulative us\n")
    print("| module | median | minimum |\n|---|---:|---:|")
    for module in MODULES:
        print(f"| `{module}` | {us(module_cost(module, args.runs))} |")
    with tempfile.TemporaryDirectory() as tmp:
        cert, context = self_signed(Path(tmp))
        plain, tls = serve(), serve(context)
        http_url = f"http://{{host}}:{plain.server_address[1]}/{{{{user}}}}"
        https_url = f"https://{{host}}:{tls.server_address[1]}/{{{{user}}}}"
        cases = [("http://, IP address, text/plain", http_url, "127.0.0.1", "", "text"),
                 ("http://, host name, text/plain", http_url, "localhost", "", "text"),
                 ("http://, IP address, JSON", http_url, "127.0.0.1", "", "json"),
                 ("https://, IP address, text/plain", https_url, "127.0.0.1", str(cert), "text"),
                 ("https://, host name, text/plain", https_url, "localhost", str(cert), "text")]
        print(f"\nafter `import fingerd.handler`, from {args.source}: what the backend and "
              "one lookup import\n")
        print("| lookup | median | minimum | modules |\n|---|---:|---:|---|")
        for label, url, host, ca_file, user in cases:
            cost, names = lookup_cost(args.source, url.format(host=host), ca_file, user,
                                      args.runs)
            print(f"| {label} | {us(cost)} | {' '.join(names)} |")
        plain.shutdown()
        tls.shutdown()


if __name__ == "__main__":
    main()
