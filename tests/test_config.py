"""A broken config is reported once, with file, line or key, and reason; nothing breaks."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from conftest import FINGERD, STATIC, env

from fingerd.config import ConfigError, load
from fingerd.protocol import UNAVAILABLE

BROKEN = [
    # (config text, what the message must say)
    ("[server]\nlist_users = \n", ":2: TOML syntax: Invalid value"),
    ("[server]\nlist_users = true\nlist_users = false\n", ":3: TOML syntax"),
    ("[server]\nlist_user = true\n", ":2: server.list_user: unknown key"),
    ("[server]\nread_timeout = \"ten\"\n",
     ":2: server.read_timeout: expected a number, got a string ('ten')"),
    ("[server]\nforwarding = 1\n", ":2: server.forwarding: expected a boolean, got an integer"),
    ("[server]\nread_timeout = -1\n",
     "server.read_timeout: must be more than 0 and at most 3600, got -1"),
    ("[server]\nread_timeout = 0\n", "server.read_timeout: must be more than 0"),
    ("[server]\nread_timeout = inf\n", ":2: server.read_timeout: must be more than 0"),
    ("[server]\nbackend_timeout = nan\n", ":2: server.backend_timeout: must be more than 0"),
    ('[[backend]]\ntype = "static"\n[backend.users]\ntimeout = "x"\n[[backend]]\n'
     'type = "statik"\n', ":6: backend[2].type: unknown backend type 'statik'"),
    ("[server]\nmax_answer_bytes = 10\n", "server.max_answer_bytes: must be between 256"),
    ('[server]\noutput_charset = "latin-1"\n', 'must be "ascii" or "utf-8"'),
    ("[[backend]]\ntype = \"nosuch\"\n",
     ":2: backend[1].type: unknown backend type 'nosuch' (known: "),
    ("[[backend]]\nname = \"x\"\n", "backend[1].type: missing"),
    ("[[backend]]\ntype = \"static\"\nuser = {}\n", ":3: backend[1].user: unknown key"),
    ("[[backend]]\ntype = \"static\"\n[backend.users]\nmoshez = 3\n",
     ":4: backend[1].users.moshez: expected a string, got an integer (3)"),
    ("backend = 3\n", ":1: backend: expected an array, got an integer"),
    ("[backend]\ntype = \"static\"\n", "backend: expected an array, got a table"),
    ("surprise = true\n", ":1: surprise: unknown key"),
]


@pytest.mark.parametrize(("text", "message"), BROKEN)
def test_fingerd_check_names_file_line_key_and_reason(make_config, text: str,
                                                      message: str) -> None:
    """`fingerd check` prints one clear line for each kind of mistake and exits 1."""
    path = make_config(text)
    proc = subprocess.run([*FINGERD, "check", "--config", str(path)], capture_output=True,
                          text=True, env=env(), timeout=20)
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert proc.stderr.startswith(f"fingerd: {path}")
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.splitlines()) == 1


@pytest.mark.parametrize(("text", "message"),
                         BROKEN[:4] + [b for b in BROKEN if "nosuch" in b[0] or "inf" in b[0]])
def test_the_handler_answers_unavailable_and_logs_the_reason(make_config, run_handler,
                                                             text: str, message: str) -> None:
    """A broken config: the client gets one generic line, the log gets file, key and reason."""
    run = run_handler(make_config(text), b"moshez\r\n")
    assert run.answer == UNAVAILABLE.encode() + b"\r\n"
    assert run.returncode == 0
    assert message in run.stderr
    assert "Traceback" not in run.stderr


def test_check_lists_the_backend_chain(make_config) -> None:
    """A good config: exit 0, and the chain in order."""
    path = make_config(STATIC + '\n[[backend]]\ntype = "static"\nname = "second"\n')
    proc = subprocess.run([*FINGERD, "check", "--config", str(path)], capture_output=True,
                          text=True, env=env(), timeout=20, check=True)
    assert f"{path}: OK" in proc.stdout
    assert "backend 1: static (fingerd.backends.static.StaticBackend)" in proc.stdout
    assert "backend 2: second (fingerd.backends.static.StaticBackend)" in proc.stdout


def test_fingerd_config_environment_variable(make_config) -> None:
    """$FINGERD_CONFIG names the file when --config is not given."""
    path = make_config(STATIC)
    proc = subprocess.run([*FINGERD, "query", "moshez"], capture_output=True,
                          env=env(FINGERD_CONFIG=str(path)), timeout=20, check=True)
    assert proc.stdout == b"Happy and well\r\n"


def test_values_are_typed_after_loading(make_config) -> None:
    """The loader turns the table into typed settings."""
    config = load(str(make_config("[server]\nread_timeout = 3\nmax_answer_bytes = 300\n")))
    assert config.server.read_timeout == 3.0
    assert isinstance(config.server.read_timeout, float)
    assert config.server.max_answer_bytes == 300


def test_defaults_are_the_documented_ones(make_config) -> None:
    """An empty file gives the defaults README.md and fingerd.toml(5) document."""
    server = load(str(make_config(""))).server
    assert (server.list_users, server.forwarding, server.conceal_unknown) == (False,) * 3
    assert (server.read_timeout, server.backend_timeout) == (10.0, 5.0)
    assert (server.no_such_user, server.no_information) == ("No such user.", "No information.")
    assert (server.max_answer_bytes, server.ascii_only) == (65536, True)
    assert (server.max_connections, server.max_connections_per_source) == (256, 16)
    assert load(str(make_config(""))).backends == []


def test_the_parsed_config_is_cached_and_refreshed_on_change(make_config,
                                                             tmp_path: Path) -> None:
    """With a cache directory, the second load skips TOML; an edit invalidates the cache."""
    path = make_config(STATIC)
    load(str(path), str(tmp_path))
    cache = tmp_path / "config.marshal"
    assert cache.exists()
    first = cache.stat().st_mtime_ns
    assert load(str(path), str(tmp_path)).backends[0].type == "static"
    assert cache.stat().st_mtime_ns == first  # a hit does not rewrite it
    path.write_text("[server]\nlist_users = true\n")
    config = load(str(path), str(tmp_path))
    assert config.server.list_users is True
    assert config.backends == []
    cache.write_bytes(b"garbage")
    assert load(str(path), str(tmp_path)).server.list_users is True


def test_config_error_carries_its_parts(make_config) -> None:
    """ConfigError keeps path, key, line and reason for callers that format their own."""
    path = make_config("[server]\nlist_users = 3\n")
    with pytest.raises(ConfigError) as raised:
        load(str(path))
    error = raised.value
    assert (error.path, error.key, error.line) == (str(path), "server.list_users", 2)
    assert error.reason.startswith("expected a boolean")
