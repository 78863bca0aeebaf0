"""The server, its client and the lock server, over the in-memory network and devices."""

from __future__ import annotations

import errno
import random

import pytest
import trio
import trio.testing

from fs import format as fmt
from fs import lock_server as ls
from fs import server as srv
from fs.alloc import DataAlloc, MetaAlloc
from fs.block import MetaBlocks, read_super
from fs.btree import Btree
from fs.client import Client
from fs.counters import Counters
from fs.errors import FsError
from fs.format import Item
from fs.mkfs import make_volume
from fs.testing.memdev import MemDevice
from fs.testing.memnet import MemNet, check_space, connect_client, start_server

META_SIZE = 32 * 1024 * 1024  # 512 meta blocks
DATA_SIZE = 64 * 1024 * 1024  # 16384 data blocks


def volume():
    meta, data = MemDevice(META_SIZE, "meta"), MemDevice(DATA_SIZE, "data")
    sb = make_volume(meta, data, {0: ("127.0.0.1", 7000)})
    return meta, data, sb


def ikey(ino: int, n: int = 0) -> fmt.Key:
    return (fmt.ZONE_FS, ino, fmt.FS_XATTR, n, 0, 0)


class FakeMount:
    """A minimal transaction engine over the Client: what fs/trans.py does, in miniature."""

    def __init__(self, client: Client, meta_dev):
        self.client = client
        self.blocks = MetaBlocks(meta_dev, client.fsid)
        self.lt: fmt.LogTrees | None = None

    async def begin(self) -> None:
        self.lt = await self.client.get_log_trees()
        self.meta = MetaAlloc(self.lt.meta_avail)
        self.data = DataAlloc(self.lt.data_avail)

    def write(self, items: dict) -> None:
        """items: key -> bytes, or None for a tombstone."""
        lt = self.lt
        tree = Btree(self.blocks, lt.item_root)
        tree.begin(lt.get_trans_seq, self.meta.alloc, self.meta.free)
        for k, v in items.items():
            if v is None:
                tree.insert(k, Item(lt.get_trans_seq, fmt.ITEM_FLAG_DELETION, b""))
            else:
                tree.insert(k, Item(lt.get_trans_seq, 0, v))
        lt.item_root = tree.flush()
        lt.max_item_seq = max(lt.max_item_seq, lt.get_trans_seq)

    async def commit(self) -> tuple[list, list]:
        lt = self.lt
        lt.meta_avail = self.meta.avail.extents()
        lt.data_avail = self.data.avail.extents()
        self.blocks.dev.flush()
        mf, df = self.meta.freed.extents(), self.data.freed.extents()
        await self.client.commit_log_trees(lt, mf, df)
        await self.begin()
        return mf, df


def run(fn, clock=None):
    if clock is None:
        trio.run(fn)
    else:
        trio.run(fn, clock=clock)


# --------------------------------------------------------------------------- greeting


def test_greeting_checks_and_mounted_clients():
    meta, data, sb = volume()

    async def main():
        async with trio.open_nursery() as nursery:
            server, net = await start_server(nursery, meta, data)
            for kw in ({"fsid": sb.fsid ^ 1, "fmt_vers": sb.fmt_vers},
                       {"fsid": sb.fsid, "fmt_vers": 1}):
                with pytest.raises(FsError) as ei:
                    await Client.connect_stream(await net.connect(), nursery=nursery, **kw)
                assert ei.value.errno == errno.EINVAL
            # requests before a greeting are refused
            from fs.net import Cmd, Connection
            raw = Connection(await net.connect(), "raw")
            await nursery.start(raw.run)
            with pytest.raises(FsError) as ei:
                await raw.request(Cmd.STATFS)
            assert ei.value.errno == errno.EINVAL
            await raw.aclose()

            c = await connect_client(nursery, net, sb, quorum=True)
            assert c.server_term == 0
            # committed before the reply
            on_disk = read_super(meta)
            tree = Btree(MetaBlocks(meta, sb.fsid), on_disk.mounted_clients)
            item = tree.lookup(fmt.mounted_client_key(c.rid))
            assert item is not None
            assert fmt.unpack_mounted_client(item.value)[2] == fmt.MOUNTED_CLIENT_FLAG_QUORUM
            await c.farewell()
            tree = Btree(MetaBlocks(meta, sb.fsid), read_super(meta).mounted_clients)
            assert tree.lookup(fmt.mounted_client_key(c.rid)) is None
            await c.close()
            await server.shutdown()

    run(main)


def test_alloc_inodes_never_repeats_across_restart_and_crash():
    meta, data, sb = volume()
    seen: list[tuple[int, int]] = []

    async def session():
        async with trio.open_nursery() as nursery:
            server, net = await start_server(nursery, meta, data)
            c = await connect_client(nursery, net, sb)
            for n in (1, 1024, 7):
                seen.append(await c.alloc_inodes(n))
            with pytest.raises(FsError) as ei:
                await c.alloc_inodes(0)
            assert ei.value.errno == errno.EINVAL
            nursery.cancel_scope.cancel()  # no farewell: the server just dies

    for _ in range(3):
        run(session)
        meta.crash()  # lose anything not flushed
    assert seen[0][0] == fmt.FIRST_ALLOC_INO
    inos = [i for first, nr in seen for i in range(first, first + nr)]
    assert len(inos) == len(set(inos))
    assert sorted(inos) == inos


# --------------------------------------------------------------------------- log trees


def test_log_tree_cycles_delay_reuse_of_freed_blocks():
    meta, data, sb = volume()

    async def main():
        async with trio.open_nursery() as nursery:
            server, net = await start_server(nursery, meta, data)
            c = await connect_client(nursery, net, sb)
            m = FakeMount(c, meta)
            await m.begin()
            first = m.lt
            assert first.rid == c.rid and first.nr == 0
            assert first.get_trans_seq > first.commit_trans_seq
            assert sum(n for _s, n in first.meta_avail) > 0
            assert sum(n for _s, n in first.data_avail) > 0
            seqs = [first.get_trans_seq]
            for gen in range(6):
                m.write({ikey(1000 + i): bytes([gen]) * 100 for i in range(200)})
                before = server.nr_commits
                meta_freed, data_freed = await m.commit()
                seqs.append(m.lt.get_trans_seq)
                # COMMIT and GET were one server commit each
                assert server.nr_commits == before + 2
                if gen == 0:
                    assert not meta_freed  # nothing committed before: nothing to free
                    continue
                assert meta_freed  # COW replaced the previous commit's blocks
                for s, n in meta_freed:
                    # the GET's commit put the COMMIT's frees on disk in the pending list
                    # and made them free afterwards: not lent in that GET
                    assert not any(lo <= s < lo + ln or s <= lo < s + n
                                   for lo, ln in m.lt.meta_avail)
                    assert server.meta_free.contains(s, n)
            assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
            # the records and roots
            fs_root, logs = await c.get_roots()
            assert fs_root == read_super(meta).fs_root
            assert [(lt["rid"], lt["nr"]) for lt in logs] == [(c.rid, 0)]
            assert logs[0]["item_root"] == m.lt.item_root
            # last seq: below our open transaction
            assert await c.get_last_seq() == m.lt.get_trans_seq - 1
            nursery.cancel_scope.cancel()

    run(main)


def test_freed_blocks_wait_for_the_next_commit():
    """Directly on the server's sets: freed in commit N, free only once N+1 is on disk."""
    meta, data, sb = volume()

    async def main():
        async with trio.open_nursery() as nursery:
            server, net = await start_server(nursery, meta, data)
            c = await connect_client(nursery, net, sb)
            m = FakeMount(c, meta)
            await m.begin()
            m.write({ikey(5): b"x"})
            await m.commit()
            m.write({ikey(5): b"y"})
            lt = m.lt
            lt.meta_avail = m.meta.avail.extents()
            lt.data_avail = m.data.avail.extents()
            freed = m.meta.freed.extents()
            assert freed
            await c.commit_log_trees(lt, freed, [])
            for s, n in freed:
                assert not server.meta_free.intersect(s, n)
                assert server.meta_pend_prev.contains(s, n)
            on_disk = check_space(meta)
            assert on_disk["problems"] == []
            assert on_disk["meta"]["pending"] >= sum(n for _s, n in freed)
            await c.alloc_inodes(1)  # any other commit
            for s, n in freed:
                assert server.meta_free.contains(s, n)
            nursery.cancel_scope.cancel()

    run(main)


def test_commit_checks():
    meta, data, sb = volume()

    async def main():
        async with trio.open_nursery() as nursery:
            server, net = await start_server(nursery, meta, data)
            c = await connect_client(nursery, net, sb)
            m = FakeMount(c, meta)
            await m.begin()
            lt = m.lt
            bad = fmt.LogTrees(**{f: getattr(lt, f) for f in lt.__slots__})
            bad.meta_avail = [(1, 1)]  # never lent
            with pytest.raises(FsError) as ei:
                await c.commit_log_trees(bad, [], [])
            assert ei.value.errno == errno.EINVAL
            free_blk = server.meta_free.extents()[0][0]
            with pytest.raises(FsError) as ei:  # a double free
                await c.commit_log_trees(lt, [(free_blk, 1)], [])
            assert ei.value.errno == errno.EINVAL
            bad.meta_avail, bad.nr = lt.meta_avail, 99
            with pytest.raises(FsError) as ei:
                await c.commit_log_trees(bad, [], [])
            assert ei.value.errno == errno.ENOENT
            await m.commit()  # the real one still works
            assert check_space(meta)["problems"] == []
            nursery.cancel_scope.cancel()

    run(main)


def test_space_accounting_after_many_cycles():
    meta, data, sb = volume()
    rng = random.Random(7)

    async def main():
        async with trio.open_nursery() as nursery:
            server, net = await start_server(nursery, meta, data)
            mounts = [FakeMount(await connect_client(nursery, net, sb), meta) for _ in range(2)]
            for m in mounts:
                await m.begin()
            extents: dict[int, dict[fmt.Key, tuple[int, int]]] = {0: {}, 1: {}}
            for gen in range(30):
                i = gen % 2
                m = mounts[i]
                items: dict = {}
                # items of this mount's own inodes
                for _ in range(rng.randrange(1, 80)):
                    k = ikey(10_000 * (i + 1) + rng.randrange(300))
                    items[k] = None if rng.random() < 0.2 else rng.randbytes(rng.randrange(200))
                # data: allocate some extents, free some older ones
                for _ in range(rng.randrange(3)):
                    start, n = m.data.alloc(rng.randrange(1, 64))
                    k = fmt.extent_key(10_000 * (i + 1), start + n - 1, n)
                    extents[i][k] = (start, n)
                    items[k] = fmt.pack_extent_val(start, 0)
                if extents[i] and rng.random() < 0.5:
                    k = rng.choice(sorted(extents[i]))
                    start, n = extents[i].pop(k)
                    m.data.free(start, n)
                    items[k] = None
                m.write(items)
                await m.commit()
                if gen % 5 == 4:
                    server.triggers.set("log_merge_force_finalize_ours", 1)
                if gen % 7 == 6:
                    await server.merge_now()
                st = await m.client.statfs()
                chk = check_space(meta)
                assert chk["problems"] == [], chk["problems"]
                assert st["free_meta_blocks"] + chk["meta"]["used"] == chk["meta"]["total"]
                assert st["free_data_blocks"] + chk["data"]["used"] == chk["data"]["total"]
                assert st["total_meta_blocks"] == sb.total_meta_blocks
                lent = chk["meta"]["lent"]
                assert lent <= srv.META_LEND_TARGET * 2
            assert server.counters.get("log_merge_complete") >= 1
            nursery.cancel_scope.cancel()

    run(main)


def test_lending_is_bounded_by_free_space():
    meta, data, sb = volume()

    async def main():
        async with trio.open_nursery() as nursery:
            server, net = await start_server(nursery, meta, data)
            free_data = server.data_free.total
            free_meta = server.meta_free.total
            c = await connect_client(nursery, net, sb)
            lt = await c.get_log_trees()
            got_data = sum(n for _s, n in lt.data_avail)
            got_meta = sum(n for _s, n in lt.meta_avail)
            assert 0 < got_data <= max(free_data // srv.LEND_FRACTION, srv.DATA_LEND_MIN)
            assert 0 < got_meta <= max((free_meta - srv.SERVER_META_RESERVE)
                                       // srv.LEND_FRACTION, srv.META_LEND_MIN)
            st = await c.statfs()
            # lent space is still free to the user
            assert st["free_data_blocks"] == free_data
            nursery.cancel_scope.cancel()

    run(main)


# --------------------------------------------------------------------------- merge


def test_merge_of_finalized_trees_matches_model():
    meta, data, sb = volume()
    rng = random.Random(3)

    async def main():
        async with trio.open_nursery() as nursery:
            counters = Counters()
            server, net = await start_server(nursery, meta, data, counters=counters)
            assert await server.merge_now() is False
            assert counters.get("log_merge_no_finalized") == 1
            c = await connect_client(nursery, net, sb)
            m = FakeMount(c, meta)
            await m.begin()
            model: dict[fmt.Key, bytes] = {}
            for gen in range(8):
                items: dict = {}
                for _ in range(60):
                    k = ikey(2000 + rng.randrange(120))
                    if k in model and rng.random() < 0.3:
                        items[k] = None
                    else:
                        items[k] = rng.randbytes(8)
                for k, v in items.items():
                    if v is None:
                        model.pop(k, None)
                    else:
                        model[k] = v
                m.write(items)
                if gen in (2, 5):
                    server.triggers.set("log_merge_force_finalize_ours", 1)
                await m.commit()
                if gen in (2, 5):
                    assert server.triggers.get("log_merge_force_finalize_ours") == 0
                    assert m.lt.nr == (1 if gen == 2 else 2)
                if gen == 5:
                    # two finalized trees wait (the worker may have merged the first)
                    await server.merge_now()
            await server.merge_now()
            fs_root, logs = await c.get_roots()
            assert all(not lt["flags"] & fmt.LOG_TREES_FLAG_FINALIZED for lt in logs)
            blocks = MetaBlocks(meta, sb.fsid)
            merged: dict[fmt.Key, Item] = {}
            for root in [fs_root] + [lt["item_root"] for lt in logs]:
                for k, it in Btree(blocks, root).items(fmt.KEY_MIN, fmt.KEY_MAX):
                    if k not in merged or it.seq > merged[k].seq:
                        merged[k] = it
            view = {k: it.value for k, it in merged.items()
                    if not it.deleted and k[0] == fmt.ZONE_FS and k[2] == fmt.FS_XATTR}
            assert view == model
            # fs_root alone holds everything written before the last finalize
            fs_items = dict(Btree(blocks, fs_root).items(fmt.KEY_MIN, fmt.KEY_MAX))
            assert fmt.inode_key(fmt.ROOT_INO) in fs_items  # mkfs's root inode survived
            assert counters.get("log_merge_start") == counters.get("log_merge_complete") >= 2
            assert check_space(meta)["problems"] == []
            nursery.cancel_scope.cancel()

    run(main)


def test_merge_tombstones():
    meta, data, sb = volume()

    async def main():
        async with trio.open_nursery() as nursery:
            server, net = await start_server(nursery, meta, data)
            a = FakeMount(await connect_client(nursery, net, sb), meta)
            b = FakeMount(await connect_client(nursery, net, sb), meta)
            await a.begin()
            await b.begin()
            # fs_root gets k1 and k2
            a.write({ikey(1): b"one", ikey(2): b"two"})
            server.triggers.set("log_merge_force_finalize_ours", 1)
            await a.commit()
            await server.merge_now()
            # b (an open tree) has an older k3; a deletes k1 and k3 and finalizes
            b.write({ikey(3): b"three"})
            await b.commit()
            a.write({ikey(1): None, ikey(3): None})
            server.triggers.set("log_merge_force_finalize_ours", 1)
            await a.commit()
            await server.merge_now()
            fs_root, logs = await a.client.get_roots()
            blocks = MetaBlocks(meta, sb.fsid)
            fs_items = dict(Btree(blocks, fs_root).items(fmt.KEY_MIN, fmt.KEY_MAX))
            assert ikey(1) not in fs_items  # deleted, tombstone not stored
            assert fs_items[ikey(2)].value == b"two"
            # k3's tombstone must keep hiding b's older version
            assert fs_items[ikey(3)].deleted
            b_root = [lt["item_root"] for lt in logs if lt["rid"] == b.client.rid][0]
            assert Btree(blocks, b_root).lookup(ikey(3)).seq < fs_items[ikey(3)].seq
            nursery.cancel_scope.cancel()

    run(main)


def test_merge_reads_open_trees_as_their_clients_commit(monkeypatch):
    """A merge awaits between chunks of items, and meanwhile the clients of open log trees
    commit newer roots; the blocks of their old roots are freed and may be written by
    whoever gets them next.  The tombstone checks after that must use the new roots."""
    meta, data, sb = volume()
    monkeypatch.setattr(srv, "MERGE_CHUNK", 1)

    async def main():
        async with trio.open_nursery() as nursery:
            server, net = await start_server(nursery, meta, data)
            a = FakeMount(await connect_client(nursery, net, sb), meta)
            b = FakeMount(await connect_client(nursery, net, sb), meta)
            await a.begin()
            await b.begin()
            # b's open tree holds old versions of the keys a's finalized tree deletes; the
            # deletions sort after 300 plain items, so the merge first awaits 300 times
            doomed = [ikey(1000 + i) for i in range(10)]
            b.write({k: b"old" for k in doomed})
            await b.commit()
            a.write({**{ikey(i): b"v" for i in range(1, 301)}, **dict.fromkeys(doomed)})
            server.triggers.set("log_merge_force_finalize_ours", 1)
            await a.commit()
            merged = []

            async def merge():
                merged.append(await server.merge_now())

            nursery.start_soon(merge)
            old_blocks = {r.blkno for r, _lvl in Btree(b.blocks, b.lt.item_root).block_refs()}
            b.write({ikey(5000): b"new"})
            await b.commit()
            assert not merged, "the merge ended before b committed: nothing is tested"
            new_blocks = {r.blkno for r, _lvl in Btree(b.blocks, b.lt.item_root).block_refs()}
            for blkno in old_blocks - new_blocks:  # freed: as if reused by another mount
                meta.write(blkno * fmt.META_BLOCK_SIZE, bytes(fmt.META_BLOCK_SIZE))
            while not merged:
                await trio.sleep(0.01)
            assert merged == [True]
            fs_root, _logs = await a.client.get_roots()
            fs_items = dict(Btree(MetaBlocks(meta, sb.fsid), fs_root).items(fmt.KEY_MIN,
                                                                            fmt.KEY_MAX))
            assert all(fs_items[k].deleted for k in doomed)  # still hiding b's versions
            nursery.cancel_scope.cancel()

    run(main)


def test_tall_log_tree_is_finalized(monkeypatch):
    meta, data, sb = volume()
    monkeypatch.setattr(srv, "FINALIZE_HEIGHT", 1)

    async def main():
        async with trio.open_nursery() as nursery:
            server, net = await start_server(nursery, meta, data)
            m = FakeMount(await connect_client(nursery, net, sb), meta)
            await m.begin()
            m.write({ikey(i): b"v" * 1000 for i in range(200)})  # > one leaf
            await m.commit()
            assert m.lt.nr == 1
            await server.merge_now()
            _fs_root, logs = await m.client.get_roots()
            assert [lt["nr"] for lt in logs] == [1]
            nursery.cancel_scope.cancel()

    run(main)


# --------------------------------------------------------------------------- farewell, reclaim


def test_farewell_finalizes_and_merges():
    meta, data, sb = volume()

    async def main():
        async with trio.open_nursery() as nursery:
            server, net = await start_server(nursery, meta, data)
            m = FakeMount(await connect_client(nursery, net, sb), meta)
            await m.begin()
            m.write({ikey(7): b"seven"})
            await m.commit()
            await m.client.farewell()
            await m.client.close()
            await server.merge_now()
            sb2 = read_super(meta)
            blocks = MetaBlocks(meta, sb.fsid)
            assert Btree(blocks, sb2.fs_root).lookup(ikey(7)).value == b"seven"
            assert list(Btree(blocks, sb2.logs_root).items(fmt.KEY_MIN, fmt.KEY_MAX)) == []
            chk = check_space(meta)
            assert chk["problems"] == [] and chk["meta"]["lent"] == 0
            assert chk["data"]["lent"] == 0
            nursery.cancel_scope.cancel()

    run(main)


def test_reclaim_of_vanished_rid_after_recovery_timeout():
    meta, data, sb = volume()
    state = {}

    async def first_life():
        async with trio.open_nursery() as nursery:
            server, net = await start_server(nursery, meta, data)
            m = FakeMount(await connect_client(nursery, net, sb), meta)
            await m.begin()
            m.write({ikey(9): b"nine"})
            await m.commit()  # committed, then the mount and the server die
            state["rid"] = m.client.rid
            state["lent"] = sum(n for _s, n in m.lt.data_avail)
            nursery.cancel_scope.cancel()

    run(first_life)
    meta.crash()
    clock = trio.testing.MockClock(autojump_threshold=0)

    async def second_life():
        async with trio.open_nursery() as nursery:
            counters = Counters()
            server, net = await start_server(nursery, meta, data, counters=counters,
                                             recovery_timeout=30.0)
            assert server.recovering == {state["rid"]}
            other = await connect_client(nursery, net, sb)
            await trio.sleep(29)
            assert server.fence_requests == {}
            await trio.sleep(2)
            # not recovered in time: fenced first, reclaimed only once the agent says so
            req = server.fence_requests[state["rid"]]
            assert req.reason == "client_recovery" and not req.fenced
            await trio.sleep(5)
            assert req.elapsed_secs() == 6  # requested at 30 s, now 36 s
            assert counters.get("reclaimed_open_logs") == 0
            assert server.recovering == {state["rid"]}
            server.answer_fence(state["rid"], fenced=True)
            await trio.testing.wait_all_tasks_blocked()
            assert counters.get("reclaimed_open_logs") == 1
            assert server.fence_requests == {} and server.recovering == set()
            await server.merge_now()
            sb2 = read_super(meta)
            blocks = MetaBlocks(meta, sb.fsid)
            assert Btree(blocks, sb2.fs_root).lookup(ikey(9)).value == b"nine"
            assert Btree(blocks, sb2.mounted_clients).lookup(
                fmt.mounted_client_key(state["rid"])) is None
            assert Btree(blocks, sb2.mounted_clients).lookup(
                fmt.mounted_client_key(other.rid)) is not None
            chk = check_space(meta)
            assert chk["problems"] == []
            assert chk["data"]["lent"] == 0  # the dead mount's lent space came back
            # a reclaimed rid may not come back
            with pytest.raises(FsError):
                await connect_client(nursery, net, sb, rid=state["rid"])
            nursery.cancel_scope.cancel()

    run(second_life, clock)


def test_reconnect_timeout_reclaims_a_dropped_client():
    meta, data, sb = volume()
    clock = trio.testing.MockClock(autojump_threshold=0)

    async def main():
        async with trio.open_nursery() as nursery:
            server, net = await start_server(nursery, meta, data, reconnect_timeout=20.0)
            m = FakeMount(await connect_client(nursery, net, sb), meta)
            await m.begin()
            rid = m.client.rid
            await m.client.abandon()  # gone without a farewell
            await trio.sleep(19)
            assert server.fence_requests == {}
            await trio.sleep(2)
            assert server.fence_requests[rid].reason == "client_reconnect"
            assert server.mounted.lookup(fmt.mounted_client_key(rid)) is not None
            server.answer_fence(rid, fenced=True)
            await trio.testing.wait_all_tasks_blocked()
            assert server.mounted.lookup(fmt.mounted_client_key(rid)) is None
            assert server.fence_requests == {}
            assert check_space(meta)["problems"] == []
            nursery.cancel_scope.cancel()

    run(main, clock)


# --------------------------------------------------------------------------- lock server


class FakeClients:
    """Records invalidations; the test answers them."""

    def __init__(self):
        self.sent: list[tuple[int, fmt.Key, int, int]] = []
        self.answers: dict[tuple[int, fmt.Key], trio.Event] = {}

    async def send(self, rid, key, old, new):
        ev = trio.Event()
        self.answers[(rid, key)] = ev
        self.sent.append((rid, key, old, new))
        await ev.wait()

    def answer(self, rid, key):
        self.answers.pop((rid, key)).set()


def test_compatibility_table():
    R, W, WO, N = ls.LOCK_READ, ls.LOCK_WRITE, ls.LOCK_WRITE_ONLY, ls.LOCK_NULL
    # other rids
    assert ls.compatible(1, R, 2, R)
    assert ls.compatible(1, WO, 2, WO)
    for g, r in ((R, W), (W, R), (W, W), (R, WO), (WO, R), (W, WO), (WO, W)):
        assert not ls.compatible(1, g, 2, r), (g, r)
    for g in (R, W, WO):
        assert ls.compatible(1, g, 2, N)  # NULL is compatible with other rids
        assert not ls.compatible(1, g, 1, N)  # but never with the same rid
    assert ls.compatible(1, R, 1, W)  # own upgrade
    assert ls.invalidation_mode(W, R) == R
    assert ls.invalidation_mode(W, W) == N
    assert ls.invalidation_mode(R, W) == N
    assert ls.invalidation_mode(WO, R) == N


def test_lock_server_state_machine():
    K = fmt.inode_group_range(1024)[0]
    R, W, WO, N = ls.LOCK_READ, ls.LOCK_WRITE, ls.LOCK_WRITE_ONLY, ls.LOCK_NULL
    seqs = iter(range(100, 200))

    async def main():
        fake = FakeClients()
        server = ls.LockServer(lambda: next(seqs), fake.send)
        async with trio.open_nursery() as nursery:
            server.start(nursery)
            grants = {}

            async def req(name, rid, old, new):
                grants[name] = await server.request(rid, K, old, new, 0)

            # compatible readers are granted at once
            await req("a1", 1, N, R)
            await req("b1", 2, N, R)
            assert grants["a1"]["mode"] == R and grants["a1"]["write_seq"] == 0
            assert server.locks[K].granted == {1: R, 2: R}
            # rid 1 upgrades to WRITE: rid 2's READ is invalidated to NULL, rid 1 keeps READ
            nursery.start_soon(req, "a2", 1, R, W)
            # then rid 2 asks for READ again: queued behind the upgrade (arrival order).
            # It says it holds READ (a request with old_mode NULL would tell the server
            # it already dropped it: an implied answer to the invalidation)
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(req, "b2", 2, R, R)
            await trio.testing.wait_all_tasks_blocked()
            assert fake.sent == [(2, K, R, N)]
            assert "a2" not in grants and "b2" not in grants
            assert server.locks[K].invalidated == {2: N}
            fake.answer(2, K)
            await trio.testing.wait_all_tasks_blocked()
            assert grants["a2"] == {"key": list(K), "mode": W, "write_seq": 100}
            # b2 now conflicts with rid 1's WRITE: invalidated down to READ
            assert fake.sent[-1] == (1, K, W, R)
            assert "b2" not in grants
            fake.answer(1, K)
            await trio.testing.wait_all_tasks_blocked()
            assert grants["b2"]["mode"] == R
            assert server.locks[K].granted == {1: R, 2: R}
            # WRITE_ONLY vs READ conflict both ways; WO+WO compatible
            nursery.start_soon(req, "a3", 1, R, WO)
            await trio.testing.wait_all_tasks_blocked()
            assert fake.sent[-1] == (2, K, R, N)
            fake.answer(2, K)
            await trio.testing.wait_all_tasks_blocked()
            assert grants["a3"]["mode"] == WO and grants["a3"]["write_seq"] == 101
            await req("b3", 2, N, WO)
            assert server.locks[K].granted == {1: WO, 2: WO}
            assert grants["b3"]["write_seq"] == 102
            # NULL request: invalidates the requester itself, then is granted untracked
            nursery.start_soon(req, "a4", 1, WO, N)
            await trio.testing.wait_all_tasks_blocked()
            assert fake.sent[-1] == (1, K, WO, N)
            fake.answer(1, K)
            await trio.testing.wait_all_tasks_blocked()
            assert grants["a4"]["mode"] == N
            assert server.locks[K].granted == {2: WO}
            # a departed rid: its grants and pending invalidations vanish
            nursery.start_soon(req, "a5", 1, N, W)
            await trio.testing.wait_all_tasks_blocked()
            assert fake.sent[-1] == (2, K, WO, N)
            server.remove_rid(2)
            await trio.testing.wait_all_tasks_blocked()
            assert grants["a5"]["mode"] == W
            assert server.locks[K].granted == {1: W}
            assert server.dump() == [(K, "granted", 1, W)]
            server.remove_rid(1)
            assert server.locks == {}
            fake.answers.clear()
            nursery.cancel_scope.cancel()

    run(main)


def test_lock_invalidation_over_the_network():
    meta, data, sb = volume()
    K = fmt.inode_group_range(1024)[0]
    R, W = ls.LOCK_READ, ls.LOCK_WRITE

    async def main():
        async with trio.open_nursery() as nursery:
            server, net = await start_server(nursery, meta, data)
            a = await connect_client(nursery, net, sb)
            b = await connect_client(nursery, net, sb)
            seen = []

            async def inval_a(key, mode, old_mode=None):
                seen.append(("a", key, mode))

            async def inval_b(key, mode, old_mode=None):
                await trio.sleep(0.01)
                seen.append(("b", key, mode))

            a.set_invalidate_handler(inval_a)
            b.set_invalidate_handler(inval_b)
            ga = await a.lock_request(K, 0, W, 0)
            assert ga["mode"] == W and ga["key"] == K and ga["write_seq"] > 0
            gb = await b.lock_request(K, 0, R, 0)
            assert seen == [("a", K, R)]  # a's WRITE dropped to READ for b's READ
            assert gb["mode"] == R
            ga2 = await a.lock_request(K, R, W, ga["write_seq"])
            assert seen[-1] == ("b", K, 0)
            assert ga2["write_seq"] > ga["write_seq"]
            # farewell drops a's locks: b gets WRITE without invalidating anyone
            await a.farewell()
            n = len(seen)
            gb2 = await b.lock_request(K, 0, W, 0)
            assert gb2["mode"] == W and len(seen) == n
            nursery.cancel_scope.cancel()

    run(main)


def test_tcp_server_and_client():
    meta, data, sb = volume()

    async def main():
        async with trio.open_nursery() as nursery:
            server = srv.Server(meta, data)
            await nursery.start(server.serve_tcp, "127.0.0.1", 0)
            addr, port = server.listen_addr
            c = await Client.connect_tcp(addr, port, fsid=sb.fsid, fmt_vers=sb.fmt_vers,
                                         nursery=nursery, quorum=True)
            first, nr = await c.alloc_inodes(10)
            assert nr == 10
            st = await c.statfs()
            assert st["next_ino"] == first + 10
            item = server.mounted.lookup(fmt.mounted_client_key(c.rid))
            assert fmt.unpack_mounted_client(item.value)[0] == "127.0.0.1"
            await c.farewell()
            await c.close()
            await server.shutdown()

    run(main)


def test_memnet_is_a_listener():
    assert isinstance(MemNet(), trio.abc.Listener)


def test_extent_lists_settle_with_tiny_list_blocks(monkeypatch):
    """Many-block lists: the meta free list's own blocks come out of the set it stores."""
    from fs import alloc

    meta, data, sb = volume()
    monkeypatch.setattr(alloc, "EXTLIST_MAX", 2)
    rng = random.Random(11)

    async def main():
        async with trio.open_nursery() as nursery:
            server, net = await start_server(nursery, meta, data)
            m = FakeMount(await connect_client(nursery, net, sb), meta)
            await m.begin()
            for gen in range(25):
                # scattered keys make scattered COW frees: fragmented free sets
                m.write({ikey(rng.randrange(5000)): rng.randbytes(3000) for _ in range(40)})
                await m.commit()
                if gen % 6 == 5:
                    server.triggers.set("log_merge_force_finalize_ours", 1)
                    await server.merge_now()
                chk = check_space(meta)
                assert chk["problems"] == [], chk["problems"]
            assert len(server._lists.chains["meta_free"]) >= 1
            nursery.cancel_scope.cancel()

    run(main)


def test_allocator_state_that_disagrees_with_the_super_is_corrupt():
    """A super whose free count is not its free list's total (fuzzing: meta_free's ref
    zeroed with the crc fixed up) once made the server fail its commit with ENOSPC at
    every election while the mount waited; loading it is refused as corrupt now."""
    from fs.alloc import ExtentSet
    from fs.server import _allocator_problem

    sb = fmt.Super(total_meta_blocks=512, total_data_blocks=4096,
                   free_meta_blocks=100, free_data_blocks=1000)
    meta_free = ExtentSet([(200, 100)])
    data_free = ExtentSet([(fmt.DATA_DEV_START_BLKNO + 10, 1000)])
    assert _allocator_problem(sb, meta_free, ExtentSet(), data_free, ExtentSet(), {}) is None
    assert _allocator_problem(sb, ExtentSet(), ExtentSet(), data_free, ExtentSet(), {}) == \
        "free_meta_blocks 100 but the meta_free list holds 0"
    sb.free_data_blocks = 7
    assert _allocator_problem(sb, meta_free, ExtentSet(), data_free, ExtentSet(), {}) == \
        "free_data_blocks 7 but the data_free list holds 1000"
