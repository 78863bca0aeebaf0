"""Client lock cache: mode serving, one request in flight, users, invalidation ordering."""

from __future__ import annotations

import trio
import trio.testing

from fs import format as fmt
from fs.lock import LOCK_NULL, LOCK_READ, LOCK_WRITE, LOCK_WRITE_ONLY, LockClient, mode_serves


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
