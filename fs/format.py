"""The on-disk format: every persistent structure, key zone and type, and their encodings.

This module is the only one that knows byte layouts. Everything else asks it to pack and
unpack.  It does no I/O.

Devices
-------
* The **meta device** is addressed in 64 KiB blocks (btree blocks, extent-list blocks).
  The first two 64 KiB blocks are reserved: the super block is the 4 KiB block 16 (byte
  offset 64 KiB) and the quorum blocks are 4 KiB blocks 17..31, all inside meta block 1.
  Dynamic metadata starts at 64 KiB block 2.
* The **data device** is addressed in 4 KiB blocks.  It carries a copy of the super
  (4 KiB block 16, not flagged META) and file data from 4 KiB block 64.

Every block starts with a 32-byte header ``{crc u32, magic u32, fsid u64, seq u64,
blkno u64}``; the crc is crc32c (seed ~0, as the hardware instruction computes it) over
every byte after the crc field.  A reference to a block is ``{blkno u64, seq u64}``: a
reader that finds a header whose blkno or seq differs from the reference has followed a
stale root to a block that was freed and reused, and must retry with fresh roots.

Integers are little-endian on disk, except keys, which are packed big-endian so that the
packed bytes sort exactly as the key tuples do (useful for bloom hashes and debugging).
"""

from __future__ import annotations

import struct
import uuid as uuidlib
from dataclasses import dataclass, field, fields
from typing import NamedTuple

import crc32c as _crc32c

# --------------------------------------------------------------------------- sizes

SMALL_BLOCK_SHIFT = 12
SMALL_BLOCK_SIZE = 1 << SMALL_BLOCK_SHIFT  # 4 KiB: super, quorum and data blocks
META_BLOCK_SHIFT = 16
META_BLOCK_SIZE = 1 << META_BLOCK_SHIFT  # 64 KiB: btree and extent-list blocks
DATA_BLOCK_SHIFT = SMALL_BLOCK_SHIFT
DATA_BLOCK_SIZE = SMALL_BLOCK_SIZE

SUPER_BLKNO = 16  # in 4 KiB blocks, on both devices: byte offset 64 KiB
QUORUM_BLKNO = 17  # first quorum block (4 KiB units), one per slot
QUORUM_MAX_SLOTS = 15  # quorum blocks 17..31
META_DEV_START_BLKNO = 2  # first dynamic 64 KiB meta block
DATA_DEV_START_BLKNO = 64  # first 4 KiB data block usable for file data

FORMAT_VERSION_MIN = 1
FORMAT_VERSION_MAX = 2
FORMAT_VERSION_DEFAULT = 2

# mkfs refuses devices smaller than this without -A (upstream's minimum)
MIN_DEVICE_BYTES_UNFORCED = 64 * 1024 * 1024 * 1024
# the smallest volumes we can make at all with -A
MIN_META_BLOCKS = 64  # 4 MiB of metadata
MIN_DATA_BLOCKS = 1024  # 4 MiB of data

# the root directory inode; mkfs sets next_ino to 1024 so it is alone in its lock group
ROOT_INO = 1
FIRST_ALLOC_INO = 1024
LOCK_GROUP_SHIFT = 10  # inode lock groups cover 1024 inodes
LOCK_GROUP_NR = 1 << LOCK_GROUP_SHIFT

# the largest item value a btree stores: a leaf must hold several of them
MAX_VAL_SIZE = 16 * 1024
# xattr items are split into parts of this many bytes (as scoutfs does)
XATTR_PART_SIZE = 896
XATTR_NAME_MAX = 255
XATTR_SIZE_MAX = 65535
NAME_MAX = 255
SYMLINK_MAX = 4096
MAX_FILE_SIZE = (1 << 63) - 1

U64_MAX = (1 << 64) - 1

# --------------------------------------------------------------------------- magics

MAGIC_SUPER = 0x103C428B
MAGIC_BTREE = 0xE597F96D
MAGIC_EXTENT_LIST = 0x2C1B5E37
MAGIC_QUORUM = 0x5C0D7A1E
MAGIC_SRCH_BLOCK = 0x8A3E51C7  # a srch file's leaf of (hash, ino, id) entries
MAGIC_SRCH_PARENT = 0x3E51C78A  # a srch file's block of leaf refs

# super flags
SUPER_FLAG_META = 1 << 0  # this copy lives on the meta device

# --------------------------------------------------------------------------- checksum


def crc32c(data: bytes | bytearray | memoryview, seed: int = 0) -> int:
    """crc32c as the block headers use it (the library applies the ~0 seed itself)."""
    return _crc32c.crc32c(data, seed)


def hash64(data: bytes) -> int:
    """A 64-bit name hash for dirent and xattr keys (two crc32c with different seeds)."""
    lo = _crc32c.crc32c(data, 0)
    hi = _crc32c.crc32c(data, 0x9E3779B9)
    return (hi << 32) | lo


# --------------------------------------------------------------------------- block header

HDR = struct.Struct("<IIQQQ")  # crc, magic, fsid, seq, blkno
HDR_SIZE = HDR.size  # 32


class BlockHeader(NamedTuple):
    crc: int  # crc32c of the block after this field
    magic: int  # which kind of block (MAGIC_*)
    fsid: int  # the volume's fsid: a block of another volume is corrupt
    seq: int  # the commit seq that wrote it; must match the referring ref
    blkno: int  # where it was written; must match where it was read


def seal_block(buf: bytearray, magic: int, fsid: int, seq: int, blkno: int) -> None:
    """Fill in the header of a block image in place, crc last."""
    HDR.pack_into(buf, 0, 0, magic, fsid, seq, blkno)
    crc = crc32c(memoryview(buf)[4:])
    struct.pack_into("<I", buf, 0, crc)


def parse_header(buf: bytes | bytearray | memoryview) -> BlockHeader:
    return BlockHeader(*HDR.unpack_from(buf, 0))


def block_crc_ok(buf: bytes | bytearray | memoryview) -> bool:
    (stored,) = struct.unpack_from("<I", buf, 0)
    return stored == crc32c(memoryview(buf)[4:])


class BlockRef(NamedTuple):
    """A reference to a meta block: the reader checks both fields against its header."""

    blkno: int
    seq: int


REF = struct.Struct("<QQ")
NULL_REF = BlockRef(0, 0)


class BtreeRoot(NamedTuple):
    """The root of a btree: a ref to its top block and its height (0 = empty tree)."""

    ref: BlockRef
    height: int


ROOT = struct.Struct("<QQB")
EMPTY_ROOT = BtreeRoot(NULL_REF, 0)


def pack_root(root: BtreeRoot) -> bytes:
    return ROOT.pack(root.ref.blkno, root.ref.seq, root.height)


def unpack_root(buf: bytes | memoryview, off: int = 0) -> BtreeRoot:
    blkno, seq, height = ROOT.unpack_from(buf, off)
    return BtreeRoot(BlockRef(blkno, seq), height)


# --------------------------------------------------------------------------- keys
#
# A key is the tuple (zone, first, type, second, third, fourth) and keys compare in that
# order, exactly as scoutfs compares its struct scoutfs_key.  We use plain tuples in
# memory because Python compares them in that order natively and fast.

Key = tuple[int, int, int, int, int, int]

KEY = struct.Struct(">BQBQQB")  # big-endian: packed bytes sort like the tuples
KEY_SIZE = KEY.size  # 27

KEY_MIN: Key = (0, 0, 0, 0, 0, 0)
KEY_MAX: Key = (255, U64_MAX, 255, U64_MAX, U64_MAX, 255)


def pack_key(key: Key) -> bytes:
    return KEY.pack(*key)


def unpack_key(buf: bytes | memoryview, off: int = 0) -> Key:
    return KEY.unpack_from(buf, off)  # type: ignore[return-value]


# the width of each key field, for stepping to the neighbouring key
_KEY_FIELD_MAX = (0xFF, U64_MAX, 0xFF, U64_MAX, U64_MAX, 0xFF)


def key_next(key: Key) -> Key:
    """The smallest key greater than key (KEY_MAX has none: ValueError)."""
    out = list(key)
    for i in range(5, -1, -1):
        if out[i] < _KEY_FIELD_MAX[i]:
            out[i] += 1
            return tuple(out)  # type: ignore[return-value]
        out[i] = 0  # carry into the more significant field
    raise ValueError("no key after KEY_MAX")


def key_prev(key: Key) -> Key:
    """The largest key smaller than key (KEY_MIN has none: ValueError)."""
    out = list(key)
    for i in range(5, -1, -1):
        if out[i] > 0:
            out[i] -= 1
            return tuple(out)  # type: ignore[return-value]
        out[i] = _KEY_FIELD_MAX[i]  # borrow from the more significant field
    raise ValueError("no key before KEY_MIN")


# zones
ZONE_INODE_INDEX = 4
ZONE_ORPHAN = 8
ZONE_QUOTA = 10
ZONE_XATTR_TOTL = 12
ZONE_XATTR_INDX = 14
ZONE_FS = 16
ZONE_LOCK = 20
# server-only zones (24..60): they live in the server's own btrees, never in fs_root
ZONE_LOG_TREES = 24
ZONE_MOUNTED_CLIENT = 28
ZONE_SRCH = 32
ZONE_FREE_EXTENT = 36
ZONE_LOG_MERGE = 40

# types in ZONE_INODE_INDEX: second = seq, third = ino
INODE_INDEX_META_SEQ = 4
INODE_INDEX_DATA_SEQ = 8
# type in ZONE_ORPHAN: second = ino
ORPHAN_TYPE = 4
# type in ZONE_QUOTA: first = rule hash, second = collision nr
QUOTA_RULE_TYPE = 4
# types in ZONE_FS (first = ino for all of them)
FS_INODE = 4  # (FS, ino, INODE, 0, 0, 0) -> inode
FS_XATTR = 8  # (FS, ino, XATTR, name hash, id, part) -> xattr part
FS_DIRENT = 12  # (FS, dir, DIRENT, name hash, pos, 0) -> dirent
FS_READDIR = 16  # (FS, dir, READDIR, pos, 0, 0) -> dirent
FS_LINK_BACKREF = 20  # (FS, target, LINK_BACKREF, dir, pos, 0) -> dirent
FS_SYMLINK = 24  # (FS, ino, SYMLINK, nr, 0, 0) -> target fragment
FS_DATA_EXTENT = 28  # (FS, ino, DATA_EXTENT, last iblock, len, 0) -> extent
# type in ZONE_LOCK
LOCK_RENAME_TYPE = 4
# types in server zones
LOG_TREES_TYPE = 4  # (LOG_TREES, rid, 4, nr, 0, 0) -> log_trees record
MOUNTED_CLIENT_TYPE = 4  # (MOUNTED_CLIENT, rid, 4, 0, 0, 0) -> mounted client

ZONE_NAMES = {
    ZONE_INODE_INDEX: "inode_index",
    ZONE_ORPHAN: "orphan",
    ZONE_QUOTA: "quota",
    ZONE_XATTR_TOTL: "xattr_totl",
    ZONE_XATTR_INDX: "xattr_indx",
    ZONE_FS: "fs",
    ZONE_LOCK: "lock",
    ZONE_LOG_TREES: "log_trees",
    ZONE_MOUNTED_CLIENT: "mounted_client",
    ZONE_SRCH: "srch",
    ZONE_FREE_EXTENT: "free_extent",
    ZONE_LOG_MERGE: "log_merge",
}
FS_TYPE_NAMES = {
    FS_INODE: "inode",
    FS_XATTR: "xattr",
    FS_DIRENT: "dirent",
    FS_READDIR: "readdir",
    FS_LINK_BACKREF: "link_backref",
    FS_SYMLINK: "symlink",
    FS_DATA_EXTENT: "data_extent",
}


def inode_key(ino: int) -> Key:
    return (ZONE_FS, ino, FS_INODE, 0, 0, 0)


def xattr_key(ino: int, name_hash: int, xid: int, part: int) -> Key:
    return (ZONE_FS, ino, FS_XATTR, name_hash, xid, part)


def dirent_key(dir_ino: int, name_hash: int, pos: int) -> Key:
    return (ZONE_FS, dir_ino, FS_DIRENT, name_hash, pos, 0)


def readdir_key(dir_ino: int, pos: int) -> Key:
    return (ZONE_FS, dir_ino, FS_READDIR, pos, 0, 0)


def backref_key(target_ino: int, dir_ino: int, pos: int) -> Key:
    return (ZONE_FS, target_ino, FS_LINK_BACKREF, dir_ino, pos, 0)


def symlink_key(ino: int, nr: int) -> Key:
    return (ZONE_FS, ino, FS_SYMLINK, nr, 0, 0)


def extent_key(ino: int, last_iblock: int, length: int) -> Key:
    return (ZONE_FS, ino, FS_DATA_EXTENT, last_iblock, length, 0)


def orphan_key(ino: int) -> Key:
    return (ZONE_ORPHAN, 0, ORPHAN_TYPE, ino, 0, 0)


def seq_index_key(index_type: int, seq: int, ino: int) -> Key:
    return (ZONE_INODE_INDEX, 0, index_type, seq, ino, 0)


def xattr_indx_key(major: int, minor: int, ino: int, xid: int) -> Key:
    """An ``.indx.`` xattr's index item (major u8, minor u64, ino, xattr id): major and the
    high 56 bits of minor in the first field, minor's low byte in the type, so keys sort by
    (major, minor, ino, xid).  No value."""
    return (ZONE_XATTR_INDX, (major << 56) | (minor >> 8), minor & 0xFF, ino, xid, 0)


def unpack_xattr_indx_key(key: Key) -> tuple[int, int, int, int]:
    """(major, minor, ino, xid) of an `xattr_indx_key`."""
    first, typ = key[1], key[2]
    return first >> 56, ((first & ((1 << 56) - 1)) << 8) | typ, key[3], key[4]


def rename_lock_key() -> Key:
    return (ZONE_LOCK, 0, LOCK_RENAME_TYPE, 0, 0, 0)


def log_trees_key(rid: int, nr: int) -> Key:
    return (ZONE_LOG_TREES, rid, LOG_TREES_TYPE, nr, 0, 0)


def mounted_client_key(rid: int) -> Key:
    return (ZONE_MOUNTED_CLIENT, rid, MOUNTED_CLIENT_TYPE, 0, 0, 0)


def lock_group_first(ino: int) -> int:
    return ino & ~(LOCK_GROUP_NR - 1)


def inode_group_range(ino: int) -> tuple[Key, Key]:
    """The key range the inode-group lock of ino covers: every FS item of 1024 inodes."""
    first = lock_group_first(ino)
    last = first | (LOCK_GROUP_NR - 1)
    return (ZONE_FS, first, 0, 0, 0, 0), (ZONE_FS, last, 255, U64_MAX, U64_MAX, 255)


def format_key(key: Key) -> str:
    zone, first, typ, second, third, fourth = key
    zname = ZONE_NAMES.get(zone, str(zone))
    tname = FS_TYPE_NAMES.get(typ, str(typ)) if zone == ZONE_FS else str(typ)
    return f"{zname}.{first}.{tname}.{second}.{third}.{fourth}"


# --------------------------------------------------------------------------- items

ITEM_FLAG_DELETION = 1 << 0  # a tombstone: hides older versions of the key


@dataclass(slots=True)
class Item:
    """One versioned item as the btrees and the item cache hold it."""

    seq: int  # transaction (or lock write) seq that wrote it: newest wins on read
    flags: int  # ITEM_FLAG_*
    value: bytes

    @property
    def deleted(self) -> bool:
        return bool(self.flags & ITEM_FLAG_DELETION)


# --------------------------------------------------------------------------- btree blocks
#
# A btree block: header, then {level u8, nr u16}, then nr packed entries
#   key(27) seq u64 flags u8 val_len u16 value
# Leaves (level 0) hold items.  Parents hold one entry per child whose key is the largest
# key in the child's subtree and whose value is the child's BlockRef (seq/flags zero).

BTREE_HDR = struct.Struct("<BH")
BTREE_ITEM_HDR = struct.Struct("<QBH")  # seq, flags, val_len (after the key)
BTREE_ENTRY_OVERHEAD = KEY_SIZE + BTREE_ITEM_HDR.size  # 38
BTREE_BLOCK_PAYLOAD = META_BLOCK_SIZE - HDR_SIZE - BTREE_HDR.size
BTREE_MAX_HEIGHT = 20


def btree_entry_size(val_len: int) -> int:
    return BTREE_ENTRY_OVERHEAD + val_len


BTREE_PARENT_ENTRY_SIZE = BTREE_ENTRY_OVERHEAD + REF.size  # 54: a child's key and ref


def pack_btree_block(level: int, keys: list[Key], vals: list) -> bytearray:
    """A whole unsealed btree block image.

    Leaves (level 0) take vals as (seq, flags, value) tuples, parents as BlockRefs.  The
    header is left zero for seal_block.
    """
    parts: list[bytes] = []
    kpack = KEY.pack
    ipack = BTREE_ITEM_HDR.pack
    if level == 0:
        for k, (seq, flags, val) in zip(keys, vals, strict=True):
            parts.append(kpack(*k))
            parts.append(ipack(seq, flags, len(val)))
            parts.append(val)
    else:
        for k, ref in zip(keys, vals, strict=True):
            parts.append(kpack(*k))
            parts.append(ipack(0, 0, REF.size))
            parts.append(REF.pack(ref.blkno, ref.seq))
    payload = b"".join(parts)
    if len(payload) > BTREE_BLOCK_PAYLOAD:
        raise ValueError(f"btree block payload {len(payload)} > {BTREE_BLOCK_PAYLOAD}")
    buf = bytearray(META_BLOCK_SIZE)
    BTREE_HDR.pack_into(buf, HDR_SIZE, level, len(keys))
    start = HDR_SIZE + BTREE_HDR.size
    buf[start : start + len(payload)] = payload
    return buf


def unpack_btree_block(buf: bytes | memoryview) -> tuple[int, list[Key], list, int]:
    """Parse a btree block image: (level, keys, vals, payload bytes used).

    vals are (seq, flags, value) tuples in leaves and BlockRefs in parents.  A block that
    is not a well-formed sorted btree block raises ValueError with the reason.
    """
    level, nr = BTREE_HDR.unpack_from(buf, HDR_SIZE)
    if level >= BTREE_MAX_HEIGHT:
        raise ValueError(f"btree level {level} too large")
    off = HDR_SIZE + BTREE_HDR.size
    end = len(buf)
    keys: list[Key] = []
    vals: list = []
    kunpack = KEY.unpack_from
    iunpack = BTREE_ITEM_HDR.unpack_from
    ksz = KEY_SIZE
    for _ in range(nr):
        if off + BTREE_ENTRY_OVERHEAD > end:
            raise ValueError(f"btree entry {len(keys)} of {nr} runs past the block")
        key = kunpack(buf, off)
        seq, flags, vlen = iunpack(buf, off + ksz)
        off += BTREE_ENTRY_OVERHEAD
        if off + vlen > end:
            raise ValueError(f"btree entry {len(keys)} value of {vlen} bytes runs past the block")
        if level == 0:
            if vlen > MAX_VAL_SIZE:
                raise ValueError(f"btree item value of {vlen} bytes > {MAX_VAL_SIZE}")
            vals.append((seq, flags, bytes(buf[off : off + vlen])))
        else:
            if vlen != REF.size:
                raise ValueError(f"btree parent entry with a {vlen}-byte value")
            vals.append(BlockRef(*REF.unpack_from(buf, off)))
        off += vlen
        if keys and not keys[-1] < key:
            raise ValueError(f"btree keys out of order at entry {len(keys)}")
        keys.append(key)
    return level, keys, vals, off - HDR_SIZE - BTREE_HDR.size


# --------------------------------------------------------------------------- extent lists
#
# Free-space sets and lent extents are stored as chains of extent-list blocks:
#   header, {next BlockRef, nr u32}, then nr {start u64, len u64}
# (a simplification of scoutfs's alloc-list blocks and free-extent btrees, allowed by
# spec §8: the server owns one free set per device, lent to mounts per transaction).

EXTLIST_HDR = struct.Struct("<QQI")  # next.blkno, next.seq, nr
EXTENT = struct.Struct("<QQ")  # start, len
EXTLIST_MAX = (META_BLOCK_SIZE - HDR_SIZE - EXTLIST_HDR.size) // EXTENT.size


def pack_extent_list_block(next_ref: BlockRef, extents: list[tuple[int, int]]) -> bytearray:
    """A whole unsealed extent-list block image holding up to EXTLIST_MAX extents."""
    if len(extents) > EXTLIST_MAX:
        raise ValueError(f"{len(extents)} extents > {EXTLIST_MAX} per block")
    buf = bytearray(META_BLOCK_SIZE)
    EXTLIST_HDR.pack_into(buf, HDR_SIZE, next_ref.blkno, next_ref.seq, len(extents))
    off = HDR_SIZE + EXTLIST_HDR.size
    payload = b"".join(EXTENT.pack(s, n) for s, n in extents)
    buf[off : off + len(payload)] = payload
    return buf


def unpack_extent_list_block(
    buf: bytes | memoryview,
) -> tuple[BlockRef, list[tuple[int, int]]]:
    """Parse an extent-list block: (next ref, extents); ValueError if malformed."""
    nblk, nseq, nr = EXTLIST_HDR.unpack_from(buf, HDR_SIZE)
    if nr > EXTLIST_MAX:
        raise ValueError(f"extent list block claims {nr} extents > {EXTLIST_MAX}")
    off = HDR_SIZE + EXTLIST_HDR.size
    exts = [tuple(e) for e in EXTENT.iter_unpack(bytes(buf[off : off + nr * EXTENT.size]))]
    for s, n in exts:
        if n == 0 or s + n > U64_MAX:
            raise ValueError(f"bad extent ({s}, {n})")
    return BlockRef(nblk, nseq), exts  # type: ignore[return-value]


# --------------------------------------------------------------------------- inodes

# inode flags
INODE_FLAG_TRUNCATE = 1 << 0  # a truncate is in progress (extents past size may remain)
INODE_FLAG_RETENTION = 1 << 1  # the file is under retention (format v2)

S_IFMT = 0o170000


@dataclass(slots=True)
class Inode:
    """The inode item (FS, ino, INODE).  Times are (sec, nsec) pairs."""

    ino: int = 0  # not stored in the value: it is the key's first field
    size: int = 0  # i_size; for directories the sum of entry name lengths
    meta_seq: int = 0  # transaction seq of the last metadata change
    data_seq: int = 0  # transaction seq of the last data change (regular files)
    data_version: int = 0  # bumped by every content change (spec §5.1); 0 = never written
    online_blocks: int = 0  # 4 KiB blocks mapped and written
    offline_blocks: int = 0  # 4 KiB blocks released to an archive (OFFLINE extents)
    next_readdir_pos: int = 2  # next directory entry position (0 and 1 are . and ..)
    next_xattr_id: int = 1  # next xattr id (xattr keys carry it so names can collide)
    nlink: int = 0
    uid: int = 0
    gid: int = 0
    mode: int = 0  # type and permission bits as st_mode
    rdev: int = 0  # device number of block and char nodes
    flags: int = 0  # INODE_FLAG_*
    atime: tuple[int, int] = (0, 0)
    ctime: tuple[int, int] = (0, 0)
    mtime: tuple[int, int] = (0, 0)
    crtime: tuple[int, int] = (0, 0)  # creation time, settable by setattr_more
    proj: int = 0  # project id (format v2)

    def copy(self) -> Inode:
        return Inode(**{f.name: getattr(self, f.name) for f in fields(self)})


INODE_V2 = struct.Struct("<QQQQQQQQIIIIIIqIqIqIqIQ")  # time secs are signed (before 1970)
INODE_SIZE = INODE_V2.size


def pack_inode(inode: Inode) -> bytes:
    i = inode
    return INODE_V2.pack(
        i.size,
        i.meta_seq,
        i.data_seq,
        i.data_version,
        i.online_blocks,
        i.offline_blocks,
        i.next_readdir_pos,
        i.next_xattr_id,
        i.nlink,
        i.uid,
        i.gid,
        i.mode,
        i.rdev,
        i.flags,
        i.atime[0],
        i.atime[1],
        i.ctime[0],
        i.ctime[1],
        i.mtime[0],
        i.mtime[1],
        i.crtime[0],
        i.crtime[1],
        i.proj,
    )


def unpack_inode(ino: int, buf: bytes | memoryview) -> Inode:
    v = INODE_V2.unpack_from(buf, 0)
    return Inode(
        ino=ino,
        size=v[0],
        meta_seq=v[1],
        data_seq=v[2],
        data_version=v[3],
        online_blocks=v[4],
        offline_blocks=v[5],
        next_readdir_pos=v[6],
        next_xattr_id=v[7],
        nlink=v[8],
        uid=v[9],
        gid=v[10],
        mode=v[11],
        rdev=v[12],
        flags=v[13],
        atime=(v[14], v[15]),
        ctime=(v[16], v[17]),
        mtime=(v[18], v[19]),
        crtime=(v[20], v[21]),
        proj=v[22],
    )


# --------------------------------------------------------------------------- dirents

DIRENT = struct.Struct("<QQQB")  # ino, name hash, pos, d_type; then the name bytes

# d_type values (DT_*), as getdents reports them
DT_UNKNOWN, DT_FIFO, DT_CHR, DT_DIR, DT_BLK, DT_REG, DT_LNK, DT_SOCK = 0, 1, 2, 4, 6, 8, 10, 12


def mode_to_dtype(mode: int) -> int:
    return (mode & S_IFMT) >> 12


class Dirent(NamedTuple):
    ino: int  # the inode the entry names
    hash: int  # hash64 of the name (DIRENT key)
    pos: int  # readdir position (READDIR and LINK_BACKREF keys)
    dtype: int  # DT_* of the target
    name: bytes


def pack_dirent(d: Dirent) -> bytes:
    return DIRENT.pack(d.ino, d.hash, d.pos, d.dtype) + d.name


def unpack_dirent(buf: bytes | memoryview) -> Dirent:
    ino, h, pos, dtype = DIRENT.unpack_from(buf, 0)
    return Dirent(ino, h, pos, dtype, bytes(buf[DIRENT.size :]))


# --------------------------------------------------------------------------- data extents

EXTENT_FLAG_OFFLINE = 1  # released: contents live in an archive, blkno 0
EXTENT_FLAG_UNWRITTEN = 2  # allocated but never written: reads return zeros

EXTENT_VAL = struct.Struct("<QB")  # blkno (0 = unmapped), flags


def pack_extent_val(blkno: int, flags: int) -> bytes:
    return EXTENT_VAL.pack(blkno, flags)


def unpack_extent_val(buf: bytes | memoryview) -> tuple[int, int]:
    return EXTENT_VAL.unpack_from(buf, 0)  # type: ignore[return-value]


# --------------------------------------------------------------------------- xattrs
#
# An xattr is stored as one or more parts keyed (FS, ino, XATTR, name hash, id, part).
# Part 0 starts with the header {name_len u8, val_len u16}, then the name, then the value;
# the bytes continue in later parts of XATTR_PART_SIZE bytes each.

XATTR_HDR = struct.Struct("<BH")


# --------------------------------------------------------------------------- super block


@dataclass(slots=True)
class QuorumSlot:
    addr: str  # dotted IPv4 address
    port: int


@dataclass(slots=True)
class Super:
    """The super block: written only by the server (and mkfs), at SUPER_BLKNO."""

    fmt_vers: int = FORMAT_VERSION_DEFAULT
    flags: int = 0  # SUPER_FLAG_*
    fsid: int = 0  # random volume id; every block header carries it
    uuid: bytes = b"\0" * 16  # the volume uuid (fsid is its first 8 bytes, little-endian)
    seq: int = 1  # the global seq counter: transaction and lock write seqs come from it
    next_ino: int = FIRST_ALLOC_INO  # next inode number the server hands out
    inode_count: int = 0  # live inodes as of the last commit
    total_meta_blocks: int = 0  # 64 KiB blocks on the meta device
    total_data_blocks: int = 0  # 4 KiB blocks on the data device
    quorum_slots: dict[int, QuorumSlot] = field(default_factory=dict)
    # free space: extent lists of free blocks on each device
    meta_free: BlockRef = NULL_REF
    data_free: BlockRef = NULL_REF
    # freed blocks waiting out the delayed-reuse rule: (freed in commit seq, extents)
    meta_pending: BlockRef = NULL_REF
    data_pending: BlockRef = NULL_REF
    free_meta_blocks: int = 0  # counts of the free sets, for statfs
    free_data_blocks: int = 0
    fs_root: BtreeRoot = EMPTY_ROOT  # merged items
    logs_root: BtreeRoot = EMPTY_ROOT  # log_trees records keyed (rid, nr)
    mounted_clients: BtreeRoot = EMPTY_ROOT  # mounted client records keyed by rid
    srch_root: BtreeRoot = EMPTY_ROOT  # srch log, sorted and busy files (ZONE_SRCH items)


SUPER_FIXED = struct.Struct("<IIQ16sQQQQQ")
QSLOT = struct.Struct("<B4sH")  # slot nr, ipv4, port
SUPER_TAIL = struct.Struct("<QQQQQQ")  # 4 extent-list refs (blkno,seq)= 8 u64s, see below


def pack_super(sb: Super) -> bytes:
    out = bytearray(SUPER_FIXED.pack(
        sb.fmt_vers, sb.flags, sb.fsid, sb.uuid, sb.seq, sb.next_ino, sb.inode_count,
        sb.total_meta_blocks, sb.total_data_blocks,
    ))
    out += struct.pack("<B", len(sb.quorum_slots))
    for nr in sorted(sb.quorum_slots):
        s = sb.quorum_slots[nr]
        out += QSLOT.pack(nr, bytes(int(p) for p in s.addr.split(".")), s.port)
    for ref in (sb.meta_free, sb.data_free, sb.meta_pending, sb.data_pending):
        out += REF.pack(ref.blkno, ref.seq)
    out += struct.pack("<QQ", sb.free_meta_blocks, sb.free_data_blocks)
    for root in (sb.fs_root, sb.logs_root, sb.mounted_clients, sb.srch_root):
        out += pack_root(root)
    return bytes(out)


def unpack_super(buf: bytes | memoryview) -> Super:
    v = SUPER_FIXED.unpack_from(buf, 0)
    off = SUPER_FIXED.size
    sb = Super(
        fmt_vers=v[0], flags=v[1], fsid=v[2], uuid=bytes(v[3]), seq=v[4], next_ino=v[5],
        inode_count=v[6], total_meta_blocks=v[7], total_data_blocks=v[8],
    )
    (nslots,) = struct.unpack_from("<B", buf, off)
    off += 1
    for _ in range(nslots):
        nr, ip, port = QSLOT.unpack_from(buf, off)
        off += QSLOT.size
        sb.quorum_slots[nr] = QuorumSlot(".".join(str(b) for b in ip), port)
    refs = []
    for _ in range(4):
        refs.append(BlockRef(*REF.unpack_from(buf, off)))
        off += REF.size
    sb.meta_free, sb.data_free, sb.meta_pending, sb.data_pending = refs
    sb.free_meta_blocks, sb.free_data_blocks = struct.unpack_from("<QQ", buf, off)
    off += 16
    roots = []
    for _ in range(4):
        roots.append(unpack_root(buf, off))
        off += ROOT.size
    sb.fs_root, sb.logs_root, sb.mounted_clients, sb.srch_root = roots
    return sb


def pack_super_block(sb: Super) -> bytearray:
    """The sealed 4 KiB super block image (header seq = sb.seq, blkno = SUPER_BLKNO)."""
    body = pack_super(sb)
    buf = bytearray(SMALL_BLOCK_SIZE)
    buf[HDR_SIZE : HDR_SIZE + len(body)] = body
    seal_block(buf, MAGIC_SUPER, sb.fsid, sb.seq, SUPER_BLKNO)
    return buf


def new_fsid_uuid() -> tuple[int, bytes]:
    u = uuidlib.uuid4().bytes
    fsid = struct.unpack_from("<Q", u, 0)[0]
    return fsid, u


# --------------------------------------------------------------------------- quorum blocks

# quorum events recorded in each slot's block, in this order
QUORUM_EVENT_BEGIN, QUORUM_EVENT_TERM, QUORUM_EVENT_ELECT = 0, 1, 2
QUORUM_EVENT_FENCE, QUORUM_EVENT_STOP, QUORUM_EVENT_END = 3, 4, 5
QUORUM_EVENT_NR = 6
QUORUM_EVENT = struct.Struct("<QQQQI")  # write_nr, rid, term, timestamp sec, nsec


@dataclass(slots=True)
class QuorumEvent:
    write_nr: int = 0  # the block's write_nr when the event was recorded
    rid: int = 0  # the mount that recorded it
    term: int = 0  # the election term
    ts: tuple[int, int] = (0, 0)  # wall clock (sec, nsec)


@dataclass(slots=True)
class QuorumBlock:
    write_nr: int = 0  # bumped by every write of the block
    events: list[QuorumEvent] = field(
        default_factory=lambda: [QuorumEvent() for _ in range(QUORUM_EVENT_NR)]
    )


def pack_quorum(qb: QuorumBlock) -> bytes:
    out = bytearray(struct.pack("<Q", qb.write_nr))
    for ev in qb.events:
        out += QUORUM_EVENT.pack(ev.write_nr, ev.rid, ev.term, ev.ts[0], ev.ts[1])
    return bytes(out)


def unpack_quorum(buf: bytes | memoryview) -> QuorumBlock:
    (write_nr,) = struct.unpack_from("<Q", buf, 0)
    off = 8
    events = []
    for _ in range(QUORUM_EVENT_NR):
        w, rid, term, s, ns = QUORUM_EVENT.unpack_from(buf, off)
        off += QUORUM_EVENT.size
        events.append(QuorumEvent(w, rid, term, (s, ns)))
    return QuorumBlock(write_nr, events)


def pack_quorum_block(qb: QuorumBlock, fsid: int, slot: int) -> bytearray:
    """The sealed 4 KiB quorum block image of a slot (header seq = write_nr)."""
    body = pack_quorum(qb)
    buf = bytearray(SMALL_BLOCK_SIZE)
    buf[HDR_SIZE : HDR_SIZE + len(body)] = body
    seal_block(buf, MAGIC_QUORUM, fsid, qb.write_nr, QUORUM_BLKNO + slot)
    return buf


# --------------------------------------------------------------------------- srch files
#
# `.srch.` xattrs are found through srch files (fs/srch.py): each create and delete of one
# logs the entry (hash64(name), ino, xattr id); a duplicate entry cancels (deleted).  A
# file is a parent block of leaf refs, each with the first entry of its leaf, and leaves of
# entries.  Log files (a mount's, in its log_trees record, then rotated into srch_root)
# hold entries in log order; sorted files (made by compaction) hold each surviving entry
# once, ascending, so a search reads only the leaves whose range can hold its hash.
#
# srch_root items (keys (SRCH, 0, type, a, b, 0)):
#   LOG    (SRCH, 0, LOG, parent blkno, 0, 0)            -> srch file
#   SORTED (SRCH, 0, SORTED, order, parent blkno, 0)     -> srch file
#   BUSY   (SRCH, 0, BUSY, rid, 0, 0)                    -> compaction given to rid
#
# Entries are little-endian so a search can look for the hash's bytes with bytes.find.

SRCH_LOG_TYPE = 4
SRCH_SORTED_TYPE = 8
SRCH_BUSY_TYPE = 12

SRCH_ENTRY = struct.Struct("<QQQ")  # hash, ino, id
SRCH_BLOCK_HDR = struct.Struct("<I4x")  # nr of entries (leaf) or refs (parent)
SRCH_ENTRIES_OFF = HDR_SIZE + SRCH_BLOCK_HDR.size
SRCH_BLOCK_MAX_ENTRIES = (META_BLOCK_SIZE - SRCH_ENTRIES_OFF) // SRCH_ENTRY.size  # 2729
SRCH_PARENT_REF = struct.Struct("<QQQQQ")  # leaf blkno, seq, first entry of the leaf
SRCH_PARENT_MAX_REFS = (META_BLOCK_SIZE - SRCH_ENTRIES_OFF) // SRCH_PARENT_REF.size  # 1637
SRCH_ENTRY_MAX = (U64_MAX, U64_MAX, U64_MAX)

SrchEntry = tuple[int, int, int]


class SrchFile(NamedTuple):
    """A srch file: its parent block, leaf count, entry count, smallest and largest entry
    (an empty file has a zero ref and nothing else)."""

    ref: BlockRef
    blocks: int
    entries: int
    first: SrchEntry
    last: SrchEntry


SRCH_FILE = struct.Struct("<QQQQQQQQQQ")  # blkno, seq, blocks, entries, first, last
EMPTY_SRCH_FILE = SrchFile(NULL_REF, 0, 0, (0, 0, 0), (0, 0, 0))


def pack_srch_file(f: SrchFile) -> bytes:
    return SRCH_FILE.pack(f.ref.blkno, f.ref.seq, f.blocks, f.entries, *f.first, *f.last)


def unpack_srch_file(buf: bytes | memoryview, off: int = 0) -> SrchFile:
    v = SRCH_FILE.unpack_from(buf, off)
    return SrchFile(BlockRef(v[0], v[1]), v[2], v[3], tuple(v[4:7]), tuple(v[7:10]))


def srch_log_key(blkno: int) -> Key:
    return (ZONE_SRCH, 0, SRCH_LOG_TYPE, blkno, 0, 0)


def srch_sorted_key(order: int, blkno: int) -> Key:
    return (ZONE_SRCH, 0, SRCH_SORTED_TYPE, order, blkno, 0)


def srch_busy_key(rid: int) -> Key:
    return (ZONE_SRCH, 0, SRCH_BUSY_TYPE, rid, 0, 0)


def pack_srch_leaf(entries: list[SrchEntry]) -> bytearray:
    """A sealed-to-be leaf image (the caller seals it with MAGIC_SRCH_BLOCK)."""
    if len(entries) > SRCH_BLOCK_MAX_ENTRIES:
        raise ValueError(f"{len(entries)} srch entries do not fit a leaf")
    buf = bytearray(META_BLOCK_SIZE)
    SRCH_BLOCK_HDR.pack_into(buf, HDR_SIZE, len(entries))
    off = SRCH_ENTRIES_OFF
    pack = SRCH_ENTRY.pack_into
    for e in entries:
        pack(buf, off, *e)
        off += SRCH_ENTRY.size
    return buf


def srch_block_nr(buf: bytes | memoryview, max_nr: int) -> int:
    """The count of a srch block (ValueError when it cannot fit)."""
    (nr,) = SRCH_BLOCK_HDR.unpack_from(buf, HDR_SIZE)
    if nr > max_nr:
        raise ValueError(f"srch block claims {nr} entries, at most {max_nr} fit")
    return nr


def unpack_srch_leaf(buf: bytes | memoryview) -> list[SrchEntry]:
    nr = srch_block_nr(buf, SRCH_BLOCK_MAX_ENTRIES)
    end = SRCH_ENTRIES_OFF + nr * SRCH_ENTRY.size
    return list(SRCH_ENTRY.iter_unpack(buf[SRCH_ENTRIES_OFF:end]))


def pack_srch_parent(refs: list[tuple[BlockRef, SrchEntry]]) -> bytearray:
    if len(refs) > SRCH_PARENT_MAX_REFS:
        raise ValueError(f"{len(refs)} srch leaves do not fit a parent")
    buf = bytearray(META_BLOCK_SIZE)
    SRCH_BLOCK_HDR.pack_into(buf, HDR_SIZE, len(refs))
    off = SRCH_ENTRIES_OFF
    for ref, first in refs:
        SRCH_PARENT_REF.pack_into(buf, off, ref.blkno, ref.seq, *first)
        off += SRCH_PARENT_REF.size
    return buf


def unpack_srch_parent(buf: bytes | memoryview) -> list[tuple[BlockRef, SrchEntry]]:
    nr = srch_block_nr(buf, SRCH_PARENT_MAX_REFS)
    end = SRCH_ENTRIES_OFF + nr * SRCH_PARENT_REF.size
    return [(BlockRef(v[0], v[1]), (v[2], v[3], v[4]))
            for v in SRCH_PARENT_REF.iter_unpack(buf[SRCH_ENTRIES_OFF:end])]


# --------------------------------------------------------------------------- log trees
#
# One record per mount log tree in the server's logs_root, keyed (rid, nr).  The lent
# allocators are recorded so that a mount that vanishes leaks nothing: reclaim returns its
# avail extents to the free sets and merges its item tree.

LOG_TREES_FLAG_FINALIZED = 1 << 0  # no more writes: waiting to be merged into fs_root

LOG_TREES_FIXED = struct.Struct("<QQQQQQI")  # rid, nr, get_seq, commit_seq, max_seq, fin_seq, flags


@dataclass(slots=True)
class LogTrees:
    rid: int = 0  # the mount that owns the tree
    nr: int = 0  # the mount's tree number: a new one after each finalize
    item_root: BtreeRoot = EMPTY_ROOT  # the mount's committed items
    meta_avail: list[tuple[int, int]] = field(default_factory=list)  # lent meta extents
    data_avail: list[tuple[int, int]] = field(default_factory=list)  # lent data extents
    get_trans_seq: int = 0  # seq of the transaction the mount has open
    commit_trans_seq: int = 0  # seq of its last committed transaction (open while get > commit)
    max_item_seq: int = 0  # largest item seq in the tree
    finalize_seq: int = 0  # seq at which it was finalized
    flags: int = 0  # LOG_TREES_FLAG_*
    # the mount's srch log file (fs/srch.py), written with its transactions; packed last
    # and optional on unpack, so records written before it existed still read
    srch_file: SrchFile = field(default_factory=lambda: EMPTY_SRCH_FILE)


def _pack_extents(exts: list[tuple[int, int]]) -> bytes:
    return struct.pack("<I", len(exts)) + b"".join(EXTENT.pack(s, n) for s, n in exts)


def _unpack_extents(buf: bytes | memoryview, off: int) -> tuple[list[tuple[int, int]], int]:
    (nr,) = struct.unpack_from("<I", buf, off)
    off += 4
    out = []
    for _ in range(nr):
        out.append(EXTENT.unpack_from(buf, off))
        off += EXTENT.size
    return out, off


def pack_log_trees(lt: LogTrees) -> bytes:
    return (
        LOG_TREES_FIXED.pack(lt.rid, lt.nr, lt.get_trans_seq, lt.commit_trans_seq,
                             lt.max_item_seq, lt.finalize_seq, lt.flags)
        + pack_root(lt.item_root)
        + _pack_extents(lt.meta_avail)
        + _pack_extents(lt.data_avail)
        + pack_srch_file(lt.srch_file)
    )


def unpack_log_trees(buf: bytes | memoryview) -> LogTrees:
    rid, nr, gs, cs, ms, fs_, fl = LOG_TREES_FIXED.unpack_from(buf, 0)
    off = LOG_TREES_FIXED.size
    root = unpack_root(buf, off)
    off += ROOT.size
    meta, off = _unpack_extents(buf, off)
    data, off = _unpack_extents(buf, off)
    sfl = unpack_srch_file(buf, off) if len(buf) >= off + SRCH_FILE.size else EMPTY_SRCH_FILE
    return LogTrees(rid, nr, root, [tuple(e) for e in meta], [tuple(e) for e in data],
                    gs, cs, ms, fs_, fl, sfl)


# --------------------------------------------------------------------------- xattr totals
#
# A ZONE_XATTR_TOTL item (XATTR_TOTL, a, 0, b, c, 0) of a `.totl.` xattr name ending in
# ``.a.b.c`` holds a *delta* {total, count}, two u64s added modulo 2**64 (a removal adds the
# two's complement).  Items of this zone are never newest-wins: each tree's item is the sum of
# the deltas written to it, and a key's value is the sum over fs_root and the log trees
# (fs/totl.py has the rule that keeps a merge in flight from counting a delta twice).

TOTL_VAL = struct.Struct("<QQ")  # total, count


def totl_key(a: int, b: int, c: int) -> Key:
    return (ZONE_XATTR_TOTL, a, 0, b, c, 0)


def pack_totl(total: int, count: int) -> bytes:
    return TOTL_VAL.pack(total & U64_MAX, count & U64_MAX)


def unpack_totl(buf: bytes | memoryview) -> tuple[int, int]:
    if len(buf) != TOTL_VAL.size:
        raise ValueError(f"totl value of {len(buf)} bytes, not {TOTL_VAL.size}")
    return TOTL_VAL.unpack_from(buf, 0)


# A quota rule item (QUOTA, hash64(value), QUOTA_RULE_TYPE, collision nr, 0, 0) -> rule:
# name values[3], limit, prio, op, rule flags, name sources[3], name flags[3] (fs/quota.py)
QUOTA_RULE = struct.Struct("<QQQQBBB3B3B")


def quota_rule_key(rule_hash: int, nr: int) -> Key:
    return (ZONE_QUOTA, rule_hash, QUOTA_RULE_TYPE, nr, 0, 0)


def pack_quota_rule(prio: int, names, op: int, limit: int, flags: int) -> bytes:
    return QUOTA_RULE.pack(names[0][0], names[1][0], names[2][0], limit, prio, op, flags,
                           *(n[1] for n in names), *(n[2] for n in names))


def unpack_quota_rule(buf: bytes | memoryview):
    """(prio, ((value, source, flags) x3), op, limit, flags); ValueError if malformed."""
    if len(buf) != QUOTA_RULE.size:
        raise ValueError(f"quota rule of {len(buf)} bytes, not {QUOTA_RULE.size}")
    v0, v1, v2, limit, prio, op, flags, s0, s1, s2, f0, f1, f2 = QUOTA_RULE.unpack(buf)
    return prio, ((v0, s0, f0), (v1, s1, f1), (v2, s2, f2)), op, limit, flags


# The merge status item in logs_root (LOG_MERGE, 0, LOG_MERGE_STATUS_TYPE, 0, 0, 0): while a
# merge of finalized trees is partly committed, which trees it merges and the last key whose
# items are already in fs_root.  Value: key (27) + u32 nr + nr * (rid, nr) u64 pairs.
LOG_MERGE_STATUS_TYPE = 4
LOG_MERGE_TREE = struct.Struct("<QQ")


def log_merge_status_key() -> Key:
    return (ZONE_LOG_MERGE, 0, LOG_MERGE_STATUS_TYPE, 0, 0, 0)


def pack_log_merge_status(upto: Key, trees: list[tuple[int, int]]) -> bytes:
    return (pack_key(upto) + struct.pack("<I", len(trees))
            + b"".join(LOG_MERGE_TREE.pack(r, n) for r, n in trees))


def unpack_log_merge_status(buf: bytes | memoryview) -> tuple[Key, list[tuple[int, int]]]:
    upto = unpack_key(buf, 0)
    (nr,) = struct.unpack_from("<I", buf, KEY_SIZE)
    off = KEY_SIZE + 4
    if len(buf) != off + nr * LOG_MERGE_TREE.size:
        raise ValueError("log merge status of the wrong size")
    return upto, [LOG_MERGE_TREE.unpack_from(buf, off + i * LOG_MERGE_TREE.size)
                  for i in range(nr)]


# --------------------------------------------------------------------------- mounted clients

MOUNTED_CLIENT_FLAG_QUORUM = 1 << 0  # the mount is a quorum member
MOUNTED_CLIENT = struct.Struct("<4sHB")  # ipv4, port, flags


def pack_mounted_client(addr: str, port: int, flags: int) -> bytes:
    return MOUNTED_CLIENT.pack(bytes(int(p) for p in addr.split(".")), port, flags)


def unpack_mounted_client(buf: bytes | memoryview) -> tuple[str, int, int]:
    ip, port, flags = MOUNTED_CLIENT.unpack_from(buf, 0)
    return ".".join(str(b) for b in ip), port, flags
