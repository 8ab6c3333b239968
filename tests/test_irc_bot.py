"""`fingerd irc` against a real IRC server: ngircd, started by each test (tests/ircd.py), and
people who join and ask like people do (tests/irc_person.py).

As root every test has a network namespace of its own; without root, loopback and free ports.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import FINGERD, env
from irc_person import Line, Person
from ircd import Bot, Net, Ngircd, make_certificates

from fingerd.irc.bot import RATE_LIMITED
from fingerd.protocol import FORWARDING_DENIED, LIST_DENIED

pytestmark = pytest.mark.netns

BOT = "fingerbot"
CHANNEL = "#finger"
STATIC_USERS = {
    "moshez": "Happy and well",
    "poet": "\n".join(f"line {n} of the poem" for n in range(1, 11)),
    "wide": " ".join(f"word{n:03}" for n in range(200)),  # one line of 1399 bytes
}


def irc_table(port: int, **extra: object) -> str:
    settings: dict[str, object] = {
        "server": "127.0.0.1", "port": port, "tls": False, "nick": BOT,
        "alt_nicks": [f"{BOT}2"], "channels": [CHANNEL], "reconnect_max_delay": 4,
    }
    settings.update(extra)
    lines = []
    for key, value in settings.items():
        if isinstance(value, bool):
            lines.append(f"{key} = {str(value).lower()}")
        elif isinstance(value, str):
            lines.append(f'{key} = "{value}"')
        elif isinstance(value, list):
            lines.append(f"{key} = [{', '.join(repr(v).replace(chr(39), chr(34)) for v in value)}]")
        else:
            lines.append(f"{key} = {value}")
    return "[irc]\n" + "\n".join(lines) + "\n"


def static_backend(users: dict[str, str]) -> str:
    body = "\n".join(f"{name} = {_toml_string(text)}" for name, text in users.items())
    return f'[[backend]]\ntype = "static"\n[backend.users]\n{body}\n'


def _toml_string(text: str) -> str:
    escaped = "".join(c if c.isprintable() and c not in '"\\' else f"\\u{ord(c):04x}"
                      for c in text)
    return f'"{escaped}"'


class World:
    """One test's network, IRC server, bot and people."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.net = Net()
        self.ircd: Ngircd | None = None
        self.bots: list[Bot] = []
        self.people: list[Person] = []

    def server(self, **kwargs: object) -> Ngircd:
        self.ircd = Ngircd(self.net, self.directory, **kwargs)  # type: ignore[arg-type]
        return self.ircd

    def config(self, text: str, name: str = "fingerd.toml") -> Path:
        path = self.directory / name
        path.write_text(text)
        path.chmod(0o644)
        return path

    def bot(self, text: str, wait: str = f"joined {CHANNEL}") -> Bot:
        bot = Bot(self.net, self.config(text), self.directory / f"bot{len(self.bots)}.log")
        self.bots.append(bot)
        if wait:
            bot.wait_log(wait)
        return bot

    def person(self, nick: str, channel: str | None = CHANNEL, password: str = "") -> Person:
        assert self.ircd is not None
        person = Person(self.net.connect(self.ircd.port), nick, password=password)
        self.people.append(person)
        if channel:
            person.join(channel)
        return person

    def close(self) -> None:
        for person in self.people:
            person.quit()
        for bot in self.bots:
            bot.stop()
        if self.ircd is not None:
            self.ircd.stop()
        self.net.close()


@pytest.fixture
def world(public_dir: Path) -> Iterator[World]:
    w = World(public_dir)
    try:
        yield w
    finally:
        w.close()


def standard(world: World, users: dict[str, str] | None = None, server: str = "",
             **irc: object) -> Bot:
    ircd = world.server()
    return world.bot(server + static_backend(users or STATIC_USERS)
                     + irc_table(ircd.port, **irc))


def answers(person: Person, quiet: float = 2.5, nick: str = BOT,
            command: str = "PRIVMSG") -> list[str]:
    first = person.expect(person.from_bot(nick, command), 20)
    return [first.text, *(m.text for m in person.collect(person.from_bot(nick, command),
                                                         quiet))]


# -- asking -------------------------------------------------------------------------------------

PRIVATE = "NOTICE"  # what a private answer comes as


def test_channel_query_is_answered_in_the_channel(world: World) -> None:
    """`!finger moshez` in #finger: the static answer, from the bot, in the channel; the query
    is logged with the asker's nick!user@host, the channel, the user and the outcome."""
    bot = standard(world)
    alice = world.person("alice")
    alice.say(CHANNEL, "!finger moshez")
    line = alice.expect(alice.from_bot(BOT), 20)
    assert line.params == [CHANNEL, "Happy and well"]
    log = bot.wait_log("frontend=irc")
    record = next(x for x in log.splitlines() if "frontend=irc" in x)
    assert "remote=alice!~alice@127.0.0.1" in record, record
    assert 'query="moshez"' in record and "outcome=answered" in record, record
    assert f"irc_channel={CHANNEL}" in record and "backend=static" in record, record


def test_private_query_is_answered_in_private(world: World) -> None:
    """A private `moshez`, `finger moshez` or `!finger moshez` is answered in private, by
    NOTICE (RFC 2812 §3.3.2: an automatic reply must not be answered, so two bots that answer
    what they are told cannot talk to each other forever)."""
    standard(world)
    bob = world.person("bob", channel=None)
    for text in ("moshez", "finger moshez", "!finger moshez"):
        bob.say(BOT, text)
        line = bob.expect(bob.from_bot(BOT, PRIVATE), 20)
        assert line.params == ["bob", "Happy and well"], text


def test_refusals_are_the_finger_services_texts(world: World) -> None:
    """An unknown user, the user list (list_users off) and forwarding (off) get the service's
    own texts, in the channel as in private."""
    standard(world)
    carol = world.person("carol")
    for text, expected in (("!finger ghost", "No such user."),
                           ("!finger", LIST_DENIED),
                           ("!finger moshez@elsewhere.example", FORWARDING_DENIED)):
        carol.say(CHANNEL, text)
        assert carol.expect(carol.from_bot(BOT), 20).text == expected, text
    carol.say(BOT, "ghost")
    assert carol.expect(carol.from_bot(BOT, PRIVATE), 20).text == "No such user."


def test_user_list_when_enabled(world: World) -> None:
    """With [server] list_users = true, `!finger` alone answers the backend's list."""
    ircd = world.server()
    world.bot('[server]\nlist_users = true\n[[backend]]\ntype = "static"\n'
              'list = "moshez  Happy and well"\n[backend.users]\nmoshez = "x"\n'
              + irc_table(ircd.port))
    dave = world.person("dave")
    dave.say(CHANNEL, "!finger")
    assert dave.expect(dave.from_bot(BOT), 20).text == "moshez  Happy and well"


def test_long_answer_is_cut_in_the_channel_and_whole_in_private(world: World) -> None:
    """A 10-line answer: 4 lines in the channel, then "(more: /msg BOT NAME)"; in private,
    all 10, in order."""
    standard(world)
    erin = world.person("erin")
    erin.say(CHANNEL, "!finger poet")
    assert answers(erin) == [f"line {n} of the poem" for n in range(1, 5)] + [
        f"(more: /msg {BOT} poet)"]
    erin.say(BOT, "poet")
    assert answers(erin, command=PRIVATE) == [f"line {n} of the poem" for n in range(1, 11)]


def test_long_line_is_split_to_fit_irc_lines(world: World) -> None:
    """A 1399-byte answer line arrives as several messages, each within 512 bytes as the
    server relays it (prefix included), cut between words, and together the whole line."""
    standard(world)
    fay = world.person("fay", channel=None)
    fay.say(BOT, "wide")
    first = fay.expect(fay.from_bot(BOT, PRIVATE), 20)
    rest = fay.collect(fay.from_bot(BOT, PRIVATE), quiet=2.5)
    pieces = [first, *rest]
    assert len(pieces) >= 3
    assert all(len(p.raw) + 2 <= 512 for p in pieces), [len(p.raw) for p in pieces]
    # Cut at spaces, which the breaks replace.
    assert " ".join(p.text for p in pieces) == STATIC_USERS["wide"]


def test_hostile_status_reaches_irc_without_control_codes(world: World) -> None:
    """A status full of IRC colours and bold, CTCP, terminal escapes, bidi overrides and a CR
    LF with a command behind it: what the bot says holds no C0 or C1 control, no DEL, and no
    second command; the printable text stays."""
    hostile = ("\x02bold\x02 \x0304,12red\x03 \x01ACTION waves\x01 \x1b[31mansi\x1b[0m "
               "\x1b]0;title\x07 \u202eevil\u202c \x16rev\x0f \x04ff0000hex\x7f\x9b1m"
               "\r\nQUIT :gotcha\r\nPRIVMSG #finger :injected")
    standard(world, {"evil": hostile}, server='[server]\noutput_charset = "utf-8"\n')
    gus = world.person("gus")
    gus.say(CHANNEL, "!finger evil")
    lines = [gus.expect(gus.from_bot(BOT), 20), *gus.collect(gus.from_bot(BOT), 2.5)]
    for line in lines:
        text = line.raw.decode("utf-8")
        bad = [c for c in text if ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 or c in "\u202e\u202c"]
        assert not bad, line.raw
    # The same text as finger answers (its output filter took the control characters out
    # already, and left what was text around them, like the colour's digits), line by line.
    finger = subprocess.run([*FINGERD, "query", "--config", str(world.directory / "fingerd.toml"),
                             "evil"], capture_output=True, check=True, env=env(), timeout=30)
    expected = [x.rstrip() for x in finger.stdout.decode().split("\r\n") if x.strip()]
    assert [line.text for line in lines] == expected
    assert "bold" in expected[0] and "waves" in expected[0] and "ansi" in expected[0]
    # The CR LF became a line break of the answer, never a command of the bot's.
    assert [line.text for line in lines][1] == "QUIT :gotcha"
    assert gus.collect(lambda m: m.command == "QUIT" and m.nick == BOT, quiet=0.5) == []


def test_ctcp_version_and_ping_only_and_notices_never_answered(world: World) -> None:
    """CTCP VERSION and PING are answered by NOTICE; ACTION and other CTCP, and any NOTICE
    (RFC 2812: never answer one), get nothing."""
    standard(world)
    hal = world.person("hal")
    hal.say(BOT, "\x01VERSION\x01")
    version = hal.expect(hal.from_bot(BOT, "NOTICE"), 20)
    assert version.text.startswith("\x01VERSION fingerd ") and version.text.endswith("\x01")
    hal.say(BOT, "\x01PING 12345\x01")
    assert hal.expect(hal.from_bot(BOT, "NOTICE"), 20).text == "\x01PING 12345\x01"
    hal.say(BOT, "\x01ACTION pokes\x01")
    hal.say(BOT, "\x01CLIENTINFO\x01")
    hal.send(f"NOTICE {BOT} :moshez")
    hal.send(f"NOTICE {CHANNEL} :!finger moshez")
    assert hal.collect(lambda m: m.nick == BOT and m.command in ("PRIVMSG", "NOTICE"),
                       quiet=3) == []


# -- flood control -----------------------------------------------------------------------------

def sent_rate_ok(lines: list[Line], burst: int, interval: float) -> bool:
    """No window of the bot's lines, as they arrived, holds more than the bucket allows
    (with half a second for scheduling and the server's own pace)."""
    times = sorted(line.when for line in lines)
    for i, start in enumerate(times):
        for j in range(i, len(times)):
            allowed = burst + (times[j] - start + 0.5) / interval
            if j - i + 1 > allowed:
                return False
    return True


def test_forty_requests_in_five_seconds_from_two_people(world: World) -> None:
    """40 `!finger` requests in 5 s from two people: the bot sends at most its burst and then
    one line a second (ngircd throttles faster senders and answers their PINGs late; larger
    networks disconnect them), each person gets answers and, for what was dropped, one
    rate-limit notice; all 40 are logged (answered or busy), and the bot is still connected
    and answers right after."""
    users = {f"{who}{n}": f"answer {who}{n}" for who in "ab" for n in range(20)}
    bot = standard(world, users)
    a, b = world.person("asker-a"), world.person("asker-b")
    listener = world.person("listener")
    start = time.monotonic()

    def ask() -> None:  # while the listener reads and timestamps what the bot says
        for n in range(20):
            a.say(CHANNEL, f"!finger a{n}")
            b.say(CHANNEL, f"!finger b{n}")
            time.sleep(max(0.0, start + (n + 1) * 0.24 - time.monotonic()))

    asking = threading.Thread(target=ask)
    asking.start()
    said = listener.collect(listener.from_bot(BOT), quiet=4, limit=90)
    asking.join()
    texts = [line.text for line in said]
    for person, who in ((a, "a"), (b, "b")):
        got = [t for t in texts if t.startswith(f"answer {who}")]
        assert got, texts
        if len(got) < 20:
            notice = person.expect(person.from_bot(BOT, "NOTICE"), 10)
            assert notice.text == RATE_LIMITED
    assert sent_rate_ok(said, burst=4, interval=1.0), [round(x.when - start, 2) for x in said]
    log = bot.text()
    outcomes = [x for x in log.splitlines() if "frontend=irc" in x]
    assert len(outcomes) == 40, log[-3000:]
    assert all("outcome=answered" in x or "outcome=busy" in x for x in outcomes)
    answered = sum("outcome=answered" in x for x in outcomes)
    print(f"flood: {answered} answered, {40 - answered} busy, last line after "
          f"{said[-1].when - start:.1f} s")
    # Still there: in the channel, and answering at once.
    a.say(CHANNEL, "!finger a0")
    assert a.expect(lambda m: m.nick == BOT and m.text == "answer a0", 10)
    assert not [m for m in listener.seen if m.command == "QUIT" and m.nick == BOT]


def test_one_asker_cannot_starve_another(world: World) -> None:
    """While one person's long private answer is being sent, another person's question is
    answered within a few lines (round-robin), not after the whole backlog."""
    standard(world, {"long": "\n".join(f"row {n}" for n in range(30)), "moshez": "short"})
    greedy, patient = world.person("greedy", None), world.person("patient", None)
    greedy.say(BOT, "long")
    greedy.expect(greedy.from_bot(BOT, PRIVATE), 20)
    time.sleep(1)
    patient.say(BOT, "moshez")
    asked = time.monotonic()
    patient.expect(lambda m: m.nick == BOT and m.text == "short", 10)
    assert time.monotonic() - asked < 5
    rows = greedy.collect(greedy.from_bot(BOT, PRIVATE), quiet=3, limit=60)
    assert rows[-1].text == "row 29"


# -- staying connected ---------------------------------------------------------------------------

def test_bot_comes_back_after_the_server_restarts(world: World) -> None:
    """ngircd stopped and started again: the bot reconnects within its backoff (at most
    reconnect_max_delay = 4 s here), joins #finger again and answers."""
    bot = standard(world)
    world.ircd.stop()  # type: ignore[union-attr]
    bot.wait_log("reconnecting in")
    time.sleep(3)  # a failed attempt or two while the server is down
    world.ircd.start()  # type: ignore[union-attr]
    back = time.monotonic()
    ivy = world.person("ivy")
    ivy.expect(lambda m: m.command == "JOIN" and m.nick == BOT, 15)
    assert time.monotonic() - back < 4 + 5  # the backoff cap plus registering and joining
    ivy.say(CHANNEL, "!finger moshez")
    assert ivy.expect(ivy.from_bot(BOT), 20).text == "Happy and well"


def test_nick_in_use_takes_the_alternate_and_regains_its_own(world: World) -> None:
    """Its nick taken at connect, the bot comes up as its alternate and answers; when the
    holder leaves, it takes its own nick back."""
    ircd = world.server()
    squatter = world.person(BOT)
    world.bot(static_backend(STATIC_USERS) + irc_table(ircd.port))
    jan = world.person("jan")
    jan.say(CHANNEL, "!finger moshez")
    assert jan.expect(jan.from_bot(f"{BOT}2"), 20).text == "Happy and well"
    squatter.quit()
    world.people.remove(squatter)
    renamed = jan.expect(lambda m: m.command == "NICK" and m.nick == f"{BOT}2", 20)
    assert renamed.text == BOT
    jan.say(CHANNEL, "!finger moshez")
    assert jan.expect(jan.from_bot(BOT), 20).text == "Happy and well"


def test_reload_and_stop(world: World) -> None:
    """SIGHUP: a changed answer and a new channel take effect without reconnecting; a broken
    file is logged and the running configuration kept. SIGTERM: QUIT, exit 0."""
    ircd = world.server()
    config = world.directory / "fingerd.toml"
    bot = world.bot(static_backend(STATIC_USERS) + irc_table(ircd.port))
    kim = world.person("kim")
    kim.join("#other")  # first: the bot may join at once after SIGHUP, and kim must see it
    config.write_text(static_backend({"moshez": "Reloaded"})
                      + irc_table(ircd.port, channels=[CHANNEL, "#other"]))
    bot.proc.send_signal(signal.SIGHUP)
    kim.expect(lambda m: m.command == "JOIN" and m.nick == BOT and m.params == ["#other"], 15)
    kim.say("#other", "!finger moshez")
    assert kim.expect(kim.from_bot(BOT), 20).text == "Reloaded"
    config.write_text("[irc]\nserver = 1\n")
    bot.proc.send_signal(signal.SIGHUP)
    bot.wait_log("reload failed, keeping the running configuration")
    kim.say(CHANNEL, "!finger moshez")
    assert kim.expect(kim.from_bot(BOT), 20).text == "Reloaded"
    assert bot.stop() == 0
    kim.expect(lambda m: m.command == "QUIT" and m.nick == BOT, 10)


# -- TLS and passwords ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def certificates() -> Iterator[dict[str, Path]]:
    """The test CA and server certificates, where ngircd (as nobody) can read them."""
    directory = Path(tempfile.mkdtemp(prefix="fingerd-irc-certs-"))
    directory.chmod(0o755)  # test keys, for ngircd running as nobody
    try:
        yield make_certificates(directory)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.mark.parametrize("name", ["good", "other_name", "unknown_ca"])
def test_tls_verifies_the_server_certificate(world: World, certificates: dict[str, Path],
                                             name: str) -> None:
    """Over TLS with the test CA as ca_file: a certificate from that CA for 127.0.0.1 is
    accepted and the bot answers; one for another name, or from another CA, is refused
    (logged, never registered) and retried with backoff."""
    ircd = world.server(cert=certificates[name], key=certificates[f"{name}_key"])
    text = static_backend(STATIC_USERS) + irc_table(
        ircd.tls_port, tls=True, ca_file=str(certificates["ca"]))
    if name == "good":
        world.bot(text)
        lee = world.person("lee")
        lee.say(CHANNEL, "!finger moshez")
        assert lee.expect(lee.from_bot(BOT), 20).text == "Happy and well"
        return
    bot = world.bot(text, wait="TLS certificate not accepted")
    bot.wait_log("reconnecting in")
    assert "registered on" not in bot.text()
    assert f"{BOT}" not in ircd.log.read_text(errors="replace")


def test_server_password_from_a_file_or_a_credential(world: World) -> None:
    """A server password (ngircd's Password=) from password_file, or from a systemd credential
    ($CREDENTIALS_DIRECTORY/NAME, as LoadCredential= gives it): registered. A wrong one: the
    server refuses it, the bot logs what the server said and does not register."""
    ircd = world.server(password="s3cret")  # noqa: S106
    secret = world.directory / "password"
    secret.write_text("s3cret\n")
    secret.chmod(0o600)  # read before the bot drops root
    world.bot(static_backend(STATIC_USERS) + irc_table(ircd.port, password_file=str(secret)))
    mia = world.person("mia", password="s3cret")  # noqa: S106
    mia.say(CHANNEL, "!finger moshez")
    assert mia.expect(mia.from_bot(BOT), 20).text == "Happy and well"
    world.bots.pop().stop()
    credentials = world.directory / "credentials"
    credentials.mkdir(mode=0o700)
    config = world.config(static_backend(STATIC_USERS)
                          + irc_table(ircd.port, password_credential="irc-password"))  # noqa: S106
    for password, expected in (("wrong", "the server says"), ("s3cret", f"joined {CHANNEL}")):
        (credentials / "irc-password").write_text(password)
        bot = Bot(world.net, config, world.directory / f"cred-{password}.log",
                  extra_env={"CREDENTIALS_DIRECTORY": str(credentials)})
        world.bots.append(bot)
        bot.wait_log(expected)
        if password == "wrong":  # noqa: S105
            assert "registered on" not in bot.text()
        bot.stop()


def test_sasl_plain_exchange(world: World, public_dir: Path) -> None:
    """SASL PLAIN as IRCv3 sasl-3.1 has it: CAP REQ sasl, AUTHENTICATE PLAIN, the credentials
    in base64, CAP END after 903. ngircd has no SASL (and Debian no IRC server with it that
    runs without services), so a scripted server on loopback plays the server's part."""
    import base64

    secret = public_dir / "sasl"
    secret.write_text("hunter2\n")
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    seen: list[str] = []

    def server() -> None:
        try:
            serve_one()
        except OSError as e:
            seen.append(f"server error: {e}")

    def serve_one() -> None:
        listener.settimeout(20)
        conn, _ = listener.accept()
        conn.settimeout(20)
        with conn:
            buffer = b""
            # As the bot sends them: a one-word last parameter needs no colon (RFC 2812).
            script = {"CAP REQ sasl": ":irc.test CAP * ACK :sasl",
                      "AUTHENTICATE PLAIN": "AUTHENTICATE +"}
            while not any(s.startswith("CAP END") for s in seen):
                data = conn.recv(4096)
                if not data:
                    return
                buffer += data
                while b"\r\n" in buffer:
                    raw, buffer = buffer.split(b"\r\n", 1)
                    line = raw.decode()
                    seen.append(line)
                    if line in script:
                        conn.sendall(script[line].encode() + b"\r\n")
                    elif line.startswith("AUTHENTICATE ") and line != "AUTHENTICATE PLAIN":
                        conn.sendall(b":irc.test 903 * :SASL authentication successful\r\n")
            conn.sendall(f":irc.test 001 {BOT} :Welcome\r\n".encode())
            time.sleep(1)

    thread = threading.Thread(target=server, daemon=True)
    thread.start()
    text = static_backend(STATIC_USERS) + irc_table(port, channels=[], sasl_username="finger",
                                                    password_file=str(secret))
    bot = Bot(_Plain(), world.config(text), public_dir / "sasl.log")
    world.bots.append(bot)
    try:
        bot.wait_log("registered on")
    finally:
        thread.join(25)
        listener.close()
    assert seen[0] == "CAP REQ sasl"
    blob = next(s for s in seen if s.startswith("AUTHENTICATE ") and s != "AUTHENTICATE PLAIN")
    assert base64.b64decode(blob.split()[1]) == b"finger\0finger\0hunter2"
    assert seen.index("CAP END") > seen.index(blob)
    assert "logged in as finger (SASL)" in bot.text()


class _Plain(Net):
    """Loopback of this process, for the scripted server."""

    def __init__(self) -> None:
        self.holder = None



def test_irc_askers_are_remote_for_the_backends(world: World) -> None:
    """Nobody on IRC is on this host as far as backends know: the `local` backend shows an IRC
    asker its `fields` (here the login), never the `local_fields` (the name too)."""
    ircd = world.server()
    world.bot('[[backend]]\ntype = "local"\nuid_min = 65534\nuid_max = 65534\n'
              'show_private_homes = true\nform = "long"\nfields = ["login"]\n'
              'local_fields = ["login", "name"]\n' + irc_table(ircd.port))
    lee = world.person("lee")
    lee.say(CHANNEL, "!finger nobody")
    said = answers(lee)
    assert said and said[0].startswith("Login: nobody"), said
    assert not any("Name:" in line for line in said), said
