"""Capture what Debian's ``finger`` prints for the host described in tests/data/bsdfinger/host.json.

    /usr/bin/python3 tests/capture_finger.py [OUTDIR]    (as root; default tests/data/bsdfinger)

The accounts, their home directories and dot files, terminals (permissions, and access times
that make the idle times), a utmp written by glibc's pututline(), a lastlog and mail spools are
staged in a temporary directory, then bind-mounted over /etc/passwd, /home, /run, /var/log,
/var/mail and /dev/pts in a private mount namespace, where the real ``finger`` runs with its
clock frozen at the host's ``now`` (``faketime``, Debian package faketime), TZ=UTC and LC_ALL=C.
It writes, for every account, ``finger-l-NAME.txt`` (``finger -m -l NAME``) and
``finger-s-NAME.txt`` (``finger -m -s NAME``), and the listings ``finger.txt`` (``finger``)
and ``finger-l.txt`` (``finger -l``). The output is the same on every run, so
tests/test_bsdfinger.py both checks the formatter against the committed files and, as root,
runs this again to check that they are still what finger prints.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from login_records import utmp_entry, write_lastlog, write_utmp  # tests/ is the script's directory

DATA = Path(__file__).resolve().parent / "data" / "bsdfinger"
HOST = DATA / "host.json"

SCRIPT = r"""
set -eu
S=$1 O=$2
mount --bind "$S/passwd" /etc/passwd
for pair in home:/home run:/run log:/var/log mail:/var/mail pts:/dev/pts; do
    mount --bind "$S/${pair%%:*}" "${pair#*:}"
done
cd /
fake() { TZ=UTC LC_ALL=C NO_FAKE_STAT=1 timeout 20 faketime -f "$NOW" "$@"; }
for u in $USERS; do
    fake finger -m -l "$u" > "$O/finger-l-$u.txt"
    fake finger -m -s "$u" > "$O/finger-s-$u.txt"
done
fake finger > "$O/finger.txt"
fake finger -l > "$O/finger-l.txt"
"""


def load_host(path: Path = HOST) -> dict[str, object]:
    host: dict[str, object] = json.loads(path.read_text(encoding="utf-8"))
    return host


def stage(host: dict[str, object], stage_dir: Path) -> None:
    """The files to bind-mount over the real paths, as ``host`` describes them."""
    now = int(host["now"])  # type: ignore[call-overload]
    accounts: list[dict[str, object]] = host["accounts"]  # type: ignore[assignment]
    names = {str(a["name"]) for a in accounts}
    for sub in ("home", "run", "log", "mail", "pts"):
        (stage_dir / sub).mkdir(mode=0o755)
    lines = [line for line in Path("/etc/passwd").read_text().splitlines()
             if line.split(":")[0] not in names]
    for account in accounts:
        name = str(account["name"])
        lines.append(f"{name}:x:{account['uid']}:{account['uid']}:{account['gecos']}:"
                     f"/home/{name}:{account['shell']}")
        home = stage_dir / "home" / name
        home.mkdir(mode=0o755)
        for file_name, text in dict(account["files"]).items():  # type: ignore[call-overload]
            (home / file_name).write_text(text, encoding="utf-8")
            (home / file_name).chmod(0o644)
    (stage_dir / "passwd").write_text("\n".join(lines) + "\n")
    for line, tty in dict(host["ttys"]).items():  # type: ignore[call-overload]
        path = stage_dir / "pts" / line.removeprefix("pts/")
        path.touch()
        path.chmod(int(tty["mode"], 8))
        os.utime(path, (now - tty["idle"], now - tty["idle"]))
    write_utmp(stage_dir / "run" / "utmp", [
        utmp_entry(u["user"], u["line"], now - u["ago"], u["host"])
        for u in host["utmp"]])  # type: ignore[attr-defined]
    (stage_dir / "run" / "utmp").chmod(0o644)
    write_lastlog(stage_dir / "log" / "lastlog", {
        r["uid"]: (now - r["ago"], r["line"], r["host"])
        for r in host["lastlog"]})  # type: ignore[attr-defined]
    for name, times in dict(host["mail"]).items():  # type: ignore[call-overload]
        spool = stage_dir / "mail" / name
        if times.get("empty"):
            spool.touch()
        else:
            spool.write_text("From somebody\n")
            os.utime(spool, (now - times["read_ago"], now - times["received_ago"]))


def capture(out_dir: Path, host_file: Path = HOST) -> list[Path]:
    """Stage the host, run finger in a private mount namespace, write its output into
    ``out_dir``; the files written."""
    if os.geteuid() != 0:
        raise SystemExit("capture_finger.py: needs root (mount namespace, bind mounts)")
    for tool in ("finger", "faketime", "unshare"):
        if shutil.which(tool) is None:
            raise SystemExit(f"capture_finger.py: needs {tool}")
    host = load_host(host_file)
    users = " ".join(str(a["name"]) for a in host["accounts"])  # type: ignore[attr-defined]
    frozen = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(int(host["now"])))  # type: ignore[call-overload]
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="fingerd-capture-") as tmp:
        stage_dir = Path(tmp)
        stage_dir.chmod(0o755)
        stage(host, stage_dir)
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "USERS": users, "NOW": frozen}
        proc = subprocess.run(["unshare", "--mount", "--propagation", "private", "--",
                               "/bin/sh", "-c", SCRIPT, "sh", str(stage_dir), str(out_dir)],
                              capture_output=True, text=True, env=env, timeout=300)
        if proc.returncode != 0:
            raise RuntimeError(f"capture failed ({proc.returncode}): {proc.stderr}")
    return sorted(out_dir.glob("finger*.txt"))


if __name__ == "__main__":
    written = capture(Path(sys.argv[1]) if len(sys.argv) > 1 else DATA)
    print(f"wrote {len(written)} files into {written[0].parent}")
