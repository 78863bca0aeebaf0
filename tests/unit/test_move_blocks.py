"""MOVE_BLOCKS (fs/archive.py, spec semantics §5.8) against the in-memory fakes: the errno
order, what moves, sizes, versions, and the STAGE flag."""

from __future__ import annotations

import errno

import trio
import trio.testing

from fs import archive, data, datawait
from fs import format as fmt
from fs.testing.fakes import errno_of, make_context
from tests.unit.test_data import BS, CTX, extent_items, make_file, pattern, raw_inode

SRC, DST = 1025, 1026
OFF = fmt.EXTENT_FLAG_OFFLINE
U64 = (1 << 64) - 1


def check_invariants(mctx, *inos: int) -> None:
    """Per file: extents sorted, disjoint, inside the size (but for KEEP_SIZE
    preallocations), counts right; across the files: every allocated block mapped once or
    freed, never both."""
    used: set[int] = set()
    for ino in inos or (SRC, DST):
        inode = raw_inode(mctx, ino)
        exts = extent_items(mctx, ino)
        prev = -1
        nblk = (inode.size + BS - 1) // BS
        for e in exts:
            assert e.start > prev and 0 < e.length <= data.EXTENT_MAX_BLOCKS
            prev = e.last
            if e.flags != fmt.EXTENT_FLAG_UNWRITTEN:
                assert e.last < nblk, "extent past EOF"
        assert inode.online_blocks == sum(e.length for e in exts if e.online)
        assert inode.offline_blocks == sum(e.length for e in exts if e.offline)
        for e in exts:
            if e.blkno:
                blocks = set(range(e.blkno, e.blkno + e.length))
                assert not used & blocks
                used |= blocks
    freed: set[int] = set()
    for s, n in mctx.trans.data_alloc.freed:
        blocks = set(range(s, s + n))
        assert not freed & blocks, "double free"
        freed |= blocks
    assert not used & freed
    assert used | freed == set(range(fmt.DATA_DEV_START_BLKNO, mctx.trans.data_alloc.next))


def run(fn, *args):
    return trio.run(fn, *args)


async def two_files(mctx, src: bytes, dst: bytes = b"") -> None:
    await make_file(mctx, SRC)
    await make_file(mctx, DST)
    if src:
        await data.write(mctx, SRC, 0, src, CTX)
    if dst:
        await data.write(mctx, DST, 0, dst, CTX)


def mb(mctx, from_off, length, to_off, dv=0, flags=0, **kw):
    return archive.move_blocks(mctx, SRC, from_off, length, DST, to_off, dv, flags, **kw)


def test_errno_order():
    async def main():
        mctx = make_context()
        await two_files(mctx, pattern(3 * BS + 10))
        dv = raw_inode(mctx, DST).data_version
        # 1. length 0 before anything else
        assert await mb(mctx, 1, 0, 3, flags=99, readonly=True) == 0
        # 2. either range wrapping: EOVERFLOW
        assert await errno_of(mb(mctx, U64 - BS + 1, 2 * BS, 0)) == errno.EOVERFLOW
        assert await errno_of(mb(mctx, 0, 2 * BS, U64 - BS + 1)) == errno.EOVERFLOW
        # 3. the same inode, then unknown flags
        assert await errno_of(archive.move_blocks(mctx, SRC, 0, BS, SRC, BS, 0, 99)
                              ) == errno.EINVAL
        assert await errno_of(mb(mctx, 0, BS, 0, flags=2)) == errno.EINVAL
        assert await errno_of(mb(mctx, 0, BS, 0, readonly=True)) == errno.EROFS
        # 5. unaligned offsets, or an unaligned length not ending at the source's EOF
        assert await errno_of(mb(mctx, 1, BS, 0)) == errno.EINVAL
        assert await errno_of(mb(mctx, 0, BS, 1)) == errno.EINVAL
        assert await errno_of(mb(mctx, 0, 10, 0)) == errno.EINVAL
        # 6. STAGE with a data_version not the destination's
        assert await errno_of(mb(mctx, 0, BS, 0, dv + 1, archive.MB_STAGE)) == errno.ESTALE
        # 7. from_off at or past the source size: nothing to do
        assert await mb(mctx, 4 * BS, BS, 0) == 0
        # 8. a directory, then write permission
        assert await errno_of(archive.move_blocks(mctx, SRC, 0, BS, fmt.ROOT_INO, 0, 0, 0)
                              ) == errno.EISDIR
        assert await errno_of(mb(mctx, 0, BS, 0, uid=1000, gid=1000)) == errno.EACCES
        # 9. offline blocks in the source, or in the destination without STAGE
        await data.write(mctx, DST, 0, b"d" * BS, CTX)
        ddv = raw_inode(mctx, DST).data_version
        await archive.release(mctx, DST, 0, BS, ddv, writable=True)
        assert await errno_of(mb(mctx, 0, BS, 8 * BS)) == errno.ENODATA
        assert await errno_of(archive.move_blocks(mctx, DST, 0, BS, SRC, 8 * BS, 0, 0)
                              ) == errno.ENODATA
        # 10. with STAGE, a range not inside an offline extent
        assert await errno_of(mb(mctx, 0, BS, 4 * BS, ddv, archive.MB_STAGE)) == errno.EINVAL
        assert raw_inode(mctx, SRC).online_blocks == 4  # nothing moved
        check_invariants(mctx)

    run(main)


def test_retention_of_the_destination_is_eperm_before_alignment():
    async def main():
        mctx = make_context()
        mctx.fmt_vers = 2
        await two_files(mctx, pattern(BS))
        await archive.set_attr_x(mctx, DST, mask=archive.IAX_RETENTION,
                                 bits=archive.IAX_B_RETENTION, admin=True)
        assert await errno_of(mb(mctx, 1, BS, 0)) == errno.EPERM

    run(main)


def test_overlapping_destination_is_einval_after_partial_progress():
    async def main():
        mctx = make_context()
        src = pattern(4 * BS)
        await two_files(mctx, b"")
        await data.write(mctx, SRC, 0, src[:BS], CTX)
        await data.write(mctx, SRC, 2 * BS, src[2 * BS:], CTX)  # a hole at block 1
        await data.write(mctx, DST, 12 * BS, b"x" * BS, CTX)  # lands on source block 2
        assert await errno_of(mb(mctx, 0, 4 * BS, 10 * BS)) == errno.EINVAL
        # the first extent moved before the overlap was found
        assert await data.read(mctx, DST, 10 * BS, BS) == src[:BS]
        assert await data.read(mctx, SRC, 0, BS) == bytes(BS)
        assert raw_inode(mctx, SRC).online_blocks == 2
        check_invariants(mctx)

    run(main)


def test_move_leaves_holes_grows_the_destination_and_bumps_versions():
    async def main():
        mctx = make_context()
        src = pattern(3 * BS + 123)
        await two_files(mctx, src, b"d" * 100)
        s0, d0 = raw_inode(mctx, SRC), raw_inode(mctx, DST)
        mctx.trans.seq += 1  # a later transaction
        # the unaligned length ends at the source's EOF: the partial block moves too
        assert await mb(mctx, BS, 2 * BS + 123, 4 * BS) == 2 * BS + 123
        s1, d1 = raw_inode(mctx, SRC), raw_inode(mctx, DST)
        assert s1.size == s0.size  # the source keeps its size
        assert d1.size == 6 * BS + 123  # the destination ends where the source did
        assert (s1.online_blocks, d1.online_blocks) == (1, 4)
        assert s1.data_version == s0.data_version + 1
        assert d1.data_version == d0.data_version + 1
        assert s1.data_seq == d1.data_seq == mctx.trans.seq
        assert await data.read(mctx, SRC, 0, 4 * BS) == src[:BS] + bytes(2 * BS + 123)
        assert await data.read(mctx, DST, 0, 7 * BS) == (
            b"d" * 100 + bytes(4 * BS - 100) + src[BS:])
        check_invariants(mctx)

    run(main)


def test_stage_moves_into_offline_extents_and_wakes_waiters():
    async def main():
        mctx = make_context()
        want = pattern(5 * BS + 7, seed=3)
        await two_files(mctx, b"")
        await archive.setattr_more(mctx, DST, data_version=9, size=len(want), flags=1,
                                   ctime=(1, 0), crtime=(2, 0), writable=True, admin=True)
        d0 = raw_inode(mctx, DST)
        assert d0.offline_blocks == 6
        # the agent writes the archived bytes of blocks 2..5 into a file of its own
        await data.write(mctx, SRC, 0, want[2 * BS:], CTX)
        got = []
        async with trio.open_nursery() as n:
            async def reader():
                got.append(await data.read(mctx, DST, 2 * BS, 3 * BS + 7))

            n.start_soon(reader)
            with trio.fail_after(5):
                while not datawait.waiters(mctx).by_ino.get(DST):
                    await trio.sleep(0)
            assert await mb(mctx, 0, 3 * BS + 7, 2 * BS, 9, archive.MB_STAGE) == 3 * BS + 7
        assert got == [want[2 * BS:]]
        d1 = raw_inode(mctx, DST)
        assert (d1.size, d1.data_version, d1.data_seq, d1.mtime, d1.ctime) == (
            d0.size, 9, d0.data_seq, d0.mtime, d0.ctime)
        assert (d1.online_blocks, d1.offline_blocks) == (4, 2)
        # staged blocks are online now: staging them again is outside offline extents
        await data.write(mctx, SRC, 0, b"s" * BS, CTX)
        assert await errno_of(mb(mctx, 0, BS, 2 * BS, 9, archive.MB_STAGE)) == errno.EINVAL
        await archive.stage(mctx, DST, 0, want[:2 * BS], 9, writable=True)
        assert await data.read(mctx, DST, 0, 6 * BS) == want
        check_invariants(mctx)

    run(main)


def test_control_data_waiting_blocks_until_a_waiter_registers():
    """data_waiting with wait_ms (ours, for agents): an empty answer is held until a
    waiter registers, then lists it; wait_ms is bounded; without waiters it times out."""
    import json
    from types import SimpleNamespace

    from fs.control import ControlServer
    from fs.filesystem import Filesystem

    async def main():
        mctx = make_context()
        await make_file(mctx, SRC)
        await data.write(mctx, SRC, 0, pattern(2 * BS), CTX)
        dv = raw_inode(mctx, SRC).data_version
        await archive.release(mctx, SRC, 0, 2 * BS, dv, writable=True)
        mount = SimpleNamespace(fs=Filesystem(mctx), kernel_inodes={SRC}, options={})
        srv = ControlServer(mount, 0, 0, path="/nonexistent/x.sock")

        async def ask(**args):
            return await srv._handle(json.dumps(args).encode(), 1, 0, 0, [])

        base = dict(op="data_waiting", flags=0, after_ino=0, after_iblock=0)
        assert (await ask(**base, wait_ms=60_001))["errno"] == errno.EINVAL
        with trio.fail_after(5):
            assert await ask(**base, wait_ms=10) == {"errno": 0, "entries": []}
        got = []
        async with trio.open_nursery() as n:
            async def agent():
                got.append(await ask(**base, wait_ms=30_000))

            n.start_soon(agent)
            await trio.testing.wait_all_tasks_blocked()  # the agent parked in its request
            assert not got
            n.start_soon(data.read, mctx, SRC, BS, 10)
            with trio.fail_after(5):
                while not got:
                    await trio.sleep(0.01)
            assert got == [{"errno": 0, "entries": [[SRC, 1, datawait.OP_READ]]}]
            await archive.stage(mctx, SRC, 0, pattern(2 * BS), dv, writable=True)

    run(main)
