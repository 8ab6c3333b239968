"""WebFinger (RFC 7033) from ``fingerd web``: conformance, over real sockets (issue 12).

The accounts and links are the RFC's own examples (§3.1 carol's OpenID issuer, §3.2/§4.3 bob's
profile page and business card), served from a configuration that also knows them to finger.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from web_helpers import Web, running_web

from fingerd.web.webfinger import FINGER_PROPERTY

PATH = "/.well-known/webfinger"
PROFILE = "http://webfinger.net/rel/profile-page"
VCARD = "http://webfinger.net/rel/businesscard"
ISSUER = "http://openid.net/specs/connect/1.0/issuer"
CONFIG = f'''
[[backend]]
type = "static"
[backend.users]
carol = "Carol's status"
bob = "In the office"
quiet = ""

[web]
domains = ["example.com", "Example.NET."]

[web.users.carol]
[[web.users.carol.links]]
rel = "{ISSUER}"
href = "https://openid.example.com"

[web.users.bob]
aliases = ["https://www.example.com/~bob/"]
[[web.users.bob.links]]
rel = "{PROFILE}"
href = "https://www.example.com/~bob/"
[[web.users.bob.links]]
rel = "{VCARD}"
href = "https://www.example.com/~bob/bob.vcf"
[[web.users.bob.links]]
rel = "http://ostatus.org/schema/1.0/subscribe"
template = "https://social.example.com/authorize_interaction?uri={{uri}}"

[web.users.ghost]
[[web.users.ghost.links]]
rel = "self"
type = "application/activity+json"
href = "https://social.example.com/users/ghost"
'''


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(text)
    path.chmod(0o644)
    return path


@pytest.fixture(scope="module")
def directory(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("webfinger")
    path.chmod(0o755)
    return path


@pytest.fixture(scope="module")
def web(directory: Path) -> Iterator[Web]:
    with running_web(write(directory, "webfinger.toml", CONFIG)) as server:
        yield server


def jrd(web: Web, query: str, host: str = "example.com") -> dict[str, object]:
    reply = web.get(f"{PATH}?{query}", {"Host": host})
    assert reply.status == 200, reply
    assert reply.headers["Content-Type"] == "application/jrd+json; charset=utf-8"
    assert reply.headers["Access-Control-Allow-Origin"] == "*"
    document = json.loads(reply.body)
    assert isinstance(document, dict)
    return document


def test_rfc_7033_section_3_1_example(web) -> None:
    """§3.1: `resource=acct%3Acarol%40example.com` gives a JRD whose subject is the resource,
    with carol's link, and the finger answer as a property."""
    assert jrd(web, "resource=acct%3Acarol%40example.com") == {
        "subject": "acct:carol@example.com",
        "properties": {FINGER_PROPERTY: "Carol's status\n"},
        "links": [{"rel": ISSUER, "href": "https://openid.example.com"}],
    }
    # The same unencoded, as Mastodon sends it, and to another configured domain.
    assert jrd(web, "resource=acct:carol@example.com")["subject"] == "acct:carol@example.com"
    assert jrd(web, "resource=acct:carol@EXAMPLE.net")["subject"] == "acct:carol@EXAMPLE.net"


def test_rel_parameters_filter_the_links(web) -> None:
    """§4.3: `rel` parameters keep only the links of those relation types (one or several;
    none matching: no links); subject, aliases and properties stay. Templates pass as they
    are (§4.4.4)."""
    everything = jrd(web, "resource=acct%3Abob%40example.com")
    assert everything["aliases"] == ["https://www.example.com/~bob/"]
    links = everything["links"]
    assert isinstance(links, list)
    assert [link["rel"] for link in links] == [PROFILE, VCARD,
                                               "http://ostatus.org/schema/1.0/subscribe"]
    assert links[2] == {"rel": "http://ostatus.org/schema/1.0/subscribe",
                        "template": "https://social.example.com/authorize_interaction?uri={uri}"}
    profile = jrd(web, "resource=acct%3Abob%40example.com&rel=http%3A%2F%2Fwebfinger.net%2Frel"
                       "%2Fprofile-page")
    assert profile["links"] == [{"rel": PROFILE, "href": "https://www.example.com/~bob/"}]
    assert {k: v for k, v in profile.items() if k != "links"} == {
        k: v for k, v in everything.items() if k != "links"}
    both = jrd(web, f"rel={VCARD}&resource=acct:bob@example.com&rel={PROFILE}")
    assert [link["rel"] for link in both["links"]] == [PROFILE, VCARD]  # type: ignore[index]
    assert jrd(web, "resource=acct:bob@example.com&rel=nothing")["links"] == []


@pytest.mark.parametrize("query", [
    "", "rel=self", "resource=", "resource=carol", "resource=%ff",
    "resource=acct:carol", "resource=acct:@example.com", "resource=acct:carol@",
    "resource=acct:carol%00@example.com", "resource=acct:a%20b@example.com",
    "resource=acct:carol@example.com&resource=acct:bob@example.com",
    "resource=acct:a@b@example.com", "resource=1acct:carol@example.com",
])
def test_missing_or_malformed_resource_is_400(web, query) -> None:
    """No resource, two of them, or one that is not a URI or not acct:NAME@HOST: 400 (§4.2),
    with CORS so that a browser client can read it."""
    reply = web.get(f"{PATH}?{query}", {"Host": "example.com"})
    assert reply.status == 400, query
    assert reply.headers["Access-Control-Allow-Origin"] == "*"


@pytest.mark.parametrize("resource", [
    "acct:nobody@example.com", "acct:carol@example.org", "acct:carol@localhost",
    "https://example.com/~carol", "mailto:carol@example.com", "acct:carol%2540other@example.com",
    "acct:ghost@example.com",
])
def test_unknown_account_or_foreign_host_is_404(web, resource) -> None:
    """An account the finger service does not know (links in [web] do not make one), a host
    this server does not answer for, or a URI of another scheme: 404, with CORS."""
    reply = web.get(f"{PATH}?resource={resource}", {"Host": "example.com"})
    assert reply.status == 404, resource
    assert reply.headers["Access-Control-Allow-Origin"] == "*"


def test_head_and_methods(web) -> None:
    """HEAD gives GET's headers without the body; POST is 405."""
    query = f"{PATH}?resource=acct:carol@example.com"
    get, head = web.get(query), web.get(query, method="HEAD")
    assert head.status == 200 and head.body == b""
    assert head.header_list == get.header_list
    assert web.get(query, method="POST").status == 405


def test_without_domains_the_request_host_is_the_domain(directory) -> None:
    """With no [web] domains, WebFinger answers for the request's Host (without its port)."""
    config = write(directory, "nodomains.toml", CONFIG.replace(
        'domains = ["example.com", "Example.NET."]', ""))
    with running_web(config) as server:
        assert jrd(server, "resource=acct:carol@finger.example", host="finger.example:8079")[
            "subject"] == "acct:carol@finger.example"
        reply = server.get(f"{PATH}?resource=acct:carol@example.com",
                           {"Host": "finger.example"})
        assert reply.status == 404


def test_conceal_unknown_applies_to_webfinger(directory) -> None:
    """With conceal_unknown an unknown account and a silent one get the same answer (status,
    headers, and the JRD but for the subject that repeats the resource)."""
    config = write(directory, "conceal.toml", "[server]\nconceal_unknown = true\n" + CONFIG)
    with running_web(config) as server:
        replies = [server.get(f"{PATH}?resource=acct:{name}@example.com")
                   for name in ("noone", "quiet")]
        assert replies[0].status == replies[1].status == 200
        assert replies[0].header_list == replies[1].header_list
        assert replies[0].body.replace(b"noone", b"quiet") == replies[1].body
        assert json.loads(replies[0].body)["properties"] == {FINGER_PROPERTY: "No information.\n"}


def test_webfinger_is_logged_as_such(web) -> None:
    """Each WebFinger request is one journal record with frontend=webfinger and the finger
    query it asked."""
    web.get(f"{PATH}?resource=acct:bob@example.com")
    web.wait_log('query="bob" backend=static outcome=answered')
    assert "frontend=webfinger" in web.wait_log('query="bob"')
