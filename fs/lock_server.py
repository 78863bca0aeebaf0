"""The server side of cluster locks: which mount holds which mode of each lock (spec §3).

Owns, per lock key (the start key of the lock's range), three collections as scoutfs's
lock_server.c does:

* `granted`: rid -> mode of every mount holding a non-NULL mode (NULL grants are untracked);
* `requested`: the requests not yet granted, in arrival order;
* `invalidated`: rid -> mode we asked that mount to drop to, awaiting its response (each
  pending invalidation also carries the old mode it was sent with and a token naming it).

Processing (spec §3.3): the request at the head of the queue is granted once no granted
entry conflicts with it.  Conflicting holders are sent an invalidation (to READ when a
WRITE holder meets a READ request, else to NULL) and nothing on that key proceeds until
every invalidation was answered.  A grant replaces the requester's old entry and assigns
``write_seq = next_seq()`` for WRITE and WRITE_ONLY.  A NULL request conflicts with the
requester's own entry, so it invalidates the requester itself: that is how a mount frees an
idle lock.

Our view of a mount is never below what it really holds.  Beyond scoutfs, a request
carries the mode the mount holds (`old_mode`): a mount never holds more than the old mode
of the request it sends, so when that is below our entry (a grant whose reply was lost in
a reconnect, or whose requester gave up) the entry is lowered to it, and a pending
invalidation whose target it already meets is taken as answered ("implied answer").  That
is what lets a mount wait for a grant it believes crossed an invalidation (fs/lock.py):
if the grant was really lost, its request unblocks the key.  A late real answer to an
invalidation that was answered that way is recognised by its token and ignored.

Recovery (spec §2.3): after a server change, `begin_recovery(rids)` holds every request
(they queue) until each rid either reported its locks (`recover`, then `recovery_done`) or
was removed (`remove_rid`).  A mount in the middle of an invalidation reports its old mode,
so a request of that mount queued before its report lowers the reported entry the same
way.  Pending invalidations whose send failed (the mount was not
connected) stay pending; `resend_invalidations(rid)` sends them again after it reconnects.

Concurrency (trio; code between two awaits is atomic): every state change is synchronous
(`request` enqueues and processes before its first await; an invalidation response updates
and reprocesses synchronously).  Invalidations are sent from tasks of the nursery given to
`start()`, never awaited by a request or by the server's commit path.  The lock server
takes no other lock and never awaits a client while holding anything.
"""

from __future__ import annotations

import errno
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
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


def below(mode: int, than: int) -> bool:
    """Strictly weaker in the order NULL < READ < WRITE, NULL < WRITE_ONLY."""
    return mode != than and (mode == LOCK_NULL or (mode == LOCK_READ and than == LOCK_WRITE))


def at_or_below(mode: int, target: int) -> bool:
    return mode == target or below(mode, target)


@dataclass
class _Request:
    rid: int
    old_mode: int
    new_mode: int
    write_seq: int
    done: trio.Event = field(default_factory=trio.Event)
    grant: dict | None = None
    error: int = 0


@dataclass(eq=False)
class _Inval:
    """A pending invalidation; identity (`is`) names it."""
    mode: int  # the mode asked for
    old_mode: int  # the mode we believed the mount held when we asked


@dataclass
class ServerLock:
    key: fmt.Key
    granted: dict[int, int] = field(default_factory=dict)  # rid -> mode (never NULL)
    requested: deque[_Request] = field(default_factory=deque)
    invals: dict[int, _Inval] = field(default_factory=dict)  # rid -> pending invalidation

    @property
    def invalidated(self) -> dict[int, int]:
        """rid -> mode asked for, of the pending invalidations (a snapshot)."""
        return {rid: inv.mode for rid, inv in self.invals.items()}

    def idle(self) -> bool:
        return not (self.granted or self.requested or self.invals)


SendInvalidate = Callable[[int, fmt.Key, int, int], Awaitable[None]]


class LockServer:
    """The lock table.  `send_invalidate(rid, key, old_mode, new_mode)` must return once the
    client answered (it raises FsError if it could not be delivered or answered)."""

    def __init__(self, next_seq: Callable[[], int], send_invalidate: SendInvalidate,
                 counters=None) -> None:
        self.next_seq = next_seq
        self.send_invalidate = send_invalidate
        self.counters = counters
        self.locks: dict[fmt.Key, ServerLock] = {}
        self._nursery: trio.Nursery | None = None
        self._recovering: set[int] = set()
        self.max_recovered_write_seq = 0  # greatest write_seq a recovering mount reported
        self._net_ids: dict[int, int] = {}  # rid -> a stable small number for debugfs

    def start(self, nursery: trio.Nursery) -> None:
        """Where invalidation tasks run (the server's nursery)."""
        self._nursery = nursery

    def _inc(self, name: str) -> None:
        if self.counters is not None:
            self.counters.inc(name)

    def _lock(self, key: fmt.Key) -> ServerLock:
        lock = self.locks.get(key)
        if lock is None:
            lock = self.locks[key] = ServerLock(key)
        return lock

    def _forget_if_idle(self, lock: ServerLock) -> None:
        if lock.idle() and self.locks.get(lock.key) is lock:
            del self.locks[lock.key]

    # ------------------------------------------------------------------ requests

    async def request(self, rid: int, key: fmt.Key, old_mode: int, new_mode: int,
                      write_seq: int = 0) -> dict:
        """A client's LOCK request; returns the grant {key, mode, write_seq} once made."""
        if new_mode not in MODES or old_mode not in MODES:
            raise FsError(errno.EINVAL, f"bad lock mode {old_mode}->{new_mode}")
        key = tuple(key)  # type: ignore[assignment]
        lock = self._lock(key)
        self._net_ids.setdefault(rid, len(self._net_ids) + 1)
        self._lower(lock, rid, old_mode)
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

    def _lower(self, lock: ServerLock, rid: int, old_mode: int) -> None:
        """The requester holds at most `old_mode` (see the module docstring)."""
        held = lock.granted.get(rid, LOCK_NULL)
        if not below(old_mode, held):
            return
        self._inc("lock_server_lowered")
        if old_mode == LOCK_NULL:
            del lock.granted[rid]
        else:
            lock.granted[rid] = old_mode
        inv = lock.invals.get(rid)
        if inv is not None and at_or_below(old_mode, inv.mode):
            del lock.invals[rid]
            self._inc("lock_server_implied_answer")
            log.debug("rid %016x request for %s answers its invalidation", rid,
                      fmt.format_key(lock.key))

    def _process(self, lock: ServerLock) -> None:
        if self._recovering:
            return  # nothing is processed until every mount recovered (spec §2.3)
        while lock.requested and not lock.invals:
            req = lock.requested[0]
            conflicts = [(rid, mode) for rid, mode in lock.granted.items()
                         if not compatible(rid, mode, req.rid, req.new_mode)]
            if conflicts:
                for rid, mode in conflicts:
                    inv = lock.invals[rid] = _Inval(invalidation_mode(mode, req.new_mode), mode)
                    self._inc("lock_server_invalidate")
                    self._spawn_invalidate(rid, lock.key, inv)
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
        self._forget_if_idle(lock)

    def _spawn_invalidate(self, rid: int, key: fmt.Key, inv: _Inval) -> None:
        if self._nursery is None:
            raise RuntimeError("LockServer.start() was not called")
        self._nursery.start_soon(self._invalidate_task, rid, key, inv)

    async def _invalidate_task(self, rid: int, key: fmt.Key, inv: _Inval) -> None:
        try:
            await self.send_invalidate(rid, key, inv.old_mode, inv.mode)
        except FsError as e:
            # unreachable or no answer: it stays pending, resent when the mount reconnects
            # (resend_invalidations) or dropped with the rid (remove_rid)
            self._inc("lock_server_invalidate_failed")
            log.info("invalidation of %s for rid %016x failed: %s",
                     fmt.format_key(key), rid, e)
            return
        self.invalidation_done(rid, key, inv.mode, inv)

    def invalidation_done(self, rid: int, key: fmt.Key, mode: int,
                          token: _Inval | None = None) -> None:
        """The client answered an invalidation: it now holds `mode`.  With `token`, only
        the answer to that very invalidation counts (a late answer to one the mount's own
        request already answered is stale)."""
        lock = self.locks.get(tuple(key))  # type: ignore[arg-type]
        inv = lock.invals.get(rid) if lock is not None else None
        if inv is None or (token is not None and inv is not token):
            self._inc("lock_server_stale_answer")
            log.debug("stale invalidation response from %016x for %s", rid,
                      fmt.format_key(tuple(key)))  # type: ignore[arg-type]
            return
        assert lock is not None
        del lock.invals[rid]
        held = lock.granted.get(rid)
        if held is not None:
            if mode == LOCK_NULL:
                del lock.granted[rid]
            elif below(mode, held):
                lock.granted[rid] = mode
        self._process(lock)

    def resend_invalidations(self, rid: int) -> int:
        """The mount reconnected (same server): send every invalidation still pending for
        it again (the earlier send failed, or its answer was lost).  Answering one twice is
        harmless: the second answer is stale.  Returns how many were sent."""
        n = 0
        for lock in list(self.locks.values()):
            inv = lock.invals.get(rid)
            if inv is not None:
                self._inc("lock_server_invalidate_resend")
                self._spawn_invalidate(rid, lock.key, inv)
                n += 1
        return n

    # ------------------------------------------------------------------ recovery

    def begin_recovery(self, rids: Iterable[int]) -> None:
        """A new server: hold every request until these rids recovered or were removed."""
        self._recovering = set(rids)
        if not self._recovering:
            self._process_all()

    def recovering(self) -> set[int]:
        return set(self._recovering)

    def recover(self, rid: int, entries: Iterable[dict]) -> None:
        """Install what a mount reports it holds: {key, mode, write_seq} (NULL ignored)."""
        self._net_ids.setdefault(rid, len(self._net_ids) + 1)
        for e in entries:
            mode = int(e["mode"])
            self.max_recovered_write_seq = max(self.max_recovered_write_seq,
                                               int(e.get("write_seq", 0)))
            if mode == LOCK_NULL:
                continue
            if mode not in MODES:
                log.error("rid %016x recovered bad lock mode %d", rid, mode)
                continue
            lock = self._lock(tuple(e["key"]))  # type: ignore[arg-type]
            for other, om in lock.granted.items():
                if not compatible(other, om, rid, mode):
                    # cannot happen with correct mounts; the next request invalidates both
                    log.error("rid %016x recovered %s mode %d conflicting with rid %016x "
                              "mode %d", rid, fmt.format_key(lock.key), mode, other, om)
            lock.granted[rid] = mode
            self._inc("lock_server_recovered")
            # a request that arrived before this report says what the mount holds at
            # least as recently (it sends the mode it holds, which only a grant of that
            # very request can raise); a mount mid-invalidation reports its old mode
            for req in lock.requested:
                if req.rid == rid:
                    self._lower(lock, rid, req.old_mode)

    def recovery_done(self, rid: int) -> None:
        """The rid reported all its locks."""
        self._end_recovery(rid)

    def _end_recovery(self, rid: int) -> None:
        if rid not in self._recovering:
            return
        self._recovering.discard(rid)
        if not self._recovering:
            log.debug("lock recovery done")
            self._process_all()

    def _process_all(self) -> None:
        for lock in list(self.locks.values()):
            self._process(lock)

    # ------------------------------------------------------------------ rids

    def remove_rid(self, rid: int) -> None:
        """Forget everything of a departed or reclaimed mount (reclaim_rid step 1): its
        grants, its queued requests (they fail with ENOTCONN), its pending invalidations
        (treated as answered) and its pending recovery."""
        for lock in list(self.locks.values()):
            changed = False
            if lock.granted.pop(rid, None) is not None:
                changed = True
            if lock.invals.pop(rid, None) is not None:
                changed = True
            for req in [r for r in lock.requested if r.rid == rid]:
                lock.requested.remove(req)
                req.error = errno.ENOTCONN
                req.done.set()
                changed = True
            if changed:
                self._process(lock)
            self._forget_if_idle(lock)
        self._net_ids.pop(rid, None)
        self._end_recovery(rid)

    def rids(self) -> set[int]:
        out: set[int] = set()
        for lock in self.locks.values():
            out.update(lock.granted)
            out.update(lock.invals)
            out.update(r.rid for r in lock.requested)
        return out

    # ------------------------------------------------------------------ debugfs

    def dump(self) -> list[tuple[fmt.Key, str, int, int]]:
        """(key, state, rid, mode): state granted/invalidated/requested."""
        out = []
        for key in sorted(self.locks):
            lock = self.locks[key]
            out += [(key, "granted", rid, m) for rid, m in lock.granted.items()]
            out += [(key, "invalidated", rid, inv.mode) for rid, inv in lock.invals.items()]
            out += [(key, "requested", r.rid, r.new_mode) for r in lock.requested]
        return out

    def dump_text(self) -> str:
        """debugfs server_locks: `K mode list rid <016x> net_id N` per entry (field 5 is
        the rid)."""
        return "".join(
            f"{fmt.format_key(key)} {mode} {state} rid {rid:016x} "
            f"net_id {self._net_ids.get(rid, 0)}\n"
            for key, state, rid, mode in self.dump())

    def stats_text(self) -> str:
        """debugfs server_lock_stats: entries per state."""
        granted = sum(len(lk.granted) for lk in self.locks.values())
        requested = sum(len(lk.requested) for lk in self.locks.values())
        invalidated = sum(len(lk.invals) for lk in self.locks.values())
        return (f"locks {len(self.locks)}\ngranted {granted}\nrequested {requested}\n"
                f"invalidated {invalidated}\nrecovering {len(self._recovering)}\n")
