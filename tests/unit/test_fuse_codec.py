"""fs.fuse on request and reply bytes, without a kernel: a SOCK_SEQPACKET pair stands in for
/dev/fuse (one message per read, one per writev), a test drives the "kernel" end.

Covers the struct sizes against linux/fuse.h, INIT negotiation, the request parsers and
reply builders of each opcode family, forgets (inline, no reply), interrupts (an
interruptible handler is cancelled and answered EINTR, another runs on), errors, unknown
opcodes, malformed requests, and the notification messages.
"""

from __future__ import annotations

import errno
import logging
import mmap
import os
import socket
import struct

import pytest
import trio

from fs import fuse
from fs.fuse import abi
from fs.fuse.session import Session

# sizeof() of each struct in linux/fuse.h 7.38 (gcc on this header)
HEADER_SIZES = {
    "IN_HEADER": 40, "OUT_HEADER": 16, "ATTR": 88, "ENTRY_OUT": 128, "ATTR_OUT": 104,
    "INIT_IN": 64, "INIT_OUT": 64, "GETATTR_IN": 16, "SETATTR_IN": 88, "MKNOD_IN": 16,
    "MKDIR_IN": 8, "RENAME2_IN": 16, "OPEN_IN": 8, "CREATE_IN": 16, "OPEN_OUT": 16,
    "RELEASE_IN": 24, "FLUSH_IN": 24, "READ_IN": 40, "WRITE_IN": 40, "WRITE_OUT": 8,
    "STATFS_OUT": 80, "FSYNC_IN": 16, "SETXATTR_IN": 16, "GETXATTR_IN": 8,
    "FALLOCATE_IN": 32, "LSEEK_IN": 24, "COPY_FILE_RANGE_IN": 56, "IOCTL_IN": 32,
    "IOCTL_OUT": 16, "NOTIFY_INVAL_INODE_OUT": 24, "NOTIFY_INVAL_ENTRY_OUT": 16,
    "NOTIFY_DELETE_OUT": 24, "DIRENT": 24, "BATCH_FORGET_IN": 8, "FORGET_ONE": 16,
}


@pytest.mark.parametrize("name", sorted(HEADER_SIZES))
def test_struct_sizes_match_the_kernel_header(name):
    assert getattr(abi, name).size == HEADER_SIZES[name]


def attrs(ino: int, mode: int = 0o100644, size: int = 0) -> fuse.EntryAttributes:
    a = fuse.EntryAttributes()
    a.st_ino, a.st_mode, a.st_size, a.st_nlink = ino, mode, size, 1
    a.st_mtime_ns = 5_000_000_007
    return a


class Ops(fuse.Operations):
    interruptible = frozenset({"read"})

    def __init__(self) -> None:
        self.calls: list[tuple] = []
        self.forgotten: list[tuple[int, int]] = []
        self.block = trio.Event()
        self.blocked = trio.Event()

    def forget(self, inode_list):
        self.forgotten.extend(inode_list)

    async def lookup(self, parent_inode, name, ctx):
        self.calls.append(("lookup", parent_inode, name, ctx.uid, ctx.gid, ctx.pid))
        if name == b"missing":
            raise fuse.FUSEError(errno.ENOENT)
        if name == b"bug":
            raise RuntimeError("a bug")
        return attrs(10)

    async def getattr(self, inode, ctx):
        return attrs(inode, size=12345)

    async def setattr(self, inode, attr, fields, fh, ctx):
        self.calls.append(("setattr", inode, fields.update_mode, attr.st_mode,
                           fields.update_mtime, fields.mtime_now, fields.update_size,
                           attr.st_size, fh))
        return attrs(inode)

    async def mkdir(self, parent_inode, name, mode, ctx):
        self.calls.append(("mkdir", parent_inode, name, mode, ctx.umask))
        return attrs(11, 0o40755)

    async def rename(self, p_old, n_old, p_new, n_new, flags, ctx):
        self.calls.append(("rename", p_old, n_old, p_new, n_new, flags))

    async def read(self, fh, off, size):
        if fh == 99:
            self.blocked.set()
            await self.block.wait()
        return b"x" * min(size, 100)

    async def write(self, fh, off, buf):
        self.calls.append(("write", fh, off, len(buf), bytes(buf[:4]), type(buf).__name__))
        self.write_buffer = buf.obj
        if fh == 99:
            self.blocked.set()
            await self.block.wait()
        return len(buf)

    async def setxattr(self, inode, name, value, flags, ctx):
        self.calls.append(("setxattr", inode, name, value, flags))

    async def getxattr(self, inode, name, ctx):
        return b"value!"

    async def listxattr(self, inode, ctx):
        return [b"user.a", b"user.bb"]

    async def opendir(self, inode, ctx):
        return 7

    async def readdir(self, fh, start_id, token):
        for i, name in enumerate([b".", b"..", b"a", b"bbbbbbbbb"]):
            if i < start_id:
                continue
            if not fuse.readdir_reply(token, name, attrs(20 + i, 0o40755 if i < 2 else 0o100644),
                                      i + 1):
                break

    async def fallocate(self, fh, mode, off, length, ctx):
        self.calls.append(("fallocate", fh, mode, off, length))

    async def lseek(self, fh, off, whence, ctx):
        return off + whence

    async def tmpfile(self, parent_inode, mode, flags, ctx):
        self.calls.append(("tmpfile", parent_inode, mode, flags, ctx.umask))
        return fuse.FileInfo(fh=3), attrs(12)


class Kernel:
    """The kernel end of the fake /dev/fuse."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.unique = 0

    def send(self, opcode: int, body: bytes, nodeid: int = 1, unique: int | None = None,
             length: int | None = None) -> int:
        if unique is None:
            self.unique += 2
            unique = self.unique
        size = abi.IN_HEADER.size + len(body) if length is None else length
        self.sock.send(abi.IN_HEADER.pack(size, opcode, unique, nodeid, 1000, 100, 4242, 0, 0)
                       + body)
        return unique

    async def recv(self) -> tuple[int, int, bytes]:
        await trio.lowlevel.wait_readable(self.sock)
        msg = self.sock.recv(4 << 20)
        length, err, unique = abi.OUT_HEADER.unpack_from(msg)
        assert length == len(msg)
        return unique, err, msg[abi.OUT_HEADER.size:]

    async def call(self, opcode: int, body: bytes, nodeid: int = 1) -> tuple[int, bytes]:
        unique = self.send(opcode, body, nodeid)
        got, err, payload = await self.recv()
        assert got == unique
        return err, payload

    async def init(self, flags: int = 0xFFFFFFFF) -> bytes:
        err, out = await self.call(abi.INIT, abi.INIT_IN.pack(7, 44, 131072, flags, 0))
        assert err == 0
        return out


def run_session(test, acl: bool = True, ops: Ops | None = None):
    """Run `test(kernel, ops, session)` against a Session serving `ops` (default: a new
    Ops) on a socket pair."""
    ops = ops or Ops()
    k_end, d_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    d_end.setblocking(False)
    session = Session(ops, "/nonexistent", set(), acl=acl)
    session.fd = d_end.fileno()

    async def main():
        async with trio.open_nursery() as nursery:
            nursery.start_soon(session.run)
            with trio.fail_after(10):
                await test(Kernel(k_end), ops, session)
            session.terminate()

    try:
        trio.run(main)
    finally:
        k_end.close()
        d_end.close()
    return ops, session


def test_init_negotiates_big_writes_acl_and_setxattr_flags():
    async def t(k, ops, session):
        out = await k.init()
        (major, minor, readahead, flags, _, _, max_write, time_gran, max_pages, _,
         _) = abi.INIT_OUT.unpack(out)
        assert (major, minor, readahead) == (7, 38, 131072)
        assert max_write == 1 << 20 and max_pages == 256 and time_gran == 1
        for f in (abi.ASYNC_READ, abi.ATOMIC_O_TRUNC, abi.BIG_WRITES, abi.MAX_PAGES,
                  abi.POSIX_ACL, abi.DONT_MASK, abi.SETXATTR_EXT, abi.DO_READDIRPLUS,
                  abi.AUTO_INVAL_DATA, abi.PARALLEL_DIROPS):
            assert flags & f, hex(f)
        for f in (abi.WRITEBACK_CACHE, abi.POSIX_LOCKS, abi.HANDLE_KILLPRIV):
            assert not flags & f, hex(f)
        assert session.inited and session.setxattr_ext and session.dont_mask

    run_session(t)


def test_init_only_takes_what_the_kernel_offers_and_refuses_old_protocols():
    async def t(k, ops, session):
        out = await k.init(flags=abi.ASYNC_READ | abi.BIG_WRITES)
        flags = abi.INIT_OUT.unpack(out)[3]
        assert flags == abi.ASYNC_READ | abi.BIG_WRITES
        # no MAX_PAGES: 32 pages is all the kernel will send
        assert abi.INIT_OUT.unpack(out)[6] == 32 * 4096
        assert not session.setxattr_ext

    run_session(t, acl=False)

    async def old(k, ops, session):
        err, _ = await k.call(abi.INIT, abi.INIT_IN.pack(7, 20, 0, 0, 0))
        assert err == -errno.EPROTO

    run_session(old)


def test_lookup_entry_reply_and_credentials():
    async def t(k, ops, session):
        await k.init()
        err, out = await k.call(abi.LOOKUP, b"name\0", nodeid=5)
        assert err == 0 and len(out) == abi.ENTRY_OUT.size
        fields = abi.ENTRY_OUT.unpack(out)
        assert fields[0] == 10  # nodeid
        assert fields[6] == 10  # attr.ino
        assert fields[10] == 5 and fields[13] == 7  # mtime secs and nsecs
        assert ops.calls[-1] == ("lookup", 5, b"name", 1000, 100, 4242)
        assert (await k.call(abi.LOOKUP, b"missing\0"))[0] == -errno.ENOENT

    run_session(t)


def test_handler_bug_is_eio_and_logged(caplog):
    async def t(k, ops, session):
        await k.init()
        with caplog.at_level(logging.ERROR):
            assert (await k.call(abi.LOOKUP, b"bug\0"))[0] == -errno.EIO

    run_session(t)
    assert "lookup request failed" in caplog.text


def test_getattr_and_setattr():
    async def t(k, ops, session):
        await k.init()
        err, out = await k.call(abi.GETATTR, abi.GETATTR_IN.pack(0, 0, 0), nodeid=9)
        assert err == 0 and len(out) == abi.ATTR_OUT.size
        assert abi.ATTR_OUT.unpack(out)[3] == 9 and abi.ATTR_OUT.unpack(out)[4] == 12345
        valid = abi.FATTR_MODE | abi.FATTR_MTIME | abi.FATTR_MTIME_NOW | abi.FATTR_FH
        body = abi.SETATTR_IN.pack(valid, 0, 77, 0, 0, 0, 0, 0, 0, 0, 0, 0o100600, 0, 0, 0, 0)
        err, out = await k.call(abi.SETATTR, body, nodeid=9)
        assert err == 0
        assert ops.calls[-1] == ("setattr", 9, True, 0o100600, True, True, False, 0, 77)

    run_session(t)


def test_mkdir_passes_the_umask_and_rename2_its_flags():
    async def t(k, ops, session):
        await k.init()
        err, _ = await k.call(abi.MKDIR, abi.MKDIR_IN.pack(0o777, 0o022) + b"d\0", nodeid=3)
        assert err == 0
        assert ops.calls[-1] == ("mkdir", 3, b"d", 0o777, 0o022)
        body = abi.RENAME2_IN.pack(4, fuse.RENAME_NOREPLACE, 0) + b"old\0new\0"
        assert (await k.call(abi.RENAME2, body, nodeid=3))[0] == 0
        assert ops.calls[-1] == ("rename", 3, b"old", 4, b"new", 1)
        body = abi.RENAME_IN.pack(4) + b"a\0b\0"
        assert (await k.call(abi.RENAME, body, nodeid=3))[0] == 0
        assert ops.calls[-1] == ("rename", 3, b"a", 4, b"b", 0)

    run_session(t)


def test_names_without_nul_are_einval():
    async def t(k, ops, session):
        await k.init()
        assert (await k.call(abi.LOOKUP, b"unterminated"))[0] == -errno.EINVAL
        assert (await k.call(abi.RENAME2, abi.RENAME2_IN.pack(4, 0, 0) + b"a\0b"))[0] == \
            -errno.EINVAL

    run_session(t)


def test_read_and_write_replies_and_big_writes_keep_their_buffer():
    async def t(k, ops, session):
        await k.init()
        err, out = await k.call(abi.READ, abi.READ_IN.pack(1, 0, 50, 0, 0, 0, 0))
        assert err == 0 and out == b"x" * 50
        data = b"abcd" * (1 << 15)  # 128 KiB: a socket pair takes no 1 MiB message
        err, out = await k.call(abi.WRITE, abi.WRITE_IN.pack(1, 4096, len(data), 0, 0, 0, 0)
                                + data)
        assert err == 0 and abi.WRITE_OUT.unpack(out)[0] == 1 << 17
        assert ops.calls[-1] == ("write", 1, 4096, 1 << 17, b"abcd", "memoryview")
        # the handler got a view of the worker's read buffer itself: no copy
        assert isinstance(ops.write_buffer, mmap.mmap)
        # a write whose size field disagrees with its payload
        err, _ = await k.call(abi.WRITE, abi.WRITE_IN.pack(1, 0, 100, 0, 0, 0, 0) + b"12")
        assert err == -errno.EINVAL

    run_session(t)


def test_setxattr_flags_reach_the_handler():
    async def t(k, ops, session):
        await k.init()
        body = abi.SETXATTR_IN.pack(3, 3, 0, 0) + b"user.x\0val"
        assert (await k.call(abi.SETXATTR, body, nodeid=8))[0] == 0
        assert ops.calls[-1] == ("setxattr", 8, b"user.x", b"val", 3)

    run_session(t)


def test_getxattr_and_listxattr_sizes():
    async def t(k, ops, session):
        await k.init()
        err, out = await k.call(abi.GETXATTR, abi.GETXATTR_IN.pack(0, 0) + b"user.a\0")
        assert err == 0 and abi.GETXATTR_OUT.unpack(out)[0] == 6
        err, out = await k.call(abi.GETXATTR, abi.GETXATTR_IN.pack(64, 0) + b"user.a\0")
        assert err == 0 and out == b"value!"
        err, _ = await k.call(abi.GETXATTR, abi.GETXATTR_IN.pack(3, 0) + b"user.a\0")
        assert err == -errno.ERANGE
        err, out = await k.call(abi.LISTXATTR, abi.GETXATTR_IN.pack(0, 0))
        assert abi.GETXATTR_OUT.unpack(out)[0] == len(b"user.a\0user.bb\0")
        err, out = await k.call(abi.LISTXATTR, abi.GETXATTR_IN.pack(100, 0))
        assert out == b"user.a\0user.bb\0"

    run_session(t)


def parse_dirents(buf: bytes, plus: bool) -> list[tuple]:
    out, off = [], 0
    while off < len(buf):
        nodeid = None
        if plus:
            nodeid = abi.ENTRY_OUT.unpack_from(buf, off)[0]
            off += abi.ENTRY_OUT.size
        ino, next_off, namelen, typ = abi.DIRENT.unpack_from(buf, off)
        name = buf[off + abi.DIRENT.size:off + abi.DIRENT.size + namelen]
        rec = abi.DIRENT.size + namelen
        off += rec + (-rec % 8)
        out.append((name, ino, next_off, typ, nodeid))
    assert off == len(buf)
    return out


def test_readdir_and_readdirplus_records():
    async def t(k, ops, session):
        await k.init()
        err, out = await k.call(abi.READDIR, abi.READ_IN.pack(7, 0, 4096, 0, 0, 0, 0))
        assert err == 0
        assert parse_dirents(out, plus=False) == [
            (b".", 20, 1, 4, None), (b"..", 21, 2, 4, None), (b"a", 22, 3, 8, None),
            (b"bbbbbbbbb", 23, 4, 8, None)]
        err, out = await k.call(abi.READDIRPLUS, abi.READ_IN.pack(7, 1, 4096, 0, 0, 0, 0))
        got = parse_dirents(out, plus=True)
        # the dot entry carries no nodeid (the kernel takes no lookup of it)
        assert [(n, nid) for n, _, _, _, nid in got] == [(b"..", 0), (b"a", 22),
                                                         (b"bbbbbbbbb", 23)]
        # a buffer too small for the second record: only the first comes back
        size = abi.DIRENT.size + 8
        err, out = await k.call(abi.READDIR, abi.READ_IN.pack(7, 2, size, 0, 0, 0, 0))
        assert [n for n, *_ in parse_dirents(out, plus=False)] == [b"a"]

    run_session(t)


def test_forgets_are_inline_and_unanswered():
    async def t(k, ops, session):
        await k.init()
        k.send(abi.FORGET, abi.FORGET_IN.pack(3), nodeid=44)
        k.send(abi.BATCH_FORGET, abi.BATCH_FORGET_IN.pack(2, 0) + abi.FORGET_ONE.pack(45, 1)
               + abi.FORGET_ONE.pack(46, 2))
        # a truncated batch is ignored
        k.send(abi.BATCH_FORGET, abi.BATCH_FORGET_IN.pack(5, 0) + abi.FORGET_ONE.pack(47, 1))
        # the next reply is the getattr's: the forgets got none
        err, _ = await k.call(abi.GETATTR, abi.GETATTR_IN.pack(0, 0, 0))
        assert err == 0
        assert ops.forgotten == [(44, 3), (45, 1), (46, 2)]

    run_session(t)


def test_interrupt_cancels_an_interruptible_handler():
    async def t(k, ops, session):
        await k.init()
        unique = k.send(abi.READ, abi.READ_IN.pack(99, 0, 10, 0, 0, 0, 0))
        await ops.blocked.wait()
        assert session.in_flight == 1
        k.send(abi.INTERRUPT, abi.INTERRUPT_IN.pack(unique))
        got, err, _ = await k.recv()
        assert (got, err) == (unique, -errno.EINTR)
        assert session.in_flight == 0

    run_session(t)


def test_interrupt_leaves_other_handlers_running():
    async def t(k, ops, session):
        await k.init()
        unique = k.send(abi.WRITE, abi.WRITE_IN.pack(99, 0, 3, 0, 0, 0, 0) + b"abc")
        await ops.blocked.wait()
        k.send(abi.INTERRUPT, abi.INTERRUPT_IN.pack(unique))
        k.send(abi.INTERRUPT, abi.INTERRUPT_IN.pack(12345))  # unknown: ignored
        await trio.sleep(0.05)
        assert session.in_flight == 1
        ops.block.set()
        got, err, out = await k.recv()
        assert (got, err) == (unique, 0) and abi.WRITE_OUT.unpack(out)[0] == 3

    run_session(t)


def test_unknown_opcode_is_enosys_and_logged_once(caplog):
    async def t(k, ops, session):
        await k.init()
        with caplog.at_level(logging.WARNING):
            assert (await k.call(200, b""))[0] == -errno.ENOSYS
            assert (await k.call(200, b""))[0] == -errno.ENOSYS
            # a default Operations handler answers ENOSYS too
            assert (await k.call(abi.READLINK, b""))[0] == -errno.ENOSYS

    run_session(t)
    assert caplog.text.count("opcode 200") == 1


def test_malformed_length_is_ignored():
    async def t(k, ops, session):
        await k.init()
        k.send(abi.LOOKUP, b"x\0", length=999)
        err, _ = await k.call(abi.GETATTR, abi.GETATTR_IN.pack(0, 0, 0))
        assert err == 0
        assert not [c for c in ops.calls if c[0] == "lookup"]

    run_session(t)


def test_fallocate_lseek_tmpfile():
    async def t(k, ops, session):
        await k.init()
        err, _ = await k.call(abi.FALLOCATE, abi.FALLOCATE_IN.pack(5, 4096, 8192, 1, 0))
        assert err == 0 and ops.calls[-1] == ("fallocate", 5, 1, 4096, 8192)
        err, out = await k.call(abi.LSEEK, abi.LSEEK_IN.pack(5, 100, 3, 0))
        assert err == 0 and abi.LSEEK_OUT.unpack(out)[0] == 103
        err, out = await k.call(abi.TMPFILE, abi.CREATE_IN.pack(os.O_RDWR, 0o100777, 0o022, 0),
                                nodeid=2)
        assert err == 0 and len(out) == abi.ENTRY_OUT.size + abi.OPEN_OUT.size
        assert abi.ENTRY_OUT.unpack_from(out)[0] == 12
        assert abi.OPEN_OUT.unpack_from(out, abi.ENTRY_OUT.size)[0] == 3
        assert ops.calls[-1] == ("tmpfile", 2, 0o100777, os.O_RDWR, 0o022)
        # ioctl: the default answers ENOTTY
        body = abi.IOCTL_IN.pack(5, 0, 0x80086601, 0, 0, 8)
        assert (await k.call(abi.IOCTL, body))[0] == -errno.ENOTTY

    run_session(t)


def test_notification_messages():
    k_end, d_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    session = Session(Ops(), "/nonexistent", set())
    session.fd = d_end.fileno()
    try:
        session.notify_inval_inode(5, attr_only=True)
        session.notify_inval_inode(6, attr_only=False)
        session.notify_inval_entry(1, b"name")
        session.notify_delete(1, 7, b"gone")
        msgs = [k_end.recv(4096) for _ in range(4)]
    finally:
        k_end.close()
        d_end.close()
    heads = [abi.OUT_HEADER.unpack_from(m) for m in msgs]
    assert [(h[1], h[2]) for h in heads] == [(abi.NOTIFY_INVAL_INODE, 0),
                                              (abi.NOTIFY_INVAL_INODE, 0),
                                              (abi.NOTIFY_INVAL_ENTRY, 0), (abi.NOTIFY_DELETE, 0)]
    assert all(h[0] == len(m) for h, m in zip(heads, msgs, strict=True))
    assert abi.NOTIFY_INVAL_INODE_OUT.unpack_from(msgs[0], 16) == (5, -1, 0)
    assert abi.NOTIFY_INVAL_INODE_OUT.unpack_from(msgs[1], 16) == (6, 0, 0)
    assert msgs[2][16:] == abi.NOTIFY_INVAL_ENTRY_OUT.pack(1, 4, 0) + b"name\0"
    assert msgs[3][16:] == abi.NOTIFY_DELETE_OUT.pack(1, 7, 4, 0) + b"gone\0"
    session.fd = -1
    with pytest.raises(OSError):
        session.notify_inval_inode(5, attr_only=True)


def test_mount_options_become_flags_and_data():
    from fs.fuse import kernel

    fsname, subtype, flags, data = kernel.parse_options(
        {"fsname=/dev/a\\,b", "subtype=scoutfs", "default_permissions", "allow_other", "dev",
         "suid", "noatime", "ro"})
    assert (fsname, subtype) == ("/dev/a,b", "scoutfs")
    assert flags == kernel.MS_NOATIME | kernel.MS_RDONLY
    assert sorted(data) == ["allow_other", "default_permissions"]
    _, _, flags, _ = kernel.parse_options({"nodev"})
    assert flags == kernel.MS_NOSUID | kernel.MS_NODEV
    with pytest.raises(kernel.MountFailed):
        kernel.parse_options({"bogus"})


def test_struct_layout_of_a_setattr_is_field_exact():
    # the kernel's field order: valid padding fh size lock_owner atime mtime ctime ...
    raw = abi.SETATTR_IN.pack(1, 0, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 0, 12, 13, 0)
    assert struct.unpack_from("<I", raw, 0)[0] == 1
    assert struct.unpack_from("<Q", raw, 16)[0] == 3  # size
    assert struct.unpack_from("<I", raw, 68)[0] == 11  # mode
    assert struct.unpack_from("<I", raw, 76)[0] == 12  # uid


def test_times_before_1970_round_trip():
    """Seconds are signed (the kernel's time64_t in u64 fields): 1960 arrives and leaves."""

    class TimeOps(Ops):
        async def setattr(self, inode, attr, fields, fh, ctx):
            a = attrs(inode)
            a.st_mtime_ns = attr.st_mtime_ns
            return a

    secs = -301233600

    async def t(k, ops, session):
        await k.init()
        body = abi.SETATTR_IN.pack(abi.FATTR_MTIME, 0, 0, 0, 0, 0, secs, 0, 0, 500000000,
                                   0, 0, 0, 0, 0, 0)
        err, out = await k.call(abi.SETATTR, body, nodeid=9)
        assert err == 0
        fields = abi.ATTR_OUT.unpack(out)
        assert (fields[7], fields[10]) == (secs, 500000000)  # mtime, mtimensec

    run_session(t, ops=TimeOps())


def test_a_waiting_handler_sees_the_interrupt_and_its_callers_exit():
    """Interruptible waits (offline data) in a handler that is not cancelled: the request's
    InterruptToken fires on INTERRUPT, and when the calling process exits (a background
    request, readahead, is never interrupted by the kernel: the session watches a pidfd)."""
    import subprocess

    import trio.testing

    from fs.context import current_interrupt

    class WaitOps(Ops):
        interruptible = frozenset()

        async def read(self, fh, off, size):
            ev = trio.Event()
            current_interrupt.get().add(ev.set)
            self.blocked.set()
            await ev.wait()
            raise fuse.FUSEError(errno.EINTR)

    def send_as(k, pid):
        k.unique += 2
        body = abi.READ_IN.pack(1, 0, 10, 0, 0, 0, 0)
        k.sock.send(abi.IN_HEADER.pack(abi.IN_HEADER.size + len(body), abi.READ, k.unique, 1,
                                       0, 0, pid, 0, 0) + body)
        return k.unique

    async def t(k, ops, session):
        await k.init()
        unique = k.send(abi.READ, abi.READ_IN.pack(1, 0, 10, 0, 0, 0, 0))
        await ops.blocked.wait()
        k.send(abi.INTERRUPT, abi.INTERRUPT_IN.pack(unique))
        got, err, _ = await k.recv()
        assert (got, err) == (unique, -errno.EINTR)

        proc = subprocess.Popen(["sleep", "30"])
        try:
            ops.blocked = trio.Event()
            unique = send_as(k, proc.pid)
            await ops.blocked.wait()
            await trio.testing.wait_all_tasks_blocked()
            assert session.in_flight == 1
            proc.kill()
            proc.wait()
            got, err, _ = await k.recv()
            assert (got, err) == (unique, -errno.EINTR)
            assert session.in_flight == 0
        finally:
            proc.kill()
            proc.wait()

    run_session(t, ops=WaitOps())
