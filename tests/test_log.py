"""Journal records in the native protocol, as journald parses them (systemd's "Native Journal
Protocol"): KEY=value lines, or KEY, newline, a 64-bit little-endian length and the raw value
for a value that has a newline in it. The end-to-end test reads them back from a real journald;
these check the encoding itself, on a real datagram socket."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from fingerd import log


def parse_entry(data: bytes) -> dict[str, str]:
    """The journal's reading of one datagram."""
    fields: dict[str, str] = {}
    while data:
        line, _, rest = data.partition(b"\n")
        if b"=" in line:
            key, _, value = line.partition(b"=")
            data = rest
        else:  # binary form
            key, size = line, int.from_bytes(rest[:8], "little")
            value, data = rest[8:8 + size], rest[8 + size + 1:]
            assert rest[8 + size:8 + size + 1] == b"\n"
        assert key.isupper() or b"_" in key, key
        fields[key.decode()] = value.decode()
    return fields


@pytest.fixture
def journal(monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    """Records go to one end of a datagram socketpair; the test reads the other."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    monkeypatch.setattr(log, "_journal", theirs)
    monkeypatch.setattr(log, "_batch", None)
    ours.settimeout(5)
    yield ours
    ours.close()
    theirs.close()


def test_query_record_fields(journal: socket.socket) -> None:
    """One datagram per query with the documented fields."""
    log.query_record("192.0.2.7", "/W moshez", "moshez", "static", "answered", 0.0042)
    entry = parse_entry(journal.recv(65536))
    assert entry == {
        "MESSAGE": 'remote=192.0.2.7 query="/W moshez" backend=static outcome=answered '
                   "duration_ms=4.2",
        "PRIORITY": "6", "SYSLOG_IDENTIFIER": "fingerd", "REMOTE_ADDR": "192.0.2.7",
        "FINGER_QUERY": "/W moshez", "FINGER_USER": "moshez", "FINGER_BACKEND": "static",
        "FINGER_OUTCOME": "answered", "FINGER_DURATION_MS": "4.2",
    }


def test_fields_that_are_unknown_are_left_out(journal: socket.socket) -> None:
    """An invalid query has no user or backend: those fields are absent, not empty."""
    log.query_record("", "\x1b[2J", None, "", "invalid", 0.001)
    entry = parse_entry(journal.recv(65536))
    assert "FINGER_USER" not in entry and "FINGER_BACKEND" not in entry
    assert "REMOTE_ADDR" not in entry
    assert entry["FINGER_QUERY"] == "\\x1b[2J"


def test_a_value_with_a_newline_takes_the_binary_form(journal: socket.socket) -> None:
    """A newline in a value cannot end the field early: it is sent length-prefixed."""
    log.error("reload failed:\nline two", FINGER_BACKEND="a\nb")
    data = journal.recv(65536)
    assert b"MESSAGE\n" in data
    entry = parse_entry(data)
    assert entry["MESSAGE"] == "reload failed:\nline two"
    assert entry["FINGER_BACKEND"] == "a\nb"
    assert entry["PRIORITY"] == "3"


def test_batched_records_are_sent_in_order_on_flush(journal: socket.socket,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """fingerd serve holds a loop turn's records and sends them together, in order."""
    from collections import deque

    monkeypatch.setattr(log, "_batch", deque())
    for n in range(3):
        log.send(f"record {n}")
    journal.settimeout(0.2)
    with pytest.raises(TimeoutError):
        journal.recv(65536)
    log.flush()
    assert [parse_entry(journal.recv(65536))["MESSAGE"] for _ in range(3)] == [
        "record 0", "record 1", "record 2"]


def test_batched_records_survive_a_journald_restart(tmp_path, monkeypatch: pytest.MonkeyPatch,
                                                    capfd: pytest.CaptureFixture[str]) -> None:
    """journald restarts between a record and the flush: the flush addresses the socket anew
    and the records arrive, in order; with no journal left, each message goes to stderr."""
    from collections import deque

    path = str(tmp_path / "journal")
    monkeypatch.setattr(log, "JOURNAL_SOCKET", path)
    old = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    old.bind(path)
    ours = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    ours.connect(path)
    monkeypatch.setattr(log, "_journal", ours)
    monkeypatch.setattr(log, "_batch", deque())
    log.send("before the restart")
    old.close()
    (tmp_path / "journal").unlink()
    new = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    new.bind(path)
    new.settimeout(5)
    log.send("after it")
    log.flush()
    assert [parse_entry(new.recv(65536))["MESSAGE"] for _ in range(2)] == [
        "before the restart", "after it"]
    new.close()
    (tmp_path / "journal").unlink()
    log.send("nobody listens")
    log.flush()
    assert "fingerd: nobody listens" in capfd.readouterr().err
    ours.close()


def test_printable_escapes_what_could_forge_a_log_line() -> None:
    """Quotes, backslashes and control characters are escaped; plain text is unchanged."""
    assert log.printable("moshez") == "moshez"
    assert log.printable('a"b\\c\nd\x1b') == 'a\\"b\\\\c\\x0ad\\x1b'
    assert len(log.printable("x" * 1000)) == 200


def test_control_characters_in_a_message_are_escaped(journal: socket.socket) -> None:
    """A message quoting a hostile web server cannot put escape sequences into the log."""
    log.warning("backend http failed: HTTP 500 \x1b]0;owned\x07\x1b[2J\rFAKE\nsecond line")
    entry = parse_entry(journal.recv(65536))
    assert entry["MESSAGE"] == ("backend http failed: HTTP 500 \\x1b]0;owned\\x07\\x1b[2J\\x0dFAKE"
                                "\nsecond line")


def test_stderr_lines_are_one_line_without_control_characters(
        monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]) -> None:
    """Without the journal, one record is one line on stderr, escaped the same way."""
    monkeypatch.setattr(log, "_journal", False)
    log.error("bad\x1b[31m\nthing")
    assert capfd.readouterr().err == "fingerd: bad\\x1b[31m thing\n"
