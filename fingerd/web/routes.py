"""One HTTP request -> the finger query it asks -> the response. Pure: no I/O.

:func:`route` reads the request (method, target, headers) and returns either a finished
:class:`Done` (a refusal, a malformed request) or an :class:`Ask`: the finger query line to put
to the service, and how to turn the service's reply into the response. The server
(fingerd/web/server.py) runs the query; the service's grammar and policy decide everything
about the query itself — what a user name may be, what is refused — so this module only builds
the line from the URL:

- ``/NAME`` asks ``NAME``, ``/NAME?verbose=1`` asks ``/W NAME``, ``/`` asks the user list; NAME
  is percent-decoded (UTF-8). Control characters and blanks cannot be part of one finger word
  and are refused (400) before the service is asked; ``/`` and ``@`` are passed on (an ``@``
  makes it a forwarding query, which the service refuses unless ``[server] forwarding``).
- ``/.well-known/webfinger?resource=acct:NAME@HOST[&rel=...]`` asks ``NAME`` (RFC 7033).

Statuses come from the reply's *public* outcome, so that with ``[server] conceal_unknown`` the
web cannot tell an unknown user from one with nothing to say either.
"""

from __future__ import annotations

from urllib.parse import unquote_to_bytes

from fingerd.protocol import INVALID_QUERY
from fingerd.service import ANSWERED, DENIED, INVALID, NO_SUCH_USER
from fingerd.web import pages, webfinger
from fingerd.web.pages import Response, plain, status_text
from fingerd.web.settings import BASE_PATH

TYPE_CHECKING = False
if TYPE_CHECKING:
    from fingerd.service import Reply
    from fingerd.web.settings import WebSettings

WEBFINGER_PATH = "/.well-known/webfinger"
MAX_PARAMETERS = 32
FORMATS = {"html": pages.HTML, "text": pages.TEXT, "json": pages.JSON}
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off", "")
CORS = (("Access-Control-Allow-Origin", "*"),)
VARY = (("Vary", "Accept"),)


class Done:
    """A response decided without the service, and what the journal records about it."""

    __slots__ = ("frontend", "outcome", "query", "response", "user")

    def __init__(self, response: Response, outcome: str, query: str = "",
                 frontend: str = "web", user: str | None = None) -> None:
        self.response, self.outcome, self.query = response, outcome, query
        self.frontend, self.user = frontend, user


class Ask:
    """A finger query to put to the service (``line``), and how to show its reply."""

    frontend = "web"
    line = b""

    def render(self, reply: Reply) -> Response:
        raise NotImplementedError


class Request:
    """What :func:`route` needs of one HTTP request (header names in lower case)."""

    __slots__ = ("headers", "method", "peer", "target")

    def __init__(self, method: str, target: bytes, headers: dict[bytes, bytes],
                 peer: str) -> None:
        self.method, self.target, self.headers, self.peer = method, target, headers, peer

    def header(self, name: bytes) -> str:
        return self.headers.get(name, b"").decode("latin-1")


def route(request: Request, settings: WebSettings) -> Done | Ask:
    """What to do with one request (the method is GET or HEAD: the server refuses others)."""
    target = request.target.decode("ascii", "replace")  # h11 lets only visible ASCII through
    if not target.startswith("/"):
        return Done(plain(400, status_text(400)), INVALID, target)
    path, _, query = target.partition("?")
    if path == WEBFINGER_PATH:
        return _webfinger(request, query, settings)
    try:
        params = _first(_parameters(query, plus=True))
        # /?user=NAME is what the lookup form sends.
        name = _word(_decode(path[1:]) if path != "/" else params.get("user", "").strip())
        verbose = _flag(params, "verbose")
        wanted = params.get("format")
        if wanted is not None and wanted not in FORMATS:
            raise ValueError(f"format must be html, text or json, not {wanted!r}")
    except ValueError:
        return Done(_invalid(), INVALID, target)
    content_type = FORMATS[wanted] if wanted else _negotiate(request.header(b"accept"))
    return Page(name, verbose, content_type, _prefix(request, settings), settings.cache_seconds)


class Page(Ask):
    """``/NAME`` or ``/``: the finger answer as HTML, text or JSON."""

    def __init__(self, name: str, verbose: bool, content_type: str, prefix: str,
                 cache_seconds: int) -> None:
        self.name, self.verbose, self.content_type = name, verbose, content_type
        self.prefix, self.cache_seconds = prefix, cache_seconds
        self.line = f"{'/W ' if verbose else ''}{name}\r\n".encode()

    def render(self, reply: Reply) -> Response:
        outcome = reply.public_outcome
        status = _page_status(outcome)
        if not self.name and outcome == NO_SUCH_USER:
            status = 200  # the list is empty: nobody is logged in, or nobody listed
        if self.content_type == pages.TEXT:
            body = reply.data
        elif self.content_type == pages.JSON:
            body = pages.json_body({"user": self.name, "answer": pages.answer_text(reply.data)})
        else:
            text: str | None = pages.answer_text(reply.data)
            if not self.name and outcome == DENIED:
                status, text = 200, None  # no list here: the start page is the form alone
            body = pages.html_page(name=self.name, text=text, prefix=self.prefix,
                                   verbose=self.verbose)
        cache = self.cache_seconds if status in (200, 404) else 0
        return Response(status, self.content_type, body, cache_seconds=cache, extra=VARY)


class WebFinger(Ask):
    """``/.well-known/webfinger``: the JRD of an account the service knows."""

    frontend = "webfinger"

    def __init__(self, resource: str, name: str, rels: list[str],
                 settings: WebSettings) -> None:
        self.resource, self.name, self.rels = resource, name, rels
        self.settings = settings
        self.line = f"{name}\r\n".encode()

    def render(self, reply: Reply) -> Response:
        outcome = reply.public_outcome
        if outcome == ANSWERED:
            document = webfinger.jrd(self.resource, pages.answer_text(reply.data),
                                     self.settings.users.get(self.name), self.rels)
            return Response(200, pages.JRD, pages.json_body(document),
                            cache_seconds=self.settings.cache_seconds, extra=CORS)
        status = _page_status(outcome)
        return Response(status, pages.TEXT, reply.data, extra=CORS,
                        cache_seconds=self.settings.cache_seconds if status == 404 else 0)


def _webfinger(request: Request, query: str, settings: WebSettings) -> Done | Ask:
    def refuse(status: int, reason: str, outcome: str) -> Done:
        return Done(plain(status, reason, extra=CORS), outcome, query, "webfinger")

    try:
        resources = _parameters(query, plus=False)
    except ValueError:
        return refuse(400, "malformed query string", INVALID)
    resource = [value for key, value in resources if key == "resource"]
    rels = [value for key, value in resources if key == "rel"]
    if len(resource) != 1:
        return refuse(400, "exactly one resource parameter is needed", INVALID)
    try:
        name, host = webfinger.parse_resource(resource[0])
    except webfinger.ResourceError as e:
        return refuse(e.status, str(e), INVALID if e.status == 400 else NO_SUCH_USER)
    domains = settings.domains or (_host(request.header(b"host")),)
    if host not in domains or "@" in name:
        return refuse(404, f"not an account here: {resource[0]}", NO_SUCH_USER)
    return WebFinger(resource[0], name, rels, settings)


def _page_status(outcome: str) -> int:
    return {ANSWERED: 200, NO_SUCH_USER: 404, DENIED: 403, INVALID: 400}.get(outcome, 503)


def _invalid() -> Response:
    return plain(400, INVALID_QUERY)


def _parameters(query: str, *, plus: bool) -> list[tuple[str, str]]:
    """The query string's parameters, percent-decoded as UTF-8 (``plus``: ``+`` is a blank,
    as HTML forms send it; WebFinger's resource URIs are percent-encoded instead)."""
    pairs: list[tuple[str, str]] = []
    for item in query.split("&") if query else ():
        if len(pairs) >= MAX_PARAMETERS:
            raise ValueError("too many parameters")
        key, _, value = item.partition("=")
        if plus:
            key, value = key.replace("+", " "), value.replace("+", " ")
        pairs.append((_decode(key), _decode(value)))
    return pairs


def _first(pairs: list[tuple[str, str]]) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in pairs:
        out.setdefault(key, value)
    return out


def _decode(text: str) -> str:
    try:
        return unquote_to_bytes(text).decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("not UTF-8") from None


def _word(name: str) -> str:
    """A user name as one finger word: no control characters, no blanks."""
    if not name.isprintable() or any(c.isspace() for c in name):
        raise ValueError("not one word")
    return name


def _flag(params: dict[str, str], key: str) -> bool:
    value = params.get(key, "").lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(f"{key} must be 1 or 0")


def _negotiate(accept: str) -> str:
    """The media type for an ``Accept:`` header (RFC 9110 §12.5.1): the highest q of HTML,
    text and JSON; on a tie, or when none is acceptable, HTML."""
    best, best_q = pages.HTML, -1.0
    for content_type in (pages.HTML, pages.TEXT, pages.JSON):
        kind = content_type.partition(";")[0]
        major = kind.partition("/")[0]
        q, specificity = (1.0 if not accept.strip() else 0.0), -1
        for item in accept.split(","):
            media, *params = (part.strip() for part in item.split(";"))
            level = {kind: 2, f"{major}/*": 1, "*/*": 0}.get(media.lower(), -1)
            if level > specificity:
                specificity, q = level, _q(params)
        if q > best_q and q > 0:
            best, best_q = content_type, q
    return best


def _q(params: list[str]) -> float:
    for param in params:
        key, _, value = param.partition("=")
        if key.strip().lower() == "q":
            try:
                q = float(value)
            except ValueError:
                return 0.0
            return q if 0 <= q <= 1 else 0.0
    return 1.0


def _prefix(request: Request, settings: WebSettings) -> str:
    """The path the pages are mounted at, for their links: ``[web] base_path``, else a trusted
    proxy's ``X-Forwarded-Prefix`` (a path; anything else is ignored), else none."""
    if settings.base_path:
        return settings.base_path
    if settings.trusts(request.peer):
        forwarded = request.header(b"x-forwarded-prefix").strip().rstrip("/")
        if BASE_PATH.fullmatch(forwarded):
            return forwarded
    return ""


def _host(header: str) -> str:
    """The host name of a ``Host:`` header, without the port."""
    host = header.strip().lower()
    if host.startswith("["):
        return host[1:].partition("]")[0]
    return host.rpartition(":")[0] if host.count(":") == 1 else host
