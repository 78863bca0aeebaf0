"""Client side of the cluster locks: the modes this mount holds, its users, and invalidation.

A lock covers a fixed key range (spec §3.1): the FS items of a group of 1024 inodes, the
global rename key, or a whole zone (orphan, seq index, totl, indx, quota).  The server
grants modes in arrival order (fs/lock_server.py); this module keeps the granted mode of each
lock, counts local users and waiters per mode, answers the server's invalidations, reports
its locks to a new server (recovery), and frees idle locks.

Protocol rules kept here (spec §3.3-3.5):
- One request per lock is in flight at a time.  A mount converts its own grant directly
  only from READ to WRITE (the only conversion the spec blesses); any other change of a
  non-NULL mode first drops the lock to NULL (a NULL request: the server invalidates our
  own lock, which commits and drops the cached items), so a mode change never leaves
  cached items of a weaker or unreadable mode behind and the server's view of us always
  covers what we really hold.
- A grant crossing an invalidation: the server may grant our request and then invalidate
  that grant before the grant reached us (the reply and the invalidation travel in
  different tasks).  An invalidation of the mode we are requesting (its `old_mode` == the
  mode requested) while the request is in flight therefore waits for the grant to be
  applied, then is served against the granted mode -- provided the mode we sent as our old
  mode already meets the invalidation's target.  The wait ends when the grant is applied,
  or when a later invalidation of the same lock arrives (`note_invalidation`, called by the
  client layer on arrival): the server never has two invalidations of one lock pending for
  one mount, so a later one means it no longer waits for this one -- our request answered
  it (fs/lock_server.py's implied answer: the "crossing" grant had been lost in a
  reconnect) or a new server took over -- and it is served against what we hold (as
  below, a grant still arriving would be applied as at most its target).  If our
  old mode does not meet the target (a READ->WRITE upgrade whose WRITE is invalidated to
  NULL), waiting could deadlock when the grant was lost (our request cannot answer for
  us), so the invalidation is served at once against our READ and the grant, when it
  comes, is applied as the invalidation's target (`pre_inval`): the requester asks again.
- A grant applied while an invalidation drains our users (`draining_to`: one of an earlier
  server, whose successor recovered our old mode and granted a request we resent) is kept
  as the mode we already hold: the invalidation sets its target when done, so a user served
  the grant now would find the mode gone under it.  The requester asks again afterwards.
- Stale and duplicate invalidations (lock unknown, or already at or below the target) are
  answered at once without side effects.
- Recovery (`recover_entries`) reports every non-NULL lock's mode; during an invalidation
  the mode only changes once the invalidation's work is done, so the old mode is reported
  (spec ca526e2b).
- Idle locks (no users, no waiters, no request or invalidation) are kept in an LRU; every
  acquire frees the oldest one when more than `idle_count` locks hold a mode, by a NULL
  request sent from a background task (never inline: the acquirer may hold other locks or
  be about to hold a transaction).  `purge_idle` frees all of them.

Concurrency rules (trio: code between two awaits is atomic):
- Lock order: rename lock -> inode group locks in ascending order -> WRITE_ONLY zone locks ->
  transaction hold.  Never wait on a lock while holding a transaction.
- Applying a grant and counting the requester's user are one atomic step, so a grant
  always serves the task that asked for it before a crossing invalidation drains users.
- Invalidation (``invalidate``) runs in its own task per request, never inline in the
  receive loop, and the client layer runs at most one per lock at a time: it waits for
  conflicting local users to finish (new users queue behind it), commits the transaction
  if the lock dirtied it, drops the range's cached items and *queues* kernel cache
  notifications and inode releases (``on_invalidate`` must not await the kernel or take
  cluster locks), then replies.  Nothing here awaits the kernel.
- A Lock object leaves `locks` only when it is NULL with no users, waiters, request or
  invalidation; every waiter re-fetches it after waking.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager

import trio

from fs import format as fmt
from fs.errors import FsError

log = logging.getLogger(__name__)

LOCK_NULL, LOCK_READ, LOCK_WRITE, LOCK_WRITE_ONLY = 0, 1, 2, 3
MODE_NAMES = {LOCK_NULL: "null", LOCK_READ: "read", LOCK_WRITE: "write",
              LOCK_WRITE_ONLY: "write_only"}
USER_MODES = (LOCK_READ, LOCK_WRITE, LOCK_WRITE_ONLY)

IDLE_COUNT_DEFAULT = 10000  # mount option lock_idle_count
PURGE_CONCURRENCY = 64  # NULL requests in flight at once while purging idle locks


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


def at_or_below(mode: int, target: int) -> bool:
    """Whether holding `mode` already satisfies an invalidation down to `target`."""
    return mode == target or mode == LOCK_NULL or (target == LOCK_WRITE and mode == LOCK_READ)


def zone_range(zone: int) -> tuple[fmt.Key, fmt.Key]:
    return (zone, 0, 0, 0, 0, 0), (zone,) + fmt.KEY_MAX[1:]  # type: ignore[return-value]


class Lock:
    """One cluster lock as this mount knows it."""

    def __init__(self, start: fmt.Key, end: fmt.Key) -> None:
        self.start = start
        self.end = end
        self.mode = LOCK_NULL  # granted mode (changes only on grants and finished invalidations)
        self.write_seq = 0  # seq the server assigned with the last WRITE/WRITE_ONLY grant
        self.users = {LOCK_READ: 0, LOCK_WRITE: 0, LOCK_WRITE_ONLY: 0}
        self.waiters = {LOCK_READ: 0, LOCK_WRITE: 0, LOCK_WRITE_ONLY: 0}
        self.dirty_trans_seq = 0  # transaction seq this lock last dirtied items in
        self.refresh_gen = 0  # bumped whenever the lock becomes readable again
        self.requesting = False  # a request to the server is in flight
        self.req_mode = LOCK_NULL  # ... for this mode
        self.req_old = LOCK_NULL  # ... sent with this old mode
        # an invalidation of the grant in flight was answered early: apply it at most so
        self.pre_inval: int | None = None
        self.invalidating = False
        # the target of an invalidation draining our users and dropping our cache (it sets
        # this mode when done, whatever a grant applied meanwhile), or None
        self.draining_to: int | None = None
        self.freeing = False  # a background NULL request for this idle lock is queued
        self._wake = trio.Event()  # set (and replaced) on grants, releases, invalidations

    def covers(self, key: fmt.Key) -> bool:
        return self.start <= key <= self.end

    def notify(self) -> None:
        """Wake every task waiting for a change of this lock (synchronous)."""
        self._wake.set()
        self._wake = trio.Event()

    async def wait_change(self) -> None:
        await self._wake.wait()

    def busy(self) -> bool:
        return (any(self.users.values()) or any(self.waiters.values()) or self.requesting
                or self.invalidating)

    def __repr__(self) -> str:
        return (f"Lock({fmt.format_key(self.start)} {MODE_NAMES[self.mode]} "
                f"users={self.users} waiters={self.waiters}"
                f"{' requesting ' + MODE_NAMES[self.req_mode] if self.requesting else ''}"
                f"{' invalidating' if self.invalidating else ''})")


RequestFn = Callable[[fmt.Key, int, int, int], Awaitable[dict]]


class LockClient:
    """The locks of one mount.

    `request(key, old_mode, new_mode, write_seq)` sends a LOCK request to the server and
    returns the grant ({"mode": m, "write_seq": s}); it raises only when the mount goes away
    (the client layer resends across reconnects and failovers).  `on_invalidate(lock, old,
    new)` is awaited by the invalidation path once conflicting users drained: it commits if
    the lock dirtied the transaction and drops cached items (fs/super.py wires it).
    `start(nursery)` gives the background tasks (idle lock freeing) a home; without it idle
    locks are only freed by `purge_idle`.
    """

    def __init__(self, request: RequestFn, counters=None, *,
                 idle_count: int = IDLE_COUNT_DEFAULT) -> None:
        self._request = request
        self.counters = counters
        self.idle_count = idle_count  # mount option lock_idle_count, may change at runtime
        self.locks: dict[fmt.Key, Lock] = {}
        self.on_invalidate: Callable[[Lock, int, int], Awaitable[None]] | None = None
        # called on every grant from the server: what other mounts committed before giving
        # the lock up is only visible through fresh stable roots
        self.on_grant: Callable[[], None] | None = None
        self.grant_gen = 0  # bumped on every grant
        self.nr_held = 0  # locks with a non-NULL mode
        self._idle: OrderedDict[fmt.Key, Lock] = OrderedDict()  # oldest first
        # invalidations arrived (note_invalidation) whose invalidate() has not started
        self._arrived: dict[fmt.Key, int] = {}
        self._nursery: trio.Nursery | None = None

    def start(self, nursery: trio.Nursery) -> None:
        """Where idle locks are freed (the mount's nursery)."""
        self._nursery = nursery

    def _inc(self, name: str) -> None:
        if self.counters is not None:
            self.counters.inc(name)

    # ------------------------------------------------------------------ bookkeeping

    def _get(self, start: fmt.Key, end: fmt.Key) -> Lock:
        lock = self.locks.get(start)
        if lock is None:
            lock = Lock(start, end)
            self.locks[start] = lock
        return lock

    def _set_mode(self, lock: Lock, mode: int) -> None:
        if (lock.mode == LOCK_NULL) != (mode == LOCK_NULL):
            self.nr_held += 1 if mode != LOCK_NULL else -1
        lock.mode = mode

    def _settle(self, lock: Lock) -> None:
        """After any change: forget a NULL lock nobody uses, keep the idle LRU exact."""
        if lock.busy() or lock.freeing:
            self._unidle(lock)
            return
        if lock.mode == LOCK_NULL:
            self._unidle(lock)
            if self.locks.get(lock.start) is lock:
                del self.locks[lock.start]
            return
        if lock.start not in self._idle and self.locks.get(lock.start) is lock:
            self._idle[lock.start] = lock  # newest at the end

    def _unidle(self, lock: Lock) -> None:
        # by identity: a forgotten Lock object must not drop its successor's entry
        if self._idle.get(lock.start) is lock:
            del self._idle[lock.start]

    def _use(self, lock: Lock, mode: int) -> Lock:
        lock.users[mode] += 1
        self._unidle(lock)
        return lock

    # ------------------------------------------------------------------ acquire/release

    async def acquire(self, start: fmt.Key, end: fmt.Key, mode: int) -> Lock:
        if mode not in USER_MODES:
            raise ValueError(f"bad lock mode {mode}")
        while True:
            lock = self._get(start, end)
            if not lock.invalidating and mode_serves(lock.mode, mode):
                self._use(lock, mode)
                break
            if lock.requesting or lock.invalidating:
                lock.waiters[mode] += 1
                self._unidle(lock)
                self._inc("lock_wait")
                try:
                    await lock.wait_change()
                finally:
                    lock.waiters[mode] -= 1
                    self._settle(lock)
                continue
            # READ -> WRITE converts in place; every other change of a held mode goes
            # through NULL (our own invalidation commits and drops the cache first)
            direct = lock.mode == LOCK_NULL or (lock.mode == LOCK_READ and mode == LOCK_WRITE)
            want = mode if direct else LOCK_NULL
            await self._send_request(lock, want)
            # synchronous from the grant on: the requester is served before a crossing
            # invalidation (which waited for this grant) starts draining users
            if want == mode and mode_serves(lock.mode, mode):
                self._use(lock, mode)
                break
            self._settle(lock)
        self._maybe_free_idle()
        return lock

    async def _send_request(self, lock: Lock, want: int) -> None:
        """Ask the server for `want` and apply the grant (one request in flight)."""
        assert not lock.requesting
        lock.requesting = True
        lock.req_mode = want
        lock.req_old = lock.mode
        lock.pre_inval = None
        self._unidle(lock)
        self._inc("lock_request")
        try:
            grant = await self._request(lock.start, lock.mode, want, lock.write_seq)
        except BaseException:
            lock.requesting = False
            lock.pre_inval = None
            lock.notify()
            self._settle(lock)
            raise
        lock.requesting = False
        mode = int(grant["mode"])
        if lock.pre_inval is not None and not at_or_below(mode, lock.pre_inval):
            # the server invalidated this grant and we already answered for our old mode:
            # what it believes we hold now is the invalidation's target
            self._inc("lock_grant_pre_invalidated")
            mode = lock.pre_inval
            if lock.invalidating:
                mode = lock.mode  # the running invalidation sets the target when done
        lock.pre_inval = None
        if lock.draining_to is not None and not at_or_below(mode, lock.draining_to):
            # an invalidation (of an earlier server, say: the new one recovered our old mode
            # and granted this) is draining our users and will set its target when done;
            # a user served this grant now would be under a mode about to be clobbered.
            # Keep what we hold: the requester asks again once the invalidation is done
            # (the server's view of us covers more than we claim, which is safe)
            self._inc("lock_grant_during_invalidation")
            mode = lock.mode
        readable_before = lock.mode in (LOCK_READ, LOCK_WRITE)
        self._set_mode(lock, mode)
        lock.write_seq = max(lock.write_seq, int(grant.get("write_seq", 0)))
        if not readable_before and lock.mode in (LOCK_READ, LOCK_WRITE):
            lock.refresh_gen += 1
        self.grant_gen += 1
        self._inc("lock_grant")
        if self.on_grant is not None:
            self.on_grant()
        lock.notify()

    def release(self, lock: Lock, mode: int) -> None:
        lock.users[mode] -= 1
        assert lock.users[mode] >= 0, lock
        lock.notify()
        self._settle(lock)

    # ------------------------------------------------------------------ invalidation

    async def invalidate(self, start: fmt.Key, new_mode: int,
                         old_mode: int | None = None) -> None:
        """Serve the server's invalidation of our lock at `start` down to `new_mode`.

        `old_mode` is the mode the server believes we hold (the LOCK message carries it);
        without it a crossing grant is recognised only from our own state, at the price of
        an occasional needless re-request.  The client layer calls this one invalidation
        at a time per lock, in arrival order, and answers the server when it returns."""
        key = tuple(start)
        arrived = self._arrived.get(key, 0)
        if arrived:  # this invalidation was counted when it arrived
            if arrived == 1:
                del self._arrived[key]
            else:
                self._arrived[key] = arrived - 1
        while True:
            lock = self.locks.get(key)  # type: ignore[call-overload]
            if lock is None:
                self._inc("lock_invalidate_stale")
                return  # unknown lock: answered at once (spec §3.3)
            if lock.invalidating:
                # another invalidation of this lock is running (the client layer orders
                # them per lock; direct callers may not)
                await lock.wait_change()
                continue
            if (lock.requesting and lock.req_mode != LOCK_NULL and lock.mode != lock.req_mode
                    and (old_mode is None or old_mode == lock.req_mode)):
                # (without old_mode, a READ->WRITE upgrade invalidated to NULL may be our
                # READ queued behind another request rather than the grant in flight:
                # answering early below is right for both)
                if at_or_below(lock.req_old, new_mode):
                    # a grant crossing this invalidation: serve it against the grant
                    self._inc("lock_invalidate_crossing")
                    lock.invalidating = True
                    try:
                        while lock.requesting and not self._arrived.get(key):
                            await lock.wait_change()
                    finally:
                        lock.invalidating = False
                        lock.notify()
                        self._settle(lock)
                    if not lock.requesting:
                        continue  # the grant came: serve against it
                    # a later invalidation of this lock arrived: the server moved on (it
                    # took our request as the answer, or it is a new server), so no grant
                    # crossed this one; serve it against what we hold (and, should a
                    # grant still come, apply it as at most new_mode: always safe)
                    self._inc("lock_invalidate_superseded")
                else:
                    self._inc("lock_invalidate_early")
                # the grant in flight will be applied as at most new_mode
                if lock.pre_inval is None or at_or_below(new_mode, lock.pre_inval):
                    lock.pre_inval = new_mode
            break
        target = new_mode
        if target == LOCK_READ and lock.mode == LOCK_WRITE_ONLY:
            target = LOCK_NULL  # READ is not below WRITE_ONLY
        if at_or_below(lock.mode, target):
            self._inc("lock_invalidate_stale")
            return  # duplicate or stale: already there, nothing to do
        self._inc("lock_invalidate")
        lock.invalidating = True
        lock.draining_to = target
        self._unidle(lock)
        try:
            while any(n and modes_conflict(m, target) for m, n in lock.users.items()):
                await lock.wait_change()
            old = lock.mode
            if self.on_invalidate is not None:
                await self.on_invalidate(lock, old, target)
            self._set_mode(lock, target)
        finally:
            lock.invalidating = False
            lock.draining_to = None
            lock.notify()
            self._settle(lock)

    def note_invalidation(self, start: fmt.Key) -> None:
        """The client layer's synchronous hook: an invalidation of the lock at `start`
        arrived and is queued behind the ones before it (call it in arrival order, once
        per invalidation that `invalidate` will later be called for).  It lets an
        invalidation waiting for a crossing grant learn that the server moved on."""
        key = tuple(start)
        self._arrived[key] = self._arrived.get(key, 0) + 1  # type: ignore[index]
        lock = self.locks.get(key)  # type: ignore[call-overload]
        if lock is not None:
            lock.notify()

    # ------------------------------------------------------------------ recovery

    def recover_entries(self) -> list[dict]:
        """Every lock holding a mode, for a new server's LOCK_RECOVER: {key, mode,
        write_seq}.  A lock being invalidated still reports its old mode: the mode changes
        only when the invalidation's work is done (spec ca526e2b)."""
        return [{"key": lock.start, "mode": lock.mode, "write_seq": lock.write_seq}
                for key, lock in sorted(self.locks.items()) if lock.mode != LOCK_NULL]

    # ------------------------------------------------------------------ idle locks

    def idle_locks(self) -> list[Lock]:
        """The idle locks, oldest first."""
        return list(self._idle.values())

    def _maybe_free_idle(self) -> None:
        """Spec §3.5: each lock call frees one oldest idle lock while there are more than
        idle_count locks holding a mode."""
        if self._nursery is None or self.nr_held <= self.idle_count or not self._idle:
            return
        _key, lock = self._idle.popitem(last=False)
        lock.freeing = True
        self._nursery.start_soon(self._free, lock)

    async def _free(self, lock: Lock, limiter: trio.CapacityLimiter | None = None) -> None:
        """Drop an idle lock to NULL (the server invalidates it first: commit, drop)."""
        try:
            if limiter is not None:
                await limiter.acquire()
            try:
                lock.freeing = False
                if (lock.busy() or lock.mode == LOCK_NULL
                        or self.locks.get(lock.start) is not lock):
                    return  # used again meanwhile, or already gone
                self._inc("lock_free_idle")
                try:
                    await self._send_request(lock, LOCK_NULL)
                except FsError as e:
                    log.debug("freeing idle lock %s failed: %s", lock, e)
            finally:
                if limiter is not None:
                    limiter.release()
        finally:
            lock.freeing = False
            self._settle(lock)

    async def purge_idle(self) -> None:
        """Free every idle lock and wait for it (trigger statfs_lock_purge)."""
        self._inc("lock_purge")
        locks = list(self._idle.values())
        self._idle.clear()
        for lock in locks:
            lock.freeing = True
        limiter = trio.CapacityLimiter(PURGE_CONCURRENCY)
        async with trio.open_nursery() as nursery:
            for lock in locks:
                nursery.start_soon(self._free, lock, limiter)

    # ------------------------------------------------------------------ debugfs

    def dump_text(self) -> str:
        """debugfs client_locks: one line per lock."""
        out = []
        for key in sorted(self.locks):
            lk = self.locks[key]
            w, u = lk.waiters, lk.users
            out.append(
                f"start {fmt.format_key(lk.start)} end {fmt.format_key(lk.end)} "
                f"refresh_gen {lk.refresh_gen} mode {lk.mode} "
                f"waiters: rd {w[LOCK_READ]} wr {w[LOCK_WRITE]} wo {w[LOCK_WRITE_ONLY]} "
                f"users: rd {u[LOCK_READ]} wr {u[LOCK_WRITE]} wo {u[LOCK_WRITE_ONLY]}\n")
        return "".join(out)

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
