"""fingerd/fingerrc.py: a user's ~/.fingerrc, parsed and read safely. (End to end, with real
accounts and the finger client: tests/test_local_fields.py.)"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fingerd import fingerrc
from fingerd.bsdfinger import FIELDS

ALL_BUT_LOGIN = frozenset(FIELDS) - {"login"}


def test_hide_and_hide_remote() -> None:
    """``hide`` lines hide from everybody, ``hide-remote`` from remote askers only; commas or
    blanks separate names; comments and blank lines are ignored; lines add up."""
    hidden = fingerrc.parse("# mine\n\nhide = plan, from-host\nhide-remote = on-since mail\n"
                            "hide=project # and this\n", FIELDS)
    assert hidden.problems == ()
    assert hidden.fields(local=True) == {"plan", "from-host", "project"}
    assert hidden.fields(local=False) == {"plan", "from-host", "project", "on-since", "mail"}


def test_all_hides_everything() -> None:
    """``all`` names every field."""
    assert fingerrc.parse("hide-remote = all\n", FIELDS).fields(local=False) == set(FIELDS)


def test_lines_not_understood_hide_what_they_name() -> None:
    """The strictest reading of a mistake: a line with another key, or no ``=``, hides the
    fields it names from everybody (it can never show more); an unknown field name is
    ignored. Each is a problem to log, with its line number."""
    hidden = fingerrc.parse("show = from-host, directory\nplan\nhide = plam, shell\n"
                            "whatever\n", FIELDS)
    assert hidden.fields(local=True) == {"from-host", "directory", "plan", "shell"}
    assert hidden.problems == (
        "line 1: expected 'hide = FIELD, ...' or 'hide-remote = FIELD, ...'; hiding "
        "directory, from-host",
        "line 2: expected 'hide = FIELD, ...' or 'hide-remote = FIELD, ...'; hiding plan",
        f"line 3: unknown field 'plam' (fields: {', '.join(FIELDS)}, all)",
        "line 4: expected 'hide = FIELD, ...' or 'hide-remote = FIELD, ...'")


def test_missing_file_hides_nothing(tmp_path: Path) -> None:
    """No ~/.fingerrc (or no home directory at all, or an empty one in passwd, which must not
    make /.fingerrc count): nothing hidden, nothing to log."""
    for home in (tmp_path, tmp_path / "missing", tmp_path / "file", ""):
        (tmp_path / "file").touch()
        hidden = fingerrc.read(str(home), os.getuid(), FIELDS)
        assert hidden.fields(local=False) == set() and hidden.problems == ()


def test_read_own_file(tmp_path: Path) -> None:
    """A regular file owned by the user is parsed."""
    (tmp_path / ".fingerrc").write_text("hide = plan\n")
    assert fingerrc.read(str(tmp_path), os.getuid(), FIELDS).fields(local=True) == {"plan"}


@pytest.mark.parametrize("kind", ["symlink", "fifo", "directory", "too large", "other owner"])
def test_unusable_file_shows_the_login_only(tmp_path: Path, kind: str) -> None:
    """A ~/.fingerrc that is a symlink (not followed), not a regular file (a FIFO is not
    waited on), larger than 4096 bytes, or owned by someone else cannot be trusted to say
    what the user wants: everything but the login is hidden, and the reason is given."""
    path = tmp_path / ".fingerrc"
    uid = os.getuid()
    if kind == "symlink":
        (tmp_path / "real").write_text("hide = plan\n")
        path.symlink_to(tmp_path / "real")
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "directory":
        path.mkdir()
    elif kind == "too large":
        path.write_text("# padding\n" * 500)
    else:
        path.write_text("hide = plan\n")
        uid += 1  # as if the home belonged to the next UID
    hidden = fingerrc.read(str(tmp_path), uid, FIELDS)
    assert hidden.fields(local=True) == ALL_BUT_LOGIN
    assert len(hidden.problems) == 1 and "showing the login only" in hidden.problems[0]


@pytest.mark.root
def test_unreadable_file_shows_the_login_only(tmp_path: Path) -> None:
    """A ~/.fingerrc the service cannot read (mode 0600, read by another user): the login
    only."""
    path = tmp_path / ".fingerrc"
    path.write_text("hide = plan\n")
    path.chmod(0o600)
    os.chown(path, 65534, 65534)
    tmp_path.chmod(0o755)
    pid = os.fork()
    if pid == 0:  # the child reads as a third user, as the service would
        ok = False
        try:
            os.setgroups([])
            os.setgid(65533)
            os.setuid(65533)
            hidden = fingerrc.read(str(tmp_path), 65534, FIELDS)
            ok = (hidden.fields(local=True) == ALL_BUT_LOGIN
                  and "Permission denied" in hidden.problems[0])
        finally:
            os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
