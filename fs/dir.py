"""Directory entries and symlink targets (scoutfs's dir.c).

Each entry is three items carrying the same packed `fmt.Dirent` value:

* ``DIRENT (dir, hash64(name), pos)`` — lookup by name: iterate the keys with the name's
  hash (collisions are possible) and compare names;
* ``READDIR (dir, pos)`` — readdir in position order;
* ``LINK_BACKREF (target, dir, pos)`` — every link to an inode (``ino-path``,
  ``get-referring-entries``) and the parent of a directory (it has exactly one).

Positions: ``.`` is 0, ``..`` is 1, entries are numbered from 2 in creation order by the
directory inode's ``next_readdir_pos`` and never reused.  A directory's ``size`` is the sum
of its entries' name lengths.  DIRENT and READDIR items are covered by the directory's
inode-group lock, LINK_BACKREF items by the target's.

Symlink targets are stored in ``SYMLINK (ino, nr)`` items of at most `SYMLINK_PART` bytes.

The synchronous functions here write items: call them inside a transaction hold with the
right WRITE locks; they change the given in-memory inodes, which the caller stores.
"""

from __future__ import annotations

import errno
import logging

from fs import format as fmt
from fs.errors import FsError
from fs.inode import Ts, touch
from fs.kmsg import KMSG

log = logging.getLogger(__name__)

SYMLINK_PART = fmt.XATTR_PART_SIZE  # bytes per SYMLINK item (values are at most 896 B)


def check_name(name: bytes) -> None:
    """A name for a new entry: 1..255 bytes, no '/' or NUL, not '.' or '..'."""
    if not name:
        raise FsError(errno.ENOENT, "empty name")
    if len(name) > fmt.NAME_MAX:
        raise FsError(errno.ENAMETOOLONG)
    if b"/" in name or b"\0" in name or name in (b".", b".."):
        raise FsError(errno.EINVAL, f"bad name {name!r}")


async def lookup_dirent(mctx, dir_ino: int, name: bytes, lock) -> fmt.Dirent | None:
    """The entry called name in dir_ino, or None."""
    if not name or len(name) > fmt.NAME_MAX:
        return None
    h = fmt.hash64(name)
    start = fmt.dirent_key(dir_ino, h, 0)
    end = fmt.dirent_key(dir_ino, h, fmt.U64_MAX)
    # a loop of next() rather than an async generator: this is the hottest lookup, and
    # abandoned async generators cost a finalizer round trip each
    key = start
    while True:
        found = await mctx.items.next(key, end, lock)
        if found is None:
            return None
        key, val = found
        d = fmt.unpack_dirent(val)
        if d.name == name:
            return d
        key = fmt.dirent_key(dir_ino, h, key[4] + 1)


def add_entry(mctx, dir_inode: fmt.Inode, name: bytes, ino: int, dtype: int, dir_lock,
              target_lock, now: Ts) -> fmt.Dirent:
    """Create the three items of a new entry at the directory's next position.

    Updates the directory's next_readdir_pos, size, mtime and ctime (not link counts).
    """
    pos = dir_inode.next_readdir_pos
    dir_inode.next_readdir_pos = pos + 1
    d = fmt.Dirent(ino, fmt.hash64(name), pos, dtype, name)
    val = fmt.pack_dirent(d)
    dino = dir_inode.ino
    mctx.items.update(fmt.dirent_key(dino, d.hash, pos), val, dir_lock)
    mctx.items.update(fmt.readdir_key(dino, pos), val, dir_lock)
    mctx.items.update(fmt.backref_key(ino, dino, pos), val, target_lock)
    dir_inode.size += len(name)
    touch(dir_inode, True, True, now)
    return d


def remove_entry(mctx, dir_inode: fmt.Inode, d: fmt.Dirent, dir_lock, target_lock,
                 now: Ts) -> None:
    """Delete the three items of an entry; updates the directory's size, mtime and ctime."""
    dino = dir_inode.ino
    mctx.items.delete(fmt.dirent_key(dino, d.hash, d.pos), dir_lock)
    mctx.items.delete(fmt.readdir_key(dino, d.pos), dir_lock)
    mctx.items.delete(fmt.backref_key(d.ino, dino, d.pos), target_lock)
    dir_inode.size -= len(d.name)
    touch(dir_inode, True, True, now)


async def is_empty(mctx, dir_ino: int, lock) -> bool:
    first = await mctx.items.next(fmt.readdir_key(dir_ino, 0),
                                  fmt.readdir_key(dir_ino, fmt.U64_MAX), lock)
    return first is None


async def list_entries(mctx, dir_ino: int, start_pos: int, lock,
                       limit: int | None = None) -> list[fmt.Dirent]:
    """Entries with position >= start_pos in position order (at most limit of them)."""
    out: list[fmt.Dirent] = []
    if limit is not None and limit <= 0:
        return out
    start = fmt.readdir_key(dir_ino, max(start_pos, 0))
    end = fmt.readdir_key(dir_ino, fmt.U64_MAX)
    async for key, val in mctx.items.items(start, end, lock):
        d = fmt.unpack_dirent(val)
        if d.pos != key[3]:
            # readdir offsets are the values' positions: one that is not the key's could
            # send a reader back to an earlier offset forever
            log.error("directory %d: the readdir item at position %d holds position %d "
                      "(metadata corruption)", dir_ino, key[3], d.pos, extra=KMSG)
            raise FsError(errno.EIO, f"directory {dir_ino}: readdir item {key[3]} "
                          f"holds position {d.pos}")
        out.append(d)
        if limit is not None and len(out) >= limit:
            break
    return out


async def backrefs(mctx, ino: int, lock) -> list[tuple[int, fmt.Dirent]]:
    """Every entry naming ino as (dir ino, dirent), ordered by (dir, pos)."""
    start = fmt.backref_key(ino, 0, 0)
    end = fmt.backref_key(ino, fmt.U64_MAX, fmt.U64_MAX)
    return [(key[3], fmt.unpack_dirent(val))
            async for key, val in mctx.items.items(start, end, lock)]


async def next_backref(mctx, ino: int, dir_ino: int, dir_pos: int,
                       lock) -> tuple[int, fmt.Dirent] | None:
    """The first entry naming ino at or after (dir_ino, dir_pos) as (dir ino, dirent)."""
    found = await mctx.items.next(fmt.backref_key(ino, dir_ino, dir_pos),
                                  fmt.backref_key(ino, fmt.U64_MAX, fmt.U64_MAX), lock)
    if found is None:
        return None
    return found[0][3], fmt.unpack_dirent(found[1])


async def parent_of(mctx, dir_ino: int, lock) -> int:
    """The parent of a directory: the dir of its one backref (the root is its own parent)."""
    if dir_ino == fmt.ROOT_INO:
        return fmt.ROOT_INO
    start = fmt.backref_key(dir_ino, 0, 0)
    end = fmt.backref_key(dir_ino, fmt.U64_MAX, fmt.U64_MAX)
    found = await mctx.items.next(start, end, lock)
    if found is None:
        raise FsError(errno.ENOENT, f"directory {dir_ino} has no parent entry")
    return found[0][3]


# --------------------------------------------------------------------------- symlinks


def check_symlink_target(target: bytes) -> None:
    if not target:
        raise FsError(errno.ENOENT, "empty symlink target")
    if len(target) + 1 > fmt.SYMLINK_MAX:  # with its NUL, as scoutfs and PATH_MAX count
        raise FsError(errno.ENAMETOOLONG)


def symlink_nr_parts(size: int) -> int:
    return (size + SYMLINK_PART - 1) // SYMLINK_PART


def write_symlink(mctx, ino: int, target: bytes, lock) -> None:
    for nr in range(symlink_nr_parts(len(target))):
        part = target[nr * SYMLINK_PART : (nr + 1) * SYMLINK_PART]
        mctx.items.update(fmt.symlink_key(ino, nr), part, lock)


async def read_symlink(mctx, ino: int, size: int, lock) -> bytes:
    parts = []
    for nr in range(symlink_nr_parts(size)):
        val = await mctx.items.lookup(fmt.symlink_key(ino, nr), lock)
        if val is None:
            raise FsError(errno.EIO, f"symlink {ino} is missing part {nr}")
        parts.append(val)
    target = b"".join(parts)
    if len(target) != size:
        raise FsError(errno.EIO, f"symlink {ino} has {len(target)} bytes, size {size}")
    return target


def delete_symlink(mctx, ino: int, size: int, lock) -> None:
    for nr in range(symlink_nr_parts(size)):
        mctx.items.delete(fmt.symlink_key(ino, nr), lock)
