#!/usr/bin/env python3
"""The minimal FUSE filesystem: the floor cost of any FUSE filesystem in Python on this machine,
on either binding (``--binding pyfuse3``, the default, or ``fuse``: the project's own
protocol layer, `fs.fuse`).

Names and attributes live in memory, reads return zeros, writes are discarded (only the file
size is kept), entry/attr timeouts are 0 and there is no writeback cache -- the same settings
a scoutfs mount uses by default, so `scripts/bench` can compare scoutfs with what the binding
alone costs (`../shared/perf/anchors.md`), and the two bindings with each other (its
``protocol`` target).  With --keep-data the files' contents are kept in memory too (reads
return what was written).

    bench_minimalfs.py MOUNTPOINT [--binding pyfuse3|fuse] [--keep-data] [--ready-file F]

Runs in the foreground until unmounted (`umount MOUNTPOINT`) or SIGINT/SIGTERM.  With
--ready-file it writes its pid into F once the mount is in place.

One implementation serves both bindings: `MinimalFs` holds the tree and the handlers (their
signatures are pyfuse3's, which `fs.fuse.Operations` follows) and builds its replies with the
binding's module (`api`); `FuseMinimalFs` and `pyfuse3_class()` only add the binding's base
class and its kind of `forget` (synchronous in fs.fuse, a coroutine in pyfuse3).  pyfuse3 is
imported only when asked for.  tests/mounted/test_fuse_protocol.py subclasses
`FuseMinimalFs` and runs it with `serve`.
"""

from __future__ import annotations

import argparse
import errno
import os
import signal
import stat
import sys
import time
from typing import Any

import trio

from fs import fuse

ROOT = fuse.ROOT_INODE  # 1, as pyfuse3.ROOT_INODE
ZEROS = bytes(1 << 20)
BINDINGS = ("pyfuse3", "fuse")
# pyfuse3.default_options, for both bindings
OPTIONS = frozenset({"default_permissions", "fsname=bench_minimalfs", "subtype=bench_minimalfs"})


class Node:
    __slots__ = ("ino", "mode", "nlink", "uid", "gid", "rdev", "size", "atime", "mtime",
                 "ctime", "target", "entries", "lookups", "data")

    def __init__(self, ino: int, mode: int, uid: int, gid: int, rdev: int = 0):
        now = time.time_ns()
        self.ino = ino
        self.mode = mode
        self.nlink = 2 if stat.S_ISDIR(mode) else 1
        self.uid = uid
        self.gid = gid
        self.rdev = rdev
        self.size = 0
        self.atime = self.mtime = self.ctime = now
        self.target = b""
        self.entries: dict[bytes, int] | None = {} if stat.S_ISDIR(mode) else None
        self.lookups = 0
        self.data: bytearray | None = None  # with keep_data: the contents, len == size


class MinimalFs:
    """The in-memory tree and the request handlers, for either binding.  `api` (set by the
    binding's subclass) is the module whose FUSEError, EntryAttributes, FileInfo,
    StatvfsData and readdir_reply the handlers use."""

    api: Any = None

    def __init__(self, keep_data: bool = False) -> None:
        super().__init__()
        self.keep_data = keep_data
        self.nodes: dict[int, Node] = {}
        self.next_ino = ROOT + 1
        root = Node(ROOT, stat.S_IFDIR | 0o755, 0, 0)
        root.lookups = 1
        self.nodes[ROOT] = root
        self.parents: dict[int, int] = {ROOT: ROOT}

    # helpers ---------------------------------------------------------------------------------
    def _error(self, err: int) -> Exception:
        return self.api.FUSEError(err)

    def _attr(self, n: Node):
        a = self.api.EntryAttributes()
        a.st_ino = n.ino
        a.generation = 0
        a.entry_timeout = 0
        a.attr_timeout = 0
        a.st_mode = n.mode
        a.st_nlink = n.nlink
        a.st_uid = n.uid
        a.st_gid = n.gid
        a.st_rdev = n.rdev
        a.st_size = n.size
        a.st_blksize = 4096
        a.st_blocks = (n.size + 511) // 512
        a.st_atime_ns = n.atime
        a.st_mtime_ns = n.mtime
        a.st_ctime_ns = n.ctime
        return a

    def _node(self, ino: int) -> Node:
        n = self.nodes.get(ino)
        if n is None:
            raise self._error(errno.ENOENT)
        return n

    def _dir(self, ino: int) -> Node:
        n = self._node(ino)
        if n.entries is None:
            raise self._error(errno.ENOTDIR)
        return n

    def _new(self, parent: int, name: bytes, mode: int, ctx, rdev: int = 0) -> Node:
        d = self._dir(parent)
        assert d.entries is not None
        if name in d.entries:
            raise self._error(errno.EEXIST)
        n = Node(self.next_ino, mode, ctx.uid, ctx.gid, rdev)
        self.next_ino += 1
        if self.keep_data and stat.S_ISREG(mode):
            n.data = bytearray()
        self.nodes[n.ino] = n
        d.entries[name] = n.ino
        d.mtime = d.ctime = n.ctime
        if n.entries is not None:
            d.nlink += 1
            self.parents[n.ino] = parent
        n.lookups += 1
        return n

    def _maybe_free(self, n: Node) -> None:
        if n.nlink == 0 and n.lookups == 0 and n.ino != ROOT:
            self.nodes.pop(n.ino, None)
            self.parents.pop(n.ino, None)

    def _truncate(self, n: Node, size: int) -> None:
        if n.data is not None:
            if size < len(n.data):
                del n.data[size:]
            else:
                n.data.extend(bytes(size - len(n.data)))
        n.size = size

    @staticmethod
    def _counts_lookup(token) -> bool:
        """Whether a readdir entry gives the kernel a lookup: with readdirplus.  pyfuse3
        only serves READDIRPLUS (its token has no `plus`); fs.fuse says which it is."""
        return getattr(token, "plus", True)

    def _forget(self, inode_list) -> None:
        for ino, nlookup in inode_list:
            n = self.nodes.get(ino)
            if n is not None:
                n.lookups -= nlookup
                self._maybe_free(n)

    # namespace -------------------------------------------------------------------------------
    async def lookup(self, parent_inode, name, ctx=None):
        d = self._dir(parent_inode)
        assert d.entries is not None
        if name == b".":
            ino = d.ino
        elif name == b"..":
            ino = self.parents.get(d.ino, ROOT)
        else:
            ino = d.entries.get(name)
            if ino is None:
                raise self._error(errno.ENOENT)
        n = self.nodes[ino]
        n.lookups += 1
        return self._attr(n)

    async def getattr(self, inode, ctx=None):
        return self._attr(self._node(inode))

    async def setattr(self, inode, attr, fields, fh, ctx):
        n = self._node(inode)
        now = time.time_ns()
        if fields.update_size:
            self._truncate(n, attr.st_size)
            n.mtime = now
        if fields.update_mode:
            n.mode = (n.mode & ~0o7777) | (attr.st_mode & 0o7777)
        if fields.update_uid:
            n.uid = attr.st_uid
        if fields.update_gid:
            n.gid = attr.st_gid
        if fields.update_atime:
            n.atime = attr.st_atime_ns
        if fields.update_mtime:
            n.mtime = attr.st_mtime_ns
        n.ctime = now
        return self._attr(n)

    async def mknod(self, parent_inode, name, mode, rdev, ctx):
        return self._attr(self._new(parent_inode, name, mode, ctx, rdev))

    async def mkdir(self, parent_inode, name, mode, ctx):
        return self._attr(self._new(parent_inode, name, stat.S_IFDIR | (mode & 0o7777), ctx))

    async def symlink(self, parent_inode, name, target, ctx):
        n = self._new(parent_inode, name, stat.S_IFLNK | 0o777, ctx)
        n.target = bytes(target)
        n.size = len(n.target)
        return self._attr(n)

    async def readlink(self, inode, ctx):
        return self._node(inode).target

    async def link(self, inode, new_parent_inode, new_name, ctx):
        n = self._node(inode)
        d = self._dir(new_parent_inode)
        assert d.entries is not None
        if new_name in d.entries:
            raise self._error(errno.EEXIST)
        d.entries[new_name] = n.ino
        n.nlink += 1
        n.lookups += 1
        n.ctime = d.mtime = d.ctime = time.time_ns()
        return self._attr(n)

    async def _remove(self, parent_inode, name, want_dir: bool) -> None:
        d = self._dir(parent_inode)
        assert d.entries is not None
        ino = d.entries.get(name)
        if ino is None:
            raise self._error(errno.ENOENT)
        n = self.nodes[ino]
        if want_dir:
            if n.entries is None:
                raise self._error(errno.ENOTDIR)
            if n.entries:
                raise self._error(errno.ENOTEMPTY)
            n.nlink = 0
            d.nlink -= 1
        else:
            if n.entries is not None:
                raise self._error(errno.EISDIR)
            n.nlink -= 1
        del d.entries[name]
        n.ctime = d.mtime = d.ctime = time.time_ns()
        self._maybe_free(n)

    async def unlink(self, parent_inode, name, ctx):
        await self._remove(parent_inode, name, False)

    async def rmdir(self, parent_inode, name, ctx):
        await self._remove(parent_inode, name, True)

    async def rename(self, parent_inode_old, name_old, parent_inode_new, name_new, flags, ctx):
        if flags:
            raise self._error(errno.EINVAL)
        src = self._dir(parent_inode_old)
        dst = self._dir(parent_inode_new)
        assert src.entries is not None and dst.entries is not None
        ino = src.entries.get(name_old)
        if ino is None:
            raise self._error(errno.ENOENT)
        if name_new in dst.entries:
            if self.nodes[dst.entries[name_new]].entries is not None:
                await self._remove(parent_inode_new, name_new, True)
            else:
                await self._remove(parent_inode_new, name_new, False)
        del src.entries[name_old]
        dst.entries[name_new] = ino
        n = self.nodes[ino]
        if n.entries is not None and src is not dst:
            src.nlink -= 1
            dst.nlink += 1
            self.parents[ino] = dst.ino
        src.mtime = src.ctime = dst.mtime = dst.ctime = n.ctime = time.time_ns()

    # directories -----------------------------------------------------------------------------
    async def opendir(self, inode, ctx):
        self._dir(inode)
        return inode

    async def readdir(self, fh, start_id, token):
        d = self._dir(fh)
        assert d.entries is not None
        # offsets: position in a snapshot of the names (good enough for a benchmark floor)
        names = list(d.entries.items())
        counts = self._counts_lookup(token)
        for i in range(start_id, len(names)):
            name, ino = names[i]
            n = self.nodes[ino]
            if not self.api.readdir_reply(token, name, self._attr(n), i + 1):
                break
            if counts:
                n.lookups += 1

    async def releasedir(self, fh):
        pass

    async def fsyncdir(self, fh, datasync):
        pass

    # files -----------------------------------------------------------------------------------
    async def create(self, parent_inode, name, mode, flags, ctx):
        n = self._new(parent_inode, name, stat.S_IFREG | (mode & 0o7777), ctx)
        return self.api.FileInfo(fh=n.ino), self._attr(n)

    async def open(self, inode, flags, ctx):
        n = self._node(inode)
        if flags & os.O_TRUNC:
            self._truncate(n, 0)
        return self.api.FileInfo(fh=inode)

    async def read(self, fh, off, size):
        n = self._node(fh)
        if off >= n.size:
            return b""
        size = min(size, n.size - off)
        if n.data is not None:
            return bytes(memoryview(n.data)[off:off + size])
        return ZEROS if size == len(ZEROS) else bytes(size)

    async def write(self, fh, off, buf):
        n = self._node(fh)
        end = off + len(buf)
        if n.data is not None:
            if off > len(n.data):
                n.data.extend(bytes(off - len(n.data)))
            n.data[off:end] = buf
        if end > n.size:
            n.size = end
        n.mtime = n.ctime = time.time_ns()
        return len(buf)

    async def flush(self, fh):
        pass

    async def release(self, fh):
        pass

    async def fsync(self, fh, datasync):
        pass

    async def statfs(self, ctx):
        s = self.api.StatvfsData()
        s.f_bsize = s.f_frsize = 4096
        s.f_blocks = s.f_bfree = s.f_bavail = 1 << 30
        s.f_files = 1 << 32
        s.f_ffree = s.f_favail = (1 << 32) - len(self.nodes)
        s.f_namemax = 255
        return s


# the bindings ----------------------------------------------------------------------------------


class FuseMinimalFs(MinimalFs, fuse.Operations):
    """The minimal filesystem on `fs.fuse`."""

    api = fuse

    def forget(self, inode_list):
        self._forget(inode_list)


def pyfuse3_class() -> type[MinimalFs]:
    """The minimal filesystem on pyfuse3 (imported here: only this binding needs it)."""
    import pyfuse3

    class Pyfuse3MinimalFs(MinimalFs, pyfuse3.Operations):
        api = pyfuse3
        enable_writeback_cache = False

        async def forget(self, inode_list):
            self._forget(inode_list)

    return Pyfuse3MinimalFs


class FuseMount:
    """An `fs.fuse.Session` mount of `ops` (`session` is there for whoever wants its
    counters)."""

    def __init__(self, ops: fuse.Operations, mountpoint: str, options: set[str]):
        self.session = fuse.Session(ops, mountpoint, options)
        self.session.mount()

    async def run(self) -> None:
        await self.session.run()

    def terminate(self) -> None:
        self.session.terminate()

    def close(self) -> None:
        self.session.close(unmount=True)


class Pyfuse3Mount:
    """pyfuse3's one global session, behind the same four calls."""

    def __init__(self, ops: Any, mountpoint: str, options: set[str]):
        import pyfuse3

        self.pyfuse3 = pyfuse3
        pyfuse3.init(ops, mountpoint, options)

    async def run(self) -> None:
        await self.pyfuse3.main()

    def terminate(self) -> None:
        self.pyfuse3.terminate()

    def close(self) -> None:
        self.pyfuse3.close(unmount=True)


def make(binding: str, keep_data: bool = False) -> tuple[MinimalFs, type]:
    """(the minimal filesystem for `binding`, the class that mounts it)."""
    if binding == "fuse":
        return FuseMinimalFs(keep_data), FuseMount
    if binding == "pyfuse3":
        return pyfuse3_class()(keep_data), Pyfuse3Mount
    raise ValueError(f"unknown binding {binding!r}: choose from {', '.join(BINDINGS)}")


def serve(mount: FuseMount | Pyfuse3Mount, ready_file: str | None = None) -> None:
    """Serve a mount until it is unmounted or we get SIGINT/SIGTERM (then unmount it from our
    side); it is closed (and unmounted if still mounted) whatever happens."""
    try:
        async def run() -> None:
            async with trio.open_nursery() as nursery:
                async def on_signal(task_status=trio.TASK_STATUS_IGNORED) -> None:
                    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                        task_status.started()
                        async for _ in signals:
                            mount.terminate()  # unmount from our side: run() returns
                            return

                # signals are ours before anyone learns we are ready
                await nursery.start(on_signal)
                if ready_file:
                    with open(ready_file, "w") as f:
                        f.write(f"{os.getpid()}\n")
                await mount.run()
                nursery.cancel_scope.cancel()

        trio.run(run)
    finally:
        mount.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("mountpoint")
    ap.add_argument("--binding", choices=BINDINGS, default="pyfuse3",
                    help="the FUSE binding: pyfuse3 (default) or fuse (the project's fs.fuse)")
    ap.add_argument("--keep-data", action="store_true",
                    help="keep the files' contents in memory (default: discard writes)")
    ap.add_argument("--ready-file", help="write our pid here once mounted")
    args = ap.parse_args(argv)

    ops, mount_class = make(args.binding, args.keep_data)
    serve(mount_class(ops, args.mountpoint, set(OPTIONS)), args.ready_file)
    return 0


if __name__ == "__main__":
    sys.exit(main())
