"""Unit tests of fs.mkfs: the fresh volume's supers, quorum blocks, fs_root and free lists."""

from __future__ import annotations

import errno
import stat
import time

import pytest

from fs import format as fmt
from fs.alloc import ExtentSet, read_extent_list
from fs.block import Device, MetaBlocks, read_quorum_block, read_super
from fs.btree import Btree
from fs.errors import FsError
from fs.format import KEY_MAX, KEY_MIN, META_BLOCK_SIZE, QuorumBlock
from fs.mkfs import device_size, has_filesystem, make_volume
from fs.testing.memdev import MemDevice

MIB = 1 << 20


def images(tmp_path, meta=64 * MIB, data=256 * MIB):
    paths = []
    for name, size in (("meta", meta), ("data", data)):
        p = tmp_path / name
        with open(p, "wb") as f:
            f.truncate(size)
        paths.append(str(p))
    return paths


def check_volume(meta_dev, data_dev, sb, total_meta, total_data):
    assert read_super(meta_dev) == sb
    dsb = read_super(data_dev)
    assert sb.flags & fmt.SUPER_FLAG_META and not dsb.flags & fmt.SUPER_FLAG_META
    assert (dsb.fsid, dsb.uuid, dsb.quorum_slots) == (sb.fsid, sb.uuid, sb.quorum_slots)
    assert sb.fsid == int.from_bytes(sb.uuid[:8], "little")
    assert (sb.seq, sb.next_ino, sb.inode_count) == (2, fmt.FIRST_ALLOC_INO, 1)
    assert (sb.total_meta_blocks, sb.total_data_blocks) == (total_meta, total_data)
    assert sb.logs_root == sb.mounted_clients == sb.srch_root == fmt.EMPTY_ROOT
    assert sb.meta_pending == sb.data_pending == fmt.NULL_REF

    mb = MetaBlocks(meta_dev, sb.fsid)
    tree = Btree(mb, sb.fs_root)
    items = list(tree.items(KEY_MIN, KEY_MAX))
    assert [key for key, _ in items] == [
        fmt.seq_index_key(fmt.INODE_INDEX_META_SEQ, items[1][1].seq, fmt.ROOT_INO),
        fmt.inode_key(fmt.ROOT_INO),
    ]
    it = items[1][1]
    assert it.seq == 1 and not it.deleted
    ino = fmt.unpack_inode(1, it.value)
    assert ino.mode == stat.S_IFDIR | 0o755 and ino.nlink == 2
    assert (ino.uid, ino.gid, ino.next_readdir_pos, ino.meta_seq) == (0, 0, 2, 1)
    assert ino.atime == ino.mtime == ino.ctime == ino.crtime
    assert abs(ino.mtime[0] - time.time()) < 60

    meta_free, meta_chain = read_extent_list(mb, sb.meta_free)
    data_free, data_chain = read_extent_list(mb, sb.data_free)
    tree_blocks = {ref.blkno for ref, _ in tree.block_refs()}
    used = tree_blocks | set(meta_chain) | set(data_chain)
    mfree = ExtentSet(meta_free)
    # every dynamic meta block is either used by mkfs or free, never both
    assert mfree.total == sb.free_meta_blocks == total_meta - fmt.META_DEV_START_BLKNO - len(used)
    assert not any(mfree.contains(b) for b in used)
    assert min(used) == fmt.META_DEV_START_BLKNO
    assert all(s >= fmt.META_DEV_START_BLKNO and s + n <= total_meta for s, n in meta_free)
    assert data_free == [(fmt.DATA_DEV_START_BLKNO, total_data - fmt.DATA_DEV_START_BLKNO)]
    assert sb.free_data_blocks == total_data - fmt.DATA_DEV_START_BLKNO
    for slot in range(fmt.QUORUM_MAX_SLOTS):
        assert read_quorum_block(meta_dev, slot, sb.fsid) == QuorumBlock()


def test_make_volume_on_image_files(tmp_path):
    meta, data = images(tmp_path)
    assert not has_filesystem(meta) and not has_filesystem(data)
    sb = make_volume(meta, data, {0: ("127.0.0.1", 7000), 2: ("10.1.2.3", 7001)})
    assert sb.quorum_slots == {0: fmt.QuorumSlot("127.0.0.1", 7000),
                               2: fmt.QuorumSlot("10.1.2.3", 7001)}
    assert sb.fmt_vers == 2
    assert has_filesystem(meta) and has_filesystem(data)
    assert device_size(meta) == 64 * MIB
    with Device(meta, readonly=True) as m, Device(data, readonly=True) as d:
        check_volume(m, d, sb, 64 * MIB // META_BLOCK_SIZE, 256 * MIB // 4096)


def test_make_volume_caps_sizes_and_version(tmp_path):
    meta, data = images(tmp_path)
    sb = make_volume(meta, data, {0: ("127.0.0.1", 7000)}, fmt_vers=1,
                     meta_size=16 * MIB + 1000, data_size=32 * MIB + 4095)
    assert sb.fmt_vers == 1
    with Device(meta, readonly=True) as m, Device(data, readonly=True) as d:
        check_volume(m, d, sb, 16 * MIB // META_BLOCK_SIZE, 32 * MIB // 4096)


def test_make_volume_on_memdevs_and_remake():
    meta, data = MemDevice(8 * MIB, "m"), MemDevice(8 * MIB, "d")
    sb1 = make_volume(meta, data, {0: ("127.0.0.1", 1)})
    assert meta.unflushed() == 0 and data.unflushed() == 0  # all durable on return
    sb2 = make_volume(meta, data, {0: ("127.0.0.1", 1)})
    assert sb2.fsid != sb1.fsid
    check_volume(meta, data, sb2, 8 * MIB // META_BLOCK_SIZE, 8 * MIB // 4096)
    assert not meta.closed  # devices we were given stay open


def test_make_volume_refuses_impossible_inputs(tmp_path):
    with pytest.raises(FsError) as ei:
        make_volume(MemDevice(512 * 1024), MemDevice(8 * MIB), {0: ("127.0.0.1", 1)})
    assert ei.value.errno == errno.EINVAL and "too small" in str(ei.value)
    with pytest.raises(FsError):
        make_volume(MemDevice(8 * MIB), MemDevice(64 * 1024), {0: ("127.0.0.1", 1)})
    with pytest.raises(FsError):
        make_volume(MemDevice(8 * MIB), MemDevice(8 * MIB), {15: ("127.0.0.1", 1)})
    with pytest.raises(FsError):
        make_volume(MemDevice(8 * MIB), MemDevice(8 * MIB), {0: ("127.0.0.1", 1)}, fmt_vers=3)


def test_has_filesystem_probes(tmp_path):
    small = tmp_path / "small"
    small.write_bytes(b"x" * 100)
    assert not has_filesystem(str(small))
    assert not has_filesystem(str(tmp_path))  # a directory is not a device
    assert device_size(str(small)) == 100
    with pytest.raises(FileNotFoundError):
        has_filesystem(str(tmp_path / "missing"))


def test_probe_signature_finds_scoutfs_and_other_filesystems(tmp_path):
    from fs.mkfs import probe_signature

    meta, data = images(tmp_path)
    assert probe_signature(meta) is None and probe_signature(data) is None
    make_volume(meta, data, {0: ("127.0.0.1", 7000)})
    assert probe_signature(meta) == probe_signature(data) == "scoutfs filesystem"

    def fresh(name: str, poke: dict[int, bytes], size: int = MIB) -> str:
        p = tmp_path / name
        with open(p, "wb") as f:
            f.truncate(size)
            for off, b in poke.items():
                f.seek(off)
                f.write(b)
        return str(p)

    ext_feats = 1024 + 92  # s_feature_compat, _incompat, _ro_compat
    cases = {
        "ext2 filesystem": {1080: b"\x53\xef"},
        "ext3 filesystem": {1080: b"\x53\xef", ext_feats: (4).to_bytes(4, "little")},
        "ext4 filesystem": {1080: b"\x53\xef", ext_feats + 4: (0x40).to_bytes(4, "little")},
        "xfs filesystem": {0: b"XFSB"},
        "btrfs filesystem": {65600: b"_BHRfS_M"},
    }
    for want, poke in cases.items():
        p = fresh(want.split()[0], poke)
        assert probe_signature(p, blkid=False) == want, want
        assert probe_signature(p) == want, want
    # too small to hold any of the signatures, or not a device at all
    assert probe_signature(fresh("tiny", {}, 100)) is None
    assert probe_signature(str(tmp_path)) is None
    with pytest.raises(FileNotFoundError):
        probe_signature(str(tmp_path / "missing"))
