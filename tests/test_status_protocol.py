"""The status service's pure parts: the wire protocol (requests, replies, limits, garbage and
truncation), the storage format and file names, and the CLI's durations. No I/O here."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fingerd.status_cli import format_duration, parse_duration, shown
from fingerd.status_protocol import (
    BAD_REPLY,
    BAD_REQUEST,
    CLEAR,
    EMPTY,
    ERR,
    GET,
    MAX_REPLY_BYTES,
    MAX_SECONDS,
    MAX_TEXT_BYTES,
    MAX_TEXT_LINES,
    NONE,
    NONE_REPLY,
    OK,
    OK_REPLY,
    SET,
    STATUS,
    TOO_LONG,
    ProtocolError,
    Reply,
    Request,
    RequestParser,
    check_text,
    format_clear,
    format_error,
    format_get,
    format_set,
    format_status,
    parse_reply,
    valid_user,
)
from fingerd.status_store import Status, decode, encode, file_name

users = st.text(st.characters(blacklist_categories=("Cs", "Cc", "Cf", "Zl", "Zp", "Zs", "Co",
                                                     "Cn")), min_size=1, max_size=16)
texts = st.text(min_size=1, max_size=300).filter(
    lambda t: bool(t.replace("\r", "\n").strip()) and not any(
        "\ud800" <= c <= "\udfff" for c in t) and t.replace("\r\n", "\n").replace(
        "\r", "\n").strip().count("\n") < MAX_TEXT_LINES)


def parse(data: bytes) -> Request:
    """Feed ``data`` whole and then the end of input, as the server does."""
    parser = RequestParser()
    request = parser.feed(data)
    if request is None:
        request = parser.feed(b"")
    assert request is not None
    return request


# -- requests -------------------------------------------------------------------------------

def test_requests_are_the_documented_lines() -> None:
    """The three requests on the wire, exactly as the module's grammar writes them."""
    assert format_get("alice") == b"GET alice\n"
    assert format_clear("alice") == b"CLEAR alice\n"
    assert format_set("alice", "Out to lunch", 7200) == b"SET alice 7200 12\nOut to lunch"
    assert format_set("jos\u00e9", "caf\u00e9") == "SET jos\u00e9 0 5\ncaf\u00e9".encode()


@given(users, texts, st.integers(0, MAX_SECONDS))
def test_set_round_trips(user: str, text: str, seconds: int) -> None:
    """What format_set writes, the parser reads back as the same request, whether the bytes
    arrive at once or one at a time."""
    data = format_set(user, text, seconds)
    expected = Request(SET, user, seconds, check_text(text))
    assert parse(data) == expected
    parser = RequestParser()
    results = [parser.feed(data[i:i + 1]) for i in range(len(data))]
    assert results[-1] == expected
    assert all(r is None for r in results[:-1])


@given(users)
def test_get_and_clear_round_trip(user: str) -> None:
    """GET and CLEAR carry any user name the protocol allows."""
    assert parse(format_get(user)) == Request(GET, user)
    assert parse(format_clear(user)) == Request(CLEAR, user)


@given(users, texts, st.integers(0, MAX_SECONDS))
def test_every_truncation_is_an_error_not_a_request(user: str, text: str, seconds: int) -> None:
    """A request cut anywhere and then ended (the client went away) is "truncated", never a
    shorter request: a status is stored whole or not at all."""
    data = format_set(user, text, seconds)
    for cut in range(len(data)):
        parser = RequestParser()
        if cut:
            assert parser.feed(data[:cut]) is None
        with pytest.raises(ProtocolError) as caught:
            parser.feed(b"")  # the end of input
        assert caught.value.code == BAD_REQUEST
        assert caught.value.message == ("truncated request" if cut else "empty request")


@given(st.binary(max_size=400))
def test_garbage_is_an_error_or_a_valid_request(data: bytes) -> None:
    """Any bytes at all: the parser returns a request that would format back to the same
    bytes, or raises ProtocolError with a known code; never anything else."""
    try:
        request = parse(data)
    except ProtocolError as e:
        assert e.code in (BAD_REQUEST, TOO_LONG, EMPTY)
        assert e.message and e.message.isprintable()
        return
    assert valid_user(request.user)
    if request.action == SET:
        assert 0 <= request.seconds <= MAX_SECONDS
        assert request.text == check_text(request.text)
        assert parse(format_set(request.user, request.text, request.seconds)) == request
    else:
        assert data == f"{request.action} {request.user}\n".encode()


@pytest.mark.parametrize("data, code", [
    (b"HELLO\n", BAD_REQUEST),
    (b"get alice\n", BAD_REQUEST),  # case matters
    (b"GET\n", BAD_REQUEST),
    (b"GET  alice\n", BAD_REQUEST),
    (b"GET alice bob\n", BAD_REQUEST),
    (b"GET al\xffice\n", BAD_REQUEST),
    (b"GET al\x1bice\n", BAD_REQUEST),
    (b"GET " + b"a" * 65 + b"\n", BAD_REQUEST),
    (b"GET alice\nGET bob\n", BAD_REQUEST),  # one request per connection
    (b"CLEAR alice\nx", BAD_REQUEST),
    (b"SET alice 0 3\nabcd", BAD_REQUEST),  # more than announced
    (b"SET alice -1 3\nabc", BAD_REQUEST),
    (b"SET alice +1 3\nabc", BAD_REQUEST),
    (b"SET alice 1e3 3\nabc", BAD_REQUEST),
    (b"SET alice \xd9\xa3 3\nabc", BAD_REQUEST),  # an Arabic-Indic digit is not ASCII
    (b"SET alice %d 3\nabc" % (MAX_SECONDS + 1), BAD_REQUEST),
    (b"SET alice 0 3\n\xff\xfe\xfd", BAD_REQUEST),
    (b"SET alice 0 3\n   ", EMPTY),
    (b"SET alice 0 %d\n" % (MAX_TEXT_BYTES + 1), TOO_LONG),
    (b"SET alice 0 99999\n", TOO_LONG),
    (b"SET alice 0 9\na\nb\nc\nd\ne", TOO_LONG),
    (b"X" * 200, BAD_REQUEST),  # no line end within the limit
])
def test_bad_requests_get_a_code(data: bytes, code: str) -> None:
    """Each malformed or over-limit request is refused with its code, as soon as the bytes
    show it (the length over the limit before any of the text arrives)."""
    with pytest.raises(ProtocolError) as caught:
        parse(data)
    assert caught.value.code == code, caught.value.message


def test_over_long_request_line_is_refused_before_its_end() -> None:
    """A client that sends a request line without end is refused once the line limit is
    passed: the server need not read any further."""
    parser = RequestParser()
    assert parser.feed(b"GET " + b"a" * 100) is None
    with pytest.raises(ProtocolError):
        parser.feed(b"a" * 100)


def test_status_limits() -> None:
    """check_text: blanks around are dropped, CRLF becomes LF; 1024 bytes and 4 lines pass,
    one more byte or line does not, and the message names the limit."""
    assert check_text("  Out to lunch\r\n") == "Out to lunch"
    assert check_text("a\r\nb\rc") == "a\nb\nc"
    assert check_text("x" * MAX_TEXT_BYTES) == "x" * MAX_TEXT_BYTES
    assert check_text("\u00e9" * (MAX_TEXT_BYTES // 2)) == "\u00e9" * (MAX_TEXT_BYTES // 2)
    assert check_text("1\n2\n3\n4") == "1\n2\n3\n4"
    for bad in ("x" * (MAX_TEXT_BYTES + 1), "\u00e9" * (MAX_TEXT_BYTES // 2 + 1), "1\n2\n3\n4\n5"):
        with pytest.raises(ProtocolError) as caught:
            check_text(bad)
        assert caught.value.code == TOO_LONG
        assert "1024 bytes" in caught.value.message and "4 lines" in caught.value.message
    for empty in ("", "   ", "\n\n", "\r\n\t"):
        with pytest.raises(ProtocolError) as caught:
            check_text(empty)
        assert caught.value.code == EMPTY
    with pytest.raises(ProtocolError):
        check_text("bad \udcff byte")  # what argv holds for a byte that is not UTF-8


def test_control_characters_are_kept_for_the_output_filter() -> None:
    """Escape sequences are stored as given: the finger output filter removes them from every
    answer, and the CLI shows them escaped."""
    assert check_text("\x1b[31mred\x1b[0m") == "\x1b[31mred\x1b[0m"
    assert shown("\x1b[31mred\x07\nnext") == "\\x1b[31mred\\x07\nnext"


def test_valid_user_names() -> None:
    """The protocol carries printable names without blanks, up to 64 bytes."""
    for name in ("alice", "a.b", "x" * 64, "jos\u00e9", "../../etc/passwd", "-rf"):
        assert valid_user(name), name
    for name in ("", "a b", "a\tb", "a\nb", "x" * 65, "\u00e9" * 33, "a\x1bb", "\u2028",
                 "bad\udcff"):
        assert not valid_user(name), name
    with pytest.raises(ProtocolError):
        format_get("a b")


# -- replies -------------------------------------------------------------------------------

@given(st.integers(0, 2**40), st.integers(0, 2**40), texts)
def test_status_reply_round_trips(set_at: int, expires_at: int, text: str) -> None:
    """STATUS replies carry the times and the text exactly (any UTF-8, escapes included)."""
    text = check_text(text)
    assert parse_reply(format_status(set_at, expires_at, text)) == Reply(
        STATUS, set_at=set_at, expires_at=expires_at, text=text)


def test_fixed_replies() -> None:
    """OK, NONE and ERR as documented; an error message is made one printable line."""
    assert parse_reply(OK_REPLY) == Reply(OK)
    assert parse_reply(NONE_REPLY) == Reply(NONE)
    assert format_error("busy", "try\nagain\x1b") == b"ERR busy try?again?\n"
    assert parse_reply(b"ERR busy try again\n") == Reply(ERR, code="busy", message="try again")
    assert len(format_error("x", "y" * 1000)) < 220


@pytest.mark.parametrize("data", [
    b"", b"OK", b"OK\nx", b"NONE extra\n", b"ERR\n", b"ERR busy\n", b"ERR busy a\x1bb\n",
    b"STATUS 1 2\nx", b"STATUS 1 2 3\nab", b"STATUS 1 2 1\nab", b"STATUS 1 2 0\n",
    b"STATUS a b c\nabc", b"STATUS 1 2 2\n\xff\xfe", b"WHAT\n", b"\xff\n",
    b"STATUS 1 2 3\n" + b"x" * MAX_REPLY_BYTES,
])
def test_bad_replies_are_errors(data: bytes) -> None:
    """A reply cut short, with extra bytes or otherwise malformed is BAD_REPLY: a client
    never takes part of a status for the whole."""
    with pytest.raises(ProtocolError) as caught:
        parse_reply(data)
    assert caught.value.code == BAD_REPLY


@given(st.binary(max_size=300))
def test_reply_garbage_never_raises_anything_else(data: bytes) -> None:
    """Any bytes as a reply: a Reply or ProtocolError, nothing else."""
    try:
        reply = parse_reply(data)
    except ProtocolError as e:
        assert e.code == BAD_REPLY
    else:
        assert reply.kind in (STATUS, NONE, OK, ERR)


# -- storage format --------------------------------------------------------------------------

@given(users)
def test_file_names_are_one_safe_component(user: str) -> None:
    """Every user name maps to one path component, never "." or ".." or a dot file, and
    different names to different files."""
    name = file_name(user)
    assert "/" not in name and "\0" not in name and not name.startswith(".")
    assert 0 < len(name) <= 255
    assert name.isascii() and name.isprintable()


def test_file_names_are_readable_for_plain_names() -> None:
    """Ordinary account names are their own file names; others are percent-encoded."""
    assert file_name("alice") == "alice"
    assert file_name("a.b-c_d") == "a.b-c_d"
    assert file_name("..") == "%2E."
    assert file_name("../x") == "%2E.%2Fx"
    assert file_name("a%2F") == "a%252F"
    assert file_name("jos\u00e9") == "jos%C3%A9"
    assert len({file_name(n) for n in ("a/b", "a%2Fb", "a%252Fb")}) == 3


@given(st.integers(0, 2**31), st.integers(0, 2**40), st.integers(0, 2**40), texts)
def test_status_files_round_trip(uid: int, set_at: int, expires_at: int, text: str) -> None:
    """A stored status reads back as written."""
    status = decode(encode(Status(uid, set_at, expires_at, check_text(text))))
    assert (status.uid, status.set_at, status.expires_at, status.text) == (
        uid, set_at, expires_at, check_text(text))


@pytest.mark.parametrize("data", [b"", b"garbage", b"fingerd-status 1 1 2\nx",
                                  b"fingerd-status 1 a 2 3\nx", b"fingerd-status 1 1 2 3",
                                  b"fingerd-status 2 1 2 3\nx", b"fingerd-status 1 1 2 3\n\xff"])
def test_damaged_status_files_are_rejected(data: bytes) -> None:
    """A file that is not a whole status file is refused (ValueError), not half used."""
    with pytest.raises(ValueError):
        decode(data)


# -- durations (fingerd status set --for) -----------------------------------------------------

@pytest.mark.parametrize("text, seconds", [
    ("90s", 90), ("30m", 1800), ("2h", 7200), ("1d", 86400), ("1h30m", 5400),
    ("1d2h3m4s", 93784), ("365d", MAX_SECONDS), ("1s", 1), ("0h5m", 300),
])
def test_durations(text: str, seconds: int) -> None:
    """The forms the README gives, and combinations, largest unit first."""
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "2", "h", "2x", "1m1h", "1h1h", "2 h", "-1h", "1.5h",
                                  "0s", "366d", "2H", "1h30", "9999999999s", "\u0663h"])
def test_bad_durations_are_refused_with_examples(text: str) -> None:
    """Anything else is refused, and the message shows what would be accepted."""
    with pytest.raises(ValueError) as caught:
        parse_duration(text)
    message = str(caught.value)
    assert message.startswith("--for")
    assert "1h30m" in message or "more than 0" in message or "at most" in message


def test_durations_are_shown_in_two_units() -> None:
    """How long a status has left, as `fingerd status` shows it."""
    assert [format_duration(s) for s in (0, 45, 90, 3600, 7140, 93784, -5)] == [
        "0s", "45s", "1m30s", "1h", "1h59m", "1d2h", "0s"]
