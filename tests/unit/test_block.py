"""Unit tests of fs.block (devices, verified cached meta blocks, supers, quorum blocks)
and of the in-memory device that stands in for it."""

from __future__ import annotations

import errno
import logging
import os
import random

import pytest

from fs import block
from fs import format as fmt
from fs.block import (
    Device,
    MetaBlocks,
    read_quorum_block,
    read_super,
    write_quorum_block,
    write_super,
)
from fs.errors import FsError, StaleBlock
from fs.format import MAGIC_BTREE, MAGIC_EXTENT_LIST, META_BLOCK_SIZE, BlockRef, QuorumBlock, Super
from fs.testing.memdev import MemDevice

FSID = 0x5C0075F5


def image(tmp_path, size=4 << 20, name="img"):
    p = tmp_path / name
    with open(p, "wb") as f:
        f.truncate(size)
    return str(p)


def block_image(fill: int) -> bytearray:
    buf = bytearray(META_BLOCK_SIZE)
    buf[fmt.HDR_SIZE :] = bytes([fill]) * (META_BLOCK_SIZE - fmt.HDR_SIZE)
    return buf


# --------------------------------------------------------------------------- Device


def test_device_direct_roundtrip(tmp_path):
    path = image(tmp_path)
    with Device(path) as dev:
        assert dev.size == 4 << 20
        assert dev.direct  # ext4/xfs images support O_DIRECT
        data = os.urandom(3 * 4096)
        dev.write(8192, data)
        dev.write(65536, memoryview(bytearray(b"z" * 65536)))
        dev.flush()
        assert dev.read(8192, len(data)) == data
        assert dev.read(0, 4096) == bytes(4096)
    with open(path, "rb") as f:
        f.seek(8192)
        assert f.read(len(data)) == data
        f.seek(65536)
        assert f.read(65536) == b"z" * 65536


def test_device_rejects_bad_io(tmp_path):
    path = image(tmp_path)
    with Device(path) as dev:
        with pytest.raises(ValueError):
            dev.read(100, 4096)
        with pytest.raises(ValueError):
            dev.write(0, b"x" * 100)
        with pytest.raises(FsError) as ei:
            dev.read(dev.size, 4096)
        assert ei.value.errno == errno.EIO
    with Device(path, readonly=True) as ro:
        with pytest.raises(FsError) as ei:
            ro.write(0, bytes(4096))
        assert ei.value.errno == errno.EROFS
        assert ro.read(0, 4096) == bytes(4096)


def test_device_io_after_close_fails_without_touching_the_fd(tmp_path, caplog):
    # the closed fd's number may belong to a later open: I/O after close must not use it
    path = image(tmp_path)
    dev = Device(path)
    dev.close()
    other = os.open(image(tmp_path, name="other"), os.O_RDWR)  # likely reuses the number
    try:
        with caplog.at_level(logging.ERROR):
            for io in (lambda: dev.read(0, 4096), lambda: dev.write(0, b"x" * 4096),
                       dev.flush):
                with pytest.raises(FsError) as ei:
                    io()
                assert ei.value.errno == errno.EIO
                assert "after the device was closed" in str(ei.value)
        assert os.pread(other, 4096, 0) == bytes(4096)
        assert not caplog.records  # an unmount race, not a device failure
    finally:
        os.close(other)


def test_device_falls_back_to_buffered_when_o_direct_is_refused(tmp_path, monkeypatch):
    real_open = os.open
    opens = []

    def fake_open(path, flags, *a):
        opens.append(flags)
        if flags & os.O_DIRECT:
            raise OSError(errno.EINVAL, "O_DIRECT not supported")
        return real_open(path, flags, *a)

    syncs = []
    real_fdatasync = os.fdatasync
    monkeypatch.setattr(block.os, "open", fake_open)
    monkeypatch.setattr(block.os, "fdatasync", lambda fd: (syncs.append(fd), real_fdatasync(fd)))
    path = image(tmp_path)
    dev = Device(path)
    assert not dev.direct
    assert len(opens) == 2 and opens[0] & os.O_DIRECT and not opens[1] & os.O_DIRECT
    data = os.urandom(65536)
    dev.write(65536 * 3, data)
    dev.flush()
    assert syncs == [dev.fd]
    assert dev.read(65536 * 3, 65536) == data
    dev.close()
    with open(path, "rb") as f:
        f.seek(65536 * 3)
        assert f.read(65536) == data


def test_device_other_open_errors_propagate(tmp_path):
    with pytest.raises(FileNotFoundError):
        Device(str(tmp_path / "missing"))


# --------------------------------------------------------------------------- MetaBlocks


@pytest.fixture(params=["mem", "file"])
def dev(request, tmp_path):
    if request.param == "mem":
        d = MemDevice(64 * META_BLOCK_SIZE, path="mem-meta")
    else:
        d = Device(image(tmp_path, 64 * META_BLOCK_SIZE))
    yield d
    d.close()


def test_meta_write_read_verified(dev):
    mb = MetaBlocks(dev, FSID)
    mb.write(5, 3, MAGIC_BTREE, block_image(0xAB))
    fresh = MetaBlocks(dev, FSID)
    buf = fresh.read(BlockRef(5, 3), MAGIC_BTREE)
    assert buf[fmt.HDR_SIZE :] == bytes([0xAB]) * (META_BLOCK_SIZE - fmt.HDR_SIZE)
    hdr = fmt.parse_header(buf)
    assert (hdr.blkno, hdr.seq, hdr.fsid, hdr.magic) == (5, 3, FSID, MAGIC_BTREE)
    assert fresh.reads == 1


def corrupt_byte(dev, offset):
    if isinstance(dev, MemDevice):
        old = dev.peek(offset, 1)
        dev.poke(offset, bytes([old[0] ^ 0x40]))
    else:
        fd = os.open(dev.path, os.O_RDWR)
        old = os.pread(fd, 1, offset)
        os.pwrite(fd, bytes([old[0] ^ 0x40]), offset)
        os.close(fd)


def test_corrupt_byte_is_eio_logged_with_blkno(dev, caplog):
    mb = MetaBlocks(dev, FSID)
    mb.write(7, 2, MAGIC_BTREE, block_image(1))
    corrupt_byte(dev, 7 * META_BLOCK_SIZE + 4000)
    fresh = MetaBlocks(dev, FSID)
    with caplog.at_level(logging.ERROR, logger="fs.block"):
        with pytest.raises(FsError) as ei:
            fresh.read(BlockRef(7, 2), MAGIC_BTREE)
    assert ei.value.errno == errno.EIO
    assert "meta block 7" in str(ei.value) and "crc" in str(ei.value)
    msgs = [r.getMessage() for r in caplog.records if r.name == "fs.block"]
    assert any(dev.path in m and "meta block 7" in m and "bad crc" in m for m in msgs), msgs
    # a corrupt block is not cached: a second read fails the same way
    with pytest.raises(FsError):
        fresh.read(BlockRef(7, 2), MAGIC_BTREE)


def test_stale_seq_and_blkno_raise_stale_block(dev):
    mb = MetaBlocks(dev, FSID)
    mb.write(9, 4, MAGIC_BTREE, block_image(2))
    with pytest.raises(StaleBlock):
        MetaBlocks(dev, FSID).read(BlockRef(9, 3), MAGIC_BTREE)
    # and from the cache of the writer: a cached block of another seq is re-read, not trusted
    with pytest.raises(StaleBlock):
        mb.read(BlockRef(9, 5), MAGIC_BTREE)
    # a block image copied to another blkno: header blkno mismatch
    raw = bytearray(dev.read(9 * META_BLOCK_SIZE, META_BLOCK_SIZE))
    dev.write(10 * META_BLOCK_SIZE, raw)
    with pytest.raises(StaleBlock):
        MetaBlocks(dev, FSID).read(BlockRef(10, 4), MAGIC_BTREE)


def test_wrong_fsid_magic_range_and_zero_block_are_eio(dev, caplog):
    other = MetaBlocks(dev, FSID + 1)
    other.write(3, 1, MAGIC_BTREE, block_image(3))
    mb = MetaBlocks(dev, FSID)
    mb.write(4, 1, MAGIC_EXTENT_LIST, block_image(4))
    cases = [
        (BlockRef(3, 1), MAGIC_BTREE, "fsid"),
        (BlockRef(4, 1), MAGIC_BTREE, "magic"),
        (BlockRef(6, 1), MAGIC_BTREE, "never written"),
        (BlockRef(64, 1), MAGIC_BTREE, "out of range"),
        (BlockRef(1, 1), MAGIC_BTREE, "out of range"),
    ]
    for ref, magic, why in cases:
        with caplog.at_level(logging.ERROR, logger="fs.block"):
            with pytest.raises(FsError) as ei:
                MetaBlocks(dev, FSID).read(ref, magic)
        assert ei.value.errno == errno.EIO
        assert why in str(ei.value), (ref, str(ei.value))
        assert f"meta block {ref.blkno}" in caplog.records[-1].getMessage()
    # the cached copy is checked for magic too
    with pytest.raises(FsError):
        mb.read(BlockRef(4, 1), MAGIC_BTREE)


def test_device_read_error_is_eio():
    dev = MemDevice(64 * META_BLOCK_SIZE)
    mb = MetaBlocks(dev, FSID)
    mb.write(5, 1, MAGIC_BTREE, block_image(5))
    dev.fail_reads.add(5 * META_BLOCK_SIZE + 8192)
    with pytest.raises(FsError) as ei:
        MetaBlocks(dev, FSID).read(BlockRef(5, 1), MAGIC_BTREE)
    assert ei.value.errno == errno.EIO


def test_write_guards():
    dev = MemDevice(64 * META_BLOCK_SIZE)
    mb = MetaBlocks(dev, FSID)
    with pytest.raises(ValueError):
        mb.write(1, 1, MAGIC_BTREE, block_image(0))  # super/quorum territory
    with pytest.raises(ValueError):
        mb.write(5, 1, MAGIC_BTREE, bytearray(100))
    with pytest.raises(FsError):
        mb.write(64, 1, MAGIC_BTREE, block_image(0))


def test_cache_hits_and_bound():
    dev = MemDevice(64 * META_BLOCK_SIZE)
    writer = MetaBlocks(dev, FSID, cache_blocks=0)
    for b in range(2, 40):
        writer.write(b, 1, MAGIC_BTREE, block_image(b))
    mb = MetaBlocks(dev, FSID, cache_blocks=8)
    mb.read(BlockRef(2, 1), MAGIC_BTREE)
    before = dev.nr_reads
    for _ in range(5):
        mb.read(BlockRef(2, 1), MAGIC_BTREE)
    assert dev.nr_reads == before and mb.hits == 5
    for b in range(2, 40):
        mb.read(BlockRef(b, 1), MAGIC_BTREE)
    assert len(mb._cache) == 8
    # LRU: the most recent blocks are cached, the first ones are gone
    before = dev.nr_reads
    mb.read(BlockRef(39, 1), MAGIC_BTREE)
    assert dev.nr_reads == before
    mb.read(BlockRef(2, 1), MAGIC_BTREE)
    assert dev.nr_reads == before + 1
    mb.forget(2)
    mb.read(BlockRef(2, 1), MAGIC_BTREE)
    assert dev.nr_reads == before + 2


def test_rewritten_block_is_reread_for_the_new_seq():
    dev = MemDevice(64 * META_BLOCK_SIZE)
    reader = MetaBlocks(dev, FSID)
    writer = MetaBlocks(dev.reopen(), FSID)
    writer.write(5, 1, MAGIC_BTREE, block_image(1))
    assert reader.read(BlockRef(5, 1), MAGIC_BTREE)[100] == 1
    writer.write(5, 2, MAGIC_BTREE, block_image(2))  # another mount reused the block
    assert reader.read(BlockRef(5, 2), MAGIC_BTREE)[100] == 2
    with pytest.raises(StaleBlock):
        reader.read(BlockRef(5, 1), MAGIC_BTREE)


def test_read_parsed_caches_the_parse():
    dev = MemDevice(64 * META_BLOCK_SIZE)
    mb = MetaBlocks(dev, FSID)
    mb.write(5, 1, MAGIC_BTREE, block_image(1))
    calls = []

    def parse(blkno, buf):
        calls.append(blkno)
        return ("parsed", buf[100])

    assert mb.read_parsed(BlockRef(5, 1), MAGIC_BTREE, parse) == ("parsed", 1)
    assert mb.read_parsed(BlockRef(5, 1), MAGIC_BTREE, parse) == ("parsed", 1)
    assert calls == [5]
    with pytest.raises(StaleBlock):
        mb.read_parsed(BlockRef(5, 2), MAGIC_BTREE, parse)
    mb.write(5, 2, MAGIC_BTREE, block_image(9))
    assert mb.read_parsed(BlockRef(5, 2), MAGIC_BTREE, parse) == ("parsed", 9)


# --------------------------------------------------------------------------- super / quorum


def test_super_roundtrip_on_file_and_memdev(tmp_path):
    fsid, uuid = fmt.new_fsid_uuid()
    sb = Super(fsid=fsid, uuid=uuid, seq=5, flags=fmt.SUPER_FLAG_META, total_meta_blocks=64)
    for dev in (Device(image(tmp_path)), MemDevice(1 << 20)):
        write_super(dev, sb)
        dev.flush()
        assert read_super(dev) == sb
        dev.close()


def test_read_super_reasons(tmp_path):
    dev = MemDevice(1 << 20, path="blank")
    with pytest.raises(FsError, match="no scoutfs super block") as ei:
        read_super(dev)
    assert ei.value.errno == errno.EINVAL
    dev.write(fmt.SUPER_BLKNO * 4096, b"\x11" * 4096)
    with pytest.raises(FsError, match="magic"):
        read_super(dev)
    fsid, uuid = fmt.new_fsid_uuid()
    write_super(dev, Super(fsid=fsid, uuid=uuid))
    dev.poke(fmt.SUPER_BLKNO * 4096 + 500, b"\x01")
    with pytest.raises(FsError, match="crc") as ei:
        read_super(dev)
    assert ei.value.errno == errno.EINVAL
    write_super(dev, Super(fsid=fsid, uuid=uuid, fmt_vers=9))
    with pytest.raises(FsError, match="format version 9"):
        read_super(dev)
    with pytest.raises(FsError, match="too small") as ei:
        read_super(MemDevice(64 * 1024))
    assert ei.value.errno == errno.EINVAL
    assert not block.super_magic_present(MemDevice(4096))


def test_quorum_blocks():
    dev = MemDevice(1 << 20)
    assert read_quorum_block(dev, 0) == QuorumBlock()  # never written
    qb = QuorumBlock(write_nr=4)
    qb.events[fmt.QUORUM_EVENT_TERM] = fmt.QuorumEvent(4, 99, 3, (1, 2))
    for slot in range(fmt.QUORUM_MAX_SLOTS):
        write_quorum_block(dev, slot, QuorumBlock(write_nr=slot), FSID)
    write_quorum_block(dev, 6, qb, FSID)
    assert read_quorum_block(dev, 6, FSID) == qb
    assert read_quorum_block(dev, 14).write_nr == 14
    assert read_quorum_block(dev, 5).write_nr == 5  # neighbours untouched
    with pytest.raises(FsError) as ei:
        read_quorum_block(dev, 6, FSID + 1)
    assert ei.value.errno == errno.EIO
    dev.poke((fmt.QUORUM_BLKNO + 6) * 4096 + 60, b"\xff")
    with pytest.raises(FsError, match="crc"):
        read_quorum_block(dev, 6)
    with pytest.raises(ValueError):
        read_quorum_block(dev, 15)
    with pytest.raises(ValueError):
        write_quorum_block(dev, -1, qb, FSID)


# --------------------------------------------------------------------------- MemDevice


def test_memdev_crash_drops_unflushed_writes():
    dev = MemDevice(1 << 20)
    dev.write(0, b"a" * 8192)
    dev.flush()
    dev.write(4096, b"b" * 8192)
    assert dev.read(0, 12288) == b"a" * 4096 + b"b" * 8192
    assert dev.unflushed() == 2
    other = dev.reopen()
    dev.crash()
    assert other.read(0, 12288) == b"a" * 8192 + bytes(4096)
    assert dev.unflushed() == 0


def test_memdev_crash_with_rng_keeps_some_pages():
    survived = set()
    for seed in range(20):
        dev = MemDevice(1 << 20)
        dev.write(0, b"c" * (16 * 4096))
        dev.crash(random.Random(seed))
        pages = [dev.read(i * 4096, 4096) for i in range(16)]
        assert all(p in (b"c" * 4096, bytes(4096)) for p in pages)
        survived.add(sum(p == b"c" * 4096 for p in pages))
    assert len(survived) > 3  # genuinely partial, not all-or-nothing


def test_memdev_interface_matches_device():
    public = {n for n in dir(Device) if not n.startswith("_")}
    assert public - {"fd", "is_blockdev"} <= set(dir(MemDevice(4096)))
    with pytest.raises(ValueError):
        MemDevice(1000)
    dev = MemDevice(8192)
    with pytest.raises(ValueError):
        dev.read(1, 4096)
    with pytest.raises(FsError):
        dev.write(8192, bytes(4096))
    ro = dev.reopen(readonly=True)
    with pytest.raises(FsError):
        ro.write(0, bytes(4096))
