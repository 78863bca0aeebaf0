"""File contents (fs/data.py) against the in-memory fakes: extents, read/write/truncate."""

from __future__ import annotations

import errno

import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fs import data
from fs import format as fmt
from fs import inode as inode_mod
from fs.errors import FsError
from fs.testing.fakes import FakeDataAlloc, make_context

BS = 4096
INO = 1025
CTX = inode_mod.Ctx(uid=0, gid=0, pid=1)


def run(fn, *args):
    return trio.run(fn, *args)


async def make_file(mctx, ino: int = INO, mode: int = 0o100644) -> None:
    async with mctx.locks.inodes([ino], 2) as locks, inode_mod.index_lock(mctx) as il, \
            mctx.trans.hold():
        inode = inode_mod.new_inode(mctx, ino, mode, 0, 0, (5, 0))
        inode_mod.store_inode(mctx, inode, locks[ino], il)


def raw_inode(mctx, ino: int = INO) -> fmt.Inode:
    return fmt.unpack_inode(ino, mctx.items.data[fmt.inode_key(ino)])


def extent_items(mctx, ino: int = INO) -> list[data.Extent]:
    return [data.extent_from_item(k, v) for k, v in mctx.items.data.items()
            if k[:3] == (fmt.ZONE_FS, ino, fmt.FS_DATA_EXTENT)]


def check_invariants(mctx, ino: int = INO, *, prealloc_past_eof: bool = False) -> None:
    """Extents sorted and disjoint, inside the size, counts right, blocks accounted for.

    prealloc_past_eof: unwritten extents (fallocate KEEP_SIZE) may lie past EOF."""
    inode = raw_inode(mctx, ino)
    exts = extent_items(mctx, ino)
    prev_last = -1
    nblk = (inode.size + BS - 1) // BS
    for e in exts:
        assert e.start > prev_last
        assert 0 < e.length <= data.EXTENT_MAX_BLOCKS
        prev_last = e.last
        if not (prealloc_past_eof and e.flags == fmt.EXTENT_FLAG_UNWRITTEN):
            assert e.last < nblk, "extent past EOF"
    online = sum(e.length for e in exts if e.online)
    assert inode.online_blocks == online
    assert inode.offline_blocks == sum(e.length for e in exts if e.offline)
    # every allocated block is mapped or was freed, never both
    a = mctx.trans.data_alloc
    used = set()
    for e in exts:
        if e.blkno:
            blocks = set(range(e.blkno, e.blkno + e.length))
            assert not used & blocks
            used |= blocks
    freed = set()
    for s, n in a.freed:
        blocks = set(range(s, s + n))
        assert not freed & blocks, "double free"
        freed |= blocks
    assert not used & freed
    assert used | freed == set(range(fmt.DATA_DEV_START_BLKNO, a.next))
    # the bytes of the last block past EOF are zero on disk
    if inode.size % BS:
        tb = inode.size // BS
        for e in exts:
            if e.start <= tb <= e.last and e.readable:
                blk = mctx.data_dev.read((e.blkno + tb - e.start) * BS, BS)
                assert blk[inode.size % BS:] == bytes(BS - inode.size % BS)


def pattern(n: int, seed: int = 1) -> bytes:
    return bytes((i * 7 + seed) & 0xFF for i in range(n))


# --------------------------------------------------------------------------- basics


def test_write_read_roundtrip_and_eof():
    async def main():
        mctx = make_context()
        await make_file(mctx)
        d = pattern(10000)
        assert await data.write(mctx, INO, 0, d, CTX) == 10000
        assert await data.read(mctx, INO, 0, 20000) == d
        assert await data.read(mctx, INO, 5000, 100) == d[5000:5100]
        assert await data.read(mctx, INO, 10000, 10) == b""
        assert await data.read(mctx, INO, 99999, 10) == b""
        assert await data.read(mctx, INO, 9990, 100) == d[9990:]
        inode = raw_inode(mctx)
        assert inode.size == 10000
        assert inode.online_blocks == 3
        assert data.stat_blocks(inode) == 24
        check_invariants(mctx)

    run(main)


def test_sparse_file_and_holes_read_zero():
    async def main():
        mctx = make_context()
        await make_file(mctx)
        await data.write(mctx, INO, (1 << 20) + 100, b"abc", CTX)
        await data.write(mctx, INO, 10, b"xyz", CTX)
        got = await data.read(mctx, INO, 0, 2 << 20)
        want = bytearray((1 << 20) + 103)
        want[10:13] = b"xyz"
        want[(1 << 20) + 100:] = b"abc"
        assert got == bytes(want)
        assert raw_inode(mctx).online_blocks == 2
        assert [(e.start, e.length) for e in extent_items(mctx)] == [(0, 1), (256, 1)]
        check_invariants(mctx)

    run(main)


def test_sequential_writes_make_one_extent():
    async def main():
        mctx = make_context()
        await make_file(mctx)
        chunk = pattern(1 << 20)
        for i in range(8):
            await data.write(mctx, INO, i << 20, chunk, CTX)
        exts = await data.extents(mctx, INO)
        assert len(exts) == 1
        assert exts[0][0] == 0 and exts[0][2] == 2048 and exts[0][3] == 0
        assert await data.read(mctx, INO, 3 << 20, 1 << 20) == chunk
        # small appends merge too
        mctx2 = make_context()
        await make_file(mctx2)
        for i in range(20):
            await data.write(mctx2, INO, i * 1000, pattern(1000, i), CTX)
        assert len(extent_items(mctx2)) == 1
        check_invariants(mctx2)

    run(main)


def test_extent_length_is_capped(monkeypatch):
    monkeypatch.setattr(data, "EXTENT_MAX_BLOCKS", 16)

    async def main():
        mctx = make_context()
        await make_file(mctx)
        d = pattern(50 * BS + 7)
        await data.write(mctx, INO, 0, d, CTX)
        exts = extent_items(mctx)
        assert [e.length for e in exts] == [16, 16, 16, 3]
        assert await data.read(mctx, INO, 0, len(d)) == d
        check_invariants(mctx)

    run(main)


def test_overwrite_in_place_allocates_nothing():
    async def main():
        mctx = make_context()
        await make_file(mctx)
        await data.write(mctx, INO, 0, pattern(5 * BS), CTX)
        before = extent_items(mctx)
        nxt = mctx.trans.data_alloc.next
        await data.write(mctx, INO, 100, b"Q" * (3 * BS), CTX)
        assert mctx.trans.data_alloc.next == nxt
        assert extent_items(mctx) == before
        want = bytearray(pattern(5 * BS))
        want[100:100 + 3 * BS] = b"Q" * (3 * BS)
        assert await data.read(mctx, INO, 0, 5 * BS) == bytes(want)

    run(main)


def test_partial_block_read_modify_write():
    async def main():
        mctx = make_context()
        await make_file(mctx)
        model = bytearray()
        for off, n in [(0, 10), (5, 3), (4090, 12), (4095, 1), (8191, 2), (3, 4096 * 2 + 5)]:
            d = pattern(n, off)
            await data.write(mctx, INO, off, d, CTX)
            if len(model) < off + n:
                model.extend(bytes(off + n - len(model)))
            model[off:off + n] = d
            assert await data.read(mctx, INO, 0, 1 << 16) == bytes(model)
        check_invariants(mctx)

    run(main)


def test_zero_length_write_changes_nothing():
    async def main():
        mctx = make_context()
        await make_file(mctx)
        before = dict(mctx.items.data)
        assert await data.write(mctx, INO, 4096, b"", CTX) == 0
        assert dict(mctx.items.data) == before

    run(main)


def test_write_errors():
    async def main():
        mctx = make_context()
        await make_file(mctx)
        with pytest.raises(FsError) as ei:
            await data.write(mctx, INO, fmt.MAX_FILE_SIZE, b"x", CTX)
        assert ei.value.errno == errno.EFBIG
        with pytest.raises(FsError) as ei:
            await data.write(mctx, fmt.ROOT_INO, 0, b"x", CTX)
        assert ei.value.errno == errno.EISDIR
        with pytest.raises(FsError) as ei:
            await data.read(mctx, fmt.ROOT_INO, 0, 1)
        assert ei.value.errno == errno.EISDIR
        with pytest.raises(FsError) as ei:
            await data.write(mctx, 5000, 0, b"x", CTX)
        assert ei.value.errno == errno.ENOENT

    run(main)


def test_enospc_frees_partial_allocation():
    async def main():
        mctx = make_context()
        await make_file(mctx)
        mctx.trans.data_alloc = FakeDataAlloc(fmt.DATA_DEV_START_BLKNO, 4)
        before = dict(mctx.items.data)
        with pytest.raises(FsError) as ei:
            await data.write(mctx, INO, 0, pattern(8 * BS), CTX)
        assert ei.value.errno == errno.ENOSPC
        assert dict(mctx.items.data) == before
        assert mctx.trans.data_alloc.freed == [(fmt.DATA_DEV_START_BLKNO, 4)]

    run(main)


# --------------------------------------------------------------------------- versioning


def test_data_version_seq_and_times():
    async def main():
        mctx = make_context()
        t = [100]
        mctx.now = lambda: (t[0], 0)
        await make_file(mctx)
        i0 = raw_inode(mctx)
        assert i0.data_version == 0
        await data.write(mctx, INO, 0, b"hello", CTX)
        i1 = raw_inode(mctx)
        assert i1.data_version == 1
        assert i1.data_seq == mctx.trans.seq == i1.meta_seq
        assert i1.mtime == i1.ctime == (100, 0)
        await mctx.trans.sync()
        t[0] = 200
        await data.write(mctx, INO, 1, b"E", CTX)
        i2 = raw_inode(mctx)
        assert i2.data_version == 2 and i2.data_seq == mctx.trans.seq == i1.data_seq + 1
        # DATA_SEQ index item moved with data_seq
        idx = [k for k in mctx.items.data
               if k[0] == fmt.ZONE_INODE_INDEX and k[2] == fmt.INODE_INDEX_DATA_SEQ]
        assert idx == [fmt.seq_index_key(fmt.INODE_INDEX_DATA_SEQ, i2.data_seq, INO)]
        # truncate to the same size: times only
        await mctx.trans.sync()
        t[0] = 300
        await data.truncate(mctx, INO, 5, CTX)
        i3 = raw_inode(mctx)
        assert i3.data_version == 2 and i3.data_seq == i2.data_seq
        assert i3.mtime == i3.ctime == (300, 0)
        assert i3.meta_seq == mctx.trans.seq
        # size changes bump data_version and data_seq
        await data.truncate(mctx, INO, 3, CTX)
        i4 = raw_inode(mctx)
        assert i4.data_version == 3 and i4.data_seq == mctx.trans.seq and i4.size == 3
        await data.truncate(mctx, INO, 1 << 30, CTX)
        i5 = raw_inode(mctx)
        assert i5.data_version == 4 and i5.size == 1 << 30 and i5.online_blocks == 1
        assert await data.read(mctx, INO, 0, 10) == b"hEl" + bytes(7)

    run(main)


# --------------------------------------------------------------------------- truncate


def test_truncate_frees_blocks_and_zeroes_tail():
    async def main():
        mctx = make_context()
        await make_file(mctx)
        await data.write(mctx, INO, 0, pattern(10 * BS), CTX)
        base = extent_items(mctx)[0].blkno
        await data.truncate(mctx, INO, 5000, CTX)
        assert mctx.trans.data_alloc.freed == [(base + 2, 8)]
        assert [(e.start, e.length, e.blkno) for e in extent_items(mctx)] == [(0, 2, base)]
        assert raw_inode(mctx).online_blocks == 2
        blk = mctx.data_dev.read((base + 1) * BS, BS)
        assert blk[5000 - BS:] == bytes(2 * BS - 5000)
        await data.truncate(mctx, INO, 30000, CTX)
        got = await data.read(mctx, INO, 0, 1 << 20)
        assert got == pattern(5000) + bytes(25000)
        await data.truncate(mctx, INO, 0, CTX)
        assert extent_items(mctx) == []
        inode = raw_inode(mctx)
        assert inode.online_blocks == 0 and inode.size == 0
        check_invariants(mctx)

    run(main)


def test_truncate_in_batches(monkeypatch):
    monkeypatch.setattr(data, "TRUNCATE_BATCH", 3)
    monkeypatch.setattr(data, "EXTENT_MAX_BLOCKS", 2)

    async def main():
        mctx = make_context()
        await make_file(mctx)
        await data.write(mctx, INO, 0, pattern(21 * BS), CTX)
        assert len(extent_items(mctx)) == 11
        await data.truncate(mctx, INO, 3 * BS + 1, CTX)
        assert [(e.start, e.length) for e in extent_items(mctx)] == [(0, 2), (2, 2)]
        inode = raw_inode(mctx)
        assert inode.flags & fmt.INODE_FLAG_TRUNCATE == 0
        assert inode.online_blocks == 4
        assert sum(n for _, n in mctx.trans.data_alloc.freed) == 17
        check_invariants(mctx)

    run(main)


def test_free_extents():
    async def main():
        mctx = make_context()
        await make_file(mctx)
        await data.write(mctx, INO, 0, pattern(3 * BS), CTX)
        await data.write(mctx, INO, 10 * BS, b"x", CTX)
        async with mctx.locks.inodes([INO], 2) as locks, mctx.trans.hold():
            inode = raw_inode(mctx)
            await data.free_extents(mctx, inode, locks[INO])
        assert extent_items(mctx) == []
        assert inode.online_blocks == 0
        assert sorted(mctx.trans.data_alloc.freed) == [(64, 3), (67, 1)]

    run(main)


# --------------------------------------------------------------------------- flags


def put_extent(mctx, start, length, blkno, flags, ino=INO):
    key = fmt.extent_key(ino, start + length - 1, length)
    mctx.items.data[key] = fmt.pack_extent_val(blkno, flags)


def test_offline_reads_wait_and_unwritten_reads_zero():
    async def main():
        mctx = make_context()
        await make_file(mctx)
        await data.truncate(mctx, INO, 4 * BS, CTX)
        mctx.data_dev.write(1000 * BS, b"\xff" * (2 * BS))
        put_extent(mctx, 0, 2, 1000, fmt.EXTENT_FLAG_UNWRITTEN)
        put_extent(mctx, 3, 1, 0, fmt.EXTENT_FLAG_OFFLINE)
        assert await data.read(mctx, INO, 0, 3 * BS) == bytes(3 * BS)
        with trio.move_on_after(0.2) as scope:  # an offline block: the read waits
            await data.read(mctx, INO, 0, 4 * BS)
        assert scope.cancelled_caught
        assert mctx.waiters.by_ino == {}  # a cancelled waiter leaves nothing behind

    run(main)


def test_write_into_unwritten_extent_splits_it():
    async def main():
        mctx = make_context()
        await make_file(mctx)
        mctx.data_dev.write(1000 * BS, b"\xff" * (4 * BS))
        put_extent(mctx, 0, 4, 1000, fmt.EXTENT_FLAG_UNWRITTEN)
        await data.write(mctx, INO, BS + 10, b"abc", CTX)
        exts = [(e.start, e.length, e.blkno, e.flags) for e in extent_items(mctx)]
        assert exts == [(0, 1, 1000, 2), (1, 1, 1001, 0), (2, 2, 1002, 2)]
        assert raw_inode(mctx).online_blocks == 1
        assert await data.read(mctx, INO, 0, 3 * BS) == bytes(BS + 10) + b"abc"
        assert mctx.data_dev.read(1001 * BS, BS) == bytes(10) + b"abc" + bytes(BS - 13)

    run(main)


# --------------------------------------------------------------------------- concurrency


def test_concurrent_large_writes_and_reads():
    async def main():
        mctx = make_context()
        await make_file(mctx)
        chunks = [pattern(256 * 1024, i) for i in range(8)]
        results = {}

        async def writer(i):
            await data.write(mctx, INO, i * len(chunks[0]), chunks[i], CTX)

        async def reader(i):
            results[i] = await data.read(mctx, INO, 0, 8 * 256 * 1024)

        async with trio.open_nursery() as n:
            for i in range(8):
                n.start_soon(writer, i)
                n.start_soon(reader, i)
        assert await data.read(mctx, INO, 0, 1 << 22) == b"".join(chunks)
        for r in results.values():  # each read saw whole writes only
            for i in range(len(r) // len(chunks[0])):
                seg = r[i * len(chunks[0]):(i + 1) * len(chunks[0])]
                assert seg in (chunks[i], bytes(len(seg)))
        assert not getattr(mctx, "_data_rwsems", {})
        check_invariants(mctx)

    run(main)


# --------------------------------------------------------------------------- model


OFFSETS = st.one_of(st.integers(0, 12 * BS), st.integers(0, 3).map(lambda k: k * (1 << 20) + 37),
                    st.sampled_from([BS - 1, BS, BS + 1, 2 * BS, 5 * BS - 3]))
OPS = st.lists(st.one_of(
    st.tuples(st.just("w"), OFFSETS, st.integers(1, 3 * BS + 5), st.integers(0, 255)),
    st.tuples(st.just("t"), OFFSETS, st.just(0), st.just(0)),
    st.tuples(st.just("r"), OFFSETS, st.integers(0, 5 * BS), st.just(0)),
), min_size=1, max_size=12)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(OPS)
def test_model(ops):
    async def main():
        mctx = make_context()
        await make_file(mctx)
        model = bytearray()
        dv = 0
        for op, off, n, seed in ops:
            if op == "w":
                d = bytes((seed + i) & 0xFF for i in range(n))
                await data.write(mctx, INO, off, d, CTX)
                if len(model) < off + n:
                    model.extend(bytes(off + n - len(model)))
                model[off:off + n] = d
                dv += 1
            elif op == "t":
                if off != len(model):
                    dv += 1
                await data.truncate(mctx, INO, off, CTX)
                if off < len(model):
                    del model[off:]
                else:
                    model.extend(bytes(off - len(model)))
            else:
                assert await data.read(mctx, INO, off, n) == bytes(model[off:off + n])
            inode = raw_inode(mctx)
            assert inode.size == len(model)
            assert inode.data_version == dv
            check_invariants(mctx)
        assert await data.read(mctx, INO, 0, len(model) + 10) == bytes(model)

    run(main)


def test_inode_rwsem_exclusion_and_cancel():
    async def main():
        mctx = make_context()
        log = []

        async def holder(ev):
            async with data.inode_rwsem(mctx, 7, exclusive=False):
                log.append("r1")
                await ev.wait()
            log.append("r1 done")

        ev = trio.Event()
        async with trio.open_nursery() as n:
            n.start_soon(holder, ev)
            await trio.testing.wait_all_tasks_blocked()
            with trio.move_on_after(0.05):  # a writer waits behind the reader, then gives up
                async with data.inode_rwsem(mctx, 7, exclusive=True):
                    log.append("w")
            async def reader2():
                async with data.inode_rwsem(mctx, 7, exclusive=False):
                    log.append("r2")
            n.start_soon(reader2)
            await trio.testing.wait_all_tasks_blocked()
            assert log == ["r1", "r2"]
            ev.set()
        async with data.inode_rwsem(mctx, 7, exclusive=True):
            log.append("w2")
        assert log == ["r1", "r2", "r1 done", "w2"]
        assert mctx._data_rwsems == {}

    run(main)
