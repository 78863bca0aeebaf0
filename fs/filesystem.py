"""The POSIX filesystem: the one object the adapters (FUSE, control socket) call.

Every method is async and raises `FsError(errno)`.  Namespace operations live here (with
the item helpers of `fs.inode` and `fs.dir`); file contents and xattrs are delegated to
`fs.data` and `fs.xattr`.

Locking (docs/design.md): rename lock → inode group locks (one `locks.inodes` call, which
takes the groups in ascending order) → WRITE_ONLY zone locks in ascending zone order
(inode index, orphan, xattr totals, xattr index) → transaction hold.  Operations that must find an inode by name
before they know which groups to lock do it in two phases: a READ-locked lookup, then all
the groups WRITE-locked together and the lookup repeated; if the name now refers to
another inode the operation starts over.  We never take a lock while holding another
inode group lock or a transaction.

Atomicity: cluster locks are shared by all tasks of a mount and code between two awaits
is atomic, so a change re-reads everything it depends on *inside* its transaction hold,
after every lock is granted, and then writes its items with synchronous calls.  Nothing
is written before the last check that can fail.

POSIX ACLs (`fs.acl`): a chmod rewrites the access ACL's owner, mask (or group) and other
entries; a new inode inherits its parent's default ACL (directories as their default ACL
too) with the requested mode limited by it and no umask, and without a default ACL gets the
mode less ``ctx.umask`` (the kernel leaves the umask to us, see `fs.vfs`).  Symlinks get
neither.  Setting and removing ACLs is `fs.xattr`'s.

Quotas (`fs.quota`): creates check the caller's inode quota before they take any lock
(`_check_quota`: the rules' refresh takes the quota zone's READ lock, the parent's proj is
read under its own READ lock, released first).

Deletion (spec §4, docs/design.md "Orphans and deletion"): when an operation takes an
inode's link count to zero it writes its orphan item in the same transaction.  `forget` (the
kernel's last reference) and the last release of its open handles queue the inode for the
`run` worker (never deleted inline: the callers are FUSE paths), which calls `evict` ->
`try_delete`: under the inode group's WRITE lock, with the other mounts' open map
(OPEN_INO_MAP, cached per write_seq of that grant) and ours, it deletes an inode nobody has
open in several transactions.  An inode open on another mount is left to that mount's own
release; inodes of a mount that died are found by the orphan scanner (`fs/orphan.py`).  An
O_TMPFILE inode (`tmpfile`) is born that way: nlink 0 and an orphan item; `link` of an
inode with no links deletes its orphan item.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

import trio

from fs import acl, quota, totl
from fs import dir as fsdir
from fs import format as fmt
from fs import inode as fsinode
from fs import omap as omap_mod
from fs.errors import FsError
from fs.inode import (
    LOCK_READ,
    LOCK_WRITE,
    Attr,
    Ctx,
    index_lock,
    inode_attr,
    load_inode,
    orphan_lock,
    store_inode,
    try_load_inode,
)
from fs.kmsg import KMSG

log = logging.getLogger(__name__)

RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2

# statfs: how many inodes one free 64 KiB meta block is taken to hold.  An inode costs its
# inode item and its META_SEQ and DATA_SEQ index items; directory entries and btree slack
# are ignored, as scoutfs's own estimate (free meta blocks × inodes per block) ignores them.
INODES_PER_META_BLOCK = fmt.META_BLOCK_SIZE // (
    fmt.btree_entry_size(fmt.INODE_SIZE) + 2 * fmt.btree_entry_size(0)
)

# readdir returns at most this many entries per call by default: a FUSE readdir fills one
# buffer and comes back for more, so larger batches would only read attrs for nothing
READDIR_BATCH = 1024

# INO_PATH: a path and its NUL fit in PATH_MAX bytes (else ENAMETOOLONG); a walk up that
# found a directory removed under it starts over at most this many times
PATH_MAX = 4096
INO_PATH_RETRIES = 8

# copy_file_range copies through read and write in chunks of at most this many bytes
COPY_CHUNK = 1 << 20

# remote open maps cached for at most this many inode groups (see remote_omap)
OMAP_CACHE_GROUPS = 4096
# inodes remembered as deleted here, for the orphan scanner (see deleted_recently)
DELETED_RECENTLY_MAX = 1 << 16

_VALID_MKNOD = (stat.S_IFREG, stat.S_IFIFO, stat.S_IFCHR, stat.S_IFBLK, stat.S_IFSOCK)


@dataclass
class StatFs:
    """statvfs(2) figures; block counts in f_frsize (4 KiB) units."""

    f_bsize: int
    f_frsize: int
    f_blocks: int
    f_bfree: int
    f_bavail: int
    f_files: int
    f_ffree: int
    f_favail: int
    f_namemax: int


class _Retry(Exception):
    """The entries an operation looked up changed before it locked them: start over."""


def _resolve_time(t, now: fsinode.Ts) -> fsinode.Ts:
    return now if isinstance(t, str) and t == "now" else (int(t[0]), int(t[1]))


def _check_lookup_name(name: bytes) -> None:
    if len(name) > fmt.NAME_MAX:
        raise FsError(errno.ENAMETOOLONG)


class Filesystem:
    def __init__(self, mctx) -> None:
        self.mctx = mctx
        # inodes whose link count this mount saw reach zero: deleted on their last forget
        self._unlinked: set[int] = set()
        # inodes queued for deletion (ordered, no duplicates)
        self._delete_queue: dict[int, None] = {}
        self._wake: trio.Event | None = None
        self._worker_done = trio.Event()  # set while the worker runs no deletion
        self._worker_done.set()
        # inodes this mount deleted: their orphan items stay in fs_root until the next
        # merge, and the scanner need not lock their groups again (numbers are never reused)
        self.deleted_recently: set[int] = set()
        self._trying: set[int] = set()  # try_delete in progress (scoutfs's "trying" bit)
        # group -> (write_seq of our WRITE grant, the other mounts' open map then)
        self._omap_cache: dict[int, tuple[int, int]] = {}
        self._omap_fetching: dict[int, trio.Event] = {}  # group -> request in flight
        # the contents and xattr modules (set them to fakes in tests if need be)
        self.data: Any = None
        self.xattr: Any = None

    # ------------------------------------------------------------------ helpers

    def _data(self):
        if self.data is None:
            from fs import data

            self.data = data
        return self.data

    def _xattr(self):
        if self.xattr is None:
            from fs import xattr

            self.xattr = xattr
        return self.xattr

    def _acls(self):
        """The xattr item helpers ACLs are kept with (always the real module: the ACLs of
        new inodes and chmod are namespace semantics, whatever `self.xattr` is)."""
        from fs import xattr

        return xattr

    def _note_nlink(self, inode: fmt.Inode) -> None:
        if inode.nlink == 0:
            self._unlinked.add(inode.ino)

    def _write_orphan(self, inode: fmt.Inode, olock, lock) -> None:
        """The orphan item of an inode whose last link went (`lock`: its WRITE lock)."""
        self.mctx.items.update(fmt.orphan_key(inode.ino), b"", olock, primary=lock)
        self._unlinked.add(inode.ino)

    async def _load_dir(self, ino: int, lock) -> fmt.Inode:
        inode = await load_inode(self.mctx, ino, lock)
        if not fsinode.is_dir(inode):
            raise FsError(errno.ENOTDIR)
        return inode

    async def _peek_entry(self, parent: int, name: bytes) -> fmt.Dirent:
        """Phase one of a two-phase operation: the entry name of parent, READ-locked."""
        async with self.mctx.locks.inodes([parent], LOCK_READ) as locks:
            await self._load_dir(parent, locks[parent])
            d = await fsdir.lookup_dirent(self.mctx, parent, name, locks[parent])
        if d is None:
            raise FsError(errno.ENOENT)
        return d

    # ------------------------------------------------------------------ attributes

    async def getattr(self, ino: int) -> Attr:
        async with self.mctx.locks.inodes([ino], LOCK_READ) as locks:
            inode = await load_inode(self.mctx, ino, locks[ino])
        self._note_nlink(inode)
        return inode_attr(inode)

    async def stat_more(self, ino: int) -> dict:
        async with self.mctx.locks.inodes([ino], LOCK_READ) as locks:
            inode = await load_inode(self.mctx, ino, locks[ino])
        return {
            "meta_seq": inode.meta_seq,
            "data_seq": inode.data_seq,
            "data_version": inode.data_version,
            "online_blocks": inode.online_blocks,
            "offline_blocks": inode.offline_blocks,
            "crtime": inode.crtime,
        }

    async def setattr(self, ino: int, *, mode: int | None = None, uid: int | None = None,
                      gid: int | None = None, size: int | None = None, atime=None,
                      mtime=None, ctime=None, ctx: Ctx | None = None) -> Attr:
        """Change attributes; times are (sec, nsec) or "now".  ctime becomes now (or the
        given ctime) on any change; crtime never changes here.  A file under retention
        refuses every change (EPERM, §5.11)."""
        mctx = self.mctx
        if size is not None:
            if size < 0:
                raise FsError(errno.EINVAL)
            async with mctx.locks.inodes([ino], LOCK_READ) as locks:
                inode = await load_inode(mctx, ino, locks[ino])
            if fsinode.is_dir(inode):
                raise FsError(errno.EISDIR)
            if not fsinode.is_reg(inode):
                raise FsError(errno.EINVAL)
            if inode.flags & fmt.INODE_FLAG_RETENTION:
                raise FsError(errno.EPERM, "file is under retention")
            await self._data().truncate(mctx, ino, size, ctx)
        if mode is None and uid is None and gid is None and atime is None and mtime is None \
                and ctime is None:
            return await self.getattr(ino)
        async with mctx.locks.inodes([ino], LOCK_WRITE) as locks, \
                index_lock(mctx) as ilock, mctx.trans.hold():
            inode = await load_inode(mctx, ino, locks[ino])
            if inode.flags & fmt.INODE_FLAG_RETENTION:  # any attribute change (§5.11)
                raise FsError(errno.EPERM, "file is under retention")
            access = acl_value = None
            if mode is not None:
                mode = (inode.mode & fmt.S_IFMT) | (mode & 0o7777)
                access = await self._acls().find(mctx, ino, acl.ACCESS, locks[ino])
                entries = None if access is None else acl.parse(access.value)
                if entries:  # posix_acl_chmod
                    acl_value = acl.format_acl(acl.chmod(entries, mode))
            # ---- no awaits and no failures from here on
            now = mctx.now()
            if mode is not None:
                inode.mode = mode
                if access is not None:
                    self._acls().put(mctx, inode, acl.ACCESS, acl_value, access, locks[ino])
            if uid is not None:
                inode.uid = uid
            if gid is not None:
                inode.gid = gid
            if atime is not None:
                inode.atime = _resolve_time(atime, now)
            if mtime is not None:
                inode.mtime = _resolve_time(mtime, now)
            inode.ctime = now if ctime is None else _resolve_time(ctime, now)
            store_inode(mctx, inode, locks[ino], ilock)
        return inode_attr(inode)

    # ------------------------------------------------------------------ names

    async def lookup(self, parent: int, name: bytes) -> Attr:
        _check_lookup_name(name)
        mctx = self.mctx
        if name == b".":
            attr = await self.getattr(parent)
            if not stat.S_ISDIR(attr.mode):
                raise FsError(errno.ENOTDIR)
            return attr
        if name == b"..":
            async with mctx.locks.inodes([parent], LOCK_READ) as locks:
                await self._load_dir(parent, locks[parent])
                pino = await fsdir.parent_of(mctx, parent, locks[parent])
            return await self.getattr(pino)
        missing: fmt.Dirent | None = None
        while True:
            d = await self._peek_entry(parent, name)
            if d == missing:
                # the same entry (positions are never reused) twice, its inode gone both
                # times: not a race with unlink, an entry naming no inode
                log.error("directory %d: entry %r names inode %d, which does not exist "
                          "(metadata corruption)", parent, name, d.ino, extra=KMSG)
                raise FsError(errno.EIO, f"directory {parent}: entry {name!r} names "
                              f"missing inode {d.ino}")
            async with mctx.locks.inodes([d.ino], LOCK_READ) as locks:
                inode = await try_load_inode(mctx, d.ino, locks[d.ino])
            if inode is not None:
                self._note_nlink(inode)
                return inode_attr(inode)
            # the entry was removed and its inode deleted since we read it: look again
            missing = d

    async def _check_quota(self, parent: int, ctx: Ctx) -> None:
        """EDQUOT when an inode rule forbids the caller a new inode in parent (fs/quota.py;
        before any lock or hold: the rules' refresh takes the quota zone's lock)."""
        mctx = self.mctx
        await quota.prepare(mctx)
        if not quota.has_rules(mctx, quota.OP_INODE):
            return
        async with mctx.locks.inodes([parent], LOCK_READ) as locks:
            pdir = await self._load_dir(parent, locks[parent])
        gid = pdir.gid if pdir.mode & stat.S_ISGID else ctx.gid
        await quota.check_inode(mctx, pdir, ctx.uid, gid)

    async def _create(self, parent: int, name: bytes | None, mode: int, rdev: int, ctx: Ctx,
                      target: bytes | None = None) -> Attr:
        """A new inode named name in parent; name None makes an O_TMPFILE inode: no entry,
        no links and an orphan item, written in the same transaction."""
        mctx = self.mctx
        tmpfile = name is None
        if not tmpfile:
            fsdir.check_name(name)
        if target is not None:
            fsdir.check_symlink_target(target)
        await self._check_quota(parent, ctx)
        ino = await mctx.alloc_ino()  # may await the server: before any lock or hold
        async with AsyncExitStack() as stack:
            locks = await stack.enter_async_context(
                mctx.locks.inodes([parent, ino], LOCK_WRITE))
            ilock = await stack.enter_async_context(index_lock(mctx))
            olock = await stack.enter_async_context(orphan_lock(mctx)) if tmpfile else None
            await stack.enter_async_context(mctx.trans.hold())
            pdir = await self._load_dir(parent, locks[parent])
            if pdir.nlink == 0:
                raise FsError(errno.ENOENT, "directory was removed")
            if not tmpfile and \
                    await fsdir.lookup_dirent(mctx, parent, name, locks[parent]) is not None:
                raise FsError(errno.EEXIST)
            if await mctx.items.lookup(fmt.inode_key(ino), locks[ino]) is not None:
                # never hand out a live inode number, whatever the super says
                log.error("inode allocation gave inode %d, which is in use: the super's "
                          "next_ino is below the inodes in use (corrupt metadata?)", ino, extra=KMSG)
                raise FsError(errno.EIO, f"allocated inode {ino} is in use")
            now = mctx.now()
            gid = ctx.gid
            if pdir.mode & stat.S_ISGID:
                gid = pdir.gid
                if stat.S_ISDIR(mode):
                    mode |= stat.S_ISGID
            elif stat.S_ISDIR(mode):
                mode &= ~stat.S_ISGID
            if not stat.S_ISDIR(mode) and mode & stat.S_ISGID and mode & stat.S_IXGRP \
                    and gid != ctx.gid and ctx.uid != 0:
                # inode_init_owner: no setgid on a file of a group the creator is not in
                # (we only know the caller's primary group)
                mode &= ~stat.S_ISGID
            # posix_acl_create: inherit the default ACL, else apply the umask
            pdefault = None
            if target is None:
                pdefault = await self._acls().find(mctx, parent, acl.DEFAULT, locks[parent])
            mode, access_acl, default_acl = acl.create(
                None if pdefault is None else pdefault.value, mode, ctx.umask)
            # ---- no awaits and no failures from here on
            rdev = rdev if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else 0
            inode = fsinode.new_inode(mctx, ino, mode, ctx.uid, gid, now, rdev=rdev,
                                      proj=pdir.proj)
            for aname, avalue in ((acl.ACCESS, access_acl), (acl.DEFAULT, default_acl)):
                if avalue is not None:
                    self._acls().put(mctx, inode, aname, avalue, None, locks[ino])
            if target is not None:
                inode.size = len(target)
                fsdir.write_symlink(mctx, ino, target, locks[ino])
            if tmpfile:  # d_tmpfile: no links, deleted on its last forget unless linked
                inode.nlink = 0
                self._write_orphan(inode, olock, locks[ino])
                store_inode(mctx, inode, locks[ino], ilock)
                return inode_attr(inode)
            fsdir.add_entry(mctx, pdir, name, ino, fmt.mode_to_dtype(mode), locks[parent],
                            locks[ino], now)
            if stat.S_ISDIR(mode):
                pdir.nlink += 1
            store_inode(mctx, inode, locks[ino], ilock)
            store_inode(mctx, pdir, locks[parent], ilock)
        return inode_attr(inode)

    async def mknod(self, parent: int, name: bytes, mode: int, rdev: int, ctx: Ctx) -> Attr:
        if mode & fmt.S_IFMT == 0:
            mode |= stat.S_IFREG
        if mode & fmt.S_IFMT not in _VALID_MKNOD:
            raise FsError(errno.EINVAL, f"mknod of mode {mode:o}")
        return await self._create(parent, name, mode & (fmt.S_IFMT | 0o7777), rdev, ctx)

    async def tmpfile(self, parent: int, mode: int, ctx: Ctx) -> Attr:
        """O_TMPFILE: a new regular inode with no name and nlink 0, created as mknod
        creates one in parent (umask or the parent's default ACL, setgid group, project id)
        and orphaned in the same transaction.  `link` gives it a name (and drops the
        orphan item); otherwise it is deleted on its last forget like an unlinked file."""
        if mode & fmt.S_IFMT == 0:
            mode |= stat.S_IFREG
        if mode & fmt.S_IFMT != stat.S_IFREG:
            raise FsError(errno.EINVAL, f"tmpfile of mode {mode:o}")
        return await self._create(parent, None, mode & (fmt.S_IFMT | 0o7777), 0, ctx)

    async def mkdir(self, parent: int, name: bytes, mode: int, ctx: Ctx) -> Attr:
        return await self._create(parent, name, stat.S_IFDIR | (mode & 0o7777), 0, ctx)

    async def symlink(self, parent: int, name: bytes, target: bytes, ctx: Ctx) -> Attr:
        return await self._create(parent, name, stat.S_IFLNK | 0o777, 0, ctx, bytes(target))

    async def readlink(self, ino: int) -> bytes:
        async with self.mctx.locks.inodes([ino], LOCK_READ) as locks:
            inode = await load_inode(self.mctx, ino, locks[ino])
            if not fsinode.is_lnk(inode):
                raise FsError(errno.EINVAL)
            return await fsdir.read_symlink(self.mctx, ino, inode.size, locks[ino])

    async def link(self, ino: int, new_parent: int, new_name: bytes, ctx: Ctx) -> Attr:
        mctx = self.mctx
        fsdir.check_name(new_name)
        async with mctx.locks.inodes([ino, new_parent], LOCK_WRITE) as locks, \
                index_lock(mctx) as ilock, orphan_lock(mctx) as olock, mctx.trans.hold():
            inode = await load_inode(mctx, ino, locks[ino])
            if fsinode.is_dir(inode):
                raise FsError(errno.EPERM, "hard link to a directory")
            pdir = await self._load_dir(new_parent, locks[new_parent])
            if pdir.nlink == 0:
                raise FsError(errno.ENOENT, "directory was removed")
            if await fsdir.lookup_dirent(mctx, new_parent, new_name, locks[new_parent]):
                raise FsError(errno.EEXIST)
            now = mctx.now()
            if inode.nlink == 0:  # an O_TMPFILE inode gets its first name
                mctx.items.delete(fmt.orphan_key(ino), olock, primary=locks[ino])
                self._unlinked.discard(ino)
            inode.nlink += 1
            inode.ctime = now
            fsdir.add_entry(mctx, pdir, new_name, ino, fmt.mode_to_dtype(inode.mode),
                            locks[new_parent], locks[ino], now)
            store_inode(mctx, inode, locks[ino], ilock)
            store_inode(mctx, pdir, locks[new_parent], ilock)
        return inode_attr(inode)

    async def unlink(self, parent: int, name: bytes, ctx: Ctx | None = None) -> None:
        await self._remove(parent, name, rmdir=False)

    async def rmdir(self, parent: int, name: bytes, ctx: Ctx | None = None) -> None:
        await self._remove(parent, name, rmdir=True)

    async def _remove(self, parent: int, name: bytes, rmdir: bool) -> None:
        mctx = self.mctx
        _check_lookup_name(name)
        if name == b".":
            raise FsError(errno.EINVAL if rmdir else errno.EISDIR)
        if name == b"..":
            raise FsError(errno.ENOTEMPTY if rmdir else errno.EISDIR)
        while True:
            d = await self._peek_entry(parent, name)
            try:
                async with mctx.locks.inodes([parent, d.ino], LOCK_WRITE) as locks, \
                        index_lock(mctx) as ilock, orphan_lock(mctx) as olock, \
                        mctx.trans.hold():
                    pdir = await self._load_dir(parent, locks[parent])
                    d2 = await fsdir.lookup_dirent(mctx, parent, name, locks[parent])
                    if d2 is None:
                        raise FsError(errno.ENOENT)
                    if d2.ino != d.ino:
                        raise _Retry
                    inode = await load_inode(mctx, d.ino, locks[d.ino])
                    if rmdir:
                        if not fsinode.is_dir(inode):
                            raise FsError(errno.ENOTDIR)
                        if not await fsdir.is_empty(mctx, d.ino, locks[d.ino]):
                            raise FsError(errno.ENOTEMPTY)
                    elif fsinode.is_dir(inode):
                        raise FsError(errno.EISDIR)
                    if inode.flags & fmt.INODE_FLAG_RETENTION:
                        raise FsError(errno.EPERM, "file is under retention")
                    now = mctx.now()
                    fsdir.remove_entry(mctx, pdir, d2, locks[parent], locks[d.ino], now)
                    if rmdir:
                        pdir.nlink -= 1
                        inode.nlink = 0
                    else:
                        inode.nlink -= 1
                    inode.ctime = now
                    if inode.nlink == 0:
                        self._write_orphan(inode, olock, locks[d.ino])
                    store_inode(mctx, inode, locks[d.ino], ilock)
                    store_inode(mctx, pdir, locks[parent], ilock)
                return
            except _Retry:
                continue

    async def rename(self, parent: int, name: bytes, new_parent: int, new_name: bytes,
                     flags: int, ctx: Ctx | None = None) -> None:
        if flags & ~(RENAME_NOREPLACE | RENAME_EXCHANGE) or \
                flags & RENAME_NOREPLACE and flags & RENAME_EXCHANGE:
            raise FsError(errno.EINVAL, f"rename flags {flags:#x}")
        if name in (b".", b"..") or new_name in (b".", b".."):
            raise FsError(errno.EBUSY)
        _check_lookup_name(name)
        fsdir.check_name(new_name)
        if parent != new_parent:
            # cross-directory renames are serialized cluster-wide: the ancestry our
            # subtree check reads cannot change until we are done
            async with self.mctx.locks.rename():
                await self._rename(parent, name, new_parent, new_name, flags)
        else:
            await self._rename(parent, name, new_parent, new_name, flags)

    async def _is_ancestor(self, anc: int, ino: int) -> bool:
        """Whether directory anc is ino or one of its ancestors (under the rename lock)."""
        cur = ino
        for _ in range(1 << 20):
            if cur == anc:
                return True
            if cur == fmt.ROOT_INO:
                return False
            async with self.mctx.locks.inodes([cur], LOCK_READ) as locks:
                cur = await fsdir.parent_of(self.mctx, cur, locks[cur])
        raise FsError(errno.ELOOP, "directory ancestry too deep")

    async def _rename(self, parent: int, name: bytes, new_parent: int, new_name: bytes,
                      flags: int) -> None:
        mctx = self.mctx
        exchange = bool(flags & RENAME_EXCHANGE)
        cross = parent != new_parent
        while True:
            # phase one: which inodes are involved
            async with mctx.locks.inodes([parent, new_parent], LOCK_READ) as locks:
                await self._load_dir(parent, locks[parent])
                await self._load_dir(new_parent, locks[new_parent])
                src = await fsdir.lookup_dirent(mctx, parent, name, locks[parent])
                tgt = await fsdir.lookup_dirent(mctx, new_parent, new_name, locks[new_parent])
            if src is None:
                raise FsError(errno.ENOENT)
            if tgt is None and exchange:
                raise FsError(errno.ENOENT)
            if tgt is not None and flags & RENAME_NOREPLACE:
                raise FsError(errno.EEXIST)
            if tgt is not None and tgt.ino == src.ino:
                return  # two names of one inode: POSIX says do nothing
            src_dir = src.dtype == fmt.DT_DIR
            tgt_dir = tgt is not None and tgt.dtype == fmt.DT_DIR
            if tgt is not None and not exchange:
                if src_dir and not tgt_dir:
                    raise FsError(errno.ENOTDIR)
                if tgt_dir and not src_dir:
                    raise FsError(errno.EISDIR)
            if cross:
                if src_dir and await self._is_ancestor(src.ino, new_parent):
                    raise FsError(errno.EINVAL, "directory moved into its own subtree")
                if exchange and tgt_dir and await self._is_ancestor(tgt.ino, parent):
                    raise FsError(errno.EINVAL, "directory moved into its own subtree")
            inos = list(dict.fromkeys(
                [parent, new_parent, src.ino] + ([tgt.ino] if tgt is not None else [])))
            try:
                async with mctx.locks.inodes(inos, LOCK_WRITE) as locks, \
                        index_lock(mctx) as ilock, orphan_lock(mctx) as olock, \
                        mctx.trans.hold():
                    await self._rename_locked(parent, name, new_parent, new_name, exchange,
                                              src, tgt, inos, locks, ilock, olock)
                return
            except _Retry:
                continue

    async def _rename_locked(self, parent, name, new_parent, new_name, exchange, src, tgt,
                             inos, locks, ilock, olock) -> None:
        mctx = self.mctx
        src2 = await fsdir.lookup_dirent(mctx, parent, name, locks[parent])
        tgt2 = await fsdir.lookup_dirent(mctx, new_parent, new_name, locks[new_parent])
        if src2 != src or tgt2 != tgt:
            raise _Retry
        inodes = {i: await load_inode(mctx, i, locks[i]) for i in inos}
        pdir, npdir, sinode = inodes[parent], inodes[new_parent], inodes[src.ino]
        tinode = inodes[tgt.ino] if tgt is not None else None
        if npdir.nlink == 0:
            raise FsError(errno.ENOENT, "directory was removed")
        if sinode.flags & fmt.INODE_FLAG_RETENTION or (
                tinode is not None and tinode.flags & fmt.INODE_FLAG_RETENTION):
            raise FsError(errno.EPERM, "file is under retention")
        src_dir = fsinode.is_dir(sinode)
        tgt_dir = tinode is not None and fsinode.is_dir(tinode)
        if tinode is not None and not exchange and tgt_dir and \
                not await fsdir.is_empty(mctx, tgt.ino, locks[tgt.ino]):
            raise FsError(errno.ENOTEMPTY)
        # ---- no awaits and no failures from here on: the writes
        now = mctx.now()
        cross = parent != new_parent
        fsdir.remove_entry(mctx, pdir, src, locks[parent], locks[src.ino], now)
        if tgt is not None:
            fsdir.remove_entry(mctx, npdir, tgt, locks[new_parent], locks[tgt.ino], now)
            tinode.ctime = now
        fsdir.add_entry(mctx, npdir, new_name, src.ino, src.dtype, locks[new_parent],
                        locks[src.ino], now)
        sinode.ctime = now
        if cross and src_dir:
            pdir.nlink -= 1
            npdir.nlink += 1
        if exchange:
            fsdir.add_entry(mctx, pdir, name, tgt.ino, tgt.dtype, locks[parent],
                            locks[tgt.ino], now)
            if cross and tgt_dir:
                npdir.nlink -= 1
                pdir.nlink += 1
        elif tinode is not None:
            if tgt_dir:
                tinode.nlink = 0
                npdir.nlink -= 1
            else:
                tinode.nlink -= 1
            if tinode.nlink == 0:
                self._write_orphan(tinode, olock, locks[tinode.ino])
        for i in inos:
            store_inode(mctx, inodes[i], locks[i], ilock)

    # ------------------------------------------------------------------ open and readdir

    async def open(self, ino: int, flags: int, ctx: Ctx | None = None) -> None:
        async with self.mctx.locks.inodes([ino], LOCK_READ) as locks:
            inode = await load_inode(self.mctx, ino, locks[ino])
        if fsinode.is_dir(inode) and flags & os.O_ACCMODE != os.O_RDONLY:
            raise FsError(errno.EISDIR)

    async def readdir(self, ino: int, start_pos: int, limit: int | None = READDIR_BATCH,
                      ) -> list[tuple[bytes, Attr | None, int]]:
        """Entries at positions >= start_pos as (name, attr, next_pos): next_pos is the
        position of the next live entry (the last entry's: its pos + 1).  "." is at 0 and
        ".." at 1.

        At most `limit` entries besides "." and ".." are returned (None: all of them); the
        caller continues from the last next_pos, and an empty list is the end.  The attrs
        (readdirplus) are read under READ locks of the entries' groups; an entry whose
        inode vanished meanwhile has attr None."""
        mctx = self.mctx
        parent = None
        async with mctx.locks.inodes([ino], LOCK_READ) as locks:
            dinode = await self._load_dir(ino, locks[ino])
            if dinode.nlink == 0:
                return []  # a removed directory lists nothing
            if start_pos <= 1:
                parent = await fsdir.parent_of(mctx, ino, locks[ino])
            ents = await fsdir.list_entries(mctx, ino, max(start_pos, 2), locks[ino],
                                            None if limit is None else limit + 1)
        more = None
        if limit is not None and len(ents) > limit:
            more = ents[limit].pos
            ents = ents[:limit]
        # readdirplus: the attributes of every entry, under READ locks of their groups
        want = {e.ino for e in ents} | ({parent} if parent is not None else set())
        attrs: dict[int, Attr] = {ino: inode_attr(dinode)}
        want.discard(ino)
        if want:
            async with mctx.locks.inodes(sorted(want), LOCK_READ) as locks:
                for i in sorted(want):
                    inode = await try_load_inode(mctx, i, locks[i])
                    if inode is not None:
                        attrs[i] = inode_attr(inode)
        out: list[tuple[bytes, Attr | None, int]] = []
        if start_pos <= 0:
            out.append((b".", attrs[ino], 1))
        if start_pos <= 1:
            first = ents[0].pos if ents else (more if more is not None else 2)
            out.append((b"..", attrs.get(parent), first))
        for n, e in enumerate(ents):
            if n + 1 < len(ents):
                nxt = ents[n + 1].pos
            elif more is not None:
                nxt = more
            else:
                nxt = e.pos + 1
            out.append((e.name, attrs.get(e.ino), nxt))
        return out

    async def get_referring_entries(self, ino: int, dir_ino: int = 0, dir_pos: int = 0,
                                    limit: int | None = None) -> list[tuple[int, fmt.Dirent]]:
        """Entries naming ino as (dir ino, dirent), ordered by (dir, pos), from the cursor
        (dir_ino, dir_pos) on (GET_REFERRING_ENTRIES); at most `limit` of them."""
        mctx = self.mctx
        async with mctx.locks.inodes([ino], LOCK_READ) as locks:
            if dir_ino == 0 and dir_pos == 0 and limit is None:
                return await fsdir.backrefs(mctx, ino, locks[ino])
            start = fmt.backref_key(ino, dir_ino, dir_pos)
            end = fmt.backref_key(ino, fmt.U64_MAX, fmt.U64_MAX)
            found = await mctx.items.next_batch(start, end, locks[ino],
                                                fmt.LOCK_GROUP_NR if limit is None else limit)
        return [(k[3], fmt.unpack_dirent(v)) for k, v in found]

    # ------------------------------------------------------------------ inode index commands

    async def ino_path(self, ino: int, dir_ino: int = 0,
                       dir_pos: int = 0) -> tuple[int, int, bytes]:
        """INO_PATH: the path from the root to the first entry naming ino at or after
        (dir_ino, dir_pos), as (entry's dir ino, entry's pos, path without a leading
        slash).  ENOENT when there is none (the root, an unlinked or unused inode);
        ENAMETOOLONG when the path and its NUL would not fit in PATH_MAX bytes.

        Each inode's backref is read under its own group's READ lock, one at a time (no
        lock is held while taking the next, so no lock order matters); a directory on the
        way removed meanwhile makes the walk start over, a few times at most."""
        mctx = self.mctx
        for _attempt in range(INO_PATH_RETRIES):
            async with mctx.locks.inodes([ino], LOCK_READ) as locks:
                found = await fsdir.next_backref(mctx, ino, dir_ino, dir_pos, locks[ino])
            if found is None:
                raise FsError(errno.ENOENT)
            ent_dir, ent = found
            parts = [ent.name]
            total = len(ent.name)
            cur = ent_dir
            while total + 1 <= PATH_MAX and cur != fmt.ROOT_INO:
                async with mctx.locks.inodes([cur], LOCK_READ) as locks:
                    up = await fsdir.next_backref(mctx, cur, 0, 0, locks[cur])
                if up is None:
                    break  # the directory went away meanwhile: start over
                cur, d = up
                parts.append(d.name)
                total += 1 + len(d.name)
            if total + 1 > PATH_MAX:
                raise FsError(errno.ENAMETOOLONG)
            if cur == fmt.ROOT_INO:
                return ent_dir, ent.pos, b"/".join(reversed(parts))
        raise FsError(errno.ENOENT)

    async def walk_inodes(self, index: int, first: tuple[int, int], last: tuple[int, int],
                          limit: int) -> list[tuple[int, int]]:
        """WALK_INODES (spec §5.6): up to `limit` (seq, ino) entries of the meta_seq
        (index 0) or data_seq (1) index from (major, ino) `first` to `last`, ascending.

        `last` is first clamped to the last stable seq (the server's GET_LAST_SEQ: below
        every mount's open transaction), so dirty and unsynced inodes never appear and a
        walker continuing from its last entry misses none.  The read holds a READ lock of
        the index zone: writers of the index on every mount (WRITE_ONLY holders) commit
        and drop it first, so every mount walks the same committed items."""
        mctx = self.mctx
        typ = fsinode.WALK_INDEX_TYPES.get(index)
        if typ is None:
            raise FsError(errno.EINVAL)
        if mctx.last_seq is not None:
            last_seq = await mctx.last_seq()
        else:
            last_seq = max(mctx.trans.seq - 1, 0)
        if last_seq < last[0]:
            last = (last_seq, fmt.U64_MAX)
        if limit <= 0 or first > last:
            return []
        async with mctx.locks.zone((fmt.ZONE_INODE_INDEX, 0, 0, 0, 0, 0), LOCK_READ) as lock:
            return await fsinode.walk_index(mctx, typ, first, last, limit, lock)

    async def get_allocated_inos(self, start_ino: int, limit: int) -> list[int]:
        """GET_ALLOCATED_INOS: inode numbers from start_ino to the end of its lock group that
        have items (deleted inodes have none; unlinked ones still open do), at most
        `limit`, under the group's READ lock."""
        mctx = self.mctx
        async with mctx.locks.inodes([start_ino], LOCK_READ) as locks:
            return await fsinode.allocated_inos(mctx, start_ino, limit, locks[start_ino])

    # ------------------------------------------------------------------ volume

    async def statfs(self) -> StatFs:
        s = await self.mctx.statfs()
        ffree = s.get("free_meta_blocks", 0) * INODES_PER_META_BLOCK
        return StatFs(
            f_bsize=fmt.DATA_BLOCK_SIZE,
            f_frsize=fmt.DATA_BLOCK_SIZE,
            f_blocks=s.get("total_data_blocks", 0),
            f_bfree=s.get("free_data_blocks", 0),
            f_bavail=s.get("free_data_blocks", 0),
            f_files=s.get("inode_count", 0) + ffree,
            f_ffree=ffree,
            f_favail=ffree,
            f_namemax=fmt.NAME_MAX,
        )

    async def sync(self) -> None:
        await self.mctx.trans.sync()

    # ------------------------------------------------------------------ delegation

    async def read(self, ino: int, offset: int, size: int, short: bool = False) -> bytes:
        """`short`: stop before offline blocks that follow online ones (see fs.data.read)."""
        if short:
            return await self._data().read(self.mctx, ino, offset, size, short=True)
        return await self._data().read(self.mctx, ino, offset, size)

    async def write(self, ino: int, offset: int, data, ctx: Ctx | None = None,
                    append: bool = False) -> int:
        return await self._data().write(self.mctx, ino, offset, data, ctx, append=append)

    async def fsync(self, ino: int, datasync: bool) -> None:
        await self._data().fsync(self.mctx, ino, datasync)

    async def fallocate(self, ino: int, mode: int, offset: int, length: int,
                        ctx: Ctx | None = None) -> None:
        """fallocate(2) with mode 0 or FALLOC_FL_KEEP_SIZE (see `fs.data.fallocate`)."""
        await self._data().fallocate(self.mctx, ino, mode, offset, length, ctx)

    # ------------------------------------------------------------------ archive (fs.archive)

    async def release_data(self, ino: int, offset: int, length: int, data_version: int, *,
                      writable: bool, readonly: bool = False) -> None:
        from fs import archive

        await archive.release(self.mctx, ino, offset, length, data_version,
                              writable=writable, readonly=readonly)

    async def stage(self, ino: int, offset: int, buf, data_version: int, *, writable: bool,
                    bad_flags: bool = False, readonly: bool = False) -> int:
        from fs import archive

        return await archive.stage(self.mctx, ino, offset, buf, data_version,
                                   writable=writable, bad_flags=bad_flags, readonly=readonly)

    async def punch_offline(self, ino: int, offset: int, length: int, data_version: int,
                            flags: int, *, writable: bool) -> None:
        from fs import archive

        await archive.punch_offline(self.mctx, ino, offset, length, data_version, flags,
                                    writable=writable)

    async def move_blocks(self, from_ino: int, from_off: int, length: int, to_ino: int,
                          to_off: int, data_version: int, flags: int, *, uid: int = 0,
                          gid: int = 0, readonly: bool = False) -> int:
        from fs import archive

        return await archive.move_blocks(self.mctx, from_ino, from_off, length, to_ino,
                                         to_off, data_version, flags, uid=uid, gid=gid,
                                         readonly=readonly)

    async def setattr_more(self, ino: int, **kw) -> None:
        from fs import archive

        await archive.setattr_more(self.mctx, ino, **kw)

    async def get_attr_x(self, ino: int, mask: int) -> dict:
        from fs import archive

        return await archive.get_attr_x(self.mctx, ino, mask)

    async def set_attr_x(self, ino: int, **kw) -> None:
        from fs import archive

        await archive.set_attr_x(self.mctx, ino, **kw)

    def data_waiting(self, after_ino: int, after_iblock: int,
                     limit: int) -> list[tuple[int, int, int]]:
        """This mount's data waiters after the cursor: (ino, iblock, ops)."""
        from fs import datawait

        return datawait.waiters(self.mctx).waiting(after_ino, after_iblock, limit)

    async def data_waiting_wait(self, after_ino: int, after_iblock: int, limit: int,
                                timeout: float) -> list[tuple[int, int, int]]:
        """`data_waiting`, but when there is none parks until a waiter registers (or
        timeout seconds pass) and asks again."""
        from fs import datawait

        w = datawait.waiters(self.mctx)
        ents = w.waiting(after_ino, after_iblock, limit)
        if not ents and timeout > 0:
            await w.wait_registered(timeout)
            ents = w.waiting(after_ino, after_iblock, limit)
        return ents

    def data_wait_err(self, ino: int, first: int, last: int, op: int, err: int) -> int:
        """Fail this mount's waiters of ino in iblocks [first, last] for op with err."""
        from fs import datawait

        return datawait.waiters(self.mctx).set_err(ino, first, last, op, err)

    def has_data_waiters(self, ino: int) -> bool:
        w = getattr(self.mctx, "waiters", None)
        return bool(w is not None and w.by_ino.get(ino))

    async def lseek(self, ino: int, offset: int, whence: int) -> int:
        """SEEK_DATA (3) and SEEK_HOLE (4) only (see `fs.data.lseek`)."""
        return await self._data().lseek(self.mctx, ino, offset, whence)

    async def fiemap(self, ino: int, start: int, length: int, limit: int | None = None,
                     ) -> list[tuple[int, int, int, int]]:
        """(logical byte, physical byte, length, FIEMAP_EXTENT_* flags) of the extents
        overlapping [start, start+length), at most `limit` (see `fs.data.fiemap`)."""
        if limit is None:
            return await self._data().fiemap(self.mctx, ino, start, length)
        return await self._data().fiemap(self.mctx, ino, start, length, limit)

    async def copy_file_range(self, ino_in: int, off_in: int, ino_out: int, off_out: int,
                              length: int, flags: int, ctx: Ctx | None = None) -> int:
        """Copy up to length bytes through read and write, `COPY_CHUNK` bytes at a time;
        returns the bytes copied (short at the source's EOF, or when a later chunk fails
        after some were copied: the error is raised only when nothing was).

        Checks as Linux's generic_copy_file_checks: flags must be 0, both files regular
        (a directory: EISDIR, else EINVAL), the count is cut at the source's size and at
        the maximum file size (an offset at or past it: EFBIG), and ranges of one inode
        must not overlap (EINVAL).  The copy is not atomic against other writers."""
        if flags != 0:
            raise FsError(errno.EINVAL, f"copy_file_range flags {flags:#x}")
        if off_in < 0 or off_out < 0 or length < 0:
            raise FsError(errno.EINVAL)
        mctx = self.mctx
        inos = list(dict.fromkeys([ino_in, ino_out]))
        async with mctx.locks.inodes(inos, LOCK_READ) as locks:
            src = await load_inode(mctx, ino_in, locks[ino_in])
            dst = await load_inode(mctx, ino_out, locks[ino_out])
        if fsinode.is_dir(src) or fsinode.is_dir(dst):
            raise FsError(errno.EISDIR)
        if not fsinode.is_reg(src) or not fsinode.is_reg(dst):
            raise FsError(errno.EINVAL, "copy_file_range of a file that is not regular")
        count = 0 if off_in >= src.size else min(length, src.size - off_in)
        if off_out >= fmt.MAX_FILE_SIZE:
            raise FsError(errno.EFBIG)
        count = min(count, fmt.MAX_FILE_SIZE - off_out)
        if ino_in == ino_out and off_out + count > off_in and off_out < off_in + count:
            raise FsError(errno.EINVAL, "overlapping ranges of one file")
        done = 0
        while done < count:
            n = min(COPY_CHUNK, count - done)
            try:
                buf = await self.read(ino_in, off_in + done, n)
                if buf:
                    await self.write(ino_out, off_out + done, buf, ctx)
            except FsError:
                if done:
                    return done
                raise
            done += len(buf)
            if len(buf) < n:
                break  # the source shrank meanwhile
        return done

    async def getxattr(self, ino: int, name: bytes, ctx: Ctx | None = None) -> bytes:
        return await self._xattr().getxattr(self.mctx, ino, name, ctx)

    async def setxattr(self, ino: int, name: bytes, value: bytes, flags: int,
                       ctx: Ctx | None = None) -> None:
        await self._xattr().setxattr(self.mctx, ino, name, value, flags, ctx)

    async def listxattr(self, ino: int, ctx: Ctx | None = None) -> list[bytes]:
        return await self._xattr().listxattr(self.mctx, ino, ctx)

    async def removexattr(self, ino: int, name: bytes, ctx: Ctx | None = None) -> None:
        await self._xattr().removexattr(self.mctx, ino, name, ctx)

    async def list_hidden_xattrs(self, ino: int, after: tuple[int, int] = (0, 0)
                                 ) -> list[tuple[int, int, bytes]]:
        """LISTXATTR_HIDDEN: (name hash, id, name) of the ``scoutfs.hide.`` xattrs of ino
        from key (hash, id) `after` on."""
        return await self._xattr().list_hidden(self.mctx, ino, after)

    async def read_xattr_index(self, first: tuple[int, int, int], last: tuple[int, int, int],
                               limit: int) -> list[tuple[int, int, int]]:
        """READ_XATTR_INDEX (spec §5.10): up to `limit` de-duplicated (major, minor, ino)
        entries of the ``.indx.`` index from `first` to `last`, ascending.  Read under a
        READ lock of the zone: writers on every mount (WRITE_ONLY holders) commit and drop
        it first, so every mount reads the same committed items."""
        xattr = self._xattr()
        if limit <= 0 or first > last:
            return []
        async with self.mctx.locks.zone(xattr.INDX_ZONE_KEY, LOCK_READ) as lock:
            return await xattr.read_index(self.mctx, first, last, limit, lock)

    async def read_xattr_totals(self, start: tuple[int, int, int], limit: int
                                ) -> list[tuple[tuple[int, int, int], tuple[int, int]]]:
        """READ_XATTR_TOTALS: up to `limit` committed non-zero ((a, b, c), (total, count))
        from name `start` on, ascending, through the 5 s weak cache (fs/totl.py)."""
        import bisect

        totals = await totl.read_totals(self.mctx)
        names = sorted(totals)
        i = bisect.bisect_left(names, start)
        return [(n, totals[n]) for n in names[i:i + max(0, limit)]]

    # ------------------------------------------------------------------ deletion

    async def forget(self, ino: int) -> None:
        """The kernel dropped its last reference (scoutfs's evict): queue a deletion
        attempt for the worker.  Never deletes here: the caller is the FUSE forget path."""
        if ino not in self._delete_queue:
            self._delete_queue[ino] = None
            if self._wake is not None:
                self._wake.set()

    async def run(self) -> None:
        """The deletion worker; the mount runs it in its nursery for its whole life."""
        while True:
            if not self._delete_queue:
                self._wake = trio.Event()
                await self._wake.wait()
                continue
            ino = next(iter(self._delete_queue))
            del self._delete_queue[ino]
            self._worker_done = trio.Event()
            try:
                await self.evict(ino)
            except FsError as e:
                log.warning("deleting inode %d failed: %s (left to the orphan scanner)",
                            ino, e)
            finally:
                self._worker_done.set()

    async def drain_deletions(self) -> None:
        """Run every queued deletion now and wait for the worker's (tests; unmount)."""
        while self._delete_queue or not self._worker_done.is_set():
            if not self._delete_queue:
                await self._worker_done.wait()
                continue
            ino = next(iter(self._delete_queue))
            del self._delete_queue[ino]
            await self.evict(ino)

    async def evict(self, ino: int) -> bool:
        """The last release of an inode on this mount: try to delete it if it has no links.

        An inode this mount unlinked goes straight to `try_delete`; any other is first
        checked under a READ lock (cached on this mount for inodes it uses), so the
        forgets of linked inodes never take WRITE locks from other mounts."""
        if ino not in self._unlinked:
            async with self.mctx.locks.inodes([ino], LOCK_READ) as locks:
                inode = await try_load_inode(self.mctx, ino, locks[ino])
            if inode is None or inode.nlink > 0:
                return False
        return await self.try_delete(ino)

    def _open_here(self, ino: int) -> bool:
        omap = self.mctx.omap
        return omap is not None and omap.test(ino)

    async def remote_omap(self, ino: int, lock) -> int:
        """The other mounts' open map of ino's group (OPEN_INO_MAP), cached per write_seq
        of the group's WRITE lock `lock`: while we hold that grant no other mount can look
        an inode of the group up (that needs a READ lock, which would invalidate ours), so
        one request serves every deletion of the group, an `rm -rf` of all of it."""
        fetch = self.mctx.open_ino_map
        if fetch is None:
            return 0  # a lone mount (unit tests)
        group = omap_mod.group_of(ino)
        while True:
            cached = self._omap_cache.get(group)
            if cached is not None and cached[0] == lock.write_seq and lock.write_seq:
                return cached[1]
            fetching = self._omap_fetching.get(group)
            if fetching is None:
                break
            await fetching.wait()  # another deletion of the group is asking: share it
        done = self._omap_fetching[group] = trio.Event()
        try:
            bits = await fetch(group)
        finally:
            del self._omap_fetching[group]
            done.set()
        if len(self._omap_cache) >= OMAP_CACHE_GROUPS:
            self._omap_cache.clear()
        self._omap_cache[group] = (lock.write_seq, bits)
        return bits

    async def try_delete(self, ino: int) -> bool:
        """try_delete (spec §4.4): delete an inode with no links that no mount has open.

        Under the inode group's WRITE lock: the "trying" bit keeps a second attempt (the
        worker and the scanner) out; the other mounts' open map (`remote_omap`) and our
        own decide; then the items go in several transactions: extents (freeing their
        blocks), xattrs (`fs.xattr.delete_all`, where tag effects hook), symlink items,
        and last the inode with its index items and its orphan item together.  A crash
        between them leaves the orphan item, so a scanner finishes the job.  Returns
        whether it deleted the inode (False: open somewhere, linked, already gone, or
        another attempt is running)."""
        if ino in self._trying:
            return False
        self._trying.add(ino)
        try:
            async with self.mctx.locks.inodes([ino], LOCK_WRITE) as locks:
                lock = locks[ino]
                remote = await self.remote_omap(ino, lock)
                if self._open_here(ino):
                    return False  # open here again: its last release tries again
                if remote >> omap_mod.bit_of(ino) & 1:
                    # another mount holds it: its last release deletes it (or a scan)
                    self._unlinked.discard(ino)
                    return False
                inode = await try_load_inode(self.mctx, ino, lock)
                if inode is None or inode.nlink > 0:
                    self._unlinked.discard(ino)
                    return False
                await self._delete_items(inode, lock)
        finally:
            self._trying.discard(ino)
        self._unlinked.discard(ino)
        if len(self.deleted_recently) >= DELETED_RECENTLY_MAX:
            self.deleted_recently.clear()
        self.deleted_recently.add(ino)
        self.mctx.counters.inc("inode_deleted")
        return True

    async def _delete_items(self, inode: fmt.Inode, lock) -> None:
        """The transactions of a deletion, under the group WRITE lock `lock` (taken by
        try_delete, which checked that nothing holds the inode)."""
        mctx = self.mctx
        data, xattr = self._data(), self._xattr()
        ino = inode.ino
        if fsinode.is_reg(inode):
            async with index_lock(mctx) as ilock, mctx.trans.hold():
                inode = await load_inode(mctx, ino, lock)
                counted = inode.online_blocks or inode.offline_blocks
                await data.free_extents(mctx, inode, lock)
                if counted:  # its block counts went to 0 with its extents
                    store_inode(mctx, inode, lock, ilock)
        async with totl.totl_lock(mctx) as tlock, xattr.indx_lock(mctx) as xlock, \
                mctx.trans.hold():
            await xattr.delete_all(mctx, ino, lock, xlock, tlock)
        if fsinode.is_lnk(inode):
            async with mctx.trans.hold():
                fsdir.delete_symlink(mctx, ino, inode.size, lock)
        async with index_lock(mctx) as ilock, orphan_lock(mctx) as olock, \
                mctx.trans.hold():
            inode = await load_inode(mctx, ino, lock)
            # ---- synchronous from here: the inode and its orphan item go together
            fsinode.delete_inode_items(mctx, inode, lock, ilock)
            mctx.items.delete(fmt.orphan_key(ino), olock, primary=lock)
