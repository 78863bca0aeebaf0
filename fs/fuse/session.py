"""One FUSE connection: reads requests from /dev/fuse, runs `Operations` handlers, writes
replies and notifications.

Protocol: `linux/fuse.h` 7.38 (`fs.fuse.abi`).  INIT negotiates 1 MiB writes (MAX_PAGES,
BIG_WRITES), ASYNC_READ, PARALLEL_DIROPS, AUTO_INVAL_DATA, ATOMIC_O_TRUNC, DO_READDIRPLUS,
SETXATTR_EXT (setxattr flags reach the filesystem), and with ``acl`` POSIX_ACL and DONT_MASK
(create modes arrive unmasked with the caller's umask).  No writeback cache: the cluster owns
mtime and size.

Concurrency (trio): a pool of worker tasks (`_worker`), each reading a request from
/dev/fuse (non-blocking, woken by `trio.lowlevel.wait_readable`) into its own buffer and
serving it inline; one worker waits on the device at a time, and the worker that got a
request starts another if none is left waiting, so a handler waiting for a cluster lock never
stops the others.  FORGET, BATCH_FORGET and INTERRUPT are handled without awaiting.  A reply
is one writev(2), atomic in the kernel, so workers and the notifier threads (`notify_*`, safe
from any thread) never interleave bytes.  An INTERRUPT cancels its request's handler only
when the handler is listed in `Operations.interruptible` (a handler that changes state is
never cut between two awaits); the request is then answered EINTR.  When the kernel ends the
connection (umount, abort) or `terminate` is called, `run` stops reading, waits (boundedly)
for the handlers in flight and returns.

Buffers: each worker reads into its own 1 MiB + 4 KiB anonymous mapping (pages are only
touched when used), and handlers get views of it: no request is copied, write data included.
A handler must not keep a view after it returns.  Read replies go out with writev straight
from the handler's buffer.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import mmap
import os
import select
import stat
import time
from typing import Any

import trio

from fs.context import InterruptToken, current_interrupt
from fs.fuse import abi, kernel
from fs.fuse.ops import Operations, ReaddirToken
from fs.fuse.types import EntryAttributes, FUSEError, RequestContext, SetattrFields

log = logging.getLogger(__name__)

MAX_WRITE = 1 << 20
MAX_PAGES = MAX_WRITE // 4096
BUF_SIZE = MAX_WRITE + 4096
MAX_WORKERS = 10000  # requests served at once (each may wait for a cluster lock)
MAX_IDLE = 8  # idle workers kept
DRAIN_TIMEOUT = 5.0  # at the end, how long handlers in flight get to answer
_HDR = abi.IN_HEADER.size
_OUT_HDR = abi.OUT_HEADER.size


def _split_ns(ns: int) -> tuple[int, int]:
    return ns // 1_000_000_000, ns % 1_000_000_000


def _split_timeout(t: float) -> tuple[int, int]:
    if t <= 0:
        return 0, 0
    secs = int(t)
    return secs, int((t - secs) * 1e9)


def pack_attr_fields(a: EntryAttributes) -> tuple:
    at, atn = _split_ns(a.st_atime_ns)
    mt, mtn = _split_ns(a.st_mtime_ns)
    ct, ctn = _split_ns(a.st_ctime_ns)
    return (a.st_ino, a.st_size, a.st_blocks, at, mt, ct, atn, mtn, ctn, a.st_mode,
            a.st_nlink, a.st_uid, a.st_gid, a.st_rdev & 0xFFFFFFFF, a.st_blksize, 0)


def pack_entry(a: EntryAttributes) -> bytes:
    es, ens = _split_timeout(a.entry_timeout)
    ats, ans = _split_timeout(a.attr_timeout)
    return abi.ENTRY_OUT.pack(a.st_ino, a.generation, es, ats, ens, ans, *pack_attr_fields(a))


def pack_attr_out(a: EntryAttributes) -> bytes:
    ats, ans = _split_timeout(a.attr_timeout)
    return abi.ATTR_OUT.pack(ats, ans, 0, *pack_attr_fields(a))


def _dirent_bytes(name: bytes, ino: int, mode: int, next_id: int) -> bytes:
    dlen = abi.DIRENT.size + len(name)
    pad = -dlen % 8
    return abi.DIRENT.pack(ino, next_id, len(name), stat.S_IFMT(mode) >> 12) + name + \
        b"\0" * pad


def add_dirent(token: ReaddirToken, name: bytes, attr: EntryAttributes, next_id: int) -> bool:
    if token.plus:
        if name in (b".", b".."):
            # the kernel takes no lookup (nodeid 0: no entry to link) for the dot entries
            head = abi.ENTRY_OUT.pack(0, 0, 0, 0, 0, 0, *([0] * 16))
        else:
            head = pack_entry(attr)
        rec = head + _dirent_bytes(name, attr.st_ino, attr.st_mode, next_id)
    else:
        rec = _dirent_bytes(name, attr.st_ino, attr.st_mode, next_id)
    if token.used + len(rec) > token.size:
        return False
    token.parts.append(rec)
    token.used += len(rec)
    return True


def _cstr(body: memoryview, off: int = 0) -> tuple[bytes, int]:
    """The NUL-terminated string at body[off:], and the offset after its NUL."""
    raw = bytes(body[off:])
    end = raw.find(b"\0")
    if end < 0:
        raise FUSEError(errno.EINVAL)
    return raw[:end], off + end + 1


class Request:
    __slots__ = ("unique", "opcode", "nodeid", "ctx", "scope", "interrupted", "name", "token",
                 "exit_scope")

    def __init__(self, unique: int, opcode: int, nodeid: int, ctx: RequestContext):
        self.unique, self.opcode, self.nodeid, self.ctx = unique, opcode, nodeid, ctx
        self.scope: trio.CancelScope | None = None
        self.interrupted = False
        self.name = ""
        # fired on INTERRUPT: interruptible waits of any handler (offline data) watch it
        self.token = InterruptToken()
        self.exit_scope: trio.CancelScope | None = None  # of the caller's exit watcher


class Session:
    """A FUSE mount served by `ops`: `mount()`, then `await run()`; `close()` at the end."""

    def __init__(self, ops: Operations, mountpoint: str, options: set[str] | list[str], *,
                 acl: bool = False, max_write: int = MAX_WRITE):
        self.ops = ops
        self.mountpoint = mountpoint
        self.options = set(options)
        self.acl = acl
        self.max_write = max_write
        self.fd = -1
        self.proto_minor = 0
        self.inited = False
        self.dont_mask = False
        self.setxattr_ext = False
        self.readdirplus = False
        self.requests = 0  # served, for counters and tests
        self.on_init: Any = None  # called (no arguments, must not block) once INIT is answered
        self.unknown_logged: set[int] = set()
        self._inflight: dict[int, Request] = {}
        self._stop = False
        self._workers = 0
        self._idle = 0
        self._handlers = self._handler_table()

    # ---------------------------------------------------------------- lifecycle

    def mount(self) -> None:
        """Open /dev/fuse and mount it (kernel.MountFailed on failure)."""
        self.fd = kernel.mount_fuse(self.mountpoint, self.options)

    def terminate(self) -> None:
        """Make `run` return (from the trio thread): stop reading requests."""
        self._stop = True
        if self.fd >= 0:
            try:
                trio.lowlevel.notify_closing(self.fd)
            except (RuntimeError, OSError):
                pass

    def close(self, unmount: bool) -> None:
        """Detach the mount if asked and the connection still stands (once the kernel ended
        it, by umount or abort, the path may hold another mount), and close the fd."""
        if unmount and self.fd >= 0 and self._connected():
            try:
                kernel.unmount(self.mountpoint)
            except OSError as e:
                log.warning("unmounting %s failed: %s", self.mountpoint, e)
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            os.close(fd)

    def _connected(self) -> bool:
        p = select.poll()
        p.register(self.fd, 0)
        return not any(ev & (select.POLLERR | select.POLLNVAL) for _, ev in p.poll(0))

    @property
    def in_flight(self) -> int:
        return len(self._inflight)

    async def run(self) -> None:
        """Serve requests until the kernel ends the connection or `terminate` is called."""
        self._ended = trio.Event()
        self._read_lock = trio.Lock()
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            try:
                self._spawn_worker()
                await self._ended.wait()
            finally:
                with trio.move_on_after(DRAIN_TIMEOUT) as drain:
                    drain.shield = True
                    while self._inflight:
                        await trio.sleep(0.01)
                if self._inflight:
                    log.warning("%d FUSE requests still in flight at the end: cancelled",
                                len(self._inflight))
                nursery.cancel_scope.cancel()

    # Workers: each reads a request into its own buffer and serves it inline, so a request
    # costs no task of its own.  One worker at a time waits on /dev/fuse (the read lock);
    # the one that got a request starts another when none is left to read, so a handler
    # waiting for a cluster lock never stops the others.  Idle workers beyond MAX_IDLE end.

    def _spawn_worker(self) -> None:
        self._workers += 1
        self._nursery.start_soon(self._worker)

    async def _worker(self) -> None:
        buf = mmap.mmap(-1, BUF_SIZE)  # pages are only touched when used
        try:
            while not self._stop:
                self._idle += 1
                try:
                    async with self._read_lock:
                        n = await self._receive(buf)
                finally:
                    self._idle -= 1
                if n < 0:
                    self._ended.set()
                    return
                if self._idle == 0 and self._workers < MAX_WORKERS:
                    self._spawn_worker()
                await self._dispatch(buf, n)
                if self._idle >= MAX_IDLE:
                    return
        finally:
            self._workers -= 1
            with contextlib.suppress(BufferError):  # a view a handler kept: GC frees it
                buf.close()

    async def _receive(self, buf) -> int:
        """Read one request into buf: its length, or -1 when the connection ended."""
        fd = self.fd
        while not self._stop:
            try:
                return os.readv(fd, [buf])
            except BlockingIOError:
                try:
                    await trio.lowlevel.wait_readable(fd)
                except (trio.ClosedResourceError, OSError):
                    return -1
            except InterruptedError:
                continue
            except OSError as e:
                if e.errno == errno.ENOENT:  # the request was interrupted before we read it
                    continue
                if e.errno in (errno.ENODEV, errno.EBADF):  # unmounted or aborted
                    return -1
                raise
        return -1

    async def _dispatch(self, buf, n: int) -> None:
        if n < _HDR:
            log.error("short FUSE request of %d bytes: ignored", n)
            return
        length, opcode, unique, nodeid, uid, gid, pid, _, _ = abi.IN_HEADER.unpack_from(buf)
        if length != n:
            log.error("FUSE request length %d but %d bytes read: ignored", length, n)
            return
        self.requests += 1
        if opcode == abi.FORGET:
            (nlookup,) = abi.FORGET_IN.unpack_from(buf, _HDR)
            self._forget([(nodeid, nlookup)])
            return
        if opcode == abi.INTERRUPT:
            (target,) = abi.INTERRUPT_IN.unpack_from(buf, _HDR)
            self._interrupt(target)
            return
        # the body stays in this worker's buffer until the handler returns
        body = memoryview(buf)[_HDR:n]
        try:
            if opcode == abi.BATCH_FORGET:
                self._batch_forget(body)
                return
            entry = self._handlers.get(opcode)
            if entry is None:
                self._unserved(unique, opcode)
                return
            req = Request(unique, opcode, nodeid, RequestContext(uid, gid, pid))
            if opcode == abi.INIT:
                self._init(req, body)
                return
            req.name = entry[1]
            await self._serve(req, body, entry[0])
        finally:
            body.release()

    def _unserved(self, unique: int, opcode: int) -> None:
        if opcode not in self.unknown_logged:
            self.unknown_logged.add(opcode)
            # opcodes of the protocol we choose not to serve (STATX: the kernel falls back
            # to GETATTR) are news; others come from a kernel we don't know
            level = logging.INFO if opcode in abi.OPCODE_NAMES else logging.WARNING
            log.log(level, "FUSE opcode %d (%s) not served: ENOSYS", opcode,
                    abi.OPCODE_NAMES.get(opcode, "unknown"))
        self.reply_error(unique, errno.ENOSYS)

    async def _serve(self, req: Request, body: memoryview, handler) -> None:
        err = 0
        parts: Any = None
        self._inflight[req.unique] = req
        req.token.on_wait = lambda: self._watch_exit(req)
        tok = current_interrupt.set(req.token)
        try:
            if req.name in self.ops.interruptible:
                with trio.CancelScope() as scope:
                    req.scope = scope
                    parts = await handler(req, body)
                if scope.cancelled_caught:
                    err = errno.EINTR
            else:
                parts = await handler(req, body)
        except FUSEError as e:
            err = e.errno
        except Exception:
            log.exception("FUSE %s request failed", req.name)
            err = errno.EIO
        finally:
            current_interrupt.reset(tok)
            if req.exit_scope is not None:
                req.exit_scope.cancel()
            self._inflight.pop(req.unique, None)
        if err:
            self.reply_error(req.unique, err)
        elif parts is not None:
            self._reply(req.unique, parts)

    # ---------------------------------------------------------------- replies

    def _write(self, parts: list) -> None:
        if self.fd < 0:
            return
        try:
            os.writev(self.fd, parts)
        except OSError as e:
            # ENOENT: the request was interrupted or aborted meanwhile; ENODEV: unmounted
            if e.errno not in (errno.ENOENT, errno.ENODEV, errno.EBADF):
                log.warning("FUSE reply failed: %s", e)

    def _reply(self, unique: int, parts: list) -> None:
        size = _OUT_HDR + sum(len(p) for p in parts)
        self._write([abi.OUT_HEADER.pack(size, 0, unique), *parts])

    def reply_error(self, unique: int, err: int) -> None:
        if not 0 < err < 4096:
            err = errno.EIO
        self._write([abi.OUT_HEADER.pack(_OUT_HDR, -err, unique)])

    # ---------------------------------------------------------------- notifications
    # Called from the notifier threads; they block in the kernel while it locks pages or
    # directories, which is why no request handler may ever call them.

    def _notify(self, code: int, parts: list) -> None:
        if self.fd < 0:
            raise OSError(errno.ENOTCONN, "FUSE session closed")
        size = _OUT_HDR + sum(len(p) for p in parts)
        os.writev(self.fd, [abi.OUT_HEADER.pack(size, code, 0), *parts])

    def notify_inval_inode(self, ino: int, attr_only: bool) -> None:
        """Drop the kernel's cached attributes of `ino`, and its pages unless attr_only."""
        off = -1 if attr_only else 0
        self._notify(abi.NOTIFY_INVAL_INODE, [abi.NOTIFY_INVAL_INODE_OUT.pack(ino, off, 0)])

    def notify_inval_entry(self, parent: int, name: bytes) -> None:
        self._notify(abi.NOTIFY_INVAL_ENTRY,
                     [abi.NOTIFY_INVAL_ENTRY_OUT.pack(parent, len(name), 0), name + b"\0"])

    def notify_delete(self, parent: int, child: int, name: bytes) -> None:
        self._notify(abi.NOTIFY_DELETE,
                     [abi.NOTIFY_DELETE_OUT.pack(parent, child, len(name), 0), name + b"\0"])

    # ---------------------------------------------------------------- inline requests

    def _forget(self, pairs: list[tuple[int, int]]) -> None:
        try:
            self.ops.forget(pairs)
        except Exception:
            log.exception("FUSE forget failed")

    def _batch_forget(self, body: memoryview) -> None:
        count, _ = abi.BATCH_FORGET_IN.unpack_from(body)
        need = abi.BATCH_FORGET_IN.size + count * abi.FORGET_ONE.size
        if len(body) < need:
            log.error("BATCH_FORGET of %d entries in %d bytes: ignored", count, len(body))
            return
        self._forget(list(abi.FORGET_ONE.iter_unpack(body[abi.BATCH_FORGET_IN.size:need])))

    def _watch_exit(self, req: Request) -> None:
        """A handler waits interruptibly (offline data): also end the wait when the calling
        process exits.  The kernel interrupts a request whose caller got a signal, but
        never a background one (readahead): without this a killed reader's read would wait
        on.  Event driven (a pidfd), only for requests that wait."""
        if req.ctx.pid > 0 and self._nursery is not None:
            self._nursery.start_soon(self._exit_watcher, req)

    async def _exit_watcher(self, req: Request) -> None:
        try:
            fd = os.pidfd_open(req.ctx.pid)
        except OSError:
            return  # gone already (then its signal interrupted it) or not a process
        try:
            with trio.CancelScope() as scope:
                req.exit_scope = scope
                if req.unique not in self._inflight:
                    return
                await trio.lowlevel.wait_readable(fd)
                req.token.fire()
        finally:
            os.close(fd)

    def _interrupt(self, unique: int) -> None:
        req = self._inflight.get(unique)
        if req is None:
            return  # already answered
        req.interrupted = True
        if req.name in self.ops.interruptible and req.scope is not None:
            req.scope.cancel()
        req.token.fire()

    def _init(self, req: Request, body: memoryview) -> None:
        if len(body) >= abi.INIT_IN.size:
            major, minor, max_readahead, flags, flags2 = abi.INIT_IN.unpack_from(body)
        else:
            major, minor, max_readahead, flags = abi.INIT_IN_OLD.unpack_from(body)
            flags2 = 0
        if major != abi.KERNEL_VERSION or minor < abi.MIN_MINOR_VERSION:
            log.error("kernel FUSE protocol %d.%d is not supported (need 7.%d+)", major, minor,
                      abi.MIN_MINOR_VERSION)
            self.reply_error(req.unique, errno.EPROTO)
            return
        del flags2
        want = (abi.ASYNC_READ | abi.ATOMIC_O_TRUNC | abi.BIG_WRITES | abi.HAS_IOCTL_DIR
                | abi.AUTO_INVAL_DATA | abi.DO_READDIRPLUS | abi.ASYNC_DIO | abi.PARALLEL_DIROPS
                | abi.MAX_PAGES | abi.SETXATTR_EXT | abi.INIT_EXT)
        if self.acl:
            want |= abi.POSIX_ACL | abi.DONT_MASK
        got = want & flags
        if self.acl and not got & abi.DONT_MASK:
            log.warning("the kernel offers no FUSE_DONT_MASK: creates are umasked even "
                        "under default ACLs")
        self.proto_minor = min(minor, abi.KERNEL_MINOR_VERSION)
        self.dont_mask = bool(got & abi.DONT_MASK)
        self.setxattr_ext = bool(got & abi.SETXATTR_EXT)
        self.readdirplus = bool(got & abi.DO_READDIRPLUS)
        max_pages = MAX_PAGES if got & abi.MAX_PAGES else 32
        max_write = min(self.max_write, max_pages * 4096)
        out = abi.INIT_OUT.pack(abi.KERNEL_VERSION, self.proto_minor, max_readahead, got,
                                64, 48, max_write, 1, max_pages, 0, 0)
        self._reply(req.unique, [out])
        self.inited = True
        if self.on_init is not None:
            try:
                self.on_init()
            except Exception:
                log.exception("after INIT")

    # ---------------------------------------------------------------- request handlers

    def _handler_table(self) -> dict[int, tuple[Any, str]]:
        table = {
            abi.LOOKUP: (self._lookup, "lookup"),
            abi.GETATTR: (self._getattr, "getattr"),
            abi.SETATTR: (self._setattr, "setattr"),
            abi.READLINK: (self._readlink, "readlink"),
            abi.SYMLINK: (self._symlink, "symlink"),
            abi.MKNOD: (self._mknod, "mknod"),
            abi.MKDIR: (self._mkdir, "mkdir"),
            abi.UNLINK: (self._unlink, "unlink"),
            abi.RMDIR: (self._rmdir, "rmdir"),
            abi.RENAME: (self._rename, "rename"),
            abi.RENAME2: (self._rename2, "rename"),
            abi.LINK: (self._link, "link"),
            abi.OPEN: (self._open, "open"),
            abi.READ: (self._read, "read"),
            abi.WRITE: (self._writereq, "write"),
            abi.STATFS: (self._statfs, "statfs"),
            abi.RELEASE: (self._release, "release"),
            abi.FSYNC: (self._fsync, "fsync"),
            abi.SETXATTR: (self._setxattr, "setxattr"),
            abi.GETXATTR: (self._getxattr, "getxattr"),
            abi.LISTXATTR: (self._listxattr, "listxattr"),
            abi.REMOVEXATTR: (self._removexattr, "removexattr"),
            abi.FLUSH: (self._flush, "flush"),
            abi.INIT: (None, "init"),
            abi.OPENDIR: (self._opendir, "opendir"),
            abi.READDIR: (self._readdir, "readdir"),
            abi.READDIRPLUS: (self._readdirplus, "readdir"),
            abi.RELEASEDIR: (self._releasedir, "releasedir"),
            abi.FSYNCDIR: (self._fsyncdir, "fsyncdir"),
            abi.ACCESS: (self._access, "access"),
            abi.CREATE: (self._create, "create"),
            abi.TMPFILE: (self._tmpfile, "tmpfile"),
            abi.DESTROY: (self._destroy, "destroy"),
            abi.FALLOCATE: (self._fallocate, "fallocate"),
            abi.LSEEK: (self._lseek, "lseek"),
            abi.COPY_FILE_RANGE: (self._copy_file_range, "copy_file_range"),
            abi.IOCTL: (self._ioctl, "ioctl"),
        }
        return table

    async def _lookup(self, req: Request, body: memoryview) -> list:
        name, _ = _cstr(body)
        return [pack_entry(await self.ops.lookup(req.nodeid, name, req.ctx))]

    async def _getattr(self, req: Request, body: memoryview) -> list:
        return [pack_attr_out(await self.ops.getattr(req.nodeid, req.ctx))]

    async def _setattr(self, req: Request, body: memoryview) -> list:
        (valid, _, fh, size, _, atime, mtime, ctime, atimensec, mtimensec, ctimensec, mode, _,
         uid, gid, _) = abi.SETATTR_IN.unpack_from(body)
        attr = EntryAttributes()
        attr.st_ino = req.nodeid
        attr.st_mode, attr.st_uid, attr.st_gid, attr.st_size = mode, uid, gid, size
        now = time.time_ns()
        fields = SetattrFields(valid)
        attr.st_atime_ns = now if fields.atime_now else atime * 1_000_000_000 + atimensec
        attr.st_mtime_ns = now if fields.mtime_now else mtime * 1_000_000_000 + mtimensec
        attr.st_ctime_ns = ctime * 1_000_000_000 + ctimensec
        a = await self.ops.setattr(req.nodeid, attr, fields,
                                   fh if valid & abi.FATTR_FH else None, req.ctx)
        return [pack_attr_out(a)]

    async def _readlink(self, req: Request, body: memoryview) -> list:
        return [bytes(await self.ops.readlink(req.nodeid, req.ctx))]

    async def _symlink(self, req: Request, body: memoryview) -> list:
        name, off = _cstr(body)
        target, _ = _cstr(body, off)
        return [pack_entry(await self.ops.symlink(req.nodeid, name, target, req.ctx))]

    async def _mknod(self, req: Request, body: memoryview) -> list:
        mode, rdev, umask, _ = abi.MKNOD_IN.unpack_from(body)
        name, _ = _cstr(body, abi.MKNOD_IN.size)
        req.ctx.umask = umask
        return [pack_entry(await self.ops.mknod(req.nodeid, name, mode, rdev, req.ctx))]

    async def _mkdir(self, req: Request, body: memoryview) -> list:
        mode, umask = abi.MKDIR_IN.unpack_from(body)
        name, _ = _cstr(body, abi.MKDIR_IN.size)
        req.ctx.umask = umask
        return [pack_entry(await self.ops.mkdir(req.nodeid, name, mode, req.ctx))]

    async def _unlink(self, req: Request, body: memoryview) -> list:
        name, _ = _cstr(body)
        await self.ops.unlink(req.nodeid, name, req.ctx)
        return []

    async def _rmdir(self, req: Request, body: memoryview) -> list:
        name, _ = _cstr(body)
        await self.ops.rmdir(req.nodeid, name, req.ctx)
        return []

    async def _rename(self, req: Request, body: memoryview) -> list:
        (newdir,) = abi.RENAME_IN.unpack_from(body)
        return await self._do_rename(req, body, abi.RENAME_IN.size, newdir, 0)

    async def _rename2(self, req: Request, body: memoryview) -> list:
        newdir, flags, _ = abi.RENAME2_IN.unpack_from(body)
        return await self._do_rename(req, body, abi.RENAME2_IN.size, newdir, flags)

    async def _do_rename(self, req: Request, body: memoryview, off: int, newdir: int,
                         flags: int) -> list:
        old, off = _cstr(body, off)
        new, _ = _cstr(body, off)
        await self.ops.rename(req.nodeid, old, newdir, new, flags, req.ctx)
        return []

    async def _link(self, req: Request, body: memoryview) -> list:
        (oldnodeid,) = abi.LINK_IN.unpack_from(body)
        name, _ = _cstr(body, abi.LINK_IN.size)
        return [pack_entry(await self.ops.link(oldnodeid, req.nodeid, name, req.ctx))]

    @staticmethod
    def _open_out(fi) -> bytes:
        flags = 0
        if fi.direct_io:
            flags |= abi.FOPEN_DIRECT_IO
        if fi.keep_cache:
            flags |= abi.FOPEN_KEEP_CACHE
        if fi.nonseekable:
            flags |= abi.FOPEN_NONSEEKABLE
        return abi.OPEN_OUT.pack(fi.fh, flags, 0)

    async def _open(self, req: Request, body: memoryview) -> list:
        flags, _ = abi.OPEN_IN.unpack_from(body)
        return [self._open_out(await self.ops.open(req.nodeid, flags, req.ctx))]

    async def _create(self, req: Request, body: memoryview) -> list:
        flags, mode, umask, _ = abi.CREATE_IN.unpack_from(body)
        name, _ = _cstr(body, abi.CREATE_IN.size)
        req.ctx.umask = umask
        fi, entry = await self.ops.create(req.nodeid, name, mode, flags, req.ctx)
        return [pack_entry(entry), self._open_out(fi)]

    async def _tmpfile(self, req: Request, body: memoryview) -> list:
        flags, mode, umask, _ = abi.CREATE_IN.unpack_from(body)
        req.ctx.umask = umask
        fi, entry = await self.ops.tmpfile(req.nodeid, mode, flags, req.ctx)
        return [pack_entry(entry), self._open_out(fi)]

    async def _read(self, req: Request, body: memoryview) -> list:
        fh, off, size, _, _, _, _ = abi.READ_IN.unpack_from(body)
        data = await self.ops.read(fh, off, size)
        if len(data) > size:
            data = memoryview(data)[:size]
        return [data]

    async def _writereq(self, req: Request, body: memoryview) -> list:
        fh, off, size, _, _, _, _ = abi.WRITE_IN.unpack_from(body)
        data = body[abi.WRITE_IN.size:abi.WRITE_IN.size + size]
        if len(data) != size:
            raise FUSEError(errno.EINVAL)
        n = await self.ops.write(fh, off, data)
        return [abi.WRITE_OUT.pack(n, 0)]

    async def _statfs(self, req: Request, body: memoryview) -> list:
        s = await self.ops.statfs(req.ctx)
        return [abi.STATFS_OUT.pack(s.f_blocks, s.f_bfree, s.f_bavail, s.f_files, s.f_ffree,
                                    s.f_bsize, s.f_namemax, s.f_frsize, 0)]

    async def _release(self, req: Request, body: memoryview) -> list:
        fh = abi.RELEASE_IN.unpack_from(body)[0]
        await self.ops.release(fh)
        return []

    async def _releasedir(self, req: Request, body: memoryview) -> list:
        fh = abi.RELEASE_IN.unpack_from(body)[0]
        await self.ops.releasedir(fh)
        return []

    async def _fsync(self, req: Request, body: memoryview) -> list:
        fh, flags, _ = abi.FSYNC_IN.unpack_from(body)
        await self.ops.fsync(fh, bool(flags & 1))
        return []

    async def _fsyncdir(self, req: Request, body: memoryview) -> list:
        fh, flags, _ = abi.FSYNC_IN.unpack_from(body)
        await self.ops.fsyncdir(fh, bool(flags & 1))
        return []

    async def _flush(self, req: Request, body: memoryview) -> list:
        fh = abi.FLUSH_IN.unpack_from(body)[0]
        await self.ops.flush(fh)
        return []

    async def _setxattr(self, req: Request, body: memoryview) -> list:
        if self.setxattr_ext:
            size, flags, _, _ = abi.SETXATTR_IN.unpack_from(body)
            off = abi.SETXATTR_IN.size
        else:
            size, flags = abi.SETXATTR_IN_COMPAT.unpack_from(body)
            off = abi.SETXATTR_IN_COMPAT.size
        name, off = _cstr(body, off)
        value = bytes(body[off:off + size])
        if len(value) != size:
            raise FUSEError(errno.EINVAL)
        await self.ops.setxattr(req.nodeid, name, value, flags, req.ctx)
        return []

    async def _getxattr(self, req: Request, body: memoryview) -> list:
        size, _ = abi.GETXATTR_IN.unpack_from(body)
        name, _ = _cstr(body, abi.GETXATTR_IN.size)
        value = bytes(await self.ops.getxattr(req.nodeid, name, req.ctx))
        return self._sized(value, size)

    async def _listxattr(self, req: Request, body: memoryview) -> list:
        size, _ = abi.GETXATTR_IN.unpack_from(body)
        names = await self.ops.listxattr(req.nodeid, req.ctx)
        return self._sized(b"".join(bytes(n) + b"\0" for n in names), size)

    @staticmethod
    def _sized(value: bytes, size: int) -> list:
        if size == 0:
            return [abi.GETXATTR_OUT.pack(len(value), 0)]
        if len(value) > size:
            raise FUSEError(errno.ERANGE)
        return [value]

    async def _removexattr(self, req: Request, body: memoryview) -> list:
        name, _ = _cstr(body)
        await self.ops.removexattr(req.nodeid, name, req.ctx)
        return []

    async def _opendir(self, req: Request, body: memoryview) -> list:
        fh = await self.ops.opendir(req.nodeid, req.ctx)
        return [abi.OPEN_OUT.pack(fh, 0, 0)]

    async def _readdir(self, req: Request, body: memoryview) -> list:
        return await self._do_readdir(body, plus=False)

    async def _readdirplus(self, req: Request, body: memoryview) -> list:
        return await self._do_readdir(body, plus=True)

    async def _do_readdir(self, body: memoryview, plus: bool) -> list:
        fh, off, size, _, _, _, _ = abi.READ_IN.unpack_from(body)
        token = ReaddirToken(size, plus)
        await self.ops.readdir(fh, off, token)
        return token.parts

    async def _access(self, req: Request, body: memoryview) -> list:
        mask, _ = abi.ACCESS_IN.unpack_from(body)
        await self.ops.access(req.nodeid, mask, req.ctx)
        return []

    async def _destroy(self, req: Request, body: memoryview) -> list:
        self._stop = True
        return []

    async def _fallocate(self, req: Request, body: memoryview) -> list:
        fh, off, length, mode, _ = abi.FALLOCATE_IN.unpack_from(body)
        await self.ops.fallocate(fh, mode, off, length, req.ctx)
        return []

    async def _lseek(self, req: Request, body: memoryview) -> list:
        fh, off, whence, _ = abi.LSEEK_IN.unpack_from(body)
        return [abi.LSEEK_OUT.pack(await self.ops.lseek(fh, off, whence, req.ctx))]

    async def _copy_file_range(self, req: Request, body: memoryview) -> list:
        fh_in, off_in, _, fh_out, off_out, length, flags = \
            abi.COPY_FILE_RANGE_IN.unpack_from(body)
        n = await self.ops.copy_file_range(fh_in, off_in, fh_out, off_out, length, flags,
                                           req.ctx)
        return [abi.WRITE_OUT.pack(n, 0)]

    async def _ioctl(self, req: Request, body: memoryview) -> list:
        fh, flags, cmd, arg, in_size, out_size = abi.IOCTL_IN.unpack_from(body)
        if flags & abi.IOCTL_UNRESTRICTED:
            raise FUSEError(errno.ENOTTY)  # only CUSE may retry with the caller's iovecs
        in_data = bytes(body[abi.IOCTL_IN.size:abi.IOCTL_IN.size + in_size])
        result, out = await self.ops.ioctl(fh, cmd, arg, in_data, out_size, flags, req.ctx)
        out = bytes(out)[:out_size]
        return [abi.IOCTL_OUT.pack(result, 0, 0, 0), out]
