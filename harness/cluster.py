"""The test cluster: devices, mkfs, N mount daemons, unmount, force unmount, crash.

One ``Cluster`` is one isolated volume on this host: its own images (or the given devices),
one meta and one data loop device per mount over the same images, a mount root, a port range and
a run dir (``SCOUTFS_RUN_DIR``: daemon logs, control sockets, the sysfs view, pid files).

Besides the mount daemons a cluster runs two processes of its own, started before the first
mount and stopped after the last unmount: the sysfs view (``scoutfs-sysfsd``, a FUSE mount at
``<run dir>/sys``, exported as ``T_SYSFS_ROOT``/``SCOUTFS_SYSFS_ROOT``) and the fencing agent
(``scoutfs-fenced``, logging to ``fenced.log``).  Both are recorded for ``--cleanup`` (the
view's mount lies under the run dir, which cleanup unmounts; both pids are in extra_pids).

``ClusterConfig(fake=True)`` makes mounts plain directories and runs no mkfs/mount, so the
harness's own unit tests can drive the engine without root or FUSE.  It is a Python-only test
double: no command-line option or environment variable selects it.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from harness import devices as dv
from harness.devices import CleanupRecord, Log, run_cmd

DEFAULT_NR_MOUNTS = 3
"""Mounts started when ``-n`` is not given: three, all quorum members (``-q`` default min(n, 3))."""

REPO = Path(__file__).resolve().parent.parent
RUN_DIR_BASE = Path("/run/scoutfs")
HELPERS = ("/sbin/mount.scoutfs", "/sbin/umount.fuse.scoutfs")
"""The bootstrap's wrappers: they run ``$SCOUTFS_CHECKOUT``'s helpers (see process_env)."""

ERROR_RE = re.compile(r"\b(ERROR|CRITICAL)\b|Traceback \(most recent call last\)")
"""Daemon log lines that fail a test unless an expected-message filter drops them."""

EXPECTED_LOG_MESSAGES = [
    # the daemons' equivalents of what t_filter_dmesg drops: connection churn, fencing,
    # recovery, rejected mount options and devices (negative tests provoke these)
    r"Required mount option",
    r"Unknown or malformed option",
    r"meta_super META flag not set",
    r"could not open metadev",
    r"invalid quorum_heartbeat_timeout_ms",
    r"error reading super block",
    r"fenc(e|ing)",
    r"forced unmount",
    r"reconnect",
    r"recovery time",
    r"quorum",
]


def scoutfs_cmd() -> str:
    """The scoutfs CLI: ``$HARNESS_SCOUTFS``, the venv's, else whatever is on PATH."""
    if os.environ.get("HARNESS_SCOUTFS"):
        return os.environ["HARNESS_SCOUTFS"]
    p = REPO / ".venv" / "bin" / "scoutfs"
    return str(p) if p.exists() else (shutil.which("scoutfs") or "scoutfs")


def last_line(p: subprocess.CompletedProcess) -> str:
    """The last non-empty output line of a command (full output is in run.log)."""
    lines = [line for line in ((p.stderr or "") + (p.stdout or "")).splitlines() if line.strip()]
    return lines[-1].strip() if lines else "no output"


@dataclass
class ClusterConfig:
    results: Path
    nr_mounts: int = DEFAULT_NR_MOUNTS
    quorum: int | None = None
    mount_opts: list[str] = field(default_factory=list)
    format_version: int | None = None
    meta_dev: Path | None = None  # -M; None: create images
    data_dev: Path | None = None  # -D
    ex_meta_dev: Path | None = None  # -f
    ex_data_dev: Path | None = None  # -e
    mkfs: bool = True  # always when images are created
    mnt_root: Path | None = None
    fake: bool = False  # plain-directory mounts, for the harness's unit tests (Python only)
    use_loops: bool = True
    mount_timeout: float = 120.0


class ClusterError(Exception):
    """Setting up or restoring the cluster failed."""


class Cluster:
    """A volume with N mounts on this host, owned by one run."""

    def __init__(self, cfg: ClusterConfig, log: Log):
        self.cfg = cfg
        self.log = log
        self.fake = cfg.fake
        self.n = cfg.nr_mounts
        self.q = cfg.quorum if cfg.quorum is not None else min(self.n, 3)
        self.record = CleanupRecord(cfg.results / "cleanup.json")
        self.claims: list[dv.Claim] = []
        self.mount_points: list[str] = []
        self.meta_devs: list[str] = []  # per mount
        self.data_devs: list[str] = []
        self.options: list[str] = []  # "-o metadev_path=...,quorum_slot_nr=i..."
        self.meta_device = ""
        self.data_device = ""
        self.ex_meta_dev = ""
        self.ex_data_dev = ""
        self.loops_ok = False
        self.port_base = 19700
        self.run_dir = Path()
        self.mnt_root = Path()
        self.fenced: subprocess.Popen | None = None
        self.sysview: subprocess.Popen | None = None
        self._fake_mounted: set[int] = set()
        self.up = False

    # -- derived
    @property
    def test_port(self) -> int:
        return self.port_base

    @property
    def scratch_port(self) -> int:
        return self.port_base + 100

    @property
    def dev_port(self) -> int:
        return self.port_base + 200

    @property
    def sysfs_root(self) -> Path:
        return self.run_dir / "sys"

    def process_env(self) -> dict[str, str]:
        """Variables every process of this run (tests, mount helpers, CLI) gets.

        ``SCOUTFS_CHECKOUT`` makes /sbin/mount.scoutfs and /sbin/umount.fuse.scoutfs (the
        bootstrap's wrappers, shared by every checkout on the host) run this checkout's
        helpers, whoever installed them."""
        return {
            "SCOUTFS_CHECKOUT": str(REPO),
            "SCOUTFS_RUN_DIR": str(self.run_dir),
            "SCOUTFS_SYSFS_ROOT": str(self.sysfs_root),
            "SCOUTFS_FENCED_CONFIG_FILE": str(self.cfg.results / "scoutfs-fenced.conf"),
        }

    def env(self) -> dict[str, str]:
        """The cluster part of the T_* environment (spec §1.13)."""
        e = {
            "T_NR_MOUNTS": str(self.n),
            "T_QUORUM": str(self.q),
            "T_MS": " ".join(self.mount_points),
            "T_OS": " ".join(self.options),
            "T_MBS": " ".join(self.meta_devs),
            "T_DBS": " ".join(self.data_devs),
            "T_META_DEVICE": self.meta_device,
            "T_DATA_DEVICE": self.data_device,
            "T_EX_META_DEV": self.ex_meta_dev,
            "T_EX_DATA_DEV": self.ex_data_dev,
            "T_TEST_PORT": str(self.test_port),
            "T_SCRATCH_PORT": str(self.scratch_port),
            "T_DEV_PORT": str(self.dev_port),
            "T_PORT_START": str(self.port_base),
            "T_MNT_ROOT": str(self.mnt_root),
            "T_SYSFS_ROOT": str(self.sysfs_root),
            "T_RUN_DIR": str(self.run_dir),
            "T_FENCED_LOG": str(self.cfg.results / "fenced.log"),
            "T_MNT_OPTIONS": ",".join(self.cfg.mount_opts),
        }
        for i in range(self.n):
            e[f"T_M{i}"] = self.mount_points[i]
            e[f"T_O{i}"] = self.options[i]
            e[f"T_MB{i}"] = self.meta_devs[i]
            e[f"T_DB{i}"] = self.data_devs[i]
        e.update(self.process_env())
        return e

    # -- setup
    def setup(self, mount: bool = True) -> None:
        """Claim resources, make devices, mkfs, and mount every mount."""
        res = self.cfg.results
        res.mkdir(parents=True, exist_ok=True)
        self.record.save()
        self._make_run_dir()
        self.port_base, claim = dv.choose_ports(self.log)
        if claim:
            self.claims.append(claim)
        self.log(f"ports: test {self.test_port}, scratch {self.scratch_port}, dev {self.dev_port}")
        self._choose_mnt_root()
        self._make_devices()
        self._write_fenced_conf()
        if self.fake:
            self.log("fake cluster: mounts are plain directories, no mkfs or mount")
        else:
            self._check_helpers()
            if self.cfg.mkfs:
                self.mkfs()
        self.up = True
        # the view and the agent first, as upstream starts fenced before mounting: a mount
        # that has to fence a leftover leader needs both
        self._start_sysview()
        self._start_fenced()
        if mount:
            self.mount_all()

    def _check_helpers(self) -> None:
        """Warn when /sbin's mount helpers ignore SCOUTFS_CHECKOUT (an older bootstrap's:
        they run the code of whichever checkout installed them)."""
        for h in HELPERS:
            try:
                text = Path(h).read_text(errors="replace")
            except OSError:
                continue
            if "SCOUTFS_CHECKOUT" not in text:
                msg = (f"[== {h} ignores SCOUTFS_CHECKOUT (an older scripts/bootstrap's): "
                       "mounts may run another checkout's code; run scripts/bootstrap ==]")
                print(msg, flush=True)
                self.log(msg)

    def _make_run_dir(self) -> None:
        rid = f"run-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        try:
            RUN_DIR_BASE.mkdir(parents=True, exist_ok=True)
            self.run_dir = RUN_DIR_BASE / rid
            self.run_dir.mkdir()
        except OSError:
            self.run_dir = self.cfg.results / rid
            self.run_dir.mkdir(parents=True)
        for sub in ("log", "ctl", "pid", "sys"):
            (self.run_dir / sub).mkdir(exist_ok=True)
        self.record.run_dir = str(self.run_dir)
        self.record.scan_roots = [str(self.cfg.results / "tmp")]
        self.record.save()
        link = self.cfg.results / "run-dir"
        with contextlib.suppress(OSError):
            if link.is_symlink() or link.exists():
                link.unlink()
            link.symlink_to(self.run_dir)
        self.log(f"run dir {self.run_dir}")

    def _choose_mnt_root(self) -> None:
        if self.fake:
            self.mnt_root = self.cfg.mnt_root or self.cfg.results / "fake-mnt"
            self.mnt_root.mkdir(parents=True, exist_ok=True)
        else:
            root, claim, created = dv.choose_mount_root(self.cfg.mnt_root, self.log)
            self.mnt_root = root
            if claim:
                self.claims.append(claim)
            if created:
                self.record.add("mount_dirs", str(root))
        for i in range(self.n):
            mp = self.mnt_root / f"test.{i}"
            if not mp.exists():
                mp.mkdir(parents=True)
                self.record.add("mount_dirs", str(mp))
            self.mount_points.append(str(mp))
        self.log(f"mount root {self.mnt_root}")

    def _make_devices(self) -> None:
        res = self.cfg.results
        devdir = res / "devices"
        if self.fake:
            devdir.mkdir(exist_ok=True)
            self.meta_device, self.data_device = str(devdir / "meta.img"), str(devdir / "data.img")
            self.ex_meta_dev = str(devdir / "ex-meta.img")
            self.ex_data_dev = str(devdir / "ex-data.img")
            self.meta_devs = [self.meta_device] * self.n
            self.data_devs = [self.data_device] * self.n
            self._make_options()
            return
        c = self.cfg
        if (c.meta_dev is None) != (c.data_dev is None):
            raise ClusterError("-M and -D must be given together")
        if c.meta_dev is None:
            meta_img, data_img = devdir / "meta.img", devdir / "data.img"
            dv.make_sparse(meta_img, dv.META_IMAGE_SIZE, self.record)
            dv.make_sparse(data_img, dv.DATA_IMAGE_SIZE, self.record)
            self.cfg.mkfs = True
        else:
            meta_img, data_img = c.meta_dev.resolve(), c.data_dev.resolve()  # type: ignore[union-attr]
        if c.ex_meta_dev is None or c.ex_data_dev is None:
            # mkfs's minimum size, so t_scratch_mkfs needs no -A
            ex_meta, ex_data = devdir / "ex-meta.img", devdir / "ex-data.img"
            dv.make_sparse(ex_meta, dv.SCRATCH_IMAGE_SIZE, self.record)
            dv.make_sparse(ex_data, dv.SCRATCH_IMAGE_SIZE, self.record)
        else:
            ex_meta, ex_data = c.ex_meta_dev.resolve(), c.ex_data_dev.resolve()

        ok, why = dv.loop_supported() if c.use_loops else (False, "disabled")
        self.loops_ok = ok

        def alias(path: Path) -> str:
            # a loop device over an image file; block devices are shared directly
            if not self.loops_ok or not path.is_file():
                return str(path)
            dev = dv.attach_loop(path, self.record, self.log)
            if dev is None:
                raise ClusterError(f"losetup failed for {path}")
            return dev

        if ok:
            try:
                self.meta_device, self.data_device = alias(meta_img), alias(data_img)
            except ClusterError as e:
                ok, why = False, str(e)
                self.loops_ok = False
        if not self.loops_ok:
            msg = f"[== loop devices unavailable ({why}), using plain image files ==]"
            print(msg, flush=True)
            self.log(msg)
            self.meta_device, self.data_device = str(meta_img), str(data_img)
        self.ex_meta_dev, self.ex_data_dev = alias(ex_meta), alias(ex_data)
        for _ in range(self.n):
            self.meta_devs.append(alias(meta_img))
            self.data_devs.append(alias(data_img))
        self._make_options()

    def _make_options(self) -> None:
        extra = "".join("," + o for o in self.cfg.mount_opts)
        self.options = []
        for i in range(self.n):
            o = f"-o metadev_path={self.meta_devs[i]}"
            if i < self.q:
                o += f",quorum_slot_nr={i}"
            self.options.append(o + extra)

    def _write_fenced_conf(self) -> None:
        script = REPO / "tests" / "fenced-local-force-unmount.sh"
        (self.cfg.results / "scoutfs-fenced.conf").write_text(
            f"SCOUTFS_FENCED_DELAY=1\nSCOUTFS_FENCED_RUN={script}\n"
            'SCOUTFS_FENCED_RUN_ARGS="ignored run args"\n'
        )
        (self.cfg.results / "fenced.log").touch()

    def _start_fenced(self) -> None:
        exe = REPO / ".venv" / "bin" / "scoutfs-fenced"
        if self.fake or not exe.exists():
            return
        env = {**os.environ, **self.process_env()}
        log = open(self.cfg.results / "fenced.log", "a")  # noqa: SIM115
        self.fenced = subprocess.Popen(
            [str(exe)], stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        log.close()
        self.record.add("extra_pids", self.fenced.pid)

    def sysview_cmd(self) -> list[str]:
        """The sysfs view's command line (it names the root, so a leftover view is found by
        `dv.daemon_pids_for` of that mount point)."""
        args = ["--root", str(self.sysfs_root), "--run-dir", str(self.run_dir)]
        exe = REPO / ".venv" / "bin" / "scoutfs-sysfsd"
        if exe.exists():
            return [str(exe), *args]
        return [sys.executable, "-m", "sysview", *args]

    def _start_sysview(self) -> None:
        """Mount the sysfs view at ``<run dir>/sys`` and wait until it is mounted."""
        if self.fake:
            return
        root = str(self.sysfs_root)
        # not in record.mounts: it lies under the run dir, which cleanup unmounts anyway
        env = {**os.environ, **self.process_env()}
        env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"]
                                         if env.get("PYTHONPATH") else "")
        logpath = self.cfg.results / "sysfsd.log"
        cmd = self.sysview_cmd()
        self.log("cmd: " + " ".join(cmd))
        with open(logpath, "a") as log:
            self.sysview = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                                            stdin=subprocess.DEVNULL, start_new_session=True)
        self.record.add("extra_pids", self.sysview.pid)
        deadline = time.monotonic() + 30
        while not dv.is_mounted(root):
            if self.sysview.poll() is not None or time.monotonic() > deadline:
                tail = logpath.read_text(errors="replace").strip().splitlines()[-1:] or [""]
                raise ClusterError(f"the sysfs view did not mount at {root}: {tail[0]}")
            time.sleep(0.05)
        self.log(f"sysfs view at {root} (pid {self.sysview.pid})")

    def _stop_process(self, p: subprocess.Popen | None, what: str, wait: float) -> None:
        """SIGTERM one of our processes and wait for it; SIGKILL if it does not go."""
        if p is None:
            return
        if p.poll() is None:
            with contextlib.suppress(OSError):
                p.terminate()
            try:
                p.wait(wait)
            except subprocess.TimeoutExpired:
                self.log(f"{what} (pid {p.pid}) ignored SIGTERM: killing it")
                p.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    p.wait(5)
        if p.poll() is not None:
            self.record.remove("extra_pids", p.pid)

    def _stop_sysview(self) -> list[str]:
        """Stop the view (it unmounts itself); detach its mount if it could not."""
        if self.fake or self.sysview is None:
            return []
        root = str(self.sysfs_root)
        self._stop_process(self.sysview, "the sysfs view", 10)
        self.sysview = None
        if dv.is_mounted(root):
            run_cmd(["umount", "-l", root], self.log, timeout=30)
        if dv.is_mounted(root):
            return [f"could not unmount the sysfs view at {root}"]
        return []

    def mkfs(self) -> None:
        args = [scoutfs_cmd(), "mkfs", "-f", "-A"]
        for i in range(self.q):
            args += ["-Q", f"{i},127.0.0.1,{self.test_port + i}"]
        if self.cfg.format_version is not None:
            args += ["-V", str(self.cfg.format_version)]
        args += [self.meta_device, self.data_device]
        p = run_cmd(args, self.log, timeout=600)
        if p.returncode != 0:
            raise ClusterError(f"mkfs failed (exit {p.returncode}): {last_line(p)}")

    # -- mounts
    def mount_cmd(self, i: int) -> list[str]:
        opts = self.options[i][3:]  # drop "-o "
        helper_override = os.environ.get("HARNESS_MOUNT_HELPER")
        if helper_override:
            return [helper_override, self.data_devs[i], self.mount_points[i], "-o", opts]
        if Path("/sbin/mount.scoutfs").exists():
            return ["mount", "-t", "scoutfs", "-o", opts, self.data_devs[i], self.mount_points[i]]
        helper = REPO / ".venv" / "bin" / "mount.scoutfs"
        return [str(helper), self.data_devs[i], self.mount_points[i], "-o", opts]

    def mount(self, i: int) -> None:
        if self.fake:
            Path(self.mount_points[i]).mkdir(parents=True, exist_ok=True)
            self._fake_mounted.add(i)
            return
        mp = self.mount_points[i]
        self.record.add("mounts", mp)
        p = run_cmd(self.mount_cmd(i), self.log, timeout=self.cfg.mount_timeout,
                    env=self.helper_env())
        if p.returncode != 0:
            raise ClusterError(f"mount {i} failed (exit {p.returncode}): {last_line(p)}")
        for pid in self.daemon_pids(i):
            self.record.add("daemon_pids", pid)

    def mount_all(self) -> None:
        """Mount every mount concurrently (a quorum must be able to form)."""
        errors: list[str] = []

        def one(i: int) -> None:
            try:
                self.mount(i)
            except ClusterError as e:
                errors.append(str(e))

        threads = [threading.Thread(target=one, args=(i,)) for i in range(self.n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise ClusterError("; ".join(errors))

    def is_mounted(self, i: int) -> bool:
        if self.fake:
            return i in self._fake_mounted
        return dv.is_mounted(self.mount_points[i])

    def answering(self, i: int, timeout: float = 10.0) -> tuple[bool, str]:
        """Whether the mount answers statvfs within ``timeout`` seconds."""
        result: list[str] = []

        def probe() -> None:
            try:
                os.statvfs(self.mount_points[i])
                result.append("")
            except OSError as e:
                result.append(f"statvfs failed: {e}")

        t = threading.Thread(target=probe, daemon=True)
        t.start()
        t.join(timeout)
        if not result:
            return False, f"statvfs did not answer within {timeout:.0f}s"
        return (not result[0]), result[0]

    def daemon_pids(self, i: int) -> list[int]:
        if self.fake:
            return []
        return dv.daemon_pids_for(self.mount_points[i], str(self.run_dir))

    def umount(self, i: int) -> bool:
        if self.fake:
            self._fake_mounted.discard(i)
            return True
        return run_cmd(["umount", self.mount_points[i]], self.log, timeout=60,
                       env=self.helper_env()).returncode == 0

    def umount_all(self, timeout: float = dv.UNMOUNT_TIMEOUT, force: bool = True) -> list[int]:
        """Unmount every mounted mount together and wait for all (quorum members wait for
        each other to leave: one at a time, each would wait out its timeout); with ``force``,
        those not unmounted within ``timeout`` are forced.  Returns the mounts still mounted."""
        if self.fake:
            self._fake_mounted.clear()
            return []
        left = dv.unmount_together(self.mount_points, self.daemon_pids_of, self.log,
                                   timeout=timeout, force=force, env=self.helper_env())
        return [self.mount_points.index(m) for m in left]

    def helper_env(self) -> dict[str, str]:
        """The environment of the harness's own mount/umount commands."""
        return {**os.environ, **self.process_env()}

    def daemon_pids_of(self, mount_point: str) -> list[int]:
        return dv.daemon_pids_for(mount_point, str(self.run_dir))

    def force_umount(self, i: int) -> bool:
        if self.fake:
            self._fake_mounted.discard(i)
            return True
        return dv.force_unmount(self.mount_points[i], self.daemon_pids(i), self.log,
                                self.helper_env())

    def crash(self, i: int) -> None:
        """kill -9 the mount's daemon, then detach the dead FUSE mount."""
        if self.fake:
            self._fake_mounted.discard(i)
            return
        for pid in self.daemon_pids(i):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
                self.log(f"crashed mount {i}: killed daemon {pid}")
        time.sleep(0.2)
        if dv.is_mounted(self.mount_points[i]):
            run_cmd(["umount", "-l", self.mount_points[i]], self.log, env=self.helper_env())

    # -- daemon logs
    def devices(self) -> list[str]:
        """Every device path of ours: per-mount meta and data devices, the volume's and the
        scratch volume's (the kernel log names a refused mount by its device)."""
        return [*self.meta_devs, *self.data_devs, self.meta_device, self.data_device,
                self.ex_meta_dev, self.ex_data_dev]

    def log_offsets(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for f in sorted((self.run_dir / "log").glob("*.log")):
            with contextlib.suppress(OSError):
                out[str(f)] = f.stat().st_size
        return out

    def new_log_errors(self, offsets: dict[str, int], expected: list[str]) -> list[str]:
        """Unexpected ERROR/CRITICAL/Traceback lines logged since ``offsets``."""
        filt = [re.compile(r) for r in expected]
        bad: list[str] = []
        for f in sorted((self.run_dir / "log").glob("*.log")):
            try:
                with open(f, "rb") as fh:
                    fh.seek(offsets.get(str(f), 0))
                    text = fh.read().decode("utf-8", "replace")
            except OSError:
                continue
            in_tb = False
            for line in text.splitlines():
                if ERROR_RE.search(line) or (in_tb and line.startswith((" ", "\t"))):
                    in_tb = in_tb or "Traceback" in line
                    if not any(r.search(line) for r in filt):
                        bad.append(f"{f.name}: {line}")
                else:
                    in_tb = False
        return bad

    # -- teardown
    def teardown(self) -> list[str]:
        """Unmount everything, stop daemons, detach loops, remove temp dirs.  Returns problems."""
        problems: list[str] = []
        self._stop_process(self.fenced, "scoutfs-fenced", 10)
        self.fenced = None
        self.umount_all()  # what is left is retried, and reported, by cleanup_from_record
        problems += self._stop_sysview()
        if self.run_dir and self.run_dir != Path():
            dv.save_daemon_logs(self.run_dir, self.cfg.results / "daemon-logs")
        problems += dv.cleanup_from_record(self.record, self.log)
        link = self.cfg.results / "run-dir"
        if link.is_symlink() and not link.exists():
            link.unlink()
        for c in self.claims:
            c.release()
        self.claims.clear()
        self.up = False
        if not problems:
            with contextlib.suppress(OSError):
                self.record.path.unlink()
        return problems

    def release_claims(self) -> None:
        for c in self.claims:
            c.release()
        self.claims.clear()


def teardown_instructions(results: Path) -> str:
    return f"[== to tear the cluster down: ./run-tests.sh --cleanup {results} ==]"
