"""What the booted-container tests share: a booted bookworm with the package installed, and
small helpers to look at units and the journal in there.

Each ``tests/test_e2e_*.py`` module (and tests/test_systemd_e2e.py) boots a container of its
own (tests/container.py) and installs the .deb of the ``deb`` fixture (tests/conftest.py):
``$FINGERD_DEB`` when set (``make check`` builds it first), else built once per run.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import container
import pytest
from conftest import require

T = TypeVar("T")
# The dynamic UID range of systemd (DynamicUser=): 61184-65519.
DYNAMIC_UIDS = range(61184, 65520)


@contextlib.contextmanager
def booted(deb: Path | None = None) -> Iterator[container.Container]:
    """A booted bookworm; with ``deb``, the package installed in it (offline: the image has
    every dependency). Skips (fails in CI) where no container can run."""
    reason = container.unavailable_reason()
    require(reason is None, f"cannot boot a systemd container: {reason}")
    with container.Container(container.cached_root()) as box:
        if deb is not None:
            box.copy_in(deb, "/root/")
            box.run(["apt-get", "install", "-y", f"/root/{deb.name}"], timeout=180)
        yield box


def unit_property(box: container.Container, unit: str, name: str) -> str:
    return box.run(["systemctl", "show", "-P", name, unit]).stdout.strip()


def finger(box: container.Container, target: str, *, long: bool = False) -> str:
    """The real finger client inside the container."""
    return box.run(["finger", *(["-l"] if long else []), target], timeout=30).stdout


def journal_records(box: container.Container, *matches: str) -> list[dict[str, str]]:
    """Journal entries (``journalctl -o json``) matching ``matches``."""
    out = box.run(["journalctl", "--no-pager", "-o", "json", *matches], timeout=30).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def wait_for(predicate: Callable[[], T], what: str, timeout: float = 30.0) -> T:
    """Poll ``predicate`` until it returns something true; fail with ``what`` after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.2)


def finger_text(box: container.Container, line: str, port: int = 79) -> str:
    """What a finger client on 127.0.0.1 gets, line ends and all (the finger program
    reformats); "" when the connection is refused or reset."""
    script = ("import socket,sys\ntry:\n"
              " s=socket.create_connection(('127.0.0.1',int(sys.argv[2])),timeout=10)\n"
              " s.sendall(sys.argv[1].encode()+b'\\r\\n'); d=b''\n"
              " while c:=s.recv(65536): d+=c\n"
              "except OSError: d=b''\n"
              "sys.stdout.buffer.write(d)")
    return box.run(["python3", "-c", script, line, str(port)], timeout=30).stdout
