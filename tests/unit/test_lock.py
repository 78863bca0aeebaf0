"""Lock client and lock server units: mode serving, one request in flight, users and waiters,
invalidation (stale, crossing), conversions, recovery entries, idle locks, debugfs text; the
server's recovery hold, resent invalidations, lowering by a request's old mode, debugfs."""

from __future__ import annotations

import errno

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from fs import format as fmt
from fs.counters import Counters
from fs.errors import FsError
from fs.lock import LOCK_NULL, LOCK_READ, LOCK_WRITE, LOCK_WRITE_ONLY, LockClient, mode_serves
from fs.lock_server import LockServer


class FakeServer:
    def __init__(self) -> None:
        self.requests: list[tuple[fmt.Key, int, int]] = []
        self.seq = 100
        self.gate: trio.Event | None = None

    async def request(self, key, old_mode, new_mode, write_seq):
        self.requests.append((key, old_mode, new_mode))
        if self.gate is not None:
            await self.gate.wait()
        self.seq += 1
        ws = self.seq if new_mode in (LOCK_WRITE, LOCK_WRITE_ONLY) else 0
        return {"mode": new_mode, "write_seq": ws}


def test_mode_serving_table():
    assert mode_serves(LOCK_WRITE, LOCK_READ)
    assert not mode_serves(LOCK_READ, LOCK_WRITE)
    assert not mode_serves(LOCK_WRITE_ONLY, LOCK_READ)
    assert not mode_serves(LOCK_WRITE, LOCK_WRITE_ONLY)
    assert not mode_serves(LOCK_NULL, LOCK_READ)


def test_grants_are_cached_and_ordered():
    srv = FakeServer()
    locks = LockClient(srv.request)

    async def main():
        async with locks.inodes([5000, 1, 2047], LOCK_WRITE) as held:
            assert held[2047] is not held[1]
            assert held[5000].write_seq > 0
        assert [r[0][1] for r in srv.requests] == [0, 1024, 4096]  # ascending groups
        async with locks.inodes([2000], LOCK_READ):
            pass  # WRITE serves READ: no new request
        assert len(srv.requests) == 3

    trio.run(main)


def test_one_request_in_flight_per_lock():
    srv = FakeServer()
    srv.gate = trio.Event()
    locks = LockClient(srv.request)
    got = []

    async def user(i):
        async with locks.inodes([1024], LOCK_READ):
            got.append(i)

    async def main():
        async with trio.open_nursery() as n:
            for i in range(5):
                n.start_soon(user, i)
            await trio.testing.wait_all_tasks_blocked()
            assert len(srv.requests) == 1
            srv.gate.set()
        assert sorted(got) == list(range(5))
        assert len(srv.requests) == 1

    trio.run(main)


def test_invalidation_waits_for_users_and_calls_back():
    srv = FakeServer()
    locks = LockClient(srv.request)
    events = []

    async def on_inval(lock, old, new):
        events.append(("inval", old, new))

    locks.on_invalidate = on_inval

    async def main():
        start, _ = fmt.inode_group_range(1024)
        release = trio.Event()

        async def holder():
            async with locks.inodes([1024], LOCK_WRITE):
                events.append("holding")
                await release.wait()
                events.append("released")

        async with trio.open_nursery() as n:
            n.start_soon(holder)
            await trio.testing.wait_all_tasks_blocked()
            n.start_soon(locks.invalidate, start, LOCK_NULL)
            await trio.testing.wait_all_tasks_blocked()
            assert events == ["holding"]  # invalidation waits for the WRITE user
            release.set()
        assert events == ["holding", "released", ("inval", LOCK_WRITE, LOCK_NULL)]
        assert start not in locks.locks  # NULL and unused: forgotten
        # an invalidation of an unknown lock is answered at once
        await locks.invalidate((fmt.ZONE_FS, 999 << 10, 0, 0, 0, 0), LOCK_NULL)

    trio.run(main)


def test_grants_call_on_grant_so_readers_refresh_roots():
    srv = FakeServer()
    locks = LockClient(srv.request)
    grants = []
    locks.on_grant = lambda: grants.append(len(srv.requests))

    async def main():
        async with locks.inodes([1], LOCK_READ):
            pass
        async with locks.inodes([1], LOCK_READ):
            pass  # served from the cached grant: no refresh needed
        async with locks.inodes([1], LOCK_WRITE):
            pass

    trio.run(main)
    assert grants == [1, 2]


# --------------------------------------------------------------------------- client, more


class OwnServer(FakeServer):
    """FakeServer that frees like the real one: a NULL request first invalidates the
    requester's own lock (its commit and cache drop), then grants NULL."""

    def __init__(self) -> None:
        super().__init__()
        self.locks: LockClient | None = None

    async def request(self, key, old_mode, new_mode, write_seq):
        if new_mode == LOCK_NULL and old_mode != LOCK_NULL:
            self.requests.append((key, old_mode, new_mode))
            await self.locks.invalidate(key, LOCK_NULL, old_mode)
            return {"mode": LOCK_NULL, "write_seq": 0}
        return await super().request(key, old_mode, new_mode, write_seq)


def grp(n: int):
    return fmt.inode_group_range(n * 1024)


def test_conversions_other_than_read_to_write_go_through_null():
    srv = OwnServer()
    locks = LockClient(srv.request)
    srv.locks = locks
    invals = []

    async def on_inval(lock, old, new):
        invals.append((old, new))

    locks.on_invalidate = on_inval
    start, end = grp(1)

    async def main():
        lk = await locks.acquire(start, end, LOCK_WRITE_ONLY)
        locks.release(lk, LOCK_WRITE_ONLY)
        lk = await locks.acquire(start, end, LOCK_READ)  # WO -> NULL -> READ
        assert lk.mode == LOCK_READ
        locks.release(lk, LOCK_READ)
        lk = await locks.acquire(start, end, LOCK_WRITE)  # READ -> WRITE in place
        locks.release(lk, LOCK_WRITE)
        lk = await locks.acquire(start, end, LOCK_WRITE_ONLY)  # WRITE -> NULL -> WO
        locks.release(lk, LOCK_WRITE_ONLY)

    trio.run(main)
    assert [(o, n) for _k, o, n in srv.requests] == [
        (LOCK_NULL, LOCK_WRITE_ONLY), (LOCK_WRITE_ONLY, LOCK_NULL), (LOCK_NULL, LOCK_READ),
        (LOCK_READ, LOCK_WRITE), (LOCK_WRITE, LOCK_NULL), (LOCK_NULL, LOCK_WRITE_ONLY)]
    # our own invalidation committed and dropped before each mode change through NULL
    assert invals == [(LOCK_WRITE_ONLY, LOCK_NULL), (LOCK_WRITE, LOCK_NULL)]


def test_stale_and_duplicate_invalidations_change_nothing():
    srv = FakeServer()
    locks = LockClient(srv.request)
    invals = []

    async def on_inval(lock, old, new):
        invals.append((old, new))

    locks.on_invalidate = on_inval
    start, end = grp(1)

    async def main():
        lk = await locks.acquire(start, end, LOCK_WRITE)
        locks.release(lk, LOCK_WRITE)
        await locks.invalidate(start, LOCK_READ, LOCK_WRITE)
        assert lk.mode == LOCK_READ and invals == [(LOCK_WRITE, LOCK_READ)]
        await locks.invalidate(start, LOCK_READ, LOCK_WRITE)  # duplicate
        await locks.invalidate(grp(7)[0], LOCK_NULL, LOCK_READ)  # unknown lock
        assert invals == [(LOCK_WRITE, LOCK_READ)] and lk.mode == LOCK_READ
        await locks.invalidate(start, LOCK_NULL, LOCK_READ)
        await locks.invalidate(start, LOCK_NULL, LOCK_READ)  # duplicate: forgotten lock
        assert invals == [(LOCK_WRITE, LOCK_READ), (LOCK_READ, LOCK_NULL)]
        assert locks.locks == {} and locks.nr_held == 0

    trio.run(main)


def test_invalidation_of_a_grant_in_flight_waits_for_it():
    srv = FakeServer()
    srv.gate = trio.Event()
    locks = LockClient(srv.request)
    events = []

    async def on_inval(lock, old, new):
        events.append(("inval", old, new))

    locks.on_invalidate = on_inval
    start, end = grp(1)

    async def main():
        async def user():
            lk = await locks.acquire(start, end, LOCK_READ)
            events.append("granted")
            locks.release(lk, LOCK_READ)

        async with trio.open_nursery() as n:
            n.start_soon(user)
            await trio.testing.wait_all_tasks_blocked()
            # the server granted READ and invalidated it; the invalidation comes first
            n.start_soon(locks.invalidate, start, LOCK_NULL, LOCK_READ)
            await trio.testing.wait_all_tasks_blocked()
            assert events == [] and locks.locks[start].invalidating
            srv.gate.set()
        assert events == ["granted", ("inval", LOCK_READ, LOCK_NULL)]
        assert locks.locks == {}

    trio.run(main)


def test_recover_entries_report_the_old_mode_during_an_invalidation():
    srv = FakeServer()
    locks = LockClient(srv.request)
    commit = trio.Event()

    async def on_inval(lock, old, new):
        await commit.wait()

    locks.on_invalidate = on_inval
    (s1, e1), (s2, e2), (s3, e3) = grp(1), grp(2), grp(3)

    async def main():
        for s, e, m in ((s1, e1, LOCK_WRITE), (s2, e2, LOCK_READ), (s3, e3, LOCK_WRITE_ONLY)):
            locks.release(await locks.acquire(s, e, m), m)
        ws = locks.locks[s1].write_seq
        async with trio.open_nursery() as n:
            n.start_soon(locks.invalidate, s1, LOCK_READ, LOCK_WRITE)
            n.start_soon(locks.invalidate, s2, LOCK_NULL, LOCK_READ)
            await trio.testing.wait_all_tasks_blocked()
            entries = locks.recover_entries()
            assert [(e["key"], e["mode"]) for e in entries] == [
                (s1, LOCK_WRITE), (s2, LOCK_READ), (s3, LOCK_WRITE_ONLY)]
            assert entries[0]["write_seq"] == ws > 0
            commit.set()
        assert [(e["key"], e["mode"]) for e in locks.recover_entries()] == [
            (s1, LOCK_READ), (s3, LOCK_WRITE_ONLY)]

    trio.run(main)


def test_dump_text_counts_users_and_waiters_per_mode():
    srv = FakeServer()
    locks = LockClient(srv.request)
    start, end = grp(1)

    async def main():
        lk = await locks.acquire(start, end, LOCK_WRITE)
        lk2 = await locks.acquire(start, end, LOCK_READ)
        srv.gate = trio.Event()
        async with trio.open_nursery() as n:
            n.start_soon(locks.invalidate, start, LOCK_NULL, LOCK_WRITE)
            await trio.testing.wait_all_tasks_blocked()
            n.start_soon(locks.acquire, start, end, LOCK_READ)
            n.start_soon(locks.acquire, start, end, LOCK_WRITE_ONLY)
            await trio.testing.wait_all_tasks_blocked()
            text = locks.dump_text()
            assert text == (
                f"start {fmt.format_key(start)} end {fmt.format_key(end)} refresh_gen 1 "
                f"mode {LOCK_WRITE} waiters: rd 1 wr 0 wo 1 users: rd 1 wr 1 wo 0\n")
            assert text.split()[5] == "1"  # refresh_gen, as lock-refleak parses it
            locks.release(lk, LOCK_WRITE)
            locks.release(lk2, LOCK_READ)
            srv.gate.set()
            await trio.testing.wait_all_tasks_blocked()
            n.cancel_scope.cancel()

    trio.run(main)


def test_failed_request_leaves_the_lock_usable():
    srv = FakeServer()
    fail = [True]

    async def request(key, old, new, ws):
        if fail[0]:
            fail[0] = False
            raise FsError(errno.ENOTCONN, "unmounting")
        return await srv.request(key, old, new, ws)

    locks = LockClient(request)
    start, end = grp(1)

    async def main():
        with pytest.raises(FsError):
            await locks.acquire(start, end, LOCK_READ)
        assert locks.locks == {}
        lk = await locks.acquire(start, end, LOCK_READ)
        assert lk.mode == LOCK_READ and not lk.requesting
        with trio.move_on_after(1):  # a cancelled waiter leaves no count behind
            async with trio.open_nursery() as n:
                n.start_soon(locks.invalidate, start, LOCK_NULL, LOCK_READ)
                await trio.testing.wait_all_tasks_blocked()
                n.start_soon(locks.acquire, start, end, LOCK_WRITE)
                await trio.testing.wait_all_tasks_blocked()
                assert lk.waiters[LOCK_WRITE] == 1
        assert lk.waiters[LOCK_WRITE] == 0
        locks.release(lk, LOCK_READ)

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


def test_idle_locks_beyond_idle_count_are_freed_oldest_first():
    srv = OwnServer()
    counters = Counters()
    locks = LockClient(srv.request, counters, idle_count=2)
    srv.locks = locks

    async def main():
        async with trio.open_nursery() as n:
            locks.start(n)
            for i in (1, 2):
                s, e = grp(i)
                locks.release(await locks.acquire(s, e, LOCK_READ), LOCK_READ)
            assert [lk.start for lk in locks.idle_locks()] == [grp(1)[0], grp(2)[0]]
            s, e = grp(3)
            held = await locks.acquire(s, e, LOCK_WRITE)  # 3 held > 2: frees grp(1)
            await trio.testing.wait_all_tasks_blocked()
            assert counters.get("lock_free_idle") == 1
            assert grp(1)[0] not in locks.locks and locks.nr_held == 2
            assert srv.requests[-1] == (grp(1)[0], LOCK_READ, LOCK_NULL)
            # a lock in use is never chosen: only grp(2) is idle
            locks.idle_count = 0
            s4, e4 = grp(4)
            locks.release(await locks.acquire(s4, e4, LOCK_READ), LOCK_READ)
            await trio.testing.wait_all_tasks_blocked()
            assert grp(2)[0] not in locks.locks and held.mode == LOCK_WRITE
            assert [lk.start for lk in locks.idle_locks()] == [s4]
            locks.release(held, LOCK_WRITE)
            await locks.purge_idle()
            assert locks.locks == {} and locks.nr_held == 0
            assert counters.get("lock_free_idle") == 4

    trio.run(main)


@settings(max_examples=60, deadline=None)
@given(ops=st.lists(st.tuples(st.sampled_from(["acquire", "release", "purge"]),
                              st.integers(0, 4),
                              st.sampled_from([LOCK_READ, LOCK_WRITE, LOCK_WRITE_ONLY])),
                    max_size=40),
       idle_count=st.integers(0, 3))
def test_idle_lru_stays_exact(ops, idle_count):
    """Whatever the users do: the idle LRU holds exactly the unused locks with a mode,
    nr_held counts the locks with a mode, users only use served modes, and after
    settling no more than idle_count locks are idle beyond what one free per acquire
    allows."""
    srv = OwnServer()
    locks = LockClient(srv.request, idle_count=idle_count)
    srv.locks = locks
    held: list = []

    def check():
        mine = [lk for lk in locks.locks.values() if lk.mode != LOCK_NULL]
        assert locks.nr_held == len(mine)
        idle = {lk.start for lk in mine if not lk.busy()}
        assert {lk.start for lk in locks.idle_locks()} == idle
        for lk in locks.locks.values():
            for m, nr in lk.users.items():
                assert nr == 0 or mode_serves(lk.mode, m), lk

    async def main():
        async with trio.open_nursery() as n:
            locks.start(n)
            for op, g, mode in ops:
                if op == "acquire":
                    s, e = grp(g + 1)
                    if any(lk.start == s for lk, _m in held):
                        continue  # one user per lock: a second would wait on itself
                    held.append((await locks.acquire(s, e, mode), mode))
                elif op == "release" and held:
                    lk, m = held.pop(g % len(held))
                    locks.release(lk, m)
                elif op == "purge":
                    await locks.purge_idle()
                    assert locks.idle_locks() == []
                await trio.testing.wait_all_tasks_blocked()
                check()
            for lk, m in held:
                locks.release(lk, m)
            await locks.purge_idle()
            assert locks.locks == {}

    trio.run(main)


# --------------------------------------------------------------------------- server


K = grp(1)[0]
R, W, WO, N = LOCK_READ, LOCK_WRITE, LOCK_WRITE_ONLY, LOCK_NULL


class Clients:
    """The server's send_invalidate: records, the test answers (or fails) each one."""

    def __init__(self) -> None:
        self.sent: list[tuple[int, fmt.Key, int, int]] = []
        self.pending: dict[int, list[trio.Event]] = {}
        self.fail: set[int] = set()

    async def send(self, rid, key, old, new):
        self.sent.append((rid, key, old, new))
        if rid in self.fail:
            raise FsError(errno.ENOTCONN, "not connected")
        ev = trio.Event()
        self.pending.setdefault(rid, []).append(ev)
        await ev.wait()

    def answer(self, rid, which: int = 0):
        """Answer the oldest (or `which`) unanswered invalidation sent to rid."""
        self.pending[rid].pop(which).set()


def server_run(test):
    async def main():
        clients = Clients()
        seqs = iter(range(100, 1000))
        server = LockServer(lambda: next(seqs), clients.send, Counters())
        async with trio.open_nursery() as n:
            server.start(n)
            grants: dict[str, dict] = {}

            def req(name, rid, old, new, key=K):
                async def go():
                    try:
                        grants[name] = await server.request(rid, key, old, new)
                    except FsError as e:
                        grants[name] = {"errno": e.errno}
                n.start_soon(go)

            await test(server, clients, req, grants)
            n.cancel_scope.cancel()

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


def test_server_holds_requests_until_every_rid_recovered():
    async def t(server, clients, req, grants):
        server.begin_recovery({1, 2, 3})
        req("c", 3, N, W)
        await trio.testing.wait_all_tasks_blocked()
        assert server.recovering() == {1, 2, 3} and grants == {}
        server.recover(1, [{"key": K, "mode": R, "write_seq": 0},
                           {"key": grp(2)[0], "mode": N, "write_seq": 0}])
        server.recovery_done(1)
        server.recover(2, [{"key": list(K), "mode": R, "write_seq": 77}])
        server.recovery_done(2)
        await trio.testing.wait_all_tasks_blocked()
        assert grants == {} and clients.sent == [] and server.recovering() == {3}
        assert server.max_recovered_write_seq == 77
        assert server.locks[K].granted == {1: R, 2: R} and grp(2)[0] not in server.locks
        server.remove_rid(3)  # never recovered: its request fails, recovery ends
        await trio.testing.wait_all_tasks_blocked()
        assert server.recovering() == set() and grants["c"] == {"errno": errno.ENOTCONN}
        req("c2", 4, N, W)
        await trio.testing.wait_all_tasks_blocked()
        assert sorted(clients.sent) == [(1, K, R, N), (2, K, R, N)]
        clients.answer(1)
        clients.answer(2)
        await trio.testing.wait_all_tasks_blocked()
        assert grants["c2"]["mode"] == W and server.locks[K].granted == {4: W}

    server_run(t)


def test_server_resends_invalidations_that_could_not_be_delivered():
    async def t(server, clients, req, grants):
        req("a", 1, N, R)
        await trio.testing.wait_all_tasks_blocked()
        clients.fail.add(1)
        req("b", 2, N, W)
        await trio.testing.wait_all_tasks_blocked()
        assert clients.sent == [(1, K, R, N)] and server.locks[K].invalidated == {1: N}
        assert server.counters.get("lock_server_invalidate_failed") == 1
        clients.fail.clear()
        assert server.resend_invalidations(1) == 1
        assert server.resend_invalidations(2) == 0
        await trio.testing.wait_all_tasks_blocked()
        assert clients.sent == [(1, K, R, N)] * 2
        clients.answer(1)
        await trio.testing.wait_all_tasks_blocked()
        assert grants["b"]["mode"] == W

    server_run(t)


def test_server_request_old_mode_lowers_its_entry_and_answers_invalidations():
    """A request carries what the mount holds: an entry above it was a grant the mount
    never applied (lost reply); a pending invalidation it already meets is answered, and
    the real answer arriving later is stale."""

    async def t(server, clients, req, grants):
        req("a", 1, N, W)
        await trio.testing.wait_all_tasks_blocked()
        req("b", 2, N, R)
        await trio.testing.wait_all_tasks_blocked()
        assert clients.sent == [(1, K, W, R)]
        req("a2", 1, N, R)  # rid 1 holds nothing (it lost the WRITE grant's reply)
        await trio.testing.wait_all_tasks_blocked()
        assert server.counters.get("lock_server_implied_answer") == 1
        assert grants["b"]["mode"] == R and grants["a2"]["mode"] == R
        assert server.locks[K].granted == {1: R, 2: R}
        req("c", 3, N, W)
        await trio.testing.wait_all_tasks_blocked()
        assert sorted(clients.sent[1:]) == [(1, K, R, N), (2, K, R, N)]
        # the late answer to the first invalidation (WRITE -> READ) is stale: it must not
        # count for the second one (READ -> NULL)
        clients.answer(1, 0)
        await trio.testing.wait_all_tasks_blocked()
        assert server.counters.get("lock_server_stale_answer") == 1
        assert server.locks[K].invalidated == {1: N, 2: N}
        assert server.locks[K].granted == {1: R, 2: R}
        server.invalidation_done(2, K, N, token=object())  # a foreign token: stale too
        assert server.counters.get("lock_server_stale_answer") == 2
        clients.answer(1)
        clients.answer(2)
        await trio.testing.wait_all_tasks_blocked()
        assert grants["c"]["mode"] == W and server.locks[K].granted == {3: W}

    server_run(t)


def test_server_debugfs_text():
    async def t(server, clients, req, grants):
        req("a", 0xAA, N, R)
        await trio.testing.wait_all_tasks_blocked()
        req("b", 0xBB, N, W)
        await trio.testing.wait_all_tasks_blocked()
        lines = server.dump_text().splitlines()
        k = fmt.format_key(K)
        assert lines == [f"{k} 1 granted rid 00000000000000aa net_id 1",
                         f"{k} 0 invalidated rid 00000000000000aa net_id 1",
                         f"{k} 2 requested rid 00000000000000bb net_id 2"]
        assert all(line.split()[4] in ("00000000000000aa", "00000000000000bb")
                   for line in lines)  # field 5 is the rid
        assert server.stats_text() == ("locks 1\ngranted 1\nrequested 1\ninvalidated 1\n"
                                       "recovering 0\n")

    server_run(t)
