"""`.srch.` xattrs (fs/srch.py): the srch file format, log appends, the compaction merge
against a model (hypothesis), validation of bad blocks and messages, and the whole path on
the in-process stack (log, rotate, compact, search, reclaim, fsck)."""

from __future__ import annotations

import errno
import random
import socket

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from fs import format as fmt
from fs import fsck, mkfs, srch
from fs.block import MetaBlocks
from fs.errors import FsError
from fs.inode import Ctx
from fs.super import Mount
from fs.testing.fakes import make_context
from fs.testing.memdev import MemDevice

ROOT = Ctx(0, 0, 1)


class Alloc:
    """Sequential block numbers and a record of frees (a MetaAlloc stand-in)."""

    def __init__(self, start: int = fmt.META_DEV_START_BLKNO) -> None:
        self.next = start
        self.freed: list[int] = []

    def alloc(self) -> int:
        b = self.next
        self.next += 1
        return b

    def free(self, b: int) -> None:
        self.freed.append(b)


def blocks(nr: int = 4096) -> MetaBlocks:
    return MetaBlocks(MemDevice(nr * fmt.META_BLOCK_SIZE), 0x1234, 64)


# --------------------------------------------------------------------------- format


def test_format_round_trips():
    ents = [(i * 7, i, i * 3) for i in range(fmt.SRCH_BLOCK_MAX_ENTRIES)]
    assert fmt.unpack_srch_leaf(fmt.pack_srch_leaf(ents)) == ents
    with pytest.raises(ValueError):
        fmt.pack_srch_leaf(ents + [(1, 2, 3)])
    refs = [(fmt.BlockRef(i + 2, i), (i, i, i)) for i in range(fmt.SRCH_PARENT_MAX_REFS)]
    assert fmt.unpack_srch_parent(fmt.pack_srch_parent(refs)) == refs
    f = fmt.SrchFile(fmt.BlockRef(9, 8), 3, 100, (1, 2, 3), (4, 5, 6))
    assert fmt.unpack_srch_file(fmt.pack_srch_file(f)) == f
    lt = fmt.LogTrees(rid=5, nr=2, srch_file=f)
    assert fmt.unpack_log_trees(fmt.pack_log_trees(lt)).srch_file == f
    # a record packed before srch files existed reads with an empty one
    old = fmt.pack_log_trees(lt)[:-fmt.SRCH_FILE.size]
    assert fmt.unpack_log_trees(old).srch_file == fmt.EMPTY_SRCH_FILE
    assert srch.file_from_wire(srch.file_to_wire(f)) == f


@pytest.mark.parametrize("bad", [
    [0, 1, 0, 0, 0, 0, 0, 0, 0, 0],  # empty with a field set
    [1, 1, 1, 1, 0, 0, 0, 0, 0, 0],  # reserved block
    [9, 1, 0, 1, 0, 0, 0, 0, 0, 0],  # no blocks
    [9, 1, 1, 0, 0, 0, 0, 0, 0, 0],  # fewer entries than blocks
    [9, 1, 1, fmt.SRCH_BLOCK_MAX_ENTRIES + 1, 0, 0, 0, 0, 0, 0],
    [9, 1, 1, 1, 5, 0, 0, 4, 0, 0],  # first after last
])
def test_bad_files_from_the_wire(bad):
    with pytest.raises(FsError) as e:
        srch.file_from_wire(bad)
    assert e.value.errno == errno.EINVAL


def test_log_append_is_copy_on_write():
    b, a = blocks(), Alloc()
    ents = [(random.getrandbits(64), i, 1) for i in range(fmt.SRCH_BLOCK_MAX_ENTRIES + 10)]
    f1 = srch.append_log(b, fmt.EMPTY_SRCH_FILE, ents[:5], 10, a.alloc, a.free)
    assert (f1.blocks, f1.entries) == (1, 5) and not a.freed
    f2 = srch.append_log(b, f1, ents[5:], 11, a.alloc, a.free)
    # the partial leaf and the parent were rewritten elsewhere and freed
    assert sorted(a.freed) == sorted([f1.ref.blkno] + srch.file_blknos(b, f1)[1:])
    assert (f2.blocks, f2.entries) == (2, len(ents))
    assert srch.file_entries(b, f2, is_sorted=False) == ents
    # the old file is still readable (its blocks are only freed, not overwritten)
    assert srch.file_entries(b, f1, is_sorted=False) == ents[:5]
    assert (f2.first, f2.last) == (min(ents), max(ents))


# --------------------------------------------------------------------------- merge model

OPS = st.lists(st.tuples(st.integers(0, 3), st.integers(1, 6), st.booleans()), max_size=80)


def _entries_of(ops: list[tuple[int, int, bool]]) -> tuple[list[tuple], set[int]]:
    """Replay creates/deletes of xattrs (name index, ino, create?) as the xattr code logs
    them: a create of a present xattr is a replace (nothing logged), a delete of a missing
    one fails (nothing logged); a create after a delete gets a new id."""
    present: dict[tuple[int, int], int] = {}
    next_id: dict[int, int] = {}
    log: list[tuple] = []
    for name, ino, create in ops:
        h = fmt.hash64(b"scoutfs.srch.n%d" % name)
        if create and (name, ino) not in present:
            xid = next_id.get(ino, 0)
            next_id[ino] = xid + 1
            present[(name, ino)] = xid
            log.append((h, ino, xid))
        elif not create and (name, ino) in present:
            log.append((h, ino, present.pop((name, ino))))
    want = {ino for (name, ino) in present if name == 0}
    return log, want


@settings(max_examples=150, deadline=None)
@given(OPS, st.randoms(use_true_random=False))
def test_compaction_matches_the_model(ops, rnd):
    log, want = _entries_of(ops)
    b, a = blocks(), Alloc()
    # cut the log into log files in order, then compact random groups repeatedly
    files: list[tuple[fmt.SrchFile, bool]] = []
    i = 0
    while i < len(log):
        n = rnd.randint(1, 8)
        f = srch.append_log(b, fmt.EMPTY_SRCH_FILE, log[i:i + n], 5, a.alloc, a.free)
        files.append((f, False))
        i += n
    h = fmt.hash64(b"scoutfs.srch.n0")
    assert srch.search_files(b, fmt.EMPTY_ROOT, [f for f, _ in files], h) == want
    while len(files) > 1:
        k = rnd.randint(2, len(files))
        pick = rnd.sample(range(len(files)), k)
        lists = [srch.file_entries(b, files[j][0], is_sorted=files[j][1]) for j in pick]
        merged = srch.merge_entries(lists)
        assert merged == sorted(set(merged))
        out = srch.write_sorted(b, merged, 6, a.alloc)
        files = [x for j, x in enumerate(files) if j not in pick]
        if out.ref.blkno:
            files.append((out, True))
        # the search over log and sorted files together still answers the model
        counts: dict = {}
        for f, is_sorted in files:
            srch.search_file(b, f, is_sorted, h, counts)
        assert {ino for (ino, _x), c in counts.items() if c & 1} == want
    if files:
        # a lone log file compacts too (a padded batch): one sorted file is the model
        last = srch.merge_entries([srch.file_entries(b, files[0][0], is_sorted=files[0][1])])
        assert {e[1] for e in last if e[0] == h} == want


def test_sorted_search_reads_only_leaves_that_can_match():
    b, a = blocks(), Alloc()
    ents = sorted((h, h % 1000 + 1, 0) for h in random.sample(range(1 << 40), 20000))
    f = srch.write_sorted(b, ents, 5, a.alloc)
    assert f.blocks == -(-len(ents) // fmt.SRCH_BLOCK_MAX_ENTRIES)
    target = ents[12345]
    reads = b.reads + b.hits
    counts: dict = {}
    srch.search_file(b, f, True, target[0], counts)
    assert counts == {(target[1], target[2]): 1}
    assert b.reads + b.hits - reads <= 3  # the parent and at most two leaves


# --------------------------------------------------------------------------- validation


def test_corrupt_leaf_is_eio_not_a_crash():
    b, a = blocks(), Alloc()
    f = srch.write_sorted(b, [(1, 2, 3), (4, 5, 6)], 5, a.alloc)
    leaf = srch.file_blknos(b, f)[1]
    # a leaf that claims more entries than fit, resealed so only the count is wrong
    buf = bytearray(b.read(fmt.BlockRef(leaf, 5), fmt.MAGIC_SRCH_BLOCK))
    fmt.SRCH_BLOCK_HDR.pack_into(buf, fmt.HDR_SIZE, fmt.SRCH_BLOCK_MAX_ENTRIES + 1)
    b.write(leaf, 5, fmt.MAGIC_SRCH_BLOCK, buf)
    for fn in (lambda: srch.file_entries(b, f, is_sorted=True),
               lambda: srch.search_file(b, f, True, 1, {})):
        with pytest.raises(FsError) as e:
            fn()
        assert e.value.errno == errno.EIO
    # out of order entries in a sorted file
    g = srch.write_sorted(b, [(9, 9, 9), (1, 1, 1)], 6, a.alloc)
    with pytest.raises(FsError):
        srch.file_entries(b, g, is_sorted=True)


def test_xattr_changes_log_creates_and_deletes_only():
    async def main():
        from fs import inode as inode_mod
        from fs import xattr

        mctx = make_context(2)
        async with mctx.locks.inodes([1025], 2) as locks, \
                inode_mod.index_lock(mctx) as il, mctx.trans.hold():
            inode = inode_mod.new_inode(mctx, 1025, 0o100644, 0, 0, (5, 0))
            inode_mod.store_inode(mctx, inode, locks[1025], il)
        name = b"scoutfs.srch.a"
        h = fmt.hash64(name)
        await xattr.setxattr(mctx, 1025, name, b"1", 0, ROOT)
        await xattr.setxattr(mctx, 1025, name, b"2", 0, ROOT)  # replace: nothing
        await xattr.setxattr(mctx, 1025, b"user.x", b"2", 0, ROOT)  # not srch
        await xattr.removexattr(mctx, 1025, name, ROOT)
        await xattr.setxattr(mctx, 1025, name, b"3", 0, ROOT)  # a new id
        async with mctx.locks.inodes([1025], 2) as locks, mctx.trans.hold():
            await xattr.delete_all(mctx, 1025, locks[1025])
        # ids: 1 for the first, 2 for user.x, 3 for the second create
        assert mctx.trans.srch_log.pending == [(h, 1025, 1), (h, 1025, 1), (h, 1025, 3),
                                               (h, 1025, 3)]

    trio.run(main)


# --------------------------------------------------------------------------- the stack


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def volume(tmp_path):
    meta, data = str(tmp_path / "meta.img"), str(tmp_path / "data.img")
    with open(meta, "wb") as f:
        f.truncate(256 << 20)
    with open(data, "wb") as f:
        f.truncate(64 << 20)
    mkfs.make_volume(meta, data, {0: ("127.0.0.1", free_port())})
    return meta, data


async def _search(m: Mount, name: bytes) -> list[int]:
    inos, end = await m.srch.search(name, 0, fmt.U64_MAX, 1 << 20)
    assert end
    return inos


def _srch_root_types(m: Mount) -> list[int]:
    srv = m.server
    return [k[2] for k, _v in srv.srch_server._items()]


def test_log_rotate_compact_search_and_reclaim(volume):
    name = b"scoutfs.srch.tag"

    async def first():
        async with trio.open_nursery() as n:
            m = await Mount.open(*volume, {"quorum_slot_nr": 0}, n)
            m.srch.compact_delay_ms = 3_600_000  # compaction only when the test asks
            inos = []
            for i in range(12):
                a = await m.fs.mknod(1, b"f%d" % i, 0o100644, 0, ROOT)
                await m.fs.setxattr(a.ino, name, b"v", 0, ROOT)
                await m.fs.setxattr(a.ino, b"scoutfs.srch.other", b"v", 0, ROOT)
                inos.append(a.ino)
                if i % 3 == 2:
                    # a log file of its own each time
                    m.triggers.set("srch_force_log_rotate", 1)
                    await m.trans.sync()
                    assert m.triggers.get("srch_force_log_rotate") == 0
            assert await _search(m, name) == inos  # 4 rotated log files
            assert _srch_root_types(m).count(fmt.SRCH_LOG_TYPE) == 4
            # remove one, delete another file: not yet committed, still found
            await m.fs.removexattr(inos[0], name, ROOT)
            await m.fs.unlink(1, b"f1", ROOT)
            await m.fs.forget(inos[1])
            await m.fs.drain_deletions()
            assert await _search(m, name) == inos
            await m.trans.sync()
            assert await _search(m, name) == inos[2:]
            # compaction of the 4 log files into one sorted file
            assert await m.srch.compact_once()
            assert not await m.srch.compact_once()  # nothing more to do
            assert _srch_root_types(m) == [fmt.SRCH_SORTED_TYPE]
            assert m.counters.get("srch_compact_flush") == 1
            assert await _search(m, name) == inos[2:]
            assert await _search(m, b"scoutfs.srch.other") == inos[:1] + inos[2:]
            assert await _search(m, b"scoutfs.srch.nothing") == []
            # the removals (still in the mount's log) cancel sorted entries at compaction;
            # the trigger acts at a commit, and only a dirty transaction commits
            m.triggers.set("srch_force_log_rotate", 1)
            await m.fs.setxattr(inos[2], b"user.dirty", b"v", 0, ROOT)
            await m.trans.sync()
            assert _srch_root_types(m).count(fmt.SRCH_LOG_TYPE) == 1
            m.triggers.set("srch_compact_logs_pad_safe", 1)
            assert await m.srch.compact_once()  # one log file, padded batch
            # merge stop: the compaction is abandoned whole, inputs stay
            a = await m.fs.mknod(1, b"g", 0o100644, 0, ROOT)
            await m.fs.setxattr(a.ino, name, b"v", 0, ROOT)
            inos.append(a.ino)
            m.triggers.set("srch_force_log_rotate", 1)
            await m.trans.sync()
            before = _srch_root_types(m)
            m.triggers.set("srch_merge_stop_safe", 1)
            m.triggers.set("srch_compact_logs_pad_safe", 1)
            assert await m.srch.compact_once()
            assert _srch_root_types(m) == before
            assert await _search(m, name) == inos[2:]
            await m.close()
            n.cancel_scope.cancel()
        return inos

    inos = trio.run(first)
    assert fsck.check(*volume) == []

    async def second():
        async with trio.open_nursery() as n:
            m = await Mount.open(*volume, {"quorum_slot_nr": 0}, n)
            assert await _search(m, name) == inos[2:]
            # farewell runs reclaim_rid: the open log tree is finalized and its srch log
            # rotated into srch_root (a killed mount's goes the same way once fenced:
            # golden xattr-srch)
            a = await m.fs.mknod(1, b"h", 0o100644, 0, ROOT)
            await m.fs.setxattr(a.ino, name, b"v", 0, ROOT)
            await m.close()
            n.cancel_scope.cancel()
        return a.ino

    ino = trio.run(second)

    async def third():
        async with trio.open_nursery() as n:
            m = await Mount.open(*volume, {"quorum_slot_nr": 0}, n)
            # the previous mount's srch log is a log file of srch_root now
            assert await _search(m, name) == inos[2:] + [ino]
            assert fmt.SRCH_LOG_TYPE in _srch_root_types(m)
            await m.close()
            n.cancel_scope.cancel()

    trio.run(third)
    assert fsck.check(*volume) == []


def test_server_refuses_bad_compaction_commits(volume):
    async def main():
        async with trio.open_nursery() as n:
            m = await Mount.open(*volume, {"quorum_slot_nr": 0}, n)
            m.srch.compact_delay_ms = 3_600_000
            for i in range(4):
                a = await m.fs.mknod(1, b"f%d" % i, 0o100644, 0, ROOT)
                await m.fs.setxattr(a.ino, b"scoutfs.srch.x", b"v", 0, ROOT)
                m.triggers.set("srch_force_log_rotate", 1)
                await m.trans.sync()
            work = await m.client.srch_get_compact()
            assert len(work["inputs"]) == 4
            assert await m.client.srch_get_compact() == work  # a resend gets the same
            lent = work["meta_avail"]
            s, _n = lent[0]
            # avail that was not lent; then an output that is not the blocks it used
            for bad in ({"id": work["id"], "meta_avail": [[1 << 40, 1]]},
                        {"id": work["id"], "meta_avail": [],
                         "output": [s, 1, 1, 1, 0, 0, 0, 0, 0, 0]}):
                with pytest.raises(FsError):
                    await m.client.srch_commit_compact(bad)
                work = await m.client.srch_get_compact()
            # the server survived and a good compaction still works
            assert await m.srch.compact_once()
            assert _srch_root_types(m) == [fmt.SRCH_SORTED_TYPE]
            assert len(await _search(m, b"scoutfs.srch.x")) == 4
            await m.close()
            n.cancel_scope.cancel()

    trio.run(main)
    assert fsck.check(*volume) == []


def test_fsck_checks_srch_blocks(volume):
    async def main():
        async with trio.open_nursery() as n:
            m = await Mount.open(*volume, {"quorum_slot_nr": 0}, n)
            m.srch.compact_delay_ms = 3_600_000
            a = await m.fs.mknod(1, b"f", 0o100644, 0, ROOT)
            await m.fs.setxattr(a.ino, b"scoutfs.srch.x", b"v", 0, ROOT)
            m.triggers.set("srch_force_log_rotate", 1)
            await m.trans.sync()
            await m.close()
            n.cancel_scope.cancel()

    trio.run(main)
    assert fsck.check(*volume) == []
    from fs.block import Device, read_super

    dev = Device(volume[0])
    try:
        sb = read_super(dev)
        b = MetaBlocks(dev, sb.fsid, 16)
        logs, _sorted = srch.root_files(b, sb.srch_root)
        assert len(logs) == 1
        leaf = srch.file_blknos(b, logs[0])[1]
        ref = srch.read_parent(b, logs[0])[0][0]
        buf = bytearray(b.read(ref, fmt.MAGIC_SRCH_BLOCK))
        fmt.SRCH_BLOCK_HDR.pack_into(buf, fmt.HDR_SIZE, 0)  # an empty leaf
        b.write(leaf, ref.seq, fmt.MAGIC_SRCH_BLOCK, buf)
        dev.flush()
    finally:
        dev.close()
    problems = fsck.check(*volume)
    assert any("srch_root" in p and "empty leaf" in p for p in problems), problems
    # its blocks are still the file's: no other problem
    assert len(problems) == 1, problems


def test_compact_delay_ms_option():
    s = srch.Srch(None, None, None, None, None)
    assert s.compact_delay_ms == srch.COMPACT_DELAY_MS_DEFAULT
    s.set_compact_delay_ms("250\n")
    assert s.compact_delay_ms == 250
    for bad in ("", "x", "-1", str(srch.COMPACT_DELAY_MS_MAX + 1)):
        with pytest.raises(FsError) as e:
            s.set_compact_delay_ms(bad)
        assert e.value.errno == errno.EINVAL
    assert s.compact_delay_ms == 250


def test_bad_compaction_work_costs_only_that_compaction():
    """A server's work naming blocks outside the device (or a reserved one) is refused and
    the compaction abandoned, never written."""

    class Client:
        def __init__(self, work):
            self.work = work
            self.commits = []

        async def srch_get_compact(self):
            return self.work

        async def srch_commit_compact(self, p):
            self.commits.append(p)

    from fs.counters import Counters

    b = blocks(64)
    for lent in ([[0, 1]], [[60, 10]]):
        c = Client({"id": 7, "seq": 7, "inputs": [], "meta_avail": lent})
        s = srch.Srch(c, b, b.dev, Counters(), None)
        assert trio.run(s.compact_once) is False
        assert c.commits == [{"id": 7, "abandon": True, "meta_avail": lent}]
        assert s.counters.get("srch_compact_error") == 1
    with pytest.raises(FsError):
        trio.run(srch.Srch(Client({"id": 1}), b, b.dev, Counters(), None).compact_once)


def test_log_rotates_at_its_size_limit(volume, monkeypatch):
    """A log file of LOG_ROTATE_BLOCKS leaves (1 MiB) moves into srch_root at its commit
    without any trigger (leaves of 4 entries here, so 64 entries make 16 leaves)."""
    monkeypatch.setattr(fmt, "SRCH_BLOCK_MAX_ENTRIES", 4)

    async def main():
        async with trio.open_nursery() as n:
            m = await Mount.open(*volume, {"quorum_slot_nr": 0}, n)
            m.srch.compact_delay_ms = 3_600_000
            inos = []
            for i in range(31):
                a = await m.fs.mknod(1, b"f%d" % i, 0o100644, 0, ROOT)
                await m.fs.setxattr(a.ino, b"scoutfs.srch.a", b"v", 0, ROOT)
                await m.fs.setxattr(a.ino, b"scoutfs.srch.b", b"v", 0, ROOT)
                inos.append(a.ino)
            await m.trans.sync()  # 62 entries in 16 leaves: rotated at this commit
            assert _srch_root_types(m) == [fmt.SRCH_LOG_TYPE]
            assert m.trans.lt.srch_file == fmt.EMPTY_SRCH_FILE
            a = await m.fs.mknod(1, b"g", 0o100644, 0, ROOT)
            await m.fs.setxattr(a.ino, b"scoutfs.srch.a", b"v", 0, ROOT)
            await m.trans.sync()  # one leaf: stays the mount's log
            assert _srch_root_types(m) == [fmt.SRCH_LOG_TYPE]
            assert m.trans.lt.srch_file.blocks == 1
            assert await _search(m, b"scoutfs.srch.a") == inos + [a.ino]
            assert m.counters.get("srch_rotate_log") == 1
            await m.close()
            n.cancel_scope.cancel()

    trio.run(main)
    assert fsck.check(*volume) == []
