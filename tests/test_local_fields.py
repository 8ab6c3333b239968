"""The ``local`` backend's fields (RFC 1288 §3.2.3): what is shown to loopback and remote
askers, the admin's ``fields``/``local_fields``/``local_networks``, and a user's own
``~/.fingerrc``, end to end.

In a private mount and network namespace: accounts made with ``useradd`` (in a copy of /etc
mounted over /etc), their homes with dot files, a utmp written by glibc's pututline(), a lastlog,
a mail spool and terminals; 10.79.0.1 on the loopback device is a second, non-loopback address.
The per-connection handler runs as nobody under ``systemd-socket-activate --inetd`` on
0.0.0.0:79, and the real ``finger`` client asks it as ``alice@127.0.0.1`` (a loopback asker)
and ``alice@10.79.0.1`` (a remote one: the connection comes from 10.79.0.1), once per
configuration; then ``fingerd serve`` is asked the same way with the defaults.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from backend_fixtures import PYTHON, child_env, config_text, needs_root, public_dir
from conftest import require
from login_records import utmp_entry, write_lastlog, write_utmp

from fingerd.bsdfinger import FIELDS

REMOTE_ADDRESS = "10.79.0.1"
ACCOUNTS = {  # name: (uid, GECOS)
    "alice": (2001, "Alice Liddell,Room 5,5551234,5559876"),
    "bob": (2002, "Bob Builder"),
}
USERS = " ".join(ACCOUNTS)

# Where each field shows: (user, text in the long form, the fields it needs besides its own).
# alice is logged in (pts/1 from remote.example, pts/2), has new mail and every dot file; bob
# is not logged in (last login from bob.example), has no mail and no plan.
MARKERS: dict[str, list[tuple[str, str, tuple[str, ...]]]] = {
    "login": [("alice", "Login: alice", ())],
    "name": [("alice", "Alice Liddell", ())],
    "office": [("alice", "Room 5", ())],
    "phone": [("alice", "555-1234", ()), ("alice", "Home Phone: 555-9876", ())],
    "directory": [("alice", "Directory: /home/alice", ())],
    "shell": [("alice", "Shell: /bin/bash", ())],
    "on-since": [("alice", "On since ", ())],
    "from-host": [("alice", "remote.example", ("on-since",)),
                  ("bob", "from bob.example", ("last-login",))],
    "last-login": [("bob", "Last login ", ())],
    "mail": [("alice", "New mail received", ()), ("bob", "No mail.", ())],
    "pgpkey": [("alice", "PGP key:", ())],
    "project": [("alice", "Project:", ())],
    "plan": [("alice", "Plan:\nalice's plan", ()), ("bob", "No Plan.", ())],
}
REMOTE_DEFAULT = set(FIELDS) - {"from-host", "directory", "shell", "mail"}


def local_backend(**options: object) -> dict[str, object]:
    return {"type": "local", "uid_min": 2000, "uid_max": 2999, **options}


def cases() -> dict[str, tuple[dict[str, object], str]]:
    """name: (the local backend's table, alice's ~/.fingerrc or "" for none)."""
    every = list(FIELDS)
    found: dict[str, tuple[dict[str, object], str]] = {"defaults": (local_backend(), "")}
    for field in FIELDS:
        without = [f for f in FIELDS if f != field]
        found[f"{field}-off-local"] = (local_backend(local_fields=without, fields=every), "")
        found[f"{field}-off-remote"] = (local_backend(local_fields=every, fields=without), "")
    found["networks"] = (local_backend(fields=["login"], local_networks=["10.79.0.0/24"]), "")
    found["rc-hide"] = (local_backend(fields=every),
                        "# mine\nhide = plan\nhide-remote = on-since, pgpkey\n")
    found["rc-widen"] = (local_backend(),
                         "show = from-host, directory\nhide-remote = mail, no-such-field\n")
    found["rc-foreign"] = (local_backend(fields=every), "hide = plan\n")  # owned by root
    return found


CASES = cases()
SHORT_MARKERS = {"login": "alice ", "name": "Alice Liddell", "office": "Room 5",
                 "phone": "555-1234", "on-since": "pts/1", "from-host": "(remote.example)"}


def queries(case: str) -> str:
    """What the script asks in ``case``, as "USERS:SHORT": the users whose long form is
    compared (those with a marker of the field), and whether the short form and the listing
    are asked too (fields that show in them). Fewer queries: each starts a handler."""
    field = case.rpartition("-off-")[0]
    if not field:
        return "alice,bob:yes"
    users = sorted({user for user, _, _ in MARKERS[field]})
    return f"{','.join(users)}:{'yes' if field in SHORT_MARKERS else 'no'}"

SCRIPT = r"""
set -u
S=$1
O=$S/out
cp -a /etc "$S/etc"
mount --bind "$S/etc" /etc
for pair in home:/home run:/run log:/var/log mail:/var/mail pts:/dev/pts; do
    mount --bind "$S/${pair%%:*}" "${pair#*:}"
done
# -l: no lastlog/faillog records (the test wrote lastlog); -M: the homes are staged.
useradd -l -M -d /home/alice -u 2001 -c "Alice Liddell,Room 5,5551234,5559876" \
    -s /bin/bash alice
useradd -l -M -d /home/bob -u 2002 -c "Bob Builder" -s /bin/bash bob
chown -R alice:alice /home/alice
chown -R bob:bob /home/bob
ip link set lo up
ip addr add 10.79.0.1/32 dev lo
cd /
for u in $USERS; do finger -m -l "$u" > "$O/finger-l-$u"; done
stop() {  # SIGTERM, and SIGKILL if it has not gone within 15 s
    kill -TERM "$1"
    for i in $(seq 150); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$1" 2>/dev/null; wait "$1"
}
ask() {  # ask CASE USERS:SHORT, from a loopback and a remote address
    users=$(echo "${2%%:*}" | tr , ' ')
    for who in local:127.0.0.1 remote:10.79.0.1; do
        for u in $users; do
            timeout 20 finger -l "$u@${who#*:}" > "$O/$1.${who%%:*}-l-$u" 2>&1
        done
        [ "${2#*:}" = yes ] || continue
        timeout 20 finger "alice@${who#*:}" > "$O/$1.${who%%:*}-s-alice" 2>&1
        timeout 20 finger "@${who#*:}" > "$O/$1.${who%%:*}-list" 2>&1
    done
}
AS_NOBODY="setpriv --reuid=65534 --regid=65534 --clear-groups --"
mkdir -m 0777 /run/cache  # the config cache, as CacheDirectory= gives the handler
CACHE_DIRECTORY=/run/cache systemd-socket-activate --inetd -a -l 0.0.0.0:79 -E PYTHONPATH \
    -E TZ -E LC_ALL -E CACHE_DIRECTORY \
    $AS_NOBODY $PYTHON -m fingerd --config /run/fingerd.toml 2> "$O/inetd.log" &
pid=$!
for i in $(seq 200); do grep -q "Listening on" "$O/inetd.log" && break; sleep 0.05; done
for spec in $CASES; do
    case=${spec%%=*}
    cp "$S/cases/$case.toml" /run/fingerd.toml
    rm -f /home/alice/.fingerrc
    if [ -f "$S/cases/$case.fingerrc" ]; then
        cp "$S/cases/$case.fingerrc" /home/alice/.fingerrc
        chmod 644 /home/alice/.fingerrc
        case $case in *foreign*) ;; *) chown alice:alice /home/alice/.fingerrc ;; esac
    fi
    echo "case $case" >> "$O/inetd.log"
    ask "$case" "${spec#*=}"
done
stop $pid
rm -f /home/alice/.fingerrc

# fingerd serve, as nobody, with the defaults.
cp "$S/cases/defaults.toml" /run/fingerd.toml
$PYTHON -m fingerd serve --listen 0.0.0.0:79 --config /run/fingerd.toml --user nobody \
    2> "$O/serve.log" &
pid=$!
for i in $(seq 200); do grep -q "serving on" "$O/serve.log" && break; sleep 0.05; done
ask serve alice,bob:yes
stop $pid
exit 0
"""


@pytest.fixture(scope="module")
def host() -> Iterator[Path]:
    """Stage the accounts, run every case in the namespace; yield the outputs' directory."""
    needs_root("real accounts in a private mount and network namespace")
    for tool in ("finger", "systemd-socket-activate", "timeout", "useradd", "setpriv"):
        require(shutil.which(tool) is not None, f"needs {tool}")
    with public_dir() as stage:
        now = int(time.time())
        for sub in ("home", "run", "log", "mail", "pts", "out", "cases"):
            (stage / sub).mkdir(mode=0o755)
        for name in ACCOUNTS:
            (stage / "home" / name).mkdir(mode=0o755)
        alice = stage / "home" / "alice"
        (alice / ".plan").write_text("alice's plan\n")
        (alice / ".project").write_text("fingerd\n")
        (alice / ".pgpkey").write_text("-----BEGIN PGP PUBLIC KEY BLOCK-----\n")
        for path in alice.iterdir():
            path.chmod(0o644)
        # Idle for days: finger shows no minutes then, so the answers, asked a while after
        # the local finger ran, still show the same idle times.
        for tty, idle, mode in (("1", 2 * 86400 + 5400, 0o620), ("2", 3 * 86400 + 600, 0o600)):
            (stage / "pts" / tty).touch()
            (stage / "pts" / tty).chmod(mode)
            os.utime(stage / "pts" / tty, (now - idle, now - idle))
        write_utmp(stage / "run" / "utmp", [
            utmp_entry("alice", "pts/1", now - 3600, "remote.example"),
            utmp_entry("alice", "pts/2", now - 7200)])
        (stage / "run" / "utmp").chmod(0o644)
        write_lastlog(stage / "log" / "lastlog", {
            2001: (now - 86400 * 3, "pts/9", "alice-last.example"),
            2002: (now - 86400 * 2, "pts/3", "bob.example")})
        (stage / "log" / "lastlog").chmod(0o644)
        (stage / "mail" / "alice").write_text("From x\n")
        os.utime(stage / "mail" / "alice", (now - 86400 * 5, now - 86400))
        for name, (table, rc) in CASES.items():
            (stage / "cases" / f"{name}.toml").write_text(
                config_text([table], {"list_users": True}))
            if rc:
                (stage / "cases" / f"{name}.fingerrc").write_text(rc)
        env = child_env({"TZ": "UTC", "LC_ALL": "C", "PYTHON": PYTHON, "USERS": USERS,
                         "CASES": " ".join(f"{c}={queries(c)}" for c in CASES)})
        proc = subprocess.run(["unshare", "--mount", "--net", "--pid", "--fork", "--kill-child",
                               "--propagation", "private", "--",
                               "/bin/sh", "-c", SCRIPT, "sh", str(stage)],
                              capture_output=True, text=True, env=env, timeout=600)
        assert proc.returncode == 0, proc.stderr
        yield stage / "out"


def answer(host: Path, name: str) -> str:
    """What the finger client printed (fingerd's answer, with LF line ends)."""
    text = (host / name).read_bytes().decode("utf-8").replace("\r\n", "\n")
    assert text.strip(), f"{name}: no answer"
    return text


def shown_markers(text: str, user: str, fields: set[str]) -> dict[str, bool]:
    """For every marker of ``user``: is it in ``text``? And what is expected: its field and
    the fields it needs are all in ``fields``."""
    result = {}
    for field, markers in MARKERS.items():
        for who, marker, needs in markers:
            if who == user:
                expected = field in fields and all(n in fields for n in needs)
                result[f"{field}: {marker!r}"] = (marker in text) == expected
    return result


def check_long(host: Path, case: str, asker: str, fields: set[str],
               only: str = "") -> None:
    """The long answers of ``case`` to ``asker`` (about ``only`` that user, if given) show
    exactly the markers of ``fields``."""
    users = [user for user in ACCOUNTS if (host / f"{case}.{asker}-l-{user}").exists()
             and only in ("", user)]
    assert users, f"{case}: no answers to {asker} askers"
    for user in users:
        text = answer(host, f"{case}.{asker}-l-{user}")
        wrong = [m for m, ok in shown_markers(text, user, fields).items() if not ok]
        assert not wrong, (case, asker, user, wrong, text)


@pytest.mark.netns
@pytest.mark.parametrize("field", FIELDS)
def test_each_field_off_for_loopback_askers_only(host: Path, field: str) -> None:
    """``local_fields`` without one field: a loopback asker does not see it (nor what only
    shows with it), a remote asker, with every field in ``fields``, does."""
    every = set(FIELDS)
    check_long(host, f"{field}-off-local", "local", every - {field})
    check_long(host, f"{field}-off-local", "remote", every)


@pytest.mark.netns
@pytest.mark.parametrize("field", FIELDS)
def test_each_field_off_for_remote_askers_only(host: Path, field: str) -> None:
    """``fields`` without one field: a remote asker does not see it, a loopback asker with
    every field in ``local_fields`` does."""
    every = set(FIELDS)
    check_long(host, f"{field}-off-remote", "remote", every - {field})
    check_long(host, f"{field}-off-remote", "local", every)



@pytest.mark.netns
@pytest.mark.parametrize("field", list(SHORT_MARKERS))
def test_short_form_and_listing_follow_the_fields(host: Path, field: str) -> None:
    """``finger alice@host`` and the listing ``finger @host`` show or leave out the same
    fields as the long form, per asker; a listing without on-since still lists alice, once."""
    marker = SHORT_MARKERS[field]
    for case, asker_off in ((f"{field}-off-local", "local"), (f"{field}-off-remote", "remote")):
        assert queries(case).endswith(":yes")
        asker_on = "remote" if asker_off == "local" else "local"
        for kind in ("s-alice", "list"):
            on = answer(host, f"{case}.{asker_on}-{kind}")
            off = answer(host, f"{case}.{asker_off}-{kind}")
            assert marker in on, (case, kind, on)
            assert marker not in off, (case, kind, off)
            if field == "on-since":
                assert len(off.splitlines()) == 2, off  # the header and one row


@pytest.mark.netns
def test_defaults_everything_locally_privacy_first_remotely(host: Path) -> None:
    """Without fields options: a loopback asker gets exactly what ``finger -l`` prints on the
    host; a remote one gets no from-host, directory, shell or mail, and the rest."""
    for user in ACCOUNTS:
        expected = (host / f"finger-l-{user}").read_text()
        assert expected.startswith(f"Login: {user}")
        assert lines(answer(host, f"defaults.local-l-{user}")) == lines(expected)
    check_long(host, "defaults", "remote", REMOTE_DEFAULT)


@pytest.mark.netns
def test_from_host_never_shown_to_remote_askers_by_default(host: Path) -> None:
    """By default no host a user logs in from reaches a remote asker: not in the long form,
    the short form or the listing, through the handler or fingerd serve; loopback askers see
    it."""
    hosts = ("remote.example", "bob.example", "alice-last.example")
    for case in ("defaults", "serve"):
        for name in ("remote-l-alice", "remote-l-bob", "remote-s-alice", "remote-list"):
            text = answer(host, f"{case}.{name}")
            assert text.strip() and not any(h in text for h in hosts), (case, name, text)
        assert "remote.example" in answer(host, f"{case}.local-l-alice")


@pytest.mark.netns
def test_full_set_matches_finger_for_remote_askers_too(host: Path) -> None:
    """With every field in ``fields``, a remote asker gets byte for byte what ``finger -l``
    prints on the host (bsd-finger's format is kept for the full set)."""
    for user in ACCOUNTS:
        expected = lines((host / f"finger-l-{user}").read_text())
        assert lines(answer(host, f"plan-off-local.remote-l-{user}")) == expected


@pytest.mark.netns
def test_local_networks_count_as_local(host: Path) -> None:
    """With ``local_networks = ["10.79.0.0/24"]`` an asker from 10.79.0.1 gets
    ``local_fields`` (everything), though ``fields`` is only the login."""
    expected = lines((host / "finger-l-alice").read_text())
    assert lines(answer(host, "networks.remote-l-alice")) == expected


@pytest.mark.netns
def test_fingerrc_hides_fields(host: Path) -> None:
    """alice's ``hide = plan`` applies to everybody, ``hide-remote = on-since, pgpkey`` to
    remote askers only; bob, with no ~/.fingerrc, is shown as before."""
    every = set(FIELDS)
    local = answer(host, "rc-hide.local-l-alice")
    assert all(ok for ok in shown_markers(local, "alice", every - {"plan"}).values()), local
    remote = answer(host, "rc-hide.remote-l-alice")
    assert all(ok for ok in shown_markers(
        remote, "alice", every - {"plan", "on-since", "pgpkey"}).values()), remote
    check_long(host, "rc-hide", "remote", every, only="bob")
    assert "alice" in answer(host, "rc-hide.remote-list")


@pytest.mark.netns
def test_fingerrc_cannot_widen_what_the_admin_allows(host: Path) -> None:
    """A ~/.fingerrc asking to show more (``show = from-host, directory``, not a key) shows
    nothing more to remote askers, and is read the strictest way: what it names is hidden
    from loopback askers too. An unknown field name is ignored; both are logged."""
    remote = answer(host, "rc-widen.remote-l-alice")
    assert all(ok for ok in shown_markers(remote, "alice", REMOTE_DEFAULT).values()), remote
    local = answer(host, "rc-widen.local-l-alice")
    assert all(ok for ok in shown_markers(
        local, "alice", set(FIELDS) - {"from-host", "directory"}).values()), local
    log = (host / "inetd.log").read_text()
    assert ("/home/alice/.fingerrc: line 1: expected 'hide = FIELD, ...' or "
            "'hide-remote = FIELD, ...'; hiding directory, from-host") in log
    assert "/home/alice/.fingerrc: line 2: unknown field 'no-such-field'" in log


@pytest.mark.netns
def test_fingerrc_of_someone_else_shows_the_login_only(host: Path) -> None:
    """A ~/.fingerrc that alice does not own (root's, here) cannot be trusted to say what
    she wants: only her login is shown, to everybody, and the log says why."""
    for asker in ("local", "remote"):
        assert lines(answer(host, f"rc-foreign.{asker}-l-alice")) == ["Login: alice"]
    assert "/home/alice/.fingerrc: owned by UID 0, not by its user" in (
        host / "inetd.log").read_text()


@pytest.mark.netns
def test_logs_are_clean(host: Path) -> None:
    """No traceback or error in the handler's and the server's logs; the remote asker is
    logged by its address."""
    for name in ("inetd.log", "serve.log"):
        log = (host / name).read_text()
        assert "Traceback" not in log and "error" not in log.lower(), log
    assert f"remote={REMOTE_ADDRESS} " in (host / "serve.log").read_text()


def lines(text: str) -> list[str]:
    return [line.rstrip(" \t") for line in text.replace("\r\n", "\n").rstrip("\n").split("\n")]
