"""A stand-in for `fs.super.Mount` that runs a whole daemon in memory (tests only).

Selected by the daemon when the environment has ``SCOUTFS_FAKE_MOUNT=1``.  It builds the
real `fs.filesystem.Filesystem` over `fs.testing.fakes.make_context()` when that module
exists, else `MemFilesystem` below: a small dict-based filesystem with the Filesystem
interface, enough to exercise the FUSE adapter, the control socket and the daemon lifecycle.
Nothing is persistent; the devices are only read for their fsid when they hold a super.
"""

from __future__ import annotations

import errno
import secrets
import stat
from dataclasses import dataclass, field
from typing import Any

from fs import format as fmt
from fs.counters import Counters
from fs.errors import FsError
from fs.triggers import Triggers


def _now() -> tuple[int, int]:
    from fs.context import now_ts

    return now_ts()


@dataclass
class _Node:
    ino: int
    mode: int
    uid: int
    gid: int
    rdev: int = 0
    nlink: int = 1
    data: bytearray = field(default_factory=bytearray)
    target: bytes = b""
    entries: dict[bytes, tuple[int, int]] = field(default_factory=dict)  # name -> (ino, pos)
    next_pos: int = 2
    parent: int = 0
    xattrs: dict[bytes, bytes] = field(default_factory=dict)
    atime: tuple[int, int] = (0, 0)
    mtime: tuple[int, int] = (0, 0)
    ctime: tuple[int, int] = (0, 0)
    crtime: tuple[int, int] = (0, 0)
    data_version: int = 0
    meta_seq: int = 0
    data_seq: int = 0


class MemFilesystem:
    """Dict-based Filesystem for adapter tests (no locks, no transactions, no deletion
    subtleties).  Permission checks are left to the kernel (default_permissions)."""

    def __init__(self, mctx: Any = None) -> None:
        self.mctx = mctx
        self.seq = 1
        now = _now()
        self.nodes: dict[int, _Node] = {
            1: _Node(1, 0o040755, 0, 0, nlink=2, parent=1, atime=now, mtime=now, ctime=now,
                     crtime=now)
        }
        self.next_ino = fmt.FIRST_ALLOC_INO

    # ---------------------------------------------------------------- helpers
    def _node(self, ino: int) -> _Node:
        n = self.nodes.get(ino)
        if n is None:
            raise FsError(errno.ENOENT)
        return n

    def _dir(self, ino: int) -> _Node:
        n = self._node(ino)
        if not stat.S_ISDIR(n.mode):
            raise FsError(errno.ENOTDIR)
        return n

    def _attr(self, n: _Node):
        from fs.inode import Attr

        size = len(n.data) if stat.S_ISREG(n.mode) else (
            len(n.target) if stat.S_ISLNK(n.mode) else
            sum(len(k) for k in n.entries) if stat.S_ISDIR(n.mode) else 0)
        blocks = (len(n.data) + 4095) // 4096 * 8 if stat.S_ISREG(n.mode) else 0
        return Attr(ino=n.ino, mode=n.mode, nlink=n.nlink, uid=n.uid, gid=n.gid, rdev=n.rdev,
                    size=size, blocks=blocks, atime=n.atime, mtime=n.mtime, ctime=n.ctime,
                    crtime=n.crtime)

    def _changed(self, n: _Node, data: bool = False) -> None:
        self.seq += 1
        n.meta_seq = self.seq
        if data:
            n.data_seq = self.seq
            n.data_version += 1

    def _new(self, parent: int, name: bytes, mode: int, ctx, rdev: int = 0) -> _Node:
        d = self._dir(parent)
        if len(name) > fmt.NAME_MAX:
            raise FsError(errno.ENAMETOOLONG)
        if name in d.entries:
            raise FsError(errno.EEXIST)
        now = _now()
        ino = self.next_ino
        self.next_ino += 1
        gid = ctx.gid
        if d.mode & stat.S_ISGID:
            gid = d.gid
            if stat.S_ISDIR(mode):
                mode |= stat.S_ISGID
        n = _Node(ino, mode, ctx.uid, gid, rdev=rdev, atime=now, mtime=now, ctime=now,
                  crtime=now, parent=parent)
        self.nodes[ino] = n
        self._link(d, name, n)
        self._changed(n)
        return n

    def _link(self, d: _Node, name: bytes, n: _Node) -> None:
        d.entries[name] = (n.ino, d.next_pos)
        d.next_pos += 1
        d.mtime = d.ctime = _now()
        self._changed(d)

    # ---------------------------------------------------------------- namespace
    async def lookup(self, parent: int, name: bytes):
        d = self._dir(parent)
        if name == b".":
            return self._attr(d)
        if name == b"..":
            return self._attr(self._node(d.parent))
        ent = d.entries.get(name)
        if ent is None:
            raise FsError(errno.ENOENT)
        return self._attr(self._node(ent[0]))

    async def getattr(self, ino: int):
        return self._attr(self._node(ino))

    async def setattr(self, ino, *, mode=None, uid=None, gid=None, size=None, atime=None,
                      mtime=None, ctime=None, ctx=None):
        n = self._node(ino)
        now = _now()
        if mode is not None:
            n.mode = (n.mode & fmt.S_IFMT) | (mode & 0o7777)
        if uid is not None:
            n.uid = uid
        if gid is not None:
            n.gid = gid
        if size is not None:
            if stat.S_ISDIR(n.mode):
                raise FsError(errno.EISDIR)
            if len(n.data) != size:
                del n.data[size:]
                n.data.extend(bytes(size - len(n.data)))
            n.mtime = now
            self._changed(n, data=True)
        for name, v in (("atime", atime), ("mtime", mtime), ("ctime", ctime)):
            if v is not None:
                setattr(n, name, now if v == "now" else tuple(v))
        n.ctime = now if ctime is None else n.ctime
        self._changed(n)
        return self._attr(n)

    async def mknod(self, parent, name, mode, rdev, ctx):
        return self._attr(self._new(parent, name, mode, ctx, rdev))

    async def mkdir(self, parent, name, mode, ctx):
        n = self._new(parent, name, stat.S_IFDIR | (mode & 0o7777), ctx)
        n.nlink = 2
        self._dir(parent).nlink += 1
        return self._attr(n)

    async def symlink(self, parent, name, target, ctx):
        n = self._new(parent, name, stat.S_IFLNK | 0o777, ctx)
        n.target = bytes(target)
        return self._attr(n)

    async def readlink(self, ino):
        n = self._node(ino)
        if not stat.S_ISLNK(n.mode):
            raise FsError(errno.EINVAL)
        return n.target

    async def link(self, ino, new_parent, new_name, ctx):
        n = self._node(ino)
        d = self._dir(new_parent)
        if new_name in d.entries:
            raise FsError(errno.EEXIST)
        self._link(d, new_name, n)
        n.nlink += 1
        n.ctime = _now()
        return self._attr(n)

    def _remove(self, d: _Node, name: bytes) -> _Node:
        ino, _pos = d.entries.pop(name)
        n = self._node(ino)
        n.nlink -= 1 if not stat.S_ISDIR(n.mode) else 2
        if stat.S_ISDIR(n.mode):
            d.nlink -= 1
        n.ctime = d.mtime = d.ctime = _now()
        self._changed(d)
        return n

    async def unlink(self, parent, name, ctx):
        d = self._dir(parent)
        ent = d.entries.get(name)
        if ent is None:
            raise FsError(errno.ENOENT)
        if stat.S_ISDIR(self._node(ent[0]).mode):
            raise FsError(errno.EISDIR)
        self._remove(d, name)

    async def rmdir(self, parent, name, ctx):
        d = self._dir(parent)
        ent = d.entries.get(name)
        if ent is None:
            raise FsError(errno.ENOENT)
        n = self._node(ent[0])
        if not stat.S_ISDIR(n.mode):
            raise FsError(errno.ENOTDIR)
        if n.entries:
            raise FsError(errno.ENOTEMPTY)
        self._remove(d, name)

    async def rename(self, parent, name, new_parent, new_name, flags, ctx):
        d, nd = self._dir(parent), self._dir(new_parent)
        src = d.entries.get(name)
        if src is None:
            raise FsError(errno.ENOENT)
        dst = nd.entries.get(new_name)
        if flags & 2:  # RENAME_EXCHANGE
            if dst is None:
                raise FsError(errno.ENOENT)
            d.entries[name], nd.entries[new_name] = (dst[0], src[1]), (src[0], dst[1])
            return
        if dst is not None:
            if flags & 1:
                raise FsError(errno.EEXIST)
            if dst[0] == src[0]:
                return
            dn = self._node(dst[0])
            if stat.S_ISDIR(dn.mode) and dn.entries:
                raise FsError(errno.ENOTEMPTY)
            self._remove(nd, new_name)
        n = self._node(src[0])
        del d.entries[name]
        nd.entries[new_name] = (n.ino, nd.next_pos)
        nd.next_pos += 1
        if stat.S_ISDIR(n.mode) and d is not nd:
            n.parent = nd.ino
            d.nlink -= 1
            nd.nlink += 1
        n.ctime = d.mtime = nd.mtime = _now()

    # ---------------------------------------------------------------- data
    async def open(self, ino, flags, ctx):
        self._node(ino)

    async def read(self, ino, offset, size):
        n = self._node(ino)
        if stat.S_ISDIR(n.mode):
            raise FsError(errno.EISDIR)
        return bytes(n.data[offset:offset + size])

    async def write(self, ino, offset, data, ctx, append=False):
        n = self._node(ino)
        if append:
            offset = len(n.data)
        end = offset + len(data)
        if len(n.data) < end:
            n.data.extend(bytes(end - len(n.data)))
        n.data[offset:end] = data
        n.mtime = n.ctime = _now()
        self._changed(n, data=True)
        return len(data)

    async def fsync(self, ino, datasync):
        self._node(ino)

    async def readdir(self, ino, start_pos):
        d = self._dir(ino)
        ents: list[tuple[int, bytes, Any]] = [(0, b".", self._attr(d)),
                                             (1, b"..", self._attr(self._node(d.parent)))]
        for name, (cino, pos) in sorted(d.entries.items(), key=lambda kv: kv[1][1]):
            ents.append((pos, name, self._attr(self._node(cino))))
        ents = [e for e in ents if e[0] >= start_pos]
        out = []
        for i, (pos, name, a) in enumerate(ents):
            nxt = ents[i + 1][0] if i + 1 < len(ents) else pos + 1
            out.append((name, a, nxt))
        return out

    async def statfs(self):
        return {"f_bsize": 4096, "f_frsize": 4096, "f_blocks": 1 << 20, "f_bfree": 1 << 19,
                "f_bavail": 1 << 19, "f_files": len(self.nodes) + 1000,
                "f_ffree": 1000, "f_favail": 1000, "f_namemax": 255}

    # ---------------------------------------------------------------- xattrs
    async def getxattr(self, ino, name, ctx):
        n = self._node(ino)
        if name not in n.xattrs:
            raise FsError(errno.ENODATA)
        return n.xattrs[name]

    async def setxattr(self, ino, name, value, flags, ctx):
        n = self._node(ino)
        if b"." not in name:
            raise FsError(errno.EOPNOTSUPP)
        if len(name) > 255:
            raise FsError(errno.ERANGE)
        n.xattrs[name] = bytes(value)
        n.ctime = _now()
        self._changed(n)

    async def listxattr(self, ino, ctx):
        return sorted(self._node(ino).xattrs)

    async def removexattr(self, ino, name, ctx):
        n = self._node(ino)
        if n.xattrs.pop(name, None) is None:
            raise FsError(errno.ENODATA)
        self._changed(n)

    # ---------------------------------------------------------------- misc
    async def forget(self, ino):
        n = self.nodes.get(ino)
        if n is not None and n.nlink <= 0:
            del self.nodes[ino]

    async def sync(self):
        self.seq += 1

    async def stat_more(self, ino):
        n = self._node(ino)
        online = (len(n.data) + 4095) // 4096 if stat.S_ISREG(n.mode) else 0
        return {"meta_seq": n.meta_seq, "data_seq": n.data_seq,
                "data_version": n.data_version, "online_blocks": online,
                "offline_blocks": 0, "crtime": n.crtime}

    async def run(self):
        return None


def _read_fsid(path: str) -> int | None:
    try:
        from fs.block import Device, read_super

        dev = Device(path, readonly=True)
        try:
            return read_super(dev).fsid
        finally:
            dev.close()
    except Exception:
        return None


class _DataDev:
    """What the sysfs view reads of a data device: its path (data_device_maj_min)."""

    def __init__(self, path: str) -> None:
        self.path = path


class FakeMount:
    """The `fs.super.Mount` interface over in-memory fakes.

    For the sysfs view (fs/sysfs.py) it has what a client-only mount that does not lead
    shows: rid, fsid, format_version, data_device_maj_min, counters, mount_options
    (writable through `set_option`) and debugfs triggers; no quorum/ and no fence/."""

    def __init__(self) -> None:
        self.counters = Counters()
        self.options: dict[str, Any] = {}
        self.closed = False
        self.triggers = Triggers()
        self.quorum = None
        self.server = None
        self.data_dev: _DataDev | None = None

    @classmethod
    async def open(cls, meta_path: str, data_path: str, options: dict, nursery) -> FakeMount:
        from fs.testing.fakes import make_context

        self = cls()
        self.options = dict(options)
        self.fsid = _read_fsid(meta_path) or secrets.randbits(64) or 1
        self.rid = secrets.randbits(64) or 1
        self.sb = fmt.Super(fsid=self.fsid, total_meta_blocks=1 << 16,
                            total_data_blocks=1 << 20, flags=fmt.SUPER_FLAG_META)
        self.data_dev = _DataDev(data_path)
        self.mctx = make_context()
        self.mctx.fsid, self.mctx.rid = self.fsid, self.rid
        self.mctx.counters = self.counters
        self.mctx.options = self.options
        try:
            from fs.filesystem import Filesystem
        except ImportError:
            Filesystem = MemFilesystem  # noqa: N806
        self.fs = Filesystem(self.mctx)
        if isinstance(self.fs, MemFilesystem):
            self.mctx.statfs = self._mem_statfs
        nursery.start_soon(self.fs.run)
        return self

    async def _mem_statfs(self) -> dict[str, int]:
        return {"total_meta_blocks": 1 << 16, "free_meta_blocks": 1 << 15,
                "total_data_blocks": 1 << 20, "free_data_blocks": 1 << 19,
                "inode_count": len(self.fs.nodes), "next_ino": self.fs.next_ino}

    def set_option(self, name: str, text: str) -> None:
        """A sysfs mount_options/ write: validated and stored (nothing applies it here)."""
        from fs.options import OptionError, validate
        from fs.sysfs import OPTIONS_RW

        if name not in OPTIONS_RW:
            raise FsError(errno.EACCES if name in self.options else errno.ENOENT)
        try:
            self.options[name] = validate(name, text.strip())
        except OptionError as e:
            raise FsError(errno.EINVAL, e.message) from None

    async def sync(self) -> None:
        await self.mctx.trans.sync()

    async def close(self) -> None:
        if not self.closed:
            self.closed = True
            await self.sync()
