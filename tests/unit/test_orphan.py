"""Orphans across mounts (spec §4): the open map, OPEN_INO_MAP, try_delete and the scanner.

Whole mounts (fs/super.py: locks, item cache, transactions, Filesystem, scanner) run in one
process on memdev and memnet with a server, on a MockClock.  A mount "opens" an inode the
way the kernel's references do, through its open map (`omap.hold`), and its last release
is `omap.release` followed by `fs.forget`, as the FUSE forget path calls it.
"""

from __future__ import annotations

import errno

import trio
import trio.testing

from fs import omap as omap_mod
from fs.client import Client
from fs.counters import Counters
from fs.errors import FsError
from fs.inode import Ctx
from fs.mkfs import make_volume
from fs.super import Mount
from fs.testing.memdev import MemDevice
from fs.testing.memnet import check_space, start_server

META_SIZE = 64 * 1024 * 1024
DATA_SIZE = 64 * 1024 * 1024
ROOT = 1
CTX = Ctx(uid=0, gid=0, pid=1)


def volume():
    meta, data = MemDevice(META_SIZE, "meta"), MemDevice(DATA_SIZE, "data")
    sb = make_volume(meta, data, {0: ("127.0.0.1", 7000)})
    return meta, data, sb


def run(fn):
    trio.run(fn, clock=trio.testing.MockClock(autojump_threshold=0))


async def wait_for(cond, limit: float = 120.0) -> None:
    with trio.fail_after(limit):
        while not cond():
            await trio.sleep(0.01)


class Gate:
    """A connect() that can be shut: while shut, the mount's reconnects wait."""

    def __init__(self, net) -> None:
        self.net = net
        self.open = trio.Event()
        self.open.set()

    def shut(self) -> None:
        self.open = trio.Event()

    async def connect(self) -> trio.abc.Stream:
        await self.open.wait()
        return await self.net.connect()


async def mount(nursery, meta, data, sb, net, **options) -> Mount:
    """A whole client mount (no quorum slot) on the server behind net."""
    gate = Gate(net)

    async def connect(m: Mount) -> Client:
        c = Client(sb.fsid, sb.fmt_vers, m.rid, False, connect=gate.connect,
                   counters=m.counters)
        await c.start(nursery)
        return c

    m = await Mount.open("meta", "data", options, nursery, meta_dev=meta.reopen(),
                         data_dev=data.reopen(), connect=connect)
    m.gate = gate
    return m


async def cluster(nursery, nr: int, **options):
    meta, data, sb = volume()
    server, net = await start_server(nursery, meta, data, counters=Counters())
    mounts = [await mount(nursery, meta, data, sb, net, **options) for _ in range(nr)]
    return meta, data, sb, server, net, mounts


async def free_data(m: Mount) -> int:
    await m.trans.sync()
    return (await m.client.statfs())["free_data_blocks"]


async def release(m: Mount, ino: int) -> None:
    """The kernel's last reference on m goes: the omap bit clears, evict runs."""
    m.omap.release(ino)
    await m.fs.forget(ino)
    await m.fs.drain_deletions()


def test_omap_wire_roundtrip_and_group_bits():
    om = omap_mod.Omap(lambda: {2048 + 5, 2048 + 1023, 5000})
    om.hold(2048 + 64)
    bits = om.group_bits(2)
    assert bits == (1 << 5) | (1 << 1023) | (1 << 64)
    assert omap_mod.from_wire(omap_mod.to_wire(bits)) == bits
    assert om.test(2048 + 64) and not om.test(2048 + 63)
    om.release(2048 + 64)
    assert not om.test(2048 + 64)


def test_unlinked_while_open_on_another_mount_is_deleted_at_its_last_release():
    async def main():
        async with trio.open_nursery() as n:
            meta, data, sb, server, net, (a, b) = await cluster(n, 2)
            before = await free_data(a)
            f = await a.fs.mknod(ROOT, b"f", 0o100644, 0, CTX)
            await a.fs.write(f.ino, 0, b"x" * 65536, CTX)
            await a.trans.sync()
            a.omap.hold(f.ino)  # a's kernel had it looked up for the unlink
            # b opens it
            assert (await b.fs.lookup(ROOT, b"f")).ino == f.ino
            b.omap.hold(f.ino)
            await a.fs.unlink(ROOT, b"f", CTX)
            await release(a, f.ino)
            assert a.counters.get("inode_deleted") == 0  # b has it open
            # b still reads, writes and stats it through its open file
            assert await b.fs.read(f.ino, 0, 4) == b"xxxx"
            await b.fs.write(f.ino, 65536, b"more", CTX)
            st = await b.fs.getattr(f.ino)
            assert (st.nlink, st.size) == (0, 65540)
            assert await a.fs.read(f.ino, 65536, 4) == b"more"
            # b's last release deletes it and frees its blocks
            await release(b, f.ino)
            assert b.counters.get("inode_deleted") == 1
            for m in (a, b):
                assert await _errno(m.fs.getattr(f.ino)) == errno.ENOENT
            assert await free_data(a) == before
            n.cancel_scope.cancel()

    run(main)


async def _errno(coro) -> int:
    try:
        await coro
    except FsError as e:
        return e.errno
    return 0


def test_one_open_ino_map_request_serves_a_whole_group():
    async def main():
        async with trio.open_nursery() as n:
            meta, data, sb, server, net, (a, b) = await cluster(n, 2)
            await a.fs.mkdir(ROOT, b"d", 0o40755, CTX)
            inos = []
            for i in range(20):
                inos.append((await a.fs.mknod(ROOT, f"f{i}".encode(), 0o100644, 0,
                                              CTX)).ino)
            assert len({omap_mod.group_of(i) for i in inos}) == 1
            b.omap.hold(inos[3])  # open on b
            asked = []
            real = b.omap.group_bits

            def counting(group):
                asked.append(group)
                return real(group)

            b.client.set_omap_handler(counting)
            for i in range(20):
                await a.fs.unlink(ROOT, f"f{i}".encode(), CTX)
                await a.fs.forget(inos[i])
            await a.fs.drain_deletions()
            assert asked == [omap_mod.group_of(inos[0])]
            assert a.counters.get("inode_deleted") == 19
            await release(b, inos[3])
            assert b.counters.get("inode_deleted") == 1
            n.cancel_scope.cancel()

    run(main)


def test_open_ino_map_racing_evict_deletes_once():
    """Both mounts release the inode at once: each asks for the other's map while the
    other's bit may be clearing; exactly one deletes it and nothing fails."""
    async def main():
        async with trio.open_nursery() as n:
            meta, data, sb, server, net, (a, b) = await cluster(n, 2)
            inos = []
            for i in range(8):
                f = await a.fs.mknod(ROOT, f"f{i}".encode(), 0o100644, 0, CTX)
                await a.fs.write(f.ino, 0, b"y" * 8192, CTX)
                inos.append(f.ino)
                await b.fs.lookup(ROOT, f"f{i}".encode())
                b.omap.hold(f.ino)
                a.omap.hold(f.ino)
                await a.fs.unlink(ROOT, f"f{i}".encode(), CTX)
            async with trio.open_nursery() as race:
                for ino in inos:
                    race.start_soon(release, a, ino)
                    race.start_soon(release, b, ino)
            deleted = a.counters.get("inode_deleted") + b.counters.get("inode_deleted")
            assert deleted == len(inos)
            for ino in inos:
                assert await _errno(a.fs.getattr(ino)) == errno.ENOENT
            n.cancel_scope.cancel()

    run(main)


def test_open_ino_map_waits_for_an_away_mount_and_drops_it_when_reclaimed():
    async def main():
        async with trio.open_nursery() as n:
            meta, data, sb, server, net, (a, c) = await cluster(n, 2)
            f = await a.fs.mknod(ROOT, b"f", 0o100644, 0, CTX)
            await c.fs.lookup(ROOT, b"f")
            c.omap.hold(f.ino)
            group = omap_mod.group_of(f.ino)
            bits = await a.client.open_ino_map(group)
            assert bits >> omap_mod.bit_of(f.ino) & 1
            # c's connection drops and it cannot come back: the request waits for it
            c.gate.shut()
            await net.drop_all()
            got = []

            async def ask():
                got.append(await a.client.open_ino_map(group))

            n.start_soon(ask)
            await trio.sleep(15)
            assert not got
            # the server fences it after its reconnect timeout; once reclaimed it drops out
            await wait_for(lambda: c.rid in server.fence_requests, 60)
            server.answer_fence(c.rid, fenced=True)
            await wait_for(lambda: got, 30)
            assert got == [0]
            n.cancel_scope.cancel()

    run(main)


def test_orphans_of_a_killed_mount_are_deleted_by_a_survivors_scan():
    async def main():
        async with trio.open_nursery() as n:
            meta, data, sb, server, net, (a, k) = await cluster(
                n, 2, orphan_scan_delay_ms=1000)
            before = await free_data(a)
            inos = []
            for i in range(30):
                f = await k.fs.mknod(ROOT, f"f{i}".encode(), 0o100644, 0, CTX)
                await k.fs.write(f.ino, 0, b"z" * 12288, CTX)
                k.omap.hold(f.ino)  # open on k ...
                await k.fs.unlink(ROOT, f"f{i}".encode(), CTX)  # ... and unlinked
                inos.append(f.ino)
            await k.trans.sync()  # the orphan items are committed in k's log tree
            scans = a.counters.get("orphan_scan")
            await wait_for(lambda: a.counters.get("orphan_scan") > scans + 1)
            assert a.counters.get("inode_deleted") == 0  # in k's tree, not yet in fs_root
            # k dies: no farewell; the server fences and reclaims it, the merge brings its
            # orphan items into fs_root, and a's scanner deletes them
            k.gate.shut()
            k.forced = True
            await k.close()
            await wait_for(lambda: k.rid in server.fence_requests, 60)
            # reclaim leaves k's open tree alone: the merge worker's reclaim of the trees
            # of rids that are no longer mounted must finalize it
            server.triggers.set("reclaim_skip_finalize", 1)
            server.answer_fence(k.rid, fenced=True)
            await wait_for(lambda: a.counters.get("inode_deleted") == len(inos), 120)
            assert server.triggers.get("reclaim_skip_finalize") == 0
            assert server.counters.get("reclaimed_open_logs") >= 1
            assert a.counters.get("orphan_scan_attempts") >= len(inos)
            for ino in inos:
                assert await _errno(a.fs.getattr(ino)) == errno.ENOENT
            # the next scans find no orphans once the deletions are merged
            empty = a.counters.get("orphan_scan_empty")
            await a.trans.sync()
            await server.finalize_and_merge()
            await wait_for(lambda: a.counters.get("orphan_scan_empty") > empty, 60)
            assert await free_data(a) == before
            await a.close()
            n.cancel_scope.cancel()
        report = check_space(meta, data)
        assert report["problems"] == []

    run(main)


def test_scan_skips_inodes_open_here_or_elsewhere():
    async def main():
        async with trio.open_nursery() as n:
            meta, data, sb, server, net, (a, b) = await cluster(n, 2)
            a.scanner.stop()
            b.scanner.stop()
            f = await a.fs.mknod(ROOT, b"f", 0o100644, 0, CTX)
            g = await a.fs.mknod(ROOT, b"g", 0o100644, 0, CTX)
            a.omap.hold(f.ino)
            a.omap.hold(g.ino)
            await b.fs.lookup(ROOT, b"g")
            b.omap.hold(g.ino)
            await a.fs.unlink(ROOT, b"f", CTX)
            await a.fs.unlink(ROOT, b"g", CTX)
            await a.trans.sync()
            server.triggers.set("log_merge_force_partial", 1)
            commits = server.nr_commits
            await server.finalize_and_merge()
            assert server.triggers.get("log_merge_force_partial") == 0
            assert server.nr_commits >= commits + 2  # the partial one and the last
            await a.scanner.scan()
            assert a.counters.get("orphan_scan_item") == 2
            assert a.counters.get("orphan_scan_cached") == 2
            await b.scanner.scan()
            assert b.counters.get("orphan_scan_cached") == 1  # g
            assert b.counters.get("orphan_scan_omap_set") == 1  # f, open on a
            assert b.counters.get("orphan_scan_attempts") == 0
            a.omap.release(f.ino)  # a's kernel dropped f but a never evicted it
            await b.scanner.scan()
            assert b.counters.get("orphan_scan_attempts") == 1
            assert b.counters.get("inode_deleted") == 1
            n.cancel_scope.cancel()

    run(main)


def test_open_ino_map_waits_for_lock_recovery_after_failover():
    """A new server answers OPEN_INO_MAP only once every mounted rid recovered: b, which
    has the inode open, is still away when a asks."""
    async def main():
        async with trio.open_nursery() as n:
            meta, data, sb, s1, net, (a, b) = await cluster(n, 2)
            f = await a.fs.mknod(ROOT, b"f", 0o100644, 0, CTX)
            await b.fs.lookup(ROOT, b"f")
            b.omap.hold(f.ino)
            b.gate.shut()
            await s1.stop()
            s2, _net = await start_server(n, meta, data, net=net, counters=Counters())
            got = []

            async def ask():
                bits = await a.client.open_ino_map(omap_mod.group_of(f.ino))
                got.append(bits)
                assert s2.recovering == set()  # answered only after recovery

            n.start_soon(ask)
            await wait_for(lambda: s2.recovering == {b.rid}, 30)
            await trio.sleep(5)
            assert not got
            b.gate.open.set()
            await wait_for(lambda: got, 30)
            assert got[0] >> omap_mod.bit_of(f.ino) & 1
            n.cancel_scope.cancel()

    run(main)


def test_vfs_open_map_counts_opens_and_queues_the_last_release():
    """fs.vfs: the open map bit is up before the filesystem sees the open, drops when an
    open fails, and the last release of an inode queues an eviction (forget worker)."""
    from fs import vfs

    class FS:
        def __init__(self):
            self.forgot = []
            self.fail = False
            self.seen_open = None

        async def open(self, ino, flags, ctx):
            self.seen_open = ops.open_inos.get(ino)
            if self.fail:
                raise FsError(errno.ENOENT)

        async def getattr(self, ino):
            from types import SimpleNamespace
            return SimpleNamespace(mode=0o40755)

        async def forget(self, ino):
            self.forgot.append(ino)

    fs = FS()
    ops = vfs.ScoutfsOperations(fs)

    async def main():
        async with trio.open_nursery() as n:
            n.start_soon(ops.run_workers)
            fi1 = await ops.open(1024, 0, None)
            fi2 = await ops.open(1024, 0, None)
            assert fs.seen_open == 2 and ops.open_inos == {1024: 2}
            fs.fail = True
            try:
                await ops.open(1025, 0, None)
            except Exception:
                pass
            assert 1025 not in ops.open_inos
            await ops.release(fi1.fh)
            assert ops.open_inos == {1024: 1}
            await ops.release(fi2.fh)
            assert ops.open_inos == {}
            await wait_for(lambda: fs.forgot == [1024], 5)
            dh = await ops.opendir(2048, None)
            assert ops.open_inos == {2048: 1}
            await ops.releasedir(dh)
            await wait_for(lambda: fs.forgot == [1024, 2048], 5)
            n.cancel_scope.cancel()

    run(main)
