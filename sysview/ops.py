"""The `fs.fuse` Operations of the sysfs view: paths -> requests to the owning mount daemon.

The tree, relative to the view's root::

    fs/scoutfs/<ident>/...                  tree "sys"   of the mount <ident>
    kernel/debug/scoutfs/<ident>/...        tree "debug" of the mount <ident>

The dirs above the ident dirs are fixed; the ident dirs are the live mounts
(`Backend.mounts`); everything below them is listed, read and written by the mount's daemon
(control ops ``sysfs_list``/``sysfs_read``/``sysfs_write``, fs/sysfs.py).

Inode numbers are handed out per path and never reused; an inode is dropped when the kernel
forgets it.  Nothing is cached: entry and attr timeouts are 0 (every path walk asks again,
so a vanished mount's dir disappears at once) and files are opened with direct_io (every
read reaches us).  A file's text is fetched by a read at offset 0 and kept in its handle for
the reads that follow (``cat`` reads until it gets 0 bytes), as sysfs's seq_file does; each
write(2) is one store, as in sysfs.

Concurrency: `fs.fuse.Session` runs handlers as concurrent trio tasks (`forget` inline,
synchronously).  The inode table and handle table are changed only between awaits.  No
handler is interruptible: every request to a daemon is bounded by the backend's timeout (EIO
after it), so a hung daemon never hangs the view.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import time
from dataclasses import dataclass, field

from fs import fuse
from fs.errors import FsError
from fs.sysfs import DEBUG_PREFIX, DIR_MODE, SYS_PREFIX, TREE_DEBUG, TREE_SYS
from fs.vfs import FuseErrors
from sysview.backend import Backend

log = logging.getLogger(__name__)

FUSEError = fuse.FUSEError
ROOT_INODE = fuse.ROOT_INODE

Path = tuple[str, ...]

# the fixed dirs and their fixed children
STATIC: dict[Path, tuple[str, ...]] = {
    (): ("fs", "kernel"),
    ("fs",): ("scoutfs",),
    SYS_PREFIX: (),
    ("kernel",): ("debug",),
    ("kernel", "debug"): ("scoutfs",),
    DEBUG_PREFIX: (),
}
IDENT_PARENTS = {SYS_PREFIX: TREE_SYS, DEBUG_PREFIX: TREE_DEBUG}

FILE_SIZE = 4096  # what sysfs files report


def where(path: Path) -> tuple[str, str, str] | None:
    """(ident, tree, path inside the ident dir) of a path at or below an ident dir."""
    for prefix, tree in IDENT_PARENTS.items():
        n = len(prefix)
        if len(path) > n and path[:n] == prefix:
            return path[n], tree, "/".join(path[n + 1:])
    return None


@dataclass
class Node:
    ino: int
    path: Path
    is_dir: bool
    mode: int  # permission bits
    nlookup: int = 0


@dataclass
class Handle:
    node: Node
    data: bytes | None = None
    entries: list[tuple[str, bool, int]] = field(default_factory=list)


class SysfsOperations(fuse.Operations):
    def __init__(self, backend: Backend) -> None:
        super().__init__()
        self.backend = backend
        self.start_ns = time.time_ns()
        self.nodes: dict[int, Node] = {}
        self.by_path: dict[Path, int] = {}
        self.handles: dict[int, Handle] = {}
        self._next_ino = ROOT_INODE + 1
        self._next_fh = 1
        self.nodes[ROOT_INODE] = Node(ROOT_INODE, (), True, DIR_MODE, 1)
        self.by_path[()] = ROOT_INODE

    # ------------------------------------------------------------------ table

    def _node(self, ino: int) -> Node:
        n = self.nodes.get(ino)
        if n is None:
            raise FUSEError(errno.ENOENT)
        return n

    def _node_for(self, path: Path, is_dir: bool, mode: int) -> Node:
        ino = self.by_path.get(path)
        if ino is not None:
            n = self.nodes[ino]
            if n.is_dir == is_dir:
                n.mode = mode
                return n
            # the same path is now of another kind: a new inode, the old one is orphaned
            del self.by_path[path]
        ino = self._next_ino
        self._next_ino += 1
        n = Node(ino, path, is_dir, mode)
        self.nodes[ino] = n
        self.by_path[path] = ino
        return n

    def _attrs(self, n: Node) -> fuse.EntryAttributes:
        e = fuse.EntryAttributes()
        e.st_ino = n.ino
        e.generation = 0
        e.entry_timeout = 0
        e.attr_timeout = 0
        e.st_mode = (stat.S_IFDIR if n.is_dir else stat.S_IFREG) | n.mode
        e.st_nlink = 2 if n.is_dir else 1
        e.st_uid = 0
        e.st_gid = 0
        e.st_rdev = 0
        e.st_size = 0 if n.is_dir else FILE_SIZE
        e.st_blksize = 4096
        e.st_blocks = 0
        e.st_atime_ns = e.st_mtime_ns = e.st_ctime_ns = self.start_ns
        return e

    # ------------------------------------------------------------------ resolving

    async def _socket(self, ident: str) -> str:
        sock = await self.backend.find(ident)
        if sock is None:
            raise FsError(errno.ENOENT)
        return sock

    async def _request(self, path: Path, req: dict) -> dict:
        w = where(path)
        if w is None:
            raise FsError(errno.ENOENT)
        ident, tree, rel = w
        sock = await self._socket(ident)
        return await self.backend.call(sock, dict(req, tree=tree, path=rel))

    @staticmethod
    def _dir_mode(path: Path) -> int:
        """debugfs is root's alone: /sys/kernel/debug and everything under it are 0700."""
        return 0o700 if path[:2] == DEBUG_PREFIX[:2] else DIR_MODE

    async def _children(self, path: Path) -> list[tuple[str, bool, int]]:
        """(name, is_dir, mode) of every entry of the dir at `path`."""
        if path in IDENT_PARENTS:
            return [(ident, True, self._dir_mode(path + (ident,)))
                    for ident in sorted(await self.backend.mounts())]
        if path in STATIC:
            return [(name, True, self._dir_mode(path + (name,))) for name in STATIC[path]]
        reply = await self._request(path, {"op": "sysfs_list"})
        return [(str(name), kind == "d", int(mode) & 0o7777)
                for name, kind, mode in reply.get("entries", [])]

    async def _child(self, path: Path, name: str) -> tuple[bool, int]:
        if path in IDENT_PARENTS:
            await self._socket(name)
            return True, self._dir_mode(path + (name,))
        if path in STATIC:
            if name in STATIC[path]:
                return True, self._dir_mode(path + (name,))
            raise FsError(errno.ENOENT)
        reply = await self._request(path, {"op": "sysfs_list", "name": name})
        for ent_name, kind, mode in reply.get("entries", []):
            if ent_name == name:
                return kind == "d", int(mode) & 0o7777
        raise FsError(errno.ENOENT)

    # ------------------------------------------------------------------ inodes

    async def lookup(self, parent_inode, name, ctx=None):
        with FuseErrors("lookup"):
            parent = self._node(parent_inode)
            try:
                text = bytes(name).decode()
            except UnicodeDecodeError:
                raise FUSEError(errno.ENOENT) from None
            if not parent.is_dir or text in (".", "..") or "/" in text:
                raise FUSEError(errno.ENOENT)
            is_dir, mode = await self._child(parent.path, text)
            n = self._node_for(parent.path + (text,), is_dir, mode)
            n.nlookup += 1
            return self._attrs(n)

    def forget(self, inode_list):
        for ino, nlookup in inode_list:
            n = self.nodes.get(ino)
            if n is None or ino == ROOT_INODE:
                continue
            n.nlookup -= nlookup
            if n.nlookup <= 0:
                del self.nodes[ino]
                if self.by_path.get(n.path) == ino:
                    del self.by_path[n.path]

    async def getattr(self, inode, ctx=None):
        return self._attrs(self._node(inode))

    async def setattr(self, inode, attr, fields, fh, ctx):
        # open(O_TRUNC) of a file to write it, touch, chmod: accepted and ignored, as
        # nothing about these files can change but their content
        return self._attrs(self._node(inode))

    async def statfs(self, ctx):
        s = fuse.StatvfsData()
        s.f_bsize = s.f_frsize = 4096
        s.f_namemax = 255
        return s

    # ------------------------------------------------------------------ files

    async def open(self, inode, flags, ctx):
        with FuseErrors("open"):
            n = self._node(inode)
            if n.is_dir:
                raise FUSEError(errno.EISDIR)
            if flags & os.O_ACCMODE != os.O_RDONLY and not n.mode & 0o222:
                # kernfs refuses to open an attribute without a store for writing
                raise FUSEError(errno.EACCES)
            fh = self._next_fh
            self._next_fh += 1
            self.handles[fh] = Handle(n)
            return fuse.FileInfo(fh=fh, direct_io=True, keep_cache=False)

    def _handle(self, fh: int) -> Handle:
        h = self.handles.get(fh)
        if h is None:
            raise FUSEError(errno.EBADF)
        return h

    async def read(self, fh, off, size):
        with FuseErrors("read"):
            h = self._handle(fh)
            if off == 0 or h.data is None:
                reply = await self._request(h.node.path, {"op": "sysfs_read"})
                h.data = str(reply.get("text", "")).encode()
            return h.data[off:off + size]

    async def write(self, fh, off, buf):
        with FuseErrors("write"):
            h = self._handle(fh)
            value = bytes(buf).decode(errors="replace")
            await self._request(h.node.path, {"op": "sysfs_write", "value": value})
            h.data = None
            return len(buf)

    async def flush(self, fh):
        return None

    async def release(self, fh):
        self.handles.pop(fh, None)

    async def create(self, parent_inode, name, mode, flags, ctx):
        raise FUSEError(errno.EACCES)  # as the VFS answers for a dir without create

    async def mknod(self, parent_inode, name, mode, rdev, ctx):
        raise FUSEError(errno.EPERM)

    async def mkdir(self, parent_inode, name, mode, ctx):
        raise FUSEError(errno.EPERM)

    async def unlink(self, parent_inode, name, ctx):
        raise FUSEError(errno.EPERM)

    async def rmdir(self, parent_inode, name, ctx):
        raise FUSEError(errno.EPERM)

    async def rename(self, parent_inode_old, name_old, parent_inode_new, name_new, flags, ctx):
        raise FUSEError(errno.EPERM)

    async def symlink(self, parent_inode, name, target, ctx):
        raise FUSEError(errno.EPERM)

    async def link(self, inode, new_parent_inode, new_name, ctx):
        raise FUSEError(errno.EPERM)

    # ------------------------------------------------------------------ directories

    async def opendir(self, inode, ctx):
        with FuseErrors("opendir"):
            n = self._node(inode)
            if not n.is_dir:
                raise FUSEError(errno.ENOTDIR)
            fh = self._next_fh
            self._next_fh += 1
            self.handles[fh] = Handle(n, entries=await self._children(n.path))
            return fh

    async def readdir(self, fh, start_id, token):
        with FuseErrors("readdir"):
            h = self._handle(fh)
            for i in range(start_id, len(h.entries)):
                name, is_dir, mode = h.entries[i]
                n = self._node_for(h.node.path + (name,), is_dir, mode)
                added = fuse.readdir_reply(token, name.encode(), self._attrs(n), i + 1)
                if added and token.plus:
                    n.nlookup += 1  # a readdirplus entry counts as a lookup
                elif n.nlookup <= 0 and self.by_path.get(n.path) == n.ino:
                    del self.by_path[n.path]  # made for this reply only
                    del self.nodes[n.ino]
                if not added:
                    break

    async def releasedir(self, fh):
        self.handles.pop(fh, None)

    async def fsyncdir(self, fh, datasync):
        return None

    async def fsync(self, fh, datasync):
        return None


def fuse_options(allow_other: bool) -> set[str]:
    out = {"fsname=scoutfs-sysfs", "subtype=scoutfs-sysfs", "default_permissions", "noatime",
           "nodev", "nosuid", "noexec"}
    if allow_other:
        out.add("allow_other")
    return out
