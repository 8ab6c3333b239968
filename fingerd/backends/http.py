"""``type = "http"``: status read from a web service.

::

    [[backend]]
    type = "http"
    url = "https://status.example.org/finger/{user}"   # {user} is percent-encoded
    # timeout = 3.0          # seconds for everything: DNS, connect, TLS, request, response
    # max_bytes = 65536      # a longer body is a failure, not a truncated answer
    # tls_verify = true      # check the server's certificate and name
    # ca_file = "/etc/ssl/private-ca.pem"   # trust this CA instead of the system's
    # json_field = "status"  # the answer in a JSON body {"status": "..."}
    [backend.headers]        # sent with every request to the configured host
    Authorization = "Bearer {credential:status-token}"   # LoadCredential=, see fingerd.toml(5)

The tutorial's "status read from the web". This module is the policy; the HTTP is
fingerd/httpclient.py (hand-written, for its import cost: see there), which bounds everything
that can go wrong on the wire (one deadline for the whole lookup, redirects included; at most
``max_bytes`` of body; no headers to another origin; no https-to-http redirect).

- HTTP 404 means "does not know this user": the chain asks the next backend. A 2xx answer with
  a ``text/plain`` body (in its charset, UTF-8 by default) or a JSON object with a string field
  ``json_field`` is the answer. Anything else fails the lookup (the chain logs the reason and
  goes on): other statuses, other content types, and whatever the client refuses (timeouts,
  refused connections, DNS and TLS errors, bodies over ``max_bytes``, compressed bodies, bad
  redirects).
- ``json`` is imported only for a JSON body; ``ssl`` only for an https URL.
"""

import time

from fingerd import httpclient
from fingerd.backend import Backend
from fingerd.httpclient import URL, HttpError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from fingerd.config import Options
    from fingerd.protocol import Query

ACCEPT = "text/plain, application/json;q=0.9"
_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_PLACEHOLDER = "{user}"


def quote(text: str) -> str:
    """Percent-encode everything but RFC 3986's unreserved characters (so ``/`` too)."""
    return "".join(chr(b) if b in _UNRESERVED else f"%{b:02X}" for b in text.encode("utf-8"))


class HttpBackend(Backend):
    """Status from ``GET url`` with the user name filled in."""

    blocking = True  # network I/O
    needs_network = True

    def __init__(self, options: "Options") -> None:
        self.template = options.string("url")
        if _PLACEHOLDER not in self.template:
            raise options.error("url", f"must contain {_PLACEHOLDER} (where the user name "
                                f"goes), got {self.template!r}")
        try:
            URL.parse(self.template.replace(_PLACEHOLDER, "user"))
        except ValueError as e:
            raise options.error("url", str(e)) from None
        prefix_end = self.template.find("://") + 3
        authority_end = min((i for i in (self.template.find(c, prefix_end) for c in "/?#")
                             if i >= 0), default=len(self.template))
        if _PLACEHOLDER in self.template[:authority_end]:
            raise options.error("url", f"{_PLACEHOLDER} must be in the path or query, not in "
                                "the host: the client must not choose where we connect")
        # A token need not be in the file: `Authorization = "Bearer {credential:NAME}"`.
        self.headers = {name: options.secret(f"headers.{name}", value)
                        for name, value in options.strings("headers", {}).items()}
        for name, value in self.headers.items():
            try:
                httpclient.check_header(name, value)
            except ValueError as e:
                raise options.error(f"headers.{name}", str(e)) from None
        self.timeout = options.number("timeout", 3.0)
        self.max_bytes = options.integer("max_bytes", 65536, minimum=1,
                                         maximum=16 * 1024 * 1024)
        self.tls_verify = options.boolean("tls_verify", True)
        self.ca_file = options.string("ca_file", "")
        if self.ca_file and not self.tls_verify:
            raise options.error("ca_file", "has no effect with tls_verify = false")
        if self.ca_file:
            import os

            if not os.access(self.ca_file, os.R_OK):
                raise options.error("ca_file", f"cannot read {self.ca_file!r}")
        self.json_field = options.string("json_field", "status")
        if not self.json_field:
            raise options.error("json_field", "must not be empty")
        self.tls = httpclient.TLS(self.tls_verify, self.ca_file)
        # Where a redirect may lead besides the URL's own host and port ("host", "host:port"):
        # by default nowhere else, so that an upstream cannot send fingerd to an internal one.
        self.redirect_hosts = frozenset(options.string_list("redirect_hosts", []))

    def lookup(self, query: "Query") -> str | None:
        user = query.user
        if user in (".", ".."):  # dot segments: servers resolve them before routing
            return None
        url = URL.parse(self.template.replace(_PLACEHOLDER, quote(user)))
        try:
            response = httpclient.get(url, time.monotonic() + self.timeout, self.headers,
                                      self.max_bytes, accept=ACCEPT, tls=self.tls,
                                      redirect_hosts=self.redirect_hosts)
        except TimeoutError:
            raise TimeoutError(f"{url.for_log()}: no answer within {self.timeout:g} s") \
                from None
        if response.status == 404:
            return None  # the service does not know this user
        if not 200 <= response.status < 300:
            raise HttpError(f"{response.url.for_log()}: HTTP {response.status} "
                            f"{response.reason}".rstrip())
        return self._answer(response)

    def _answer(self, response: "httpclient.Response") -> str:
        url, body = response.url.for_log(), response.body
        ctype = response.headers.get("content-type", "")
        media, *params = (part.strip() for part in ctype.split(";"))
        media = media.lower()
        if not body and not media:
            return ""  # an empty answer: the user exists, with nothing to say
        if media == "text/plain":
            charset = "utf-8"
            for param in params:
                key, _, value = param.partition("=")
                if key.strip().lower() == "charset":
                    charset = value.strip().strip('"') or charset
            try:
                return body.decode(charset, "replace")
            except LookupError:
                raise HttpError(f"{url}: unknown charset {charset!r}") from None
            except UnicodeError as e:  # a codec without "replace" (idna, punycode)
                raise HttpError(f"{url}: cannot decode as {charset!r}: {e}") from None
        if media == "application/json" or (media.startswith("application/")
                                           and media.endswith("+json")):
            import json

            try:
                data = json.loads(body.decode("utf-8-sig"))
            except (UnicodeDecodeError, ValueError) as e:
                raise HttpError(f"{url}: not valid JSON: {e}") from None
            field = data.get(self.json_field) if isinstance(data, dict) else None
            if not isinstance(field, str):
                raise HttpError(f"{url}: JSON body has no string field {self.json_field!r}")
            return field
        raise HttpError(f"{url}: Content-Type {ctype or '(none)'!r} not accepted (only "
                        "text/plain and JSON)")
