"""harness.cluster/devices on real loop devices and mounts, with a stand-in mount helper (a tmpfs
plus a "daemon" process naming the mount point) and a stand-in scoutfs CLI, so the setup,
post-test restore, teardown and --cleanup paths run without the filesystem.  Needs root."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness import devices as dv

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("losetup") or not Path("/dev/loop-control").exists(),
    reason="needs root and loop devices",
)

FAKE_SCOUTFS = '#!/bin/sh\necho "fake scoutfs $*"\n'
FAKE_HELPER = """#!/bin/bash
mnt=$2
mount -t tmpfs -o size=16m harnessfake "$mnt" || exit 1
[ -z "$QUORUM_STATE" ] || rm -f "$QUORUM_STATE/leaving.${mnt##*/}"
setsid /usr/bin/python3 -c '
import os, sys, time
mnt = sys.argv[1]
with open(os.path.join(os.environ["SCOUTFS_RUN_DIR"], "log", "d%d.log" % os.getpid()), "a") as f:
    f.write("INFO up on %s\\n" % mnt)
while os.path.ismount(mnt):
    time.sleep(0.2)
' "$mnt" </dev/null >/dev/null 2>&1 &
"""
QUORUM_UMOUNT = """#!/bin/bash
# stand-in umount: the mounts test.0..2 are quorum members; as a scoutfs unmount waits for its
# daemon's farewell, a member's umount returns only once two members stay mounted or every
# member is leaving (waiting 20 s at most)
mnt="${@: -1}"
case "$mnt $*" in
*/test.[0-9]" "*) ;;
*) exec /usr/bin/umount "$@" ;;
esac
case " $* " in
*" -f "*|*" -l "*) exec /usr/bin/umount "$@" ;;
esac
touch "$QUORUM_STATE/leaving.${mnt##*/}"
/usr/bin/umount "$@" || exit
for _ in $(seq 200); do
	n=$(ls "$QUORUM_STATE"/leaving.* 2>/dev/null | wc -l)
	if [ $((3 - n)) -ge 2 ] || [ "$n" -ge 3 ]; then
		exit 0
	fi
	sleep .1
done
echo "umount: $mnt: waited 20 s for the other quorum members" >&2
exit 1
"""
EXEC_SH = 't_pass() { exit 100; }\nt_fail() { echo "$*" > $T_TMPDIR/status.msg; exit 102; }\n'


@pytest.fixture
def setup(tmp_path: Path):
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    (bin_ / "scoutfs").write_text(FAKE_SCOUTFS)
    (bin_ / "helper").write_text(FAKE_HELPER)
    for f in bin_.iterdir():
        f.chmod(0o755)
    t = tmp_path / "tests"
    for d in ("funcs", "tests", "golden"):
        (t / d).mkdir(parents=True)
    (t / "funcs" / "exec.sh").write_text(EXEC_SH)
    (t / "tests" / "unmount.sh").write_text("umount $T_M1 && echo unmounted; t_pass\n")
    (t / "golden" / "unmount").write_text("unmounted\n")
    (t / "tests" / "check.sh").write_text(
        "for m in $T_MS; do mountpoint -q $m && echo mounted; done; "
        '[ -b "$T_MB0" ] && [ "$T_MB0" != "$T_MB1" ] && echo own-loops; t_pass\n'
    )
    (t / "golden" / "check").write_text("mounted\nmounted\nown-loops\n")
    (t / "tests" / "hang.sh").write_text("sleep 120; t_pass\n")
    (t / "sequence").write_text("check.sh\nunmount.sh\ncheck.sh\n")
    env = {
        **os.environ,
        "HARNESS_SCOUTFS": str(bin_ / "scoutfs"),
        "HARNESS_MOUNT_HELPER": str(bin_ / "helper"),
        "HARNESS_NO_BOOTSTRAP": "1",
    }
    return t, env


def harness(t: Path, res: Path, env: dict[str, str], *args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen(
        [str(REPO / "run-tests.sh"), "--tests-dir", str(t), "-r", str(res), "-n", "2", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **kw,
    )


def wait_for_test(res: Path, name: str) -> None:
    deadline = time.time() + 60
    while time.time() < deadline:
        log = res / "run.log"
        if log.exists() and f"run scoutfs test {name}" in log.read_text():
            return
        time.sleep(0.2)
    raise AssertionError(f"test {name} never started")


def ours(res: Path) -> tuple[list[str], list[str]]:
    """Loop devices over our images and mounts of our run left behind."""
    loops = subprocess.run(["losetup", "-a"], capture_output=True, text=True).stdout
    left_loops = [line for line in loops.splitlines() if str(res) in line]
    log = (res / "run.log").read_text()
    root = log.split("] mount root ", 1)[1].split("\n", 1)[0]
    left_mounts = [m for m in dv.mounts_under(root) if "/test." in m]
    return left_loops, left_mounts


def test_run_remounts_and_tears_down(setup, tmp_path: Path) -> None:
    t, env = setup
    res = tmp_path / "r"
    p = harness(t, res, env)
    out, _ = p.communicate(timeout=120)
    assert p.returncode == 0, out
    assert "3 passed, 0 skipped, 0 skipped (permitted), 0 failed" in out
    log = (res / "run.log").read_text()
    assert "mount 1 was left unmounted, remounting" in log
    assert "losetup -d" in log
    assert ours(res) == ([], [])
    assert not (res / "cleanup.json").exists()
    assert list((res / "daemon-logs").iterdir())


def test_final_unmount_of_a_quorum_is_together(setup, tmp_path: Path) -> None:
    """The unmounts before the final fsck start together: quorum members unmounted one at a
    time would each wait for the others to leave (20 s here, 60 s timeouts for real)."""
    t, env = setup
    state = tmp_path / "quorum"
    state.mkdir()
    qbin = tmp_path / "qbin"
    qbin.mkdir()
    (qbin / "umount").write_text(QUORUM_UMOUNT)
    (qbin / "umount").chmod(0o755)
    env = {**env, "QUORUM_STATE": str(state), "PATH": f"{qbin}:{env['PATH']}"}
    (t / "tests" / "noop.sh").write_text("t_pass\n")
    (t / "golden" / "noop").write_text("")
    (t / "sequence").write_text("noop.sh\n")
    res = tmp_path / "r"
    t0 = time.monotonic()
    p = harness(t, res, env, "-n", "3")
    out, _ = p.communicate(timeout=120)
    took = time.monotonic() - t0
    assert p.returncode == 0, out
    log = (res / "run.log").read_text()
    assert "waited 20 s" not in log, log
    assert "unmounting 3 mount(s) together" in log
    assert "unmounted 3 of 3 mount(s) in " in log
    assert took < 20, f"the run took {took:.0f}s"
    assert ours(res) == ([], [])


def test_sigkilled_run_is_cleaned_up(setup, tmp_path: Path) -> None:
    t, env = setup
    (t / "sequence").write_text("hang.sh\n")
    res = tmp_path / "r"
    p = harness(t, res, env)
    wait_for_test(res, "hang")
    rec = dv.CleanupRecord.load(res / "cleanup.json")
    assert len(rec.loops) == 8 and len(rec.mounts) == 2
    p.send_signal(signal.SIGKILL)
    p.wait()
    mounts = list(rec.mounts)
    assert all(dv.is_mounted(m) for m in mounts)
    c = subprocess.run(
        [str(REPO / "run-tests.sh"), "--cleanup", str(res)], env=env, capture_output=True, text=True
    )
    assert c.returncode == 0, c.stdout + c.stderr
    assert not any(dv.is_mounted(m) for m in mounts)
    loops = subprocess.run(["losetup", "-a"], capture_output=True, text=True).stdout
    assert not any(dev + ":" in loops for dev in rec.loops)
    assert not Path(rec.run_dir).exists()
    assert subprocess.run(["pgrep", "-f", "sleep 120"], capture_output=True).returncode == 1


def test_sigint_cleans_up(setup, tmp_path: Path) -> None:
    t, env = setup
    (t / "sequence").write_text("hang.sh\n")
    res = tmp_path / "r"
    p = harness(t, res, env)
    wait_for_test(res, "hang")
    rec = dv.CleanupRecord.load(res / "cleanup.json")
    p.send_signal(signal.SIGINT)
    out, _ = p.communicate(timeout=60)
    assert p.returncode == 130, out
    assert "interrupted by SIGINT" in out
    assert not any(dv.is_mounted(m) for m in rec.mounts)
    loops = subprocess.run(["losetup", "-a"], capture_output=True, text=True).stdout
    assert not any(dev + ":" in loops for dev in rec.loops)


def test_cleanup_kills_unrecorded_processes_of_the_run(tmp_path: Path) -> None:
    """A daemon a test mounted itself is not recorded; cleanup still finds it by its run dir,
    even when it ignores SIGTERM, and leaves processes of other run dirs alone."""
    run_dir = tmp_path / "run"
    (run_dir / "log").mkdir(parents=True)
    # the interpreter itself, not a `python3` found on PATH, which may be a shim that execs
    # through shells: a scan in the middle of an exec reads no environment
    hang = [
        sys.executable,
        "-c",
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print(flush=True);"
        " time.sleep(60)",
    ]

    def start(run: Path) -> subprocess.Popen:
        p = subprocess.Popen(hang, env={**os.environ, "SCOUTFS_RUN_DIR": str(run)},
                             stdout=subprocess.PIPE)
        assert p.stdout is not None and p.stdout.readline() == b"\n"  # ignores SIGTERM now
        return p

    ours_p = start(run_dir)
    other = start(tmp_path / "other")
    try:
        assert ours_p.pid in dv.processes_of_run(str(run_dir))
        record = dv.CleanupRecord(path=tmp_path / "cleanup.json", run_dir=str(run_dir))
        assert dv.cleanup_from_record(record) == []
        assert ours_p.wait(10) == -signal.SIGKILL
        assert other.poll() is None
    finally:
        for p in (ours_p, other):
            p.kill()
            p.wait()
            p.stdout.close()
