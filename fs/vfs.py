"""The FUSE adapter: requests of `fs.fuse` -> `fs.filesystem.Filesystem` calls.

It holds no semantics of its own: it converts arguments and results, keeps the kernel's
lookup counts and open handles, and turns `FsError` into `FUSEError`.  Only `fs.fuse`
touches /dev/fuse; this module implements its `Operations`.

Deadlock rules this module depends on (ARCHITECTURE.md §5):

* Kernel cache notifications (`Session.notify_inval_inode/notify_inval_entry`) block in the
  kernel on page and directory locks that FUSE requests may hold while they wait for the very
  cluster lock being invalidated.  They are therefore only ever queued to `Notifier`, whose
  own threads issue them; no request handler or commit waits for them, and a lock
  invalidation waits only boundedly, and not for page invalidations while a read or write is
  in flight (see `Notifier.flush`).
* `forget` must never block the session loop: the lookup count is kept here synchronously
  and `Filesystem.forget` (which may take cluster locks to delete an unlinked inode) runs as
  queued work in the forget worker task.  The same worker gets the last `release` of an
  inode's open handles: the kernel keeps an unused inode cached while it believes it has
  links, so a file another mount unlinked would otherwise wait for a forget that may never
  come.
* The mount's open map (fs/omap.py) is `open_inos`, the inodes with open handles here,
  counted before the open reaches the filesystem (so another mount's deletion cannot slip
  between our open of an inode and our handle of it).
* Correctness does not depend on the notifier: entry and attr timeouts default to 0 and open
  files are not `keep_cache`, so the kernel asks us on every lookup/getattr and drops cached
  pages when size or mtime change (auto_inval_data).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import math
import os
import queue
import stat
import threading
from typing import Any

import trio

from fs import fuse
from fs.errors import FsError
from fs.fuse import FUSEError

log = logging.getLogger(__name__)

RENAME_NOREPLACE = fuse.RENAME_NOREPLACE
RENAME_EXCHANGE = fuse.RENAME_EXCHANGE
ROOT_INODE = fuse.ROOT_INODE


def _ns(ts: tuple[int, int]) -> int:
    return int(ts[0]) * 1_000_000_000 + int(ts[1])


def _ts(ns: int) -> tuple[int, int]:
    return ns // 1_000_000_000, ns % 1_000_000_000


class FuseErrors:
    """Context manager: FsError -> FUSEError(errno); any other exception is a bug: log it
    with its traceback and answer EIO (handlers may only raise FUSEError)."""

    def __init__(self, what: str):
        self.what = what

    def __enter__(self) -> None:
        return None

    def __exit__(self, typ, exc, tb) -> bool:
        if exc is None or isinstance(exc, (FUSEError, trio.Cancelled)):
            return False
        if isinstance(exc, FsError):
            raise FUSEError(exc.errno) from None
        if isinstance(exc, Exception):
            log.error("%s failed", self.what, exc_info=(typ, exc, tb))
            raise FUSEError(errno.EIO) from None
        return False


class Notifier:
    """Queues kernel cache invalidations and issues them from two dedicated threads.

    Attribute invalidations (an inode's cached attributes and ACLs) never block in the kernel,
    so they have their own thread and a lock invalidation can always wait for them.  Page-cache
    invalidations lock the inode's pages, and entry invalidations its parent's i_rwsem.  The
    kernel locks a file's pages *before* it sends a read or write request and holds them while
    the daemon serves it, maybe waiting for the very cluster lock being invalidated; so those
    go to a second thread that may block until such requests finish, and a flush stops waiting
    for them as soon as a read or write is in flight (`data_request()` around every one).

    `queue_invalidate_inode` / `queue_invalidate_entry` never block and may be called from
    any trio task (or thread).  Nothing is sent to the kernel until `start(session)` (after
    the FUSE mount) and nothing after `stop()` (before the session closes).  `flush` and
    `data_request` run in the daemon's trio thread.
    """

    def __init__(self) -> None:
        self._attr_q: queue.SimpleQueue = queue.SimpleQueue()
        self._page_q: queue.SimpleQueue = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._page_waits: set[trio.CancelScope] = set()  # flushes waiting on the page thread
        self.data_requests = 0
        self._stats_lock = threading.Lock()  # sent/failed are counted by both threads
        self.sent = 0
        self.failed = 0
        self._session: Any = None

    def queue_invalidate_inode(self, ino: int, attr_only: bool = False) -> None:
        self._attr_q.put(("inode", int(ino), True))
        if not attr_only:
            self._page_q.put(("inode", int(ino), False))

    def queue_invalidate_entry(self, parent: int, name: bytes, deleted: int = 0) -> None:
        self._page_q.put(("entry", int(parent), bytes(name), int(deleted)))

    @contextlib.contextmanager
    def data_request(self):
        """Count a read or write request while the daemon serves it; its pages are locked in
        the kernel, so flushes stop waiting for page invalidations."""
        self.data_requests += 1
        for scope in self._page_waits:
            scope.cancel()
        try:
            yield
        finally:
            self.data_requests -= 1

    def _mark(self, q: queue.SimpleQueue) -> trio.Event:
        done = trio.Event()
        q.put(("mark", trio.lowlevel.current_trio_token(), done))
        return done

    async def flush(self, timeout: float) -> str:
        """Wait, at most `timeout` seconds, until everything queued so far was handed to the
        kernel.  Returns "done"; "pages deferred" when the attribute invalidations were sent
        but a read or write in flight (or starting meanwhile) holds pages the rest may wait
        for; "timeout" when the time ran out.  Bounded on purpose: an entry invalidation can
        block on a directory a request holds while it waits for the lock being invalidated,
        and then the caller goes on after the timeout instead of deadlocking."""
        if not self._threads:
            return "done"
        with trio.move_on_after(timeout):
            await self._mark(self._attr_q).wait()
            if self.data_requests:
                return "pages deferred"
            done = self._mark(self._page_q)
            with trio.CancelScope() as scope:
                self._page_waits.add(scope)
                try:
                    await done.wait()
                finally:
                    self._page_waits.discard(scope)
            return "pages deferred" if scope.cancelled_caught else "done"
        return "timeout"

    def start(self, session: Any) -> None:
        """Start sending to `session` (an `fs.fuse.Session`, or a fake in tests)."""
        self._session = session
        if not self._threads:
            for name, q in (("attrs", self._attr_q), ("pages", self._page_q)):
                t = threading.Thread(target=self._run, args=(q,), name=f"scoutfs-notify-{name}",
                                     daemon=True)
                t.start()
                self._threads.append(t)

    def stop(self, timeout: float = 5.0) -> None:
        for q in (self._attr_q, self._page_q):
            q.put(None)
        for t in self._threads:
            t.join(timeout)
        self._threads = []

    def _run(self, q: queue.SimpleQueue) -> None:
        while True:
            req = q.get()
            if req is None:
                return
            if req[0] == "mark":
                with contextlib.suppress(trio.RunFinishedError):
                    req[1].run_sync_soon(req[2].set)
                continue
            try:
                if req[0] == "inode":
                    self._session.notify_inval_inode(req[1], req[2])
                elif req[3]:
                    self._session.notify_delete(req[1], req[3], req[2])
                else:
                    self._session.notify_inval_entry(req[1], req[2])
                with self._stats_lock:
                    self.sent += 1
            except OSError as e:
                # ENOENT: the kernel holds nothing for it, which is fine
                if e.errno not in (errno.ENOENT, errno.ENOTCONN, errno.EBADF, errno.ENODEV):
                    with self._stats_lock:
                        self.failed += 1
                    log.warning("kernel invalidation %r failed: %s", req, e)


class ScoutfsOperations(fuse.Operations):
    """`fs.fuse.Operations` over a Filesystem."""

    # No handler is cancelled by an INTERRUPT: a lookup or read may be waiting for a cluster
    # lock whose request is already with the server, and abandoning it would leave the
    # server and this mount disagreeing about the mode we hold.  Waits that can last
    # (offline data) will watch for the interrupt themselves.
    interruptible: frozenset[str] = frozenset()

    def __init__(self, fs: Any, *, timeout_ms: int = 0, acl: bool = True,
                 readonly: bool = False, notifier: Notifier | None = None):
        super().__init__()
        self.fs = fs
        self.timeout = timeout_ms / 1000.0
        self.enable_acl = bool(acl)
        self.readonly = readonly
        self.notifier = notifier or Notifier()
        self.lookups: dict[int, int] = {}  # ino -> kernel lookup count
        self.handles: dict[int, tuple[int, Any]] = {}  # fh -> (ino, opener's Ctx)
        self.open_inos: dict[int, int] = {}  # ino -> open handles and opens in progress
        self.append_fhs: set[int] = set()  # handles opened O_APPEND
        self.reading: dict[int, int] = {}  # ino -> reads in flight (they hold pages locked)
        self._next_fh = 1
        self._forget_send, self._forget_recv = trio.open_memory_channel(math.inf)

    # ------------------------------------------------------------------ plumbing

    async def run_workers(self) -> None:
        """The forget worker: run `Filesystem.forget` for inodes the kernel dropped."""
        async for ino, released in self._forget_recv:
            if released:
                if ino in self.open_inos:  # opened again since
                    continue
            elif self.lookups.get(ino, 0) > 0:  # looked up again since: still cached
                continue
            try:
                await self.fs.forget(ino)
            except FsError as e:
                log.warning("forget of inode %d failed: %s", ino, e)
            except Exception:
                log.exception("forget of inode %d failed", ino)

    def _ctx(self, ctx: Any):
        from fs.inode import Ctx

        if ctx is None:
            return Ctx(uid=0, gid=0, pid=0)
        return Ctx(uid=ctx.uid, gid=ctx.gid, pid=ctx.pid, umask=ctx.umask)

    def _entry(self, a: Any) -> fuse.EntryAttributes:
        e = fuse.EntryAttributes()
        e.st_ino = a.ino
        e.generation = getattr(a, "generation", 0)
        e.entry_timeout = self.timeout
        e.attr_timeout = self.timeout
        e.st_mode = a.mode
        e.st_nlink = a.nlink
        e.st_uid = a.uid
        e.st_gid = a.gid
        e.st_rdev = a.rdev
        e.st_size = a.size
        e.st_blksize = 4096
        e.st_blocks = a.blocks
        e.st_atime_ns = _ns(a.atime)
        e.st_mtime_ns = _ns(a.mtime)
        e.st_ctime_ns = _ns(a.ctime)
        return e

    def _looked_up(self, a: Any) -> fuse.EntryAttributes:
        """An entry reply that the kernel counts as one more lookup of the inode."""
        self.lookups[a.ino] = self.lookups.get(a.ino, 0) + 1
        return self._entry(a)

    def _check_rw(self) -> None:
        if self.readonly:
            raise FUSEError(errno.EROFS)

    def _new_fh(self, ino: int, ctx: Any) -> int:
        fh = self._next_fh
        self._next_fh += 1
        self.handles[fh] = (ino, ctx)
        return fh

    def _fh_ino(self, fh: int) -> int:
        try:
            return self.handles[fh][0]
        except KeyError:
            raise FUSEError(errno.EBADF) from None

    # ------------------------------------------------------------------ inodes

    async def lookup(self, parent_inode, name, ctx):
        with FuseErrors("lookup"):
            return self._looked_up(await self.fs.lookup(parent_inode, bytes(name)))

    def forget(self, inode_list):
        # Synchronous bookkeeping only: the session loop calls this inline.
        for ino, nlookup in inode_list:
            left = self.lookups.get(ino, 0) - nlookup
            if left > 0:
                self.lookups[ino] = left
                continue
            self.lookups.pop(ino, None)
            if ino != ROOT_INODE:
                self._forget_send.send_nowait((ino, False))

    def _open_ref(self, ino: int) -> None:
        self.open_inos[ino] = self.open_inos.get(ino, 0) + 1

    def _open_unref(self, ino: int, evict: bool = True) -> None:
        left = self.open_inos.get(ino, 0) - 1
        if left > 0:
            self.open_inos[ino] = left
            return
        self.open_inos.pop(ino, None)
        if evict and ino != ROOT_INODE:
            self._forget_send.send_nowait((ino, True))

    async def getattr(self, inode, ctx):
        with FuseErrors("getattr"):
            return self._entry(await self.fs.getattr(inode))

    async def setattr(self, inode, attr, fields, fh, ctx):
        with FuseErrors("setattr"):
            self._check_rw()
            kw: dict[str, Any] = {}
            if fields.update_mode:
                kw["mode"] = attr.st_mode
            if fields.update_uid:
                kw["uid"] = attr.st_uid
            if fields.update_gid:
                kw["gid"] = attr.st_gid
            if fields.update_size:
                kw["size"] = attr.st_size
            if fields.update_atime:
                kw["atime"] = "now" if fields.atime_now else _ts(attr.st_atime_ns)
            if fields.update_mtime:
                kw["mtime"] = "now" if fields.mtime_now else _ts(attr.st_mtime_ns)
            if fields.update_ctime:
                kw["ctime"] = _ts(attr.st_ctime_ns)
            return self._entry(await self.fs.setattr(inode, ctx=self._ctx(ctx), **kw))

    async def readlink(self, inode, ctx):
        with FuseErrors("readlink"):
            return await self.fs.readlink(inode)

    async def mknod(self, parent_inode, name, mode, rdev, ctx):
        with FuseErrors("mknod"):
            self._check_rw()
            a = await self.fs.mknod(parent_inode, bytes(name), mode, rdev, self._ctx(ctx))
            return self._looked_up(a)

    async def mkdir(self, parent_inode, name, mode, ctx):
        with FuseErrors("mkdir"):
            self._check_rw()
            a = await self.fs.mkdir(parent_inode, bytes(name), (mode & 0o7777) | stat.S_IFDIR,
                                    self._ctx(ctx))
            return self._looked_up(a)

    async def symlink(self, parent_inode, name, target, ctx):
        with FuseErrors("symlink"):
            self._check_rw()
            a = await self.fs.symlink(parent_inode, bytes(name), bytes(target), self._ctx(ctx))
            return self._looked_up(a)

    async def link(self, inode, new_parent_inode, new_name, ctx):
        with FuseErrors("link"):
            self._check_rw()
            a = await self.fs.link(inode, new_parent_inode, bytes(new_name), self._ctx(ctx))
            return self._looked_up(a)

    async def unlink(self, parent_inode, name, ctx):
        with FuseErrors("unlink"):
            self._check_rw()
            await self.fs.unlink(parent_inode, bytes(name), self._ctx(ctx))

    async def rmdir(self, parent_inode, name, ctx):
        with FuseErrors("rmdir"):
            self._check_rw()
            await self.fs.rmdir(parent_inode, bytes(name), self._ctx(ctx))

    async def rename(self, parent_inode_old, name_old, parent_inode_new, name_new, flags, ctx):
        with FuseErrors("rename"):
            self._check_rw()
            if flags & ~(RENAME_NOREPLACE | RENAME_EXCHANGE):
                raise FUSEError(errno.EINVAL)
            await self.fs.rename(parent_inode_old, bytes(name_old), parent_inode_new,
                                 bytes(name_new), flags, self._ctx(ctx))

    # ------------------------------------------------------------------ files

    async def _open(self, ino: int, flags: int, rctx: Any) -> fuse.FileInfo:
        # the open map bit goes up before any await: see the module docstring
        self._open_ref(ino)
        try:
            return await self._open_fh(ino, flags, rctx)
        except BaseException:
            self._open_unref(ino, evict=False)
            raise

    async def _open_fh(self, ino: int, flags: int, rctx: Any) -> fuse.FileInfo:
        ctx = self._ctx(rctx)
        if flags & os.O_ACCMODE != os.O_RDONLY or flags & os.O_TRUNC:
            self._check_rw()
        await self.fs.open(ino, flags, ctx)
        if flags & os.O_TRUNC:
            # atomic_o_trunc: the kernel leaves the truncate of open(O_TRUNC) to us; it would
            # have done notify_change(ATTR_SIZE|ATTR_MTIME|ATTR_CTIME) itself.
            a = await self.fs.getattr(ino)
            if stat.S_ISREG(a.mode):
                await self.fs.setattr(ino, size=0, mtime="now", ctime="now", ctx=ctx)
        # keep_cache off: the kernel drops cached pages on open; direct_io off.  But not
        # while a read of the inode waits here for offline data: it holds its pages
        # locked, and the open (of the stage that would end the wait, say) would wait for
        # those pages.  Pages another mount made stale are dropped by the lock
        # invalidation's notifications all the same.
        waiting = getattr(self.fs, "has_data_waiters", None)
        keep = self.reading.get(ino, 0) > 0 and (waiting is None or waiting(ino))
        fh = self._new_fh(ino, ctx)
        if flags & os.O_APPEND:
            self.append_fhs.add(fh)
        return fuse.FileInfo(fh=fh, direct_io=False, keep_cache=keep)

    async def open(self, inode, flags, ctx):
        with FuseErrors("open"):
            return await self._open(inode, flags, ctx)

    async def create(self, parent_inode, name, mode, flags, ctx):
        with FuseErrors("create"):
            self._check_rw()
            a = await self.fs.mknod(parent_inode, bytes(name), (mode & 0o7777) | stat.S_IFREG,
                                    0, self._ctx(ctx))
            entry = self._looked_up(a)
            fi = await self._open(a.ino, flags & ~os.O_TRUNC, ctx)
            return fi, entry

    async def read(self, fh, off, size):
        with FuseErrors("read"), self.notifier.data_request():
            ino = self._fh_ino(fh)
            self.reading[ino] = self.reading.get(ino, 0) + 1
            try:
                # short: readahead over offline blocks must not wait for the online ones
                return await self.fs.read(ino, off, size, short=True)
            finally:
                self.reading[ino] -= 1
                if not self.reading[ino]:
                    del self.reading[ino]

    async def write(self, fh, off, buf):
        with FuseErrors("write"), self.notifier.data_request():
            self._check_rw()
            ino = self._fh_ino(fh)
            if fh in self.append_fhs:
                # the kernel's offset is its cached size: append at the real one
                return await self.fs.write(ino, off, buf, self.handles[fh][1], append=True)
            return await self.fs.write(ino, off, buf, self.handles[fh][1])

    async def flush(self, fh):
        return None

    async def release(self, fh):
        ent = self.handles.pop(fh, None)
        self.append_fhs.discard(fh)
        if ent is not None:
            self._open_unref(ent[0])
        rel = getattr(self.fs, "release", None)
        if ent is not None and rel is not None:
            with FuseErrors("release"):
                await rel(ent[0])

    async def fsync(self, fh, datasync):
        with FuseErrors("fsync"):
            await self.fs.fsync(self._fh_ino(fh), bool(datasync))

    # ------------------------------------------------------------------ directories

    async def opendir(self, inode, ctx):
        with FuseErrors("opendir"):
            self._open_ref(inode)
            try:
                a = await self.fs.getattr(inode)
                if not stat.S_ISDIR(a.mode):
                    raise FUSEError(errno.ENOTDIR)
            except BaseException:
                self._open_unref(inode, evict=False)
                raise
            return self._new_fh(inode, self._ctx(ctx))

    async def readdir(self, fh, start_id, token):
        with FuseErrors("readdir"):
            ino = self._fh_ino(fh)
            for name, a, next_pos in await self.fs.readdir(ino, start_id):
                dot = name in (b".", b"..")
                if a is None:
                    if dot:  # the kernel takes no lookup from "." or ".." entries
                        e = fuse.EntryAttributes()
                        e.st_ino = ino
                        e.st_mode = stat.S_IFDIR
                    else:
                        a = await self.fs.lookup(ino, name)
                        e = self._entry(a)
                else:
                    e = self._entry(a)
                if not fuse.readdir_reply(token, name, e, next_pos):
                    break
                if token.plus and not dot:
                    self.lookups[a.ino] = self.lookups.get(a.ino, 0) + 1

    async def releasedir(self, fh):
        ent = self.handles.pop(fh, None)
        if ent is not None:
            self._open_unref(ent[0])

    async def fsyncdir(self, fh, datasync):
        with FuseErrors("fsyncdir"):
            await self.fs.fsync(self._fh_ino(fh), bool(datasync))

    # ------------------------------------------------------------------ volume

    async def statfs(self, ctx):
        with FuseErrors("statfs"):
            st = await self.fs.statfs()
            out = fuse.StatvfsData()
            out.f_bsize = 4096
            out.f_frsize = 4096
            out.f_namemax = 255
            for f in ("f_bsize", "f_frsize", "f_blocks", "f_bfree", "f_bavail", "f_files",
                      "f_ffree", "f_favail", "f_namemax"):
                v = st.get(f) if isinstance(st, dict) else getattr(st, f, None)
                if v is not None:
                    setattr(out, f, int(v))
            return out

    # ------------------------------------------------------------------ xattrs
    # XATTR_CREATE/XATTR_REPLACE reach us (FUSE_SETXATTR_EXT) and are applied by the
    # filesystem under the inode's WRITE cluster lock, so the check and the set are atomic
    # across mounts.

    async def setxattr(self, inode, name, value, flags, ctx):
        with FuseErrors("setxattr"):
            self._check_rw()
            await self.fs.setxattr(inode, bytes(name), bytes(value), flags, self._ctx(ctx))

    async def getxattr(self, inode, name, ctx):
        with FuseErrors("getxattr"):
            return await self.fs.getxattr(inode, bytes(name), self._ctx(ctx))

    async def listxattr(self, inode, ctx):
        with FuseErrors("listxattr"):
            return list(await self.fs.listxattr(inode, self._ctx(ctx)))

    async def removexattr(self, inode, name, ctx):
        with FuseErrors("removexattr"):
            self._check_rw()
            await self.fs.removexattr(inode, bytes(name), self._ctx(ctx))


    # ------------------------------------------------------------------ newer calls

    async def tmpfile(self, parent_inode, mode, flags, ctx):
        with FuseErrors("tmpfile"):
            self._check_rw()
            a = await self.fs.tmpfile(parent_inode, (mode & 0o7777) | stat.S_IFREG,
                                      self._ctx(ctx))
            entry = self._looked_up(a)
            fi = await self._open(a.ino, flags & ~(os.O_TRUNC | os.O_CREAT), ctx)
            return fi, entry

    async def fallocate(self, fh, mode, off, length, ctx):
        with FuseErrors("fallocate"), self.notifier.data_request():
            self._check_rw()
            await self.fs.fallocate(self._fh_ino(fh), mode, off, length, self._ctx(ctx))

    async def lseek(self, fh, off, whence, ctx):
        with FuseErrors("lseek"):
            return await self.fs.lseek(self._fh_ino(fh), off, whence)

    async def copy_file_range(self, fh_in, off_in, fh_out, off_out, length, flags, ctx):
        with FuseErrors("copy_file_range"), self.notifier.data_request():
            self._check_rw()
            return await self.fs.copy_file_range(self._fh_ino(fh_in), off_in,
                                                 self._fh_ino(fh_out), off_out, length, flags,
                                                 self.handles[fh_out][1])

    async def ioctl(self, fh, cmd, arg, in_data, out_size, flags, ctx):
        with FuseErrors("ioctl"):
            ino = self._fh_ino(fh)
            if cmd == FS_IOC_GETFLAGS and out_size >= 4:
                a = await self.fs.getattr(ino)
                del a  # scoutfs keeps no chattr flags: none are set
                return 0, (0).to_bytes(4, "little")
            raise FUSEError(errno.ENOTTY)


FS_IOC_GETFLAGS = 0x80086601


def fuse_options(data_path: str, opts: dict[str, Any]) -> set[str]:
    """The FUSE mount options: type shows as fuse.scoutfs, source the data device."""
    fsname = data_path.replace(",", "\\,")
    out = {f"fsname={fsname}", "subtype=scoutfs", "default_permissions", "allow_other",
           "dev", "suid"}
    for flag in opts.get("fuse_flags", []):
        if flag.startswith("no") and flag[2:] in out:
            out.discard(flag[2:])
        out.add(flag)
    return out


def init(ops: ScoutfsOperations, mountpoint: str, options: set[str]) -> fuse.Session:
    """Mount `mountpoint` for `ops` (RuntimeError with the reason if it fails)."""
    session = fuse.Session(ops, mountpoint, options, acl=ops.enable_acl)
    try:
        session.mount()
    except fuse.MountFailed as e:
        raise RuntimeError(str(e)) from None
    return session
