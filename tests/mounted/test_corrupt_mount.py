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


def _too_high(sb):
    sb.mounted_clients = sb.mounted_clients._replace(height=44)


def _unwritten(sb):
    # a block in range that was never written: only the server, loading, reads it
    sb.mounted_clients = fmt.BtreeRoot(fmt.BlockRef(sb.total_meta_blocks - 1, 7), 1)


@pytest.mark.parametrize("change,reason", [
    (_too_high, "malformed scoutfs super block: mounted_clients (height 44"),
    (_unwritten, "the server cannot start: "),
])
def test_mount_is_refused_when_the_server_cannot_start(env, change, reason):
    meta, data = env.mkfs("vol")
    _change_super(meta, change)
    mnt = env.root / "mnt"
    p = env.mount(meta, data, mnt, timeout=60)
    assert p.returncode != 0
    lines = p.stderr.splitlines()
    assert len(lines) == 1 and reason in lines[0], p.stderr
    assert "Traceback" not in _daemon_logs(env)
    assert not is_mounted(mnt)
    assert env.daemon_pids() == []


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
