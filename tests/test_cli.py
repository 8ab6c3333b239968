"""The commands people type: query, check, --version, --help."""

from __future__ import annotations

import subprocess

import pytest
from conftest import FINGERD, REPO, env

from fingerd import __version__


def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    # Bytes, decoded by hand: text mode would turn the wire's CRLF into LF.
    proc = subprocess.run([*FINGERD, *args], capture_output=True, env=env(), timeout=20,
                          check=check)
    return subprocess.CompletedProcess(proc.args, proc.returncode, proc.stdout.decode(),
                                       proc.stderr.decode())


def test_query_with_the_example_config_prints_happy_and_well() -> None:
    """README: `fingerd query moshez` prints "Happy and well" with the example config."""
    proc = run("--config", str(REPO / "examples/fingerd.toml"), "query", "moshez")
    assert proc.stdout == "Happy and well\r\n"


def test_query_shows_exactly_what_a_client_gets() -> None:
    """`fingerd query` goes through the same policy: refusals and unknown users included."""
    config = str(REPO / "examples/fingerd.toml")
    assert run("query", "--config", config, "/W", "moshez").stdout == "Happy and well\r\n"
    assert run("query", "--config", config).stdout == "Finger online user list denied\r\n"
    assert run("query", "--config", config, "x@y").stdout == (
        "Finger forwarding service denied\r\n")
    assert run("query", "--config", config, "ghost").stdout == "No such user.\r\n"


def test_example_config_passes_check() -> None:
    """The shipped example is valid."""
    assert run("check", "--config", str(REPO / "examples/fingerd.toml")).returncode == 0


def test_version() -> None:
    """`fingerd --version` prints the package version."""
    assert run("--version").stdout.strip() == f"fingerd {__version__}"


@pytest.mark.parametrize("command", [[], ["query"], ["check"], ["serve"], ["web"], ["irc"],
                                     ["status"], ["status-server"]])
def test_help_on_each_command(command: list[str]) -> None:
    """Every command has --help; those that read the configuration take --config (the status
    commands talk to the status service, which has no configuration of its own)."""
    proc = run(*command, "--help")
    assert proc.stdout.startswith("usage: fingerd")
    assert ("--config" in proc.stdout) == (command[:1] not in (["status"], ["status-server"]))


def test_unknown_arguments_are_a_usage_error() -> None:
    """A typo on the command line is reported, not taken for the handler."""
    proc = run("--confg", "x", check=False)
    assert proc.returncode == 2
    assert "usage: fingerd" in proc.stderr


def test_a_status_usage_error_exits_2() -> None:
    """`fingerd status` with a subcommand it does not know: a usage message and exit status 2
    (1 is for a refusal or a service that is not there)."""
    proc = run("status", "frobnicate", check=False)
    assert proc.returncode == 2
    assert "usage: fingerd status" in proc.stderr
