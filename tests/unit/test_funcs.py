"""The bash t_ library (tests/funcs/*.sh): its pure functions, exit codes and output.

Each test runs a fresh bash with every funcs/*.sh sourced, as the harness does, against fake
mounts, a fake sysfs tree and a fake `scoutfs` in PATH.
"""

import os
import stat
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FUNCS = ROOT / "tests" / "funcs"

PASS, SKIP, FAIL, SKIP_PERMITTED = 100, 101, 102, 103

FSID = "0123456789abcdef"
RIDS = ["aaaaaa1111111111", "bbbbbb2222222222", "cccccc3333333333"]


def write_exe(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


class Env:
    """A per-test T_* environment in a tmp dir."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.tmpdir = tmp / "results" / "tmp" / "t"
        self.tmpdir.mkdir(parents=True)
        self.results = tmp / "results"
        self.bin = tmp / "bin"
        self.bin.mkdir()
        self.sysfs = tmp / "sys"
        self.vars = {
            "T_TMPDIR": str(self.tmpdir),
            "T_TMP": str(self.tmpdir / "tmp"),
            "T_RESULTS": str(self.results),
            "T_SYSFS_ROOT": str(self.sysfs),
            "T_NR_MOUNTS": "1",
            "T_QUORUM": "1",
        }

    def run(self, script: str, *, cwd: Path | None = None, stdin: str | None = None,
            timeout: float = 30) -> subprocess.CompletedProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith("T_")}
        env["LC_ALL"] = "C"
        env["PATH"] = f"{self.bin}:{env.get('PATH', '/usr/bin:/bin')}"
        env.update(self.vars)
        prog = f'for f in "{FUNCS}"/*.sh; do . "$f"; done\n{script}\n'
        return subprocess.run(["bash", "-c", prog], env=env, cwd=cwd or self.tmp, input=stdin,
                              capture_output=True, text=True, timeout=timeout)

    def status_msg(self) -> str | None:
        p = self.tmpdir / "status.msg"
        return p.read_text() if p.exists() else None

    def fake_mounts(self, nr: int, quorum: int | None = None, with_sysfs: bool = True) -> None:
        """nr mount dirs, a fake `scoutfs statfs`, and (optionally) their sysfs dirs."""
        ms = []
        for i in range(nr):
            m = self.tmp / "mnt" / f"test.{i}"
            m.mkdir(parents=True)
            (m / ".rid").write_text(RIDS[i] + "\n")
            self.vars[f"T_M{i}"] = str(m)
            ms.append(str(m))
            if with_sysfs:
                d = self.sysfs_dir(i)
                (d / "counters").mkdir(parents=True)
                (d / "mount_options").mkdir()
                (d / "rid").write_text(RIDS[i] + "\n")
                (self.debugfs_dir(i) / "trigger").mkdir(parents=True)
        self.vars["T_MS"] = " ".join(ms)
        self.vars["T_NR_MOUNTS"] = str(nr)
        self.vars["T_QUORUM"] = str(quorum if quorum is not None else nr)
        write_exe(self.bin / "scoutfs", f"""#!/bin/bash
# fake: scoutfs statfs -s fsid|rid -p MNT ; scoutfs sync -p MNT
echo "$*" >> "{self.tmp}/scoutfs.calls"
# a mount point whose mount isn't up yet is a plain directory: the ioctl fails
case "$1 $2" in
"statfs -s") [ -e "$5/.rid" ] || {{
	echo "ioctl failed: Inappropriate ioctl for device (25)" >&2; exit 1; }} ;;
esac
case "$1 $2 $3" in
"statfs -s fsid") echo {FSID} ;;
"statfs -s rid") cat "$5/.rid" ;;
"sync -p "*) exit 0 ;;
*) echo "fake scoutfs: unexpected $*" >&2; exit 1 ;;
esac
""")

    def ident(self, i: int) -> str:
        return f"f.{FSID[:6]}.r.{RIDS[i][:6]}"

    def sysfs_dir(self, i: int) -> Path:
        return self.sysfs / "fs" / "scoutfs" / self.ident(i)

    def debugfs_dir(self, i: int) -> Path:
        return self.sysfs / "kernel" / "debug" / "scoutfs" / self.ident(i)


@pytest.fixture
def env(tmp_path):
    return Env(tmp_path)


# ---------------------------------------------------------------- filter.sh

def filter_fs(env: Env, text: str, mnt_root: str | None = None) -> str:
    if mnt_root is None:
        env.vars.pop("T_MNT_ROOT", None)
    else:
        env.vars["T_MNT_ROOT"] = mnt_root
    r = env.run("t_filter_fs", stdin=text)
    assert r.returncode == 0, r.stderr
    return r.stdout


@pytest.mark.parametrize("line, want", [
    ("/mnt/test.0/test/foo/a\n", "/mnt/test/test/foo/a\n"),
    ("cd mnt/test.12/x; ls /mnt/test.3\n", "cd mnt/test/x; ls /mnt/test\n"),
    ("  Device: fd00h/64768d\tInode: 5  Links: 1\n", "  Device: 0h/0d\tInode: 5  Links: 1\n"),
    ("Device: 254,0\tInode: 2           Links: 21\n", "Device: 0h/0d\tInode: 2           Links: 21\n"),
    ("Device: 0,52\tInode: 1\n", "Device: 0h/0d\tInode: 1\n"),
    ("nothing to see: 254,0 test.1\n", "nothing to see: 254,0 test.1\n"),
])
def test_filter_fs_default_root(env, line, want):
    assert filter_fs(env, line) == want


def test_filter_fs_custom_root(env):
    root = "/tmp/run.3/mnt"
    text = ("/tmp/run.3/mnt/test.1/test/x\n"
            "relative tmp/run.3/mnt/test.22/y\n"
            "/mnt/test.0/z\n"
            "/tmp/runX3/mnt/test.1/w\n")
    assert filter_fs(env, text, root) == (
        "/mnt/test/test/x\n"
        "relative mnt/test/y\n"
        "/mnt/test/z\n"
        # the '.' of the root is literal: another root only gets upstream's rule
        "/tmp/runX3/mnt/test/w\n")
    # a trailing slash on the root doesn't matter
    assert filter_fs(env, "/tmp/run.3/mnt/test.1/a\n", root + "/") == "/mnt/test/a\n"


def test_filter_fs_real_stat(env):
    r = env.run("stat / | t_filter_fs")
    assert r.returncode == 0, r.stderr
    assert "Device: 0h/0d" in r.stdout


def test_filter_dmesg(env):
    lines = [
        "[  12.3] scoutfs f.0123ab.r.aaaaaa: server starting at 127.0.0.1:19700",
        "[  12.4] loop3: detected capacity change from 0 to 2097152",
        "2024-01-01 12:00:00,001 INFO fs.mount: mounted /mnt/test.0",
        "2024-01-01 12:00:00,002 DEBUG fs.lock: granted",
        "[INFO] something routine",
        "server ready",
        "2024-01-01 12:00:01,000 WARNING fs.trans: commit took 5s",
        "2024-01-01 12:00:02,000 ERROR fs.btree: corrupt block 123",
        "Traceback (most recent call last):",
        "[  13.0] scoutfs f.0123ab.r.aaaaaa: error: something unexpected",
    ]
    r = env.run("t_filter_dmesg", stdin="\n".join(lines) + "\n")
    assert r.returncode in (0, 1), r.stderr
    assert r.stderr == ""
    assert r.stdout.splitlines() == lines[6:]


# ------------------------------------------------------------------ exec.sh

@pytest.mark.parametrize("call, status, msg", [
    ("t_pass", PASS, None),
    ("t_skip 'need more' mounts", SKIP, "need more mounts\n"),
    ("t_fail 'it broke'", FAIL, "it broke\n"),
    ("t_skip_permitted 'never works here'", SKIP_PERMITTED, "never works here\n"),
])
def test_completion_status(env, call, status, msg):
    r = env.run(f"echo before\n{call}\necho after")
    assert r.returncode == status
    assert r.stdout == "before\n"
    assert env.status_msg() == msg


def test_status_constants(env):
    r = env.run('echo $T_PASS_STATUS $T_SKIP_STATUS $T_FAIL_STATUS $T_SKIP_PERMITTED_STATUS '
                '$T_FIRST_STATUS $T_LAST_STATUS')
    assert r.stdout == "100 101 102 103 100 103\n"


def test_fail_in_subshell_only_ends_subshell(env):
    r = env.run('v=$(t_fail "inner"); echo "v=[$v]"; t_pass')
    assert r.returncode == PASS
    assert r.stdout == "v=[]\n"
    assert env.status_msg() == "inner\n"


def test_rc(env):
    r = env.run("t_rc true\nt_rc false\nt_rc sh -c 'echo out; echo err >&2; exit 3'")
    assert r.returncode == 0
    assert r.stdout == "rc: 0\nrc: 1\nrc: 3\n"
    assert r.stderr == ""
    log = (env.tmpdir / "tmp.rc.log").read_text()
    assert log == "# true\n# false\n# sh -c echo out; echo err >&2; exit 3\nout\nerr\n"


def test_quiet_logs_and_prints_nothing(env):
    r = env.run("t_quiet sh -c 'echo hello; echo oops >&2'\necho after")
    assert r.returncode == 0
    assert r.stdout == "after\n" and r.stderr == ""
    assert (env.tmpdir / "quiet.log").read_text() == (
        "# sh -c echo hello; echo oops >&2\nhello\noops\n")
    assert env.status_msg() is None


def test_quiet_failure_fails_test(env):
    r = env.run("t_quiet sh -c 'echo bad; exit 2'\necho notreached")
    assert r.returncode == FAIL
    assert r.stdout == ""
    assert env.status_msg() == "quiet command failed\n"
    assert "bad\n" in (env.tmpdir / "quiet.log").read_text()


def test_silent_kill(env):
    r = env.run("sleep 100 &\np=$!\nt_silent_kill $p\necho done")
    assert r.returncode == 0
    assert r.stdout == "done\n"
    assert r.stderr == ""


# --------------------------------------------------------------- require.sh

def test_require_mounts(env):
    env.vars["T_NR_MOUNTS"] = "3"
    assert env.run("t_require_mounts 3; echo ok").stdout == "ok\n"
    r = env.run("t_require_mounts 5; echo notreached")
    assert r.returncode == SKIP
    assert env.status_msg() == "5 mounts required, only have 3\n"


def test_require_commands(env):
    assert env.run("t_require_commands bash sed; echo ok").stdout == "ok\n"
    r = env.run("t_require_commands bash no-such-cmd-xyz; echo notreached")
    assert r.returncode == FAIL
    assert env.status_msg() == "command no-such-cmd-xyz not found in path\n"


def test_require_meta_size(env):
    img = env.tmp / "meta.img"
    with open(img, "wb") as f:
        f.truncate(2 << 20)
    env.vars["T_META_DEVICE"] = str(img)
    assert env.run("t_require_meta_size 1M; echo ok").stdout == "ok\n"
    r = env.run("t_require_meta_size 1G; echo notreached")
    assert r.returncode == SKIP
    assert env.status_msg() == f"{img} must be at least 1G, is 2.0M\n"


# -------------------------------------------------------------------- fs.sh

@pytest.mark.parametrize("q, want", [(1, 1), (2, 1), (3, 2), (4, 3), (5, 3), (7, 4)])
def test_majority_count(env, q, want):
    env.vars["T_QUORUM"] = str(q)
    assert env.run("t_majority_count").stdout == f"{want}\n"


def test_nrs(env):
    env.vars.update(T_NR_MOUNTS="3", T_QUORUM="2")
    assert env.run("echo $(t_fs_nrs) / $(t_quorum_nrs)").stdout == "0 1 2 / 0 1\n"


def test_ident_and_paths(env):
    env.fake_mounts(2)
    r = env.run("t_ident; t_ident 1; t_mount_rid 1; t_sysfs_path 1; t_debugfs_path 0; "
                "t_trigger_path 1; t_sysfs_path_from_mnt $T_M1")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [
        env.ident(0), env.ident(1), RIDS[1], str(env.sysfs_dir(1)), str(env.debugfs_dir(0)),
        str(env.debugfs_dir(1) / "trigger"), str(env.sysfs_dir(1))]


def test_default_sysfs_root(env):
    env.fake_mounts(1, with_sysfs=False)
    del env.vars["T_SYSFS_ROOT"]
    r = env.run("t_sysfs_path; t_debugfs_path")
    assert r.stdout.splitlines() == [
        f"/run/scoutfs/sys/fs/scoutfs/{env.ident(0)}",
        f"/run/scoutfs/sys/kernel/debug/scoutfs/{env.ident(0)}"]


def test_counters(env):
    env.fake_mounts(2)
    (env.sysfs_dir(0) / "counters" / "log_merge_start").write_text("15\n")
    (env.sysfs_dir(1) / "counters" / "log_merge_start").write_text("7\n")
    r = env.run("t_counter log_merge_start; t_counter log_merge_start 1\n"
                "t_counter_diff_value log_merge_start 10 0\n"
                "t_counter_diff log_merge_start 10 0\n"
                "t_counter_diff log_merge_start 7 1\n"
                "t_counter_diff_changed log_merge_start 15 0\n"
                "t_counter_diff_changed log_merge_start 3 1\n")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [
        "15", "7", "5",
        "counter log_merge_start diff 5",
        "counter log_merge_start diff 0",
        "counter log_merge_start didn't change",
        "counter log_merge_start changed"]


def test_triggers(env):
    env.fake_mounts(2)
    trig = env.debugfs_dir(1) / "trigger" / "statfs_lock_purge"
    trig.write_text("0\n")
    r = env.run("t_trigger_show statfs_lock_purge before 1\n"
                "t_trigger_arm statfs_lock_purge 1\n"
                "t_trigger_get statfs_lock_purge 1")
    assert r.returncode == 0, r.stderr
    assert r.stdout == ("trigger statfs_lock_purge before: 0\n"
                        "trigger statfs_lock_purge armed: 1\n1\n")
    assert trig.read_text() == "1\n"


def test_sysfs_mount_options(env):
    env.fake_mounts(2)
    for i in range(2):
        (env.sysfs_dir(i) / "mount_options" / "orphan_scan_delay_ms").write_text(f"{i}000\n")
    # a write the view rejects (a directory can't be written)
    (env.sysfs_dir(0) / "mount_options" / "rejecting").mkdir()
    r = env.run("t_save_all_sysfs_mount_options orphan_scan_delay_ms\n"
                "t_set_all_sysfs_mount_options orphan_scan_delay_ms 5\n"
                "t_get_sysfs_mount_option 0 orphan_scan_delay_ms\n"
                "t_get_sysfs_mount_option 1 orphan_scan_delay_ms\n"
                "t_restore_all_sysfs_mount_options orphan_scan_delay_ms\n"
                "t_set_sysfs_mount_option 0 rejecting 1; echo rc=$?")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "5\n5\nrc=1\n"
    assert r.stderr == ""
    for i in range(2):
        assert (env.sysfs_dir(i) / "mount_options" / "orphan_scan_delay_ms").read_text() \
            == f"{i}000\n"


def test_leader_and_clients(env):
    env.fake_mounts(3, quorum=2)
    for i in range(2):
        (env.sysfs_dir(i) / "quorum").mkdir()
        (env.sysfs_dir(i) / "quorum" / "is_leader").write_text("1\n" if i == 1 else "0\n")
    r = env.run("for i in $(t_fs_nrs); do echo $(t_fs_is_leader); done\n"
                "t_fs_is_leader 1\n"
                "t_server_nr; t_first_client_nr; t_wait_for_leader; echo waited")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["0", "1", "0", "1", "1", "0", "waited"]


def test_wait_for_leader_quiet_while_mounts_come_up(env):
    """Mounts not up yet make `scoutfs statfs` fail on their bare mount points; waiting for
    the leader discards that stderr (as upstream) instead of printing it into the test's
    compared output."""
    env.fake_mounts(3)
    (Path(env.vars["T_M0"]) / ".rid").unlink()  # mount 0 isn't mounted yet
    for i in (1, 2):
        (env.sysfs_dir(i) / "quorum").mkdir()
        (env.sysfs_dir(i) / "quorum" / "is_leader").write_text("0\n")
    leader = env.sysfs_dir(2) / "quorum" / "is_leader"
    r = env.run(f"(sleep 0.6; echo 1 > '{leader}') &\n"
                "t_wait_for_leader; echo waited; wait")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "waited\n"
    assert r.stderr == ""
    # the waits really asked the unmounted mount point (and failed) several times
    calls = (env.tmp / "scoutfs.calls").read_text().splitlines()
    assert calls.count(f"statfs -s fsid -p {env.vars['T_M0']}") >= 2


def test_no_sudo(env):
    """The t_ functions run as root in the harness and never call sudo (the bootstrap does
    not install it): a `sudo` first in PATH that fails loudly is never reached."""
    for f in sorted(FUNCS.rglob("*")):
        if f.is_file():
            words = f.read_text().replace("(", " ").replace(")", " ").split()
            assert "sudo" not in words, f"{f} calls sudo"
    env.fake_mounts(2)
    write_exe(env.bin / "sudo", f"#!/bin/sh\necho \"sudo $*\" >> {env.tmp}/sudo.calls; exit 1\n")
    write_exe(env.bin / "mount", "#!/bin/sh\nexit 0\n")
    write_exe(env.bin / "umount", "#!/bin/sh\nexit 0\n")
    env.vars.update(T_O0="-o metadev_path=/dev/m0", T_DB0="/dev/d0",
                    T_O1="-o metadev_path=/dev/m1", T_DB1="/dev/d1",
                    T_EX_META_DEV="/dev/xm", T_EX_DATA_DEV="/dev/xd", T_SCRATCH_PORT="1",
                    T_MSCR=str(env.tmp / "scratch"))
    r = env.run("t_mount_all; t_umount_all; t_remount_all; t_reinsert_remount_all\n"
                "t_scratch_mount; t_scratch_umount; t_force_umount 1; t_mount 1; echo ok")
    assert r.returncode == 0, (r.stdout, r.stderr, env.status_msg())
    assert r.stdout == "ok\n"
    assert not (env.tmp / "sudo.calls").exists()


def test_no_server(env):
    env.fake_mounts(2)
    env.vars["T_WAIT_TIMEOUT"] = "1"
    r = env.run('sv=$(t_server_nr); echo "sv=[$sv]"')
    assert r.stdout == "sv=[]\n"
    assert env.status_msg() == "t_server_nr didn't find a server\n"
    r = env.run("t_wait_for_leader; echo notreached", timeout=20)
    assert r.returncode == FAIL and r.stdout == ""
    assert env.status_msg() == "t_wait_for_leader: no leader after 1 sec\n"


@pytest.mark.parametrize("script", [
    "t_counter orphan_scan 0",
    "t_trigger_get statfs_lock_purge 0",
    "t_get_sysfs_mount_option 0 orphan_scan_delay_ms",
    "t_wait_for_leader",
    "t_force_log_merge",
    "t_wait_for_no_orphans",
    "t_rid_is_mounted 0",
])
def test_missing_sysfs_view_fails_clearly(env, script):
    env.fake_mounts(1, with_sysfs=False)
    r = env.run(f"{script}\necho notreached", timeout=20)
    assert r.returncode == FAIL, (r.stdout, r.stderr)
    assert "notreached" not in r.stdout
    msg = env.status_msg()
    assert msg is not None and "sysfs view not available: " in msg
    assert str(env.sysfs) in msg


def test_mount_commands(env):
    env.fake_mounts(2)
    write_exe(env.bin / "mount", f"""#!/bin/bash
for a in "$@"; do echo "[$a]"; done >> "{env.tmp}/mount.calls"; echo --- >> "{env.tmp}/mount.calls"
""")
    write_exe(env.bin / "umount", f"""#!/bin/bash
echo "umount $*" >> "{env.tmp}/umount.calls"
""")
    env.vars.update(T_O0="-o metadev_path=/dev/m0,quorum_slot_nr=0", T_DB0="/dev/d0",
                    T_O1="-o metadev_path=/dev/m1", T_DB1="/dev/d1")
    r = env.run("t_mount 0; t_mount_opt 1 data_prealloc_blocks=8; echo rc=$?\n"
                "t_umount 0; t_force_umount 1; t_umount_all; t_mount_all; echo ok")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "rc=0\nok\n"
    calls = (env.tmp / "mount.calls").read_text().split("---\n")
    m0, m1 = env.vars["T_M0"], env.vars["T_M1"]
    assert calls[0] == f"[-t]\n[scoutfs]\n[-o]\n[metadev_path=/dev/m0,quorum_slot_nr=0]\n[/dev/d0]\n[{m0}]\n"
    assert calls[1] == (f"[-t]\n[scoutfs]\n[-o]\n[metadev_path=/dev/m1,data_prealloc_blocks=8]\n"
                        f"[/dev/d1]\n[{m1}]\n")
    assert len(calls) == 5  # 4 mounts and the empty tail
    umounts = (env.tmp / "umount.calls").read_text().splitlines()
    assert umounts[:2] == [f"umount {m0}", f"umount -f {m1}"]
    assert sorted(umounts[2:]) == sorted([f"umount {m0}", f"umount {m1}"])

    r = env.run("t_mount 2; echo notreached")
    assert r.returncode == FAIL
    assert env.status_msg() == "fs nr 2 invalid\n"

    write_exe(env.bin / "mount", "#!/bin/bash\necho 'mount: failed' >&2; exit 32\n")
    r = env.run("t_mount_opt 0 bad; echo rc=$?\nt_mount 0; echo notreached")
    assert r.returncode == FAIL
    assert r.stdout == "rc=32\n" and r.stderr == "mount: failed\n"
    assert env.status_msg() == "quiet command failed\n"


def test_sync_seq_index_and_sync_wrapper(env):
    env.fake_mounts(2)
    r = env.run(f'PATH="{FUNCS}/bin:$PATH"; t_sync_seq_index; echo ok')
    assert r.returncode == 0, r.stderr
    assert r.stdout == "ok\n"
    calls = (env.tmp / "scoutfs.calls").read_text().splitlines()
    assert calls == [f"sync -p {env.vars['T_M0']}", f"sync -p {env.vars['T_M1']}"]
    assert "# sync" in (env.tmpdir / "quiet.log").read_text()


def test_wait_until_timeout(env):
    r = env.run("t_wait_until_timeout 5 true; echo ok; t_wait_until_timeout 1 test -e /nonexistent")
    assert r.returncode == FAIL
    assert r.stdout == "ok\n"
    assert env.status_msg() == "command failed for 1 sec: test -e /nonexistent\n"


# ------------------------------------------------------------------- tap.sh

def test_tap(env, tmp_path):
    tests_dir = tmp_path / "tests"
    (tests_dir / "golden").mkdir(parents=True)
    out = env.results / "output"
    out.mkdir(parents=True)
    for name, golden, output in [("alpha", "a\n", "a\n"), ("beta", "b\n", "B\n"),
                                 ("gamma", "g\n", ""), ("delta", "d\n", ""),
                                 ("eps", "e\n", "e\n")]:
        (tests_dir / "golden" / name).write_text(golden)
        (out / name).write_text(output)

    r = env.run("t_tap_header run-1234 alpha.sh beta.sh gamma.sh delta.sh eps.sh", cwd=tests_dir)
    assert r.returncode == 0, r.stderr
    tap = env.results / "scoutfs.tap"
    head = tap.read_text().splitlines()
    assert head[:4] == ["TAP version 14", "1..5", "#", "# TAP results for run run-1234"]
    assert all(line.startswith("#") for line in head[2:])
    seq = "\n".join(head)
    for i, name in enumerate(["alpha", "beta", "gamma", "delta", "eps"], 1):
        assert f"{i}\t{name}" in seq.expandtabs() or f"{i}  {name}" in seq

    status = env.tmpdir / "status.msg"
    script = []
    # pass, pass with a diff, skip with a message, fail with dmesg, permitted skip
    script.append('testcount=0; t_tap_progress alpha 100')
    script.append('testcount=1; t_tap_progress beta 100')
    script.append(f'echo "2 mounts required, only have 1" > {status}; '
                  'testcount=2; t_tap_progress gamma 101')
    script.append(f'echo "it broke" > {status}; echo "BUG: oops" > {env.tmpdir}/dmesg.new; '
                  't_tap_progress delta 102 4')
    script.append(f'rm -f {env.tmpdir}/dmesg.new; echo "never here" > {status}; '
                  'testcount=4; t_tap_progress eps 103')
    r = env.run("\n".join(script), cwd=tests_dir)
    assert r.returncode == 0, r.stderr
    body = tap.read_text().splitlines()[len(head):]
    assert body[0] == "ok 1 - alpha"
    i = body.index("not ok 2 - beta")
    assert body[i + 1] == "# beta ** failed **"
    assert "# diff:" in body[i:]
    assert "#   -b" in body[i:] and "#   +B" in body[i:]
    i = body.index("not ok 3 - gamma")
    assert body[i + 1:i + 6] == ["# gamma ** skipped **", "#", "# status:", "#",
                                 "# - 2 mounts required, only have 1"]
    i = body.index("not ok 4 - delta")
    assert body[i + 1] == "# delta ** failed **"
    assert "# - it broke" in body[i:]
    j = body.index("# dmesg:", i)
    assert body[j + 2] == "#   BUG: oops"
    i = body.index("ok 5 - eps")
    assert body[i + 1] == "# eps ** skipped - permitted **"
    assert body[-1] == "# eps ** skipped - permitted **"
