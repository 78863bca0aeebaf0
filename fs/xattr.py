"""Extended attributes: names, scoutfs tags, and their items.

An xattr is stored as parts ``(FS, ino, XATTR, hash64(name), id, part)``: part 0 starts with
the header ``{name_len u8, val_len u16}`` (`fmt.XATTR_HDR`), then the name, then the value,
continued in parts of `fmt.XATTR_PART_SIZE` bytes.  The id comes from the inode's
``next_xattr_id``, so names whose hashes collide get different keys; lookups compare names
among the ids of one hash.  Replacing a value keeps the id and rewrites the parts (deleting
the parts no longer needed).

Names (spec §5.10, cli-and-harness §3.5): ``user.``, ``trusted.``, ``security.``,
``system.posix_acl_access``/``system.posix_acl_default`` and ``scoutfs.`` names; anything
else (and the empty name) is EOPNOTSUPP.  ``scoutfs.`` names continue with one or more tags
``hide.``, ``srch.``, ``totl.``, ``indx.`` and need CAP_SYS_ADMIN (uid 0 here).

``.indx.`` xattrs (``...indx.NAME.MAJOR.MINOR``, no value) each have an item
``fmt.xattr_indx_key(major, minor, ino, id)`` in the XATTR_INDX zone, written and deleted in
the transaction that sets or removes the xattr, and deleted with the inode's xattrs
(`delete_all`).  Writers hold a WRITE_ONLY lock over the whole zone (`indx_lock`, taken
after the seq index lock, before the hold; the inode's WRITE lock is the items' primary
lock); `read_index` reads under a READ lock of the zone, so every mount's writers commit
first and all mounts read the same committed items.  `.hide.` names are left out of
listxattr and listed by `list_hidden` (LISTXATTR_HIDDEN).  The create and the delete of a
``.srch.`` xattr (set of a new one, remove, and deletion with its inode; a replace keeps its
id and logs nothing) log its entry in the transaction's srch log (`fs.srch.log_entry`).
``.totl.`` xattrs write their deltas through `fs.totl` in the same transaction (its zone
lock is taken after the seq index lock, before the indx lock).

Every set and remove changes ctime and, through `store_inode`, meta_seq.  Changes run under
the inode's exclusive `fs.data.inode_rwsem` (the VFS takes i_rwsem for setxattr).

POSIX ACLs (``system.posix_acl_*``, see `fs.acl`) are parsed and validated (EINVAL), and
only the owner or root may change them (EPERM).  Setting the access ACL sets the mode's
permission bits from it (and clears S_ISGID when the caller is neither in the owning group
nor root) and stores no xattr when the ACL is equivalent to the mode; removing it leaves the
mode alone.  A default ACL exists only on directories (EACCES elsewhere).  An empty ACL
value removes the ACL, and removing an ACL that is not there succeeds, as with the kernel's
own ACL code.
"""

from __future__ import annotations

import errno
from contextlib import asynccontextmanager

from fs import acl, srch, totl
from fs import format as fmt
from fs import inode as inode_mod
from fs.data import inode_rwsem
from fs.errors import FsError
from fs.xattr_names import (  # noqa: F401 - re-exported
    SCOUTFS_PREFIX,
    TAG_NAMES,
    TOTL_U64_MAX_LEN,
    Tags,
    indx_pos,
    parse_indx_name,
    parse_tags,
    parse_totl_name,
    parse_u64,
)

LOCK_READ, LOCK_WRITE, LOCK_WRITE_ONLY = 1, 2, 3  # fs.lock modes

XATTR_CREATE = 1
XATTR_REPLACE = 2

NAMESPACES = (b"user.", b"trusted.", b"security.", b"scoutfs.")
SYSTEM_NAMES = (b"system.posix_acl_access", b"system.posix_acl_default")

HDR = fmt.XATTR_HDR
PART = fmt.XATTR_PART_SIZE


# --------------------------------------------------------------------------- names


def check_name(name: bytes) -> Tags:
    """Validate an xattr name: ERANGE if too long, EOPNOTSUPP for an unknown namespace,
    EINVAL for bad scoutfs tags.  Returns the tags (all false outside ``scoutfs.``)."""
    if len(name) > fmt.XATTR_NAME_MAX:
        raise FsError(errno.ERANGE, "xattr name too long")
    if name.startswith(SCOUTFS_PREFIX):
        if len(name) == len(SCOUTFS_PREFIX):
            raise FsError(errno.EINVAL, "xattr name is only a namespace")
        return parse_tags(name)
    if name in SYSTEM_NAMES:
        return Tags()
    for ns in NAMESPACES:
        if name.startswith(ns):
            if len(name) == len(ns):
                raise FsError(errno.EINVAL, "xattr name is only a namespace")
            return Tags()
    raise FsError(errno.EOPNOTSUPP, "unsupported xattr namespace")


def is_admin(ctx) -> bool:
    """CAP_SYS_ADMIN: uid 0, or no caller at all (an internal request)."""
    return ctx is None or ctx.uid == 0


def _check_tagged(mctx, name: bytes, tags: Tags, value: bytes | None, ctx) -> None:
    """Permission and tag syntax of a set (value) or remove (None) of a scoutfs. name."""
    if not tags.any:
        return
    if not is_admin(ctx):
        raise FsError(errno.EPERM, "scoutfs xattrs need CAP_SYS_ADMIN")
    if tags.totl:
        parse_totl_name(name)
        if value is not None:
            parse_u64(bytes(value))
    if tags.indx:
        if mctx.fmt_vers < 2:
            raise FsError(errno.EINVAL, ".indx. xattrs need format version 2")
        parse_indx_name(name)
        if value is not None and len(value):
            raise FsError(errno.EINVAL, ".indx. xattrs take no value")


# --------------------------------------------------------------------------- the indx index

INDX_ZONE_KEY = (fmt.ZONE_XATTR_INDX, 0, 0, 0, 0, 0)


@asynccontextmanager
async def indx_lock(mctx, needed: bool = True):
    """The WRITE_ONLY lock over the XATTR_INDX zone (None when not `needed`)."""
    if not needed:
        yield None
        return
    async with mctx.locks.zone(INDX_ZONE_KEY, LOCK_WRITE_ONLY) as lock:
        yield lock


def indx_name_key(name: bytes, ino: int, xid: int) -> fmt.Key | None:
    """The index item key of xattr `name` (id xid) of ino, None if it has no indx tag or a
    malformed one (names are checked before they are stored)."""
    pos = indx_pos(name)
    return None if pos is None else fmt.xattr_indx_key(pos[0], pos[1], ino, xid)


async def read_index(mctx, first: tuple[int, int, int], last: tuple[int, int, int],
                     limit: int, lock) -> list[tuple[int, int, int]]:
    """Up to `limit` (major, minor, ino) entries of the indx index from `first` to `last`
    inclusive, ascending, one per (major, minor, ino) however many xattrs map to it;
    `lock` is a READ lock of the zone."""
    if limit <= 0 or first > last:
        return []
    start = fmt.xattr_indx_key(first[0], first[1], first[2], 0)
    end = fmt.xattr_indx_key(last[0], last[1], last[2], fmt.U64_MAX)
    out: list[tuple[int, int, int]] = []
    key = start
    while len(out) < limit:
        found = await mctx.items.next_batch(key, end, lock, limit - len(out) + 16, fill=False)
        if not found:
            break
        for k, _v in found:
            major, minor, ino, _xid = fmt.unpack_xattr_indx_key(k)
            ent = (major, minor, ino)
            if out and out[-1] == ent:
                continue
            out.append(ent)
            if len(out) >= limit:
                break
        if found[-1][0] >= end:
            break
        key = fmt.key_next(found[-1][0])
    return out


# --------------------------------------------------------------------------- items


def _hash_range(ino: int, h: int) -> tuple[fmt.Key, fmt.Key]:
    return fmt.xattr_key(ino, h, 0, 0), fmt.xattr_key(ino, h, fmt.U64_MAX, 255)


def _ino_range(ino: int) -> tuple[fmt.Key, fmt.Key]:
    return fmt.xattr_key(ino, 0, 0, 0), fmt.xattr_key(ino, fmt.U64_MAX, fmt.U64_MAX, 255)


def pack_parts(name: bytes, value: bytes) -> list[bytes]:
    """The part values of an xattr: header, name and value cut into PART-sized pieces."""
    buf = HDR.pack(len(name), len(value)) + name + value
    return [buf[i:i + PART] for i in range(0, len(buf), PART)]


def nr_parts(name_len: int, val_len: int) -> int:
    return (HDR.size + name_len + val_len + PART - 1) // PART


class Found:
    """An xattr as stored: its id, how many parts it has and its value."""

    __slots__ = ("xid", "nparts", "value")

    def __init__(self, xid: int, nparts: int, value: bytes) -> None:
        self.xid = xid
        self.nparts = nparts
        self.value = value


async def find(mctx, ino: int, name: bytes, lock) -> Found | None:
    """The stored xattr with this name, or None."""
    h = fmt.hash64(name)
    start, end = _hash_range(ino, h)
    match_id = None
    parts: list[bytes] = []
    val_len = 0
    async for key, val in mctx.items.items(start, end, lock):
        xid, part = key[4], key[5]
        if match_id is not None:
            if xid != match_id:
                continue  # keep iterating: breaking out of async generators is untidy
            parts.append(val)
            continue
        if part != 0:
            continue
        nlen, vlen = HDR.unpack_from(val, 0)
        if val[HDR.size:HDR.size + nlen] == name:
            match_id = xid
            val_len = vlen
            parts.append(val)
    if match_id is None:
        return None
    data = b"".join(parts)
    start_off = HDR.size + len(name)
    value = data[start_off:start_off + val_len]
    if len(value) != val_len:
        raise FsError(errno.EIO, f"xattr of inode {ino} is missing parts")
    return Found(match_id, len(parts), value)


async def _names(mctx, ino: int, lock,
                 after: tuple[int, int] = (0, 0)) -> list[tuple[int, int, bytes]]:
    """(name hash, id, name) of every xattr of the inode from key (hash, id) `after` on, in
    key order, reading only the first part of each."""
    _start, end = _ino_range(ino)
    out = []
    key: fmt.Key | None = fmt.xattr_key(ino, after[0], after[1], 0)
    items = mctx.items
    while key is not None:
        found = await items.next(key, end, lock)
        if found is None:
            break
        k, val = found
        if k[5] == 0:
            nlen = val[0]
            out.append((k[3], k[4], bytes(val[HDR.size:HDR.size + nlen])))
        if k[4] < fmt.U64_MAX:
            key = fmt.xattr_key(ino, k[3], k[4] + 1, 0)
        elif k[3] < fmt.U64_MAX:
            key = fmt.xattr_key(ino, k[3] + 1, 0, 0)
        else:
            key = None
    return out


def write_parts(mctx, ino: int, name: bytes, value: bytes, xid: int, old_nparts: int,
                lock) -> None:
    """Write an xattr's parts under id xid, deleting parts left over from an old value."""
    h = fmt.hash64(name)
    parts = pack_parts(name, value)
    for i, p in enumerate(parts):
        mctx.items.update(fmt.xattr_key(ino, h, xid, i), p, lock)
    for i in range(len(parts), old_nparts):
        mctx.items.delete(fmt.xattr_key(ino, h, xid, i), lock)


def delete_parts(mctx, ino: int, name: bytes, xid: int, nparts: int, lock) -> None:
    h = fmt.hash64(name)
    for i in range(nparts):
        mctx.items.delete(fmt.xattr_key(ino, h, xid, i), lock)


def put(mctx, inode: fmt.Inode, name: bytes, value: bytes | None, found: Found | None,
        lock) -> None:
    """Write (value bytes) or delete (None) the xattr `find` returned as `found`, taking a
    new id from the in-memory inode for a new one (the caller stores the inode)."""
    if value is None:
        if found is not None:
            delete_parts(mctx, inode.ino, name, found.xid, found.nparts, lock)
    elif found is None:
        xid = inode.next_xattr_id
        inode.next_xattr_id += 1
        write_parts(mctx, inode.ino, name, value, xid, 0, lock)
    else:
        write_parts(mctx, inode.ino, name, value, found.xid, found.nparts, lock)


# --------------------------------------------------------------------------- operations


async def getxattr(mctx, ino: int, name: bytes, ctx) -> bytes:
    """The value of an xattr (ENODATA if it has none)."""
    name = bytes(name)
    try:
        check_name(name)
    except FsError as e:
        if e.errno != errno.EINVAL or not name.startswith(SCOUTFS_PREFIX):
            raise
        raise FsError(errno.ENODATA) from None  # a bad tag: no such xattr can exist
    async with mctx.locks.inodes([ino], LOCK_READ) as locks:
        lock = locks[ino]
        await inode_mod.load_inode(mctx, ino, lock)  # ENOENT for a vanished inode
        found = await find(mctx, ino, name, lock)
    if found is None:
        raise FsError(errno.ENODATA)
    return found.value


async def _all_names(mctx, ino: int,
                     after: tuple[int, int] = (0, 0)) -> list[tuple[int, int, bytes, bool]]:
    """(name hash, id, name, hidden) of every xattr of ino from key (hash, id) `after` on;
    hidden: a ``scoutfs.hide.`` tag."""
    async with mctx.locks.inodes([ino], LOCK_READ) as locks:
        lock = locks[ino]
        await inode_mod.load_inode(mctx, ino, lock)
        names = await _names(mctx, ino, lock, after)
    out = []
    for h, xid, n in names:
        hidden = False
        if n.startswith(SCOUTFS_PREFIX):
            try:
                hidden = parse_tags(n).hide
            except FsError:
                pass
        out.append((h, xid, n, hidden))
    return out


async def listxattr(mctx, ino: int, ctx) -> list[bytes]:
    """The visible names: not ``scoutfs.hide.*``, and ``trusted.*`` only for root."""
    admin = is_admin(ctx)
    return [n for _h, _x, n, hidden in await _all_names(mctx, ino)
            if not hidden and (admin or not n.startswith(b"trusted."))]


async def list_hidden(mctx, ino: int,
                      after: tuple[int, int] = (0, 0)) -> list[tuple[int, int, bytes]]:
    """(name hash, id, name) of the ``scoutfs.hide.`` xattrs from key (hash, id) `after` on,
    in key order (LISTXATTR_HIDDEN's cursor: a list read in pieces misses and repeats
    nothing that stays)."""
    return [(h, x, n) for h, x, n, hidden in await _all_names(mctx, ino, after) if hidden]


async def _change(mctx, ino: int, name: bytes, value: bytes | None, flags: int, ctx) -> None:
    """Set (value bytes) or remove (value None) an xattr."""
    tags = check_name(name)
    _check_tagged(mctx, name, tags, value, ctx)
    is_acl = name in acl.NAMES
    entries = acl.parse_valid(value) if is_acl and value is not None else None
    async with inode_rwsem(mctx, ino, exclusive=True), \
            mctx.locks.inodes([ino], LOCK_WRITE) as locks:
        lock = locks[ino]
        async with inode_mod.index_lock(mctx) as ilock, \
                totl.totl_lock(mctx, tags.totl) as tlock, \
                indx_lock(mctx, tags.indx) as xlock, mctx.trans.hold():
            inode = await inode_mod.load_inode(mctx, ino, lock)
            # retention refuses changes of user. xattrs only; others still work (§5.11)
            if inode.flags & fmt.INODE_FLAG_RETENTION and name.startswith(b"user."):
                raise FsError(errno.EPERM, "file is under retention")
            if is_acl:
                await _change_acl(mctx, inode, name, entries, value is not None, flags, ctx,
                                  lock, ilock)
                return
            found = await find(mctx, ino, name, lock)
            # atomic from here
            if value is None:
                if found is None:
                    raise FsError(errno.ENODATA)
                delete_parts(mctx, ino, name, found.xid, found.nparts, lock)
                xid = found.xid
            else:
                if found is not None and flags & XATTR_CREATE:
                    raise FsError(errno.EEXIST)
                if found is None and flags & XATTR_REPLACE:
                    raise FsError(errno.ENODATA)
                if found is None:
                    xid = inode.next_xattr_id
                    inode.next_xattr_id += 1
                    write_parts(mctx, ino, name, value, xid, 0, lock)
                else:
                    xid = found.xid
                    write_parts(mctx, ino, name, value, found.xid, found.nparts, lock)
            if tags.srch and (value is None or found is None):
                srch.log_entry(mctx, name, ino, xid)  # a create or a delete, not a replace
            if xlock is not None:
                major, minor = parse_indx_name(name)
                ikey = fmt.xattr_indx_key(major, minor, ino, xid)
                if value is None:
                    mctx.items.delete(ikey, xlock, primary=lock)
                else:
                    mctx.items.update(ikey, b"", xlock, primary=lock)
            if tlock is not None:  # the .totl. delta, in the same transaction (fs/totl.py)
                totl.xattr_changed(mctx, name, found.value if found is not None else None,
                                   value, tlock, primary=lock)
            inode_mod.touch(inode, mtime=False, ctime=True, now=mctx.now())
            inode_mod.store_inode(mctx, inode, lock, ilock)


async def _change_acl(mctx, inode: fmt.Inode, name: bytes, entries: list | None, is_set: bool,
                      flags: int, ctx, lock, ilock) -> None:
    """Set (entries; None: an empty ACL, a removal) or remove a POSIX ACL, keeping the mode
    in step (posix_acl_update_mode), inside the caller's locks and hold."""
    if name == acl.DEFAULT and not inode_mod.is_dir(inode):
        if entries is None:
            return  # the kernel's set_posix_acl: nothing to remove, success
        raise FsError(errno.EACCES, "default ACL on a non-directory")
    if not is_admin(ctx) and ctx.uid != inode.uid:
        raise FsError(errno.EPERM, "only the owner may change an ACL")
    found = await find(mctx, inode.ino, name, lock)
    if is_set and entries is not None:
        if found is not None and flags & XATTR_CREATE:
            raise FsError(errno.EEXIST)
        if found is None and flags & XATTR_REPLACE:
            raise FsError(errno.ENODATA)
    # atomic from here
    if entries is None:
        if found is None:
            return  # removing an ACL that is not there changes nothing
        value = None
    elif name == acl.ACCESS:
        not_equiv, mode = acl.equiv_mode(entries, inode.mode)
        if not is_admin(ctx) and not acl.caller_in_group(ctx, inode.gid):
            mode &= ~0o2000  # S_ISGID
        inode.mode = mode
        value = acl.format_acl(entries) if not_equiv else None
    else:
        value = acl.format_acl(entries)
    put(mctx, inode, name, value, found, lock)
    inode_mod.touch(inode, mtime=False, ctime=True, now=mctx.now())
    inode_mod.store_inode(mctx, inode, lock, ilock)


async def setxattr(mctx, ino: int, name: bytes, value: bytes, flags: int, ctx) -> None:
    """Create or replace an xattr (flags XATTR_CREATE / XATTR_REPLACE)."""
    if flags & ~(XATTR_CREATE | XATTR_REPLACE):
        raise FsError(errno.EINVAL, "unknown xattr flags")
    if flags & XATTR_CREATE and flags & XATTR_REPLACE:
        raise FsError(errno.EINVAL, "XATTR_CREATE and XATTR_REPLACE")
    name = bytes(name)
    if len(name) > fmt.XATTR_NAME_MAX:
        raise FsError(errno.ERANGE, "xattr name too long")
    if len(value) > fmt.XATTR_SIZE_MAX:
        raise FsError(errno.E2BIG, "xattr value too long")
    await _change(mctx, ino, name, bytes(value), flags, ctx)


async def removexattr(mctx, ino: int, name: bytes, ctx) -> None:
    """Remove an xattr (ENODATA if there is none)."""
    await _change(mctx, ino, bytes(name), None, 0, ctx)


async def delete_all(mctx, ino: int, lock, xlock=None, tlock=None) -> None:
    """Delete every xattr item of an inode being deleted, the indx index items of its
    ``.indx.`` xattrs and the totals of its ``.totl.`` ones (inside the caller's hold,
    WRITE lock, `xlock` (`indx_lock`) and `tlock` (`fs.totl.totl_lock`)): collects the keys
    (awaits), then deletes them all without awaiting."""
    start, end = _ino_range(ino)
    keys = []
    ikeys = []
    srch_names: list[tuple[bytes, int]] = []
    totls: list[tuple[bytes, bytes]] = []
    async for k, v in mctx.items.items(start, end, lock):
        keys.append(k)
        if k[5] == 0:
            nlen, vlen = HDR.unpack_from(v, 0)
            name = bytes(v[HDR.size:HDR.size + nlen])
            ikey = indx_name_key(name, ino, k[4])
            if ikey is not None:
                ikeys.append(ikey)
            if _is_srch(name):
                srch_names.append((name, k[4]))
            if totl.is_totl_name(name):  # a .totl. value always fits in part 0
                totls.append((name, bytes(v[HDR.size + nlen:HDR.size + nlen + vlen])))
    if ikeys and xlock is None:
        raise AssertionError(f"inode {ino} has .indx. xattrs and no indx lock is held")
    if totls and tlock is None:
        raise AssertionError(f"inode {ino} has .totl. xattrs and no totl lock is held")
    for name, value in totls:
        totl.xattr_deleted(mctx, name, value, tlock, primary=lock)
    for k in keys:
        mctx.items.delete(k, lock)
    for k in ikeys:
        mctx.items.delete(k, xlock, primary=lock)
    for name, xid in srch_names:
        srch.log_entry(mctx, name, ino, xid)


def _is_srch(name: bytes) -> bool:
    """A stored name with the ``.srch.`` tag (stored names were checked when set)."""
    if not name.startswith(SCOUTFS_PREFIX):
        return False
    try:
        return parse_tags(name).srch
    except FsError:
        return False
