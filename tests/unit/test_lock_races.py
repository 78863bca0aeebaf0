"""Lock client and lock server together on a fake network whose delivery order the test picks.

`Cluster` connects LockClients (one per mount rid) to a LockServer through a pool of
in-flight messages: LOCK requests, grants, invalidations and their answers, LOCK_RECOVER
and its answer, plus each mount's "commit" (the I/O an invalidation waits for).  Nothing is
delivered until the test says so, in any order it likes (except that one mount's
invalidations of one lock, and its answers to them, keep their order, as one connection
and the mount's per-lock queue keep it), so a grant can reach its mount after the
invalidation that followed it, an answer can be lost with a connection, and a server can
die with everything in flight.  As in fs/client.py, a mount resends its
unanswered requests after a reconnect or a failover, and runs invalidations one at a time
per lock in arrival order, across connections; as in fs/server.py, a dropped connection
cancels the server's handlers of that connection and a reconnect resends pending
invalidations, and a new server recovers every mount's locks before processing requests.

Every mount also keeps a one-number "item cache" per lock: a reader must see the newest
value anyone wrote (WRITE users increment it in their cache; invalidation commits it to
"disk" and drops the cache unless WRITE->READ).  That checks what the modes are for.

Invariants checked after every step: no two mounts hold conflicting modes of one lock;
users only use modes their lock serves; the server's view of each mount covers what the
mount holds; every read sees the newest write.  At the end everything is released and
delivered: every acquire must have completed (no deadlock).
"""

from __future__ import annotations

import errno
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fs import format as fmt
from fs.counters import Counters
from fs.errors import FsError
from fs.lock import (
    LOCK_NULL,
    LOCK_READ,
    LOCK_WRITE,
    LOCK_WRITE_ONLY,
    LockClient,
    mode_serves,
)
from fs.lock_server import LockServer, compatible

R, W, WO, N = LOCK_READ, LOCK_WRITE, LOCK_WRITE_ONLY, LOCK_NULL
KEYS = [fmt.inode_group_range(i * 1024) for i in range(1, 4)]  # (start, end) of 3 locks


def covers(server_mode: int, mode: int) -> bool:
    """The server's entry for a mount may be above what the mount holds, never below."""
    return server_mode == mode or (server_mode == W and mode == R)


@dataclass(eq=False)
class Box:
    """A reply someone waits for; `lose()` when its connection or server went away."""
    event: trio.Event = field(default_factory=trio.Event)
    value: Any = None
    lost: bool = False

    def set(self, value: Any = None) -> None:
        self.value = value
        self.event.set()

    def lose(self) -> None:
        self.lost = True
        self.event.set()


@dataclass(eq=False)
class Msg:
    kind: str  # req grant inval answer recover recovered commit
    rid: int
    key: fmt.Key | None = None
    old: int = 0
    new: int = 0
    wseq: int = 0
    box: Box | None = None
    value: Any = None
    sgen: int = 0  # server generation it travels in
    cgen: int = 0  # connection generation of its mount

    def __repr__(self) -> str:
        key = self.key[1] if self.key else "-"
        return f"<{self.kind} rid {self.rid} key {key} {self.old}->{self.new}>"


class Node:
    """One mount: a LockClient, its item "cache", its ordered invalidation workers."""

    def __init__(self, cluster: Cluster, rid: int, idle_count: int) -> None:
        self.cluster = cluster
        self.rid = rid
        self.counters = Counters()
        self.lc = LockClient(self.request, self.counters, idle_count=idle_count)
        self.lc.on_invalidate = self.on_invalidate
        self.lc.start(cluster.nursery)
        self.cache: dict[fmt.Key, int] = {}
        self.dirty: set[fmt.Key] = set()
        self.queues: dict[fmt.Key, deque[Msg]] = {}
        self.waits: set[Box] = set()  # requests awaiting a grant

    async def request(self, key, old, new, wseq) -> dict:
        c = self.cluster
        while True:
            box = Box()
            self.waits.add(box)
            c.post(Msg("req", self.rid, key, old, new, wseq, box=box, sgen=c.sgen,
                       cgen=c.cgen[self.rid]))
            try:
                await box.event.wait()
            finally:
                self.waits.discard(box)
            if not box.lost:
                return box.value
            self.counters.inc("resend")  # the client layer resends on the next connection

    async def on_invalidate(self, lock, old: int, new: int) -> None:
        box = Box()  # the commit's I/O: completes when the test delivers it
        self.cluster.post(Msg("commit", self.rid, lock.start, old, new, box=box))
        await box.event.wait()
        if lock.start in self.dirty:
            self.cluster.disk[lock.start] = self.cache[lock.start]
            self.dirty.discard(lock.start)
        if not (old == W and new == R):
            self.cache.pop(lock.start, None)

    def receive_inval(self, msg: Msg) -> None:
        q = self.queues.get(msg.key)
        if q is None:
            q = self.queues[msg.key] = deque()
            self.cluster.nursery.start_soon(self._inval_worker, msg.key, q)
        q.append(msg)

    async def _inval_worker(self, key, q: deque[Msg]) -> None:
        try:
            while q:
                msg = q[0]
                await self.lc.invalidate(key, msg.new, msg.old)
                self.cluster.post(Msg("answer", self.rid, key, box=msg.box, sgen=msg.sgen,
                                      cgen=msg.cgen))
                q.popleft()
        finally:
            if self.queues.get(key) is q:
                del self.queues[key]


class Cluster:
    def __init__(self, nursery: trio.Nursery, nr_nodes: int, idle_count: int = 10000) -> None:
        self.nursery = nursery
        self.pool: list[Msg] = []
        self.sgen = 0
        self.seq = 100
        self.disk = {start: 0 for start, _end in KEYS}
        self.latest = dict(self.disk)
        self.cgen = {rid: 0 for rid in range(1, nr_nodes + 1)}
        self.nodes = {rid: Node(self, rid, idle_count) for rid in self.cgen}
        self.server: LockServer | None = None
        self.server_scope: trio.CancelScope | None = None
        self.server_nursery: trio.Nursery | None = None
        self.srv_waits: dict[int, set[Box]] = {rid: set() for rid in self.cgen}
        self.handler_scopes: dict[int, set[trio.CancelScope]] = {rid: set() for rid in self.cgen}
        self.held: list[tuple[Node, Any, int, trio.Event]] = []
        self.acquiring = 0
        self.holders = 0
        self.auto_release = False
        self.reads = 0

    # ------------------------------------------------------------------ servers

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    async def start_server(self, recover: bool) -> None:
        self.sgen += 1
        server = LockServer(self.next_seq, self._make_send(self.sgen), Counters())
        self.server = server
        self.server_scope = await self.nursery.start(self._serve, server)
        if recover:
            server.begin_recovery(set(self.nodes))
            for rid in self.nodes:
                self.post(Msg("recover", rid, sgen=self.sgen, cgen=self.cgen[rid]))

    async def _serve(self, server: LockServer, *, task_status) -> None:
        with trio.CancelScope() as scope:
            async with trio.open_nursery() as n:
                server.start(n)
                self.server_nursery = n
                task_status.started(scope)
                await trio.sleep_forever()

    def _make_send(self, sgen: int):
        async def send_invalidate(rid, key, old, new) -> None:
            box = Box()
            self.srv_waits[rid].add(box)
            try:
                self.post(Msg("inval", rid, key, old, new, box=box, sgen=sgen,
                              cgen=self.cgen[rid]))
                await box.event.wait()
            finally:
                self.srv_waits[rid].discard(box)
            if box.lost:
                raise FsError(errno.ENOTCONN, "connection lost")
        return send_invalidate

    async def failover(self) -> None:
        """The server dies with everything in flight; a new one recovers the mounts."""
        assert self.server_scope is not None
        self.server_scope.cancel()
        self.pool = [m for m in self.pool if m.kind == "commit"]
        for boxes in self.srv_waits.values():
            for box in list(boxes):
                box.lose()
        for node in self.nodes.values():
            for box in list(node.waits):
                box.lose()
        await self.start_server(recover=True)

    def drop_connection(self, rid: int) -> None:
        """The mount's connection drops and it reconnects to the same server at once."""
        self.pool = [m for m in self.pool if m.rid != rid or m.kind == "commit"]
        for box in list(self.srv_waits[rid]):
            box.lose()
        for scope in list(self.handler_scopes[rid]):
            scope.cancel()
        for box in list(self.nodes[rid].waits):
            box.lose()
        self.cgen[rid] += 1
        assert self.server is not None
        if rid in self.server.recovering():
            self.post(Msg("recover", rid, sgen=self.sgen, cgen=self.cgen[rid]))
        else:
            self.server.resend_invalidations(rid)

    # ------------------------------------------------------------------ messages

    def post(self, msg: Msg) -> None:
        if msg.kind != "commit" and (msg.sgen != self.sgen or msg.cgen != self.cgen[msg.rid]):
            return  # its connection or server is gone: lost
        self.pool.append(msg)

    def find(self, kind: str, rid: int | None = None, key=None) -> Msg:
        found = [m for m in self.pool if m.kind == kind and (rid is None or m.rid == rid)
                 and (key is None or m.key == key)]
        assert len(found) == 1, (kind, rid, key, self.pool)
        return found[0]

    def has(self, kind: str, rid: int | None = None) -> bool:
        return any(m.kind == kind and (rid is None or m.rid == rid) for m in self.pool)

    def deliver(self, msg: Msg) -> None:
        if msg.kind in ("inval", "answer"):
            # one connection delivers in order and the mount handles a lock's invalidations
            # in arrival order: of these, the oldest for the same mount and lock goes first
            msg = next(m for m in self.pool
                       if m.kind == msg.kind and m.rid == msg.rid and m.key == msg.key)
        self.pool.remove(msg)
        node = self.nodes[msg.rid]
        if msg.kind == "req":
            scope = trio.CancelScope()
            self.handler_scopes[msg.rid].add(scope)
            assert self.server_nursery is not None
            self.server_nursery.start_soon(self._handle_req, msg, scope, self.server)
        elif msg.kind == "grant":
            msg.box.set(msg.value)
        elif msg.kind == "inval":
            node.lc.note_invalidation(msg.key)  # as fs/client.py does on arrival
            node.receive_inval(msg)
        elif msg.kind in ("answer", "commit"):
            msg.box.set()
        elif msg.kind == "recover":
            self.post(Msg("recovered", msg.rid, value=node.lc.recover_entries(),
                          sgen=msg.sgen, cgen=msg.cgen))
        elif msg.kind == "recovered":
            assert self.server is not None
            self.server.recover(msg.rid, msg.value)
            self.server.recovery_done(msg.rid)
        else:
            raise AssertionError(msg)

    async def _handle_req(self, msg: Msg, scope: trio.CancelScope, server: LockServer) -> None:
        try:
            with scope:
                grant = await server.request(msg.rid, msg.key, msg.old, msg.new, msg.wseq)
                self.post(Msg("grant", msg.rid, msg.key, box=msg.box, value=grant,
                              sgen=msg.sgen, cgen=msg.cgen))
        finally:
            self.handler_scopes[msg.rid].discard(scope)

    async def deliver_one(self, kind: str, rid: int | None = None, key=None) -> Msg:
        msg = self.find(kind, rid, key)
        self.deliver(msg)
        await self.settle()
        return msg

    # ------------------------------------------------------------------ users

    async def requested(self, rid: int, key_nr: int, mode: int) -> trio.Event:
        """A user on `rid` asks for the lock and its request reaches the server; the user
        holds the lock, once granted, until the returned event is set."""
        release = self.acquire(rid, key_nr, mode)
        await self.settle()
        await self.deliver_one("req", rid)
        return release

    async def granted(self, rid: int, key_nr: int, mode: int) -> trio.Event:
        """As `requested`, and the server's grant is delivered too."""
        release = await self.requested(rid, key_nr, mode)
        await self.deliver_one("grant", rid)
        return release

    async def granted_idle(self, rid: int, key_nr: int, mode: int) -> None:
        """As `granted`, then the user releases: `rid` holds the mode, unused."""
        (await self.granted(rid, key_nr, mode)).set()

    def acquire(self, rid: int, key_nr: int, mode: int) -> trio.Event:
        """Start a user that takes the lock and holds it until the returned event is set."""
        release = trio.Event()
        self.acquiring += 1
        self.holders += 1
        self.nursery.start_soon(self._holder, self.nodes[rid], KEYS[key_nr], mode, release)
        return release

    async def _holder(self, node: Node, key, mode: int, release: trio.Event) -> None:
        try:
            lock = await node.lc.acquire(key[0], key[1], mode)
            self.acquiring -= 1
            self.use(node, key[0], mode)
            entry = (node, lock, mode, release)
            self.held.append(entry)
            if not self.auto_release:
                await release.wait()
            self.held.remove(entry)
            node.lc.release(lock, mode)
        finally:
            self.holders -= 1

    def use(self, node: Node, start, mode: int) -> None:
        """What a user does with the lock: READ/WRITE read the newest value, WRITE writes."""
        if mode == WO:
            return
        value = node.cache.get(start, self.disk[start])
        assert value == self.latest[start], (node.rid, start, value, self.latest[start])
        node.cache[start] = value
        self.reads += 1
        if mode == W:
            node.cache[start] = value + 1
            node.dirty.add(start)
            self.latest[start] = value + 1

    # ------------------------------------------------------------------ checks

    async def settle(self) -> None:
        await trio.testing.wait_all_tasks_blocked()
        self.check()

    def check(self) -> None:
        for start, _end in KEYS:
            held = [(n.rid, n.lc.locks[start].mode) for n in self.nodes.values()
                    if start in n.lc.locks and n.lc.locks[start].mode != N]
            for i, (r1, m1) in enumerate(held):
                for r2, m2 in held[i + 1:]:
                    assert compatible(r1, m1, r2, m2), (fmt.format_key(start), held)
        for n in self.nodes.values():
            for lock in n.lc.locks.values():
                for m, nr in lock.users.items():
                    assert nr >= 0 and (nr == 0 or mode_serves(lock.mode, m)), (n.rid, lock)
                assert all(v >= 0 for v in lock.waiters.values()), lock
        server = self.server
        if server is None or server.recovering():
            return
        for n in self.nodes.values():
            for lock in n.lc.locks.values():
                if lock.mode == N:
                    continue
                slock = server.locks.get(lock.start)
                have = slock.granted.get(n.rid, N) if slock is not None else N
                assert covers(have, lock.mode), (n.rid, lock, have)
        for slock in server.locks.values():
            items = list(slock.granted.items())
            for i, (r1, m1) in enumerate(items):
                for r2, m2 in items[i + 1:]:
                    assert compatible(r1, m1, r2, m2), (slock.key, items)

    def dump(self) -> str:
        out = [f"pool {self.pool}"]
        for n in self.nodes.values():
            out.append(f"rid {n.rid}:\n{n.lc.dump_text()}")
        if self.server is not None:
            out.append(f"server (recovering {self.server.recovering()}):\n"
                       f"{self.server.dump_text()}")
        return "\n".join(out)

    async def drain(self, limit: int = 2000) -> None:
        """Release everything, deliver everything: every user must get its lock."""
        self.auto_release = True
        for _node, _lock, _mode, release in list(self.held):
            release.set()
        for _ in range(limit):
            await self.settle()
            if self.pool:
                self.deliver(self.pool[0])
            elif self.holders == 0:
                self.auto_release = False
                return
            else:
                raise AssertionError(f"deadlock: {self.acquiring} acquires stuck\n"
                                     + self.dump())
        raise AssertionError("did not drain\n" + self.dump())


def run(test, nr_nodes: int = 2, idle_count: int = 10000) -> None:
    async def main():
        async with trio.open_nursery() as nursery:
            c = Cluster(nursery, nr_nodes, idle_count)
            await c.start_server(recover=False)
            await test(c)
            nursery.cancel_scope.cancel()

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


K0, K1, K2 = (k[0] for k in KEYS)


# --------------------------------------------------------------------------- scenarios


def test_grant_crossing_an_invalidation():
    """A's READ is granted, then invalidated for B's WRITE; the invalidation reaches A
    first.  It waits for the grant, A's user gets its read, then the invalidation runs."""

    async def t(c: Cluster):
        a, b = c.nodes[1], c.nodes[2]
        rel_a = await c.requested(1, 0, R)
        grant = c.find("grant", 1)  # granted, but the reply is still on its way
        await c.requested(2, 0, W)
        await c.deliver_one("inval", 1)  # READ -> NULL, before the grant
        assert a.counters.get("lock_invalidate_crossing") == 1
        assert not c.has("answer") and not c.has("commit")
        assert a.lc.locks[K0].mode == N and a.lc.locks[K0].invalidating
        c.deliver(grant)
        await c.settle()
        assert a.lc.locks[K0].mode == R and a.lc.locks[K0].users[R] == 1
        assert c.reads == 1  # A's user was served by the crossing grant
        assert not c.has("commit")  # the invalidation waits for that user
        rel_a.set()
        await c.settle()
        await c.deliver_one("commit", 1)
        await c.deliver_one("answer", 1)
        assert K0 not in a.lc.locks  # NULL and unused: forgotten
        await c.deliver_one("grant", 2)
        assert b.lc.locks[K0].mode == W and c.latest[K0] == 1
        await c.drain()

    run(t)


def test_invalidation_of_the_held_mode_while_a_request_waits():
    """A holds READ and asks for WRITE behind B's WRITE: the invalidation of A's READ is
    served at once (the server waits for it before it can grant A anything)."""

    async def t(c: Cluster):
        a = c.nodes[1]
        await c.granted_idle(1, 0, R)
        await c.requested(2, 0, W)
        c.acquire(1, 0, W)  # upgrade: READ -> WRITE, queued behind B
        await c.settle()
        await c.deliver_one("req", 1)
        assert a.lc.locks[K0].requesting
        await c.deliver_one("inval", 1)
        assert a.counters.get("lock_invalidate_crossing") == 0
        assert a.counters.get("lock_invalidate_early") == 0
        await c.deliver_one("commit", 1)
        await c.deliver_one("answer", 1)
        await c.deliver_one("grant", 2)
        await c.drain()
        assert c.latest[K0] == 2

    run(t)


def test_upgrade_grant_invalidated_before_it_arrives():
    """A upgrades READ->WRITE; the WRITE is granted and at once invalidated to NULL for B;
    A answers for its READ at once and applies the late WRITE grant as NULL, then asks
    again."""

    async def t(c: Cluster):
        a = c.nodes[1]
        await c.granted_idle(1, 0, R)
        await c.requested(1, 0, W)
        grant = c.find("grant", 1)
        await c.requested(2, 0, WO)
        await c.deliver_one("inval", 1)  # old WRITE -> NULL, before the WRITE grant
        assert a.counters.get("lock_invalidate_early") == 1
        await c.deliver_one("commit", 1)
        assert c.has("answer", 1)
        c.deliver(grant)
        await c.settle()
        assert a.counters.get("lock_grant_pre_invalidated") == 1
        assert c.has("req", 1)  # asks again, from NULL
        await c.drain()
        assert c.latest[K0] == 1

    run(t)


def test_upgrade_grant_lost_in_a_reconnect():
    """A's READ -> WRITE grant is lost with its connection and the server's invalidation
    of that WRITE (to NULL, for B) is resent.  A must not wait for the lost grant (its
    resent request cannot answer for it: A still holds READ): it answers at once."""

    async def t(c: Cluster):
        a = c.nodes[1]
        await c.granted_idle(1, 0, R)
        await c.requested(1, 0, W)
        assert c.has("grant", 1)
        await c.requested(2, 0, WO)
        c.drop_connection(1)  # loses the grant and the invalidation; both are resent
        await c.settle()
        assert c.has("inval", 1) and c.has("req", 1) and not c.has("grant")
        await c.deliver_one("inval", 1)
        await c.deliver_one("req", 1)
        assert a.counters.get("lock_invalidate_early") == 1
        await c.drain()
        assert c.latest[K0] == 1  # A's WRITE user got its lock in the end

    run(t)


def test_recovery_while_an_invalidation_is_pending():
    """A is committing for an invalidation when the server dies: it reports its old WRITE,
    the new server invalidates it again (a stale duplicate by then), B reads A's write."""

    async def t(c: Cluster):
        a, b = c.nodes[1], c.nodes[2]
        await c.granted_idle(1, 0, W)
        await c.requested(2, 0, R)
        await c.deliver_one("inval", 1)  # WRITE -> READ: the commit is in flight
        assert c.has("commit", 1)
        await c.failover()
        await c.settle()
        await c.deliver_one("recover", 1)
        entries = c.find("recovered", 1).value
        assert entries == [{"key": K0, "mode": W, "write_seq": a.lc.locks[K0].write_seq}]
        await c.deliver_one("req", 2)  # B's resent request waits for recovery
        assert not c.has("grant") and not c.has("inval")
        await c.deliver_one("recovered", 1)
        await c.deliver_one("recover", 2)
        await c.deliver_one("recovered", 2)
        assert c.server.recovering() == set()
        await c.deliver_one("inval", 1)  # queued behind the first on A
        await c.deliver_one("commit", 1)
        assert a.lc.locks[K0].mode == R
        assert a.counters.get("lock_invalidate_stale") == 1
        await c.deliver_one("answer", 1)  # only the new server's: the old one is lost
        assert not c.has("answer")
        await c.deliver_one("grant", 2)
        assert b.lc.locks[K0].mode == R and c.reads == 2
        await c.drain()

    run(t)


def test_request_reaching_a_new_server_before_its_recovery_report():
    """A reports its old WRITE (it is committing for an invalidation) after its next
    request, sent once the commit finished, already reached the new server: the request
    says A holds only READ, and that must win over the older report."""

    async def t(c: Cluster):
        a = c.nodes[1]
        await c.granted_idle(1, 0, W)
        await c.requested(2, 0, R)
        await c.deliver_one("inval", 1)  # WRITE -> READ, commit in flight
        c.acquire(1, 0, W)  # queued behind the invalidation
        await c.settle()
        await c.failover()
        await c.settle()
        await c.deliver_one("recover", 1)  # snapshot: WRITE (old mode)
        await c.deliver_one("commit", 1)  # now READ; asks READ -> WRITE
        req = c.find("req", 1)
        assert (req.old, req.new) == (R, W)
        await c.deliver_one("req", 1)  # reaches the server before the report
        await c.deliver_one("recovered", 1)
        assert c.server.locks[K0].granted == {1: R}  # lowered by the queued request
        await c.deliver_one("req", 2)
        await c.deliver_one("recover", 2)
        await c.deliver_one("recovered", 2)
        assert a.counters.get("lock_invalidate_crossing") == 0
        await c.drain()

    run(t)


def test_crossing_wait_ends_when_the_server_moves_on():
    """After a failover A's recovered WRITE is invalidated while A asks READ -> WRITE: it
    looks like a crossing grant, so A waits.  Its request answers that invalidation for
    the server, which goes on and invalidates A's READ: that newer invalidation arriving
    ends the wait (it is queued behind the waiting one)."""

    async def t(c: Cluster):
        a = c.nodes[1]
        rel = await c.granted(1, 0, W)
        await c.requested(3, 0, R)
        await c.deliver_one("inval", 1)  # WRITE -> READ waits for A's WRITE user
        await c.requested(2, 0, W)
        await c.failover()
        await c.settle()
        await c.deliver_one("req", 3)
        await c.deliver_one("req", 2)
        for rid in (1, 2, 3):
            await c.deliver_one("recover", rid)
        await c.deliver_one("recovered", 1)  # A: WRITE (still invalidating)
        await c.deliver_one("recovered", 2)
        c.acquire(1, 0, W)  # waits behind the invalidation
        rel.set()
        await c.settle()
        await c.deliver_one("commit", 1)  # A: READ, asks READ -> WRITE
        await c.deliver_one("recovered", 3)  # server: invalidates A's WRITE -> READ
        await c.deliver_one("req", 1)  # implied answer: R granted, A and C invalidated
        assert c.server.counters.get("lock_server_implied_answer") == 1
        assert a.lc.locks[K0].mode == R and a.lc.locks[K0].requesting
        first, second = [m for m in c.pool if m.kind == "inval" and m.rid == 1]
        assert (first.old, first.new, second.old, second.new) == (W, R, R, N)
        c.deliver(first)
        await c.settle()
        assert a.counters.get("lock_invalidate_crossing") == 1
        assert not c.has("answer", 1)  # waiting for a grant that needs the second answer
        c.deliver(second)
        await c.settle()
        assert a.counters.get("lock_invalidate_superseded") == 1
        await c.drain()

    run(t, nr_nodes=3)


def test_duplicate_invalidation_after_reconnect():
    """A answered, the answer was lost with its connection: the server resends and A,
    already NULL (the lock forgotten), answers the duplicate at once."""

    async def t(c: Cluster):
        a = c.nodes[1]
        await c.granted_idle(1, 0, R)
        await c.requested(2, 0, W)
        await c.deliver_one("inval", 1)
        await c.deliver_one("commit", 1)
        assert c.has("answer", 1)
        c.drop_connection(1)
        await c.settle()
        assert not c.has("answer") and c.has("inval", 1)  # resent
        await c.deliver_one("inval", 1)
        assert a.counters.get("lock_invalidate_stale") == 1 and not c.has("commit")
        await c.deliver_one("answer", 1)
        await c.deliver_one("grant", 2)
        await c.drain()

    run(t)


def test_duplicate_invalidation_crossing_a_new_request():
    """As above, but A asks for READ again before the duplicate arrives.  A takes the
    duplicate for a crossing grant and waits; its request tells the server it holds
    nothing (implied answer), so B is granted and A later too: no deadlock."""

    async def t(c: Cluster):
        a = c.nodes[1]
        await c.granted_idle(1, 0, R)
        rel_b = await c.requested(2, 0, W)
        await c.deliver_one("inval", 1)
        await c.deliver_one("commit", 1)
        c.acquire(1, 0, R)
        await c.settle()
        c.drop_connection(1)  # loses A's answer and A's new request
        await c.settle()
        await c.deliver_one("inval", 1)  # the duplicate, while A requests READ
        assert a.counters.get("lock_invalidate_crossing") == 1
        await c.deliver_one("req", 1)  # the resent request
        assert c.server.counters.get("lock_server_implied_answer") == 1
        await c.deliver_one("grant", 2)
        rel_b.set()
        await c.drain()
        assert c.server.counters.get("lock_server_stale_answer") >= 1

    run(t)


def test_late_answer_to_an_implied_invalidation_is_stale():
    """A answers an invalidation, then asks for READ again; its request reaches the server
    first and answers for it.  A is granted READ and invalidated again before the first
    answer arrives: that late answer must not count for the new invalidation."""

    async def t(c: Cluster):
        a, b = c.nodes[1], c.nodes[2]
        await c.granted_idle(1, 0, R)
        rel_b = await c.requested(2, 0, W)
        await c.deliver_one("inval", 1)
        await c.deliver_one("commit", 1)
        late = c.find("answer", 1)
        rel_a = c.acquire(1, 0, R)
        await c.settle()
        await c.deliver_one("req", 1)  # implies the answer: B is granted WRITE
        assert c.server.counters.get("lock_server_implied_answer") == 1
        await c.deliver_one("grant", 2)
        assert b.lc.locks[K0].mode == W
        rel_b.set()
        await c.settle()
        await c.deliver_one("inval", 2)  # WRITE -> READ for A
        await c.deliver_one("commit", 2)
        await c.deliver_one("answer", 2)
        await c.deliver_one("grant", 1)
        assert a.lc.locks[K0].mode == R and a.lc.locks[K0].users[R] == 1
        rel_b = c.acquire(2, 0, W)  # B upgrades: A's READ is invalidated again
        await c.settle()
        await c.deliver_one("req", 2)
        assert c.has("inval", 1)
        c.deliver(late)
        await c.settle()  # the invariants: the server must still count A's READ
        assert c.server.counters.get("lock_server_stale_answer") == 1
        assert c.server.locks[K0].granted[1] == R
        rel_a.set()
        await c.drain()
        assert b.lc.locks[K0].mode == W

    run(t)


def test_idle_locks_are_freed_oldest_first_and_users_are_never_broken():
    async def t(c: Cluster):
        a = c.nodes[1]
        a.lc.idle_count = 2
        for nr in (0, 1):
            rel = c.acquire(1, nr, R)
            rel.set()
            await c.drain()
        assert [lk.start for lk in a.lc.idle_locks()] == [K0, K1]
        assert a.lc.nr_held == 2
        # the third acquire frees the oldest idle lock (K0) in the background
        rel = c.acquire(1, 2, R)
        await c.settle()
        await c.deliver_one("req", 1, K2)
        await c.deliver_one("grant", 1)
        assert a.counters.get("lock_free_idle") == 1
        assert c.find("req", 1, K0).new == N
        # a user of K0 arrives while its NULL request is in flight: served at once
        rel0 = c.acquire(1, 0, R)
        await c.settle()
        assert a.lc.locks[K0].users[R] == 1 and c.reads == 4, c.dump()
        await c.deliver_one("req", 1, K0)
        await c.deliver_one("inval", 1, K0)  # our own invalidation waits for that user
        assert not c.has("commit")
        rel0.set()
        rel.set()
        await c.drain()
        assert K0 not in a.lc.locks or a.lc.locks[K0].mode == N
        assert K0 not in c.server.locks or 1 not in c.server.locks[K0].granted
        assert a.lc.nr_held == len([lk for lk in a.lc.locks.values() if lk.mode != N])
        # purge frees everything idle
        c.nursery.start_soon(a.lc.purge_idle)
        await c.drain()
        assert a.lc.locks == {} and a.lc.nr_held == 0
        assert c.server.locks == {}

    run(t)


# --------------------------------------------------------------------------- random


ACTIONS = (["deliver"] * 8 + ["commit"] * 2 + ["acquire"] * 4 + ["release"] * 2
           + ["drop", "failover", "purge", "idle"])


async def random_schedule(c: Cluster, data, nr_nodes: int, nr_keys: int) -> None:
    """Random users, deliveries (commits are slow: delivered only by their own action, so
    invalidations often stay in progress), connection drops, failovers and idle frees."""
    failovers = drops = 0
    for _ in range(data.draw(st.integers(10, 80), label="steps")):
        action = data.draw(st.sampled_from(ACTIONS))
        msgs = [m for m in c.pool if (m.kind == "commit") == (action == "commit")]
        if action in ("deliver", "commit") and msgs:
            c.deliver(msgs[data.draw(st.integers(0, len(msgs) - 1))])
        elif action == "acquire":
            c.acquire(data.draw(st.integers(1, nr_nodes)),
                      data.draw(st.integers(0, nr_keys - 1)),
                      data.draw(st.sampled_from((R, R, W, W, WO))))
        elif action == "release" and c.held:
            c.held[data.draw(st.integers(0, len(c.held) - 1))][3].set()
        elif action == "drop" and drops < 3:
            drops += 1
            c.drop_connection(data.draw(st.integers(1, nr_nodes)))
        elif action == "failover" and failovers < 2:
            failovers += 1
            await c.failover()
        elif action == "purge":
            c.nursery.start_soon(c.nodes[data.draw(st.integers(1, nr_nodes))].lc.purge_idle)
        elif action == "idle":
            node = c.nodes[data.draw(st.integers(1, nr_nodes))]
            node.lc.idle_count = data.draw(st.integers(0, 2))
        await c.settle()
    await c.drain()


@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data(), nr_nodes=st.integers(2, 3), nr_keys=st.integers(1, 2))
def test_random_schedules_keep_modes_exclusive(data, nr_nodes, nr_keys):
    """N mounts take READ/WRITE/WRITE_ONLY on one or two locks while the test delivers
    messages in random order, drops connections, fails the server over and frees idle
    locks: modes stay exclusive, reads see the newest write, nothing deadlocks."""

    async def t(c: Cluster):
        await random_schedule(c, data, nr_nodes, nr_keys)

    run(t, nr_nodes)


def test_grant_during_an_earlier_servers_invalidation_is_not_used():
    """Found by the random schedules: rid 2 holds READ, in use; an invalidation to NULL
    (rid 1 wants WRITE) drains it; the server fails over.  The new server recovers rid 2's
    READ (the old mode, as the invalidation has not finished) and grants rid 2's upgrade to
    WRITE.  That grant arrived while the old invalidation was committing, and the WRITE user
    was served at once; the invalidation then set NULL under it.  Now the grant is kept as
    what we hold until the invalidation is done, and the user asks again."""
    async def t(c: Cluster):
        rel_r = await c.granted(2, 0, R)
        rel_w2 = c.acquire(2, 0, W)  # an upgrade, its request in the pool
        c.acquire(1, 0, W)
        await c.settle()
        await c.deliver_one("req", 1)
        await c.deliver_one("inval", 2)  # drains rid 2: its READ user holds on
        await c.failover()
        for kind in ("recover", "recover", "recovered", "recovered"):
            c.deliver(next(m for m in c.pool if m.kind == kind))
            await c.settle()
        await c.deliver_one("req", 2)  # the new server grants rid 2's upgrade to WRITE
        rel_r.set()  # the old invalidation goes on: its commit is in the pool
        await c.settle()
        assert c.has("commit", 2)
        await c.deliver_one("grant", 2)  # arrives while the invalidation commits
        assert not any(n.rid == 2 and m == W for n, _l, m, _r in c.held), c.dump()
        await c.deliver_one("commit", 2)
        assert c.nodes[2].counters.get("lock_grant_during_invalidation") == 1
        rel_w2.set()
        await c.drain()

    run(t)
