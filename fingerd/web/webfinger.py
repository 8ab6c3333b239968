"""WebFinger (RFC 7033), finger's successor by name: the ``resource`` parameter and the JRD.

Pure: no I/O. ``GET /.well-known/webfinger?resource=acct:alice@example.org`` is how Mastodon
and friends find ``@alice@example.org``. Only ``acct:`` URIs (RFC 7565) name something here:
an account NAME, which the finger service must know, at a HOST this server answers for.
"""

from __future__ import annotations

from urllib.parse import unquote_to_bytes

TYPE_CHECKING = False
if TYPE_CHECKING:
    from fingerd.web.settings import Account

# The JRD property that carries the finger answer: RFC 1288's own URN, as a property name
# must be a URI (RFC 7033 §4.4.3) and no other names "the finger answer".
FINGER_PROPERTY = "urn:ietf:rfc:1288"


class ResourceError(ValueError):
    """The resource cannot be answered: ``status`` 400 (malformed) or 404 (not ours)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


def parse_resource(resource: str) -> tuple[str, str]:
    """``acct:NAME@HOST`` (already taken out of the query string) -> (NAME, host).

    RFC 7565: ``acct:`` userpart ``@`` host, the userpart percent-encoded where needed (an
    ``@`` in it is ``%40``). A value that is no URI at all is malformed (400); a URI of another
    scheme is well-formed but names nothing here (404).
    """
    scheme, colon, rest = resource.partition(":")
    if not colon or not scheme or not scheme[0].isascii() or not scheme[0].isalpha() or not all(
            c.isascii() and (c.isalnum() or c in "+-.") for c in scheme):
        raise ResourceError(400, "resource is not a URI")
    if not resource.isprintable() or any(c.isspace() for c in resource):
        raise ResourceError(400, "resource is not a URI")
    if scheme.lower() != "acct":
        raise ResourceError(404, f"no {scheme}: resources here")
    userpart, at, host = rest.partition("@")
    if not at or not userpart or not host or "@" in host or "/" in host:
        raise ResourceError(400, "an acct: URI is acct:NAME@HOST")
    try:
        name = unquote_to_bytes(userpart).decode("utf-8")
    except UnicodeDecodeError:
        raise ResourceError(400, "the account name is not UTF-8") from None
    if not name.isprintable() or any(c.isspace() for c in name):
        raise ResourceError(400, "the account name has blanks or control characters")
    return name, host.lower().rstrip(".")


def jrd(resource: str, answer: str, account: Account | None, rels: list[str]) -> dict[str, object]:
    """The JRD for ``resource`` (RFC 7033 §4.4): the subject as asked, the finger answer as a
    property, and the account's aliases and links; ``rels`` (the ``rel`` parameters) keep only
    the links of those relation types (§4.3)."""
    out: dict[str, object] = {"subject": resource}
    if account is not None and account.aliases:
        out["aliases"] = list(account.aliases)
    out["properties"] = {FINGER_PROPERTY: answer}
    links = account.links if account is not None else []
    if rels:
        links = [link for link in links if link.rel in rels]
    out["links"] = [link.jrd() for link in links]
    return out
