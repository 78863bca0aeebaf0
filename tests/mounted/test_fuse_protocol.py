"""The project's FUSE protocol layer (`fs.fuse`) through the kernel, with the minimal filesystem.

The filesystem is scripts/bench_minimalfs.py's `FuseMinimalFs` (files kept in memory) plus
`ProtocolTestFs`, a test-only subclass: xattrs that honour the setxattr flags, counters
readable as virtual xattrs, and files whose reads block until interrupted.  It runs in its own
process (this file run as ``python test_fuse_protocol.py serve MOUNTPOINT READY_FILE``): a
daemon must never make blocking syscalls on its own mount, and the readers a test kills must
not be the process serving them.  The `protofs` fixture unmounts it and ends every process it
started (the filesystem and the readers) even when a test fails.
"""

from __future__ import annotations

import errno
import importlib.util
import json
import mmap
import os
import random
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import trio

from conftest import PY, REPO, _fuse_usable, is_mounted

_spec = importlib.util.spec_from_file_location("bench_minimalfs",
                                               REPO / "scripts" / "bench_minimalfs.py")
minimalfs = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(minimalfs)

MiB = 1 << 20
STATS = "user.test.stats"  # on the root: the counters below, as JSON
WRITES = "user.test.writes"  # on a file: the sizes of the WRITE requests it got, as JSON
READS = "user.test.reads"  # on a file: how many READ requests it got


class ProtocolTestFs(minimalfs.FuseMinimalFs):
    """The minimal fs, contents kept, plus:

    * files named ``block*`` open with direct_io (every read(2) is one READ request in the
      caller's context, which the kernel interrupts on a signal) and their reads wait until
      cancelled: "read" is interruptible, so an INTERRUPT cancels it and it answers EINTR;
    * stored xattrs honouring XATTR_CREATE (EEXIST) and XATTR_REPLACE (ENODATA); both flags at
      once answer EINVAL; the flags of every SETXATTR are recorded;
    * the virtual xattrs STATS, WRITES and READS.
    """

    interruptible = frozenset({"read"})

    def __init__(self) -> None:
        super().__init__(keep_data=True)
        self.session = None  # the fs.fuse.Session serving us (its in_flight count)
        self.blocking: set[int] = set()
        self.blocked = 0  # reads waiting now
        self.interrupted = 0  # reads cancelled by an INTERRUPT
        self.write_sizes: dict[int, list[int]] = {}
        self.reads: dict[int, int] = {}
        self.setxattr_flags: list[int] = []
        self.xattrs: dict[int, dict[bytes, bytes]] = {}

    async def create(self, parent_inode, name, mode, flags, ctx):
        fi, attr = await super().create(parent_inode, name, mode, flags, ctx)
        if name.startswith(b"block"):
            self.blocking.add(attr.st_ino)
            fi.direct_io = True
        return fi, attr

    async def open(self, inode, flags, ctx):
        fi = await super().open(inode, flags, ctx)
        fi.direct_io = inode in self.blocking
        return fi

    async def read(self, fh, off, size):
        if fh not in self.blocking:
            self.reads[fh] = self.reads.get(fh, 0) + 1
            return await super().read(fh, off, size)
        self.blocked += 1
        try:
            await trio.sleep_forever()
        except trio.Cancelled:
            self.interrupted += 1
            raise
        finally:
            self.blocked -= 1

    async def write(self, fh, off, buf):
        self.write_sizes.setdefault(fh, []).append(len(buf))
        return await super().write(fh, off, buf)

    async def setxattr(self, inode, name, value, flags, ctx):
        self._node(inode)
        self.setxattr_flags.append(flags)
        if flags == os.XATTR_CREATE | os.XATTR_REPLACE:
            raise self._error(errno.EINVAL)
        xs = self.xattrs.setdefault(inode, {})
        if flags & os.XATTR_CREATE and name in xs:
            raise self._error(errno.EEXIST)
        if flags & os.XATTR_REPLACE and name not in xs:
            raise self._error(errno.ENODATA)
        xs[name] = bytes(value)

    async def getxattr(self, inode, name, ctx):
        self._node(inode)
        if name == STATS.encode() and inode == minimalfs.ROOT:
            return json.dumps({
                "blocked": self.blocked, "interrupted": self.interrupted,
                "in_flight": self.session.in_flight - 1,  # not this GETXATTR
                "setxattr_flags": self.setxattr_flags}).encode()
        if name == WRITES.encode():
            return json.dumps(self.write_sizes.get(inode, [])).encode()
        if name == READS.encode():
            return str(self.reads.get(inode, 0)).encode()
        value = self.xattrs.get(inode, {}).get(name)
        if value is None:
            raise self._error(errno.ENODATA)
        return value

    async def listxattr(self, inode, ctx):
        self._node(inode)
        return list(self.xattrs.get(inode, {}))

    async def removexattr(self, inode, name, ctx):
        self._node(inode)
        if self.xattrs.get(inode, {}).pop(name, None) is None:
            raise self._error(errno.ENODATA)


def serve(mountpoint: str, ready_file: str) -> None:
    ops = ProtocolTestFs()
    options = {"default_permissions", "fsname=fuse_protocol_test", "subtype=fuse_protocol_test"}
    mount = minimalfs.FuseMount(ops, mountpoint, options)
    ops.session = mount.session
    minimalfs.serve(mount, ready_file)


# --------------------------------------------------------------------------- the harness


def wait_for(cond, timeout: float = 10, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def proc_state(pid: int) -> str:
    """The one-letter state of a process (R, S, D, Z...), "" when it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return ""


class ProtoFs:
    """One mount of ProtocolTestFs in its own process, and the reader processes of a test."""

    def __init__(self, root: Path):
        self.root = root
        self.mnt = root / "mnt"
        self.log = root / "protofs.log"
        self.proc: subprocess.Popen | None = None
        self.readers: list[subprocess.Popen] = []

    def start(self) -> None:
        self.mnt.mkdir()
        ready = self.root / "ready"
        env = dict(os.environ, PYTHONPATH=str(REPO))
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen([PY, __file__, "serve", str(self.mnt), str(ready)],
                                         env=env, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 30
        while not (ready.exists() and is_mounted(self.mnt)):
            assert self.proc.poll() is None, f"the test fs exited: {self.log_text()}"
            assert time.monotonic() < deadline, f"the test fs did not mount: {self.log_text()}"
            time.sleep(0.02)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def stats(self) -> dict:
        return json.loads(os.getxattr(self.mnt, STATS))

    def reader(self, code: str, *args: str) -> subprocess.Popen:
        p = subprocess.Popen([PY, "-c", code, *args], stdin=subprocess.DEVNULL,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             start_new_session=True)
        self.readers.append(p)
        return p

    def stop(self) -> None:
        """Kill the readers (if one will not die, stuck in a request, kill the filesystem
        too: that aborts the connection and ends the request), unmount, end the fs."""
        stuck = False
        for r in self.readers:
            if r.poll() is None:
                r.kill()
            try:
                r.wait(5)
            except subprocess.TimeoutExpired:
                stuck = True
        if stuck and self.proc is not None:
            self.proc.kill()
            for r in self.readers:
                try:
                    r.wait(10)
                except subprocess.TimeoutExpired:
                    pass
        for r in self.readers:
            for f in (r.stdout, r.stderr):
                if f:
                    f.close()
        if is_mounted(self.mnt):
            subprocess.run(["umount", str(self.mnt)], capture_output=True, timeout=30)
        if is_mounted(self.mnt):
            if self.proc is not None:
                self.proc.kill()
            subprocess.run(["umount", "-l", str(self.mnt)], capture_output=True, timeout=30)
        if self.proc is not None:
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


pytestmark = pytest.mark.skipif(not _fuse_usable(), reason="/dev/fuse unusable (or not root)")


@pytest.fixture
def protofs(root_dir):
    fs = ProtoFs(root_dir)
    try:
        fs.start()
        yield fs
    finally:
        fs.stop()


def read_uncached(path: Path) -> bytes:
    """The file's contents read through READ requests (its cached pages dropped first)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        out = bytearray()
        while chunk := os.read(fd, MiB):
            out += chunk
        return bytes(out)
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- round trips


def test_files_dirs_rename_unlink_round_trips(protofs):
    m = protofs.mnt
    rng = random.Random(5)
    data = rng.randbytes(300_000)
    a = m / "a"
    fd = os.open(a, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o640)
    try:
        assert os.pwrite(fd, data, 0) == len(data)
        assert os.pwrite(fd, b"tail", 400_000) == 4
    finally:
        os.close(fd)
    st = os.stat(a)
    assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o640
    assert st.st_size == 400_004 and st.st_nlink == 1
    assert read_uncached(a) == data + bytes(100_000) + b"tail"  # the hole reads as zeros
    assert int(os.getxattr(a, READS)) > 0  # the contents came through READ requests
    with pytest.raises(FileExistsError):
        os.open(a, os.O_CREAT | os.O_EXCL | os.O_WRONLY)

    # directories, and a listing that takes several READDIR requests
    d = m / "d"
    os.mkdir(d, 0o750)
    assert stat.S_ISDIR(os.stat(d).st_mode) and os.stat(m).st_nlink == 3
    names = {f"file-with-a-longish-name-{i:04d}" for i in range(400)}
    for n in names:
        os.close(os.open(d / n, os.O_CREAT | os.O_WRONLY, 0o644))
    assert set(os.listdir(d)) == names
    assert sorted(os.listdir(m)) == ["a", "d"]
    with pytest.raises(OSError) as e:
        os.rmdir(d)
    assert e.value.errno == errno.ENOTEMPTY

    # rename: to a new name in another dir, then over an existing file
    os.rename(a, d / "b")
    assert not a.exists() and read_uncached(d / "b")[-4:] == b"tail"
    (m / "c").write_bytes(b"old")
    os.rename(d / "b", m / "c")
    assert os.stat(m / "c").st_size == 400_004 and not (d / "b").exists()
    os.symlink("c", m / "s")
    assert os.readlink(m / "s") == "c" and os.stat(m / "s").st_size == 400_004

    # truncate, unlink
    os.truncate(m / "c", 10)
    assert read_uncached(m / "c") == data[:10]
    for p in (m / "c", m / "s", *(d / n for n in names)):
        os.unlink(p)
    with pytest.raises(FileNotFoundError):
        os.stat(m / "c")
    os.rmdir(d)
    assert os.listdir(m) == [] and os.stat(m).st_nlink == 2


def test_xattr_round_trips_and_setxattr_flags(protofs):
    m = protofs.mnt
    p = m / "x"
    p.write_bytes(b"")
    os.setxattr(p, "user.k", b"v1")
    assert os.getxattr(p, "user.k") == b"v1"
    os.setxattr(p, "user.k", b"v2")
    os.setxattr(p, "user.big", bytes(range(256)) * 16)
    assert os.getxattr(p, "user.k") == b"v2"
    assert os.getxattr(p, "user.big") == bytes(range(256)) * 16
    assert sorted(os.listxattr(p)) == ["user.big", "user.k"]
    os.removexattr(p, "user.big")
    assert os.listxattr(p) == ["user.k"]
    with pytest.raises(OSError) as e:
        os.getxattr(p, "user.big")
    assert e.value.errno == errno.ENODATA
    with pytest.raises(OSError) as e:
        os.removexattr(p, "user.big")
    assert e.value.errno == errno.ENODATA

    # the flags reach the handler, and its answers reach the caller
    base = len(protofs.stats()["setxattr_flags"])
    os.setxattr(p, "user.a", b"1", os.XATTR_CREATE)
    with pytest.raises(OSError) as e:
        os.setxattr(p, "user.a", b"2", os.XATTR_CREATE)
    assert e.value.errno == errno.EEXIST
    with pytest.raises(OSError) as e:
        os.setxattr(p, "user.missing", b"2", os.XATTR_REPLACE)
    assert e.value.errno == errno.ENODATA
    os.setxattr(p, "user.a", b"3", os.XATTR_REPLACE)
    with pytest.raises(OSError) as e:
        os.setxattr(p, "user.a", b"4", os.XATTR_CREATE | os.XATTR_REPLACE)
    assert e.value.errno == errno.EINVAL  # what ProtocolTestFs answers for flags 3
    assert protofs.stats()["setxattr_flags"][base:] == [1, 1, 2, 2, 3]
    assert os.getxattr(p, "user.a") == b"3"


def test_a_1mib_write_is_one_write_request(protofs):
    p = protofs.mnt / "big"
    buf = mmap.mmap(-1, MiB)  # page-aligned
    data = random.Random(9).randbytes(MiB)
    buf.write(data)
    fd = os.open(p, os.O_CREAT | os.O_WRONLY, 0o644)
    try:
        assert os.write(fd, buf) == MiB
    finally:
        os.close(fd)
        buf.close()
    assert json.loads(os.getxattr(p, WRITES)) == [MiB]
    assert read_uncached(p) == data


# --------------------------------------------------------------------------- interrupts

BLOCKED_READER = """
import os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
print("reading", flush=True)
os.read(fd, 4096)
print("read returned", flush=True)
"""

# read(2) through libc: Python's os.read would retry an EINTR whose handler did not raise
SIGINT_READER = """
import ctypes, json, os, signal, sys
got = []
signal.signal(signal.SIGINT, lambda sig, frame: got.append(sig))
libc = ctypes.CDLL(None, use_errno=True)
fd = os.open(sys.argv[1], os.O_RDONLY)
buf = ctypes.create_string_buffer(4096)
print("reading", flush=True)
n = libc.read(fd, buf, 4096)
err = ctypes.get_errno()
signal.signal(signal.SIGINT, signal.SIG_DFL)
print(json.dumps({"n": n, "errno": err, "signals": got}), flush=True)
"""


def start_blocked_reader(protofs, name: str, code: str) -> subprocess.Popen:
    path = protofs.mnt / name
    os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o644))
    os.truncate(path, 4096)  # something to read: the read reaches the handler
    before = protofs.stats()
    r = protofs.reader(code, str(path))
    assert r.stdout.readline().strip() == "reading", r.stderr.read()
    wait_for(lambda: protofs.stats()["blocked"] == before["blocked"] + 1, 10,
             "the read to block in the handler")
    # waiting for the answer to a request it sent, interruptibly
    assert wait_for(lambda: proc_state(r.pid) in ("S", "D"), 5, "the reader to sleep")
    return r


def wait_idle(protofs, interrupted: int) -> dict:
    """The fs once no request is in flight and `interrupted` reads were cancelled."""
    def idle():
        s = protofs.stats()
        return s if (s["in_flight"], s["blocked"], s["interrupted"]) == (0, 0, interrupted) \
            else None
    return wait_for(idle, 5, f"no request in flight and {interrupted} reads interrupted "
                             f"(now {protofs.stats()})")


def test_sigkill_of_a_reader_blocked_in_an_interruptible_read(protofs):
    r = start_blocked_reader(protofs, "block-kill", BLOCKED_READER)
    os.kill(r.pid, signal.SIGKILL)
    # a fatal signal: the kernel sends INTERRUPT and waits (in D state) for the answer; the
    # handler is cancelled and answers EINTR, and the process can die
    try:
        assert r.wait(5) == -signal.SIGKILL
    except subprocess.TimeoutExpired:
        pytest.fail(f"the killed reader was not reaped within 5 s (state "
                    f"{proc_state(r.pid)!r}): the INTERRUPT did not end its request")
    wait_idle(protofs, interrupted=1)
    assert os.listdir(protofs.mnt) == ["block-kill"]  # still serving


def test_sigint_to_a_reader_blocked_in_a_read_gets_eintr(protofs):
    r = start_blocked_reader(protofs, "block-int", SIGINT_READER)
    os.kill(r.pid, signal.SIGINT)
    try:
        out, err = r.communicate(timeout=5)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the reader's read did not return within 5 s of SIGINT (state "
                    f"{proc_state(r.pid)!r})")
    assert r.returncode == 0, err
    res = json.loads(out.strip().splitlines()[-1])
    assert res == {"n": -1, "errno": errno.EINTR, "signals": [signal.SIGINT]}
    wait_idle(protofs, interrupted=1)
    # and the fs still serves reads
    (protofs.mnt / "plain").write_bytes(b"still here")
    assert read_uncached(protofs.mnt / "plain") == b"still here"


# --------------------------------------------------------------------------- lifecycle


def test_umount_ends_the_daemon(protofs):
    subprocess.run(["umount", str(protofs.mnt)], check=True, timeout=30)
    assert protofs.proc.wait(10) == 0, protofs.log_text()
    assert not is_mounted(protofs.mnt)


def test_sigterm_unmounts_and_ends_the_daemon(protofs):
    protofs.proc.terminate()
    assert protofs.proc.wait(10) == 0, protofs.log_text()
    assert not is_mounted(protofs.mnt)


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "serve":
        serve(sys.argv[2], sys.argv[3])
    else:
        sys.exit(f"usage: {sys.argv[0]} serve MOUNTPOINT READY_FILE")
