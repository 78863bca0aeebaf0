"""The sysfs/debugfs view (scoutfs-sysfsd) over real mount daemons, the fence action script
and the fencing agent, through FUSE.

The `env` fixture runs the view at ``<root>/sys``; these tests read and write it with ``cat``
and ``echo`` as the t_ functions do.  The fence protocol end to end (agent -> view -> the
leader's fence dir -> answer) runs against a stand-in daemon whose fake server holds one fence
request: this file run as ``python test_sysfs.py fake-daemon SOCKET MARKER``.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from conftest import PY, Env, _fuse_usable, daemon_pid, is_mounted, wait_gone
from fs.counters import SPEC_NAMES
from fs.triggers import NAMES as TRIGGER_NAMES

pytestmark = pytest.mark.skipif(not _fuse_usable(), reason="/dev/fuse unusable (or not root)")

FENCE_SCRIPT = Path(__file__).resolve().parents[1] / "fenced-local-force-unmount.sh"
FAKE_FSID = 0xABCDEF0123456789
FAKE_RID = 0x1111222233334444
FENCED_RID = 0x5555666677778888


def sh(cmd: str, env: dict | None = None, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, env=env,
                          timeout=timeout)


def cat(path: Path) -> str:
    p = sh(f'cat "{path}"')
    assert p.returncode == 0, p.stderr
    return p.stdout


def wait_for(cond, timeout: float = 30, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def sys_idents(env) -> set[str]:
    return set(os.listdir(env.sys / "fs" / "scoutfs"))


def debug_idents(env) -> set[str]:
    return set(os.listdir(env.sys / "kernel" / "debug" / "scoutfs"))


def mount_vol(env, name: str, extra: str = "") -> Path:
    meta, data = env.mkfs(name)
    mnt = env.root / f"mnt.{name}"
    p = env.mount(meta, data, mnt, extra)
    assert p.returncode == 0, p.stderr
    return mnt


def statfs(env, mnt: Path, field: str) -> str:
    return env.scoutfs("statfs", "-s", field, "-p", mnt, check=True).stdout.strip()


@pytest.fixture(scope="module")
def vol():
    """One mounted volume and the view, shared by the tests that only read and write the
    tree (each leaves what it changed as it found it)."""
    root = Path(tempfile.mkdtemp(prefix="scoutfs-mt-", dir="/tmp"))
    os.chmod(root, 0o755)
    e = Env(root)
    try:
        e.start_view()
        e.start_fenced()
        yield e, mount_vol(e, "v")
    finally:
        e.cleanup()
        if not any(is_mounted(p) for p in root.iterdir()):
            shutil.rmtree(root, ignore_errors=True)


# --------------------------------------------------------------------------- the tree


def test_ident_dirs_follow_mounts_and_dead_daemons(env):
    assert sys_idents(env) == set() and debug_idents(env) == set()
    a = mount_vol(env, "a")
    b = mount_vol(env, "b")
    ia, ib = env.ident(a), env.ident(b)
    assert sys_idents(env) == {ia, ib} and debug_idents(env) == {ia, ib}
    # the mount's run dir in the environment: the umount helper finds the daemon's pid file
    # and waits for it to leave (its sysfs dir goes with its control socket)
    subprocess.run(["umount", str(b)], check=True, timeout=60, env=env.env)
    assert sys_idents(env) == {ia} and debug_idents(env) == {ia}
    assert not (env.sys / "fs" / "scoutfs" / ib).exists()
    assert (env.sys / "fs" / "scoutfs" / ia / "rid").exists()
    # kill -9 leaves the socket file behind, refusing connections: skipped
    b2 = env.root / "mnt.b2"
    assert env.mount(env.root / "b.meta", env.root / "b.data", b2).returncode == 0
    ib2 = env.ident(b2)
    assert sys_idents(env) == {ia, ib2}
    pid = daemon_pid(env, b2)
    os.kill(pid, signal.SIGKILL)
    assert wait_gone(pid)
    # a probe the view made while the daemon died fails as a broken connection (the view
    # keeps a daemon it knows through that, as it would a slow one); the next refused
    # connect drops it
    deadline = time.monotonic() + 10
    while sys_idents(env) != {ia} and time.monotonic() < deadline:
        time.sleep(0.1)
    assert sys_idents(env) == {ia} and debug_idents(env) == {ia}
    assert not (env.sys / "fs" / "scoutfs" / ib2).exists()
    subprocess.run(["umount", "-l", str(b2)], capture_output=True, timeout=30)


def test_rid_fsid_and_format_agree_with_statfs(vol):
    env, mnt = vol
    d = env.sysfs_path(mnt)
    assert cat(d / "rid") == statfs(env, mnt, "rid") + "\n"
    assert cat(d / "fsid") == statfs(env, mnt, "fsid") + "\n"
    assert cat(d / "format_version").strip().isdigit()
    st = os.stat(env.root / "v.data")  # an image file: the device it lives on
    assert cat(d / "data_device_maj_min") == f"{os.major(st.st_dev)}:{os.minor(st.st_dev)}\n"
    assert sorted(os.listdir(env.debugfs_path(mnt) / "trigger")) == sorted(TRIGGER_NAMES)
    assert (d / "rid").stat().st_mode & 0o777 == 0o444


def test_counters_are_live_files_and_the_cli_prints_them(vol):
    env, mnt = vol
    d = env.sysfs_path(mnt)
    names = sorted(os.listdir(d / "counters"))
    assert set(SPEC_NAMES) <= set(names)
    for n in SPEC_NAMES:
        assert cat(d / "counters" / n).strip().isdigit()
    p = env.scoutfs("counters", d, check=True)
    lines = p.stdout.splitlines()
    assert [line.split()[0] for line in lines] == names
    assert all(line.split()[1].isdigit() for line in lines)


def test_mount_options_read_write_reject(vol):
    env, mnt = vol
    opts = env.sysfs_path(mnt) / "mount_options"
    assert cat(opts / "metadev_path") == f"{env.root / 'v.meta'}\n"
    assert cat(opts / "quorum_slot_nr") == "0\n"
    assert cat(opts / "lock_idle_count") == "10000\n"
    assert (opts / "lock_idle_count").stat().st_mode & 0o777 == 0o644
    assert (opts / "metadev_path").stat().st_mode & 0o777 == 0o444

    good = sh(f'echo 500 > "{opts}/lock_idle_count"')
    assert good.returncode == 0, good.stderr
    assert cat(opts / "lock_idle_count") == "500\n"
    bad = sh(f'echo 5 > "{opts}/lock_idle_count"')
    assert bad.returncode != 0 and "Invalid argument" in bad.stderr
    assert cat(opts / "lock_idle_count") == "500\n"
    ro = sh(f'echo /elsewhere > "{opts}/metadev_path"')
    assert ro.returncode != 0
    assert cat(opts / "metadev_path") == f"{env.root / 'v.meta'}\n"
    assert sh(f'echo 10000 > "{opts}/lock_idle_count"').returncode == 0


def test_trigger_arm_and_read_back(vol):
    env, mnt = vol
    t = env.debugfs_path(mnt) / "trigger" / "srch_merge_stop_safe"
    assert cat(t) == "0\n"
    assert sh(f'echo 1 > "{t}"').returncode == 0
    assert cat(t) == "1\n"
    assert sh(f'echo 0 > "{t}"').returncode == 0
    assert cat(t) == "0\n"
    assert sh(f'echo nope > "{t}"').returncode != 0
    assert cat(t) == "0\n"


def test_quorum_leader_and_client_locks(vol):
    env, mnt = vol
    d = env.sysfs_path(mnt)
    assert cat(d / "quorum" / "is_leader") == "1\n"
    cat(d / "quorum" / "status")
    for i in range(5):
        (mnt / f"f{i}").write_text("x")
        os.listdir(mnt)
    dbg = env.debugfs_path(mnt)
    assert cat(dbg / "client_locks").strip() != ""
    assert cat(dbg / "server_locks").strip() != ""


# --------------------------------------------------------------------------- dead and hung daemons


def test_a_hung_daemon_costs_a_timeout_not_a_hang(env):
    env.stop_view()
    env.start_view(timeout=1)
    mnt = mount_vol(env, "v")
    d = env.sysfs_path(mnt)
    rid = statfs(env, mnt, "rid")
    # the view learns a mount's ident when it first lists it (a daemon that never answered
    # cannot be named); a hung daemon it knows stays listed
    assert cat(d / "rid") == rid + "\n"
    pid = daemon_pid(env, mnt)
    os.kill(pid, signal.SIGSTOP)  # from now on, nothing here may touch the mount itself
    try:
        t0 = time.monotonic()
        p = sh(f'cat "{d}/rid"')
        assert p.returncode != 0 and "Input/output error" in p.stderr
        assert time.monotonic() - t0 < 10
        assert d.name in sys_idents(env)  # still mounted: still listed
    finally:
        os.kill(pid, signal.SIGCONT)
    assert cat(d / "rid") == rid + "\n"


# --------------------------------------------------------------------------- fencing


def test_fence_script_force_unmounts_the_mount_with_the_rid(env):
    a = mount_vol(env, "a")
    b = mount_vol(env, "b")
    rid_b = statfs(env, b, "rid")
    e = dict(env.env, SCOUTFS_FENCED_REQ_RID=rid_b, SCOUTFS_FENCED_REQ_IP="127.0.0.1")
    p = subprocess.run([str(FENCE_SCRIPT), "ignored", "args"], env=e, capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines()[0] == (f"{FENCE_SCRIPT} running rid '{rid_b}' ip "
                                        "'127.0.0.1' args 'ignored args'")
    # both images live on one filesystem, so the data device did not tell them apart: the
    # daemons' rids did
    wait_for(lambda: not is_mounted(b), what="the fenced mount to go")
    assert is_mounted(a)
    # a rid nobody has: the fenced mount is already gone, nothing to do
    e["SCOUTFS_FENCED_REQ_RID"] = "00000000deadbeef"
    p = subprocess.run([str(FENCE_SCRIPT)], env=e, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert is_mounted(a)


def test_fenced_answers_a_fence_request_through_the_view(env):
    """scoutfs-fenced finds the fence dir a (stand-in) leader publishes, runs the action with
    the request's rid and IP, and its write of fenced=1 reaches the server."""
    env.stop_fenced()  # this test runs an agent of its own
    marker = env.root / "answered"
    sock = env.run / "ctl" / "0:999.sock"
    daemon = subprocess.Popen([PY, __file__, "fake-daemon", str(sock), str(marker)],
                              env=env.env, stdout=subprocess.DEVNULL,
                              stderr=open(env.root / "fake-daemon.log", "w"))  # noqa: SIM115
    agent = None
    try:
        wait_for(sock.exists, what="the stand-in daemon's socket")
        ident = f"f.{FAKE_FSID:016x}"[:8] + f".r.{FAKE_RID:016x}"[:9]
        fdir = env.sys / "fs" / "scoutfs" / ident / "fence" / f"{FENCED_RID:016x}"
        assert cat(fdir / "reason") == "client_recovery\n"
        assert cat(fdir / "fenced") == "0\n"
        action = env.root / "action.sh"
        action.write_text('#!/bin/bash\necho "$SCOUTFS_FENCED_REQ_RID $SCOUTFS_FENCED_REQ_IP '
                          f'$*" > "{env.root}/action.out"\n')
        action.chmod(0o755)
        conf = env.root / "fenced.conf"
        conf.write_text(f"SCOUTFS_FENCED_DELAY=0.1\nSCOUTFS_FENCED_RUN={action}\n"
                        'SCOUTFS_FENCED_RUN_ARGS="x y"\n')
        agent = subprocess.Popen([PY, "-m", "fs.cli.fenced"],
                                 env=dict(env.env, SCOUTFS_FENCED_CONFIG_FILE=str(conf)),
                                 stdout=open(env.root / "fenced.log", "w"),  # noqa: SIM115
                                 stderr=subprocess.STDOUT)
        wait_for(marker.exists, what="the fence answer")
        assert marker.read_text() == f"{FENCED_RID:016x} fenced\n"
        assert (env.root / "action.out").read_text() == f"{FENCED_RID:016x} 10.0.0.7 x y\n"
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(20) == 0
        log = (env.root / "fenced.log").read_text()
        assert (f"server {ident} fencing rid {FENCED_RID:016x} at IP 10.0.0.7 for "
                "client_recovery") in log
    finally:
        for p in (agent, daemon):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait(10)


# --------------------------------------------------------------------------- the stand-in daemon


def _fake_daemon(sock: str, marker: str) -> None:
    """A control socket whose mount leads and asks for one fence (what fs/sysfs.py reads of
    fs.super.Mount: rid, fsid, server.fence_requests, answer_fence)."""
    from types import SimpleNamespace

    import trio

    from fs.control import ControlServer
    from fs.counters import Counters

    reqs = {FENCED_RID: SimpleNamespace(rid=FENCED_RID, ipv4_addr="10.0.0.7",
                                        reason="client_recovery", fenced=False, error=False,
                                        elapsed_secs=lambda: 2)}

    def answer_fence(rid: int, fenced: bool = False, error: bool = False) -> None:
        Path(marker).write_text(f"{rid:016x} {'fenced' if fenced else 'error'}\n")
        reqs.pop(rid, None)  # reclaimed

    mount = SimpleNamespace(rid=FAKE_RID, fsid=FAKE_FSID, counters=Counters(), options={},
                            quorum=SimpleNamespace(is_leader=True, status_text=lambda: ""),
                            server=SimpleNamespace(fence_requests=reqs,
                                                   answer_fence=answer_fence))

    async def main() -> None:
        srv = ControlServer(mount, 0, 999, path=sock)
        srv.bind()
        await srv.serve()

    trio.run(main)


if __name__ == "__main__":
    if sys.argv[1] == "fake-daemon":
        _fake_daemon(sys.argv[2], sys.argv[3])
