"""Writing a fresh volume: the on-disk state of a filesystem nobody has mounted yet.

Owns `make_volume` (supers on both devices, quorum blocks, an fs_root holding the root
directory inode, and the free extent lists of both devices) and the probes the `scoutfs
mkfs` command builds its refusal rules on (`has_filesystem`, `probe_signature`,
`device_size`).  Output and refusal policy belong to the command, not here.

Write order: every meta block, the quorum blocks and the data device's super are written
and flushed before the meta super, so a crash mid-mkfs leaves no meta super pointing at
unwritten blocks.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import shutil
import stat
import subprocess

from fs import format as fmt
from fs.alloc import ExtentSet, extent_list_nr_blocks, write_extent_list
from fs.block import (
    Device,
    DeviceLike,
    MetaBlocks,
    super_magic_present,
    write_quorum_block,
    write_super,
)
from fs.btree import Btree
from fs.context import now_ts
from fs.errors import FsError
from fs.format import (
    DATA_BLOCK_SIZE,
    DATA_DEV_START_BLKNO,
    EMPTY_ROOT,
    FIRST_ALLOC_INO,
    META_BLOCK_SIZE,
    META_DEV_START_BLKNO,
    QUORUM_MAX_SLOTS,
    ROOT_INO,
    SUPER_FLAG_META,
    Inode,
    Item,
    QuorumBlock,
    QuorumSlot,
    Super,
)

MKFS_SEQ = 1  # the seq mkfs writes its blocks with; the volume's first transaction is 2

# the smallest devices make_volume can lay a volume on at all (policy minimums are the
# command's business): room for the root leaf and the two free lists, and some data
_MIN_META_TOTAL = META_DEV_START_BLKNO + 8
_MIN_DATA_TOTAL = DATA_DEV_START_BLKNO + 16


def device_size(path: str) -> int:
    """Size in bytes of a regular file or block device."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return os.lseek(fd, 0, os.SEEK_END)
    finally:
        os.close(fd)


def has_filesystem(path: str) -> bool:
    """Whether path holds a scoutfs super block (its magic; a damaged one still counts)."""
    mode = os.stat(path).st_mode
    if not (stat.S_ISREG(mode) or stat.S_ISBLK(mode)):
        return False
    with Device(path, readonly=True) as dev:
        return super_magic_present(dev)


# other filesystems' superblock magic (offset, bytes), what upstream's libblkid probe would
# find first; `blkid -p` (when installed) catches the rest
_EXT_SB = 1024
_MAGICS = [("xfs", 0, b"XFSB"), ("btrfs", 65600, b"_BHRfS_M"), ("ext", _EXT_SB + 56, b"\x53\xef")]
_PROBE_BYTES = max(off + len(m) for _t, off, m in _MAGICS)
BLKID_TIMEOUT_S = 30


def _ext_type(buf: bytes) -> str:
    """ext2, ext3 or ext4 from the superblock's feature flags, as blkid tells them apart."""
    compat, incompat, ro_compat = (int.from_bytes(buf[_EXT_SB + o:_EXT_SB + o + 4], "little")
                                   for o in (92, 96, 100))
    # extents, 64bit, mmp, flex_bg, ...: anything ext3 does not know; huge_file, gdt_csum,
    # dir_nlink, extra_isize, metadata_csum among the ro_compat ones
    if incompat & ~0x1f or ro_compat & ~0x7:
        return "ext4"
    return "ext3" if compat & 0x4 else "ext2"


def _blkid(path: str) -> str | None:
    """What `blkid -p` (low-level probe, no cache) finds: 'TYPE filesystem' or 'PTTYPE
    partition table'; None when it finds nothing or is not installed."""
    blkid = shutil.which("blkid") or next(
        (p for p in ("/sbin/blkid", "/usr/sbin/blkid") if os.access(p, os.X_OK)), None)
    if blkid is None:
        return None
    try:
        p = subprocess.run([blkid, "-p", "-o", "export", path], capture_output=True,
                           text=True, timeout=BLKID_TIMEOUT_S, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if p.returncode != 0:  # 2: nothing found; 8: ambivalent (upstream's probe carries on)
        return None
    vals = dict(line.split("=", 1) for line in p.stdout.splitlines() if "=" in line)
    if vals.get("TYPE"):
        return f"{vals['TYPE']} filesystem"
    if vals.get("PTTYPE"):
        return f"{vals['PTTYPE']} partition table"
    return None


def probe_signature(path: str, *, blkid: bool = True) -> str | None:
    """What path already holds, as 'scoutfs filesystem', 'ext4 filesystem', 'gpt partition
    table', ...; None for nothing known (or a path that is no device).  OSError if it
    cannot be opened."""
    mode = os.stat(path).st_mode
    if not (stat.S_ISREG(mode) or stat.S_ISBLK(mode)):
        return None
    if has_filesystem(path):
        return "scoutfs filesystem"
    with open(path, "rb", buffering=0) as f:
        buf = f.read(_PROBE_BYTES)
    for name, off, magic in _MAGICS:
        if buf[off:off + len(magic)] == magic:
            return f"{_ext_type(buf) if name == 'ext' else name} filesystem"
    return _blkid(path) if blkid else None


def _open(dev: str | DeviceLike) -> tuple[DeviceLike, bool]:
    if isinstance(dev, str):
        return Device(dev), True
    return dev, False


def make_volume(
    meta_path: str | DeviceLike,
    data_path: str | DeviceLike,
    quorum_slots: dict[int, tuple[str, int]],
    fmt_vers: int = fmt.FORMAT_VERSION_DEFAULT,
    meta_size: int | None = None,
    data_size: int | None = None,
) -> Super:
    """Write a fresh volume on the two devices and return its (meta) super.

    The devices may be paths or already open devices (e.g. testing.memdev.MemDevice,
    which are left open).  meta_size/data_size cap the bytes used.
    """
    if not fmt.FORMAT_VERSION_MIN <= fmt_vers <= fmt.FORMAT_VERSION_MAX:
        raise FsError(errno.EINVAL, f"unsupported format version {fmt_vers}")
    for nr in quorum_slots:
        if not 0 <= nr < QUORUM_MAX_SLOTS:
            raise FsError(errno.EINVAL, f"quorum slot {nr} out of range 0..{QUORUM_MAX_SLOTS - 1}")
    meta_dev, close_meta = _open(meta_path)
    try:
        data_dev, close_data = _open(data_path)
        try:
            return _make(meta_dev, data_dev, quorum_slots, fmt_vers, meta_size, data_size)
        finally:
            if close_data:
                data_dev.close()
    finally:
        if close_meta:
            meta_dev.close()


def _make(meta_dev: DeviceLike, data_dev: DeviceLike,
          quorum_slots: dict[int, tuple[str, int]], fmt_vers: int,
          meta_size: int | None, data_size: int | None) -> Super:
    msize = meta_dev.size if meta_size is None else min(meta_size, meta_dev.size)
    dsize = data_dev.size if data_size is None else min(data_size, data_dev.size)
    total_meta = msize // META_BLOCK_SIZE
    total_data = dsize // DATA_BLOCK_SIZE
    if total_meta < _MIN_META_TOTAL:
        raise FsError(errno.EINVAL, f"{meta_dev.path}: {msize} bytes is too small for a "
                                    f"meta device ({_MIN_META_TOTAL} 64 KiB blocks at least)")
    if total_data < _MIN_DATA_TOTAL:
        raise FsError(errno.EINVAL, f"{data_dev.path}: {dsize} bytes is too small for a "
                                    f"data device ({_MIN_DATA_TOTAL} 4 KiB blocks at least)")

    fsid, uuid = fmt.new_fsid_uuid()
    blocks = MetaBlocks(meta_dev, fsid, cache_blocks=16, parsed_blocks=4)
    blocks.nr_blocks = total_meta  # never write past the size we were told to use
    meta_free = ExtentSet([(META_DEV_START_BLKNO, total_meta - META_DEV_START_BLKNO)])
    data_free = ExtentSet([(DATA_DEV_START_BLKNO, total_data - DATA_DEV_START_BLKNO)])

    def alloc_meta() -> int:
        got = meta_free.alloc(1)
        if got is None:
            raise FsError(errno.ENOSPC, "meta device too small")
        return got[0]

    def no_free(blkno: int) -> None:
        raise AssertionError(f"mkfs freed meta block {blkno}")

    # the root directory, alone in fs_root
    now = now_ts()
    root = Inode(ino=ROOT_INO, mode=stat.S_IFDIR | 0o755, nlink=2, uid=0, gid=0,
                 atime=now, ctime=now, mtime=now, crtime=now, next_readdir_pos=2,
                 meta_seq=MKFS_SEQ)
    tree = Btree(blocks, EMPTY_ROOT)
    tree.begin(MKFS_SEQ, alloc_meta, no_free)
    tree.insert(fmt.inode_key(ROOT_INO), Item(MKFS_SEQ, 0, fmt.pack_inode(root)))
    # every inode has a meta_seq index item (spec §5.6)
    tree.insert(fmt.seq_index_key(fmt.INODE_INDEX_META_SEQ, MKFS_SEQ, ROOT_INO),
                Item(MKFS_SEQ, 0, b""))
    fs_root = tree.flush()

    # the free lists live in meta blocks taken from the meta free set itself: take them
    # first so the list written is the set without them (taking the lowest blocks never
    # adds extents, so the count computed before taking still suffices)
    data_list = data_free.extents()
    list_blknos = [alloc_meta() for _ in range(extent_list_nr_blocks(len(data_list)))]
    meta_need = extent_list_nr_blocks(len(meta_free) or 1)
    meta_blknos = [alloc_meta() for _ in range(meta_need)]
    meta_list = meta_free.extents()
    it_data = iter(list_blknos)
    data_ref = write_extent_list(blocks, data_list, MKFS_SEQ, lambda: next(it_data))
    leftover = list(it_data)
    it_meta = iter(meta_blknos)
    meta_ref = write_extent_list(blocks, meta_list, MKFS_SEQ, lambda: next(it_meta))
    leftover += list(it_meta)
    # a list that came out shorter than planned leaves blocks nobody owns: only possible
    # if the extents merged, which a fresh single-extent set cannot do
    assert not leftover, leftover

    slots = {nr: QuorumSlot(addr, port) for nr, (addr, port) in sorted(quorum_slots.items())}
    sb = Super(
        fmt_vers=fmt_vers, flags=SUPER_FLAG_META, fsid=fsid, uuid=uuid, seq=MKFS_SEQ + 1,
        next_ino=FIRST_ALLOC_INO, inode_count=1, total_meta_blocks=total_meta,
        total_data_blocks=total_data, quorum_slots=slots, meta_free=meta_ref,
        data_free=data_ref, free_meta_blocks=meta_free.total,
        free_data_blocks=data_free.total, fs_root=fs_root,
    )
    for slot in range(QUORUM_MAX_SLOTS):
        write_quorum_block(meta_dev, slot, QuorumBlock(), fsid)
    meta_dev.flush()

    data_sb = dataclasses.replace(sb, flags=sb.flags & ~SUPER_FLAG_META,
                                  quorum_slots=dict(slots))
    write_super(data_dev, data_sb)
    data_dev.flush()
    # the meta super last: it is what makes the volume exist
    write_super(meta_dev, sb)
    meta_dev.flush()
    return sb
