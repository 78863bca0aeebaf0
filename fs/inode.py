"""Inodes: loading and storing inode items, the seq index, attributes and deletion.

The inode item is ``(FS, ino, INODE, 0, 0, 0)`` (layout in `fs.format`).  Every store of an
inode happens inside a transaction hold and sets ``meta_seq`` to the open transaction's seq
(spec §5.1), moving the inode's ``META_SEQ`` index item (and for regular files its
``DATA_SEQ`` item when ``data_seq`` changed) in the same transaction.

Index locking simplification: scoutfs locks the inode index by ranges of seqs.  We take one
WRITE_ONLY lock over the whole ``ZONE_INODE_INDEX`` zone (`index_lock`); WRITE_ONLY locks of
several mounts are compatible, so this costs no concurrency, it only makes readers of the
index (``walk-inodes``) invalidate all of it at once.

`store_inode` is synchronous, so it cannot read the stored item to find the index items to
move.  It takes the old META_SEQ from the in-memory inode (only `store_inode` changes
``meta_seq``) and the old DATA_SEQ from a small per-mount table that `set_data_seq` and
`bump_data` fill when they change ``data_seq``.  Rules for callers: store only inodes read
by `load_inode` under the same lock (or made by `new_inode`), and change ``data_seq`` only
through `set_data_seq`/`bump_data`.

Deletion: an inode whose link count reached zero has an orphan item
``(ORPHAN, 0, ORPHAN_TYPE, ino)`` written in the same transaction; the filesystem deletes
its items (`delete_inode_items` and the data/xattr/symlink items) once the kernel forgets
it (see `fs.filesystem.Filesystem.delete_inode`).
"""

from __future__ import annotations

import errno
import stat
from dataclasses import dataclass

from fs import format as fmt
from fs.errors import FsError

LOCK_NULL, LOCK_READ, LOCK_WRITE, LOCK_WRITE_ONLY = 0, 1, 2, 3

Ts = tuple[int, int]


@dataclass
class Ctx:
    """The caller of an operation (from the FUSE request or SO_PEERCRED)."""

    uid: int
    gid: int
    pid: int
    umask: int = 0o022  # applied to new inodes unless the parent has a default ACL


@dataclass
class Attr:
    """What stat shows."""

    ino: int
    mode: int
    nlink: int
    uid: int
    gid: int
    rdev: int
    size: int
    blocks: int  # 512-byte units
    atime: Ts
    mtime: Ts
    ctime: Ts
    crtime: Ts
    generation: int = 0


def inode_attr(inode: fmt.Inode) -> Attr:
    return Attr(
        ino=inode.ino,
        mode=inode.mode,
        nlink=inode.nlink,
        uid=inode.uid,
        gid=inode.gid,
        rdev=inode.rdev,
        size=inode.size,
        blocks=(inode.online_blocks + inode.offline_blocks) * (fmt.DATA_BLOCK_SIZE // 512),
        atime=inode.atime,
        mtime=inode.mtime,
        ctime=inode.ctime,
        crtime=inode.crtime,
    )


def is_dir(inode: fmt.Inode) -> bool:
    return stat.S_ISDIR(inode.mode)


def is_reg(inode: fmt.Inode) -> bool:
    return stat.S_ISREG(inode.mode)


def is_lnk(inode: fmt.Inode) -> bool:
    return stat.S_ISLNK(inode.mode)


def index_lock(mctx):
    """The WRITE_ONLY lock covering every seq index item (see the module docstring)."""
    return mctx.locks.zone((fmt.ZONE_INODE_INDEX, 0, 0, 0, 0, 0), LOCK_WRITE_ONLY)


def orphan_lock(mctx):
    """The WRITE_ONLY lock covering the orphan zone."""
    return mctx.locks.zone(fmt.orphan_key(0), LOCK_WRITE_ONLY)


async def load_inode(mctx, ino: int, lock) -> fmt.Inode:
    """Read an inode item; FsError(ENOENT) if there is none."""
    val = await mctx.items.lookup(fmt.inode_key(ino), lock)
    if val is None:
        raise FsError(errno.ENOENT, f"no inode {ino}")
    return fmt.unpack_inode(ino, val)


async def try_load_inode(mctx, ino: int, lock) -> fmt.Inode | None:
    val = await mctx.items.lookup(fmt.inode_key(ino), lock)
    return None if val is None else fmt.unpack_inode(ino, val)


def _pending_data_seqs(mctx) -> dict[int, int]:
    """ino -> the data_seq its DATA_SEQ index item still carries, for inodes whose in-memory
    copy had data_seq changed (by `set_data_seq`/`bump_data`) but not yet stored."""
    tab = getattr(mctx, "_inode_old_data_seq", None)
    if tab is None:
        tab = {}
        mctx._inode_old_data_seq = tab
    return tab


def set_data_seq(inode: fmt.Inode, mctx, seq: int) -> None:
    """Change data_seq in memory, remembering the indexed value for `store_inode`.

    Always change data_seq through this (or `bump_data`): `store_inode` is synchronous and
    cannot read the stored item, so this is how it learns which DATA_SEQ item to move.
    """
    if inode.meta_seq != 0:  # not a new inode: its stored DATA_SEQ item is at the old seq
        _pending_data_seqs(mctx).setdefault(inode.ino, inode.data_seq)
    inode.data_seq = seq


def store_inode(mctx, inode: fmt.Inode, lock, index_lock) -> None:
    """Write an inode item inside a transaction hold, maintaining its seq index items.

    ``inode.meta_seq`` becomes the open transaction's seq.  ``lock`` is the inode's group
    WRITE lock, ``index_lock`` the index zone WRITE_ONLY lock (`index_lock(mctx)`).

    The old index items are found from the in-memory inode as it was loaded: ``meta_seq`` is
    only ever changed here, and ``data_seq`` only through `set_data_seq`/`bump_data`, which
    remember the indexed value.  A new inode (``meta_seq == 0``, see `new_inode`) has none.
    Callers must therefore store an inode they loaded with `load_inode` under the same lock.
    """
    items = mctx.items
    seq = mctx.trans.seq
    ino = inode.ino
    new = inode.meta_seq == 0
    old_data = _pending_data_seqs(mctx).pop(ino, inode.data_seq)
    # index items take the inode lock's write_seq too (see ItemCache._write)
    if new or inode.meta_seq != seq:
        if not new:
            items.delete(fmt.seq_index_key(fmt.INODE_INDEX_META_SEQ, inode.meta_seq, ino),
                         index_lock, primary=lock)
        items.update(fmt.seq_index_key(fmt.INODE_INDEX_META_SEQ, seq, ino), b"",
                     index_lock, primary=lock)
    if is_reg(inode) and (new or old_data != inode.data_seq):
        if not new:
            items.delete(fmt.seq_index_key(fmt.INODE_INDEX_DATA_SEQ, old_data, ino),
                         index_lock, primary=lock)
        items.update(fmt.seq_index_key(fmt.INODE_INDEX_DATA_SEQ, inode.data_seq, ino), b"",
                     index_lock, primary=lock)
    inode.meta_seq = seq
    items.update(fmt.inode_key(ino), fmt.pack_inode(inode), lock)


def delete_inode_items(mctx, inode: fmt.Inode, lock, index_lock) -> None:
    """Delete the inode item and its seq index items (the caller frees everything else)."""
    ino = inode.ino
    _pending_data_seqs(mctx).pop(ino, None)
    if inode.meta_seq:
        mctx.items.delete(fmt.seq_index_key(fmt.INODE_INDEX_META_SEQ, inode.meta_seq, ino),
                          index_lock, primary=lock)
    if is_reg(inode):
        mctx.items.delete(fmt.seq_index_key(fmt.INODE_INDEX_DATA_SEQ, inode.data_seq, ino),
                          index_lock, primary=lock)
    mctx.items.delete(fmt.inode_key(ino), lock)


def new_inode(mctx, ino: int, mode: int, uid: int, gid: int, now: Ts, *, rdev: int = 0,
              proj: int = 0) -> fmt.Inode:
    """A fresh in-memory inode; `store_inode` gives it its meta_seq and index items."""
    inode = fmt.Inode(ino=ino, mode=mode, uid=uid, gid=gid, rdev=rdev, proj=proj,
                      nlink=2 if stat.S_ISDIR(mode) else 1,
                      atime=now, mtime=now, ctime=now, crtime=now)
    inode.meta_seq = 0  # marks it new for store_inode
    inode.data_seq = mctx.trans.seq if stat.S_ISREG(mode) else 0
    return inode


def touch(inode: fmt.Inode, mtime: bool, ctime: bool, now: Ts) -> None:
    if mtime:
        inode.mtime = now
    if ctime:
        inode.ctime = now


def bump_data(inode: fmt.Inode, mctx) -> None:
    """A content change: new data_version, data_seq = the open transaction's seq."""
    inode.data_version += 1
    set_data_seq(inode, mctx, mctx.trans.seq)


# --------------------------------------------------------------------------- index reads

WALK_META_SEQ, WALK_DATA_SEQ = 0, 1  # WALK_INODES's `index` argument
WALK_INDEX_TYPES = {WALK_META_SEQ: fmt.INODE_INDEX_META_SEQ,
                    WALK_DATA_SEQ: fmt.INODE_INDEX_DATA_SEQ}


async def walk_index(mctx, index_type: int, first: tuple[int, int], last: tuple[int, int],
                     limit: int, lock) -> list[tuple[int, int]]:
    """Up to `limit` (seq, ino) entries of a seq index from (major, ino) `first` to `last`
    inclusive, ascending; `lock` is a READ lock over the index zone.  One batched range
    read (whole leaves at a time) that leaves the item cache as it was."""
    if limit <= 0 or first > last:
        return []
    start = fmt.seq_index_key(index_type, first[0], first[1])
    end = fmt.seq_index_key(index_type, last[0], last[1])
    # not cached: a walk reads each item once, and 100,000 of them would evict the cache
    found = await mctx.items.next_batch(start, end, lock, limit, fill=False)
    return [(k[3], k[4]) for k, _v in found]


async def allocated_inos(mctx, start_ino: int, limit: int, lock) -> list[int]:
    """Inode numbers from `start_ino` to the end of its lock group that have items (every FS
    item belongs to an allocated inode, and the key's first field is its number), at most
    `limit` of them; `lock` is a READ lock of the group."""
    out: list[int] = []
    last = fmt.inode_group_range(start_ino)[1]
    ino = start_ino
    while len(out) < limit and ino <= last[1]:
        found = await mctx.items.next((fmt.ZONE_FS, ino, 0, 0, 0, 0), last, lock)
        if found is None:
            break
        ino = found[0][1]
        out.append(ino)
        ino += 1
    return out
