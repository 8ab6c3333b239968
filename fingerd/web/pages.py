"""What the web view sends: pages, text and JSON answers, and the headers of every response.

Pure: no I/O. The finger answer is already filtered by the service (no control characters but
TAB and CRLF); here it is HTML-escaped into a ``<pre>`` (the tutorial's web step, finger20-22,
forgot that: a status could run script in every visitor's browser). The pages load nothing
from anywhere: one inline style, allowed by its hash in the Content-Security-Policy, which
forbids scripts, frames, images and everything else.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
from http import HTTPStatus
from urllib.parse import quote

HTML = "text/html; charset=utf-8"
TEXT = "text/plain; charset=utf-8"
JSON = "application/json; charset=utf-8"
JRD = "application/jrd+json; charset=utf-8"

STYLE = ("body{font:16px/1.5 system-ui,sans-serif;max-width:52rem;margin:2rem auto;"
         "padding:0 1rem;color:#1d1d1d;background:#fcfcfc}"
         "h1{font-size:1.4rem;overflow-wrap:anywhere}"
         "pre{font:14px/1.4 ui-monospace,monospace;background:#f0f0f0;padding:1rem;"
         "overflow-x:auto}"
         "form{margin-top:1.5rem}input{font:inherit}"
         "@media(prefers-color-scheme:dark){body{color:#ddd;background:#181818}"
         "pre{background:#262626}a{color:#8cf}}")
_STYLE_HASH = base64.b64encode(hashlib.sha256(STYLE.encode()).digest()).decode()

# No script, no frame, no object, no image, no connection: only the inline style above, and
# forms only to this origin. 'none' everywhere else (default-src), and no <base> to re-point
# the links.
CSP = (f"default-src 'none'; style-src 'sha256-{_STYLE_HASH}'; form-action 'self'; "
       "base-uri 'none'; frame-ancestors 'none'")


class Response:
    """One HTTP response: status, headers (names as sent), body, and whether to close after."""

    __slots__ = ("body", "close", "headers", "status")

    def __init__(self, status: int, content_type: str, body: bytes, *,
                 cache_seconds: int = 0, close: bool = False,
                 extra: tuple[tuple[str, str], ...] = ()) -> None:
        self.status = status
        self.body = body
        self.close = close
        cache = f"max-age={cache_seconds}" if cache_seconds else "no-store"
        self.headers = [("Content-Type", content_type), ("Content-Length", str(len(body))),
                        ("Cache-Control", cache), ("Content-Security-Policy", CSP),
                        ("X-Content-Type-Options", "nosniff"),
                        ("Referrer-Policy", "no-referrer"), ("X-Frame-Options", "DENY"),
                        *extra]
        if close:
            self.headers.append(("Connection", "close"))

    @property
    def reason(self) -> str:
        try:
            return HTTPStatus(self.status).phrase
        except ValueError:
            return ""

    def __repr__(self) -> str:
        return f"Response({self.status}, {self.body[:60]!r})"


def plain(status: int, text: str, *, close: bool = False,
          extra: tuple[tuple[str, str], ...] = ()) -> Response:
    """A one-line text response, for errors that are not a finger answer (405, 414, ...)."""
    return Response(status, TEXT, text.encode() + b"\r\n", close=close, extra=extra)


def status_text(status: int) -> str:
    """``405 Method Not Allowed``: the body of an HTTP-level error."""
    return f"{status} {HTTPStatus(status).phrase}"


def answer_text(data: bytes) -> str:
    """The finger answer's wire bytes as text with LF line ends (for HTML and JSON)."""
    return data.decode("utf-8", "replace").replace("\r\n", "\n")


def json_body(value: object) -> bytes:
    return json.dumps(value, ensure_ascii=False, indent=1).encode("utf-8") + b"\n"


def html_page(*, name: str, text: str | None, prefix: str, verbose: bool) -> bytes:
    """A page: the answer for ``name`` ("" for the list) in a ``<pre>``, links to the other
    form and to the start, and the lookup form. ``text`` None: the form alone."""
    esc = html.escape
    title = f"{name} \N{MIDDLE DOT} finger" if name else "finger"
    heading = f"finger {name}" if name else "finger"
    here = f"{prefix}/{quote(name, safe='')}" if name else f"{prefix}/"
    other = f"{here}?verbose=1" if not verbose else here
    parts = ["<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
             "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
             f"<title>{esc(title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n"
             f"<h1>{esc(heading)}</h1>\n"]
    if text is not None:
        parts.append(f"<pre>{esc(text)}</pre>\n<p><a href=\"{esc(other)}\">"
                     f"{'short form' if verbose else 'long form'}</a>")
        if name:
            parts.append(f" \N{MIDDLE DOT} <a href=\"{esc(prefix)}/\">start</a>")
        parts.append("</p>\n")
    parts.append(f"<form method=\"get\" action=\"{esc(prefix)}/\">\n"
                 "<label for=\"user\">User</label>\n"
                 f"<input id=\"user\" name=\"user\" value=\"{esc(name)}\" required "
                 "autocapitalize=\"none\" spellcheck=\"false\">\n"
                 "<button type=\"submit\">finger</button>\n</form>\n</body>\n</html>\n")
    return "".join(parts).encode("utf-8")
