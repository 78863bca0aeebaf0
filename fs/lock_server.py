"""The server side of cluster locks: which mount holds which mode of each lock (spec §3).

Owns, per lock key (the start key of the lock's range), three collections as scoutfs's
lock_server.c does:

* `granted`: rid -> mode of every mount holding a non-NULL mode (NULL grants are untracked);
* `requested`: the requests not yet granted, in arrival order;
* `invalidated`: rid -> mode we asked that mount to drop to, awaiting its response.

Processing (spec §3.3): the request at the head of the queue is granted once no granted
entry conflicts with it.  Conflicting holders are sent an invalidation (to READ when a
WRITE holder meets a READ request, else to NULL) and nothing on that key proceeds until
every invalidation was answered.  A grant replaces the requester's old entry and assigns
``write_seq = next_seq()`` for WRITE and WRITE_ONLY.  A NULL request conflicts with the
requester's own entry, so it invalidates the requester itself: that is how a mount frees an
idle lock.

Concurrency (trio; code between two awaits is atomic): every state change is synchronous
(`request` enqueues and processes before its first await; an invalidation response updates
and reprocesses synchronously).  Invalidations are sent from tasks of the nursery given to
`start()`, never awaited by a request or by the server's commit path.  The lock server
takes no other lock and never awaits a client while holding anything.

Not yet (the cluster issue): lock recovery after a server change (LOCK_RECOVER, spec §2.3)
and holding requests while recovery is pending; an invalidation to a client whose
connection dropped stays pending until the rid is reclaimed (`remove_rid`).
"""

from __future__ import annotations

import errno
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import trio

from fs import format as fmt
from fs.errors import FsError

log = logging.getLogger(__name__)

LOCK_NULL, LOCK_READ, LOCK_WRITE, LOCK_WRITE_ONLY = 0, 1, 2, 3
MODES = (LOCK_NULL, LOCK_READ, LOCK_WRITE, LOCK_WRITE_ONLY)
MODE_NAMES = {LOCK_NULL: "null", LOCK_READ: "read", LOCK_WRITE: "write",
              LOCK_WRITE_ONLY: "write_only"}


def compatible(granted_rid: int, granted_mode: int, req_rid: int, req_mode: int) -> bool:
    """Whether a granted entry may stay as it is while req is granted (spec §3.2)."""
    if granted_rid == req_rid:
        # a mount converts its own grant (READ->WRITE upgrades without giving it up), except
        # that a NULL request drops its own grant: it must be invalidated first
        return req_mode != LOCK_NULL
    if req_mode == LOCK_NULL:
        return True
    return granted_mode == req_mode and granted_mode in (LOCK_READ, LOCK_WRITE_ONLY)


def invalidation_mode(granted_mode: int, req_mode: int) -> int:
    """The mode a conflicting holder is invalidated to: writers keep READ for readers."""
    if granted_mode == LOCK_WRITE and req_mode == LOCK_READ:
        return LOCK_READ
    return LOCK_NULL


@dataclass
class _Request:
    rid: int
    old_mode: int
    new_mode: int
    write_seq: int
    done: trio.Event = field(default_factory=trio.Event)
    grant: dict | None = None
    error: int = 0


@dataclass
class ServerLock:
    key: fmt.Key
    granted: dict[int, int] = field(default_factory=dict)  # rid -> mode (never NULL)
    requested: deque[_Request] = field(default_factory=deque)
    invalidated: dict[int, int] = field(default_factory=dict)  # rid -> mode asked for

    def idle(self) -> bool:
        return not (self.granted or self.requested or self.invalidated)


SendInvalidate = Callable[[int, fmt.Key, int, int], Awaitable[None]]


class LockServer:
    """The lock table.  `send_invalidate(rid, key, old_mode, new_mode)` must return once the
    client answered (it raises FsError if it could not be delivered)."""

    def __init__(self, next_seq: Callable[[], int], send_invalidate: SendInvalidate,
                 counters=None) -> None:
        self.next_seq = next_seq
        self.send_invalidate = send_invalidate
        self.counters = counters
        self.locks: dict[fmt.Key, ServerLock] = {}
        self._nursery: trio.Nursery | None = None

    def start(self, nursery: trio.Nursery) -> None:
        """Where invalidation tasks run (the server's nursery)."""
        self._nursery = nursery

    def _inc(self, name: str) -> None:
        if self.counters is not None:
            self.counters.inc(name)

    # ------------------------------------------------------------------ requests

    async def request(self, rid: int, key: fmt.Key, old_mode: int, new_mode: int,
                      write_seq: int = 0) -> dict:
        """A client's LOCK request; returns the grant {key, mode, write_seq} once made."""
        if new_mode not in MODES or old_mode not in MODES:
            raise FsError(errno.EINVAL, f"bad lock mode {old_mode}->{new_mode}")
        key = tuple(key)  # type: ignore[assignment]
        lock = self.locks.get(key)
        if lock is None:
            lock = self.locks[key] = ServerLock(key)
        req = _Request(rid, old_mode, new_mode, write_seq)
        lock.requested.append(req)
        self._inc("lock_server_request")
        self._process(lock)
        try:
            await req.done.wait()
        except BaseException:
            # the requester went away (cancelled handler): forget the request
            if req in lock.requested:
                lock.requested.remove(req)
                self._process(lock)
            raise
        if req.error:
            raise FsError(req.error, "lock request dropped")
        assert req.grant is not None
        return req.grant

    def _process(self, lock: ServerLock) -> None:
        while lock.requested and not lock.invalidated:
            req = lock.requested[0]
            conflicts = [(rid, mode) for rid, mode in lock.granted.items()
                         if not compatible(rid, mode, req.rid, req.new_mode)]
            if conflicts:
                for rid, mode in conflicts:
                    inv = invalidation_mode(mode, req.new_mode)
                    lock.invalidated[rid] = inv
                    self._inc("lock_server_invalidate")
                    self._spawn_invalidate(rid, lock.key, mode, inv)
                return
            lock.requested.popleft()
            lock.granted.pop(req.rid, None)
            wseq = 0
            if req.new_mode != LOCK_NULL:
                lock.granted[req.rid] = req.new_mode
                if req.new_mode in (LOCK_WRITE, LOCK_WRITE_ONLY):
                    wseq = self.next_seq()
            req.grant = {"key": list(lock.key), "mode": req.new_mode, "write_seq": wseq}
            self._inc("lock_server_grant")
            req.done.set()
        if lock.idle():
            self.locks.pop(lock.key, None)

    def _spawn_invalidate(self, rid: int, key: fmt.Key, old_mode: int, new_mode: int) -> None:
        if self._nursery is None:
            raise RuntimeError("LockServer.start() was not called")
        self._nursery.start_soon(self._invalidate_task, rid, key, old_mode, new_mode)

    async def _invalidate_task(self, rid: int, key: fmt.Key, old_mode: int,
                               new_mode: int) -> None:
        try:
            await self.send_invalidate(rid, key, old_mode, new_mode)
        except FsError as e:
            # the client is unreachable: the invalidation stays pending until the rid is
            # reclaimed (remove_rid) -- resend after reconnect comes with the cluster issue
            log.warning("invalidation of %s for rid %016x failed: %s",
                        fmt.format_key(key), rid, e)
            return
        self.invalidation_done(rid, key, new_mode)

    def invalidation_done(self, rid: int, key: fmt.Key, mode: int) -> None:
        """The client answered an invalidation: it now holds `mode`."""
        lock = self.locks.get(tuple(key))  # type: ignore[arg-type]
        if lock is None or rid not in lock.invalidated:
            log.debug("stale invalidation response from %016x for %s", rid,
                      fmt.format_key(tuple(key)))  # type: ignore[arg-type]
            return
        del lock.invalidated[rid]
        if mode == LOCK_NULL:
            lock.granted.pop(rid, None)
        elif rid in lock.granted:
            lock.granted[rid] = mode
        self._process(lock)

    # ------------------------------------------------------------------ rids

    def remove_rid(self, rid: int) -> None:
        """Forget everything of a departed or reclaimed mount (reclaim_rid step 1): its
        grants, its queued requests (they fail with ENOTCONN) and its pending
        invalidations (treated as answered)."""
        for lock in list(self.locks.values()):
            changed = False
            if lock.granted.pop(rid, None) is not None:
                changed = True
            if lock.invalidated.pop(rid, None) is not None:
                changed = True
            for req in [r for r in lock.requested if r.rid == rid]:
                lock.requested.remove(req)
                req.error = errno.ENOTCONN
                req.done.set()
                changed = True
            if changed:
                self._process(lock)
            if lock.idle():
                self.locks.pop(lock.key, None)

    def rids(self) -> set[int]:
        out: set[int] = set()
        for lock in self.locks.values():
            out.update(lock.granted)
            out.update(lock.invalidated)
            out.update(r.rid for r in lock.requested)
        return out

    def dump(self) -> list[tuple[fmt.Key, str, int, int]]:
        """(key, state, rid, mode) for debugfs server_locks: state granted/invalidated/
        requested."""
        out = []
        for key in sorted(self.locks):
            lock = self.locks[key]
            out += [(key, "granted", rid, m) for rid, m in lock.granted.items()]
            out += [(key, "invalidated", rid, m) for rid, m in lock.invalidated.items()]
            out += [(key, "requested", r.rid, r.new_mode) for r in lock.requested]
        return out
