"""`.totl.` deltas (fs/totl.py): committed from two mounts while the server merges, every
delta is counted exactly once by readers of the stable roots; the combining helpers; the
weak cache."""

from __future__ import annotations

import random

import pytest
import trio

from fs import format as fmt
from fs import server as srv
from fs import totl
from fs.alloc import DataAlloc, MetaAlloc
from fs.block import MetaBlocks
from fs.btree import Btree
from fs.client import Client
from fs.format import Item
from fs.mkfs import make_volume
from fs.testing.memdev import MemDevice
from fs.testing.memnet import check_space, connect_client, start_server

META_SIZE = 32 * 1024 * 1024
DATA_SIZE = 64 * 1024 * 1024
U64 = fmt.U64_MAX


def volume():
    meta, data = MemDevice(META_SIZE, "meta"), MemDevice(DATA_SIZE, "data")
    sb = make_volume(meta, data, {0: ("127.0.0.1", 7000)})
    return meta, data, sb


class DeltaMount:
    """What fs/trans.py does with a transaction's dirty deltas, in miniature: each commit
    adds them to the items its log tree holds (`totl.combine_in_tree`)."""

    def __init__(self, client: Client, meta_dev):
        self.client = client
        self.blocks = MetaBlocks(meta_dev, client.fsid)
        self.lt: fmt.LogTrees | None = None
        self.dirty: dict[fmt.Key, list[int]] = {}

    async def begin(self) -> None:
        self.lt = await self.client.get_log_trees()
        self.meta = MetaAlloc(self.lt.meta_avail)
        self.data = DataAlloc(self.lt.data_avail)

    def delta(self, abc: tuple[int, int, int], total: int, count: int) -> None:
        d = self.dirty.setdefault(fmt.totl_key(*abc), [0, 0])
        d[0] += total
        d[1] += count

    async def commit(self) -> None:
        lt = self.lt
        tree = Btree(self.blocks, lt.item_root)
        tree.begin(lt.get_trans_seq, self.meta.alloc, self.meta.free)
        for k in sorted(self.dirty):
            t, c = self.dirty[k]
            item = totl.combine_in_tree(tree, k, Item(lt.get_trans_seq, 0, fmt.pack_totl(t, c)))
            if item is not None:
                tree.insert(k, item)
        self.dirty.clear()
        lt.item_root = tree.flush()
        lt.max_item_seq = max(lt.max_item_seq, lt.get_trans_seq)
        lt.meta_avail = self.meta.avail.extents()
        lt.data_avail = self.data.avail.extents()
        self.blocks.dev.flush()
        await self.client.commit_log_trees(lt, self.meta.freed.extents(),
                                           self.data.freed.extents())
        await self.begin()


async def read_committed(client: Client, meta, fsid: int) -> tuple[dict, bool]:
    """The totals a reader of the stable roots sees, and whether a merge was in flight."""
    fs_root, logs = await client.get_roots()
    blocks = MetaBlocks(meta, fsid)
    in_flight = any(lt["merged"] is not None for lt in logs)
    return totl.sum_roots(blocks, fs_root, [(lt["item_root"], lt["merged"]) for lt in logs]), \
        in_flight


def expected(model: dict) -> dict:
    return {abc: (t & U64, c & U64) for abc, (t, c) in sorted(model.items())
            if t & U64 or c & U64}


def test_merge_in_flight_counts_each_delta_once(monkeypatch):
    """Two mounts commit totl deltas to the same keys; both trees are finalized and merged
    in small chunks with partial commits, and while the merge runs both mounts keep
    committing deltas to their new open trees.  After every commit, the totals read from
    the stable roots equal the sum of every committed delta: none counted twice (a key
    already in fs_root and still in its finalized tree) or missed."""
    meta, data, sb = volume()
    monkeypatch.setattr(srv, "MERGE_CHUNK", 1)
    monkeypatch.setattr(srv, "MERGE_COMMIT_ITEMS", 3)
    rng = random.Random(11)
    keys = [(rng.randrange(3), rng.randrange(4), i) for i in range(150)]

    async def main():
        async with trio.open_nursery() as nursery:
            server, net = await start_server(nursery, meta, data)
            a = DeltaMount(await connect_client(nursery, net, sb), meta)
            b = DeltaMount(await connect_client(nursery, net, sb), meta)
            await a.begin()
            await b.begin()
            model: dict[tuple[int, int, int], list[int]] = {}
            pending: dict[int, dict] = {id(a): {}, id(b): {}}

            def change(m: DeltaMount, abc) -> None:
                v = rng.randrange(1, 1000)
                sign = -1 if rng.random() < 0.3 else 1  # removals: negative deltas
                m.delta(abc, sign * v, sign)
                p = pending[id(m)].setdefault(abc, [0, 0])
                p[0] += sign * v
                p[1] += sign

            async def commit(m: DeltaMount) -> None:
                await m.commit()
                for abc, (t, c) in pending[id(m)].items():
                    cur = model.setdefault(abc, [0, 0])
                    cur[0] += t
                    cur[1] += c
                pending[id(m)].clear()

            # both mounts fill trees with deltas of the same keys, over several commits
            for _ in range(3):
                for m in (a, b):
                    for abc in keys:
                        change(m, abc)
                    await commit(m)
            # finalize both trees (the merge worker may start on them at once)
            for m in (a, b):
                change(m, keys[0])
                server.triggers.set("log_merge_force_finalize_ours", 1)
                await commit(m)
                assert server.triggers.get("log_merge_force_finalize_ours") == 0
            assert a.lt.nr == 1 and b.lt.nr == 1
            got, _ = await read_committed(a.client, meta, sb.fsid)
            assert got == expected(model)

            done = trio.Event()

            async def merge():
                await server.merge_now()
                done.set()

            nursery.start_soon(merge)
            seen_in_flight = 0
            rounds = 0
            while not done.is_set():
                m = (a, b)[rounds % 2]
                for abc in rng.sample(keys, 5):
                    change(m, abc)
                await commit(m)
                got, in_flight = await read_committed(a.client, meta, sb.fsid)
                assert got == expected(model), f"round {rounds}"
                seen_in_flight += in_flight
                rounds += 1
            assert seen_in_flight >= 3, "no reads while the merge was partly committed"
            # merged: fs_root holds the finalized trees' sums, no status is left
            _fs_root, logs = await a.client.get_roots()
            assert all(lt["merged"] is None for lt in logs)
            assert all(not lt["flags"] & fmt.LOG_TREES_FLAG_FINALIZED for lt in logs)
            got, _ = await read_committed(b.client, meta, sb.fsid)
            assert got == expected(model)
            # and after merging the rest too
            for m in (a, b):
                change(m, keys[1])
                server.triggers.set("log_merge_force_finalize_ours", 1)
                await commit(m)
            await server.merge_now()
            got, _ = await read_committed(b.client, meta, sb.fsid)
            assert got == expected(model)
            assert check_space(meta)["problems"] == []
            nursery.cancel_scope.cancel()

    trio.run(main)


class Crash(Exception):
    pass


def test_merge_resumes_from_its_status_after_a_restart(monkeypatch):
    """A server that stops after a partial merge commit resumes from the recorded key: the
    deltas already in fs_root are not added again."""
    meta, data, sb = volume()
    monkeypatch.setattr(srv, "MERGE_CHUNK", 1)
    monkeypatch.setattr(srv, "MERGE_COMMIT_ITEMS", 5)
    keys = [(1, 2, i) for i in range(40)]

    async def main():
        model: dict = {}
        async with trio.open_nursery() as nursery:
            server, net = await start_server(nursery, meta, data)
            a = DeltaMount(await connect_client(nursery, net, sb), meta)
            await a.begin()
            for abc in keys:
                a.delta(abc, 7, 1)
                model[abc] = [7, 1]
            server.triggers.set("log_merge_force_finalize_ours", 1)
            await a.commit()
            # stop the merge at its third partial commit: the server "crashes" there
            commits = 0
            real_commit = server.commit

            async def commit():
                nonlocal commits
                await real_commit()
                commits += 1
                if commits == 3:
                    raise Crash()

            monkeypatch.setattr(server, "commit", commit)
            with pytest.raises(Crash):
                await server.merge_now()
            monkeypatch.setattr(server, "commit", real_commit)
            got, in_flight = await read_committed(a.client, meta, sb.fsid)
            assert in_flight and got == expected(model)
            nursery.cancel_scope.cancel()
        async with trio.open_nursery() as nursery:
            server, net = await start_server(nursery, meta, data)
            c = await connect_client(nursery, net, sb)
            await server.merge_now()  # (the merge worker may have resumed it already)
            got, in_flight = await read_committed(c, meta, sb.fsid)
            assert not in_flight and got == expected(model)
            fs_root, _logs = await c.get_roots()
            fs_sums = totl.sum_roots(MetaBlocks(meta, sb.fsid), fs_root, [])
            assert fs_sums == expected(model)
            nursery.cancel_scope.cancel()

    trio.run(main)


def test_combine_in_tree_and_merge_into_sum_and_vanish():
    meta, data, sb = volume()
    blocks = MetaBlocks(meta, sb.fsid)
    alloc = MetaAlloc([(fmt.META_DEV_START_BLKNO + 100, 50)])
    tree = Btree(blocks, fmt.EMPTY_ROOT)
    tree.begin(5, alloc.alloc, alloc.free)
    k = fmt.totl_key(1, 2, 3)
    it = totl.combine_in_tree(tree, k, Item(5, 0, fmt.pack_totl(10, 1)))
    tree.insert(k, it)
    it = totl.combine_in_tree(tree, k, Item(6, 0, fmt.pack_totl(5, 1)))
    assert fmt.unpack_totl(it.value) == (15, 2) and it.seq == 6
    tree.insert(k, it)
    # a removal of both: the item goes
    assert totl.combine_in_tree(tree, k, Item(7, 0, fmt.pack_totl(-15, -2))) is None
    assert tree.lookup(k) is None
    # a zero delta on an empty tree stores nothing
    assert totl.combine_in_tree(tree, k, Item(7, 0, fmt.pack_totl(0, 0))) is None
    fs_root = Btree(blocks, fmt.EMPTY_ROOT)
    fs_root.begin(8, alloc.alloc, alloc.free)
    totl.merge_into(fs_root, k, Item(3, 0, fmt.pack_totl(4, 1)))
    totl.merge_into(fs_root, k, Item(9, 0, fmt.pack_totl(-1, 0)))
    assert fmt.unpack_totl(fs_root.lookup(k).value) == (3, 1)
    totl.merge_into(fs_root, k, Item(9, 0, fmt.pack_totl(-3, -1)))
    assert fs_root.lookup(k) is None


def test_sum_trees_skips_what_a_merge_already_put_in_fs_root():
    def items(d):
        return [(fmt.totl_key(*abc), Item(1, 0, fmt.pack_totl(*v))) for abc, v in d.items()]
    fs_root = items({(0, 0, 1): (10, 1), (0, 0, 2): (20, 2)})  # merged: keys up to (0,0,2)
    fin = items({(0, 0, 1): (10, 1), (0, 0, 2): (20, 2), (0, 0, 3): (30, 3)})
    open_tree = items({(0, 0, 1): (1, 1), (0, 0, 3): (-30, -3)})
    got = totl.sum_trees(fs_root, [(fin, fmt.totl_key(0, 0, 2)), (open_tree, None)])
    assert got == {(0, 0, 1): (11, 2), (0, 0, 2): (20, 2)}  # (0, 0, 3)'s zero sum vanishes


def test_weak_cache_expires_and_drops():
    now = [100.0]
    c = totl.WeakCache(clock=lambda: now[0])
    assert c.get() is None
    c.put({(1, 2, 3): (4, 1)})
    now[0] += totl.WEAK_CACHE_S - 0.1
    assert c.get() == {(1, 2, 3): (4, 1)}
    now[0] += 0.2
    assert c.get() is None
    c.put({})
    c.drop()
    assert c.get() is None


# --------------------------------------------------------------------------- xattr changes


def test_xattr_changes_write_deltas_in_their_transaction():
    """set, replace, remove and file deletion each add their delta (fakes keep them summed,
    as the forest reads them); refused changes add nothing."""
    from fs import inode as inode_mod
    from fs import xattr
    from fs.errors import FsError
    from fs.testing.fakes import make_context

    ino = 1025
    root = inode_mod.Ctx(uid=0, gid=0, pid=1)

    def totals(mctx):
        return {(k[1], k[3], k[4]): fmt.unpack_totl(v) for k, v in mctx.items.data.items()
                if k[0] == fmt.ZONE_XATTR_TOTL}

    async def main():
        mctx = make_context(2)
        async with mctx.locks.inodes([ino], 2) as locks, \
                inode_mod.index_lock(mctx) as il, mctx.trans.hold():
            inode = inode_mod.new_inode(mctx, ino, 0o100644, 0, 0, (5, 0))
            inode_mod.store_inode(mctx, inode, locks[ino], il)
        await xattr.setxattr(mctx, ino, b"scoutfs.totl.a.1.2.3", b"10", 0, root)
        await xattr.setxattr(mctx, ino, b"scoutfs.hide.totl.b.1.2.3", b"0x20", 0, root)
        await xattr.setxattr(mctx, ino, b"scoutfs.totl.c.4.5.6", b"7", 0, root)
        assert totals(mctx) == {(1, 2, 3): (42, 2), (4, 5, 6): (7, 1)}
        await xattr.setxattr(mctx, ino, b"scoutfs.totl.a.1.2.3", b"1", xattr.XATTR_REPLACE,
                             root)
        assert totals(mctx)[(1, 2, 3)] == (33, 2)
        for value, flags in ((b"+1", 0), (b"5", xattr.XATTR_CREATE)):
            with pytest.raises(FsError):
                await xattr.setxattr(mctx, ino, b"scoutfs.totl.a.1.2.3", value, flags, root)
        assert totals(mctx)[(1, 2, 3)] == (33, 2)
        await xattr.removexattr(mctx, ino, b"scoutfs.totl.c.4.5.6", root)
        assert totals(mctx) == {(1, 2, 3): (33, 2)}
        async with mctx.locks.inodes([ino], 2) as locks, totl.totl_lock(mctx) as tl, \
                xattr.indx_lock(mctx) as xl, mctx.trans.hold():
            await xattr.delete_all(mctx, ino, locks[ino], xl, tl)
        assert totals(mctx) == {}

    trio.run(main)
