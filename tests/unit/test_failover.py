"""Failover, reconnect and resend, lock recovery, fencing, farewell rules and coordinated
finalize: servers and clients in one process over memnet and memdev, on a MockClock.

A "failover" here is two servers in sequence on the same in-memory devices and the same
MemNet address: the first is stopped abruptly (`stop()`: no farewell, connections cut),
unflushed device writes are dropped (`crash()`), and the second loads what is on disk.
"""

from __future__ import annotations

import errno
import functools
from types import SimpleNamespace

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

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
from fs.server import Server, ServerFailed, votes_needed
from fs.testing.memdev import MemDevice
from fs.testing.memnet import MemNet, check_space, connect_client, start_server

META_SIZE = 32 * 1024 * 1024
DATA_SIZE = 64 * 1024 * 1024
R, W, N = ls.LOCK_READ, ls.LOCK_WRITE, ls.LOCK_NULL
K = fmt.inode_group_range(1024)[0]

def volume(nr_slots: int = 1):
    meta, data = MemDevice(META_SIZE, "meta"), MemDevice(DATA_SIZE, "data")
    slots = {i: ("127.0.0.1", 7000 + i) for i in range(nr_slots)}
    sb = make_volume(meta, data, slots)
    return meta, data, sb


def ikey(ino: int, n: int = 0) -> fmt.Key:
    return (fmt.ZONE_FS, ino, fmt.FS_XATTR, n, 0, 0)


def run(fn):
    trio.run(fn, clock=trio.testing.MockClock(autojump_threshold=0))


async def wait_for(cond, limit: float = 120.0) -> None:
    """Wait (virtual time) until cond() holds; fail the test after `limit` seconds."""
    with trio.fail_after(limit):
        while not cond():
            await trio.sleep(0.01)


class FakeMount:
    """A minimal transaction engine over a Client (what fs/trans.py does, in miniature);
    its sync handler commits, as a mount's does for SYNC_LOG_TREES."""

    def __init__(self, client: Client, meta_dev):
        self.client = client
        self.blocks = MetaBlocks(meta_dev, client.fsid)
        self.lt: fmt.LogTrees | None = None
        client.set_sync_log_trees_handler(self.commit)
        client.set_recover_handler(lambda: [])

    async def begin(self) -> None:
        self.lt = await self.client.get_log_trees()
        self.meta = MetaAlloc(self.lt.meta_avail)
        self.data = DataAlloc(self.lt.data_avail)

    def write(self, items: dict) -> None:
        lt = self.lt
        tree = Btree(self.blocks, lt.item_root)
        tree.begin(lt.get_trans_seq, self.meta.alloc, self.meta.free)
        for k, v in items.items():
            tree.insert(k, Item(lt.get_trans_seq, 0, v))
        lt.item_root = tree.flush()
        lt.max_item_seq = max(lt.max_item_seq, lt.get_trans_seq)

    async def commit(self, inode_count_delta: int = 0) -> None:
        lt = self.lt
        lt.meta_avail = self.meta.avail.extents()
        lt.data_avail = self.data.avail.extents()
        self.blocks.dev.flush()
        await self.client.commit_log_trees(lt, self.meta.freed.extents(),
                                           self.data.freed.extents(),
                                           inode_count_delta=inode_count_delta)
        await self.begin()


def disk_items(meta, fsid) -> tuple[dict, list[fmt.LogTrees]]:
    """The test's fs_root items and the log tree records, as on disk."""
    sb = read_super(meta)
    blocks = MetaBlocks(meta, fsid)
    # only the test's items (ikey), not what mkfs put there
    fs_items = {k: it.value for k, it in Btree(blocks, sb.fs_root).items(fmt.KEY_MIN,
                                                                          fmt.KEY_MAX)
                if k[0] == fmt.ZONE_FS and k[2] == fmt.FS_XATTR}
    logs = [fmt.unpack_log_trees(it.value)
            for _k, it in Btree(blocks, sb.logs_root).items(fmt.KEY_MIN, fmt.KEY_MAX)]
    return fs_items, logs


def log_items(meta, fsid, lt: fmt.LogTrees) -> dict:
    return {k: it.value for k, it in Btree(MetaBlocks(meta, fsid), lt.item_root).items(
        fmt.KEY_MIN, fmt.KEY_MAX)}


def mounted_rids(meta, fsid) -> set[int]:
    sb = read_super(meta)
    tree = Btree(MetaBlocks(meta, fsid), sb.mounted_clients)
    return {k[1] for k, _it in tree.items(fmt.KEY_MIN, fmt.KEY_MAX)}


class Gate:
    """A connect() for a Client that can be shut: while shut, reconnecting waits."""

    def __init__(self, net: MemNet):
        self.net = net
        self.open = trio.Event()
        self.open.set()
        self.waiting = False

    def shut(self) -> None:
        self.open = trio.Event()

    async def connect(self) -> trio.abc.Stream:
        self.waiting = not self.open.is_set()
        await self.open.wait()
        self.waiting = False
        return await self.net.connect()


async def gated_client(nursery, net, sb, *, quorum=False, counters=None
                       ) -> tuple[Client, Gate]:
    gate = Gate(net)
    c = Client(sb.fsid, sb.fmt_vers, None, quorum, connect=gate.connect, counters=counters)
    c.set_recover_handler(lambda: [])
    await c.start(nursery)
    return c, gate


# --------------------------------------------------------------------------- reconnect


def test_reconnect_to_the_same_server_resends():
    meta, data, sb = volume()

    async def main():
        async with trio.open_nursery() as nursery:
            server, net = await start_server(nursery, meta, data)
            counters = Counters()
            c = await connect_client(nursery, net, sb, counters=counters)
            c.set_recover_handler(lambda: [])
            first = await c.statfs()
            await net.drop_all()
            st = await c.statfs()  # waits for the reconnect, then succeeds
            assert st["total_meta_blocks"] == first["total_meta_blocks"]
            assert counters.get("client_reconnect") == 1
            # the same rid, resumed: still one mounted client, nothing fenced
            assert mounted_rids(meta, sb.fsid) == {c.rid}
            assert server.fence_requests == {} and server.recovering == set()
            await c.close()
            with pytest.raises(FsError) as ei:
                await c.statfs()
            assert ei.value.errno == errno.ENOTCONN
            nursery.cancel_scope.cancel()

    run(main)


def test_request_in_flight_during_a_drop_is_resent():
    meta, data, sb = volume()

    async def main():
        async with trio.open_nursery() as nursery:
            server, net = await start_server(nursery, meta, data)
            counters = Counters()
            c = await connect_client(nursery, net, sb, counters=counters)
            inos = []

            async def alloc():
                inos.append(await c.alloc_inodes(10))

            # the server accepts nothing for a while: the request waits, the connection
            # drops under it, and it is resent on the next connection
            nursery.start_soon(alloc)
            await trio.sleep(0)
            await net.drop_all()
            await wait_for(lambda: inos)
            assert counters.get("client_reconnect") == 1
            assert inos[0][1] == 10
            nursery.cancel_scope.cancel()

    run(main)


@pytest.mark.parametrize("dies", ["before_apply", "after_apply"])
def test_commit_in_flight_across_failover_applies_exactly_once(dies):
    meta, data, sb = volume()

    async def main():
        async with trio.open_nursery() as nursery:
            net = MemNet()
            s1, _ = await start_server(nursery, meta, data, net=net)
            hang = {"armed": False}
            reached = trio.Event()
            orig = s1._commit_log_trees

            async def dying(rid, p):
                # server 1 dies around this commit: before touching anything, or after it
                # is on disk but before the reply leaves
                if hang["armed"]:
                    if dies == "after_apply":
                        await orig(rid, p)
                    reached.set()
                    await trio.sleep_forever()
                return await orig(rid, p)

            s1._commit_log_trees = dying  # handlers are bound when a client connects
            counters = Counters()
            c = await connect_client(nursery, net, sb, counters=counters)
            m = FakeMount(c, meta)
            base = read_super(meta).inode_count
            await m.begin()
            m.write({ikey(1): b"one"})
            await m.commit(inode_count_delta=1)
            m.write({ikey(2): b"two"})
            hang["armed"] = True
            done = trio.Event()

            async def committer():
                await m.commit(inode_count_delta=1)  # in flight across the failover
                done.set()

            nursery.start_soon(committer)
            await reached.wait()
            await s1.stop()
            meta.crash()
            data.crash()
            assert s1.failed.is_set() is False  # stopped, not failed
            assert not done.is_set()
            s2, _ = await start_server(nursery, meta, data, net=net, term=2)
            await done.wait()
            assert c.server_term == 2
            assert counters.get("client_reconnect") == 1
            assert counters.get("client_resend") >= 1
            resent = s2.counters.get("server_commit_resend")
            assert resent == (1 if dies == "after_apply" else 0)
            # exactly once: the inode count delta was applied once per commit
            assert read_super(meta).inode_count == base + 2, (read_super(meta).inode_count, base)
            assert check_space(meta, data)["problems"] == []
            # no committed change lost
            _fs, logs = disk_items(meta, sb.fsid)
            assert log_items(meta, sb.fsid, logs[-1]) == {ikey(1): b"one", ikey(2): b"two"}
            assert s2.recovering == set()
            # the transaction after it works too, and farewell merges everything
            m.write({ikey(3): b"three"})
            await m.commit()
            await c.farewell()
            await wait_for(lambda: s2.counters.get("log_merge_complete") >= 1)
            fs_items, logs = disk_items(meta, sb.fsid)
            assert fs_items == {ikey(1): b"one", ikey(2): b"two", ikey(3): b"three"}
            assert logs == []
            chk = check_space(meta, data)
            assert chk["problems"] == [] and chk["meta"]["lent"] == 0
            nursery.cancel_scope.cancel()

    run(main)


def test_failover_to_an_unreachable_address_retries_until_a_server_listens():
    meta, data, sb = volume()

    async def main():
        async with trio.open_nursery() as nursery:
            net = MemNet()
            s1, _ = await start_server(nursery, meta, data, net=net)
            counters = Counters()
            c = await connect_client(nursery, net, sb, counters=counters)
            c.set_recover_handler(lambda: [])
            await s1.stop()
            got = []

            async def statfs():
                got.append(await c.statfs())

            nursery.start_soon(statfs)
            await trio.sleep(10)  # nobody listens: connects are refused, with backoff
            assert not got
            assert 8 <= counters.get("client_connect_fail") <= 20
            await start_server(nursery, meta, data, net=net)
            await wait_for(lambda: got)
            nursery.cancel_scope.cancel()

    run(main)


# --------------------------------------------------------------------------- recovery


def test_lock_recovery_keeps_grants_and_holds_requests():
    meta, data, sb = volume()

    async def main():
        async with trio.open_nursery() as nursery:
            net = MemNet()
            s1, _ = await start_server(nursery, meta, data, net=net)
            a = await connect_client(nursery, net, sb)
            b = await connect_client(nursery, net, sb)
            seen = []

            async def inval_a(key, mode, old_mode=None):
                seen.append(("a", key, mode))

            async def inval_b(key, mode, old_mode=None):
                seen.append(("b", key, mode))

            a.set_invalidate_handler(inval_a)
            b.set_invalidate_handler(inval_b)
            ga = await a.lock_request(K, N, W, 0)
            may_recover = trio.Event()

            async def a_locks():
                await may_recover.wait()  # a's recovery is slow
                return [{"key": K, "mode": W, "write_seq": ga["write_seq"]}]

            a.set_recover_handler(a_locks)
            b.set_recover_handler(lambda: [])
            await s1.stop()
            s2, _ = await start_server(nursery, meta, data, net=net, term=3)
            assert s2.recovering == {a.rid, b.rid}
            await wait_for(lambda: s2.recovering == {a.rid})
            got = []

            async def b_reads():
                got.append(await b.lock_request(K, N, R, 0))

            nursery.start_soon(b_reads)
            await trio.sleep(5)
            assert not got and not seen  # nothing is granted while a recovers
            may_recover.set()
            await wait_for(lambda: got)
            # the server knew a held WRITE: it invalidated it down to READ for b
            assert seen == [("a", K, R)]
            assert got[0]["mode"] == R
            assert s2.lock_server.locks[K].granted == {a.rid: R, b.rid: R}
            assert s2.sb.seq > ga["write_seq"]  # later grants stay newer
            assert s2.recovering == set()
            nursery.cancel_scope.cancel()

    run(main)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 5000), unique=True, max_size=40), st.integers(1, 12))
def test_lock_recover_pages_cover_every_lock_once(groups, nr):
    """The client pages LOCK_RECOVER replies by key after `start`; asking page by page
    until a short page (as the server does) yields every lock once, in key order."""
    meta, data, sb = volume()
    entries = [{"key": fmt.inode_group_range(1024 * g)[0], "mode": R, "write_seq": g}
               for g in groups]
    c = Client(sb.fsid, sb.fmt_vers, 1, connect=MemNet().connect)
    c.set_recover_handler(lambda: list(entries))

    async def main():
        got, start = [], None
        while True:
            page = (await c._on_lock_recover({"start": start, "nr": nr}))["locks"]
            got += page
            if len(page) < nr:
                break
            start = page[-1]["key"]
        assert [e["write_seq"] for e in got] == sorted(groups)

    trio.run(main)


def test_recovery_asks_for_every_page(monkeypatch):
    meta, data, sb = volume()
    monkeypatch.setattr(srv, "RECOVER_PAGE", 3)
    keys = [fmt.inode_group_range(1024 * g)[0] for g in range(10)]

    async def main():
        async with trio.open_nursery() as nursery:
            net = MemNet()
            s1, _ = await start_server(nursery, meta, data, net=net)
            c = await connect_client(nursery, net, sb)
            for k in keys:
                await c.lock_request(k, N, R, 0)
            c.set_recover_handler(lambda: [{"key": k, "mode": R, "write_seq": 0}
                                           for k in keys])
            await s1.stop()
            s2, _ = await start_server(nursery, meta, data, net=net)
            await wait_for(lambda: s2.recovering == set())
            assert sorted(s2.lock_server.locks) == keys
            assert all(lk.granted == {c.rid: R} for lk in s2.lock_server.locks.values())
            nursery.cancel_scope.cancel()

    run(main)


def test_unrecovered_client_is_fenced_then_reclaimed_and_merged():
    meta, data, sb = volume()

    async def main():
        async with trio.open_nursery() as nursery:
            net = MemNet()
            s1, _ = await start_server(nursery, meta, data, net=net)
            a = FakeMount(await connect_client(nursery, net, sb), meta)
            gone_client, gate = await gated_client(nursery, net, sb)
            gone = FakeMount(gone_client, meta)
            await a.begin()
            await gone.begin()
            gone.write({ikey(5): b"five"})
            await gone.commit()
            gate.shut()  # it will not come back in time
            await s1.stop()
            counters = Counters()
            s2, _ = await start_server(nursery, meta, data, net=net, counters=counters,
                                       recovery_timeout=30.0)
            await wait_for(lambda: s2.recovering == {gone.client.rid})
            got = []

            async def a_locks():
                got.append(await a.client.lock_request(K, N, W, 0))

            nursery.start_soon(a_locks)
            await trio.sleep(25)
            assert s2.fence_requests == {}
            await trio.sleep(6)
            req = s2.fence_requests[gone.client.rid]
            assert req.reason == "client_recovery"
            assert req.ipv4_addr == "0.0.0.0"  # memory streams have no address
            await trio.sleep(10)  # no answer yet: nothing reclaimed, the server waits
            assert counters.get("reclaimed_open_logs") == 0
            assert gone.client.rid in mounted_rids(meta, sb.fsid)
            assert not got  # lock processing waits for the fence too
            s2.answer_fence(gone.client.rid, fenced=True)
            await wait_for(lambda: counters.get("reclaimed_open_logs") == 1)
            await wait_for(lambda: got)
            assert s2.fence_requests == {}
            assert gone.client.rid not in mounted_rids(meta, sb.fsid)
            await wait_for(lambda: counters.get("log_merge_complete") >= 1)
            fs_items, _logs = disk_items(meta, sb.fsid)
            assert fs_items[ikey(5)] == b"five"
            assert check_space(meta, data)["problems"] == []
            # the fenced mount comes back: refused for good, its requests fail
            gate.open.set()
            await wait_for(lambda: gone.client.dead is not None)
            assert gone.client.dead.errno == errno.ENOLINK
            with pytest.raises(FsError) as ei:
                await gone.client.statfs()
            assert ei.value.errno == errno.ENOTCONN
            assert not s2.failed.is_set()
            nursery.cancel_scope.cancel()

    run(main)


@pytest.mark.parametrize("how", ["error", "timeout"])
def test_fence_error_or_timeout_stops_the_server(how):
    meta, data, sb = volume()

    async def main():
        async with trio.open_nursery() as nursery:
            net = MemNet()
            s1, _ = await start_server(nursery, meta, data, net=net)
            c = await connect_client(nursery, net, sb)
            c.set_recover_handler(lambda: [])
            lost, gate = await gated_client(nursery, net, sb)
            gate.shut()
            await s1.stop()
            s2, _ = await start_server(nursery, meta, data, net=net, recovery_timeout=30.0,
                                       fence_timeout=30.0)
            await wait_for(lambda: lost.rid in s2.fence_requests, limit=40)
            if how == "error":
                s2.answer_fence(lost.rid, error=True)
                await wait_for(s2.failed.is_set, limit=2)
                assert "reported an error" in s2.fail_reason
            else:
                await trio.sleep(25)
                assert not s2.failed.is_set()
                await wait_for(s2.failed.is_set, limit=10)
                assert "not answered" in s2.fail_reason
            # nothing was reclaimed, the server stopped serving: connections are cut
            assert lost.rid in mounted_rids(meta, sb.fsid)
            await s2._done.wait()
            assert c.conn is None or c.conn.closed.is_set()
            with pytest.raises(KeyError):
                s2.fence_requests[c.rid]
            nursery.cancel_scope.cancel()

    run(main)


# --------------------------------------------------------------------------- fence targets


@pytest.mark.parametrize("answered", [True, False])
def test_server_start_fences_earlier_leaders(answered):
    meta, data, sb = volume()

    async def main():
        async with trio.open_nursery() as nursery:
            net = MemNet()
            s1, _ = await start_server(nursery, meta, data, net=net)
            old = FakeMount(await connect_client(nursery, net, sb, quorum=True), meta)
            await old.begin()
            old.write({ikey(9): b"nine"})
            await old.commit()
            await old.client.abandon()
            await s1.stop()  # the old leader's node died with its mount
            target = SimpleNamespace(slot=0, rid=old.client.rid, term=1,
                                     reason="quorum_block_leader")
            counters = Counters()
            s2 = Server(meta, data, counters)
            result = []

            async def start():
                net.reopen()
                try:
                    await nursery.start(functools.partial(s2.serve, net,
                                                          fence_targets=[target]))
                    result.append(s2)
                except ServerFailed as e:
                    result.append(e)

            nursery.start_soon(start)
            await trio.sleep(5)
            assert not result  # not serving before the old leader is fenced
            req = s2.fence_requests[old.client.rid]
            assert req.reason == "quorum_block_leader"
            assert req.ipv4_addr == "0.0.0.0"
            if not answered:
                await wait_for(lambda: result, limit=20)
                assert isinstance(result[0], ServerFailed)
                assert trio.current_time() >= 15
                assert s2.failed.is_set() and s2.fence_requests == {}
                nursery.cancel_scope.cancel()
                return
            s2.answer_fence(old.client.rid, fenced=True)
            await wait_for(lambda: result)
            assert result[0] is s2
            assert counters.get("reclaimed_open_logs") == 1
            assert s2.fence_requests == {} and s2.recovering == set()
            assert old.client.rid not in mounted_rids(meta, sb.fsid)
            await wait_for(lambda: counters.get("log_merge_complete") >= 1)
            assert disk_items(meta, sb.fsid)[0][ikey(9)] == b"nine"
            assert check_space(meta, data)["problems"] == []
            nursery.cancel_scope.cancel()

    run(main)


# --------------------------------------------------------------------------- farewell


def test_votes_needed():
    assert [votes_needed(n) for n in range(1, 8)] == [1, 1, 2, 3, 3, 4, 4]


def test_farewell_quorum_rules():
    meta, data, sb = volume(3)

    async def main():
        async with trio.open_nursery() as nursery:
            server, net = await start_server(nursery, meta, data)
            q = [await connect_client(nursery, net, sb, quorum=True) for _ in range(3)]
            other = await connect_client(nursery, net, sb)
            # the first of three leaves: two remain, enough for a quorum of 3 slots (2)
            await q[0].farewell()
            assert q[0].farewell_done
            # the second would leave one: it waits...
            nursery.start_soon(q[1].farewell)
            await trio.sleep(5)
            assert not q[1].farewell_done
            # ...while a non-quorum mount leaves at once...
            await other.farewell()
            # ...until every remaining mount is a departing quorum member
            assert q[1].rid in mounted_rids(meta, sb.fsid)
            await q[2].farewell()
            await wait_for(lambda: q[1].farewell_done)
            assert mounted_rids(meta, sb.fsid) == set()
            nursery.cancel_scope.cancel()

    run(main)


def test_farewell_waits_while_non_quorum_mounts_remain():
    meta, data, sb = volume(1)

    async def main():
        async with trio.open_nursery() as nursery:
            server, net = await start_server(nursery, meta, data)
            leader = await connect_client(nursery, net, sb, quorum=True)
            other = await connect_client(nursery, net, sb)
            nursery.start_soon(leader.farewell)
            await trio.sleep(5)
            assert not leader.farewell_done  # the last quorum member serves the others
            await other.farewell()
            await wait_for(lambda: leader.farewell_done)
            nursery.cancel_scope.cancel()

    run(main)


def test_farewell_completes_across_a_reconnect():
    meta, data, sb = volume(3)

    async def main():
        async with trio.open_nursery() as nursery:
            server, net = await start_server(nursery, meta, data)
            q0 = await connect_client(nursery, net, sb, quorum=True)
            counters1, counters2 = Counters(), Counters()
            q1, gate1 = await gated_client(nursery, net, sb, quorum=True, counters=counters1)
            q2, gate2 = await gated_client(nursery, net, sb, quorum=True, counters=counters2)
            other = await connect_client(nursery, net, sb)  # keeps the quorum here
            await q0.farewell()
            # q1's farewell waits; its connection drops and it reconnects: the farewell is
            # resent and joins the pending one
            nursery.start_soon(q1.farewell)
            await wait_for(lambda: q1.rid in server._farewells)
            await q1.conn.aclose()
            await wait_for(lambda: counters1.get("client_reconnect") == 1)
            await wait_for(lambda: counters1.get("client_resend") == 1)
            assert not q1.farewell_done
            # q2's farewell waits too; then its connection drops and it cannot reconnect
            nursery.start_soon(q2.farewell)
            await wait_for(lambda: q2.rid in server._farewells)
            gate2.shut()
            await q2.conn.aclose()
            # the last non-quorum mount leaves: q1 and q2 are answered (q2's reply is lost)
            await other.farewell()
            await wait_for(lambda: q1.farewell_done)
            assert not q2.farewell_done
            assert mounted_rids(meta, sb.fsid) == set()
            # q2 comes back in farewell: its rid is gone, so its farewell is complete
            gate2.open.set()
            await wait_for(lambda: q2.farewell_done)
            assert counters2.get("client_reconnect") == 0  # no resumed session
            assert not server.failed.is_set()
            nursery.cancel_scope.cancel()

    run(main)


@pytest.mark.parametrize("check_super", [True, False])
def test_lost_farewell_reply_with_no_server_left(check_super: bool):
    """Spec §2.3: the farewell reply is lost and no server comes back (no quorum is left to
    elect one).  With the check of the super on disk the farewell completes once our rid is
    no longer listed; without it, it keeps waiting for a server."""
    meta, data, sb = volume(1)

    async def main():
        async with trio.open_nursery() as nursery:
            server, net = await start_server(nursery, meta, data)
            leader, gate = await gated_client(nursery, net, sb, quorum=True)
            other = await connect_client(nursery, net, sb)
            gone = (lambda: leader.rid not in mounted_rids(meta, sb.fsid)) if check_super else None
            nursery.start_soon(functools.partial(leader.farewell, gone=gone))
            await wait_for(lambda: leader.rid in server._farewells)
            gate.shut()  # the leader's connection drops and stays down
            await leader.conn.aclose()
            await other.farewell()  # the server reclaims both; the leader's reply is lost
            await server.stop()
            assert mounted_rids(meta, sb.fsid) == set()
            if check_super:
                await wait_for(lambda: leader.farewell_done)
            else:
                await trio.sleep(30)  # virtual time: many reconnect attempts fail
                assert not leader.farewell_done
            nursery.cancel_scope.cancel()

    run(main)


def test_farewell_waits_for_lock_recovery():
    meta, data, sb = volume()

    async def main():
        async with trio.open_nursery() as nursery:
            net = MemNet()
            s1, _ = await start_server(nursery, meta, data, net=net)
            c = await connect_client(nursery, net, sb)
            release = trio.Event()

            async def slow_locks():
                await release.wait()
                return []

            c.set_recover_handler(slow_locks)
            await s1.stop()
            s2, _ = await start_server(nursery, meta, data, net=net)
            nursery.start_soon(c.farewell)
            await trio.sleep(5)
            assert not c.farewell_done and s2.recovering == {c.rid}
            release.set()
            await wait_for(lambda: c.farewell_done)
            nursery.cancel_scope.cancel()

    run(main)


# --------------------------------------------------------------------------- invalidations


def test_invalidation_resent_after_reconnect():
    meta, data, sb = volume()

    async def main():
        async with trio.open_nursery() as nursery:
            server, net = await start_server(nursery, meta, data)
            a = await connect_client(nursery, net, sb)
            b = await connect_client(nursery, net, sb)
            calls = []
            release = trio.Event()

            async def inval_a(key, mode, old_mode=None):
                calls.append(mode)
                if len(calls) == 1:
                    await release.wait()  # the first one is still running when we drop

            a.set_invalidate_handler(inval_a)
            await a.lock_request(K, N, W, 0)
            got = []

            async def b_reads():
                got.append(await b.lock_request(K, N, R, 0))

            nursery.start_soon(b_reads)
            await wait_for(lambda: calls)
            await a.conn.aclose()  # the answer to the invalidation is lost
            release.set()
            await wait_for(lambda: got)
            assert calls == [R, R]  # resent after the reconnect, answered again
            assert server.lock_server.locks[K].granted == {a.rid: R, b.rid: R}
            nursery.cancel_scope.cancel()

    run(main)


# --------------------------------------------------------------------------- merging


def test_coordinated_finalize_merges_every_mounts_tree():
    meta, data, sb = volume()

    async def main():
        async with trio.open_nursery() as nursery:
            counters = Counters()
            server, net = await start_server(nursery, meta, data, counters=counters)
            mounts = [FakeMount(await connect_client(nursery, net, sb), meta)
                      for _ in range(3)]
            for i, m in enumerate(mounts):
                await m.begin()
                m.write({ikey(100 + i): bytes([i])})
                await m.commit()
            assert counters.get("log_merge_start") == 0
            server.triggers.set("log_merge_force_finalize_ours", 1)
            mounts[0].write({ikey(200): b"last"})
            await mounts[0].commit()
            assert server.triggers.get("log_merge_force_finalize_ours") == 0
            await wait_for(lambda: counters.get("log_merge_complete") >= 1)
            assert counters.get("log_merge_start") == 1
            fs_items, logs = disk_items(meta, sb.fsid)
            assert fs_items == {ikey(100): b"\x00", ikey(101): b"\x01", ikey(102): b"\x02",
                                ikey(200): b"last"}
            # every mount committed and continues in a new, empty tree
            assert len(logs) == 3
            assert all(lt.item_root.height == 0 and not lt.flags for lt in logs)
            assert check_space(meta, data)["problems"] == []
            nursery.cancel_scope.cancel()

    run(main)


def test_coordinated_finalize_does_not_wait_for_a_stuck_mount():
    meta, data, sb = volume()

    async def main():
        async with trio.open_nursery() as nursery:
            counters = Counters()
            server, net = await start_server(nursery, meta, data, counters=counters,
                                             log_merge_wait_timeout=0.5)
            a = FakeMount(await connect_client(nursery, net, sb), meta)
            stuck = FakeMount(await connect_client(nursery, net, sb), meta)
            for i, m in enumerate((a, stuck)):
                await m.begin()
                m.write({ikey(100 + i): b"x"})
                await m.commit()
            stuck.client.set_sync_log_trees_handler(trio.sleep_forever)
            server.triggers.set("log_merge_force_finalize_ours", 1)
            a.write({ikey(200): b"y"})
            t0 = trio.current_time()
            await a.commit()
            await wait_for(lambda: counters.get("log_merge_complete") >= 1)
            assert 0.5 <= trio.current_time() - t0 < 1.0
            fs_items, logs = disk_items(meta, sb.fsid)
            assert set(fs_items) == {ikey(100), ikey(200)}  # the stuck mount's tree waits
            assert [log_items(meta, sb.fsid, lt) for lt in logs
                    if lt.rid == stuck.client.rid] == [{ikey(101): b"x"}]
            nursery.cancel_scope.cancel()

    run(main)
