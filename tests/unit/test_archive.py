"""Release, stage, punch-offline, setattr_more and data waiters (fs/archive.py,
fs/datawait.py) against the in-memory fakes."""

from __future__ import annotations

import errno

import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fs import archive, data, datawait
from fs import format as fmt
from fs.context import InterruptToken, current_interrupt
from fs.errors import FsError
from fs.testing.fakes import errno_of, make_context
from tests.unit.test_data import (
    BS,
    CTX,
    INO,
    check_invariants,
    extent_items,
    make_file,
    pattern,
    raw_inode,
)


def run(fn, *args):
    return trio.run(fn, *args)


async def new_file(mctx, d: bytes):
    await make_file(mctx)
    if d:
        await data.write(mctx, INO, 0, d, CTX)
    return raw_inode(mctx).data_version


def exts(mctx):
    return [(e.start, e.length, e.blkno != 0, e.flags) for e in extent_items(mctx)]


async def rel(mctx, off, n, dv, **kw):
    kw.setdefault("writable", True)
    await archive.release(mctx, INO, off, n, dv, **kw)


async def stg(mctx, off, d, dv, **kw):
    kw.setdefault("writable", True)
    return await archive.stage(mctx, INO, off, d, dv, **kw)


OFF = fmt.EXTENT_FLAG_OFFLINE


def test_release_makes_offline_extents_and_keeps_versions():
    async def main():
        mctx = make_context()
        d = pattern(10000)
        dv = await new_file(mctx, d)
        before = raw_inode(mctx)
        await rel(mctx, 0, 3 * BS, dv)
        after = raw_inode(mctx)
        assert (after.online_blocks, after.offline_blocks) == (0, 3)
        assert after.data_version == before.data_version
        assert after.data_seq == before.data_seq
        assert (after.size, after.mtime, after.ctime) == (before.size, before.mtime,
                                                          before.ctime)
        assert data.stat_blocks(after) == data.stat_blocks(before) == 24
        assert exts(mctx) == [(0, 3, False, OFF)]
        check_invariants(mctx)
        # staging it back reads the same bytes; counts follow, versions don't move
        assert await stg(mctx, 0, d, dv) == 10000
        assert await data.read(mctx, INO, 0, 20000) == d
        s = raw_inode(mctx)
        assert (s.online_blocks, s.offline_blocks, s.data_version) == (3, 0, dv)
        check_invariants(mctx)

    run(main)


def test_adjacent_offline_extents_merge_and_holes_stay_holes():
    async def main():
        mctx = make_context()
        dv = await new_file(mctx, pattern(6 * BS))
        await rel(mctx, 3 * BS, BS, dv)
        await rel(mctx, BS, BS, dv)
        await rel(mctx, 2 * BS, BS, dv)
        assert exts(mctx)[1] == (1, 3, False, OFF)
        await rel(mctx, 0, 100 * BS, dv)  # past EOF, overlapping offline: fine
        assert exts(mctx) == [(0, 6, False, OFF)]
        # a sparse file: holes are skipped, not made offline
        mctx2 = make_context()
        await make_file(mctx2)
        await data.write(mctx2, INO, 4 * BS, b"x" * BS, CTX)
        dv2 = raw_inode(mctx2).data_version
        await archive.release(mctx2, INO, 0, 5 * BS, dv2, writable=True)
        assert exts(mctx2) == [(4, 1, False, OFF)]
        assert raw_inode(mctx2).offline_blocks == 1
        check_invariants(mctx)
        check_invariants(mctx2)

    run(main)


def test_release_without_online_blocks_truncates_past_eof():
    async def main():
        mctx = make_context()
        dv = await new_file(mctx, pattern(2 * BS))
        await data.fallocate(mctx, INO, data.FALLOC_FL_KEEP_SIZE, 2 * BS, 4 * BS, CTX)
        dv = raw_inode(mctx).data_version
        await rel(mctx, 0, BS, dv)
        assert len(exts(mctx)) == 3  # block 1 still online: the preallocation stays
        await rel(mctx, BS, BS, dv)
        assert exts(mctx) == [(0, 2, False, OFF)]
        check_invariants(mctx)

    run(main)


def test_release_errno_order():
    async def main():
        mctx = make_context()
        dv = await new_file(mctx, pattern(BS))
        # length 0 first: nothing else is checked
        await rel(mctx, 1, 0, dv + 5, writable=False, readonly=True)
        assert await errno_of(rel(mctx, 1, BS, dv + 5, readonly=True)) == errno.EINVAL
        assert await errno_of(rel(mctx, 0, 1, dv)) == errno.EINVAL
        assert await errno_of(rel(mctx, (1 << 64) - BS, 2 * BS, dv)) == errno.EINVAL
        assert await errno_of(rel(mctx, 0, BS, dv + 5, writable=False,
                                  readonly=True)) == errno.EROFS
        assert await errno_of(rel(mctx, 0, BS, dv + 5, writable=False)) == errno.EINVAL
        assert await errno_of(rel(mctx, 0, BS, dv + 5)) == errno.ESTALE
        assert await errno_of(archive.release(mctx, fmt.ROOT_INO, 0, BS, 0,
                                              writable=True)) == errno.EINVAL
        assert raw_inode(mctx).online_blocks == 1

    run(main)


def test_stage_errno_order_and_rules():
    async def main():
        mctx = make_context()
        d = pattern(2 * BS + 100)
        dv = await new_file(mctx, d)
        await rel(mctx, 0, 3 * BS, dv)
        assert await errno_of(stg(mctx, 1, b"x", dv + 1, readonly=True)) == errno.EINVAL
        assert await stg(mctx, 0, b"", dv + 1, writable=False, readonly=True) == 0
        assert await errno_of(stg(mctx, 0, b"x", dv + 1, writable=False,
                                  readonly=True)) == errno.EROFS
        assert await errno_of(stg(mctx, 0, b"x" * BS, dv + 1, writable=False)) == errno.EINVAL
        assert await errno_of(stg(mctx, 0, b"x" * BS, dv + 1, bad_flags=True)) == errno.EINVAL
        assert await errno_of(stg(mctx, 2 * BS, b"x" * BS, dv + 1)) == errno.EINVAL  # > size
        assert await errno_of(stg(mctx, 0, b"x" * 10, dv + 1)) == errno.EINVAL  # unaligned end
        assert await errno_of(stg(mctx, 0, b"x" * BS, dv + 1)) == errno.ESTALE
        # the partial last block: the end may be i_size
        assert await stg(mctx, 2 * BS, d[2 * BS:], dv) == 100
        assert await stg(mctx, 0, d[:BS], dv) == BS
        assert raw_inode(mctx).offline_blocks == 1
        assert exts(mctx)[1] == (1, 1, False, OFF)
        # staging online blocks again changes nothing
        assert await stg(mctx, 0, b"\0" * BS, dv) == BS
        assert await stg(mctx, BS, d[BS:2 * BS], dv) == BS
        assert await data.read(mctx, INO, 0, 3 * BS) == d
        assert raw_inode(mctx).data_version == dv
        check_invariants(mctx)

    run(main)


async def _wait_registered(mctx, n: int = 1) -> None:
    with trio.fail_after(5):
        while sum(len(v) for v in datawait.waiters(mctx).by_ino.values()) < n:
            await trio.testing.wait_all_tasks_blocked()


def test_reader_waits_until_staged_and_is_listed():
    async def main():
        mctx = make_context()
        d = pattern(3 * BS)
        dv = await new_file(mctx, d)
        await rel(mctx, BS, 2 * BS, dv)
        got = []
        async with trio.open_nursery() as n:
            async def reader():
                got.append(await data.read(mctx, INO, 0, 3 * BS))
            n.start_soon(reader)
            n.start_soon(reader)
            await _wait_registered(mctx, 2)
            # two readers of one block: one entry
            assert datawait.waiters(mctx).waiting(0, 0, 10) == [(INO, 1, datawait.OP_READ)]
            assert datawait.waiters(mctx).waiting(INO, 1, 10) == []
            assert not got
            await stg(mctx, BS, d[BS:2 * BS], dv)  # the first offline block only
            await trio.testing.wait_all_tasks_blocked()
            assert datawait.waiters(mctx).waiting(0, 0, 10) == [(INO, 2, datawait.OP_READ)]
            await stg(mctx, 2 * BS, d[2 * BS:], dv)
        assert got == [d, d]
        assert datawait.waiters(mctx).by_ino == {}

    run(main)


def test_write_and_truncate_wait_with_their_ops():
    async def main():
        mctx = make_context()
        d = pattern(4 * BS)
        dv = await new_file(mctx, d)
        await rel(mctx, 3 * BS, BS, dv)
        async with trio.open_nursery() as n:
            n.start_soon(data.write, mctx, INO, 0, b"new", CTX)  # any offline block: waits
            n.start_soon(data.truncate, mctx, INO, 3 * BS + 1, CTX)
            await _wait_registered(mctx, 2)
            assert datawait.waiters(mctx).waiting(0, 0, 10) == [
                (INO, 0, datawait.OP_CHANGE_SIZE), (INO, 3, datawait.OP_WRITE)]
            await stg(mctx, 3 * BS, d[3 * BS:], dv)
        assert raw_inode(mctx).offline_blocks == 0
        assert (await data.read(mctx, INO, 0, 3))[:3] == b"new"
        # truncate to 0 and to the same size never wait
        dv = raw_inode(mctx).data_version
        await rel(mctx, 0, 4 * BS, dv)
        size = raw_inode(mctx).size
        await data.truncate(mctx, INO, size, CTX)
        await data.truncate(mctx, INO, 0, CTX)
        assert raw_inode(mctx).offline_blocks == 0
        check_invariants(mctx)

    run(main)


def test_data_wait_err_fails_matching_waiters():
    async def main():
        mctx = make_context()
        dv = await new_file(mctx, pattern(2 * BS))
        await rel(mctx, 0, 2 * BS, dv)
        errs = []

        async def reader(off):
            errs.append(await errno_of(data.read(mctx, INO, off, 10)))

        async with trio.open_nursery() as n:
            n.start_soon(reader, 0)
            n.start_soon(reader, BS)
            await _wait_registered(mctx, 2)
            w = datawait.waiters(mctx)
            assert w.set_err(INO, 0, 0, datawait.OP_WRITE, errno.EIO) == 0  # wrong op
            assert w.set_err(INO, 5, 9, datawait.OP_READ, errno.EIO) == 0  # wrong range
            assert w.set_err(INO, 0, 0, datawait.OP_READ, errno.EIO) == 1
            await trio.testing.wait_all_tasks_blocked()
            assert errs == [errno.EIO]
            assert w.waiting(0, 0, 10) == [(INO, 1, datawait.OP_READ)]
            assert w.set_err(INO, 0, 1, datawait.OP_READ, errno.EIO) == 1
        assert errs == [errno.EIO, errno.EIO]
        assert datawait.waiters(mctx).by_ino == {}

    run(main)


def test_interrupt_ends_the_wait_with_eintr_and_leaves_no_waiter():
    async def main():
        mctx = make_context()
        dv = await new_file(mctx, pattern(BS))
        await rel(mctx, 0, BS, dv)
        tok = InterruptToken()
        res = []

        async def reader():
            current_interrupt.set(tok)
            res.append(await errno_of(data.read(mctx, INO, 0, 10)))

        async with trio.open_nursery() as n:
            n.start_soon(reader)
            await _wait_registered(mctx)
            tok.fire()
        assert res == [errno.EINTR]
        assert datawait.waiters(mctx).by_ino == {}
        # an interrupt that came before the wait started ends it at once
        tok2 = InterruptToken()
        tok2.fire()

        async def reader2():
            current_interrupt.set(tok2)
            res.append(await errno_of(data.read(mctx, INO, 0, 10)))

        with trio.fail_after(5):
            await reader2()
        assert res[-1] == errno.EINTR

    run(main)


def test_lock_invalidation_wakes_waiters_of_the_range():
    async def main():
        mctx = make_context()
        d = pattern(BS)
        dv = await new_file(mctx, d)
        await rel(mctx, 0, BS, dv)
        got = []
        async with trio.open_nursery() as n:
            async def reader():
                got.append(await data.read(mctx, INO, 0, BS))
            n.start_soon(reader)
            await _wait_registered(mctx)
            # another mount staged it: here the extents change without waking us (the
            # stage's own mount has its own waiters) ...
            mine = mctx.waiters
            mctx.waiters = datawait.DataWaiters()
            await stg(mctx, 0, d, dv)
            mctx.waiters = mine
            await trio.testing.wait_all_tasks_blocked()
            assert not got
            # ... and the invalidation of our lock of the inode's group wakes us
            assert mine.wake_range(INO + 1, INO + 100) == 0
            assert mine.wake_range(INO - 1, INO + 1) == 1
        assert got == [d]

    run(main)


def test_punch_offline():
    async def main():
        mctx = make_context()
        dv = await new_file(mctx, pattern(4 * BS))
        assert await errno_of(archive.punch_offline(mctx, INO, 0, 0, dv + 1, 5,
                                                    writable=False)) == 0
        assert await errno_of(archive.punch_offline(mctx, INO, 1, BS, dv, 0,
                                                    writable=True)) == errno.EOVERFLOW
        assert await errno_of(archive.punch_offline(mctx, INO, 0, BS, dv, 1,
                                                    writable=True)) == errno.EINVAL
        assert await errno_of(archive.punch_offline(mctx, INO, 0, BS, dv, 0,
                                                    writable=False)) == errno.EINVAL
        assert await errno_of(archive.punch_offline(mctx, INO, 0, BS, dv + 1, 0,
                                                    writable=True)) == errno.ESTALE
        await rel(mctx, 0, 2 * BS, dv)
        # offline then online in the range: the offline part is punched, then EINVAL
        assert await errno_of(archive.punch_offline(mctx, INO, BS, 2 * BS, dv, 0,
                                                    writable=True)) == errno.EINVAL
        assert exts(mctx) == [(0, 1, False, OFF), (2, 2, True, 0)]
        await archive.punch_offline(mctx, INO, 0, BS, dv, 0, writable=True)
        assert raw_inode(mctx).offline_blocks == 0
        assert raw_inode(mctx).data_version == dv
        # a read of a punched block is a hole now: zeros, no wait
        assert await data.read(mctx, INO, 0, 10) == bytes(10)
        check_invariants(mctx)

    run(main)


def test_setattr_more():
    async def main():
        mctx = make_context()
        await make_file(mctx)

        async def sm(**kw):
            args = dict(data_version=7, size=10 * BS + 5, flags=archive.SETATTR_MORE_OFFLINE,
                        ctime=(11, 12), crtime=(13, 14), writable=True, admin=True)
            args.update(kw)
            await archive.setattr_more(mctx, INO, **args)

        assert await errno_of(sm(writable=False, admin=False, flags=8)) == errno.EBADF
        assert await errno_of(sm(flags=8, admin=False)) == errno.EINVAL
        assert await errno_of(sm(admin=False)) == errno.EPERM
        assert await errno_of(sm(data_version=0)) == errno.EINVAL
        assert await errno_of(sm(size=0)) == errno.EINVAL
        await sm()
        i = raw_inode(mctx)
        assert (i.size, i.data_version, i.ctime, i.crtime) == (10 * BS + 5, 7, (11, 12), (13, 14))
        assert (i.online_blocks, i.offline_blocks) == (0, 11)
        assert i.data_seq == mctx.trans.seq
        assert exts(mctx) == [(0, 11, False, OFF)]
        assert await errno_of(sm()) == errno.EINVAL  # data_version is not 0 any more
        check_invariants(mctx)

    run(main)


# --------------------------------------------------------------------------- model

OPS = st.lists(st.one_of(
    st.tuples(st.just("w"), st.integers(0, 10 * BS), st.integers(1, 3 * BS)),
    st.tuples(st.just("t"), st.integers(0, 10 * BS), st.just(0)),
    st.tuples(st.just("rel"), st.integers(0, 10).map(lambda k: k * BS),
              st.integers(0, 6).map(lambda k: k * BS)),
    st.tuples(st.just("stage"), st.integers(0, 10).map(lambda k: k * BS),
              st.integers(1, 6).map(lambda k: k * BS)),
    st.tuples(st.just("punch"), st.integers(0, 10).map(lambda k: k * BS),
              st.integers(1, 6).map(lambda k: k * BS)),
), min_size=1, max_size=14)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(OPS)
def test_model(ops):
    """Writes, truncates, releases, stages and punches against a byte model plus the set
    of offline blocks; a blocking access is only tried when nothing is offline."""
    async def main():
        mctx = make_context()
        await make_file(mctx)
        model = bytearray()
        offline: set[int] = set()
        for i, (op, off, n) in enumerate(ops):
            inode = raw_inode(mctx)
            dv = inode.data_version
            nblk = (len(model) + BS - 1) // BS
            if op == "w" and not offline:
                d = bytes((i + k) & 0xFF for k in range(n))
                await data.write(mctx, INO, off, d, CTX)
                if len(model) < off + n:
                    model.extend(bytes(off + n - len(model)))
                model[off:off + n] = d
            elif op == "t" and (not offline or off == 0):
                await data.truncate(mctx, INO, off, CTX)
                if off < len(model):
                    del model[off:]
                else:
                    model.extend(bytes(off - len(model)))
                offline = {b for b in offline if b < (off + BS - 1) // BS}
            elif op == "rel":
                await rel(mctx, off, n, dv)
                exts_now = extent_items(mctx)
                mapped = {b for e in exts_now for b in range(e.start, e.last + 1)}
                offline |= {b for b in range(off // BS, (off + n) // BS)
                            if b < nblk and b in mapped}
            elif op == "stage":
                end = min(off + n, len(model))
                if off >= end:
                    continue
                await stg(mctx, off, bytes(model[off:end]), dv)
                offline -= set(range(off // BS, (end + BS - 1) // BS))
            elif op == "punch":
                e = await errno_of(archive.punch_offline(mctx, INO, off, n, dv, 0,
                                                         writable=True))
                rng = set(range(off // BS, (off + n) // BS))
                if e == 0:
                    for b in rng & offline:
                        model[b * BS:(b + 1) * BS] = bytes(len(model[b * BS:(b + 1) * BS]))
                    offline -= rng
                else:
                    assert e == errno.EINVAL
                    # partial progress: resync the model from the extents
                    now = {b for x in extent_items(mctx) if x.offline
                           for b in range(x.start, x.last + 1)}
                    for b in offline - now:
                        model[b * BS:(b + 1) * BS] = bytes(len(model[b * BS:(b + 1) * BS]))
                    offline = now
            inode = raw_inode(mctx)
            assert inode.size == len(model)
            assert inode.offline_blocks == len(offline)
            check_invariants(mctx, prealloc_past_eof=True)
        if not offline:
            assert await data.read(mctx, INO, 0, len(model) + 10) == bytes(model)
        else:
            for b in range((len(model) + BS - 1) // BS):
                if b not in offline:
                    got = await data.read(mctx, INO, b * BS, BS)
                    assert got == bytes(model[b * BS:(b + 1) * BS])

    run(main)


def test_unaligned_stage_end_inside_offline_is_einval():
    async def main():
        mctx = make_context()
        dv = await new_file(mctx, pattern(3 * BS))
        await rel(mctx, 0, 3 * BS, dv)
        with pytest.raises(FsError) as ei:
            await stg(mctx, 0, b"x" * (BS + 1), dv)
        assert ei.value.errno == errno.EINVAL

    run(main)


# --------------------------------------------------------------------------- control ops


def test_control_data_waiting_and_wait_err_ops():
    """The control socket's DATA_WAITING / DATA_WAIT_ERR requests (fs/control.py), in
    process: argument checks in the spec's order, and a waiter failed through them."""
    import json
    from types import SimpleNamespace

    from fs.control import ControlServer
    from fs.filesystem import Filesystem

    async def main():
        mctx = make_context()
        dv = await new_file(mctx, pattern(2 * BS))
        await rel(mctx, 0, 2 * BS, dv)
        mount = SimpleNamespace(fs=Filesystem(mctx), kernel_inodes={INO}, options={})
        srv = ControlServer(mount, 0, 0, path="/nonexistent/x.sock")

        async def ask(uid=0, **args):
            return await srv._handle(json.dumps(args).encode(), 1, uid, 0, [])

        def dwe(**kw):
            a = dict(op="data_wait_err", ino=INO, data_version=0, offset=0, count=BS,
                     wait_op=datawait.OP_READ, err=-errno.EIO)
            a.update(kw)
            return a

        res = []

        async def reader():
            res.append(await errno_of(data.read(mctx, INO, BS, 10)))

        async with trio.open_nursery() as n:
            n.start_soon(reader)
            await _wait_registered(mctx)
            assert await ask(op="data_waiting", flags=1) == {"errno": errno.EINVAL}
            assert await ask(op="data_waiting", after_ino=0, after_iblock=0) == {
                "errno": 0, "entries": [[INO, 1, datawait.OP_READ]]}
            assert await ask(op="data_waiting", after_ino=INO, after_iblock=1) == {
                "errno": 0, "entries": []}
            assert await ask(**dwe(count=0, err=7)) == {"errno": 0, "found": 0}
            assert (await ask(**dwe(wait_op=8)))["errno"] == errno.EINVAL
            assert (await ask(**dwe(err=0)))["errno"] == errno.EINVAL
            assert (await ask(**dwe(err=-4096)))["errno"] == errno.EINVAL
            assert (await ask(**dwe(offset=2, count=(1 << 64) - 1)))["errno"] == errno.EINVAL
            assert (await ask(**dwe(ino=INO + 7)))["errno"] == errno.ESTALE
            assert (await ask(**dwe(ino=fmt.ROOT_INO)))["errno"] == errno.EINVAL
            assert await ask(**dwe(offset=0, count=BS)) == {"errno": 0, "found": 0}
            assert await ask(**dwe(offset=BS, count=1)) == {"errno": 0, "found": 1}
        assert res == [errno.EIO]

    run(main)
