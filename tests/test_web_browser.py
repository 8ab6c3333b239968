"""The web view in a real browser: headless Chromium loads the pages (issue 12).

The tutorial's web step (finger20-22) put the status into the page unescaped: any status could
run script in every visitor's browser. Here Chromium loads ``/NAME`` for users whose status is
a script, an ``onerror`` handler and terminal escapes, and the DOM after load (``--dump-dom``)
shows them as text, with the title unchanged. A control page built the tutorial's way shows
that the same browser does run such a status, so the test can fail. A screenshot shows the
page as people see it, styled (the inline style is allowed by its hash in the CSP).

Chromium runs as the README of the issue says: headless, without its own sandbox (we are root),
with a fresh profile and no background networking; it loads loopback URLs only.
"""

from __future__ import annotations

import html.parser
import http.server
import os
import shutil
import struct
import subprocess
import tempfile
import threading
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import require
from web_helpers import Web, running_web

pytestmark = pytest.mark.browser

XSS = ("<script>document.title='pwned'</script>"
       "<img src=x onerror=\"document.title='pwned'\">")
CONFIG = r'''
[[backend]]
type = "static"
[backend.users]
moshez = "Happy and well"
evil = "<script>document.title='pwned'</script><img src=x onerror=\"document.title='pwned'\">"
escapes = "\u001b]0;pwned\u0007\u001b[2J\u001b[31mred\u001b[0m \u009b6n\u202eevil\u0008\u0008"
'''


def chromium(url: str, *args: str, timeout: float = 120) -> str:
    """Run headless Chromium on a loopback URL; its stdout."""
    assert url.startswith(("http://127.0.0.1:", "http://[::1]:")), url
    browser = shutil.which("chromium")
    require(browser is not None, "chromium not installed (Debian package chromium)")
    assert browser is not None
    profile = tempfile.mkdtemp(prefix="fingerd-chromium-")
    try:
        out = subprocess.run(
            [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
             "--no-first-run", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", f"--user-data-dir={profile}", *args, url],
            capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
            check=False, env={**os.environ, "HOME": profile})
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


class DOM(html.parser.HTMLParser):
    """The elements and text of a DOM dump."""

    def __init__(self, source: str) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.title = ""
        self.pre = ""
        self.text = ""
        self._in: list[str] = []
        self.feed(source)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self._in.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if self._in and self._in[-1] == tag:
            self._in.pop()

    def handle_data(self, data: str) -> None:
        self.text += data
        if self._in and self._in[-1] == "title":
            self.title += data
        if "pre" in self._in:
            self.pre += data


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Web]:
    directory = tmp_path_factory.mktemp("browser")
    directory.chmod(0o755)
    config = directory / "fingerd.toml"
    config.write_text(CONFIG)
    config.chmod(0o644)
    with running_web(config) as server:
        yield server


def test_script_in_a_status_is_shown_as_text(web) -> None:
    """Chromium loads /evil, whose status is a <script> and an <img onerror>: after load the
    DOM has no script or img element, the <pre> shows the status as written, and the title is
    the page's own, not 'pwned'."""
    dom = DOM(chromium(f"http://127.0.0.1:{web.port}/evil", "--dump-dom"))
    assert dom.title == "evil \N{MIDDLE DOT} finger"
    assert "script" not in dom.tags and "img" not in dom.tags, dom.tags
    assert dom.pre == XSS + "\n"


def test_terminal_escapes_never_reach_the_page(web) -> None:
    """A status full of terminal escapes (a title-setting OSC, screen clearing, colours, C1
    controls, a bidi override, backspaces) reaches the page filtered, as finger sends it: no
    control character in the DOM, the visible text kept, the title unchanged."""
    dom = DOM(chromium(f"http://127.0.0.1:{web.port}/escapes", "--dump-dom"))
    assert dom.title == "escapes \N{MIDDLE DOT} finger"
    assert dom.pre == "red evil\n"
    assert all(c.isprintable() or c in "\n" for c in dom.text), repr(dom.text)


class TutorialPage(http.server.BaseHTTPRequestHandler):
    """The tutorial's web step: the status put into the page as it is (do not do this)."""

    def do_GET(self) -> None:
        body = f"<html><head><title>finger</title></head><body><h1>{XSS}</h1></body></html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_control_the_browser_does_run_an_unescaped_status() -> None:
    """The same status in a page built the tutorial's way (unescaped, no CSP) changes the
    title in this browser: the tests above would see an XSS if there were one."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), TutorialPage)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        dom = DOM(chromium(f"http://127.0.0.1:{server.server_address[1]}/evil", "--dump-dom"))
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
    assert dom.title == "pwned"


def png_pixels(data: bytes) -> tuple[int, int, list[bytes]]:
    """Width, height and rows of RGB(A) pixels of an 8-bit PNG, as Chromium writes them."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, header = 8, b"", b""
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        chunk = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            header = chunk
        elif kind == b"IDAT":
            idat += chunk
        pos += 12 + length
    width, height, depth, colour = struct.unpack(">IIBB", header[:10])
    assert depth == 8 and colour in (2, 6), (depth, colour)
    size = 3 if colour == 2 else 4
    raw, stride, rows, previous = zlib.decompress(idat), width * size, [], bytes(width * size)
    for y in range(height):
        line = raw[y * (stride + 1):(y + 1) * (stride + 1)]
        kind, row = line[0], bytearray(line[1:])
        for i in range(stride):
            left = row[i - size] if i >= size else 0
            up, corner = previous[i], previous[i - size] if i >= size else 0
            if kind == 1:
                row[i] = (row[i] + left) & 0xFF
            elif kind == 2:
                row[i] = (row[i] + up) & 0xFF
            elif kind == 3:
                row[i] = (row[i] + (left + up) // 2) & 0xFF
            elif kind == 4:
                p = left + up - corner
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
                row[i] = (row[i] + (left if pa <= pb and pa <= pc else up if pb <= pc
                                    else corner)) & 0xFF
        rows.append(bytes(row) if size == 3 else bytes(
            b for j in range(0, stride, 4) for b in row[j:j + 3]))
        previous = bytes(row)
    return width, height, rows


def test_screenshot_shows_the_styled_page(web, tmp_path: Path) -> None:
    """A screenshot of /evil at 900x600: the page's background (#fcfcfc) and the <pre>'s
    (#f0f0f0) are there, so the inline style ran under the CSP. The PNG is kept in the test's
    directory to look at (its path is printed)."""
    shot = tmp_path / "evil.png"
    chromium(f"http://127.0.0.1:{web.port}/evil", f"--screenshot={shot}",
             "--window-size=900,600", "--hide-scrollbars")
    print(f"screenshot: {shot}")
    width, height, rows = png_pixels(shot.read_bytes())
    assert (width, height) == (900, 600)
    pixels = [row[i:i + 3] for row in rows for i in range(0, len(row), 3)]
    assert pixels.count(bytes.fromhex("fcfcfc")) > width * height // 2  # the body
    assert pixels.count(bytes.fromhex("f0f0f0")) > 5000  # the <pre> box
