"""Unmounting a cluster's mounts at the end of a run (before the final fsck), at teardown and
by ``--cleanup``: all together, bounded, with a force path.

A simulated quorum stands in for the mounts: as with scoutfs, an unmount of a quorum member
returns (the umount helper waits for its daemon's farewell) only once enough members remain for
a quorum or every remaining member is leaving too, so members unmounted one at a time wait for
each other until their timeouts.  No root needed: ``umount`` and /proc/mounts are simulated.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from harness import cli
from harness import devices as dv
from harness.cluster import REPO, Cluster, ClusterConfig

WAIT = 3.0  # how long a simulated member waits for the others before its umount "times out"


class Quorum:
    def __init__(self, members: list[str], hang: tuple[str, ...] = (), stuck: bool = False):
        self.members = set(members)
        self.mounted = set(members)
        self.leaving: set[str] = set()
        self.hang = set(hang)  # daemons that never finish their farewell
        self.stuck = stuck  # and whose mounts a plain umount doesn't even detach
        self.cv = threading.Condition()
        self.umounts: list[tuple[float, list[str]]] = []
        self.timed_out: list[str] = []
        self.envs: list[dict[str, str] | None] = []
        self.majority = len(members) // 2 + 1

    def is_mounted(self, path) -> bool:
        return str(path) in self.mounted

    def _may_leave(self, m: str) -> bool:
        if m in self.hang:
            return False
        staying = self.members - self.leaving
        return len(staying) >= self.majority or not staying

    def run_cmd(self, args, log=None, timeout=120, env=None) -> subprocess.CompletedProcess:
        if args[0] != "umount":
            return subprocess.CompletedProcess(args, 0, "", "")  # scoutfs fsck and the like
        m = args[-1]
        with self.cv:
            self.umounts.append((time.monotonic(), list(args)))
            self.envs.append(env)
            if not (self.stuck and m in self.hang) or "-f" in args or "-l" in args:
                self.mounted.discard(m)  # the kernel lets go at once
            self.leaving.add(m)
            self.cv.notify_all()
            if "-f" in args or "-l" in args:
                return subprocess.CompletedProcess(args, 0, "", "")
            # then the helper waits for the daemon, whose farewell waits for the quorum
            if not self.cv.wait_for(lambda: self._may_leave(m), timeout=min(timeout, WAIT)):
                self.timed_out.append(m)
                return subprocess.CompletedProcess(args, 124, "", "")
        return subprocess.CompletedProcess(args, 0, "", "")


@pytest.fixture
def quorum(tmp_path: Path, monkeypatch):
    def make(n: int = 3, hang: tuple[int, ...] = (), stuck: bool = False) -> tuple[Cluster, Quorum]:
        res = tmp_path / "results"
        res.mkdir(exist_ok=True)
        c = Cluster(ClusterConfig(results=res, nr_mounts=n), lambda msg: None)
        c.mount_points = [str(tmp_path / "mnt" / f"test.{i}") for i in range(n)]
        q = Quorum(c.mount_points, tuple(c.mount_points[i] for i in hang), stuck)
        monkeypatch.setattr(dv, "run_cmd", q.run_cmd)
        monkeypatch.setattr(dv, "is_mounted", q.is_mounted)
        monkeypatch.setattr(dv, "mounts_under", lambda root: [])
        monkeypatch.setattr(cli, "run_cmd", q.run_cmd)
        monkeypatch.setattr(Cluster, "daemon_pids_of", lambda self, m: [], raising=False)
        monkeypatch.setattr(dv, "daemon_pids_for", lambda m, run_dir=None: [])
        return c, q

    return make


def check_together(q: Quorum, started: float, n: int = 3) -> None:
    assert q.timed_out == [], f"unmounts waited for each other: {q.timed_out}"
    assert not q.mounted
    plain = [t for t, a in q.umounts if a[1:2] != ["-f"] and a[1:2] != ["-l"]]
    assert len(plain) == n
    assert max(plain) - min(plain) < 1.0, "the unmounts did not start together"
    assert time.monotonic() - started < WAIT, "the unmounts waited for each other"
    # /sbin/umount.fuse.scoutfs runs this checkout's helper
    assert all(e is not None and e["SCOUTFS_CHECKOUT"] == str(REPO) for e in q.envs)


def test_umount_all_unmounts_quorum_members_together(quorum) -> None:
    c, q = quorum()
    t0 = time.monotonic()
    assert c.umount_all() == []
    check_together(q, t0)


def test_final_fsck_unmounts_together(quorum, tmp_path: Path) -> None:
    c, q = quorum()
    engine = SimpleNamespace(cluster=c, results=SimpleNamespace(log=lambda m: None, root=tmp_path))
    t0 = time.monotonic()
    assert cli.final_fsck(engine) is None
    check_together(q, t0)


def test_teardown_unmounts_together(quorum) -> None:
    c, q = quorum()
    t0 = time.monotonic()
    assert c.teardown() == []
    check_together(q, t0)


def test_cleanup_unmounts_recorded_mounts_together(quorum, tmp_path: Path) -> None:
    c, q = quorum()
    record = dv.CleanupRecord(path=tmp_path / "cleanup.json", mounts=list(c.mount_points))
    t0 = time.monotonic()
    assert dv.cleanup_from_record(record) == []
    check_together(q, t0)
    assert record.mounts == []


@pytest.mark.parametrize("stuck", [False, True], ids=["farewell-hangs", "mount-stuck"])
def test_force_path_is_bounded_and_kills_the_daemon(quorum, monkeypatch, stuck) -> None:
    """A member whose daemon never leaves is forced after the timeout: its daemon SIGKILLed,
    and, if it is still mounted, umount -f; the others unmount normally, and nothing waits for
    more than the bound."""
    c, q = quorum(hang=(1,), stuck=stuck)
    m1 = c.mount_points[1]
    daemon = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        monkeypatch.setattr(Cluster, "daemon_pids_of",
                            lambda self, m: [daemon.pid] if m == m1 else [])
        t0 = time.monotonic()
        assert c.umount_all(timeout=0.5) == []
        assert time.monotonic() - t0 < WAIT
        assert q.timed_out == [m1] and not q.mounted
        assert (["umount", "-f", m1] in [a for _, a in q.umounts]) == stuck
        assert daemon.wait(10) == -signal.SIGKILL
    finally:
        daemon.kill()
        daemon.wait()
