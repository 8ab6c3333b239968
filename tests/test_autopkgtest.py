"""debian/tests (DEP-8): the installed package tested the way Debian's CI tests it.

``autopkgtest`` runs inside a booted bookworm (tests/container.py) with the ``null`` runner, so
the container is the testbed: systemd is PID 1, as the tests' ``isolation-container`` asks, and
the container is thrown away afterwards, which is why ``breaks-testbed`` may be ignored here (a
real runner would reset the testbed instead). It is given the .deb under test and this tree's
``debian/`` with the ``debian/files`` a build writes (a "built tree"), so it builds nothing
and downloads nothing: every dependency is already in the image, the container has no network.

The checks of debian/tests/control itself need nothing and run in the package build too.
"""

from __future__ import annotations

import io
import re
import tarfile
from collections.abc import Iterator
from pathlib import Path

import container
import pytest
from conftest import REPO, require

TESTS = REPO / "debian" / "tests"
# autopkgtest's known restrictions (lib/testdesc.py, autopkgtest 5.28).
KNOWN_RESTRICTIONS = {
    "allow-stderr", "breaks-testbed", "build-needed", "flaky", "isolation-container",
    "isolation-machine", "needs-internet", "needs-reboot", "needs-recommends", "needs-root",
    "needs-sudo", "rw-build-tree", "skip-not-installable", "skippable", "superficial",
}


def stanzas(path: Path) -> list[dict[str, str]]:
    """The paragraphs of a deb822 file (debian/tests/control), comments dropped, continuation
    lines joined."""
    result: list[dict[str, str]] = []
    for block in re.split(r"\n\s*\n", path.read_text()):
        fields: dict[str, str] = {}
        name = None
        for line in block.splitlines():
            if line.startswith("#"):
                continue
            if line[:1].isspace() and name:
                fields[name] += " " + line.strip()
            elif ":" in line:
                name, _, value = line.partition(":")
                fields[name] = value.strip()
        if fields:
            result.append(fields)
    return result


def words(value: str) -> list[str]:
    return value.replace(",", " ").split()


def test_control_names_executable_tests_with_known_restrictions() -> None:
    """Each stanza of debian/tests/control names scripts that exist and are executable, tests
    the package itself (Depends: @) and declares only restrictions autopkgtest knows; together
    they declare needs-root and isolation-container (they use port 79 through systemd)."""
    found = stanzas(TESTS / "control")
    assert found
    declared: set[str] = set()
    for stanza in found:
        for name in words(stanza["Tests"]):
            script = TESTS / name
            assert script.is_file() and script.stat().st_mode & 0o111, script
        assert "@" in words(stanza["Depends"]), stanza
        restrictions = set(words(stanza.get("Restrictions", "")))
        assert restrictions <= KNOWN_RESTRICTIONS, restrictions - KNOWN_RESTRICTIONS
        declared |= restrictions
    assert {"needs-root", "isolation-container"} <= declared


def built_tree(deb: Path) -> bytes:
    """A tar of what autopkgtest reads of a source tree (debian/control, debian/changelog,
    debian/tests/), with the debian/files a build leaves, naming the .deb: a "built tree"."""
    files = f"{deb.name} net optional\n".encode()
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name in ("control", "changelog", "tests"):
            tar.add(REPO / "debian" / name, arcname=f"debian/{name}")
        info = tarfile.TarInfo("debian/files")
        info.size = len(files)
        tar.addfile(info, io.BytesIO(files))
    return out.getvalue()


@pytest.fixture(scope="module")
def box() -> Iterator[container.Container]:
    """A booted bookworm of the tests' image, which has autopkgtest and the tests' Depends."""
    reason = container.unavailable_reason()
    require(reason is None, f"cannot boot a systemd container: {reason}")
    with container.Container(container.cached_root()) as c:
        yield c


@pytest.mark.systemd
def test_autopkgtest_passes_against_the_deb(box: container.Container, deb: Path) -> None:
    """`autopkgtest fingerd_*.deb src/ -- null` in the container installs the .deb offline,
    runs every test of debian/tests/control (none skipped) and all pass."""
    box.copy_in(deb, "/root/")
    box.run("mkdir -p /root/src && tar -C /root/src -xf -", input=built_tree(deb))
    # The container has no network: without the archive in sources.list, autopkgtest's
    # `apt-get update`s (one before, one after) see only its own repository of the .deb,
    # instead of waiting some 15 s each for a mirror they cannot reach.
    box.run(["mv", "/etc/apt/sources.list", "/etc/apt/sources.list.offline"])
    run = box.run(["autopkgtest", "--ignore-restrictions=breaks-testbed", f"/root/{deb.name}",
                   "/root/src/", "--", "null"], check=False, timeout=600)
    output = f"{run.stdout}\n{run.stderr}"
    print(output)
    summary = output.rpartition("@@@@@@@@@@@@@@@@@@@@ summary")[2]
    results = dict(re.findall(r"^(\S+)\s+(PASS|FAIL|SKIP|FLAKY|BROKEN|NEUTRAL)\b", summary,
                              re.MULTILINE))
    expected = {name for stanza in stanzas(TESTS / "control") for name in words(stanza["Tests"])}
    assert results == dict.fromkeys(expected, "PASS"), output[-6000:]
    assert run.returncode == 0, output[-6000:]
