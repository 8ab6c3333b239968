"""The bot's pure parts, without a network: RFC 2812 lines, what the bot says (cleaned, split),
the token bucket and the outbox, and the [irc] table."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from conftest import FINGERD, env
from hypothesis import given
from hypothesis import strategies as st

from fingerd.config import ConfigError, load
from fingerd.irc.config import IrcConfig, SecretError
from fingerd.irc.flood import Outbox, TokenBucket
from fingerd.irc.message import casefold, encode, parse
from fingerd.irc.text import answer_lines, clean, split

# -- messages ----------------------------------------------------------------------------------


def test_parse_prefix_command_params_and_trailing() -> None:
    """A relayed PRIVMSG: prefix, nick, user@host, command, the target and the trailing text
    (spaces and colons inside it kept)."""
    m = parse(b":alice!~al@host.example PRIVMSG #finger :!finger moshez :-) \r\n")
    assert m is not None
    assert (m.prefix, m.nick, m.user_host) == ("alice!~al@host.example", "alice",
                                                "~al@host.example")
    assert (m.command, m.params) == ("PRIVMSG", ["#finger", "!finger moshez :-) "])


def test_parse_numerics_tags_and_odd_lines() -> None:
    """Numerics, IRCv3 tags (skipped), a server prefix (no user@host), lower-case commands,
    and lines that are empty or hold no command (None)."""
    m = parse(b"@time=2024-01-01T00:00:00Z :irc.test 433 * fingerbot :Nickname in use")
    assert m is not None and m.command == "433" and m.params == ["*", "fingerbot",
                                                                 "Nickname in use"]
    assert m.user_host == "" and m.nick == "irc.test"
    ping = parse(b"ping :irc.test")
    assert ping is not None and (ping.command, ping.params) == ("PING", ["irc.test"])
    assert parse(b"\r\n") is None
    assert parse(b":prefix.only") is None
    latin1 = parse(b":caf\xe9!u@h PRIVMSG bot :x")
    assert latin1 is not None and latin1.nick == "caf\ufffd"


def test_parse_fifteenth_parameter_takes_the_rest() -> None:
    """RFC 2812: after 14 middle parameters the rest of the line is the last one."""
    m = parse(b"CMD " + b" ".join(b"p%d" % i for i in range(16)))
    assert m is not None and len(m.params) == 15 and m.params[-1] == "p14 p15"


def test_encode_trailing_and_refusals() -> None:
    """The last parameter goes as trailing when it needs to; CR, LF or NUL anywhere, a middle
    parameter that is not one word, or a line over 512 bytes is refused (ValueError)."""
    assert encode("PRIVMSG", "#finger", "Happy and well") == b"PRIVMSG #finger :Happy and well\r\n"
    assert encode("NICK", "fingerbot") == b"NICK fingerbot\r\n"
    assert encode("PRIVMSG", "bob", ":-)") == b"PRIVMSG bob ::-)\r\n"
    for bad in (("PRIVMSG", "#f", "a\r\nQUIT"), ("PRIVMSG", "#f", "a\0b"),
                ("PRIVMSG", "a b", "x"), ("PRIVMSG", "", "x"),
                ("PRIVMSG", "#f", "x" * 500)):
        with pytest.raises(ValueError):
            encode(*bad)


@given(st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n\0"),
               min_size=1, max_size=400))
def test_encode_then_parse_gives_the_text_back(text: str) -> None:
    """Whatever text (without CR, LF, NUL; surrogates are not text UTF-8 can carry), encoded
    as a PRIVMSG and parsed again, is the same text (the server sees what the bot meant)."""
    m = parse(encode("PRIVMSG", "#finger", text))
    assert m is not None and m.params == ["#finger", text]


def test_casefold_is_rfc1459() -> None:
    """{}|^ are the lower case of []\\~."""
    assert casefold("Finger[Bot]\\~") == "finger{bot}|^"


# -- what the bot says -------------------------------------------------------------------------

FORBIDDEN = {*map(chr, range(0x20)), "\x7f", *map(chr, range(0x80, 0xA0))}


@given(st.text())
def test_clean_leaves_no_control_character(text: str) -> None:
    """Whatever the text, nothing clean() emits is a C0 control (TAB, CR, LF, CTCP's \\x01,
    IRC's formatting codes), DEL or a C1 control, nor any other unprintable character."""
    out = clean(text)
    assert not FORBIDDEN & set(out)
    assert out.isprintable()


def test_clean_removes_irc_formatting_with_its_arguments() -> None:
    """Colour codes go with their digits (\\x03NN,NN and \\x04RRGGBB), the others alone; a
    comma not followed by a digit stays text; TAB becomes spaces."""
    assert clean("\x0304,12red\x03 \x033green\x03, ok") == "red green, ok"
    assert clean("\x04ff0000,00ff00hex\x04 plain") == "hex plain"
    assert clean("\x02b\x1di\x1fu\x16r\x1es\x11m\x0f\x01ACTION x\x01") == "biursmACTION x"
    assert clean("a\tb") == "a       b"
    assert clean("\u202eevil\u200b") == "evil"


@given(st.text(), st.integers(min_value=4, max_value=600))
def test_split_fits_the_limit_and_loses_only_the_spaces_it_breaks_at(text: str,
                                                                      limit: int) -> None:
    """Every piece is at most ``limit`` bytes of UTF-8 and not empty; the pieces hold the text's
    characters in order, less at most one space per break."""
    pieces = split(text, limit)
    assert all(0 < len(p.encode("utf-8")) <= limit for p in pieces)
    assert "".join(pieces).replace(" ", "") == text.replace(" ", "")
    assert len(text) - len("".join(pieces)) <= max(0, len(pieces) - 1)


def test_split_breaks_between_words_and_inside_long_words() -> None:
    """Words are kept whole where a space is near the end; a word longer than the limit is cut
    at a character boundary (a 4-byte character never split)."""
    assert split("aaa bbb ccc", 8) == ["aaa bbb", "ccc"]
    assert split("x" * 10, 4) == ["xxxx", "xxxx", "xx"]
    assert split("\U0001f600" * 3, 5) == ["\U0001f600"] * 3


def test_answer_lines_drop_blank_lines_and_clean_each() -> None:
    """An answer's CRLF lines, cleaned, trailing blanks off, blank lines left out (IRC has no
    empty message)."""
    assert answer_lines(b"\r\nfirst \x02bold\x02  \r\n\r\n\tsecond\r\n\r\n") == [
        "first bold", "        second"]


# -- flood control -----------------------------------------------------------------------------

def test_token_bucket_burst_then_one_per_interval() -> None:
    """A full bucket gives ``burst`` lines at once, then one per interval; an urgent line may
    overdraw, and the lines after it wait for that too."""
    bucket = TokenBucket(4, 1.0, now=100.0)
    for _ in range(4):
        assert bucket.wait(100.0) == 0
        bucket.take(100.0)
    assert bucket.wait(100.0) == pytest.approx(1.0)
    assert bucket.wait(100.5) == pytest.approx(0.5)
    assert bucket.wait(101.0) == 0
    bucket.take(101.0)
    bucket.take(101.0)  # urgent: overdrawn by one
    assert bucket.wait(101.0) == pytest.approx(2.0)
    assert bucket.wait(200.0) == 0 and bucket.tokens == 4  # never more than the burst


def test_outbox_control_first_then_askers_round_robin() -> None:
    """Control lines go first; askers' lines alternate, whoever queued more."""
    box = Outbox(max_lines=100, max_lines_per_asker=50)
    box.put("greedy", [b"g1", b"g2", b"g3"])
    box.put("patient", [b"p1"])
    box.put_control(b"PONG")
    assert [box.pop() for _ in range(6)] == [b"PONG", b"g1", b"p1", b"g2", b"g3", None]
    assert len(box) == 0


def test_outbox_is_bounded_per_asker_and_in_all() -> None:
    """An asker cannot queue more than its share, nor all askers more than the total; what
    does not fit is counted as dropped, and admit() says so beforehand."""
    box = Outbox(max_lines=5, max_lines_per_asker=3)
    assert box.put("a", [b"1", b"2", b"3", b"4"]) == 1
    assert not box.admit("a")
    assert box.admit("b", 2) and not box.admit("b", 3)
    assert box.put("b", [b"1", b"2", b"3"]) == 1
    assert box.queued("a") == 3 and box.queued("b") == 2 and len(box) == 5
    box.clear()
    assert len(box) == 0 and box.admit("a", 3)


# -- [irc] -------------------------------------------------------------------------------------

def irc(tmp_path: Path, text: str) -> IrcConfig:
    path = tmp_path / "fingerd.toml"
    path.write_text("[irc]\n" + text)
    return IrcConfig(load(str(path)).frontends["irc"])


def test_irc_defaults(tmp_path: Path) -> None:
    """Only server and nick are needed: TLS on port 6697, prefix !finger, 4 channel lines,
    4 lines at once then one a second; without TLS the port is 6667."""
    config = irc(tmp_path, 'server = "irc.example.org"\nnick = "fingerbot"\n')
    assert (config.tls, config.port, config.prefix, config.channel_lines) == (
        True, 6697, "!finger", 4)
    assert (config.send_burst, config.send_interval, config.channels) == (4, 1.0, [])
    assert config.secret() == ""
    plain = irc(tmp_path, 'server = "irc.example.org"\nnick = "fingerbot"\ntls = false\n')
    assert plain.port == 6667


@pytest.mark.parametrize(("text", "key", "reason"), [
    ('nick = "x"\n', "irc.server", "missing"),
    ('server = "a b"\nnick = "x"\n', "irc.server", "host name"),
    ('server = "h"\nnick = "9lives"\n', "irc.nick", "not a valid nick"),
    ('server = "h"\nnick = "x"\nalt_nicks = ["a b"]\n', "irc.alt_nicks", "not a valid nick"),
    ('server = "h"\nnick = "x"\nchannels = ["finger"]\n', "irc.channels", "not a channel"),
    ('server = "h"\nnick = "x"\nchannels = ["#a,#b"]\n', "irc.channels", "not a channel"),
    ('server = "h"\nnick = "x"\nprefix = "! finger"\n', "irc.prefix", "one word"),
    ('server = "h"\nnick = "x"\nchannel_lines = 0\n', "irc.channel_lines", "between"),
    ('server = "h"\nnick = "x"\npassword = "hunter2"\n', "irc.password", "readable by everyone"),
    ('server = "h"\nnick = "x"\npassword_credential = "../x"\n', "irc.password_credential",
     "not a path"),
    ('server = "h"\nnick = "x"\npassword_file = "rel"\n', "irc.password_file", "absolute"),
    ('server = "h"\nnick = "x"\nsasl_username = "u"\n', "irc.sasl_username", "needs"),
    ('server = "h"\nnick = "x"\ntls = false\nca_file = "/x"\n', "irc.ca_file", "tls"),
    ('server = "h"\nnick = "x"\nchanels = []\n', "irc.chanels", "unknown key"),
])
def test_irc_errors_name_the_key_and_line(tmp_path: Path, text: str, key: str,
                                          reason: str) -> None:
    """A bad [irc] value is a ConfigError naming the file, the key (and its line when it is in
    the file) and the reason."""
    with pytest.raises(ConfigError) as error:
        irc(tmp_path, text)
    assert error.value.key == key
    assert reason in error.value.reason
    if key != "irc.server" or "server" in text:
        assert error.value.line > 1, str(error.value)


def test_secret_from_a_file_or_a_credential(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """password_file is read as one line; password_credential from $CREDENTIALS_DIRECTORY; a
    missing directory, a missing file or a secret of two lines is a SecretError saying so."""
    secret = tmp_path / "secret"
    secret.write_text("hunter2\n")
    config = irc(tmp_path, f'server = "h"\nnick = "x"\npassword_file = "{secret}"\n')
    assert config.secret() == "hunter2"
    secret.write_text("a\nb\n")
    with pytest.raises(SecretError, match="more than one line"):
        config.secret()
    cred = irc(tmp_path, 'server = "h"\nnick = "x"\npassword_credential = "irc"\n')
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    with pytest.raises(SecretError, match="LoadCredential"):
        cred.secret()
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    with pytest.raises(SecretError, match="is not given to this service"):
        cred.secret()  # the directory, but not this credential
    (tmp_path / "irc").write_text("s3cret")
    assert cred.secret() == "s3cret"


def test_fingerd_check_validates_irc(public_dir: Path) -> None:
    """`fingerd check` reports the [irc] table (without reading the secret), and fails with the
    key and line for a bad one; a file without [irc] is not asked for one. (In a directory the
    service's user can read: as root, check reads the file as nobody.)"""
    path = public_dir / "fingerd.toml"
    path.write_text('[irc]\nserver = "irc.example.org"\nnick = "fingerbot"\n'
                    'channels = ["#finger"]\npassword_credential = "irc"\n')
    path.chmod(0o644)
    ok = subprocess.run([*FINGERD, "check", "--config", str(path)], capture_output=True,
                        text=True, env=env(), timeout=60)
    assert ok.returncode == 0, ok.stderr
    assert ("irc: fingerbot on irc.example.org:6697 (TLS) in #finger, password from credential "
            "irc") in ok.stdout
    path.write_text('[irc]\nserver = "irc.example.org"\nnick = "fingerbot"\nport = 0\n')
    bad = subprocess.run([*FINGERD, "check", "--config", str(path)], capture_output=True,
                         text=True, env=env(), timeout=60)
    assert bad.returncode == 1
    assert f"{path}:4: irc.port: must be between 1 and 65535, got 0" in bad.stderr
    path.write_text("")
    assert "irc:" not in subprocess.run([*FINGERD, "check", "--config", str(path)],
                                        capture_output=True, text=True, env=env(),
                                        timeout=60, check=True).stdout


def test_fingerd_irc_without_a_usable_secret_exits_1(tmp_path: Path) -> None:
    """`fingerd irc` whose password cannot be read says why on stderr and exits 1, before it
    connects anywhere."""
    path = tmp_path / "fingerd.toml"
    path.write_text('[irc]\nserver = "127.0.0.1"\nnick = "fingerbot"\n'
                    f'password_file = "{tmp_path}/missing"\n')
    run = subprocess.run([*FINGERD, "irc", "--config", str(path)], capture_output=True,
                         text=True, env=env(), timeout=60)
    assert run.returncode == 1
    assert f"cannot read the password: the password file ({tmp_path}/missing)" in run.stderr
