"""The ``file`` backend: a status file of ``user: status`` lines, or a directory of per-user
files. Real files, directories, symlinks, FIFOs and permissions in temporary directories."""

from __future__ import annotations

import os
import pwd
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from backend_fixtures import (
    fingerd_serve,
    make_backend,
    public_dir,
    run_handler,
    run_installed,
    run_query,
    unprivileged_prefix,
    within,
    write_config,
)

from fingerd.backends import service_from
from fingerd.config import Config
from fingerd.protocol import Query
from fingerd.service import FingerService
from fingerd.testing import BackendContract, World

STATUS = """\
# The tutorial's status file.
moshez: Happy and well

alice:   In the lab until 6
bob: ratio 1:2, both: fine
"""


def age(path: Path, seconds: float = 3600) -> None:
    """Date a file back, so that a cache may trust it (see FileBackend's racy rule)."""
    then = time.time() - seconds
    os.utime(path, (then, then))


def chain(*tables: dict[str, object]) -> FingerService:
    return service_from(Config("test.toml", {"backend": list(tables)}))


# -- the contract, for both forms -----------------------------------------------------------------

class TestStatusFileContract(BackendContract):
    @pytest.fixture
    def world(self) -> Iterator[World]:
        with public_dir() as directory:
            status = directory / "status"
            status.write_text(STATUS)
            status.chmod(0o644)
            yield World(table={"type": "file", "path": str(status)}, known="moshez",
                        expect="Happy and well",
                        bad_options=[("path", ""), ("path", 7),
                                     ("max_bytes", 0), ("owner_must_match", True)])


class TestStatusDirectoryContract(BackendContract):
    @pytest.fixture
    def world(self) -> Iterator[World]:
        with public_dir() as directory:
            status = directory / "status.d"
            status.mkdir(mode=0o755)
            (status / "moshez").write_text("Happy and well\nand busy\n")
            (status / "moshez").chmod(0o644)
            yield World(table={"type": "file", "path": f"{status}/"}, known="moshez",
                        expect="Happy and well",
                        bad_options=[("path", ["status.d/"]), ("max_bytes", -1),
                                     ("owner_must_match", "yes")])


# -- the status file ------------------------------------------------------------------------------

def test_tutorial_format(tmp_path: Path) -> None:
    """``user: status`` lines: the text after the first colon, blanks around it removed;
    comments and blank lines are not users."""
    status = tmp_path / "status"
    status.write_text(STATUS)
    backend = make_backend({"type": "file", "path": str(status)})
    assert backend.lookup(Query("moshez")) == "Happy and well"
    assert backend.lookup(Query("alice")) == "In the lab until 6"
    assert backend.lookup(Query("bob")) == "ratio 1:2, both: fine"
    assert backend.lookup(Query("# The tutorial's status file.")) is None
    assert backend.lookup(Query("#")) is None


def test_relative_path_is_relative_to_the_config_file(tmp_path: Path) -> None:
    """``path = "status"`` names the file next to the config file, wherever fingerd runs."""
    (tmp_path / "status").write_text("alice: next to the config\n")
    (tmp_path / "status.d").mkdir()
    (tmp_path / "status.d" / "bob").write_text("in the directory")
    service = service_from(Config(str(tmp_path / "fingerd.toml"), {"backend": [
        {"type": "file", "path": "status"}, {"type": "file", "path": "status.d/"}]}))
    assert service.respond(b"alice\r\n").data == b"next to the config\r\n"
    assert service.respond(b"bob\r\n").data == b"in the directory\r\n"


def test_repeated_user_lines_make_a_multi_line_answer(tmp_path: Path) -> None:
    """Several lines for one user are joined in file order (CRLF files too)."""
    status = tmp_path / "status"
    status.write_bytes(b"office: Room 101\r\nalice: here\r\noffice: Phone x4242\r\n")
    backend = make_backend({"type": "file", "path": str(status)})
    assert backend.lookup(Query("office")) == "Room 101\nPhone x4242"


def test_empty_status_is_a_user_with_nothing_to_say(tmp_path: Path) -> None:
    """``user:`` with no text: the user exists (no "no such user"), with no information."""
    status = tmp_path / "status"
    status.write_text("quiet:\n")
    reply = chain({"type": "file", "path": str(status)}).respond(b"quiet\r\n")
    assert reply.data == b"No information.\r\n"


def test_bad_lines_are_skipped_and_logged(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    """A line without ``:`` or with a bad user name is skipped with a log line that names the
    file and line; everybody else is still answered."""
    status = tmp_path / "status"
    status.write_text("alice: here\nthis line has no colon\nbad name: x\nbob: there\n")
    backend = make_backend({"type": "file", "path": str(status)})
    assert backend.lookup(Query("alice")) == "here"
    assert backend.lookup(Query("bob")) == "there"
    assert backend.lookup(Query("this line has no colon")) is None
    log = capsys.readouterr().err
    assert f"status file {status}: 2 problem(s), skipped: line 2: no ':'; " \
           "line 3: bad user name 'bad name'" in log


def test_unchanged_file_is_parsed_once(tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    """The backend object keeps the parsed file while its identity and modification time
    are unchanged: its problems are logged once, not on every query."""
    status = tmp_path / "status"
    status.write_text("alice: here\nno colon\n")
    age(status)
    backend = make_backend({"type": "file", "path": str(status)})
    for _ in range(3):
        assert backend.lookup(Query("alice")) == "here"
    assert capsys.readouterr().err.count("no ':'") == 1


def test_recently_modified_file_is_not_trusted_from_cache(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A file modified in the last seconds is parsed again on every query: a second edit
    within the same timestamp tick (same size, same mtime) must not be missed. Once it has
    aged, the parsed copy is used."""
    status = tmp_path / "status"
    status.write_text("alice: here\nno colon\n")
    backend = make_backend({"type": "file", "path": str(status)})
    for _ in range(3):
        assert backend.lookup(Query("alice")) == "here"
    assert capsys.readouterr().err.count("no ':'") == 3
    age(status, 5)
    for _ in range(3):
        assert backend.lookup(Query("alice")) == "here"
    assert capsys.readouterr().err.count("no ':'") == 1


def test_lookups_that_find_the_file_unparsed_at_once_parse_it_once(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """In the long-running front ends, worker threads that all find the status file changed
    wait for one parse and share it, rather than each reading and holding a copy (the memory
    of bench/hostile.py 3 --cold). Each parse logs the bad line once."""
    status = tmp_path / "status"
    status.write_text("no colon\n" + "".join(f"user{n}: {'x' * 200}\n" for n in range(20000)))
    age(status)
    backend = make_backend({"type": "file", "path": str(status)})
    start = threading.Barrier(8)

    def ask() -> str | None:
        start.wait(timeout=10)
        return backend.lookup(Query("user7"))

    with ThreadPoolExecutor(8) as threads:
        answers = list(threads.map(lambda _: ask(), range(8)))
    assert answers == ["x" * 200] * 8
    assert capsys.readouterr().err.count("no ':'") == 1


def test_edit_is_seen_by_the_same_backend_object(tmp_path: Path) -> None:
    """The long-lived backend (fingerd serve) sees an edit on the next query: in place, by
    rename, and even a same-size rewrite within the same timestamp tick."""
    status = tmp_path / "status"
    status.write_text("alice: in\n")
    backend = make_backend({"type": "file", "path": str(status)})
    assert backend.lookup(Query("alice")) == "in"
    status.write_text("alice: up\n")  # same size, same inode, within milliseconds
    assert backend.lookup(Query("alice")) == "up"
    replacement = tmp_path / "status.new"
    replacement.write_text("alice: gone home\n")
    age(replacement)
    replacement.rename(status)
    assert backend.lookup(Query("alice")) == "gone home"
    with status.open("a") as f:
        f.write("bob: new\n")
    assert backend.lookup(Query("bob")) == "new"


def test_file_over_max_bytes_is_read_up_to_the_cap(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """A huge file is read only up to max_bytes: users in the lines before the cap are
    answered, the rest (and the line the cap cuts) are not, and the log says so."""
    status = tmp_path / "status"
    with status.open("w") as f:
        f.write("alice: first\n")
        f.write("cut: " + "x" * 100 + "\n")
        for number in range(100000):
            f.write(f"user{number}: status {number}\n")
    backend = make_backend({"type": "file", "path": str(status), "max_bytes": 64})
    assert backend.lookup(Query("alice")) == "first"
    assert backend.lookup(Query("cut")) is None
    assert backend.lookup(Query("user99999")) is None
    assert "larger than max_bytes = 64" in capsys.readouterr().err


def test_default_cap_bounds_what_is_read(tmp_path: Path) -> None:
    """Without max_bytes a status file is still capped (1 MiB): a 3 MiB file's tail is not
    read."""
    status = tmp_path / "status"
    with status.open("w") as f:
        f.write("alice: first\n")
        f.write(("# " + "x" * 1000 + "\n") * 3000)
        f.write("zed: last\n")
    backend = make_backend({"type": "file", "path": str(status)})
    assert backend.lookup(Query("alice")) == "first"
    assert backend.lookup(Query("zed")) is None


def test_missing_file_fails_the_lookup_and_the_chain_goes_on(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A missing status file is a failure of this backend (logged with the path and reason);
    the next backend still answers."""
    service = chain({"type": "file", "path": str(tmp_path / "missing")},
                    {"type": "static", "users": {"alice": "from static"}})
    assert service.respond(b"alice\r\n").data == b"from static\r\n"
    assert f"status file {tmp_path}/missing: No such file or directory" \
        in capsys.readouterr().err


def test_missing_file_alone_gives_unavailable(tmp_path: Path) -> None:
    """With no other backend, a missing status file is "service unavailable", not "no such
    user" (the server cannot tell) and not a traceback."""
    service = chain({"type": "file", "path": str(tmp_path / "missing")})
    assert service.respond(b"alice\r\n").data == b"Finger service unavailable\r\n"


def test_unreadable_file_is_a_logged_failure() -> None:
    """A status file the service user cannot read: the client gets a short line from the
    next backend, the log the reason (run as nobody, since root reads anything)."""
    with public_dir() as directory:
        status = directory / "status"
        status.write_text("alice: secret\n")
        status.chmod(0o600)
        if os.geteuid() != 0:
            status.chmod(0o000)
        config = write_config(directory / "fingerd.toml", [
            {"type": "file", "path": str(status)},
            {"type": "static", "users": {"alice": "fallback"}}])
        reply = run_query(config, "alice", prefix=unprivileged_prefix())
        assert reply.data == b"fallback\r\n", reply.log
        assert f"status file {status}: Permission denied" in reply.log


def test_fifo_does_not_hang(tmp_path: Path) -> None:
    """A FIFO at the status path (nobody writing) is refused at once, not waited on."""
    fifo = tmp_path / "status"
    os.mkfifo(fifo)
    backend = make_backend({"type": "file", "path": str(fifo)})
    with pytest.raises(OSError, match="not a regular file"):
        within(5, lambda: backend.lookup(Query("alice")))


def test_invalid_utf8_is_replaced_not_fatal(tmp_path: Path) -> None:
    """Bytes that are not UTF-8 are shown as U+FFFD; the file is still used."""
    status = tmp_path / "status"
    status.write_bytes(b"alice: caf\xe9\nbob: fine\n")
    backend = make_backend({"type": "file", "path": str(status)})
    assert backend.lookup(Query("alice")) == "caf\ufffd"
    assert backend.lookup(Query("bob")) == "fine"


# -- the status directory -------------------------------------------------------------------------

@pytest.fixture
def status_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "status.d"
    directory.mkdir()
    (directory / "alice").write_text("Alice's status\nsecond line\n")
    return directory


def test_directory_one_file_per_user(status_dir: Path) -> None:
    """Each file is one user's whole answer, multi-line; a user without a file is unknown."""
    backend = make_backend({"type": "file", "path": f"{status_dir}/"})
    assert backend.lookup(Query("alice")) == "Alice's status\nsecond line\n"
    assert backend.lookup(Query("bob")) is None


def test_existing_directory_without_trailing_slash(status_dir: Path) -> None:
    """A path naming an existing directory is a status directory even without the ``/``."""
    backend = make_backend({"type": "file", "path": str(status_dir)})
    assert backend.lookup(Query("alice")) == "Alice's status\nsecond line\n"


def test_directory_edits_take_effect_at_once(status_dir: Path) -> None:
    """A new, changed or removed file is seen by the next query of the same backend."""
    backend = make_backend({"type": "file", "path": f"{status_dir}/"})
    (status_dir / "bob").write_text("new here")
    assert backend.lookup(Query("bob")) == "new here"
    (status_dir / "alice").write_text("changed")
    assert backend.lookup(Query("alice")) == "changed"
    (status_dir / "alice").unlink()
    assert backend.lookup(Query("alice")) is None


@pytest.mark.parametrize("name", ["a/b", "../status.d/alice", "..", ".", ".hidden", "alice/"])
def test_directory_refuses_path_like_names(status_dir: Path, name: str,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    """A queried name with ``/``, ``..`` or a leading dot is never used as a path: unknown,
    with a log line."""
    (status_dir / ".hidden").write_text("dot file")
    backend = make_backend({"type": "file", "path": f"{status_dir}/"})
    assert backend.lookup(Query(name)) is None
    assert f"status directory {status_dir}: refused user name" in capsys.readouterr().err


def test_symlink_inside_the_directory_is_followed(status_dir: Path) -> None:
    """A symlink to another file in the directory is an alias (``office`` -> ``alice``)."""
    (status_dir / "office").symlink_to("alice")
    backend = make_backend({"type": "file", "path": f"{status_dir}/"})
    assert backend.lookup(Query("office")) == "Alice's status\nsecond line\n"


def test_symlink_out_of_the_directory_is_skipped(status_dir: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """A symlink that leads outside the directory (absolute, relative, or through a linked
    subdirectory) is skipped with a log line; the others are still answered."""
    secret = tmp_path / "secret"
    secret.write_text("do not show")
    (status_dir / "abs").symlink_to(secret)
    (status_dir / "rel").symlink_to("../secret")
    (status_dir / "sub").symlink_to(tmp_path)
    (status_dir / "via").symlink_to("sub/secret")
    backend = make_backend({"type": "file", "path": f"{status_dir}/"})
    for name in ("abs", "rel", "via"):
        assert backend.lookup(Query(name)) is None
    assert backend.lookup(Query("alice")) == "Alice's status\nsecond line\n"
    log = capsys.readouterr().err
    assert log.count("outside the directory; skipped") == 3
    assert "do not show" not in log


def test_dangling_symlink_and_subdirectory_are_unknown(status_dir: Path) -> None:
    """A dangling symlink or a subdirectory named like the user is not an answer."""
    (status_dir / "ghost").symlink_to("nowhere")
    (status_dir / "subdir").mkdir()
    backend = make_backend({"type": "file", "path": f"{status_dir}/"})
    assert backend.lookup(Query("ghost")) is None
    assert backend.lookup(Query("subdir")) is None


def test_directory_fifo_does_not_hang(status_dir: Path) -> None:
    """A FIFO named like a user is skipped at once."""
    os.mkfifo(status_dir / "pipe")
    backend = make_backend({"type": "file", "path": f"{status_dir}/"})
    assert within(5, lambda: backend.lookup(Query("pipe"))) is None


def test_directory_file_over_max_bytes_is_skipped(status_dir: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """A user's file over max_bytes is skipped with a log line; smaller ones are answered."""
    (status_dir / "huge").write_bytes(b"x" * 5000)
    backend = make_backend({"type": "file", "path": f"{status_dir}/", "max_bytes": 4096})
    assert backend.lookup(Query("huge")) is None
    assert backend.lookup(Query("alice")) == "Alice's status\nsecond line\n"
    assert "huge is larger than max_bytes = 4096; skipped" in capsys.readouterr().err


def test_missing_directory_fails_the_lookup(tmp_path: Path) -> None:
    """A status directory that does not exist is a failure (logged by the chain), not an
    empty directory that silently knows nobody."""
    backend = make_backend({"type": "file", "path": f"{tmp_path}/nowhere/"})
    with pytest.raises(OSError, match="no such directory"):
        backend.lookup(Query("alice"))


def test_unreadable_user_file_is_skipped_others_answered() -> None:
    """One user's unreadable file is skipped with a log line; the others are answered
    (run as nobody, since root reads anything)."""
    with public_dir() as directory:
        status = directory / "status.d"
        status.mkdir(mode=0o755)
        (status / "alice").write_text("readable")
        (status / "alice").chmod(0o644)
        (status / "bob").write_text("private")
        (status / "bob").chmod(0o600 if os.geteuid() == 0 else 0o000)
        config = write_config(directory / "fingerd.toml",
                              [{"type": "file", "path": f"{status}/"}])
        assert run_query(config, "alice", prefix=unprivileged_prefix()).data == b"readable\r\n"
        reply = run_query(config, "bob", prefix=unprivileged_prefix())
        assert reply.data == b"No such user.\r\n"
        assert f"status directory {status}: bob: Permission denied; skipped" in reply.log


# -- owner_must_match -----------------------------------------------------------------------------

def _me_and_someone_else() -> tuple[str, str]:
    me = pwd.getpwuid(os.geteuid()).pw_name
    other = next(name for name in ("nobody", "daemon", "root") if name != me)
    return me, other


def test_owner_must_match_accepts_own_file(status_dir: Path) -> None:
    """With owner_must_match, a file owned by the account of that name is answered."""
    me, _ = _me_and_someone_else()
    (status_dir / me).write_text("my own words")
    backend = make_backend({"type": "file", "path": f"{status_dir}/", "owner_must_match": True})
    assert backend.lookup(Query(me)) == "my own words"


def test_owner_must_match_refuses_speaking_for_another(
        status_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Nobody can speak for another user: a file named after someone else, or a symlink
    named after someone else pointing at one's own file, is skipped with a log line; so is
    a file for a name with no local account."""
    me, other = _me_and_someone_else()
    (status_dir / me).write_text("my own words")
    (status_dir / other).write_text("pretending")
    (status_dir / "no-such-account-here").write_text("nobody")
    backend = make_backend({"type": "file", "path": f"{status_dir}/", "owner_must_match": True})
    assert backend.lookup(Query(other)) is None
    (status_dir / other).unlink()
    (status_dir / other).symlink_to(me)
    assert backend.lookup(Query(other)) is None
    assert backend.lookup(Query("no-such-account-here")) is None
    log = capsys.readouterr().err
    assert log.count("skipped (owner_must_match)") == 3
    assert "has a file but no local account" in log


@pytest.mark.root  # lchown to another account
def test_owner_must_match_checks_the_link_owner_too(status_dir: Path) -> None:
    """A symlink named after a user counts only if that user owns the link as well as the
    file: someone else's link to the user's own file does not speak for the user."""
    nobody = pwd.getpwnam("nobody")
    target = status_dir / "nobody-real"
    target.write_text("nobody's words")
    os.chown(target, nobody.pw_uid, nobody.pw_gid)
    (status_dir / "nobody").symlink_to("nobody-real")  # the link is root's
    backend = make_backend({"type": "file", "path": f"{status_dir}/", "owner_must_match": True})
    assert backend.lookup(Query("nobody")) is None
    os.lchown(status_dir / "nobody", nobody.pw_uid, nobody.pw_gid)
    assert backend.lookup(Query("nobody")) == "nobody's words"


@pytest.mark.root  # chown to another account
def test_owner_must_match_checks_the_file_behind_a_link(status_dir: Path) -> None:
    """A user's own symlink to a file in the directory that someone else owns does not make
    that file the user's answer."""
    nobody = pwd.getpwnam("nobody")
    theirs = status_dir / "theirs"
    theirs.write_text("nobody's words")
    os.chown(theirs, nobody.pw_uid, nobody.pw_gid)
    (status_dir / "root").symlink_to("theirs")  # root's link, root's name
    backend = make_backend({"type": "file", "path": f"{status_dir}/", "owner_must_match": True})
    assert backend.lookup(Query("root")) is None
    os.chown(theirs, 0, 0)
    assert backend.lookup(Query("root")) == "nobody's words"


# -- end to end: edits while running --------------------------------------------------------------

def test_handler_sees_edits_on_the_next_connection() -> None:
    """The per-connection handler answers from the file as it is at each connection."""
    with public_dir() as directory:
        status = directory / "status"
        status.write_text("alice: before\n")
        status.chmod(0o644)
        config = write_config(directory / "fingerd.toml", [{"type": "file", "path": str(status)}])
        assert run_handler(config, b"alice\r\n").data == b"before\r\n"
        status.write_text("alice: after!\n")
        assert run_handler(config, b"alice\r\n").data == b"after!\r\n"


def test_serve_notices_edits_without_restart() -> None:
    """A running ``fingerd serve`` answers from the edited status file and status directory
    on the next query: no restart, no SIGHUP, no timer."""
    with public_dir() as directory:
        status = directory / "status"
        status.write_text("alice: before\n")
        status.chmod(0o644)
        per_user = directory / "status.d"
        per_user.mkdir(mode=0o755)
        config = write_config(directory / "fingerd.toml", [
            {"type": "file", "path": str(status)}, {"type": "file", "path": f"{per_user}/"}])
        with fingerd_serve(config) as served:
            assert served.query(b"alice\r\n") == b"before\r\n"
            assert served.query(b"bob\r\n") == b"No such user.\r\n"
            status.write_text("alice: after\n")  # same size, at once
            (per_user / "bob").write_text("bob arrived")
            (per_user / "bob").chmod(0o644)
            assert served.query(b"alice\r\n") == b"after\r\n", served.log
            assert served.query(b"bob\r\n") == b"bob arrived\r\n", served.log
            time.sleep(2.1)  # past the racy window: now the parsed file is cached
            assert served.query(b"alice\r\n") == b"after\r\n"
            status.write_text("alice: later\n")
            assert served.query(b"alice\r\n") == b"later\r\n", served.log


def test_import_cost_is_small(tmp_path: Path) -> None:
    """Importing the backend and answering from a status file imports no heavy module (the
    per-connection handler pays for every import)."""
    status = tmp_path / "status"
    status.write_text("alice: here\n")
    code = ("import sys, fingerd.handler\n"
            "before = set(sys.modules)\n"
            "from fingerd.backends.file import FileBackend\n"
            "from fingerd.config import Options\n"
            "from fingerd.protocol import Query\n"
            f"b = FileBackend(Options({{'path': {str(status)!r}}}, 'x', 'b'))\n"
            "assert b.lookup(Query('alice')) == 'here'\n"
            "print(' '.join(sorted(set(sys.modules) - before)))\n")
    proc = run_installed(code)  # the .deb's files on /usr/bin/python3 -I, never the venv
    assert proc.returncode == 0, proc.stderr
    new = proc.stdout.split()
    assert [m for m in new if not m.startswith("fingerd.")] == [], new
