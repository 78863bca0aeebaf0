"""fallocate, SEEK_DATA/SEEK_HOLE, fiemap (fs/data.py) and copy_file_range (fs/filesystem.py)
over the in-memory fakes, with a model test of writes, truncates and fallocates."""

from __future__ import annotations

import errno
import stat
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fs import data, fsck, xattr
from fs import format as fmt
from fs.errors import FsError
from fs.testing.fakes import FakeDataAlloc, errno_of, make_context
from tests.unit import test_trans
from tests.unit.test_data import (
    BS,
    CTX,
    INO,
    check_invariants,
    extent_items,
    make_file,
    pattern,
    put_extent,
    raw_inode,
    run,
)
from tests.unit.test_namespace import check_entries, check_seq_index
from tests.unit.test_namespace import setup as ns_setup

KEEP = data.FALLOC_FL_KEEP_SIZE
UNWR = fmt.EXTENT_FLAG_UNWRITTEN
F_LAST, F_UNKNOWN, F_UNWRITTEN = (data.FIEMAP_EXTENT_LAST, data.FIEMAP_EXTENT_UNKNOWN,
                                  data.FIEMAP_EXTENT_UNWRITTEN)
ROOT = fmt.ROOT_INO


def exts(mctx, ino=INO) -> list[tuple[int, int, int, int]]:
    return [(e.start, e.length, e.blkno, e.flags) for e in extent_items(mctx, ino)]


def set_inode(mctx, ino=INO, **fields) -> None:
    inode = raw_inode(mctx, ino)
    for k, v in fields.items():
        setattr(inode, k, v)
    mctx.items.data[fmt.inode_key(ino)] = fmt.pack_inode(inode)


def count_holds(mctx) -> list[int]:
    """Record the data_blocks of every transaction hold."""
    calls: list[int] = []
    orig = mctx.trans.hold

    def hold(data_blocks: int = 0):
        calls.append(data_blocks)
        return orig(data_blocks=data_blocks)

    mctx.trans.hold = hold
    return calls


def fsck_problems(mctx) -> list[str]:
    """fsck's item checks (step 4) over the fake's items.  The fake mkfs writes no seq index
    item for the root: one is added for it."""
    items = dict(mctx.items.data)
    root = fmt.unpack_inode(ROOT, items[fmt.inode_key(ROOT)])
    items.setdefault(fmt.seq_index_key(fmt.INODE_INDEX_META_SEQ, root.meta_seq, ROOT), b"")
    problems = fsck.Problems()
    fsck._check_items(items, problems)
    return list(problems)


# --------------------------------------------------------------------------- fallocate


def test_fallocate_allocates_unwritten_and_grows():
    async def main():
        mctx = make_context()
        t = [100]
        mctx.now = lambda: (t[0], 0)
        await make_file(mctx)
        t[0] = 200
        await data.fallocate(mctx, INO, 0, 0, 3 * BS, CTX)
        [(start, n, blkno, flags)] = exts(mctx)
        assert (start, n, flags) == (0, 3, UNWR)
        inode = raw_inode(mctx)
        assert inode.size == 3 * BS
        assert inode.online_blocks == 0 and inode.offline_blocks == 0
        assert data.stat_blocks(inode) == 0
        assert inode.data_version == 1 and inode.data_seq == mctx.trans.seq
        assert inode.mtime == inode.ctime == (200, 0)
        assert await data.read(mctx, INO, 0, 5 * BS) == bytes(3 * BS)
        # the golden "0: offset: 0 length: 12288 flags: .UL"
        assert await data.fiemap(mctx, INO, 0, 1 << 62) == [
            (0, blkno * BS, 3 * BS, F_UNWRITTEN | F_LAST)]
        # a partial range covers the blocks it touches; the size is the exact end
        await data.fallocate(mctx, INO, 0, 3 * BS + 100, 5000, CTX)
        assert raw_inode(mctx).size == 3 * BS + 5100
        assert [(s, n, f) for s, n, _, f in exts(mctx)] == [(0, 5, UNWR)]  # merged
        assert raw_inode(mctx).data_version == 2
        check_invariants(mctx)

    run(main)


def test_fallocate_keep_size_and_write_into_unwritten():
    async def main():
        mctx = make_context()
        t = [100]
        mctx.now = lambda: (t[0], 0)
        await make_file(mctx)
        t[0] = 200
        await data.fallocate(mctx, INO, KEEP, 0, 4 * BS, CTX)
        inode = raw_inode(mctx)
        assert inode.size == 0 and inode.mtime == (5, 0) and inode.ctime == (200, 0)
        assert inode.data_version == 1
        assert [(s, n, f) for s, n, _, f in exts(mctx)] == [(0, 4, UNWR)]
        assert await data.read(mctx, INO, 0, BS) == b""
        check_invariants(mctx, prealloc_past_eof=True)
        base = exts(mctx)[0][2]
        mctx.data_dev.write((base + 1) * BS, b"\xff" * BS)  # stale bytes must not show
        # a write converts only the blocks it touches, zeroing around the data
        nxt = mctx.trans.data_alloc.next
        await data.write(mctx, INO, BS + 5, b"hello", CTX)
        assert mctx.trans.data_alloc.next == nxt  # written in place
        assert exts(mctx) == [(0, 1, base, UNWR), (1, 1, base + 1, 0), (2, 2, base + 2, UNWR)]
        inode = raw_inode(mctx)
        assert inode.size == BS + 10 and inode.online_blocks == 1
        assert mctx.data_dev.read((base + 1) * BS, BS) == bytes(5) + b"hello" + bytes(BS - 10)
        assert await data.read(mctx, INO, 0, 4 * BS) == bytes(BS + 5) + b"hello"
        # a write over a whole unwritten extent and across its end
        await data.write(mctx, INO, 2 * BS, pattern(2 * BS + 10), CTX)
        # (block 4 is new and happens to follow block 3 on the device: one extent)
        assert exts(mctx) == [(0, 1, base, UNWR), (1, 4, base + 1, 0)]
        assert raw_inode(mctx).online_blocks == 4
        assert await data.read(mctx, INO, 2 * BS, 4 * BS) == pattern(2 * BS + 10)
        check_invariants(mctx)

    run(main)


def test_fallocate_keeps_mapped_blocks_and_data():
    async def main():
        mctx = make_context()
        await make_file(mctx)
        await data.write(mctx, INO, BS, pattern(2 * BS), CTX)
        before = exts(mctx)
        nxt = mctx.trans.data_alloc.next
        await data.fallocate(mctx, INO, 0, 0, 5 * BS, CTX)
        assert mctx.trans.data_alloc.next == nxt + 3  # blocks 0, 3 and 4
        got = exts(mctx)
        assert before[0] in got
        assert [(s, n, f) for s, n, _, f in got] == [(0, 1, UNWR), (1, 2, 0), (3, 2, UNWR)]
        assert raw_inode(mctx).online_blocks == 2
        assert await data.read(mctx, INO, 0, 5 * BS) == bytes(BS) + pattern(2 * BS) + bytes(2 * BS)
        # nothing left to allocate and no growth: ctime only, data_version unchanged
        dv = raw_inode(mctx).data_version
        await data.fallocate(mctx, INO, KEEP, 0, 5 * BS, CTX)
        await data.fallocate(mctx, INO, 0, BS, BS, CTX)
        assert raw_inode(mctx).data_version == dv and exts(mctx) == got
        check_invariants(mctx)

    run(main)


def test_fallocate_errors():
    async def main():
        mctx = make_context()
        await make_file(mctx)
        await make_file(mctx, INO + 1, stat.S_IFIFO | 0o644)
        for mode in (0x02, 0x03, 0x10, 0x20):  # punch hole, zero range, ...
            assert await errno_of(data.fallocate(mctx, INO, mode, 0, BS, CTX)) \
                == errno.EOPNOTSUPP
        assert await errno_of(data.fallocate(mctx, INO, 0, -1, BS, CTX)) == errno.EINVAL
        assert await errno_of(data.fallocate(mctx, INO, 0, 0, 0, CTX)) == errno.EINVAL
        assert await errno_of(data.fallocate(mctx, INO, 0, 0, -5, CTX)) == errno.EINVAL
        assert await errno_of(data.fallocate(mctx, INO, 0, fmt.MAX_FILE_SIZE, 1, CTX)) \
            == errno.EFBIG
        assert await errno_of(data.fallocate(mctx, ROOT, 0, 0, BS, CTX)) == errno.EISDIR
        assert await errno_of(data.fallocate(mctx, INO + 1, 0, 0, BS, CTX)) == errno.ENODEV
        assert await errno_of(data.fallocate(mctx, 5000, 0, 0, BS, CTX)) == errno.ENOENT
        assert exts(mctx) == [] and raw_inode(mctx).data_version == 0
        set_inode(mctx, flags=fmt.INODE_FLAG_RETENTION)
        assert await errno_of(data.fallocate(mctx, INO, 0, 0, BS, CTX)) == errno.EPERM
        set_inode(mctx, flags=0)
        # offline blocks in the range wait (data-wait-err ends it here); outside, not
        await data.truncate(mctx, INO, 8 * BS, CTX)
        put_extent(mctx, 4, 2, 0, fmt.EXTENT_FLAG_OFFLINE)
        set_inode(mctx, offline_blocks=2)
        res = []

        async def falloc():
            res.append(await errno_of(data.fallocate(mctx, INO, 0, 3 * BS, 2 * BS, CTX)))

        async with trio.open_nursery() as n:
            n.start_soon(falloc)
            with trio.fail_after(5):
                while not getattr(mctx.waiters, "by_ino", None):
                    await trio.testing.wait_all_tasks_blocked()
            assert mctx.waiters.waiting(0, 0, 5) == [(INO, 4, data.OP_WRITE)]
            assert mctx.waiters.set_err(INO, 0, 10, data.OP_WRITE, errno.EIO) == 1
        assert res == [errno.EIO]
        await data.fallocate(mctx, INO, 0, 0, 4 * BS, CTX)
        await data.fallocate(mctx, INO, 0, 6 * BS, 2 * BS, CTX)
        assert [(s, n, f) for s, n, _, f in exts(mctx)] == [
            (0, 4, UNWR), (4, 2, fmt.EXTENT_FLAG_OFFLINE), (6, 2, UNWR)]
        check_invariants(mctx)

    run(main)


def test_fallocate_in_batches(monkeypatch):
    monkeypatch.setattr(data, "FALLOCATE_BATCH", 4)
    monkeypatch.setattr(data, "EXTENT_MAX_BLOCKS", 3)

    async def main():
        mctx = make_context()
        await make_file(mctx)
        await data.write(mctx, INO, 4 * BS, pattern(4 * BS), CTX)  # batch 2 is all mapped
        holds = count_holds(mctx)
        await data.fallocate(mctx, INO, 0, 0, 10 * BS + 1, CTX)
        # batches [0,3] [4,7] [8,10]: the mapped one needs no hold
        assert holds == [4, 3]
        inode = raw_inode(mctx)
        assert inode.size == 10 * BS + 1 and inode.data_version == 2
        assert [(s, n, f) for s, n, _, f in exts(mctx)] == [
            (0, 3, UNWR), (3, 1, UNWR), (4, 3, 0), (7, 1, 0), (8, 3, UNWR)]
        assert inode.online_blocks == 4
        # fiemap joins what the extent cap split
        fm = await data.fiemap(mctx, INO, 0, 1 << 40)
        assert [(lg // BS, n // BS, f) for lg, _, n, f in fm] == [
            (0, 4, F_UNWRITTEN), (4, 4, 0), (8, 3, F_UNWRITTEN | F_LAST)]
        check_invariants(mctx)

    run(main)


def test_fallocate_one_gib():
    async def main():
        mctx = make_context()
        await make_file(mctx)
        holds = count_holds(mctx)
        await data.fallocate(mctx, INO, 0, 0, 1 << 30, CTX)
        nblk = (1 << 30) // BS
        assert len(holds) == nblk // data.FALLOCATE_BATCH
        assert max(holds) <= data.FALLOCATE_BATCH
        inode = raw_inode(mctx)
        assert inode.size == 1 << 30 and inode.online_blocks == 0
        assert inode.data_version == 1
        assert sum(e.length for e in extent_items(mctx)) == nblk
        start = extent_items(mctx)[0].blkno
        assert await data.fiemap(mctx, INO, 0, 1 << 30) == [
            (0, start * BS, 1 << 30, F_UNWRITTEN | F_LAST)]
        assert await data.read(mctx, INO, (1 << 30) - 10, 100) == bytes(10)
        check_invariants(mctx)

    run(main)


def test_fallocate_enospc_keeps_what_it_allocated():
    async def main():
        mctx = make_context()
        await make_file(mctx)
        mctx.trans.data_alloc = FakeDataAlloc(fmt.DATA_DEV_START_BLKNO, 5)
        assert await errno_of(data.fallocate(mctx, INO, 0, 100, 8 * BS, CTX)) == errno.ENOSPC
        inode = raw_inode(mctx)
        assert [(s, n, f) for s, n, _, f in exts(mctx)] == [(0, 5, UNWR)]
        assert inode.size == 5 * BS and inode.data_version == 1
        assert mctx.trans.data_alloc.freed == []
        # nothing at all left: ENOSPC, nothing changes
        assert await errno_of(data.fallocate(mctx, INO, KEEP, 0, 9 * BS, CTX)) == errno.ENOSPC
        assert raw_inode(mctx).size == 5 * BS and len(exts(mctx)) == 1
        check_invariants(mctx)

    run(main)


def test_fallocate_enospc_hold_falls_back_to_what_is_left():
    """A real Trans fails a hold asking for more blocks than the volume has left: the
    fallocate then holds for one block and allocates the rest of the volume."""
    async def main():
        mctx = make_context()
        await make_file(mctx)
        mctx.trans.data_alloc = FakeDataAlloc(fmt.DATA_DEV_START_BLKNO, 3)
        orig = mctx.trans.hold
        asked = []

        @asynccontextmanager
        async def strict_hold(data_blocks: int = 0):
            asked.append(data_blocks)
            a = mctx.trans.data_alloc
            if data_blocks > a.end - a.next:
                raise FsError(errno.ENOSPC)
            async with orig(data_blocks=data_blocks):
                yield

        mctx.trans.hold = strict_hold
        assert await errno_of(data.fallocate(mctx, INO, KEEP, 0, 8 * BS, CTX)) == errno.ENOSPC
        assert asked == [8, 1]
        assert [(s, n, f) for s, n, _, f in exts(mctx)] == [(0, 3, UNWR)]
        assert raw_inode(mctx).size == 0
        check_invariants(mctx, prealloc_past_eof=True)

    run(main)


def test_truncate_and_deletion_free_unwritten_extents():
    async def main():
        mctx = make_context()
        await make_file(mctx)
        await data.write(mctx, INO, 0, pattern(2 * BS), CTX)
        await data.fallocate(mctx, INO, KEEP, 0, 10 * BS, CTX)
        assert raw_inode(mctx).size == 2 * BS
        check_invariants(mctx, prealloc_past_eof=True)
        # truncate to the same size keeps the preallocation; shrinking frees past it
        await data.truncate(mctx, INO, 2 * BS, CTX)
        assert sum(n for _, n, _, _ in exts(mctx)) == 10
        await data.truncate(mctx, INO, BS + 1, CTX)
        assert [(s, n, f) for s, n, _, f in exts(mctx)] == [(0, 2, 0)]
        check_invariants(mctx)
        # growing exposes zeros, then a preallocation inside the size is freed by deletion
        await data.fallocate(mctx, INO, 0, 4 * BS, 2 * BS, CTX)
        assert await data.read(mctx, INO, BS, 5 * BS) == pattern(2 * BS)[BS:BS + 1] + bytes(
            5 * BS - 1)
        async with mctx.locks.inodes([INO], 2) as locks, mctx.trans.hold():
            inode = raw_inode(mctx)
            await data.free_extents(mctx, inode, locks[INO])
        assert extent_items(mctx) == []
        a = mctx.trans.data_alloc
        assert sum(n for _, n in a.freed) == a.next - fmt.DATA_DEV_START_BLKNO

    run(main)


# --------------------------------------------------------------------------- lseek


async def holey_file(mctx) -> int:
    """Blocks: 0 data, 1 hole, 2 unwritten, 3 data, 4 hole, 5 offline, 6 hole (partial);
    returns the size."""
    await make_file(mctx)
    await data.write(mctx, INO, 0, pattern(BS), CTX)
    await data.write(mctx, INO, 3 * BS, pattern(BS), CTX)
    await data.fallocate(mctx, INO, 0, 2 * BS, BS, CTX)
    size = 7 * BS - 100
    await data.truncate(mctx, INO, size, CTX)
    put_extent(mctx, 5, 1, 0, fmt.EXTENT_FLAG_OFFLINE)
    set_inode(mctx, offline_blocks=1)
    return size


@pytest.mark.parametrize("batch", [256, 1])
def test_seek_data_and_hole(monkeypatch, batch):
    monkeypatch.setattr(data, "LSEEK_BATCH", batch)
    D, H = data.SEEK_DATA, data.SEEK_HOLE

    async def main():
        mctx = make_context()
        size = await holey_file(mctx)
        want_data = {0: 0, 10: 10, BS - 1: BS - 1, BS: 3 * BS, 2 * BS + 5: 3 * BS,
                     3 * BS + 7: 3 * BS + 7, 4 * BS: 5 * BS, 5 * BS + 1: 5 * BS + 1}
        for off, want in want_data.items():
            assert await data.lseek(mctx, INO, off, D) == want, off
        want_hole = {0: BS, 5: BS, BS + 3: BS + 3, 2 * BS + 1: 2 * BS + 1, 3 * BS: 4 * BS,
                     5 * BS: 6 * BS, 6 * BS + 1: 6 * BS + 1, size - 1: size - 1}
        for off, want in want_hole.items():
            assert await data.lseek(mctx, INO, off, H) == want, off
        for off in (6 * BS, size - 1):
            assert await errno_of(data.lseek(mctx, INO, off, D)) == errno.ENXIO
        for off in (size, size + BS, -1):
            for whence in (D, H):
                assert await errno_of(data.lseek(mctx, INO, off, whence)) == errno.ENXIO
        for whence in (0, 1, 2, 5):
            assert await errno_of(data.lseek(mctx, INO, 0, whence)) == errno.EINVAL
        assert await errno_of(data.lseek(mctx, ROOT, 0, D)) == errno.EISDIR

        # all data: the only hole is EOF; an empty file has neither
        mctx2 = make_context()
        await make_file(mctx2)
        for whence in (D, H):
            assert await errno_of(data.lseek(mctx2, INO, 0, whence)) == errno.ENXIO
        await data.write(mctx2, INO, 0, pattern(3 * BS - 10), CTX)
        assert await data.lseek(mctx2, INO, 0, H) == 3 * BS - 10
        assert await data.lseek(mctx2, INO, 2 * BS, D) == 2 * BS
        # unwritten blocks past EOF change nothing
        await data.fallocate(mctx2, INO, KEEP, 0, 10 * BS, CTX)
        assert await data.lseek(mctx2, INO, BS, H) == 3 * BS - 10

    run(main)


# --------------------------------------------------------------------------- fiemap


def test_fiemap_flags_merging_and_last():
    async def main():
        mctx = make_context()
        await holey_file(mctx)
        base = extent_items(mctx)[0].blkno
        fm = await data.fiemap(mctx, INO, 0, 1 << 62)
        assert fm == [(0, base * BS, BS, 0),
                      (2 * BS, (base + 2) * BS, BS, F_UNWRITTEN),
                      (3 * BS, (base + 1) * BS, BS, 0),
                      (5 * BS, 0, BS, F_UNKNOWN | F_LAST)]
        # a range reports the extents overlapping it, whole; LAST only for the file's last
        assert await data.fiemap(mctx, INO, 100, 10) == [(0, base * BS, BS, 0)]
        assert await data.fiemap(mctx, INO, BS, BS) == []
        assert await data.fiemap(mctx, INO, 3 * BS + 1, 3 * BS) == [
            (3 * BS, (base + 1) * BS, BS, 0), (5 * BS, 0, BS, F_UNKNOWN | F_LAST)]
        assert await data.fiemap(mctx, INO, 100 * BS, BS) == []
        assert await errno_of(data.fiemap(mctx, INO, 0, 0)) == errno.EINVAL
        assert await errno_of(data.fiemap(mctx, INO, -1, 10)) == errno.EINVAL
        assert await errno_of(data.fiemap(mctx, 5000, 0, 10)) == errno.ENOENT
        assert await data.fiemap(mctx, ROOT, 0, 1 << 62) == []

        # the golden "0: offset: 0 0 length: 1 flags: O.L"; offline neighbours merge
        mctx2 = make_context()
        await make_file(mctx2)
        await data.truncate(mctx2, INO, 4 * BS, CTX)
        put_extent(mctx2, 0, 1, 0, fmt.EXTENT_FLAG_OFFLINE)
        assert await data.fiemap(mctx2, INO, 0, 1 << 62) == [(0, 0, BS, F_UNKNOWN | F_LAST)]
        put_extent(mctx2, 1, 2, 0, fmt.EXTENT_FLAG_OFFLINE)
        assert await data.fiemap(mctx2, INO, 0, 1 << 62) == [
            (0, 0, 3 * BS, F_UNKNOWN | F_LAST)]

    run(main)


def test_fiemap_physically_apart_and_paged(monkeypatch):
    monkeypatch.setattr(data, "LSEEK_BATCH", 2)
    monkeypatch.setattr(data, "EXTENT_MAX_BLOCKS", 2)

    async def main():
        mctx = make_context()
        await make_file(mctx, INO)
        await make_file(mctx, INO + 1)
        for i in range(3):  # interleaved: each file's blocks are physically apart
            await data.write(mctx, INO, i * BS, b"a", CTX)
            await data.write(mctx, INO + 1, i * BS, b"b", CTX)
        fm = await data.fiemap(mctx, INO, 0, 1 << 62)
        assert [(lg // BS, n // BS, f) for lg, _, n, f in fm] == [
            (0, 1, 0), (1, 1, 0), (2, 1, F_LAST)]
        # contiguous: seven storage extents of at most 2 blocks, one fiemap extent
        await make_file(mctx, INO + 2)
        await data.write(mctx, INO + 2, 0, pattern(13 * BS), CTX)
        assert len(extent_items(mctx, INO + 2)) == 7
        fm = await data.fiemap(mctx, INO + 2, 0, 1 << 62)
        assert [(lg, n, f) for lg, _, n, f in fm] == [(0, 13 * BS, F_LAST)]
        fm = await data.fiemap(mctx, INO + 2, 0, BS)  # more follows past the range: no LAST
        assert [(lg, n, f) for lg, _, n, f in fm] == [(0, 2 * BS, 0)]

    run(main)


# --------------------------------------------------------------------------- Filesystem


def real_fs():
    mctx, fs = ns_setup()
    fs.data, fs.xattr = data, xattr
    return mctx, fs


def test_filesystem_delegates():
    async def main():
        mctx, fs = real_fs()
        f = await fs.mknod(ROOT, b"f", 0o644, 0, CTX)
        await fs.fallocate(f.ino, 0, 0, 3 * BS, CTX)
        a = await fs.getattr(f.ino)
        assert a.size == 3 * BS and a.blocks == 0
        assert (await fs.stat_more(f.ino))["data_version"] == 1
        await fs.write(f.ino, 0, b"x", CTX)
        assert (await fs.getattr(f.ino)).blocks == 8
        assert await fs.lseek(f.ino, 0, data.SEEK_HOLE) == BS
        assert await errno_of(fs.lseek(f.ino, BS, data.SEEK_DATA)) == errno.ENXIO
        fm = await fs.fiemap(f.ino, 0, 1 << 62)
        assert [(lg, n, fl) for lg, _, n, fl in fm] == [(0, BS, 0), (BS, 2 * BS, F_UNWRITTEN | F_LAST)]
        assert fsck_problems(mctx) == []

    run(main)


def test_copy_file_range():
    async def main():
        mctx, fs = real_fs()
        a = await fs.mknod(ROOT, b"a", 0o644, 0, CTX)
        b = await fs.mknod(ROOT, b"b", 0o644, 0, CTX)
        src = pattern(3 * (1 << 20) + 5)
        await fs.write(a.ino, 0, src, CTX)
        sizes = []
        orig_read = fs.read

        async def read(ino, off, n):
            sizes.append(n)
            return await orig_read(ino, off, n)

        fs.read = read
        assert await fs.copy_file_range(a.ino, 0, b.ino, 10, 1 << 30, 0, CTX) == len(src)
        assert max(sizes) <= 1 << 20 and len(sizes) == 4
        assert await fs.read(b.ino, 0, 1 << 30) == bytes(10) + src
        # short at the source's EOF; nothing past it
        assert await fs.copy_file_range(a.ino, len(src) - 7, b.ino, 0, 100, 0, CTX) == 7
        assert await fs.read(b.ino, 0, 8) == src[-7:] + bytes(1)
        assert await fs.copy_file_range(a.ino, len(src), b.ino, 0, 100, 0, CTX) == 0
        assert await fs.copy_file_range(a.ino, 0, b.ino, 0, 0, 0, CTX) == 0
        # into a hole past the destination's EOF
        c = await fs.mknod(ROOT, b"c", 0o644, 0, CTX)
        assert await fs.copy_file_range(a.ino, 0, c.ino, 5 * BS, 10, 0, CTX) == 10
        assert await fs.read(c.ino, 0, 1 << 20) == bytes(5 * BS) + src[:10]
        # within one file, ranges apart; overlapping ones fail (after the EOF cut)
        assert await fs.copy_file_range(c.ino, 5 * BS, c.ino, 0, 10, 0, CTX) == 10
        assert await fs.read(c.ino, 0, 10) == src[:10]
        size_c = (await fs.getattr(c.ino)).size
        assert await errno_of(fs.copy_file_range(c.ino, 0, c.ino, 5, 10, 0, CTX)) \
            == errno.EINVAL
        assert await fs.copy_file_range(c.ino, size_c - 2, c.ino, 0, 1 << 20, 0, CTX) == 2
        # errors
        d = await fs.mkdir(ROOT, b"d", 0o755, CTX)
        p = await fs.mknod(ROOT, b"p", stat.S_IFIFO | 0o644, 0, CTX)
        cases = [((a.ino, 0, b.ino, 0, 10, 1), errno.EINVAL),
                 ((a.ino, -1, b.ino, 0, 10, 0), errno.EINVAL),
                 ((a.ino, 0, b.ino, -1, 10, 0), errno.EINVAL),
                 ((d.ino, 0, b.ino, 0, 10, 0), errno.EISDIR),
                 ((a.ino, 0, d.ino, 0, 10, 0), errno.EISDIR),
                 ((p.ino, 0, b.ino, 0, 10, 0), errno.EINVAL),
                 ((a.ino, 0, p.ino, 0, 10, 0), errno.EINVAL),
                 ((a.ino, 0, b.ino, fmt.MAX_FILE_SIZE, 10, 0), errno.EFBIG),
                 ((5000, 0, b.ino, 0, 10, 0), errno.ENOENT)]
        for args, want in cases:
            assert await errno_of(fs.copy_file_range(*args, CTX)) == want, args
        # a failure after some chunks returns what was copied; before any, the error
        calls = [0]
        orig_write = fs.write

        async def write(ino, off, buf, ctx=None):
            calls[0] += 1
            if calls[0] == 2:
                raise FsError(errno.ENOSPC)
            return await orig_write(ino, off, buf, ctx)

        fs.write = write
        assert await fs.copy_file_range(a.ino, 0, b.ino, 0, 3 << 20, 0, CTX) == 1 << 20
        calls[0] = 1  # the next write fails
        assert await errno_of(fs.copy_file_range(a.ino, 0, b.ino, 0, 3 << 20, 0, CTX)) \
            == errno.ENOSPC
        check_seq_index(mctx)
        assert fsck_problems(mctx) == []

    run(main)


# --------------------------------------------------------------------------- real stack

volume = test_trans.volume  # a 64 MiB data device on image files, mkfs'ed


def test_fallocate_fills_the_volume_then_enospc_on_the_real_stack(volume):
    """fallocate until ENOSPC (spec: "No space", not another error) allocates nearly the whole
    volume through the lent-space refills; truncate gives it back; tmpfile and link work;
    fsck is clean."""
    async def main():
        async with trio.open_nursery() as n:
            m = await test_trans.mounted(volume, n)
            a = await m.fs.mknod(ROOT, b"big", 0o100644, 0, CTX)
            with pytest.raises(FsError) as e:
                await m.fs.fallocate(a.ino, 0, 0, 1 << 30, CTX)
            assert e.value.errno == errno.ENOSPC
            attr = await m.fs.getattr(a.ino)
            assert attr.size >= 60 << 20 and attr.blocks == 0
            fm = await m.fs.fiemap(a.ino, 0, 1 << 62)
            assert sum(ln for _, _, ln, _ in fm) == attr.size
            assert all(fl & F_UNWRITTEN for *_, fl in fm) and fm[-1][3] & F_LAST
            await m.sync()
            assert (await m.fs.statfs()).f_bfree < 64
            assert await m.fs.read(a.ino, attr.size - 10, 100) == bytes(10)
            # a write into the preallocation needs no new blocks
            await m.fs.write(a.ino, 5 * BS + 3, b"abc", CTX)
            assert await m.fs.read(a.ino, 5 * BS, 6) == b"\0\0\0abc"
            assert (await m.fs.getattr(a.ino)).blocks == 8
            # an O_TMPFILE inode, linked
            t = await m.fs.tmpfile(ROOT, 0o644, CTX)
            await m.fs.link(t.ino, ROOT, b"was-tmp", CTX)
            await m.fs.forget(t.ino)
            await m.fs.setattr(a.ino, size=0, ctx=CTX)
            await m.sync()
            await m.sync()  # freed blocks return after their commit and one more
            await m.fs.fallocate(a.ino, data.FALLOC_FL_KEEP_SIZE, 0, 32 << 20, CTX)
            assert (await m.fs.getattr(a.ino)).size == 0
            await m.close()
            n.cancel_scope.cancel()

    trio.run(main)
    assert fsck.check(*volume) == []


# --------------------------------------------------------------------------- model


OFFSETS = st.one_of(st.integers(0, 12 * BS),
                    st.sampled_from([BS - 1, BS, BS + 1, 2 * BS, 5 * BS - 3, (1 << 20) + 37]))
OPS = st.lists(st.one_of(
    st.tuples(st.just("w"), OFFSETS, st.integers(1, 3 * BS + 5)),
    st.tuples(st.just("t"), OFFSETS, st.just(0)),
    st.tuples(st.sampled_from(["f", "k"]), OFFSETS, st.integers(1, 6 * BS)),
    st.tuples(st.just("r"), OFFSETS, st.integers(0, 5 * BS)),
    st.tuples(st.sampled_from(["sd", "sh"]), OFFSETS, st.just(0)),
), min_size=1, max_size=20)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(OPS)
def test_model(ops):
    """Writes, truncates, fallocates (mode 0 and KEEP_SIZE), reads and seeks against a
    bytearray and a map of block states ("D" online, "U" unwritten; absent: hole)."""
    async def main():
        mctx, fs = real_fs()
        ino = (await fs.mknod(ROOT, b"f", 0o644, 0, CTX)).ino
        model = bytearray()
        blocks: dict[int, str] = {}
        dv = 0
        for step, (op, off, n) in enumerate(ops):
            if op == "w":
                d = pattern(n, step)
                await fs.write(ino, off, d, CTX)
                if len(model) < off + n:
                    model.extend(bytes(off + n - len(model)))
                model[off:off + n] = d
                for b in range(off // BS, (off + n - 1) // BS + 1):
                    blocks[b] = "D"
                dv += 1
            elif op == "t":
                await fs.setattr(ino, size=off, ctx=CTX)
                if off != len(model):
                    dv += 1
                if off < len(model):
                    del model[off:]
                    keep = (off + BS - 1) // BS
                    blocks = {b: s for b, s in blocks.items() if b < keep}
                else:
                    model.extend(bytes(off - len(model)))
            elif op in ("f", "k"):
                await fs.fallocate(ino, KEEP if op == "k" else 0, off, n, CTX)
                changed = False
                for b in range(off // BS, (off + n - 1) // BS + 1):
                    if b not in blocks:
                        blocks[b] = "U"
                        changed = True
                if op == "f" and off + n > len(model):
                    model.extend(bytes(off + n - len(model)))
                    changed = True
                dv += changed
            elif op == "r":
                assert await fs.read(ino, off, n) == bytes(model[off:off + n])
            else:
                whence = data.SEEK_DATA if op == "sd" else data.SEEK_HOLE
                size = len(model)
                want: int | None = None
                if off < size:
                    b = off // BS
                    while b * BS < size:
                        if (blocks.get(b) == "D") == (op == "sd"):
                            want = max(off, b * BS)
                            break
                        b += 1
                    if want is None and op == "sh":
                        want = size
                if want is None:
                    assert await errno_of(fs.lseek(ino, off, whence)) == errno.ENXIO
                else:
                    assert await fs.lseek(ino, off, whence) == want
            inode = raw_inode(mctx, ino)
            assert inode.size == len(model)
            assert inode.data_version == dv
            assert inode.online_blocks == sum(1 for s in blocks.values() if s == "D")
            check_invariants(mctx, ino, prealloc_past_eof=True)
            fm = await fs.fiemap(ino, 0, 1 << 62)
            seen: dict[int, str] = {}
            for lg, _ph, ln, fl in fm:
                assert fl & ~(F_UNWRITTEN | F_LAST) == 0
                for b in range(lg // BS, (lg + ln) // BS):
                    seen[b] = "U" if fl & F_UNWRITTEN else "D"
            assert seen == blocks
            assert [fl & F_LAST for *_, fl in fm] == [0] * (len(fm) - 1) + [F_LAST] * bool(fm)
        assert await fs.read(ino, 0, len(model) + 10) == bytes(model)
        check_entries(mctx)
        check_seq_index(mctx)
        assert fsck_problems(mctx) == []

    run(main)
