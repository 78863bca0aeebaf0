"""Shared helpers and fixtures of the mounted tests (real daemons through FUSE).

`Env` makes volumes with `scoutfs mkfs -A` on sparse image files and mounts them with the
real daemon; the `env` fixture also runs, as the harness does, the sysfs view
(``scoutfs-sysfsd``, mounted at ``<root>/sys`` = ``SCOUTFS_SYSFS_ROOT`` of every process the
test starts) and the fencing agent (``scoutfs-fenced`` with tests/fenced-local-force-unmount.sh,
logging to ``<root>/fenced.log``: a server fences a mount that died before it reclaims it),
and unmounts and kills what a test started, those two included, even when it fails.
Test modules import the helpers with ``from conftest import ...``.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PY = sys.executable
FENCE_SCRIPT = REPO / "tests" / "fenced-local-force-unmount.sh"


def _fuse_usable() -> bool:
    if os.geteuid() != 0 or not os.path.exists("/dev/fuse"):
        return False
    try:
        os.close(os.open("/dev/fuse", os.O_RDWR))
    except OSError:
        return False
    return True


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Env:
    def __init__(self, root: Path):
        self.root = root
        self.run = root / "run"
        self.sys = root / "sys"  # the sysfs view's root
        self.env = dict(os.environ, PYTHONPATH=str(REPO), SCOUTFS_RUN_DIR=str(self.run),
                        SCOUTFS_SYSFS_ROOT=str(self.sys))
        self.mounts: list[Path] = []
        self.view: subprocess.Popen | None = None
        self.fenced: subprocess.Popen | None = None

    # -- the sysfs view
    def start_view(self, timeout: float | None = None) -> None:
        """Mount the sysfs view at `self.sys` and wait until it is mounted."""
        args = [PY, "-m", "sysview", "--root", str(self.sys), "--run-dir", str(self.run)]
        if timeout is not None:
            args += ["--timeout", str(timeout)]
        log = self.root / "sysfsd.log"
        with open(log, "a") as f:
            self.view = subprocess.Popen(args, env=self.env, stdout=f, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 30
        while not is_mounted(self.sys):
            assert self.view.poll() is None, f"the sysfs view exited: {log.read_text()}"
            assert time.monotonic() < deadline, f"the sysfs view did not mount: {log.read_text()}"
            time.sleep(0.02)

    def stop_view(self) -> None:
        """SIGTERM the view (it unmounts itself); detach and kill it if it does not go."""
        p, self.view = self.view, None
        if p is not None and p.poll() is None:
            p.terminate()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(10)
        if is_mounted(self.sys):
            subprocess.run(["umount", "-l", str(self.sys)], capture_output=True, timeout=30)

    # -- the fencing agent
    def start_fenced(self, delay: float = 1.0) -> None:
        conf = self.root / "scoutfs-fenced.conf"
        conf.write_text(f"SCOUTFS_FENCED_DELAY={delay}\nSCOUTFS_FENCED_RUN={FENCE_SCRIPT}\n"
                        'SCOUTFS_FENCED_RUN_ARGS="ignored run args"\n')
        self.env["SCOUTFS_FENCED_CONFIG_FILE"] = str(conf)
        with open(self.root / "fenced.log", "a") as f:
            self.fenced = subprocess.Popen([PY, "-m", "fs.cli.fenced"], env=self.env, stdout=f,
                                           stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                           start_new_session=True)

    def stop_fenced(self) -> None:
        p, self.fenced = self.fenced, None
        if p is not None and p.poll() is None:
            p.terminate()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(10)

    def ping(self, mnt: Path) -> dict:
        """The mount daemon's answer to ``ping`` (fsid, rid, pid), asked in-process over its
        control socket (faster than the CLI's start-up)."""
        import json

        from fs.control import socket_path

        st = os.stat(mnt)
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(30)
            s.connect(socket_path(os.major(st.st_dev), os.minor(st.st_dev), str(self.run)))
            s.sendall(b'{"op": "ping"}\n')
            buf = b""
            while b"\n" not in buf:
                chunk = s.recv(4096)
                assert chunk, "the daemon closed the control connection"
                buf += chunk
        return json.loads(buf)

    def ident(self, mnt: Path) -> str:
        """``f.<fsid6>.r.<rid6>`` of a mount (t_ident_from_mnt)."""
        from fs.sysfs import ident

        r = self.ping(mnt)
        return ident(int(r["fsid"]), int(r["rid"]))

    def sysfs_path(self, mnt: Path) -> Path:
        return self.sys / "fs" / "scoutfs" / self.ident(mnt)

    def debugfs_path(self, mnt: Path) -> Path:
        return self.sys / "kernel" / "debug" / "scoutfs" / self.ident(mnt)

    def scoutfs(self, *args, cwd=None, check=False, timeout=60, **kw):
        p = subprocess.run([PY, "-m", "fs.cli.main", *map(str, args)], env=self.env, cwd=cwd,
                           capture_output=True, text=True, timeout=timeout, **kw)
        if check:
            assert p.returncode == 0, (p.stdout, p.stderr)
        return p

    def mkfs(self, name: str, size: int = 256 << 20) -> tuple[Path, Path]:
        meta, data = self.root / f"{name}.meta", self.root / f"{name}.data"
        for p in (meta, data):
            with open(p, "wb") as f:
                f.truncate(size)
        self.scoutfs("mkfs", "-A", "-f", "-Q", f"0,127.0.0.1,{_free_port()}", meta, data,
                     check=True)
        return meta, data

    def mount(self, meta, data, mnt: Path, extra: str = "", **kw):
        mnt.mkdir(exist_ok=True)
        self.mounts.append(mnt)
        opts = f"metadev_path={meta},quorum_slot_nr=0" + (f",{extra}" if extra else "")
        return self.scoutfs("mount", "-o", opts, data, mnt, **kw)

    def daemon_pids(self) -> list[int]:
        """Processes whose command line mentions this test's directory (our daemons)."""
        out = []
        for d in os.listdir("/proc"):
            if not d.isdigit() or int(d) == os.getpid():
                continue
            try:
                cmd = Path(f"/proc/{d}/cmdline").read_bytes()
            except OSError:
                continue
            if str(self.root).encode() in cmd and b"fs.cli.main" in cmd:
                out.append(int(d))
        return out

    def cleanup(self) -> None:
        try:
            self.stop_fenced()
            for mnt in reversed(self.mounts):
                if is_mounted(mnt):
                    subprocess.run(["umount", str(mnt)], capture_output=True, timeout=30)
                if is_mounted(mnt):
                    subprocess.run(["umount", "-l", str(mnt)], capture_output=True, timeout=30)
            deadline = time.monotonic() + 10
            while self.daemon_pids() and time.monotonic() < deadline:
                time.sleep(0.1)
            for pid in self.daemon_pids():
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        finally:
            self.stop_view()


def mountinfo_line(mnt: Path) -> list[str] | None:
    found = None
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        parts = line.split()
        if parts[4] == str(mnt):
            found = parts
    return found


def is_mounted(mnt: Path) -> bool:
    return mountinfo_line(mnt) is not None


def wait_gone(pid: int, timeout: float = 15) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not os.path.exists(f"/proc/{pid}"):
            return True
        try:
            if Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z":
                return True
        except OSError:
            return True
        time.sleep(0.05)
    return False


@pytest.fixture
def root_dir():
    """A world-traversable work dir (pytest's tmp_path is 0700: other users could not reach
    the mount point, which would make every permission check pass for the wrong reason)."""
    d = Path(tempfile.mkdtemp(prefix="scoutfs-mt-", dir="/tmp"))
    os.chmod(d, 0o755)
    yield d
    if not any(is_mounted(p) for p in d.iterdir()):
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def env(root_dir):
    e = Env(root_dir)
    try:
        e.start_view()
        e.start_fenced()
        yield e
    finally:
        e.cleanup()


@pytest.fixture
def mounted(env):
    meta, data = env.mkfs("vol")
    mnt = env.root / "mnt"
    p = env.mount(meta, data, mnt)
    assert p.returncode == 0, p.stderr
    assert is_mounted(mnt)
    return env, mnt, meta, data


def daemon_pid(env: Env, mnt: Path) -> int:
    majmin = mountinfo_line(mnt)[2]
    return int((env.run / "pid" / f"{majmin}.pid").read_text())
