"""Per-run host resources: image files, loop devices, mount root, ports, and their cleanup.

A run owns everything it creates and records it in ``<results>/cleanup.json`` as it goes, so a
run that was SIGKILLed can be torn down later with ``./run-tests.sh --cleanup RESULTS``.
Exclusive claims on the shared names (the default ``/mnt`` mount root, a port range) are taken
with ``flock`` on files under ``/run/lock/scoutfs-harness`` and held for the life of the run, so
two runs started at once never pick the same ones.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

GiB = 1 << 30
META_IMAGE_SIZE = 16 * GiB
DATA_IMAGE_SIZE = 32 * GiB
SCRATCH_IMAGE_SIZE = 64 * GiB
"""Both scratch images (``T_EX_META_DEV``/``T_EX_DATA_DEV``): mkfs's minimum device size
(fs.format.MIN_DEVICE_BYTES_UNFORCED), so ``t_scratch_mkfs`` works without ``-A`` as on
upstream's real devices.  Sparse: only what the tests write takes space."""
LOCK_DIR = Path("/run/lock/scoutfs-harness")
DEFAULT_MNT_ROOT = Path("/mnt")
PORT_BASES = range(19700, 32000, 400)  # below the usual ephemeral range (32768-60999)
PORTS_PER_RANGE = 16

Log = Callable[[str], None]


def _nolog(msg: str) -> None:
    pass


def run_cmd(
    args: list[str], log: Log = _nolog, timeout: float = 120, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Run a command, logging it and its output; never raises on a non-zero exit.

    Output goes through temporary files, not pipes, so a daemon forked by the command that
    keeps its stdout open cannot make us wait for it."""
    log("cmd: " + " ".join(args))
    with tempfile.TemporaryFile() as fo, tempfile.TemporaryFile() as fe:
        try:
            p = subprocess.Popen(args, stdout=fo, stderr=fe, env=env, stdin=subprocess.DEVNULL)
        except OSError as e:
            log(f"  failed: {e}")
            return subprocess.CompletedProcess(args, 127, "", str(e))
        try:
            rc = p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            log(f"  timed out after {timeout}s")
            rc = 124
        fo.seek(0)
        fe.seek(0)
        out = fo.read().decode("utf-8", "replace")
        err = fe.read().decode("utf-8", "replace")
    both = out + err
    if both.strip():
        log("  " + both.rstrip().replace("\n", "\n  "))
    if rc:
        log(f"  exit status {rc}")
    return subprocess.CompletedProcess(args, rc, out, err)


# -- cleanup record ------------------------------------------------------------------------------

_RECORD_LOCK = threading.RLock()


@dataclass
class CleanupRecord:
    """What a run created, persisted to ``cleanup.json`` after every change."""

    path: Path
    pid: int = field(default_factory=os.getpid)
    mounts: list[str] = field(default_factory=list)  # mount points (ours, and scratch under tmp)
    daemon_pids: list[int] = field(default_factory=list)
    loops: list[str] = field(default_factory=list)
    images: list[str] = field(default_factory=list)
    mount_dirs: list[str] = field(default_factory=list)  # dirs we created, removed at cleanup
    run_dir: str = ""
    scan_roots: list[str] = field(default_factory=list)  # unmount anything below these
    extra_pids: list[int] = field(default_factory=list)  # e.g. fenced
    test_pgid: int = 0  # process group of the test running now

    def save(self) -> None:
        with _RECORD_LOCK:
            data = asdict(self)
            data["path"] = str(self.path)
            tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(data, indent=1))
            os.replace(tmp, self.path)

    def add(self, key: str, value: object) -> None:
        with _RECORD_LOCK:
            lst = getattr(self, key)
            if value not in lst:
                lst.append(value)
                self.save()

    def remove(self, key: str, value: object) -> None:
        with _RECORD_LOCK:
            lst = getattr(self, key)
            if value in lst:
                lst.remove(value)
                self.save()

    @classmethod
    def load(cls, path: Path) -> CleanupRecord:
        data = json.loads(path.read_text())
        data["path"] = path
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


# -- mounts table ----------------------------------------------------------------------------


def _unescape_mount(s: str) -> str:
    return (
        s.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")
    )


def proc_mounts() -> list[tuple[str, str, str]]:
    """(source, mount point, fstype) of every line of /proc/mounts."""
    out = []
    try:
        text = Path("/proc/mounts").read_text()
    except OSError:
        return out
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 3:
            out.append((_unescape_mount(parts[0]), _unescape_mount(parts[1]), parts[2]))
    return out


def is_mounted(path: str | Path) -> bool:
    p = os.path.abspath(str(path))
    return any(m == p for _, m, _ in proc_mounts())


def mounts_under(root: str | Path) -> list[str]:
    """Mount points at or below ``root``, deepest first."""
    r = os.path.abspath(str(root)).rstrip("/") + "/"
    found = [m for _, m, _ in proc_mounts() if (m + "/").startswith(r)]
    return sorted(set(found), key=lambda m: -m.count("/"))


def daemon_pids_for(mount_point: str, run_dir: str | None = None) -> list[int]:
    """Pids of the mount daemon(s) serving ``mount_point``.

    Uses ``<run dir>/pid/<escaped mount point>`` if the daemon wrote one, else scans processes
    whose command line has the mount point as an argument (the mount helper's argv)."""
    import psutil

    pids: list[int] = []
    if run_dir:
        pf = Path(run_dir) / "pid" / escape_mount_point(mount_point)
        with contextlib.suppress(OSError, ValueError):
            pid = int(pf.read_text().split()[0])
            if psutil.pid_exists(pid):
                pids.append(pid)
    if pids:
        return pids
    me = os.getpid()
    for p in psutil.process_iter(["pid", "cmdline"]):
        try:
            cmd = p.info["cmdline"] or []
        except (psutil.Error, KeyError):
            continue
        if p.info["pid"] == me or not cmd:
            continue
        if mount_point in cmd[1:] and os.path.basename(cmd[0]) not in (
            "mount",
            "umount",
            "bash",
            "sh",
        ):
            pids.append(p.info["pid"])
    return pids


def escape_mount_point(mount_point: str) -> str:
    """File name for a mount point: ``/mnt/test.0`` -> ``mnt-test.0`` (systemd style)."""
    return mount_point.strip("/").replace("-", "\\x2d").replace("/", "-") or "-"


CHECKOUT = Path(__file__).resolve().parent.parent


def helper_env(run_dir: str | None = None) -> dict[str, str]:
    """The environment of our mount/umount commands: /sbin's wrappers then run this
    checkout's helpers (``SCOUTFS_CHECKOUT``), which find the run's daemons by its run dir."""
    env = {**os.environ, "SCOUTFS_CHECKOUT": str(CHECKOUT)}
    if run_dir:
        env["SCOUTFS_RUN_DIR"] = run_dir
    return env


UNMOUNT_TIMEOUT = 60.0
"""How long each unmount of :func:`unmount_together` may take before the force path."""
FORCE_UNMOUNT_TIMEOUT = 15.0
"""How long each step of the force path (``umount -f``, ``umount -l``) may take."""


def _each_together(fn: Callable[[str], object], items: list[str], bound: float) -> None:
    """Run ``fn(item)`` for every item at once, in threads; wait at most ``bound`` seconds for
    all of them (``fn`` bounds itself: the threads are daemons only so a stuck one can't keep
    the harness from exiting)."""
    threads = [threading.Thread(target=fn, args=(it,), daemon=True) for it in items]
    for t in threads:
        t.start()
    deadline = time.monotonic() + bound
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))


def unmount_together(
    mount_points: list[str],
    pids_of: Callable[[str], list[int]],
    log: Log = _nolog,
    timeout: float = UNMOUNT_TIMEOUT,
    force: bool = True,
    env: dict[str, str] | None = None,
) -> list[str]:
    """Unmount all of ``mount_points`` at once and wait for every unmount; returns the mount
    points still mounted.

    A quorum member's unmount returns (the umount helper waits for its daemon) only once
    enough members remain for a quorum or every remaining member is leaving too, so members
    unmounted one after another wait for each other, each until its timeout.  Here every
    unmount starts together, each bounded by ``timeout``.  With ``force``, a mount whose
    unmount failed or timed out gets the force path (``umount -f``, SIGKILL of its daemons
    ``pids_of(mount point)``, lazy detach), all of them together too.  ``env``: of the
    commands (default :func:`helper_env`)."""
    todo = [m for m in dict.fromkeys(mount_points) if is_mounted(m)]
    if not todo:
        return []
    env = env if env is not None else helper_env()
    t0 = time.monotonic()
    log(f"unmounting {len(todo)} mount(s) together: {' '.join(todo)}")
    failed: list[str] = []

    def plain(m: str) -> None:
        if run_cmd(["umount", m], log, timeout=timeout, env=env).returncode != 0:
            failed.append(m)

    _each_together(plain, todo, timeout + 10)
    left = [m for m in todo if m in failed or is_mounted(m)]
    if left and force:
        log(f"forcing {len(left)} mount(s) after {time.monotonic() - t0:.1f}s: {' '.join(left)}")
        _each_together(lambda m: _force(m, pids_of(m), log, env), left,
                       3 * FORCE_UNMOUNT_TIMEOUT + 10)
    left = [m for m in todo if is_mounted(m)]
    log(f"unmounted {len(todo) - len(left)} of {len(todo)} mount(s) in "
        f"{time.monotonic() - t0:.1f}s" + (f"; still mounted: {' '.join(left)}" if left else ""))
    return left


def _force(mount_point: str, pids: list[int], log: Log, env: dict[str, str] | None) -> None:
    """The force path of one mount: ``umount -f`` (the daemon leaves without commit or
    farewell), then SIGKILL its daemons and detach what is left lazily."""
    if is_mounted(mount_point):
        run_cmd(["umount", "-f", mount_point], log, timeout=FORCE_UNMOUNT_TIMEOUT, env=env)
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
            log(f"killed daemon pid {pid} of {mount_point}")
    if is_mounted(mount_point):
        run_cmd(["umount", "-l", mount_point], log, timeout=FORCE_UNMOUNT_TIMEOUT, env=env)
    if is_mounted(mount_point):
        run_cmd(["fusermount3", "-u", "-z", mount_point], log, timeout=FORCE_UNMOUNT_TIMEOUT,
                env=env)


def force_unmount(
    mount_point: str, pids: list[int], log: Log = _nolog, env: dict[str, str] | None = None
) -> bool:
    """umount, then kill the daemon and lazily unmount if that did not work."""
    if not is_mounted(mount_point):
        return True
    env = env if env is not None else helper_env()
    if run_cmd(["umount", mount_point], log, timeout=30, env=env).returncode == 0:
        return True
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
            log(f"killed daemon pid {pid} of {mount_point}")
    if is_mounted(mount_point):
        run_cmd(["umount", "-l", mount_point], log, timeout=30, env=env)
    if is_mounted(mount_point):
        run_cmd(["fusermount3", "-u", "-z", mount_point], log, timeout=30, env=env)
    return not is_mounted(mount_point)


# -- images and loop devices -----------------------------------------------------------------


def make_sparse(path: Path, size: int, record: CleanupRecord | None = None) -> None:
    """(Re)create a sparse image file of ``size`` bytes (a hole: no blocks allocated).
    Raises OSError, naming the image, when its filesystem can't hold a file that large."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    if record:
        record.add("images", str(path))
    try:
        with open(path, "wb") as f:
            f.truncate(size)
    except OSError as e:
        raise OSError(e.errno, f"can't make the {size >> 30} GiB sparse image {path}: "
                               f"{e.strerror}") from e


def loop_supported() -> tuple[bool, str]:
    """Whether losetup can attach loop devices here (and why not)."""
    if os.geteuid() != 0:
        return False, "not running as root"
    if not shutil.which("losetup"):
        return False, "losetup not found"
    if not Path("/dev/loop-control").exists():
        return False, "/dev/loop-control missing"
    return True, ""


def attach_loop(image: Path, record: CleanupRecord | None = None, log: Log = _nolog) -> str | None:
    """``losetup --find --show --direct-io=on IMAGE``; None on failure."""
    p = run_cmd(["losetup", "--find", "--show", "--direct-io=on", str(image)], log)
    if p.returncode != 0:
        p = run_cmd(["losetup", "--find", "--show", str(image)], log)
    if p.returncode != 0 or not p.stdout.strip():
        return None
    dev = p.stdout.strip()
    if record:
        record.add("loops", dev)
    return dev


def detach_loop(dev: str, record: CleanupRecord | None = None, log: Log = _nolog) -> None:
    for _ in range(10):
        if run_cmd(["losetup", "-d", dev], log).returncode == 0:
            break
        time.sleep(0.3)
    if record:
        record.remove("loops", dev)


# -- exclusive claims: mount root, ports -----------------------------------------------------


class Claim:
    """An flock held on ``LOCK_DIR/<name>.lock`` until released."""

    def __init__(self, name: str):
        LOCK_DIR.mkdir(parents=True, exist_ok=True)
        self.path = LOCK_DIR / f"{name}.lock"
        self.fd: int | None = None

    def try_acquire(self) -> bool:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self.fd = fd
        return True

    def release(self) -> None:
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = None


def choose_mount_root(requested: Path | None, log: Log = _nolog) -> tuple[Path, Claim | None, bool]:
    """Pick the mount root: ``requested``, else ``/mnt`` when no other run holds it, else a
    unique ``/mnt/scoutfs-<pid>``.  Returns (root, claim, created)."""
    if requested is not None:
        created = not requested.exists()
        requested.mkdir(parents=True, exist_ok=True)
        return requested, None, created
    claim = Claim("mnt-root")
    if claim.try_acquire():
        if not is_mounted(DEFAULT_MNT_ROOT / "test.0"):
            return DEFAULT_MNT_ROOT, claim, False
        claim.release()
        log(f"{DEFAULT_MNT_ROOT}/test.0 is already mounted")
    root = DEFAULT_MNT_ROOT / f"scoutfs-{os.getpid()}"
    created = not root.exists()
    root.mkdir(parents=True, exist_ok=True)
    return root, None, created


def port_free(port: int) -> bool:
    """True when both TCP and UDP ``127.0.0.1:port`` can be bound."""
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        s = socket.socket(socket.AF_INET, kind)
        try:
            if kind == socket.SOCK_STREAM:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        finally:
            s.close()
    return True


def local_port_range() -> tuple[int, int]:
    try:
        lo, hi = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(lo), int(hi)
    except (OSError, ValueError):
        return 32768, 60999


def choose_ports(log: Log = _nolog) -> tuple[int, Claim | None]:
    """A free base port B: test ports B.., scratch B+100.., dev B+200.. (16 each)."""
    lo, hi = local_port_range()
    for base in PORT_BASES:
        if base + 200 + PORTS_PER_RANGE > lo and base < hi:
            continue
        claim = Claim(f"port-{base}")
        if not claim.try_acquire():
            continue
        ports = [base + off + i for off in (0, 100, 200) for i in range(PORTS_PER_RANGE)]
        if all(port_free(p) for p in ports):
            return base, claim
        log(f"ports at {base} busy, trying the next range")
        claim.release()
    raise RuntimeError("no free port range for the test cluster")


# -- tearing down a recorded run -------------------------------------------------------------


def save_daemon_logs(run_dir: Path, dest: Path) -> None:
    """Copy ``<run dir>/log/*`` into the results dir before the run dir goes away."""
    logs = run_dir / "log"
    if not logs.is_dir():
        return
    dest.mkdir(parents=True, exist_ok=True)
    for f in logs.iterdir():
        with contextlib.suppress(OSError):
            if f.is_file():
                shutil.copy2(f, dest / f.name)


def processes_of_run(run_dir: str) -> list[int]:
    """Pids of processes started for the run dir: their environment has ``SCOUTFS_RUN_DIR`` set
    to it (every mount helper, daemon, view and agent of a run inherits it; run dirs are unique
    per run).  Never this process or its ancestors."""
    import psutil

    skip = {os.getpid()}
    with contextlib.suppress(psutil.Error):
        skip |= {p.pid for p in psutil.Process().parents()}
    found = []
    for p in psutil.process_iter(["pid"]):
        if p.info["pid"] in skip:
            continue
        try:
            if p.environ().get("SCOUTFS_RUN_DIR") == run_dir:
                found.append(p.info["pid"])
        except psutil.Error:
            continue
    return found


def cleanup_from_record(record: CleanupRecord, log: Log = _nolog) -> list[str]:
    """Tear down everything a record lists; returns problems that remain."""
    problems: list[str] = []
    run_dir = record.run_dir or None
    roots = [m for m in record.mounts]
    if run_dir:
        roots += mounts_under(run_dir)
    for d in record.mount_dirs + record.scan_roots:
        roots += mounts_under(d)
    # deepest first; the mounts of one depth (a cluster's mounts) together, as a quorum's
    # members wait for each other to leave
    by_depth: dict[int, list[str]] = {}
    for m in dict.fromkeys(roots):
        by_depth.setdefault(m.count("/"), []).append(m)
    for depth in sorted(by_depth, reverse=True):
        level = by_depth[depth]
        for m in unmount_together(level, lambda m: daemon_pids_for(m, run_dir), log,
                                  timeout=30, env=helper_env(run_dir)):
            problems.append(f"could not unmount {m}")
        for m in level:
            record.remove("mounts", m)
    if record.test_pgid:
        with contextlib.suppress(OSError):
            os.killpg(record.test_pgid, signal.SIGKILL)
        record.test_pgid = 0
    for pid in list(record.daemon_pids) + list(record.extra_pids):
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    record.daemon_pids.clear()
    record.extra_pids.clear()
    if run_dir:
        # Daemons a test mounted itself are not in the record; one whose mount is already gone
        # but which hangs (say in a farewell) would keep the loop devices busy.
        for pid in processes_of_run(run_dir):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
                log(f"killed leftover process {pid} of run dir {run_dir}")
    for dev in list(record.loops):
        detach_loop(dev, record, log)
    for d in sorted(record.mount_dirs, key=lambda d: -d.count("/")):
        with contextlib.suppress(OSError):
            os.rmdir(d)
            record.remove("mount_dirs", d)
    if run_dir and Path(run_dir).exists() and not mounts_under(run_dir):
        save_daemon_logs(Path(run_dir), record.path.parent / "daemon-logs")
        shutil.rmtree(run_dir, ignore_errors=True)
    link = record.path.parent / "run-dir"
    if link.is_symlink() and not link.exists():
        link.unlink()
    record.save()
    return problems
