"""The real daemon through FUSE: mount, POSIX ops through the kernel, the control-socket CLI,
bad options and devices, and unmount ending the daemon.

Volumes are made by `scoutfs mkfs -A` on image files; the mounts run the real stack
(fs.super.Mount).  Every fixture unmounts and kills what it started even when a test fails.
"""

from __future__ import annotations

import errno
import os
import re
import select
import shutil
import signal
import stat
import subprocess
import time
from pathlib import Path

import pytest

from conftest import (
    PY,
    REPO,
    Env,
    _free_port,
    _fuse_usable,
    daemon_pid,
    is_mounted,
    mountinfo_line,
    wait_gone,
)

pytestmark = pytest.mark.skipif(not _fuse_usable(), reason="/dev/fuse unusable (or not root)")


# --------------------------------------------------------------------------- file ops


def test_basic_ops(mounted):
    env, mnt, _m, data = mounted
    mi = mountinfo_line(mnt)
    sep = mi.index("-")
    assert mi[sep + 1] == "fuse.scoutfs" and mi[sep + 2] == str(data)
    assert os.stat(mnt).st_ino == 1
    f = mnt / "file"
    f.write_bytes(b"hello world")
    assert f.read_bytes() == b"hello world"
    st = f.stat()
    assert st.st_ino >= 1024 and st.st_size == 11 and st.st_blocks == 8
    assert st.st_blksize == 4096
    (mnt / "dir").mkdir()
    os.rename(f, mnt / "dir" / "moved")
    assert sorted(os.listdir(mnt)) == ["dir"]
    assert os.listdir(mnt / "dir") == ["moved"]
    assert (mnt / "dir" / "moved").stat().st_ino == st.st_ino
    assert os.stat(mnt).st_size == 3  # sum of entry name lengths
    os.symlink("dir/moved", mnt / "sl")
    assert os.readlink(mnt / "sl") == "dir/moved"
    assert (mnt / "sl").read_bytes() == b"hello world"
    os.link(mnt / "dir" / "moved", mnt / "hard")
    assert (mnt / "hard").stat().st_nlink == 2
    # readdir: inode numbers pass through
    with os.scandir(mnt) as it:
        inos = {e.name: e.inode() for e in it}
    assert inos["hard"] == st.st_ino
    # truncate through open(O_TRUNC) and ftruncate
    with open(mnt / "hard", "r+b") as fh:
        fh.truncate(3)
    assert (mnt / "hard").read_bytes() == b"hel"
    with open(mnt / "hard", "wb") as fh:
        pass
    assert (mnt / "hard").stat().st_size == 0
    os.utime(mnt / "hard", ns=(1_000_000_123, 2_000_000_456))
    st2 = (mnt / "hard").stat()
    assert st2.st_atime_ns == 1_000_000_123 and st2.st_mtime_ns == 2_000_000_456
    os.chmod(mnt / "hard", 0o600)
    assert stat.S_IMODE((mnt / "hard").stat().st_mode) == 0o600
    os.unlink(mnt / "hard")
    os.unlink(mnt / "dir" / "moved")
    os.unlink(mnt / "sl")
    os.rmdir(mnt / "dir")
    assert os.listdir(mnt) == []


def test_rename_flags(mounted):
    env, mnt, _m, _d = mounted
    tool = REPO / "tests" / "src" / "dumb_renameat2"
    if not os.access(tool, os.X_OK):
        pytest.skip("tests/src/dumb_renameat2 not built")
    (mnt / "a").write_text("a")
    (mnt / "b").write_text("b")
    p = subprocess.run([str(tool), "-n", str(mnt / "a"), str(mnt / "b")], capture_output=True,
                       text=True)
    assert p.returncode == 1 and "File exists" in p.stderr
    p = subprocess.run([str(tool), "-x", str(mnt / "a"), str(mnt / "b")], capture_output=True,
                       text=True)
    assert p.returncode == 0, p.stderr
    assert (mnt / "a").read_text() == "b" and (mnt / "b").read_text() == "a"


def test_xattrs(mounted):
    env, mnt, _m, _d = mounted
    f = mnt / "x"
    f.write_text("")
    os.setxattr(f, "user.a", b"1")
    os.setxattr(f, "user.b", b"")
    assert os.getxattr(f, "user.a") == b"1"
    assert os.getxattr(f, "user.b") == b""
    assert sorted(os.listxattr(f)) == ["user.a", "user.b"]
    with pytest.raises(OSError) as ei:
        os.setxattr(f, "user.a", b"2", os.XATTR_CREATE)
    assert ei.value.errno == errno.EEXIST
    with pytest.raises(OSError) as ei:
        os.setxattr(f, "user.c", b"2", os.XATTR_REPLACE)
    assert ei.value.errno == errno.ENODATA
    big = os.urandom(65535)
    os.setxattr(f, "user.big", big)
    assert os.getxattr(f, "user.big") == big
    os.removexattr(f, "user.a")
    with pytest.raises(OSError) as ei:
        os.getxattr(f, "user.a")
    assert ei.value.errno == errno.ENODATA


def _as_user(code: str, uid: int = 12345, pre: str = "") -> subprocess.CompletedProcess:
    drop = (f"import os\nos.setgroups([])\nos.setresgid({uid},{uid},{uid})\n"
            f"os.setresuid({uid},{uid},{uid})\n")
    return subprocess.run([PY, "-c", pre + drop + code], capture_output=True, text=True,
                          timeout=30)


def test_permissions(mounted):
    env, mnt, _m, _d = mounted
    (mnt / "rootfile").write_text("secret")
    os.chmod(mnt / "rootfile", 0o600)
    (mnt / "open").mkdir()
    os.chmod(mnt / "open", 0o777)
    p = _as_user(f"""
import errno
for what, fn in (("read", lambda: open({str(mnt / 'rootfile')!r}).read()),
                 ("create", lambda: open({str(mnt / 'new')!r}, 'w'))):
    try:
        fn()
        print(what, 'ok')
    except OSError as e:
        print(what, errno.errorcode[e.errno])
open({str(mnt / 'open' / 'mine')!r}, 'w').write('x')
print(os.stat({str(mnt / 'open' / 'mine')!r}).st_uid)
""")
    assert p.returncode == 0, p.stderr
    assert p.stdout.split("\n")[:3] == ["read EACCES", "create EACCES", "12345"]


# --------------------------------------------------------------------------- CLI


def test_cli_stat_statfs_df_sync(mounted):
    env, mnt, _m, _d = mounted
    f = mnt / "f"
    f.write_bytes(b"x" * 5000)
    p = env.scoutfs("stat", f, check=True)
    lines = p.stdout.splitlines()
    assert [ln[:18] for ln in lines] == [f"{n:<17} " for n in
                                         ("meta_seq", "data_seq", "data_version",
                                          "online_blocks", "offline_blocks", "crtime")]
    vals = {ln[:17].strip(): ln[18:] for ln in lines}
    assert vals["data_version"] == "1" and vals["online_blocks"] == "2"
    assert vals["offline_blocks"] == "0"
    sec, nsec = vals["crtime"].split(".")
    assert len(nsec) == 9 and int(sec) > 0
    assert env.scoutfs("stat", "-s", "data_version", f, check=True).stdout == "1\n"
    d = env.scoutfs("stat", mnt, check=True).stdout
    assert "online_blocks     0\n" in d

    p = env.scoutfs("statfs", "-p", mnt, check=True)
    lines = p.stdout.splitlines()
    assert [ln.split()[0] for ln in lines] == ["fsid", "rid", "committed_seq",
                                               "total_meta_blocks", "total_data_blocks"]
    assert all(len(ln.split()) == 2 and ln[17] == " " for ln in lines)
    fsid = lines[0].split()[1]
    assert len(fsid) == 16 and int(fsid, 16) > 0
    assert env.scoutfs("statfs", "-s", "fsid", cwd=mnt, check=True).stdout == fsid + "\n"
    rid = env.scoutfs("statfs", "-s", "rid", "-p", mnt / "f", check=True).stdout.strip()
    assert len(rid) == 16
    log = env.run / "log" / f"{fsid}.{rid}.log"
    assert log.exists()

    out = env.scoutfs("df", "-p", mnt, check=True).stdout.splitlines()
    assert len(out) == 3
    assert out[0].split() == ["Type", "Size", "Total", "Used", "Free", "Use%"]
    assert out[1].split()[:2] == ["MetaData", "64KB"] and out[2].split()[:2] == ["Data", "4KB"]
    assert all(ln.endswith("  ") for ln in out)
    assert len({len(ln) for ln in out}) == 1  # right-aligned columns
    for row in out[1:]:
        _t, _s, total, used, free, pct = row.split()
        assert int(total) == int(used) + int(free) and 0 <= int(pct) <= 100
    hum = env.scoutfs("df", "-h", "-p", mnt, check=True).stdout.splitlines()
    assert re.fullmatch(r"\d+\.\d\d[KMGT]?B", hum[1].split()[2])
    assert env.scoutfs("sync", "-p", mnt, check=True).returncode == 0

    # ENOTTY: device nodes (inside the mount or not) print the ioctl error and exit 0
    os.mknod(mnt / "null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    for target in (mnt / "null", "/dev/null"):
        p = env.scoutfs("stat", target)
        assert p.returncode == 0 and p.stdout == ""
        assert p.stderr == "ioctl failed: Inappropriate ioctl for device (25)\n"


def test_cli_as_other_user(mounted):
    env, mnt, _m, _d = mounted
    (mnt / "f").write_text("x")
    os.chmod(mnt / "f", 0o644)
    # the interpreter may live where other users cannot read: import everything first
    pre = (f"import os, sys\nsys.path.insert(0, {str(REPO)!r})\n"
           f"os.environ['SCOUTFS_RUN_DIR'] = {str(env.run)!r}\n"
           "from fs.cli.main import main, load_commands\nimport fs.control, fs.inode\n"
           "load_commands()\n")
    code = f"sys.exit(main(['stat', '-s', 'data_version', {str(mnt / 'f')!r}]))"
    p = _as_user(code, pre=pre)
    assert p.returncode == 0, p.stderr
    assert p.stdout == "1\n"


# --------------------------------------------------------------------------- lifecycle


def test_umount_ends_daemon(mounted):
    env, mnt, _m, _d = mounted
    pid = daemon_pid(env, mnt)
    majmin = mountinfo_line(mnt)[2]
    (mnt / "f").write_text("data")
    subprocess.run(["umount", str(mnt)], check=True, timeout=30)
    assert wait_gone(pid), "daemon still running after umount"
    assert not (env.run / "ctl" / f"{majmin}.sock").exists()
    assert not (env.run / "pid" / f"{majmin}.pid").exists()
    assert not is_mounted(mnt)


def test_remount_sees_committed_data(env):
    meta, data = env.mkfs("vol")
    mnt = env.root / "mnt"
    assert env.mount(meta, data, mnt).returncode == 0
    (mnt / "kept").write_text("still here")
    pid = daemon_pid(env, mnt)
    subprocess.run(["umount", str(mnt)], check=True, timeout=30)
    assert wait_gone(pid)
    assert env.mount(meta, data, mnt).returncode == 0
    assert (mnt / "kept").read_text() == "still here"


def test_sigterm_unmounts(mounted):
    env, mnt, _m, _d = mounted
    pid = daemon_pid(env, mnt)
    os.kill(pid, signal.SIGTERM)
    assert wait_gone(pid)
    deadline = time.monotonic() + 5
    while is_mounted(mnt) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not is_mounted(mnt)


def test_killed_mount_command_leaves_no_daemon(env):
    meta, data = env.mkfs("vol")
    mnt = env.root / "mnt"
    mnt.mkdir()
    env.mounts.append(mnt)
    e = dict(env.env, SCOUTFS_TEST_OPEN_DELAY_S="2")
    p = subprocess.Popen([PY, "-m", "fs.cli.main", "mount", "-o",
                          f"metadev_path={meta},quorum_slot_nr=0", str(data), str(mnt)],
                         env=e, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 10
    while len(env.daemon_pids()) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)  # the waiting command and the daemon
    daemons = [pid for pid in env.daemon_pids() if pid != p.pid]
    assert daemons
    p.kill()
    p.wait()
    for pid in daemons:
        assert wait_gone(pid), "daemon left behind by a killed mount command"
    assert not is_mounted(mnt)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_waiting_mount_says_why_and_ends_on_a_signal(env, sig):
    """A mount that cannot reach a quorum (slot 0 of three, alone) says so on the mount
    command's stderr within seconds, and SIGINT or SIGTERM ends it leaving nothing behind."""
    meta, data = env.mkfs("vol")
    ports = [_free_port() for _ in range(3)]
    quorum = [a for i, port in enumerate(ports) for a in ("-Q", f"{i},127.0.0.1,{port}")]
    env.scoutfs("mkfs", "-A", "-f", *quorum, meta, data, check=True)
    mnt = env.root / "mnt"
    mnt.mkdir()
    env.mounts.append(mnt)
    p = subprocess.Popen([PY, "-m", "fs.cli.main", "mount", "-o",
                          f"metadev_path={meta},quorum_slot_nr=0", str(data), str(mnt)],
                         env=env.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    try:
        ready, _, _ = select.select([p.stderr], [], [], 20)
        assert ready, "the waiting mount said nothing for 20 s"
        line = p.stderr.readline()
        assert line == "scoutfs: waiting for a quorum to elect a server (5s so far)\n", line
        daemons = [pid for pid in env.daemon_pids() if pid != p.pid]
        assert daemons
        p.send_signal(sig)
        assert p.wait(30) != 0
        rest = p.stderr.read()
        assert "Traceback" not in rest, rest
        for pid in daemons:
            assert wait_gone(pid), "daemon left behind by a signalled mount command"
        assert not is_mounted(mnt)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def test_mount_waiting_for_a_fence_says_why(root_dir):
    """The finding: after a kill -9 of a single-slot mount, a remount with no fencing agent
    waits for the dead leader to be fenced and used to print nothing.  It says why now, and
    SIGINT ends it, leaving nothing behind."""
    e = Env(root_dir)  # no scoutfs-fenced
    p = None
    try:
        e.start_view()
        meta, data = e.mkfs("vol")
        mnt = root_dir / "mnt"
        assert e.mount(meta, data, mnt).returncode == 0
        pid = daemon_pid(e, mnt)
        os.kill(pid, signal.SIGKILL)
        assert wait_gone(pid)
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True, timeout=30)
        p = subprocess.Popen([PY, "-m", "fs.cli.main", "mount", "-o",
                              f"metadev_path={meta},quorum_slot_nr=0", str(data), str(mnt)],
                             env=e.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
        lines: list[str] = []
        deadline = time.monotonic() + 20
        want = re.compile(r"scoutfs: waiting for rid [0-9a-f]{16} to be fenced \(\d+s so far\): "
                          r"no fencing agent has answered; is scoutfs-fenced running\?\n")
        while not any(want.fullmatch(ln) for ln in lines):
            ready, _, _ = select.select([p.stderr], [], [], max(0, deadline - time.monotonic()))
            assert ready, f"the waiting mount did not say why within 20 s: {lines}"
            lines.append(p.stderr.readline())
        # the fence request itself is shown first
        assert re.fullmatch(r"scoutfs: fencing rid [0-9a-f]{16} at 127\.0\.0\.1: "
                            r"quorum_block_leader\n", lines[0]), lines
        daemons = [d for d in e.daemon_pids() if d != p.pid]
        p.send_signal(signal.SIGINT)
        assert p.wait(30) != 0
        assert "Traceback" not in p.stderr.read()
        for d in daemons:
            assert wait_gone(d), "daemon left behind by an interrupted mount"
        assert not is_mounted(mnt)
    finally:
        if p is not None and p.poll() is None:
            p.kill()
            p.wait()
        e.cleanup()


def test_read_ahead_raised_after_init(mounted):
    """The daemon raises its mount's read-ahead to 1 MiB once INIT is answered (the mount
    command no longer stats its new mount point to force INIT first)."""
    _env, mnt, _m, _d = mounted
    majmin = mountinfo_line(mnt)[2]
    path = Path(f"/sys/class/bdi/{majmin}/read_ahead_kb")
    deadline = time.monotonic() + 10
    while path.read_text().strip() != "1024" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert path.read_text().strip() == "1024"


def test_daemon_speaks_fuse_itself(mounted):
    """The daemon serves /dev/fuse through fs.fuse: pyfuse3 and libfuse are not loaded."""
    env, mnt, _m, _d = mounted
    pid = daemon_pid(env, mnt)
    maps = Path(f"/proc/{pid}/maps").read_text()
    assert "pyfuse3" not in maps and "libfuse" not in maps
    fds = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
    assert fds.count("/dev/fuse") == 1


def test_mount_helper(env):
    meta, data = env.mkfs("vol")
    mnt = env.root / "mnt"
    mnt.mkdir()
    env.mounts.append(mnt)
    code = ("import sys\nfrom fs.cli.mount import mount_helper_main\n"
            "sys.exit(mount_helper_main(sys.argv[1:]))")
    p = subprocess.run([PY, "-c", code, str(data), str(mnt), "-n", "-o",
                        f"metadev_path={meta},quorum_slot_nr=0"], env=env.env,
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert is_mounted(mnt)
    assert os.stat(mnt).st_ino == 1


# --------------------------------------------------------------------------- refusals


def _refused(env: Env, p, mnt: Path, msg: str) -> None:
    assert p.returncode != 0
    assert msg in p.stderr, p.stderr
    assert len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert not is_mounted(mnt)
    time.sleep(0.2)
    assert env.daemon_pids() == []


@pytest.mark.parametrize("opts,msg", [
    ("quorum_slot_nr=0", 'scoutfs: Required mount option "metadev_path" not found'),
    ("metadev_path=META,bogus", 'scoutfs: Unknown or malformed option, "bogus"'),
    ("metadev_path=META,quorum_heartbeat_timeout_ms=1000",
     "scoutfs: invalid quorum_heartbeat_timeout_ms value 1000, must be between 2000 and 60000"),
    ("metadev_path=META,quorum_slot_nr=0,quorum_slot_nr=1",
     "scoutfs: multiple quorum_slot_nr options provided, only provide one."),
])
def test_bad_options(env, opts, msg):
    meta, data = env.mkfs("vol")
    mnt = env.root / "mnt"
    mnt.mkdir()
    env.mounts.append(mnt)
    p = env.scoutfs("mount", "-o", opts.replace("META", str(meta)), data, mnt)
    _refused(env, p, mnt, msg)


def test_bad_devices(env):
    meta, data = env.mkfs("vol")
    meta2, data2 = env.mkfs("other")
    mnt = env.root / "mnt"
    mnt.mkdir()
    env.mounts.append(mnt)

    def mount(m, d, target=mnt):
        return env.scoutfs("mount", "-o", f"metadev_path={m},quorum_slot_nr=0", d, target)

    _refused(env, mount(env.root / "nope", data), mnt, "scoutfs: could not open metadev")
    _refused(env, mount(data, meta), mnt, "scoutfs: meta_super META flag not set")
    _refused(env, mount(meta, meta), mnt, "same device")
    _refused(env, mount(meta, data2), mnt, "scoutfs: superblock UUID mismatch")
    blank = env.root / "blank"
    with open(blank, "wb") as f:
        f.truncate(64 << 20)
    _refused(env, mount(meta, blank), mnt, "scoutfs: error reading data device super block")
    _refused(env, mount(meta, data, env.root / "nomnt"), mnt, "does not exist")
    p = env.scoutfs("mount", "-o", f"metadev_path={meta}", data)
    assert p.returncode == 64 and p.stderr.startswith("mount: must provide mount point\n")


def test_posix_acl(mounted):
    env, mnt, _m, _d = mounted
    if not shutil.which("setfacl"):
        pytest.skip("setfacl not installed")
    f = mnt / "acl"
    f.write_text("x")
    os.chmod(f, 0o644)
    code = f"open({str(f)!r}, 'a').write('y')\nprint('ok')"
    assert "PermissionError" in _as_user(code).stderr
    subprocess.run(["setfacl", "-m", "u:12345:rw", str(f)], check=True)
    p = _as_user(code)
    assert p.returncode == 0 and p.stdout == "ok\n", p.stderr
