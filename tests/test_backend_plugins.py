"""Third-party backends: a real package declaring an entry point in ``fingerd.backends``.

The package is the example of README.md ("Writing a backend"), taken from the document itself
(so the README's example is the one that is tested), built into a wheel and installed the way
Debian's pybuild does it (``python3 -m build --no-isolation``, then ``installer``: no pip, no
network) into a directory that goes on the path. The installed ``*.dist-info`` has the
``entry_points.txt`` that pip would write too, which importlib.metadata reads as it would in
site-packages. Then fingerd answers through it: in the chain, through the handler on a socket,
and through ``fingerd serve``.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from backend_fixtures import (
    PYTHON,
    REPO,
    child_env,
    fingerd_serve,
    public_dir,
    run_handler,
    write_config,
)
from conftest import child_path, require

from fingerd.testing import BackendContract, World

README = REPO / "README.md"


def readme_block(first_line: str) -> str:
    """The fenced code block of the README that starts with ``first_line``."""
    for block in re.findall(r"```[a-z]*\n(.*?)```", README.read_text(), flags=re.DOTALL):
        if block.startswith(first_line + "\n"):
            return block
    raise AssertionError(f"no block starting with {first_line!r} in {README}")


#: What building and installing the plugin takes (Build-Depends <!nocheck> of the package).
BUILD_TOOLS = {"build": "python3-build", "installer": "python3-installer",
               "setuptools": "python3-setuptools", "wheel": "python3-wheel"}


def install(source: Path, target: Path) -> None:
    """Build the project in ``source`` into a wheel and install it into the path entry
    ``target``, as pybuild does: ``python3 -m build --wheel --no-isolation`` (no network; the
    README's pyproject.toml names no build backend, so setuptools and wheel build it), then
    ``installer`` with ``target`` as the scheme's library directory. No pip: a package build has
    only its Build-Depends."""
    missing = [f"{module} ({package})" for module, package in BUILD_TOOLS.items()
               if importlib.util.find_spec(module) is None]
    require(not missing, f"building the plugin needs {', '.join(missing)}")
    from installer import install as install_wheel
    from installer.destinations import SchemeDictionaryDestination
    from installer.sources import WheelFile

    dist = target.parent / "wheels" / source.name
    proc = subprocess.run([PYTHON, "-m", "build", "--wheel", "--no-isolation", "--outdir",
                           str(dist), str(source)],
                          capture_output=True, text=True, timeout=300, cwd=source)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    [wheel] = dist.glob("*.whl")
    scheme = {"purelib": target, "platlib": target, "scripts": target / "bin",
              "data": target / "data", "headers": target / "include"}
    destination = SchemeDictionaryDestination({k: str(v) for k, v in scheme.items()},
                                              interpreter=PYTHON, script_kind="posix")
    with WheelFile.open(wheel) as source_wheel:
        install_wheel(source_wheel, destination, {"INSTALLER": b"fingerd-tests\n"})


@pytest.fixture(scope="module")
def site() -> Iterator[Path]:
    """A path entry holding the installed example package and a broken one."""
    with public_dir() as directory:
        source = directory / "src"
        (source / "uptime").mkdir(parents=True)
        (source / "uptime" / "fingerd_uptime.py").write_text(readme_block("# fingerd_uptime.py"))
        (source / "uptime" / "pyproject.toml").write_text(readme_block("# pyproject.toml"))
        (source / "broken").mkdir()
        (source / "broken" / "fingerd_broken.py").write_text("raise ImportError('no luck')\n")
        (source / "broken" / "pyproject.toml").write_text(
            '[project]\nname = "fingerd-broken"\nversion = "1.0"\n'
            '[project.entry-points."fingerd.backends"]\nbroken = "fingerd_broken:Broken"\n')
        target = directory / "site"
        for name in ("uptime", "broken"):
            install(source / name, target)
        for path in [target, *target.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        (directory / "uptime").write_text("93784.56 100.0\n")  # 1 day, 2:03
        (directory / "uptime").chmod(0o644)
        yield target


def plugin_env(site: Path) -> dict[str, str]:
    return {"PYTHONPATH": f"{child_path()}:{site}"}


def test_readme_example_is_short_and_complete() -> None:
    """The README's example is a whole package (module and pyproject.toml), under 30 lines."""
    module, project = readme_block("# fingerd_uptime.py"), readme_block("# pyproject.toml")
    assert "class UptimeBackend(Backend):" in module
    assert '[project.entry-points."fingerd.backends"]' in project
    assert len((module + project).strip().splitlines()) < 30


def test_installed_entry_point_metadata(site: Path) -> None:
    """The package is installed with a dist-info whose entry_points.txt declares the type."""
    [entry_points] = site.glob("fingerd_uptime-1.0.dist-info/entry_points.txt")
    assert entry_points.read_text().split() == ["[fingerd.backends]", "uptime", "=",
                                                "fingerd_uptime:UptimeBackend"]


def test_plugin_answers_through_the_handler(site: Path) -> None:
    """End to end: ``type = "uptime"`` is found by its entry point and answers a real query
    through the per-connection handler on a socket; other users go down the chain."""
    directory = site.parent
    config = write_config(directory / "fingerd.toml", [
        {"type": "uptime", "path": str(directory / "uptime")},
        {"type": "static", "users": {"alice": "static alice"}}])
    reply = run_handler(config, b"uptime\r\n", env=plugin_env(site))
    assert reply.data == b"up 1 days, 2:03\r\n", reply.log
    assert "backend=uptime outcome=answered" in reply.log
    assert run_handler(config, b"alice\r\n", env=plugin_env(site)).data == b"static alice\r\n"


def test_plugin_answers_through_serve(site: Path) -> None:
    """End to end: ``fingerd serve`` loads the plugin once and answers through it."""
    directory = site.parent
    config = write_config(directory / "serve.toml", [
        {"type": "uptime", "path": str(directory / "uptime"), "name": "up"}])
    with fingerd_serve(config, env=plugin_env(site)) as served:
        assert served.query(b"uptime\r\n") == b"up 1 days, 2:03\r\n", served.log
        assert served.query(b"/W uptime\r\n") == b"up 1 days, 2:03\r\n"
        assert served.query(b"alice\r\n") == b"No such user.\r\n"
    assert "backend=up outcome=answered" in served.log


def test_check_lists_the_plugin(site: Path) -> None:
    """``fingerd check`` names the plugin's class; an unknown type lists the installed ones."""
    directory = site.parent
    config = write_config(directory / "check.toml", [{"type": "uptime"}])
    proc = subprocess.run([PYTHON, "-m", "fingerd", "check", "--config", str(config)],
                          capture_output=True, text=True, env=child_env(plugin_env(site)))
    assert proc.returncode == 0, proc.stderr
    assert "backend 1: uptime (fingerd_uptime.UptimeBackend)" in proc.stdout
    config = write_config(directory / "check.toml", [{"type": "upTime"}])
    proc = subprocess.run([PYTHON, "-m", "fingerd", "check", "--config", str(config)],
                          capture_output=True, text=True, env=child_env(plugin_env(site)))
    assert proc.returncode == 1
    assert ("backend[1].type: unknown backend type 'upTime' (known: broken, file, http, local, "
            "static, status, uptime)") in proc.stderr


def test_plugin_options_are_checked(site: Path) -> None:
    """A plugin's options go through the same checks: a misspelt one is a config error."""
    directory = site.parent
    config = write_config(directory / "typo.toml", [{"type": "uptime", "pth": "/x"}])
    proc = subprocess.run([PYTHON, "-m", "fingerd", "check", "--config", str(config)],
                          capture_output=True, text=True, env=child_env(plugin_env(site)))
    assert proc.returncode == 1
    assert "backend[1].pth: unknown key" in proc.stderr


def test_broken_plugin_is_a_clear_config_error(site: Path) -> None:
    """A plugin that does not import: ``fingerd check`` says which and why; the handler
    gives the client a short line and logs the reason, no traceback anywhere."""
    directory = site.parent
    config = write_config(directory / "broken.toml", [{"type": "broken"}])
    proc = subprocess.run([PYTHON, "-m", "fingerd", "check", "--config", str(config)],
                          capture_output=True, text=True, env=child_env(plugin_env(site)))
    assert proc.returncode == 1
    assert "cannot load backend 'broken': ImportError: no luck" in proc.stderr
    reply = run_handler(config, b"alice\r\n", env=plugin_env(site))
    assert reply.data == b"Finger service unavailable\r\n"
    assert "cannot load backend 'broken'" in reply.log
    assert "Traceback" not in reply.log + proc.stderr


def test_builtin_types_never_scan_entry_points() -> None:
    """A config with built-in types only does not import importlib.metadata (~20 ms per
    connection): plugins cost only the configs that use them."""
    code = ("import sys\n"
            "from fingerd.config import Config\n"
            "from fingerd.backends import service_from\n"
            "service_from(Config('t', {'backend': [{'type': t} for t in\n"
            "    ('static', 'local')] + [{'type': 'file', 'path': '/etc/hostname'},\n"
            "    {'type': 'http', 'url': 'http://127.0.0.1/{user}'}]}))\n"
            "print('importlib.metadata' in sys.modules)\n")
    proc = subprocess.run([PYTHON, "-c", code], capture_output=True, text=True,
                          env={"PYTHONPATH": str(REPO)}, check=True)
    assert proc.stdout.strip() == "False"


class TestUptimePluginContract(BackendContract):
    """The README's example keeps the same contract as the built-in backends."""

    @pytest.fixture
    def world(self, site: Path, monkeypatch: pytest.MonkeyPatch) -> World:
        monkeypatch.syspath_prepend(str(site))
        import importlib

        importlib.invalidate_caches()
        return World(table={"type": "uptime", "path": str(site.parent / "uptime")},
                     known="uptime", expect="up 1 days, 2:03", env=plugin_env(site),
                     bad_options=[("path", 1), ("user", ["x"])])
