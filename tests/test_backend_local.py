"""The ``local`` backend: the host's own accounts, in the format of Debian's ``finger``.

Without root: the contract and the parts that need no accounts of their own (UID range,
login.defs, utmp/wtmp records written by glibc itself, lastlog, mail spool), with the
existing ``nobody`` account.

With root (CI): real accounts in a private mount and network namespace. A passwd file with
test accounts, their home directories with real dot files, a utmp written by glibc's
pututline(), a lastlog, mail spools and terminal devices are bind-mounted over the real
paths, so that Debian's ``finger`` program and fingerd see the same host. Then the output of
``finger -l user`` and ``finger -s user`` run locally is compared, field by field and byte by
byte, with what fingerd answers: through ``fingerd query``, through ``fingerd serve`` on
127.0.0.1:79 asked by the real ``finger user@127.0.0.1`` client, and through the
per-connection handler under ``systemd-socket-activate --inetd``.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from backend_fixtures import (
    PYTHON,
    REPO,
    child_env,
    make_backend,
    needs_root,
    public_dir,
    write_config,
)
from conftest import require
from login_records import (
    DEAD_PROCESS,
    LOGIN_PROCESS,
    utmp_entry,
    write_lastlog,
    write_utmp,
    write_wtmp,
)

from fingerd.backends import service_from
from fingerd.backends.local import login_defs_range, valid_name
from fingerd.config import Config
from fingerd.protocol import LIST_DENIED, Query
from fingerd.testing import BackendContract, World

NOBODY = pwd.getpwnam("nobody")
LOCAL = "127.0.0.1"  # a loopback asker: shown every field by default

# -- the contract, with the one account every Debian host has -------------------------------------

def nobody_table(directory: Path, **extra: object) -> dict[str, object]:
    """The local backend limited to nobody's UID, reading utmp etc. from ``directory``."""
    for name in ("utmp", "wtmp", "lastlog"):
        (directory / name).touch()
        (directory / name).chmod(0o644)
    (directory / "mail").mkdir(exist_ok=True)
    return {"type": "local", "uid_min": NOBODY.pw_uid, "uid_max": NOBODY.pw_uid,
            "utmp": str(directory / "utmp"), "wtmp": str(directory / "wtmp"),
            "lastlog": str(directory / "lastlog"), "mail_dir": str(directory / "mail"),
            **extra}


class TestLocalContract(BackendContract):
    @pytest.fixture
    def world(self) -> Iterator[World]:
        with public_dir() as directory:
            yield World(table=nobody_table(directory), known="nobody", expect="nobody",
                        expect_verbose="Login: nobody", env={"TZ": "UTC"},
                        bad_options=[("form", "medium"), ("uid_min", -1), ("uid_max", "1"),
                                     ("uid_max", NOBODY.pw_uid - 1), ("max_file_bytes", -5),
                                     ("utmp", 7), ("fields", ["plan", "fromhost"]),
                                     ("local_fields", "plan"), ("local_fields", [1]),
                                     ("local_networks", ["10.0.0.1/8"])])


# -- who is shown ---------------------------------------------------------------------------------

def test_system_accounts_are_unknown_by_default(tmp_path: Path) -> None:
    """The default UID range holds regular users only: root, daemon and nobody are unknown."""
    table = nobody_table(tmp_path)
    del table["uid_min"], table["uid_max"]
    backend = make_backend(table)
    for name in ("root", "daemon", "nobody"):
        assert backend.lookup(Query(name)) is None
        assert backend.lookup(Query(name, verbose=True)) is None


def test_default_range_comes_from_login_defs() -> None:
    """Without uid_min/uid_max the range is UID_MIN..UID_MAX of /etc/login.defs."""
    values = {"UID_MIN": 1000, "UID_MAX": 60000}
    try:
        for line in Path("/etc/login.defs").read_text().splitlines():
            words = line.split()
            if len(words) >= 2 and words[0] in values:
                values[words[0]] = int(words[1], 0)
    except OSError:
        pass
    backend = make_backend({"type": "local"})
    assert (backend.uid_min, backend.uid_max) == (values["UID_MIN"], values["UID_MAX"])


def test_login_defs_parsing(tmp_path: Path) -> None:
    """login.defs: whitespace-separated, comments ignored, hex allowed, missing values and a
    missing file give the defaults (1000..60000)."""
    defs = tmp_path / "login.defs"
    defs.write_text("# UID_MIN 1\nMAIL_DIR /var/mail\nUID_MIN\t\t 500\nUID_MAX 0x7530\n")
    assert login_defs_range(str(defs)) == (500, 30000)
    defs.write_text("UID_MAX 2000\n")
    assert login_defs_range(str(defs)) == (1000, 2000)
    assert login_defs_range(str(tmp_path / "missing")) == (1000, 60000)


@pytest.mark.parametrize("name,ok", [
    ("alice", True), ("a.b-c_d", True), ("host$", True), ("X" * 32, True),
    ("X" * 33, False), ("-rf", False), (".hidden", False), ("a/b", False), ("a b", False),
    ("zo\u00eb", False), ("", False), ("$", False), ("a$b", False), ("a:b", False)])
def test_strict_name_pattern(name: str, ok: bool) -> None:
    """Only names of the form useradd accepts reach the passwd database."""
    assert valid_name(name) is ok


def test_configured_range_shows_nobody(tmp_path: Path) -> None:
    """An account inside a configured range is shown: login, name, directory, shell."""
    backend = make_backend(nobody_table(tmp_path))
    answer = backend.lookup(Query("nobody", verbose=True, remote=LOCAL))
    assert answer is not None
    assert answer.startswith(f"Login: nobody         \t\t\tName: {NOBODY.pw_gecos}\n"
                             f"Directory: {NOBODY.pw_dir:<25}\tShell: {NOBODY.pw_shell}\n")
    assert "Never logged in.\nNo mail.\nNo Plan.\n" in answer


# -- the fields shown ----------------------------------------------------------------------------

@pytest.fixture
def public() -> Iterator[Path]:
    """A directory the service's user can read: as root, `fingerd check` reads as nobody."""
    with public_dir() as directory:
        yield directory


def test_unknown_field_is_an_error_with_file_line_and_suggestion(public: Path) -> None:
    """A misspelt field in ``fields`` or ``local_fields`` is a config error naming the file,
    the line, the key, the field and the field it most likely meant (``fingerd check``)."""
    config = write_config(public / "fingerd.toml",
                          [{"type": "local", "local_fields": ["login", "fromhost"]}])
    check = run_cli(config, "check")
    assert check.returncode == 1
    assert check.stderr.strip() == (
        f"fingerd: {config}:5: backend[1].local_fields: unknown field 'fromhost'; did you mean "
        "'from-host'? (fields: login, name, office, phone, directory, shell, on-since, "
        "from-host, last-login, mail, pgpkey, project, plan)")
    config = write_config(public / "fingerd.toml",
                          [{"type": "local", "fields": ["zzz"]}])
    check = run_cli(config, "check")
    assert "backend[1].fields: unknown field 'zzz' (fields: login," in check.stderr


def test_bad_local_network_is_an_error(public: Path) -> None:
    """A local network with host bits set is an error that says which network was meant."""
    config = write_config(public / "fingerd.toml",
                          [{"type": "local", "local_networks": ["192.168.1.7/24"]}])
    check = run_cli(config, "check")
    assert check.returncode == 1
    assert check.stderr.strip().endswith(
        ":5: backend[1].local_networks: '192.168.1.7/24' has host bits set; did you mean "
        "'192.168.1.0/24'?")


def run_cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PYTHON, "-m", "fingerd", *args, "--config", str(config)],
                          capture_output=True, text=True, env=child_env(), timeout=60)


def test_remote_askers_get_the_privacy_first_defaults(tmp_path: Path) -> None:
    """Without fields options, an asker the front end cannot vouch for ("") or a remote one
    gets no directory, shell, mail or from-host; a loopback one gets all of it."""
    now = int(time.time())
    write_utmp(tmp_path / "utmp", [utmp_entry("nobody", "pts/41", now - 7200, "far.example")])
    backend = make_backend(nobody_table(tmp_path))
    for remote in ("", "192.0.2.1", "::ffff:10.0.0.1"):
        answer = backend.lookup(Query("nobody", verbose=True, remote=remote))
        assert answer is not None and answer.startswith("Login: nobody"), remote
        for hidden in ("Directory:", "Shell:", "far.example", "mail"):
            assert hidden not in answer, (remote, answer)
        assert "On since" in answer
    for remote in ("127.0.0.1", "::1", "::ffff:127.0.0.1"):
        answer = backend.lookup(Query("nobody", verbose=True, remote=remote))
        assert answer is not None
        for shown in ("Directory:", "Shell:", "far.example", "No mail."):
            assert shown in answer, (remote, answer)


def test_hidden_fields_are_not_even_read(tmp_path: Path) -> None:
    """What is not shown is not gathered: without last-login no lastlog is read (a lastlog
    path that is a FIFO would hang a reader), without on-since no terminal is looked at."""
    os.mkfifo(tmp_path / "fifo")
    table = nobody_table(tmp_path, lastlog=str(tmp_path / "fifo"), wtmp=str(tmp_path / "fifo"),
                         fields=["login", "name"])
    answer = make_backend(table).lookup(Query("nobody", verbose=True))
    assert answer == f"Login: nobody         \t\t\tName: {NOBODY.pw_gecos}\n"


# -- utmp, wtmp, lastlog, mail: records written by glibc ------------------------------------------

def test_utmp_sessions_are_shown(tmp_path: Path) -> None:
    """USER_PROCESS records written by glibc's pututline() are the user's sessions (with
    remote host); dead and login records and other users are not."""
    now = int(time.time())
    write_utmp(tmp_path / "utmp", [
        utmp_entry("nobody", "pts/41", now - 7200, "far.example"),
        utmp_entry("nobody", "pts/42", now - 3600, kind=DEAD_PROCESS),
        utmp_entry("LOGIN", "tty3", now, kind=LOGIN_PROCESS),
        utmp_entry("root", "pts/43", now - 60)])
    backend = make_backend(nobody_table(tmp_path))
    answer = backend.lookup(Query("nobody", verbose=True, remote=LOCAL))
    assert answer is not None
    since = time.strftime("%a %b %e %R (%Z)", time.localtime(now - 7200))
    assert f"\nOn since {since} on pts/41 from far.example\n" in answer
    assert "pts/42" not in answer and "pts/43" not in answer and "tty3" not in answer
    short = backend.lookup(Query("nobody", remote=LOCAL))
    assert short is not None and "pts/41" in short and "(far.example)" in short


def test_listing_only_logged_in_users_in_range(tmp_path: Path) -> None:
    """list_users(): logged-in users inside the range; "No one logged on." otherwise."""
    backend = make_backend(nobody_table(tmp_path))
    assert backend.list_users(Query("")) == "No one logged on."
    now = int(time.time())
    write_utmp(tmp_path / "utmp", [utmp_entry("root", "pts/1", now),
                                   utmp_entry("nobody", "pts/2", now - 100)])
    listing = backend.list_users(Query(""))
    assert listing is not None
    assert listing.startswith("Login     Name ")
    assert "\nnobody " in listing and "root" not in listing
    long_listing = backend.list_users(Query("", verbose=True))
    assert long_listing is not None and long_listing.startswith("Login: nobody ")


def test_list_users_only_when_enabled(tmp_path: Path) -> None:
    """An empty query gets the listing only with ``[server] list_users = true``; otherwise
    the RFC 1288 refusal, without asking the backend."""
    now = int(time.time())
    write_utmp(tmp_path / "utmp", [utmp_entry("nobody", "pts/2", now - 100)])
    table = nobody_table(tmp_path)
    refused = service_from(Config("t", {"backend": [table]})).respond(b"\r\n")
    assert refused.data == f"{LIST_DENIED}\r\n".encode()
    listed = service_from(Config("t", {"server": {"list_users": True},
                                        "backend": [table]})).respond(b"\r\n")
    assert b"\r\nnobody " in listed.data


def test_last_login_from_lastlog(tmp_path: Path) -> None:
    """Not logged in: the last login from lastlog (by UID), with the year when it is more
    than half a year ago."""
    recent, old = int(time.time()) - 86400 * 3, int(time.time()) - 86400 * 300
    write_lastlog(tmp_path / "lastlog", {NOBODY.pw_uid: (recent, "pts/7", "old.example")})
    backend = make_backend(nobody_table(tmp_path))
    answer = backend.lookup(Query("nobody", verbose=True, remote=LOCAL))
    when = time.strftime("%a %b %e %R (%Z)", time.localtime(recent))
    assert answer is not None and f"\nLast login {when} on pts/7 from old.example\n" in answer
    write_lastlog(tmp_path / "lastlog", {NOBODY.pw_uid: (old, "tty1", "")})
    answer = backend.lookup(Query("nobody", verbose=True, remote=LOCAL))
    when = time.strftime("%a %b %e %R %Y (%Z)", time.localtime(old))
    assert answer is not None and f"\nLast login {when} on tty1\n" in answer


def test_last_login_falls_back_to_wtmp(tmp_path: Path) -> None:
    """Without a lastlog record, the latest login of the user in wtmp (updwtmp()) is shown."""
    now = int(time.time())
    write_wtmp(tmp_path / "wtmp", [utmp_entry("nobody", "pts/3", now - 5000, "a.example"),
                                   utmp_entry("nobody", "pts/4", now - 4000, "b.example"),
                                   utmp_entry("root", "pts/5", now - 3000),
                                   utmp_entry("", "pts/4", now - 3500, kind=DEAD_PROCESS)])
    backend = make_backend(nobody_table(tmp_path))
    answer = backend.lookup(Query("nobody", verbose=True, remote=LOCAL))
    assert answer is not None and " on pts/4 from b.example\n" in answer
    assert "Never logged in." not in answer


def test_mail_status(tmp_path: Path) -> None:
    """Mail status from the spool's times, as finger does: new mail (modified after it was
    read), last read, and none for a missing or empty spool."""
    backend = make_backend(nobody_table(tmp_path))
    spool = tmp_path / "mail" / "nobody"
    spool.write_text("From x\n")
    os.utime(spool, (1_700_000_000, 1_700_001_000))  # atime (read) before mtime (received)
    answer = backend.lookup(Query("nobody", verbose=True, remote=LOCAL))
    fmt = "%a %b %e %R %Y (%Z)"
    assert answer is not None
    assert (f"New mail received {time.strftime(fmt, time.localtime(1_700_001_000))}\n"
            f"     Unread since {time.strftime(fmt, time.localtime(1_700_000_000))}\n") in answer
    os.utime(spool, (1_700_002_000, 1_700_001_000))
    answer = backend.lookup(Query("nobody", verbose=True, remote=LOCAL))
    assert answer is not None
    assert f"Mail last read {time.strftime(fmt, time.localtime(1_700_002_000))}\n" in answer
    spool.write_text("")
    answer = backend.lookup(Query("nobody", verbose=True, remote=LOCAL))
    assert answer is not None and "\nNo mail.\n" in answer


def test_long_form_by_default_with_form_long(tmp_path: Path) -> None:
    """``form = "long"`` answers a query without /W in the long form (Debian in.fingerd)."""
    short = make_backend(nobody_table(tmp_path)).lookup(Query("nobody"))
    long = make_backend(nobody_table(tmp_path, form="long")).lookup(Query("nobody"))
    assert short is not None and short.startswith("Login     Name")
    assert long is not None and long.startswith("Login: nobody")


def handler_imports(config: Path, query: str, cache: Path,
                    remote: str = "") -> tuple[set[str], list[str]]:
    """The modules one handler run imports, as ``fingerd@.service`` runs it: Debian's
    /usr/bin/python3 with -I (no venv, whose .pth imports ``re`` and would hide it), this
    checkout's package, the config from the marshal cache. (every module, the ones imported
    after fingerd.handler)."""
    code = (f"import sys; sys.path.insert(0, {str(REPO)!r}); "
            f"sys.argv = ['fingerd', '--config', {str(config)!r}]; "
            "from fingerd.cli import run; run()")
    env = {"CACHE_DIRECTORY": str(cache), "HOME": "/", "PATH": "/usr/bin:/bin"}
    if remote:
        env["REMOTE_ADDR"] = remote  # as systemd gives it to fingerd@.service
    for _ in range(2):  # the first run parses the TOML (tomllib imports re) and fills the cache
        proc = subprocess.run(["/usr/bin/python3", "-I", "-X", "importtime", "-c", code],
                              input=f"{query}\r\n".encode(), capture_output=True, env=env,
                              timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(b"Login"), proc.stdout  # it answered from the local backend
    names = [line.split("|")[-1].strip() for line in proc.stderr.decode().splitlines()
             if line.startswith("import time:") and "self [us]" not in line]
    assert "fingerd.handler" in names, names
    return set(names), names[names.index("fingerd.handler") + 1:]


@pytest.mark.parametrize("query,options,remote", [
    ("/W root", {}, ""), ("root", {}, "127.0.0.1"), ("", {}, "::1"),
    ("/W root", {"local_networks": ["192.168.1.0/24", "2001:db8::/64"],
                 "fields": ["login", "plan"]}, "192.168.1.5"),
    ("/W root", {"local_networks": ["192.168.1.0/24"]}, "2001:db8::1")])
def test_import_cost_is_small(query: str, options: dict[str, object], remote: str) -> None:
    """A local lookup, a long one and the listing, with local networks or without, from a
    local or a remote asker, imports nothing but fingerd's own modules and the built-in pwd
    and _struct (plus the handler's _socket, for the peer address): every connection pays
    for every import. Never ``re`` (``ipaddress`` would import it); the local networks'
    module only when some are configured, and the ~/.fingerrc reader only for a user who has
    one."""
    with public_dir() as directory:
        write_utmp(directory / "utmp", [utmp_entry("root", "pts/1", int(time.time()) - 60)])
        (directory / "utmp").chmod(0o644)
        config = write_config(directory / "fingerd.toml",
                              # show_private_homes: a build user cannot enter /root
                              [{"type": "local", "uid_min": 0, "uid_max": 0,
                                "show_private_homes": True,
                                "utmp": str(directory / "utmp"), **options}],
                              {"list_users": True})
        (directory / "cache").mkdir()
        everything, after_handler = handler_imports(config, query, directory / "cache", remote)
    assert "fingerd.backends.local" in after_handler
    assert "re" not in everything
    assert "fingerd.fingerrc" not in after_handler  # root has no ~/.fingerrc
    assert ("fingerd.networks" in after_handler) == ("local_networks" in options)
    assert {m for m in after_handler if not m.startswith("fingerd.")} <= {
        "_struct", "pwd", "_socket"}, after_handler


# -- real accounts in a private namespace, compared with Debian's finger --------------------------

# name: (uid, GECOS, shell). zoe's name is UTF-8 (no byte in 0x80-0x9f, which finger shows as
# M-^X); sys is a system account (below UID_MIN).
ACCOUNTS = {
    "alice": (1001, "Alice Liddell,Room 5,5551234,5559876", "/bin/bash"),
    "bob": (1002, "&ert the Builder,,x4242", "/bin/zsh"),
    "carol": (1003, "", ""),
    "dave": (1004, "Dave,,,", "/bin/sh"),
    "erin": (1005, "Erin Private", "/bin/bash"),
    "frank": (1006, "Franklin Delano Roosevelt the Third,Oval Office Washington,2025550100",
              "/bin/bash"),
    "gina": (1007, "Gina from wtmp", "/bin/sh"),
    "zoe": (1008, "Zo\u00eb Bront\u00eb,B\u00fcro 3", "/bin/bash"),
    "hank": (1009, "Hank Twice", "/bin/bash"),
    "ivan": (1010, "Ivan Private", "/bin/bash"),  # home 0700: the service cannot look in
    "sys": (999, "A System Account", "/usr/sbin/nologin"),
}
COMPARED = ["alice", "bob", "carol", "dave", "frank", "zoe", "hank"]
TZ = "Europe/Berlin"  # a zone with a name that is not UTC, and summer time


def stage_host(stage: Path) -> None:
    """The host as the namespace will see it: files to bind-mount over the real paths."""
    now = int(time.time())
    for sub in ("home", "run", "log", "mail", "pts", "out"):
        (stage / sub).mkdir(mode=0o755)
    lines = [line for line in Path("/etc/passwd").read_text().splitlines()
             if line.split(":")[0] not in ACCOUNTS]
    for name, (uid, gecos, shell) in ACCOUNTS.items():
        lines.append(f"{name}:x:{uid}:{uid}:{gecos}:/home/{name}:{shell}")
        (stage / "home" / name).mkdir(mode=0o755)
    (stage / "passwd").write_text("\n".join(lines) + "\n")
    home = stage / "home"
    (home / "alice" / ".plan").write_text("Finish the finger server.\n\tIndented line\n")
    (home / "alice" / ".project").write_text("fingerd")  # no final newline
    (home / "bob" / ".plan").write_text("\x1b[31mred\x1b[0m and a bell\x07\r\n")
    (home / "bob" / ".pgpkey").write_text("-----BEGIN PGP PUBLIC KEY BLOCK-----\nxyz\n")
    (home / "carol" / ".plan").write_text("")  # empty: "Plan:" and an empty line
    (home / "dave" / ".plan").symlink_to("/etc/passwd")  # finger refuses symlinks
    os.mkfifo(home / "dave" / ".project")  # must not hang anybody
    (home / "erin" / ".nofinger").touch()
    (home / "erin" / ".plan").write_text("secret plans\n")
    (home / "zoe" / ".plan").write_text("D\u00e9j\u00e0 vu\n")
    (home / "ivan" / ".plan").write_text("ivan's plan\n")
    for path in home.rglob("*"):
        if path.is_file() and not path.is_symlink():
            path.chmod(0o644)
    (home / "ivan").chmod(0o700)

    # Terminals: idle times far from a display boundary (the two programs run seconds
    # apart); mesg y (0620) or n (0600).
    def tty(name: str, idle: int, mode: int) -> None:
        path = stage / "pts" / name
        path.touch()
        path.chmod(mode)
        os.utime(path, (now - idle, now - idle))

    tty("5", 3 * 3600 + 2 * 60 + 30, 0o620)
    tty("6", 2 * 86400 + 3600 + 1800, 0o600)
    tty("7", 0, 0o620)
    tty("9", 17 * 60 + 30 + 3600 * 5, 0o620)
    tty("10", 400 * 86400 + 2 * 3600 + 1800, 0o620)  # over a year: gmtime() wraps the days
    tty("11", 0, 0o620)
    os.utime(stage / "pts" / "11", (now + 3600, now + 3600))
    os.utime(stage / "pts" / "7", (now + 3600, now + 3600))  # atime ahead: no idle time
    write_utmp(stage / "run" / "utmp", [
        utmp_entry("alice", "pts/5", now - 5 * 3600),
        utmp_entry("alice", "pts/6", now - 600, "remote.example"),
        utmp_entry("", "pts/8", now - 100, kind=DEAD_PROCESS),
        utmp_entry("frank", "pts/7", now - 86400 * 200),
        utmp_entry("zoe", "pts/9", now - 7200, "::1"),
        utmp_entry("hank", "pts/10", now - 36000),
        utmp_entry("hank", "pts/11", now - 3600, "h.example"),
    ])
    (stage / "run" / "utmp").chmod(0o644)
    write_lastlog(stage / "log" / "lastlog", {
        1001: (now - 86400 * 2, "pts/1", "old.example"),  # before her sessions: not shown
        1002: (now - 86400 * 2 - 600, "pts/3", "bob.example"),
        1003: (now - 86400 * 300, "tty1", ""),
        1006: (now - 86400 * 100, "pts/2", "wh.example"),  # newer than pts/7: shown too
        1009: (now - 3599, "pts/11", "h.example"),  # newer, but it is his current pts/11
    })
    write_wtmp(stage / "log" / "wtmp", [utmp_entry("gina", "pts/4", now - 4000, "w.example")])
    for name in ("lastlog", "wtmp"):
        (stage / "log" / name).chmod(0o644)
    (stage / "mail" / "alice").write_text("From x\n")
    os.utime(stage / "mail" / "alice", (now - 86400 * 10, now - 86400))
    (stage / "mail" / "bob").write_text("From y\n")
    os.utime(stage / "mail" / "bob", (now - 86400, now - 86400 * 10))
    (stage / "mail" / "carol").touch()
    (stage / "run" / "fingerd.toml").write_text(
        '[server]\nlist_users = true\noutput_charset = "utf-8"\n\n[[backend]]\ntype = "local"\n')
    (stage / "run" / "fingerd-show.toml").write_text(
        '[[backend]]\ntype = "local"\nshow_private_homes = true\n')


SCRIPT = r"""
set -u
S=$1
mount --bind "$S/passwd" /etc/passwd
for pair in home:/home run:/run log:/var/log mail:/var/mail pts:/dev/pts; do
    mount --bind "$S/${pair%%:*}" "${pair#*:}"
done
ip link set lo up
cd /
O=$S/out
FINGERD="$PYTHON -m fingerd"
QUERY="$FINGERD query --from 127.0.0.1"  # as a loopback client would ask
run() { name=$1; shift; "$@" > "$O/$name" 2> "$O/$name.err"; }
stop() {  # SIGTERM, and SIGKILL if it has not gone within 15 s
    kill -TERM "$1"
    for i in $(seq 150); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$1" 2>/dev/null; wait "$1"
}
for u in $USERS; do
    run "finger-l-$u" timeout 20 finger -l "$u"
    run "finger-s-$u" timeout 20 finger -s "$u"
    run "query-l-$u" timeout 20 $QUERY --config /run/fingerd.toml /W "$u"
    run "query-s-$u" timeout 20 $QUERY --config /run/fingerd.toml "$u"
done
run finger-list finger
run finger-list-l finger -l
run query-list timeout 20 $QUERY --config /run/fingerd.toml
run query-list-l timeout 20 $QUERY --config /run/fingerd.toml /W

# As the unprivileged service user, who cannot enter ivan's home.
AS_NOBODY="setpriv --reuid=65534 --regid=65534 --clear-groups"
run hidden-ivan timeout 20 $AS_NOBODY $QUERY --config /run/fingerd.toml /W ivan
run shown-ivan timeout 20 $AS_NOBODY $QUERY --config /run/fingerd-show.toml /W ivan

# fingerd serve on the finger port, asked by the real client.
$FINGERD serve --listen 127.0.0.1:79 --config /run/fingerd.toml --user nobody 2> "$O/serve.log" &
pid=$!
for i in $(seq 200); do grep -q "serving on" "$O/serve.log" && break; sleep 0.05; done
for u in $USERS; do
    run "net-l-$u" timeout 20 finger -l "$u@127.0.0.1"
    run "net-s-$u" timeout 20 finger "$u@127.0.0.1"
done
run net-list timeout 20 finger @127.0.0.1
run net-list-l timeout 20 finger -l @127.0.0.1
stop $pid

# The per-connection handler, started per connection as inetd and systemd do.
systemd-socket-activate --inetd -a -l 127.0.0.1:79 -E TZ -E LC_ALL -E PYTHONPATH \
    $PYTHON -m fingerd --config /run/fingerd.toml 2> "$O/inetd.log" &
pid=$!
for i in $(seq 200); do grep -q "Listening on" "$O/inetd.log" && break; sleep 0.05; done
for u in $USERS; do
    run "inetd-l-$u" timeout 20 finger -l "$u@127.0.0.1"
done
stop $pid
exit 0
"""


@pytest.fixture(scope="module")
def host() -> Iterator[Path]:
    """Stage the test host, run finger and fingerd in the namespace; yield the outputs."""
    needs_root("real accounts in a private mount and network namespace")
    for tool in ("finger", "systemd-socket-activate", "timeout"):
        require(shutil.which(tool) is not None, f"needs {tool}")
    with public_dir() as stage:
        stage_host(stage)
        env = child_env({"TZ": TZ, "LC_ALL": "C", "PYTHON": PYTHON,
                         "USERS": " ".join([*COMPARED, "erin", "gina", "sys", "ivan"])})
        # --pid --fork --kill-child: if the run times out, killing unshare ends the script,
        # and with it, as the namespace's init, every server it started in the background.
        proc = subprocess.run(["unshare", "--mount", "--net", "--pid", "--fork", "--kill-child",
                               "--propagation", "private", "--",
                               "/bin/sh", "-c", SCRIPT, "sh", str(stage)],
                              capture_output=True, text=True, env=env, timeout=300)
        assert proc.returncode == 0, proc.stderr
        yield stage / "out"


def out(host: Path, name: str) -> str:
    return (host / name).read_bytes().decode("utf-8")


def finger_says(host: Path, name: str, start: str) -> str:
    """Output of the real finger that must begin with ``start`` (no vacuous comparisons)."""
    text = out(host, name)
    assert text.startswith(start), (name, text, out(host, f"{name}.err"))
    return text


def lines(text: str) -> list[str]:
    """Wire text as finger prints it: LF line ends, no trailing blanks (fingerd's output
    filter strips them)."""
    return [line.rstrip(" \t") for line in text.replace("\r\n", "\n").rstrip("\n").split("\n")]


def fields(text: str) -> list[tuple[str, str]]:
    """The long form as (field, value) pairs, for a readable field-by-field comparison."""
    found: list[tuple[str, str]] = []
    block = ""
    for line in lines(text):
        if line in ("PGP key:", "Project:", "Plan:"):
            block = line[:-1]
            found.append((block, ""))
        elif block:
            found[-1] = (block, (found[-1][1] + "\n" + line).lstrip("\n"))
        elif line.startswith(("Login: ", "Directory: ", "Office: ", "Office Phone: ",
                              "Home Phone: ")):
            for part in line.split("\t"):
                if part:
                    key, _, value = part.partition(": ")
                    found.append((key, value))
        elif line.startswith(("On since ", "Last login ", "New mail received ",
                              "Mail last read ")):
            key = " ".join(line.split()[:2])
            found.append((key, line[len(key) + 1:]))
        elif line.strip().startswith("Unread since "):
            found.append(("Unread since", line.strip()[len("Unread since "):]))
        elif line.strip().endswith("idle"):
            found.append(("Idle", line.strip()))
        elif line.strip() == "(messages off)":
            found.append(("Messages", "off"))
        else:
            found.append(("line", line))
    return found


def short_fields(text: str) -> list[list[str]]:
    """The short form as columns: login, name, tty, idle, login time, office/host."""
    rows = lines(text)
    header = rows[0]
    cuts = [0, header.index("Name"), header.index("Tty") - 1, header.index("Idle") - 4,
            header.index("Login Time") - 1, header.index("Office") - 1]
    table = []
    for row in rows[1:]:
        table.append([row[a:b].strip() for a, b in zip(cuts, [*cuts[1:], None], strict=True)])
    return table


@pytest.mark.netns
@pytest.mark.parametrize("user", COMPARED)
def test_long_form_matches_finger(host: Path, user: str) -> None:
    """``/W user`` is what ``finger -l user`` prints on the same host: each field (login,
    name, directory, shell, office, phones, sessions, idle, messages, last login, mail, PGP
    key, project, plan), then every byte."""
    expected = finger_says(host, f"finger-l-{user}", f"Login: {user} ")
    answer = out(host, f"query-l-{user}")
    assert fields(answer) == fields(expected)
    assert lines(answer) == lines(expected)


@pytest.mark.netns
@pytest.mark.parametrize("user", COMPARED)
def test_short_form_matches_finger(host: Path, user: str) -> None:
    """``user`` (no /W) is what ``finger -s user`` prints: column by column, then every
    byte."""
    expected = finger_says(host, f"finger-s-{user}", "Login ")
    answer = out(host, f"query-s-{user}")
    assert short_fields(answer) == short_fields(expected)
    assert lines(answer) == lines(expected)


@pytest.mark.netns
def test_listing_matches_finger(host: Path) -> None:
    """An empty query (list_users on) is ``finger``'s list of logged-in users; ``/W`` is
    ``finger -l``'s."""
    finger_says(host, "finger-list", "Login ")
    finger_says(host, "finger-list-l", "Login: alice ")
    assert short_fields(out(host, "query-list")) == short_fields(out(host, "finger-list"))
    assert lines(out(host, "query-list")) == lines(out(host, "finger-list"))
    assert fields(out(host, "query-list-l")) == fields(out(host, "finger-list-l"))
    assert lines(out(host, "query-list-l")) == lines(out(host, "finger-list-l"))


@pytest.mark.netns
@pytest.mark.parametrize("user", COMPARED)
def test_real_client_through_fingerd_serve(host: Path, user: str) -> None:
    """``finger -l user@127.0.0.1`` (sends ``/W user``) and ``finger user@127.0.0.1``,
    answered by ``fingerd serve`` running as nobody, print what local ``finger -l`` and
    ``finger -s`` print."""
    expected = finger_says(host, f"finger-l-{user}", f"Login: {user} ")
    assert lines(out(host, f"net-l-{user}")) == lines(expected)
    expected = finger_says(host, f"finger-s-{user}", "Login ")
    assert lines(out(host, f"net-s-{user}")) == lines(expected)


@pytest.mark.netns
def test_real_client_listing_through_fingerd_serve(host: Path) -> None:
    """``finger @127.0.0.1`` through fingerd serve lists the logged-in users as ``finger``."""
    assert lines(out(host, "net-list")) == lines(finger_says(host, "finger-list", "Login "))
    assert lines(out(host, "net-list-l")) == lines(out(host, "finger-list-l"))


@pytest.mark.netns
@pytest.mark.parametrize("user", COMPARED)
def test_real_client_through_inetd_handler(host: Path, user: str) -> None:
    """The per-connection handler, started per connection by systemd-socket-activate
    --inetd, answers the real client as ``finger -l`` prints locally."""
    expected = finger_says(host, f"finger-l-{user}", f"Login: {user} ")
    assert lines(out(host, f"inetd-l-{user}")) == lines(expected)


@pytest.mark.netns
def test_nofinger_user_is_unknown(host: Path) -> None:
    """A user with ~/.nofinger exists (local finger shows her) but fingerd answers "no such
    user", long or short, locally or over the network, and never shows her plan."""
    assert "Login: erin" in out(host, "finger-l-erin")
    for name in ("query-l-erin", "query-s-erin", "net-l-erin", "net-s-erin", "inetd-l-erin"):
        assert lines(out(host, name)) == ["No such user."], name


@pytest.mark.netns
def test_private_home_is_not_shown_by_default(host: Path) -> None:
    """A user whose home the service cannot enter (0700) might have a ~/.nofinger it cannot
    see: not shown (fingerd serve runs as nobody), unless show_private_homes = true, and then
    without the plan it cannot read."""
    assert "Plan:\nivan's plan" in out(host, "finger-l-ivan")  # root's local finger sees it
    assert lines(out(host, "hidden-ivan")) == ["No such user."]
    assert lines(out(host, "net-l-ivan")) == ["No such user."]
    shown = out(host, "shown-ivan")
    assert shown.startswith("Login: ivan ") and shown.endswith("No Plan.\r\n")


@pytest.mark.netns
def test_system_account_is_unknown(host: Path) -> None:
    """An account below UID_MIN exists (local finger shows it) but fingerd does not know it."""
    assert "Login: sys" in out(host, "finger-l-sys")
    for name in ("query-l-sys", "net-l-sys", "net-s-sys"):
        assert lines(out(host, name)) == ["No such user."], name


@pytest.mark.netns
def test_control_characters_shown_as_finger_does(host: Path) -> None:
    """Control characters in a .plan are shown as ^X, exactly as finger shows them: an
    escape sequence cannot reach the client's terminal."""
    answer = out(host, "net-l-bob")
    assert "Plan:\n^[[31mred^[[0m and a bell^G^M\n" in answer
    assert "\x1b" not in answer and "\x07" not in answer


@pytest.mark.netns
def test_symlinked_and_fifo_dot_files_are_not_shown(host: Path) -> None:
    """A .plan symlink (to /etc/passwd) is not followed and a FIFO .project does not hang:
    "No Plan.", as finger says."""
    answer = out(host, "net-l-dave")
    assert answer.rstrip().endswith("No Plan.")
    assert "root:" not in answer


@pytest.mark.netns
def test_wtmp_fills_in_where_lastlog_has_nothing(host: Path) -> None:
    """A login recorded only in wtmp: finger says "Never logged in.", fingerd shows the last
    login from wtmp (a deliberate difference: lastlog is gone from newer Debian releases)."""
    assert "Never logged in." in out(host, "finger-l-gina")
    assert " on pts/4 from w.example\n" in out(host, "query-l-gina").replace("\r\n", "\n")


@pytest.mark.netns
def test_namespace_logs_are_clean(host: Path) -> None:
    """Nothing went wrong on the way: no tracebacks or errors in fingerd's logs."""
    for name in ("serve.log", "inetd.log"):
        log = out(host, name)
        assert "Traceback" not in log and "failed" not in log and "error" not in log, log
    assert 'backend=local outcome=answered' in out(host, "serve.log")
