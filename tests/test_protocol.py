"""The pure core: RFC 1288 query parsing and the output filter, tested on the parsed objects."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fingerd.protocol import (
    INVALID_QUERY,
    MAX_QUERY_BYTES,
    QUERY_TOO_LONG,
    TRUNCATED,
    Query,
    QueryError,
    client_address,
    parse_query,
    render,
)

# RFC 1288 §2.3, every form, with the line ends and blanks clients really send.
VALID = [
    # {Q1}: [{W}|{W}{S}{U}|{U}]{C}
    (b"\r\n", Query()),
    (b"\n", Query()),
    (b"", Query()),
    (b"/W\r\n", Query(verbose=True)),
    (b"/W moshez\r\n", Query("moshez", verbose=True)),
    (b"/W    moshez\r\n", Query("moshez", verbose=True)),
    (b"/w moshez\r\n", Query("moshez", verbose=True)),
    (b"/W\tmoshez\r\n", Query("moshez", verbose=True)),
    (b"moshez\r\n", Query("moshez")),
    (b"moshez\n", Query("moshez")),
    (b"moshez", Query("moshez")),
    (b"moshez   \r\n", Query("moshez")),
    (b"  moshez\r\n", Query("moshez")),
    (b"office.101\r\n", Query("office.101")),
    ("jos\u00e9\r\n".encode(), Query("jos\u00e9")),
    # {Q2}: [{W}{S}][{U}]{H}{C}
    (b"moshez@example.org\r\n", Query("moshez", hosts=("example.org",))),
    (b"moshez@a.example@b.example\r\n", Query("moshez", hosts=("a.example", "b.example"))),
    (b"@example.org\r\n", Query("", hosts=("example.org",))),
    (b"/W moshez@example.org\r\n", Query("moshez", True, ("example.org",))),
    (b"/W @example.org\r\n", Query("", True, ("example.org",))),
    (b"moshez@[::1]\r\n", Query("moshez", hosts=("[::1]",))),
    (b"moshez@127.0.0.1\r\n", Query("moshez", hosts=("127.0.0.1",))),
    # telnet option negotiation before the query is ignored
    (b"\xff\xfb\x18\xff\xfd\x03moshez\r\n", Query("moshez")),
    (b"\xff\xfa\x18\x00xterm\xff\xf0moshez\r\n", Query("moshez")),
]

INVALID = [
    b"moshez kirk\r\n",  # two users
    b"/W moshez kirk\r\n",
    b"/X moshez\r\n",  # unknown token
    b"/Wmoshez\r\n",  # {W} must be followed by {S}
    b"moshez@\r\n",  # empty host
    b"moshez@@example.org\r\n",
    b"moshez@exa mple.org\r\n",
    b"moshez@exa$mple.org\r\n",
    b"mos\x00hez\r\n",  # NUL
    b"mos\x1b[31mhez\r\n",  # an escape sequence
    b"mos\rhez\r\n",  # CR inside the line
    b"\x07\r\n",
    b"mos\xff\xffhez\r\n",  # IAC IAC: a literal 0xFF, not UTF-8
    b"\xc3\x28\r\n",  # invalid UTF-8
    b"\xfe\xfe\r\n",
    "mos\u202ehez\r\n".encode(),  # bidi override: not printable
    "mos\u0085hez\r\n".encode(),  # C1 control (NEL)
]


@pytest.mark.parametrize(("line", "expected"), VALID)
def test_valid_queries_parse_to_the_expected_query(line: bytes, expected: Query) -> None:
    """Every RFC 1288 §2.3 form parses to the user, /W flag and forwarding hosts it names."""
    assert parse_query(line) == expected


@pytest.mark.parametrize("line", INVALID)
def test_malformed_queries_are_refused_with_a_short_reason(line: bytes) -> None:
    """Extra words, bad hosts, control characters and bad UTF-8 are refused, not guessed at."""
    with pytest.raises(QueryError) as raised:
        parse_query(line)
    assert raised.value.reply == INVALID_QUERY


def test_an_oversized_line_is_refused_as_too_long() -> None:
    """A line beyond MAX_QUERY_BYTES is refused without being examined."""
    with pytest.raises(QueryError) as raised:
        parse_query(b"a" * (MAX_QUERY_BYTES + 10) + b"\r\n")
    assert raised.value.reply == QUERY_TOO_LONG
    assert parse_query(b"a" * MAX_QUERY_BYTES + b"\r\n").user == "a" * MAX_QUERY_BYTES
    assert parse_query(b"a" * MAX_QUERY_BYTES + b"\n").user == "a" * MAX_QUERY_BYTES
    for end in (b"\r\n", b"\n", b""):  # one byte more is too long, whatever the line end
        with pytest.raises(QueryError, match=QUERY_TOO_LONG):
            parse_query(b"a" * (MAX_QUERY_BYTES + 1) + end)


def test_query_properties_and_next_hop() -> None:
    """A {Q2} query forwards to the right-most host with that host removed (RFC 1288 §2.5.1)."""
    query = parse_query(b"/W moshez@a.example@b.example\r\n")
    assert query.is_forward and not query.is_list
    host, rest = query.next_hop()
    assert host == "b.example"
    assert rest == Query("moshez", True, ("a.example",))
    assert rest.text() == "/W moshez@a.example"
    assert parse_query(b"\r\n").is_list
    with pytest.raises(ValueError, match="not a forwarding query"):
        Query("moshez").next_hop()


def test_query_is_immutable() -> None:
    """A Query is a value: it cannot be changed after parsing."""
    query = Query("moshez")
    with pytest.raises(AttributeError):
        query.user = "root"  # type: ignore[misc]
    assert hash(query) == hash(Query("moshez"))
    assert query != Query("moshez", verbose=True)


def r(text: str, **kw: object) -> bytes:
    kw.setdefault("max_bytes", 65536)
    return render(text, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(("text", "wire"), [
    ("Happy and well", b"Happy and well\r\n"),
    ("line one\nline two\n", b"line one\r\nline two\r\n"),
    ("dos\r\nline\rmac", b"dos\r\nline\r\nmac\r\n"),
    ("", b"\r\n"),
    ("tab\there", b"tab\there\r\n"),
    ("trailing   \n", b"trailing\r\n"),
    ("\x1b[31mred\x1b[0m", b"red\r\n"),  # SGR colour
    ("\x1b[2J\x1b[Hclear", b"clear\r\n"),  # clear screen, cursor home
    ("\x1b]0;pwned title\x07after", b"after\r\n"),  # OSC window title, BEL-terminated
    ("\x1b]8;;http://evil\x1b\\link\x1b]8;;\x1b\\", b"link\r\n"),  # OSC 8 hyperlink, ST
    ("\x1bPdevice control\x1b\\x", b"x\r\n"),  # DCS
    ("\x9b31mC1 CSI", b"C1 CSI\r\n"),
    ("\x1b(Bcharset", b"charset\r\n"),  # ESC ( B: designate G0
    ("bell\x07 null\x00 del\x7f bs\x08", b"bell null del bs\r\n"),
    ("caf\u00e9", b"caf?\r\n"),  # RFC 1288 §3.3: 7-bit only by default
    ("trailing escape\x1b", b"trailing escape\r\n"),
])
def test_render_filters_everything_but_printable_ascii_tab_and_crlf(text: str, wire: bytes) -> None:
    """RFC 1288 §3.3: only printable characters, tabs and CRLF reach the wire."""
    assert r(text) == wire


def test_render_keeps_printable_unicode_when_configured_for_utf8() -> None:
    """output_charset = "utf-8" keeps printable Unicode but still drops format characters."""
    assert r("caf\u00e9 \u2603\u202e\u200b", ascii_only=False) == "caf\u00e9 \u2603\r\n".encode()


def test_render_caps_the_answer_at_a_line_boundary() -> None:
    """An answer over max_bytes is cut at a line end and marked as truncated."""
    text = "\n".join(f"line {i:04d}" for i in range(1000))
    data = r(text, max_bytes=300)
    assert len(data) <= 300
    assert data.endswith(f"\r\n{TRUNCATED}\r\n".encode())
    assert data.startswith(b"line 0000\r\nline 0001\r\n")
    body = data[: -len(TRUNCATED) - 4]
    assert all(line.startswith(b"line ") and len(line) == 9 for line in body.split(b"\r\n"))


def test_render_cap_never_splits_a_utf8_character() -> None:
    """Cutting inside a multi-byte character would send invalid UTF-8."""
    data = r("\u00e9" * 400, max_bytes=300, ascii_only=False)
    assert len(data) <= 300
    data.decode("utf-8")


@given(st.binary(max_size=600))
def test_any_bytes_parse_or_raise_query_error(line: bytes) -> None:
    """No byte string makes the parser fail with anything but a QueryError."""
    try:
        query = parse_query(line)
    except QueryError as e:
        assert e.reply in (INVALID_QUERY, QUERY_TOO_LONG)
    else:
        assert query.user.isprintable() and " " not in query.user


@given(st.text(max_size=2000), st.booleans())
def test_rendered_output_is_always_clean(text: str, ascii_only: bool) -> None:
    """Whatever a backend returns, the wire sees no control byte except TAB, CR, LF in CRLF."""
    data = render(text, max_bytes=1024, ascii_only=ascii_only)
    assert len(data) <= 1024
    assert data.endswith(b"\r\n")
    decoded = data.decode("ascii" if ascii_only else "utf-8")
    for line in decoded.split("\r\n"):
        assert "\r" not in line and "\n" not in line
        assert all(c == "\t" or c.isprintable() for c in line), repr(line)


@pytest.mark.parametrize(("peer", "name"), [
    (("127.0.0.1", 5000), "127.0.0.1"),
    (("::ffff:192.0.2.7", 5000, 0, 0), "192.0.2.7"),
    (("::1", 5000, 0, 0), "::1"),
    (("::ffff:1", 5000, 0, 0), "::ffff:1"),
    ("", ""),
])
def test_client_address_names_ipv4_clients_of_a_dual_stack_socket_in_ipv4_form(
        peer: object, name: str) -> None:
    """`::ffff:192.0.2.7` is logged and counted as 192.0.2.7, as systemd's $REMOTE_ADDR does."""
    assert client_address(peer) == name


@given(st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=300),
       st.integers(min_value=16, max_value=400), st.booleans())
def test_the_fast_path_renders_what_the_whole_filter_renders(text: str, max_bytes: int,
                                                              ascii_only: bool) -> None:
    """A one-line printable ASCII answer skips the filter: the bytes are the same as the whole
    filter's, whatever the cap."""
    from fingerd.protocol import _filter

    assert render(text, max_bytes=max_bytes, ascii_only=ascii_only) == _filter(
        text, max_bytes, ascii_only)


@given(st.text(max_size=80).filter(lambda t: "@" not in t and "\n" not in t))
def test_parse_query_takes_the_asker(name: str) -> None:
    """parse_query(line, remote) gives the same query as parse_query(line), asked by remote."""
    line = name.encode("utf-8", "surrogatepass") + b"\r\n"
    try:
        plain = parse_query(line)
    except QueryError:
        return
    assert parse_query(line, "192.0.2.1") == plain.asked_by("192.0.2.1")



@given(st.text("abcXYZ0189", max_size=MAX_QUERY_BYTES - 1), st.sampled_from(["\r\n", "\n", ""]))
def test_a_bare_name_parses_as_the_whole_parser_would(text: str, end: str) -> None:
    """A name of ASCII letters and digits skips the parser's checks (nearly every query
    `fingerd serve` gets): the query is the one the whole way gives. The whole way is taken
    for the same line with a blank in front, which the parser strips."""
    name, line_end = text.encode("ascii"), end.encode("ascii")
    assert parse_query(name + line_end, "192.0.2.1") == parse_query(b" " + name + line_end,
                                                                   "192.0.2.1")
