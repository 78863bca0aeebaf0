"""Corrupt metadata under the real daemon: a mount the server cannot serve is refused with
one line on the mount command's stderr (no hang, no daemon left), and a damaged block under
a mounted volume gives EIO with the reason in the daemon's log, never a traceback."""

from __future__ import annotations

import errno
import os
import subprocess

import pytest

from conftest import _fuse_usable, daemon_pid, is_mounted, wait_gone
from fs import format as fmt
from fs.block import Device, read_super, write_super

pytestmark = pytest.mark.skipif(not _fuse_usable(), reason="/dev/fuse unusable (or not root)")


def _change_super(meta, change) -> fmt.Super:
    dev = Device(str(meta))
    try:
        sb = read_super(dev)
        change(sb)
        write_super(dev, sb)  # sealed with a good crc: only the contents are wrong
        dev.flush()
        return sb
    finally:
        dev.close()


def _daemon_logs(env) -> str:
    logdir = env.run / "log"
    return "".join(p.read_text() for p in logdir.glob("*.log")) if logdir.exists() else ""


def test_mount_is_refused_when_the_server_cannot_start(env):
    meta, data = env.mkfs("vol")

    def bad_root(sb):
        sb.mounted_clients = sb.mounted_clients._replace(height=44)

    _change_super(meta, bad_root)
    mnt = env.root / "mnt"
    p = env.mount(meta, data, mnt, timeout=60)
    assert p.returncode != 0
    lines = p.stderr.splitlines()
    assert len(lines) == 1, p.stderr
    assert "the server cannot start" in lines[0] and "btree root height 44" in lines[0], lines
    assert "Traceback" not in _daemon_logs(env)
    assert not is_mounted(mnt)
    assert [pid for pid in env.daemon_pids()] == []


def test_damaged_block_reads_eio_with_the_reason_logged(env):
    meta, data = env.mkfs("vol")
    mnt = env.root / "mnt"
    assert env.mount(meta, data, mnt).returncode == 0
    for i in range(20):
        (mnt / f"f{i}").write_text("x" * i)
    pid = daemon_pid(env, mnt)
    subprocess.run(["umount", str(mnt)], check=True, timeout=60)
    assert wait_gone(pid)
    dev = Device(str(meta), readonly=True)
    sb = read_super(dev)
    dev.close()
    blkno = sb.fs_root.ref.blkno
    with open(meta, "r+b") as f:  # a flipped byte in the items: the crc no longer matches
        f.seek(blkno * fmt.META_BLOCK_SIZE + 200)
        b = f.read(1)
        f.seek(blkno * fmt.META_BLOCK_SIZE + 200)
        f.write(bytes([b[0] ^ 0x40]))
    assert env.mount(meta, data, mnt).returncode == 0
    with pytest.raises(OSError) as e:
        os.listdir(mnt)
    assert e.value.errno == errno.EIO
    pid = daemon_pid(env, mnt)
    subprocess.run(["umount", str(mnt)], check=True, timeout=60)
    assert wait_gone(pid)
    logs = _daemon_logs(env)
    assert f"meta block {blkno}" in logs and "crc" in logs, logs[-3000:]
    assert "Traceback" not in logs, logs[-3000:]
