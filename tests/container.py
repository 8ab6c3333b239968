"""Boot a throw-away Debian bookworm under systemd-nspawn and drive it from the host.

The end-to-end tests need a real systemd as PID 1: socket activation, ``DynamicUser=``, the
journal and the sandbox only exist there. This module

1. builds a ``debootstrap --variant=minbase`` bookworm root once, with everything the tests need
   pre-installed (and Debian's own fingerd pre-downloaded), and caches it outside the repository
   (``/var/cache/fingerd-tests`` unless ``FINGERD_TEST_CACHE`` says otherwise), keyed by a hash
   of the recipe; the build goes to a temporary directory that is renamed into place, under a
   lock, so that concurrent runs neither build twice nor see half a root;
2. boots a throw-away copy of it (an overlay on the cached root, or a ``cp -a --reflink=auto``
   where overlayfs is unavailable) with ``systemd-nspawn --boot --private-network``, so the boot
   needs no network and the container's loopback is its own;
3. runs commands inside through ``nsenter`` into the container's PID 1;
4. tears down only what it started: the nspawn process it spawned (and, if that will not go, the
   container's PID 1, which nspawn started for it), then the copy.

Every step has a deadline. Nothing here imports pytest: :func:`unavailable_reason` tells the
caller why the machine cannot run containers, and the caller decides to skip or to fail.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

SUITE = "bookworm"
MIRROR = os.environ.get("FINGERD_TEST_MIRROR", "http://deb.debian.org/debian")
CACHE_ROOT = Path(os.environ.get("FINGERD_TEST_CACHE", "/var/cache/fingerd-tests"))

#: Packages in the cached root. The first line is what boots and what the .deb depends on, so
#: that ``apt-get install ./fingerd_*.deb`` needs no download; the rest is what the tests use:
#: the finger client, curl and nginx in front of the web view, ngircd for the IRC bot, openssl
#: for test certificates, and autopkgtest to run debian/tests against the installed package.
PACKAGES: tuple[str, ...] = (
    "systemd", "systemd-sysv", "dbus", "python3", "python3-systemd", "python3-h11",
    "finger", "netbase", "iproute2", "procps", "curl", "openssl", "ca-certificates",
    "nginx-light", "ngircd", "autopkgtest",
)

#: Debian's own finger server (binary package ``fingerd`` from source bsd-finger, the name ours
#: takes over) and an inetd to run it, downloaded with every dependency the minbase root lacks
#: into :data:`TAKEOVER_DEBS` in the root, but not installed: the takeover test installs them in a
#: booted container (offline, like the rest), then ours over them. Not installed in the image,
#: so that the other tests see a host without inetd, as most are.
TAKEOVER_PACKAGES: tuple[str, ...] = ("fingerd", "openbsd-inetd")
# Not under /root (0700): apt reads local .debs as its sandbox user _apt.
TAKEOVER_DEBS = "/opt/debian-fingerd"

#: Written into the root after debootstrap. Changing any of this changes the cache key.
HOSTS = """\
127.0.0.1\tlocalhost
::1\tlocalhost ip6-localhost ip6-loopback
"""
# Units that only make sense on real hardware or a console, and would leave a booted container
# "degraded" (is-system-running then says so instead of "running").
MASKED_UNITS: tuple[str, ...] = (
    "console-getty.service", "getty@.service", "systemd-remount-fs.service",
    "apt-daily.timer", "apt-daily-upgrade.timer",
)
#: Installed in the image for the tests, but not started at boot: each test configures them.
IDLE_SERVICES: tuple[str, ...] = ("nginx.service", "ngircd.service")
RECIPE_VERSION = "3"  # bump when the build steps below change in a way the key does not see

HOST_TOOLS = {"systemd-nspawn": "systemd-container", "debootstrap": "debootstrap",
              "nsenter": "util-linux"}
# What a command run in the container sees: nothing from the caller's environment (the host's
# PATH may name a pyenv shim that does not exist in there).
CONTAINER_ENV = ("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                 "LANG=C.UTF-8", "TERM=dumb", "DEBIAN_FRONTEND=noninteractive",
                 "SYSTEMD_PAGER=", "SYSTEMD_COLORS=0")


class ContainerError(RuntimeError):
    """The container could not be built, booted, driven or stopped."""


def unavailable_reason() -> str | None:
    """Why this machine cannot boot the test container, or None if it can."""
    if os.geteuid() != 0:
        return "needs root (systemd-nspawn, debootstrap, nsenter)"
    missing = [tool for tool in HOST_TOOLS if shutil.which(tool) is None]
    if missing:
        pkgs = " ".join(sorted({HOST_TOOLS[t] for t in missing}))
        return f"missing {', '.join(missing)} (apt-get install {pkgs})"
    return None


def cache_key() -> str:
    """Hash of everything that goes into the cached root."""
    recipe = "\n".join((RECIPE_VERSION, SUITE, MIRROR, *PACKAGES, HOSTS, *MASKED_UNITS,
                        *IDLE_SERVICES,
                        *TAKEOVER_PACKAGES, TAKEOVER_DEBS))
    return hashlib.sha256(recipe.encode()).hexdigest()[:16]


def cached_root(timeout: float = 1200.0) -> Path:
    """Return the cached root, building it first if needed (bounded by ``timeout`` seconds)."""
    deadline = time.monotonic() + timeout
    target = CACHE_ROOT / f"{SUITE}-{cache_key()}"
    if (target / "etc/os-release").exists():
        return target
    CACHE_ROOT.mkdir(parents=True, exist_ok=True)
    with _locked(CACHE_ROOT / ".lock", deadline):
        if (target / "etc/os-release").exists():  # another run built it while we waited
            return target
        build = Path(tempfile.mkdtemp(prefix=f".build-{SUITE}-", dir=CACHE_ROOT))
        try:
            _debootstrap(build, deadline)
            # mkdtemp made it 0700; it becomes the container's /, which everybody must enter.
            os.chmod(build, 0o755)  # noqa: S103
            os.rename(build, target)  # atomic: the same filesystem
        except BaseException:
            _rmtree(build)
            raise
    return target


def _debootstrap(root: Path, deadline: float) -> None:
    _run(["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}",
          SUITE, str(root), MIRROR], deadline, what="debootstrap")
    (root / "etc/hosts").write_text(HOSTS)
    (root / "etc/hostname").write_text("fingerd-test\n")
    # Empty: each boot generates its own machine ID instead of sharing the image's.
    (root / "etc/machine-id").write_text("")
    for unit in MASKED_UNITS:
        link = root / "etc/systemd/system" / unit
        with contextlib.suppress(FileNotFoundError):
            link.unlink()
        link.symlink_to("/dev/null")
    # Servers the tests start themselves, with their own configuration: not at boot.
    _run(["chroot", str(root), "systemctl", "disable", *IDLE_SERVICES], deadline,
         what="disabling " + " ".join(IDLE_SERVICES))
    _download_takeover_debs(root, deadline)
    # Keep the image small; the package lists stay so that apt can resolve ./x.deb offline.
    _run(["chroot", str(root), "apt-get", "clean"], deadline, what="apt-get clean")


def _download_takeover_debs(root: Path, deadline: float) -> None:
    """Put TAKEOVER_PACKAGES and what they need beyond the image into TAKEOVER_DEBS, as apt in
    the root resolves them (so exactly the .debs an offline ``apt-get install`` will want)."""
    debs = root / TAKEOVER_DEBS.lstrip("/")
    (debs / "partial").mkdir(parents=True)
    _run(["chroot", str(root), "apt-get", "install", "--download-only", "--yes",
          "--no-install-recommends", "-o", f"Dir::Cache::Archives={TAKEOVER_DEBS}",
          *TAKEOVER_PACKAGES], deadline, what="downloading Debian's fingerd")
    shutil.rmtree(debs / "partial")
    (debs / "lock").unlink(missing_ok=True)
    if not list(debs.glob("fingerd_*.deb")):
        raise ContainerError(f"no fingerd_*.deb in {debs} after the download")


@contextlib.contextmanager
def _locked(path: Path, deadline: float) -> Iterator[None]:
    with open(path, "a") as lock:
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise ContainerError(f"timed out waiting for the lock {path}") from None
                time.sleep(0.5)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _run(cmd: Sequence[str], deadline: float, *, what: str) -> None:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise ContainerError(f"{what}: no time left")
    try:
        subprocess.run(cmd, check=True, timeout=remaining, stdin=subprocess.DEVNULL,
                       capture_output=True, text=True)
    except subprocess.CalledProcessError as e:
        raise ContainerError(f"{what} failed ({e.returncode}):\n{e.stdout[-3000:]}"
                             f"\n{e.stderr[-3000:]}") from None
    except subprocess.TimeoutExpired:
        raise ContainerError(f"{what} timed out after {remaining:.0f}s") from None


def _rmtree(path: Path) -> None:
    # one_file_system-like safety: a stray bind mount below path must not be followed.
    subprocess.run(["rm", "-rf", "--one-file-system", "--", str(path)], check=False,
                   timeout=300)


class Container:
    """One booted container. Use as a context manager, or call :meth:`start`/:meth:`stop`."""

    def __init__(self, image: Path, *, name: str | None = None,
                 workdir: Path | None = None) -> None:
        self.image = image
        self.name = name or f"fingerd-test-{uuid.uuid4().hex[:8]}"
        self._workdir_parent = workdir
        self.workdir: Path | None = None
        self.root: Path | None = None
        self._overlay = False
        self._nspawn: subprocess.Popen[bytes] | None = None
        self._log: Path | None = None
        self.leader: int | None = None
        self._cgroups: list[Path] = []

    # -- life cycle ---------------------------------------------------------------------------
    def __enter__(self) -> Container:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, timeout: float = 120.0) -> None:
        """Copy the image, boot it, wait until systemd says the boot finished."""
        deadline = time.monotonic() + timeout
        parent = self._workdir_parent or self.image.parent
        self.workdir = Path(tempfile.mkdtemp(prefix=f".run-{self.name}-", dir=parent))
        try:
            self._make_root(deadline)
            self._boot(deadline)
        except BaseException:
            self.stop()
            raise

    def _make_root(self, deadline: float) -> None:
        assert self.workdir is not None
        root = self.workdir / "root"
        upper, work = self.workdir / "upper", self.workdir / "work"
        for d in (root, upper, work):
            d.mkdir()
        opts = f"lowerdir={self.image},upperdir={upper},workdir={work}"
        mounted = subprocess.run(["mount", "-t", "overlay", "overlay", "-o", opts, str(root)],
                                 check=False, capture_output=True, timeout=30)
        if mounted.returncode == 0:
            self._overlay = True
        else:  # e.g. the cache is itself on overlayfs: copy instead
            root.rmdir()
            _run(["cp", "-a", "--reflink=auto", str(self.image), str(root)], deadline,
                 what="copying the image")
        self.root = root

    def _boot(self, deadline: float) -> None:
        assert self.workdir is not None and self.root is not None
        self._log = self.workdir / "console.log"
        nspawn = ["systemd-nspawn", "--quiet", "--boot", "--private-network", "--console=pipe",
                  "-D", str(self.root), "-M", self.name]
        if not Path("/run/systemd/system").is_dir():
            # Without systemd on the host (these machines, CI), nspawn can neither register
            # with machined nor ask for a scope unit over D-Bus: it then runs in our own cgroup
            # and puts the container in a "payload" group below it. Started from the root
            # cgroup, every container would share /payload, and each container's systemd,
            # trimming empty groups as it boots or shuts down, would remove another's freshly
            # made unit group before its process is in it ("Failed to attach to cgroup ...: No
            # such file or directory", status 219/CGROUP: about one fingerd@ spawn in a
            # thousand while other containers came and went). So nspawn starts in a group of
            # this container's own.
            nspawn[1:1] = ["--register=no", "--keep-unit"]
            self._cgroups = _own_cgroups(self.name, self.workdir / "cgroup2")
            if self._cgroups:
                # A shell that moves itself into the groups, then becomes nspawn.
                nspawn = ["/bin/sh", "-c", 'for g in $0; do echo $$ > "$g/cgroup.procs"'
                          ' || exit 1; done; exec "$@"',
                          " ".join(str(g) for g in self._cgroups), *nspawn]
        with open(self._log, "wb") as log:
            self._nspawn = subprocess.Popen(
                nspawn, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.leader = self._find_leader(deadline)
        # Wait for the boot to finish. is-system-running needs the container's systemd to
        # answer on its private socket, which takes a moment after PID 1 exists.
        state = ""
        while time.monotonic() < deadline:
            left = max(1.0, deadline - time.monotonic())
            r = self.run(["systemctl", "is-system-running", "--wait"], check=False,
                         timeout=left)
            state = r.stdout.strip()
            if state in ("running", "degraded"):
                break
            time.sleep(0.2)
        else:
            raise ContainerError(f"boot did not finish (state {state!r})\n{self.console()}")
        if state == "degraded":
            failed = self.run(["systemctl", "--failed", "--no-legend"], check=False).stdout
            raise ContainerError(f"boot degraded; failed units:\n{failed}")

    def _find_leader(self, deadline: float) -> int:
        """The container's PID 1, as a host PID: a descendant of our nspawn whose innermost
        PID-namespace PID is 1."""
        assert self._nspawn is not None
        while time.monotonic() < deadline:
            if self._nspawn.poll() is not None:
                raise ContainerError(f"systemd-nspawn exited with {self._nspawn.returncode}\n"
                                     f"{self.console()}")
            for pid in _descendants(self._nspawn.pid):
                nspids = _status_field(pid, "NSpid")
                if nspids and nspids.split()[-1] == "1" and len(nspids.split()) > 1:
                    # Wait until it exec'd systemd (before that it is nspawn's inner child).
                    with contextlib.suppress(OSError):
                        if Path(f"/proc/{pid}/comm").read_text().strip() == "systemd":
                            return pid
            time.sleep(0.1)
        raise ContainerError(f"container PID 1 did not appear\n{self.console()}")

    def stop(self, timeout: float = 60.0) -> None:
        """Power the container off, kill what we started if it will not stop, remove the copy."""
        deadline = time.monotonic() + timeout
        proc, self._nspawn = self._nspawn, None
        if proc is not None and proc.poll() is None:
            # nspawn turns SIGTERM into SIGRTMIN+3 for the container's systemd: a clean poweroff.
            proc.terminate()
            try:
                proc.wait(timeout=max(1.0, deadline - time.monotonic() - 10))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        if self.leader is not None and _alive(self.leader):
            # nspawn is gone but the container's init (which nspawn started for us) is not;
            # SIGKILL to a PID namespace's init ends every process in it.
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.leader, signal.SIGKILL)
            _wait_gone(self.leader, deadline)
        self.leader = None
        for group in self._cgroups:
            _remove_cgroup(group)
        self._cgroups = []
        if self.workdir is not None and os.path.ismount(self.workdir / "cgroup2"):
            subprocess.run(["umount", str(self.workdir / "cgroup2")], check=False,
                           capture_output=True, timeout=30)
        if self.workdir is not None:
            if self._overlay and self.root is not None:
                r = subprocess.run(["umount", str(self.root)], check=False,
                                   capture_output=True, timeout=30)
                if r.returncode != 0:
                    subprocess.run(["umount", "--lazy", str(self.root)], check=False,
                                   capture_output=True, timeout=30)
            _rmtree(self.workdir)
            self.workdir = self.root = None

    # -- driving ------------------------------------------------------------------------------
    def run(self, cmd: Sequence[str] | str, *, check: bool = True, timeout: float = 60.0,
            input: bytes | None = None) -> subprocess.CompletedProcess[str]:
        """Run ``cmd`` (argv, or a string for ``sh -c``) inside the container as root, with
        ``input`` on its stdin (else /dev/null).

        Returns the completed process with stdout/stderr decoded. Raises ContainerError on a
        timeout, and on a non-zero exit when ``check`` is true.
        """
        if self.leader is None:
            raise ContainerError("container is not running")
        argv = ["/bin/sh", "-c", cmd] if isinstance(cmd, str) else list(cmd)
        full = ["nsenter", f"--target={self.leader}", "--all", "--root", "--wd",
                "/usr/bin/env", "-i", *CONTAINER_ENV, *argv]
        try:
            raw = subprocess.run(full, capture_output=True, timeout=timeout, input=input,
                                 stdin=None if input is not None else subprocess.DEVNULL,
                                 check=False)
        except subprocess.TimeoutExpired as e:
            raise ContainerError(f"timed out after {timeout}s: {argv}\n{e.stdout!r}"
                                 f"\n{e.stderr!r}") from None
        r = subprocess.CompletedProcess(raw.args, raw.returncode,
                                        raw.stdout.decode(errors="replace"),
                                        raw.stderr.decode(errors="replace"))
        if check and r.returncode != 0:
            raise ContainerError(f"exit {r.returncode}: {argv}\nstdout:\n{r.stdout}"
                                 f"\nstderr:\n{r.stderr}")
        return r

    def copy_in(self, src: Path | str, dst: str, mode: int | None = None) -> None:
        """Copy the host file ``src`` to ``dst`` in the container (a directory if it ends in
        ``/``), with ``src``'s permission bits unless ``mode`` is given.

        The copy goes through the container's own view of its file system, so it also reaches
        the tmpfs it mounts itself (/run, /tmp), which a write into the image would miss.
        """
        if not dst.startswith("/"):
            raise ValueError(f"dst must be absolute: {dst}")
        if dst.endswith("/"):
            dst += Path(src).name
        data = Path(src).read_bytes()
        self.write_bytes(dst, data, mode if mode is not None else Path(src).stat().st_mode)

    def write_file(self, dst: str, text: str, mode: int = 0o644) -> None:
        """Write ``text`` to the absolute path ``dst`` in the container (0644: a config file
        must be readable by the service's unprivileged user)."""
        self.write_bytes(dst, text.encode(), mode)

    def write_bytes(self, dst: str, data: bytes, mode: int) -> None:
        self.run(["/bin/sh", "-c", 'mkdir -p -- "$(dirname -- "$1")" && cat > "$1"'
                  ' && chmod "$2" "$1"', "sh", dst, f"{mode & 0o7777:o}"], input=data)

    def console(self, tail: int = 4000) -> str:
        """The last ``tail`` characters of the container's console output."""
        if self._log is None or not self._log.exists():
            return ""
        return self._log.read_bytes()[-tail:].decode(errors="replace")


# -- cgroups -------------------------------------------------------------------------------------
def _own_cgroups(name: str, mountpoint: Path) -> list[Path]:
    """New, empty cgroups for one container's nspawn: in the unified hierarchy, which nspawn
    takes its own group from (mounted at ``mountpoint`` when the host has not mounted it), and
    in the name=systemd one of a legacy host. Empty where that cannot be done (not root, no
    cgroup2), and nspawn then runs where we run, as before."""
    if Path("/sys/fs/cgroup/cgroup.controllers").exists():
        roots = [Path("/sys/fs/cgroup")]  # a unified host
    else:
        mountpoint.mkdir(exist_ok=True)
        mounted = subprocess.run(["mount", "-t", "cgroup2", "cgroup2", str(mountpoint)],
                                 check=False, capture_output=True, timeout=30)
        if mounted.returncode != 0:
            return []
        roots = [mountpoint]
        if Path("/sys/fs/cgroup/systemd/cgroup.procs").exists():
            roots.append(Path("/sys/fs/cgroup/systemd"))
    groups = []
    for root in roots:
        try:
            (root / name).mkdir()
        except OSError:
            break
        groups.append(root / name)
    else:
        if all(" " not in str(g) for g in groups):
            return groups
    for group in groups:
        _remove_cgroup(group)
    return []


def _remove_cgroup(path: Path) -> None:
    """Remove the container's cgroup tree, deepest groups first (a cgroup directory goes with
    rmdir once it has no process and no child group). Leaves what still holds a process."""
    groups = [Path(d) for d, _, _ in os.walk(path)]
    for group in sorted(groups, key=lambda g: len(g.parts), reverse=True):
        with contextlib.suppress(OSError):
            group.rmdir()


# -- /proc helpers ------------------------------------------------------------------------------
def _status_field(pid: int, field: str) -> str | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return line.split(":", 1)[1].strip()
    except OSError:
        return None
    return None


def _descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            ppid = _status_field(int(entry.name), "PPid")
            if ppid is not None:
                children.setdefault(int(ppid), []).append(int(entry.name))
    out, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _alive(pid: int) -> bool:
    state = _status_field(pid, "State")
    return state is not None and not state.startswith("Z")


def _wait_gone(pid: int, deadline: float) -> None:
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)


if __name__ == "__main__":
    # `python3 tests/container.py`: build the cached image (what `make check` does before the
    # tests, so that no test downloads anything).
    reason = unavailable_reason()
    if reason:
        raise SystemExit(f"cannot build the test image: {reason}")
    print(cached_root())
