"""Client side of the cluster locks: the modes this mount holds, its users, and invalidation.

A lock covers a fixed key range (spec §3.1): the FS items of a group of 1024 inodes, the
global rename key, or a whole zone (orphan, seq index, totl, indx, quota).  The server
grants modes in arrival order (fs/lock_server.py); this module keeps the granted mode of each
lock, counts local users per mode, and answers the server's invalidations.

Concurrency rules (trio: code between two awaits is atomic):
- Lock order: rename lock -> inode group locks in ascending order -> WRITE_ONLY zone locks ->
  transaction hold.  Never wait on a lock while holding a transaction.
- One request per lock is in flight at a time; other tasks wanting a stronger mode wait on the
  lock's condition and re-check after every grant.
- Invalidation (``invalidate``) runs in its own task per request, never inline in the
  receive loop: it waits for conflicting local users to finish, commits the transaction if
  the lock dirtied it, drops the range's cached items and *queues* kernel cache
  notifications and inode releases (``on_invalidate`` callbacks must not await the kernel or
  take cluster locks), then replies.  Nothing here awaits the kernel.
- A lock is never held across a commit by the invalidation path itself; holders of a
  transaction never wait for a lock.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager

import trio

from fs import format as fmt

log = logging.getLogger(__name__)

LOCK_NULL, LOCK_READ, LOCK_WRITE, LOCK_WRITE_ONLY = 0, 1, 2, 3
MODE_NAMES = {LOCK_NULL: "null", LOCK_READ: "read", LOCK_WRITE: "write",
              LOCK_WRITE_ONLY: "write_only"}


def mode_serves(granted: int, wanted: int) -> bool:
    """A granted mode serves a local request if equal, or WRITE serving READ (spec §3.2)."""
    return granted == wanted or (granted == LOCK_WRITE and wanted == LOCK_READ)


def modes_conflict(held: int, wanted: int) -> bool:
    """Whether a local user holding `held` must finish before the lock can become `wanted`."""
    if held == wanted and held in (LOCK_READ, LOCK_WRITE_ONLY):
        return False
    if wanted == LOCK_READ and held == LOCK_READ:
        return False
    return True


def zone_range(zone: int) -> tuple[fmt.Key, fmt.Key]:
    return (zone, 0, 0, 0, 0, 0), (zone,) + fmt.KEY_MAX[1:]  # type: ignore[return-value]


class Lock:
    """One cluster lock as this mount knows it."""

    def __init__(self, start: fmt.Key, end: fmt.Key) -> None:
        self.start = start
        self.end = end
        self.mode = LOCK_NULL  # granted mode
        self.write_seq = 0  # seq the server assigned with the last WRITE/WRITE_ONLY grant
        self.users = {LOCK_READ: 0, LOCK_WRITE: 0, LOCK_WRITE_ONLY: 0}
        self.dirty_trans_seq = 0  # transaction seq this lock last dirtied items in
        self.refresh_gen = 0  # bumped whenever the lock becomes readable again
        self.requesting = False  # a request to the server is in flight
        self.invalidating = False
        self._wake = trio.Event()  # set (and replaced) on grants, releases, invalidations

    def covers(self, key: fmt.Key) -> bool:
        return self.start <= key <= self.end

    def notify(self) -> None:
        """Wake every task waiting for a change of this lock (synchronous)."""
        self._wake.set()
        self._wake = trio.Event()

    async def wait_change(self) -> None:
        await self._wake.wait()

    def __repr__(self) -> str:
        return f"Lock({fmt.format_key(self.start)} {MODE_NAMES[self.mode]} users={self.users})"


RequestFn = Callable[[fmt.Key, int, int, int], Awaitable[dict]]


class LockClient:
    """The locks of one mount.

    `request(key, old_mode, new_mode, write_seq)` sends a LOCK request to the server and
    returns the grant ({"mode": m, "write_seq": s}).  `on_invalidate(lock, old, new)` is
    awaited by the invalidation path once conflicting users drained: it commits if the lock
    dirtied the transaction and drops cached items (fs/super.py wires it).
    """

    def __init__(self, request: RequestFn) -> None:
        self._request = request
        self.locks: dict[fmt.Key, Lock] = {}
        self.on_invalidate: Callable[[Lock, int, int], Awaitable[None]] | None = None
        # called on every grant from the server: what other mounts committed before giving
        # the lock up is only visible through fresh stable roots
        self.on_grant: Callable[[], None] | None = None
        self.grant_gen = 0  # bumped on every grant

    def _get(self, start: fmt.Key, end: fmt.Key) -> Lock:
        lock = self.locks.get(start)
        if lock is None:
            lock = Lock(start, end)
            self.locks[start] = lock
        return lock

    async def acquire(self, start: fmt.Key, end: fmt.Key, mode: int) -> Lock:
        lock = self._get(start, end)
        while True:
            if not lock.invalidating and mode_serves(lock.mode, mode):
                lock.users[mode] += 1
                return lock
            if lock.requesting or lock.invalidating:
                await lock.wait_change()
                continue
            break
        lock.requesting = True
        try:
            # a READ user of a WRITE_ONLY lock, or a WRITE user of a READ lock, asks for the
            # mode it needs; the server converts the old grant
            grant = await self._request(lock.start, lock.mode, mode, lock.write_seq)
        finally:
            lock.requesting = False
            lock.notify()
        readable_before = lock.mode in (LOCK_READ, LOCK_WRITE)
        lock.mode = grant["mode"]
        lock.write_seq = max(lock.write_seq, grant.get("write_seq", 0))
        if not readable_before and lock.mode in (LOCK_READ, LOCK_WRITE):
            lock.refresh_gen += 1
        self.grant_gen += 1
        if self.on_grant is not None:
            self.on_grant()
        lock.users[mode] += 1
        return lock

    def release(self, lock: Lock, mode: int) -> None:
        lock.users[mode] -= 1
        assert lock.users[mode] >= 0, lock
        lock.notify()

    async def invalidate(self, start: fmt.Key, new_mode: int) -> None:
        """Serve the server's invalidation of our lock at `start` down to `new_mode`."""
        lock = self.locks.get(start)
        if lock is None:
            return  # unknown lock: answered at once (spec §3.3)
        lock.invalidating = True
        try:
            while any(n and modes_conflict(m, new_mode) for m, n in lock.users.items()):
                await lock.wait_change()
            old_mode = lock.mode
            if self.on_invalidate is not None:
                await self.on_invalidate(lock, old_mode, new_mode)
            lock.mode = new_mode
        finally:
            lock.invalidating = False
            lock.notify()
        if lock.mode == LOCK_NULL and not any(lock.users.values()) and not lock.requesting:
            self.locks.pop(start, None)

    # ------------------------------------------------------------- the locks fs/ uses

    def inodes(self, inos: Iterable[int], mode: int) -> _InodeLocks:
        """Lock the groups of `inos` in ascending order; map each ino to its group's lock.

        An async context manager (a small class rather than a generator: every request
        takes one, so its overhead counts)."""
        return _InodeLocks(self, inos, mode)

    @asynccontextmanager
    async def rename(self) -> AsyncIterator[Lock]:
        key = fmt.rename_lock_key()
        lock = await self.acquire(key, key, LOCK_WRITE)
        try:
            yield lock
        finally:
            self.release(lock, LOCK_WRITE)

    @asynccontextmanager
    async def zone(self, start_key: fmt.Key, mode: int) -> AsyncIterator[Lock]:
        start, end = zone_range(start_key[0])
        lock = await self.acquire(start, end, mode)
        try:
            yield lock
        finally:
            self.release(lock, mode)


class _InodeLocks:
    """`async with locks.inodes(inos, mode) as by_ino:` (see LockClient.inodes)."""

    __slots__ = ("client", "inos", "mode", "held")

    def __init__(self, client: LockClient, inos: Iterable[int], mode: int) -> None:
        self.client = client
        self.inos = list(inos)
        self.mode = mode
        self.held: list[Lock] = []

    async def __aenter__(self) -> dict[int, Lock]:
        inos = self.inos
        if len(inos) == 1:
            start, end = fmt.inode_group_range(inos[0])
            lock = await self.client.acquire(start, end, self.mode)
            self.held.append(lock)
            return {inos[0]: lock}
        groups = sorted({fmt.lock_group_first(i) for i in inos})
        try:
            for g in groups:
                start, end = fmt.inode_group_range(g)
                self.held.append(await self.client.acquire(start, end, self.mode))
        except BaseException:
            self._release()
            raise
        by_group = {fmt.lock_group_first(lk.start[1]): lk for lk in self.held}
        return {i: by_group[fmt.lock_group_first(i)] for i in inos}

    def _release(self) -> None:
        for lk in self.held:
            self.client.release(lk, self.mode)
        self.held = []

    async def __aexit__(self, *exc) -> None:
        self._release()
