"""``[web]``: the settings of the web view and WebFinger, checked when the config is read.

Read through :class:`fingerd.config.Options` like every other table, so that a typo is an error
naming the file, the line and the key (``fingerd check`` reports it too).

::

    [web]
    base_path = "/finger"              # where the proxy mounts the pages, for their links
    domains = ["example.org"]          # WebFinger answers acct:NAME@these (default: Host:)
    trusted_proxies = ["127.0.0.1", "::1"]
    cache_seconds = 60

    [web.users.alice]                  # what WebFinger says about acct:alice@example.org
    aliases = ["https://mastodon.example/@alice"]
    [[web.users.alice.links]]
    rel = "self"
    type = "application/activity+json"
    href = "https://mastodon.example/users/alice"
"""

from __future__ import annotations

import ipaddress
import re

TYPE_CHECKING = False
if TYPE_CHECKING:
    from fingerd.config import Options

# A URL path prefix: segments of RFC 3986 pchar, without quotes (it is written into pages).
BASE_PATH = re.compile(r"(?:/[A-Za-z0-9\-._~!$&()*+,;=:@%]+)+")
_HOST = re.compile(r"[a-z0-9](?:[a-z0-9\-.]*[a-z0-9])?")
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*:")
_MEDIA_TYPE = re.compile(r"[A-Za-z0-9!#$&^_.+\-]+/[A-Za-z0-9!#$&^_.+\-]+")
LOOPBACK = ("127.0.0.1", "::1")
DEFAULT_PROXIES = ["127.0.0.1/32", "::1/128"]


class Link:
    """One link of a user's JRD (RFC 7033 §4.4.4): ``rel``, ``href`` or ``template``, ``type``."""

    __slots__ = ("href", "rel", "template", "type")

    def __init__(self, options: Options) -> None:
        self.rel = options.string("rel")
        if not _printable_word(self.rel):
            raise options.error("rel", "must be a relation type or a URI, without blanks")
        self.type = options.string("type", "")
        if self.type and not _MEDIA_TYPE.fullmatch(self.type):
            raise options.error("type", f"not a media type: {self.type!r}")
        self.href = _uri(options, "href")
        self.template = _uri(options, "template")  # e.g. OStatus's subscribe template
        if bool(self.href) == bool(self.template):
            raise options.error("href", "each link needs either href or template")
        options.finish()

    def jrd(self) -> dict[str, str]:
        """The link as a JRD object."""
        out = {"rel": self.rel}
        if self.type:
            out["type"] = self.type
        if self.href:
            out["href"] = self.href
        else:
            out["template"] = self.template
        return out


class Account:
    """``[web.users.NAME]``: what WebFinger adds for one account (the chain must know it)."""

    __slots__ = ("aliases", "links")

    def __init__(self, options: Options) -> None:
        self.aliases = options.string_list("aliases", [])
        for alias in self.aliases:
            if not _SCHEME.match(alias) or not _printable_word(alias):
                raise options.error("aliases", f"not an absolute URI: {alias!r}")
        entries = _array(options, "links")
        self.links = []
        for number, entry in enumerate(entries, 1):
            if not isinstance(entry, dict):
                raise options.error("links", "must be an array of tables ([[...links]])")
            from fingerd.config import Options

            self.links.append(Link(Options(entry, options.path,
                                           f"{options.prefix}.links[{number}]")))
        options.finish()


class WebSettings:
    """The whole ``[web]`` table (an empty one: every default)."""

    def __init__(self, options: Options) -> None:
        from fingerd.config import Options

        base = options.string("base_path", "").rstrip("/")
        if base and not BASE_PATH.fullmatch(base):
            raise options.error("base_path", f'must be a URL path such as "/finger", got {base!r}')
        self.base_path = base
        self.domains = tuple(d.lower().rstrip(".") for d in options.string_list("domains", []))
        for domain in self.domains:
            if not _HOST.fullmatch(domain):
                raise options.error("domains", f"not a host name: {domain!r}")
        self.trusted_proxies: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        for proxy in options.string_list("trusted_proxies", list(LOOPBACK)):
            try:
                self.trusted_proxies.append(ipaddress.ip_network(proxy, strict=False))
            except ValueError:
                raise options.error("trusted_proxies",
                                    f"not an address or network: {proxy!r}") from None
        self.cache_seconds = options.integer("cache_seconds", 60, maximum=86400)
        self.users: dict[str, Account] = {}
        for name, table in _table(options, "users").items():
            if not _printable_word(name) or "@" in name:
                raise options.error(f"users.{name}", "not a user name")
            if not isinstance(table, dict):
                raise options.error(f"users.{name}", "must be a table ([web.users.NAME])")
            self.users[name] = Account(Options(table, options.path,
                                               f"{options.prefix}.users.{name}"))
        options.finish()
        self.configured = bool(base or self.domains or self.users or self.cache_seconds != 60
                               or [str(n) for n in self.trusted_proxies] != DEFAULT_PROXIES)

    def trusts(self, address: str) -> bool:
        """Whether ``address`` is a proxy whose X-Forwarded-* headers are believed."""
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self.trusted_proxies)

    def summary(self) -> str:
        """One line for ``fingerd check``."""
        domains = ", ".join(self.domains) or "the request's Host"
        return (f"base_path = {self.base_path or '/'!s}, WebFinger for {domains}, "
                f"{len(self.users)} account(s) with links")


# Options reads scalars and flat tables; a nested table or array goes through its own typed
# lookup (which fingerd.config uses for the top level too): the same type check and error.
def _table(options: Options, key: str) -> dict[str, object]:
    value = options._get(key, (dict,), {})
    assert isinstance(value, dict)
    return value


def _array(options: Options, key: str) -> list[object]:
    value = options._get(key, (list,), [])
    assert isinstance(value, list)
    return value


def _printable_word(text: str) -> bool:
    return bool(text) and text.isprintable() and not any(c.isspace() for c in text)


def _uri(options: Options, key: str) -> str:
    value = options.string(key, "")
    if value and (not _SCHEME.match(value) or not _printable_word(value)
                  or any(c in value for c in '<>"')):
        raise options.error(key, f"not an absolute URI: {value!r}")
    return value
