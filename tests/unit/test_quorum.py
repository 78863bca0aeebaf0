"""Quorum elections (fs/quorum.py) on in-memory meta devices and the in-memory UDP network.

Every test runs on trio's MockClock (autojump): timeouts are virtual and runs are
deterministic for the seeds given.  The election-safety oracle sits under the members at the
device level: every quorum block a member writes is decoded, and an ELECT recorded for a term
that already had one fails the test ("at most one leader per term").
"""

from __future__ import annotations

import errno
import random
import socket

import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fs import format as fmt
from fs import quorum as q
from fs.block import read_quorum_block, write_quorum_block
from fs.counters import Counters
from fs.errors import FsError
from fs.format import (
    QUORUM_BLKNO,
    QUORUM_EVENT_BEGIN,
    QUORUM_EVENT_ELECT,
    QUORUM_EVENT_END,
    QUORUM_EVENT_FENCE,
    QUORUM_EVENT_STOP,
    QUORUM_EVENT_TERM,
    SMALL_BLOCK_SIZE,
    QuorumBlock,
    QuorumEvent,
)
from fs.mkfs import make_volume
from fs.testing.memdev import MemDevice
from fs.testing.memudp import MemUdpNet

META_SIZE = 4 * 1024 * 1024
DATA_SIZE = 1024 * 1024
HB_MS = 2000  # the smallest heartbeat timeout the mount option allows
HB = HB_MS / 1000
ELECTION_MAX = q.ELECTION_TIMEOUT_S + q.ELECTION_RANDOM_S


def volume(nr_slots: int):
    meta, data = MemDevice(META_SIZE, "meta"), MemDevice(DATA_SIZE, "data")
    sb = make_volume(meta, data, {i: ("127.0.0.1", 7000 + i) for i in range(nr_slots)})
    return meta, sb


def run(fn, *args):
    trio.run(fn, *args, clock=trio.testing.MockClock(autojump_threshold=0))


class Oracle:
    """Watches every quorum block write of every member."""

    def __init__(self) -> None:
        self.elected: dict[int, int] = {}  # term -> slot that recorded ELECT
        self.events: list[tuple[int, int, int]] = []  # (slot, event, term) in write order

    def saw_write(self, slot: int, data: bytes) -> None:
        qb = fmt.unpack_quorum(memoryview(data)[fmt.HDR_SIZE:])
        for i, ev in enumerate(qb.events):
            if ev.write_nr == qb.write_nr:  # recorded by this write
                self.events.append((slot, i, ev.term))
                if i == QUORUM_EVENT_ELECT:
                    assert ev.term not in self.elected, \
                        f"slot {slot} elected in term {ev.term}, already won by " \
                        f"slot {self.elected[ev.term]}"
                    self.elected[ev.term] = slot


class WatchedDev:
    """A member's handle on the shared meta device that reports quorum block writes."""

    def __init__(self, dev: MemDevice, oracle: Oracle):
        self.dev = dev
        self.oracle = oracle
        self.path, self.size = dev.path, dev.size
        self.writes = 0

    def read(self, offset: int, length: int) -> bytes:
        return self.dev.read(offset, length)

    def write(self, offset: int, data) -> None:
        blkno = offset // SMALL_BLOCK_SIZE
        if QUORUM_BLKNO <= blkno < QUORUM_BLKNO + fmt.QUORUM_MAX_SLOTS:
            self.oracle.saw_write(blkno - QUORUM_BLKNO, bytes(data))
        self.writes += 1
        self.dev.write(offset, data)

    def flush(self) -> None:
        self.dev.flush()

    def close(self) -> None:
        self.dev.close()


class Node:
    """One quorum member and a fake server of its own."""

    def __init__(self, cluster: Cluster, slot: int):
        self.cluster = cluster
        self.slot = slot
        self.member: q.QuorumMember | None = None
        self.scope: trio.CancelScope | None = None
        self.alive = False
        self.server_up = False
        self.starts: list[tuple[int, list[q.FenceTarget]]] = []
        self.stops = 0
        self.fail_starts = 0  # the next this many starts raise
        self.hang_starts = False  # starts block until cancelled (a fence that never ends)
        self.stop_delay = 0.0  # stopping the server takes this long
        self.counters = Counters()
        self.incarnation = 0

    async def start_server(self, term: int, targets: list[q.FenceTarget]) -> None:
        self.starts.append((term, list(targets)))
        await trio.sleep(0.05)  # fencing and setup take a while
        if self.hang_starts:
            await trio.sleep_forever()
        if self.fail_starts:
            self.fail_starts -= 1
            raise RuntimeError("injected start failure")
        self.server_up = True

    async def stop_server(self) -> None:
        self.stops += 1
        await trio.sleep(self.stop_delay)
        self.server_up = False

    @property
    def m(self) -> q.QuorumMember:
        assert self.member is not None
        return self.member


class Cluster:
    def __init__(self, nursery: trio.Nursery, nr_slots: int, *, hb_ms: int = HB_MS,
                 seed: int = 0):
        self.nursery = nursery
        self.meta, self.sb = volume(nr_slots)
        self.net = MemUdpNet(random.Random(seed))
        self.oracle = Oracle()
        self.hb_ms = hb_ms
        self.seed = seed
        self.nodes = [Node(self, i) for i in range(nr_slots)]
        self.rids = random.Random(seed + 1000)

    async def start(self, slot: int) -> Node:
        node = self.nodes[slot]
        assert not node.alive
        node.incarnation += 1
        node.server_up = False
        node.member = q.QuorumMember(
            meta_dev=WatchedDev(self.meta.reopen(), self.oracle), fsid=self.sb.fsid,
            slots=self.sb.quorum_slots, slot=slot, rid=self.rids.getrandbits(64) | 1,
            heartbeat_timeout_ms=self.hb_ms, transport=self.net.transport(slot),
            start_server=node.start_server, stop_server=node.stop_server,
            counters=node.counters,
            rng=random.Random(self.seed * 1000 + slot * 10 + node.incarnation))
        node.scope = trio.CancelScope()
        await self.nursery.start(self._run, node, node.member, node.scope)
        node.alive = True
        return node

    async def _run(self, node: Node, member: q.QuorumMember, scope: trio.CancelScope, *,
                   task_status=trio.TASK_STATUS_IGNORED) -> None:
        with scope:
            await member.run(task_status=task_status)

    async def start_all(self) -> None:
        for n in self.nodes:
            await self.start(n.slot)

    def kill(self, slot: int) -> None:
        """A crash: the member stops without writing anything more (no STOP, no END)."""
        node = self.nodes[slot]
        assert node.alive and node.scope is not None
        node.scope.cancel()
        node.alive = False
        node.server_up = False

    def live(self) -> list[Node]:
        return [n for n in self.nodes if n.alive]

    def leaders(self) -> list[Node]:
        """Live members that hold the role (elected, server starting or up)."""
        return [n for n in self.live() if n.m.role == q.ROLE_LEADER]

    def serving(self) -> list[Node]:
        return [n for n in self.live() if n.m.is_leader]

    def check(self) -> None:
        """Invariants that hold at every instant."""
        terms = [n.m.term for n in self.leaders()]
        assert len(terms) == len(set(terms)), "two live leaders in one term"
        for n in self.live():
            if n.m.is_leader:
                assert n.server_up

    async def wait_until(self, pred, timeout: float, step: float = 0.01) -> float:
        """Wait (virtual time) until pred() holds, checking the invariants meanwhile;
        returns the time waited.  Fails the test after timeout."""
        t0 = trio.current_time()
        with trio.fail_after(timeout):
            while True:
                self.check()
                if pred():
                    return trio.current_time() - t0
                await trio.sleep(step)

    async def wait_one_leader(self, timeout: float) -> Node:
        await self.wait_until(lambda: len(self.serving()) == 1
                              and len(self.leaders()) == 1, timeout)
        return self.serving()[0]

    async def run_for(self, seconds: float) -> None:
        """Let time pass, checking the invariants every 10 ms."""
        end = trio.current_time() + seconds
        while trio.current_time() < end:
            self.check()
            await trio.sleep(0.01)

    def block(self, slot: int) -> QuorumBlock:
        return read_quorum_block(self.meta, slot, self.sb.fsid)

    def record(self, slot: int, term: int, *events: int) -> None:
        """Write events of `term` into a slot's block, as a member we do not run would."""
        qb = self.block(slot)
        for event in events:
            qb.write_nr += 1
            qb.events[event] = QuorumEvent(qb.write_nr, 77, term, (0, 0))
        write_quorum_block(self.meta, slot, qb, self.sb.fsid)

    def find_server(self) -> q.ServerAddr | None:
        return q.find_server(self.meta, self.sb.fsid, self.sb.quorum_slots)

    def msg(self, term: int, type_: int, src: int, fsid: int | None = None) -> bytes:
        return q.pack_msg(self.sb.fsid if fsid is None else fsid, term, type_, src)


def cluster_test(nr_slots: int, *, hb_ms: int = HB_MS, seed: int = 0):
    """Decorator: run `async def body(c: Cluster)` in a nursery on the MockClock."""
    def deco(body):
        async def main():
            async with trio.open_nursery() as nursery:
                c = Cluster(nursery, nr_slots, hb_ms=hb_ms, seed=seed)
                await body(c)
                nursery.cancel_scope.cancel()
        run(main)
    return deco


def ev(block: QuorumBlock, i: int) -> QuorumEvent:
    return block.events[i]


# --------------------------------------------------------------------------- pure functions


def test_votes_needed():
    assert [q.votes_needed(n) for n in range(1, 16)] == \
        [1, 1, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8]


@given(st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1), st.sampled_from(list(q.MSG_NAMES)),
       st.integers(0, 14))
def test_message_round_trip(fsid, term, type_, src):
    data = q.pack_msg(fsid, term, type_, src)
    assert len(data) == q.MSG_SIZE
    assert q.unpack_msg(data) == q.QuorumMsg(fsid, term, type_, src)


@given(st.binary(min_size=q.MSG_SIZE, max_size=q.MSG_SIZE), st.integers(0, q.MSG_SIZE - 1),
       st.integers(1, 255))
def test_message_corruption_is_rejected(base, pos, flip):
    good = q.pack_msg(1, 2, q.MSG_HEARTBEAT, 3)
    bad = bytearray(good)
    bad[pos] ^= flip
    assert q.unpack_msg(bytes(bad)) is None  # any single-byte change breaks the crc32c
    assert q.unpack_msg(good[:-1]) is None and q.unpack_msg(good + b"\0") is None
    # random bytes are (almost surely) no message either
    if q.unpack_msg(base) is not None:
        assert q.pack_msg(*q.MSG_BODY.unpack(base[: q.MSG_BODY.size])) == base


def test_unknown_message_type_is_rejected():
    body = q.MSG_BODY.pack(1, 2, 9, 0)
    assert q.unpack_msg(body + q.MSG_CRC.pack(fmt.crc32c(body))) is None


def qblock(elect=(0, 0), fence=(0, 0), stop=(0, 0), term=(0, 0)) -> QuorumBlock:
    """A quorum block from (term, rid) pairs of its events."""
    qb = QuorumBlock(write_nr=1)
    for i, (t, rid) in ((QUORUM_EVENT_ELECT, elect), (QUORUM_EVENT_FENCE, fence),
                        (QUORUM_EVENT_STOP, stop), (QUORUM_EVENT_TERM, term)):
        qb.events[i] = QuorumEvent(1, rid, t, (0, 0))
    return qb


def rids(targets):
    return sorted(t.rid for t in targets)


def test_fence_targets_rules():
    # an ELECT without a later STOP is a leader to fence; a stopped one is not
    blocks = {0: qblock(elect=(3, 0xA), fence=(3, 0xA)), 1: qblock(elect=(2, 0xB), stop=(2, 0xB)),
              2: qblock()}
    assert [(t.slot, t.rid, t.term, t.reason) for t in q.fence_targets(blocks, 2, 4)] == \
        [(0, 0xA, 3, "quorum_block_leader")]
    # our own slot's previous incarnation, crashed while leading, is fenced too
    blocks = {0: qblock(elect=(5, 0xC)), 1: qblock()}
    assert rids(q.fence_targets(blocks, 0, 6)) == [0xC]
    # events at or after the new term are not earlier leaders (our own ELECT)
    assert q.fence_targets(blocks, 0, 5) == []
    # a FENCE between STOP and ELECT: a leader whose ELECT a later election overwrote
    blocks = {0: qblock(elect=(7, 0xE), fence=(5, 0xD), stop=(4, 0xD)), 1: qblock()}
    assert rids(q.fence_targets(blocks, 1, 8)) == [0xD, 0xE]
    # ... but not once it stopped
    blocks = {0: qblock(elect=(7, 0xE), fence=(5, 0xD), stop=(5, 0xD))}
    assert rids(q.fence_targets(blocks, 1, 8)) == [0xE]
    # anything below the newest FENCE term was fenced by the leader that wrote it
    blocks = {0: qblock(elect=(3, 0xA)), 1: qblock(elect=(6, 0xB), fence=(6, 0xB)),
              2: qblock(elect=(4, 0xC))}
    assert [(t.slot, t.rid) for t in q.fence_targets(blocks, 2, 9)] == [(1, 0xB)]
    # the same rid is fenced once
    blocks = {0: qblock(elect=(7, 0xE), fence=(5, 0xE), stop=(4, 0xE))}
    assert rids(q.fence_targets(blocks, 1, 8)) == [0xE]
    # a never-written block fences nobody
    assert q.fence_targets({0: QuorumBlock(), 1: QuorumBlock()}, 0, 1) == []


def test_find_server_prefers_greatest_live_elect():
    meta, sb = volume(3)
    fsid = sb.fsid
    assert q.find_server(meta, fsid, sb.quorum_slots) is None
    write_quorum_block(meta, 0, qblock(elect=(4, 1), stop=(4, 1)), fsid)  # stopped
    write_quorum_block(meta, 1, qblock(elect=(3, 2)), fsid)  # live (maybe crashed)
    assert q.find_server(meta, fsid, sb.quorum_slots) == q.ServerAddr(1, "127.0.0.1", 7001, 3)
    write_quorum_block(meta, 2, qblock(elect=(5, 3), stop=(2, 3)), fsid)
    assert q.find_server(meta, fsid, sb.quorum_slots) == q.ServerAddr(2, "127.0.0.1", 7002, 5)
    assert q.read_quorum_blocks(meta, fsid, sb.quorum_slots)[2].events[QUORUM_EVENT_ELECT].rid == 3


# --------------------------------------------------------------------------- elections


def test_single_slot_elects_itself():
    @cluster_test(1)
    async def body(c: Cluster):
        n = await c.start(0)
        assert ev(c.block(0), QUORUM_EVENT_BEGIN).rid == n.m.rid  # BEGIN before started()
        waited = await c.wait_until(lambda: n.m.is_leader, 5)
        # no live leader on disk: the election timeout, not the heartbeat timeout
        assert waited <= ELECTION_MAX + 0.1
        assert n.starts == [(1, [])]
        assert c.oracle.elected == {1: 0}
        b = c.block(0)
        for i in (QUORUM_EVENT_TERM, QUORUM_EVENT_ELECT, QUORUM_EVENT_FENCE):
            assert (ev(b, i).term, ev(b, i).rid) == (1, n.m.rid)
        assert ev(b, QUORUM_EVENT_STOP).term == 0
        assert c.find_server() == q.ServerAddr(0, "127.0.0.1", 7000, 1)
        assert n.counters.get("quorum_elected") == 1
        status = dict(line.split(": ", 1) for line in n.m.status_text().splitlines())
        assert status["role"] == "leader" and status["term"] == "1"
        assert status["is_leader"] == "1" and status["server_state"] == "up"
        assert status["votes_needed"] == "1" and status["quorum_slot_nr"] == "0"
        # it stays leader: nothing deposes a lone member
        await c.run_for(3 * HB)
        assert n.m.is_leader and n.m.term == 1


@pytest.mark.parametrize("nr_slots", [2, 3, 5])
def test_members_elect_exactly_one_leader(nr_slots):
    @cluster_test(nr_slots, seed=nr_slots)
    async def body(c: Cluster):
        await c.start_all()
        leader = await c.wait_one_leader(5)
        term = leader.m.term
        await c.run_for(3 * HB)  # a stable leadership: no new elections
        assert c.serving() == [leader] and leader.m.term == term
        assert list(c.oracle.elected.values()).count(leader.slot) >= 1
        assert c.oracle.elected[term] == leader.slot
        for n in c.live():
            assert n.m.term == term
            if n is not leader:
                assert n.m.role == q.ROLE_FOLLOWER and n.m.last_heartbeat_from == leader.slot
                assert n.starts == []
        found = c.find_server()
        assert found is not None and (found.slot, found.term) == (leader.slot, term)
        assert found.port == 7000 + leader.slot
        assert leader.starts == [(term, [])]


def test_killed_leader_is_replaced_and_fenced():
    @cluster_test(3, seed=1)
    async def body(c: Cluster):
        await c.start_all()
        old = await c.wait_one_leader(5)
        old_rid, old_term = old.m.rid, old.m.term
        await c.run_for(1.0)
        c.kill(old.slot)  # no STOP written
        waited = await c.wait_until(lambda: len(c.serving()) == 1, 10)
        new = c.serving()[0]
        # within the heartbeat timeout plus one election (the last heartbeat may have
        # come up to one interval before the kill)
        assert waited <= HB + ELECTION_MAX + 0.05, waited
        assert new is not old and new.m.term > old_term
        assert any(t.rid == old_rid and t.slot == old.slot and t.term == old_term
                   and t.reason == "quorum_block_leader" for t in new.starts[-1][1])
        b = c.block(old.slot)
        assert ev(b, QUORUM_EVENT_ELECT).term == old_term
        assert ev(b, QUORUM_EVENT_STOP).term < old_term
        assert ev(b, QUORUM_EVENT_END).term == 0
        found = c.find_server()
        assert found is not None and found.slot == new.slot
        assert all(n.counters.get("quorum_heartbeat_timeout") <= 1 for n in c.live())


def test_restarted_single_slot_fences_its_crashed_incarnation():
    @cluster_test(1)
    async def body(c: Cluster):
        n = await c.start(0)
        await c.wait_until(lambda: n.m.is_leader, 5)
        old_rid = n.m.rid
        c.kill(0)
        await trio.sleep(0.01)
        await c.start(0)
        assert n.m.rid != old_rid
        # the blocks show a live leader (its own crashed incarnation): heartbeat timeout
        waited = await c.wait_until(lambda: n.m.is_leader, 10)
        assert HB <= waited <= HB + ELECTION_MAX
        assert n.starts[-1] == (2, [q.FenceTarget(0, old_rid, 1)])


def test_clean_shutdown_hands_over_quickly():
    @cluster_test(3, hb_ms=5000, seed=2)
    async def body(c: Cluster):
        await c.start_all()
        old = await c.wait_one_leader(5)
        old_rid, old_term = old.m.rid, old.m.term
        await c.run_for(0.5)
        await old.m.shutdown()
        old.alive = False
        assert old.stops == 1 and not old.server_up
        b = c.block(old.slot)
        assert (ev(b, QUORUM_EVENT_STOP).term, ev(b, QUORUM_EVENT_STOP).rid) == (old_term, old_rid)
        assert ev(b, QUORUM_EVENT_END).term == old_term and ev(b, QUORUM_EVENT_END).rid == old_rid
        # the order on disk: STOP, then END
        mine = [(e, t) for s, e, t in c.oracle.events if s == old.slot]
        assert mine[-2:] == [(QUORUM_EVENT_STOP, old_term), (QUORUM_EVENT_END, old_term)]
        # RESIGNATION: the others stand after an election timeout, not the heartbeat timeout
        waited = await c.wait_until(lambda: len(c.serving()) == 1, 5)
        assert waited < 1.0
        new = c.serving()[0]
        assert new.m.term > old_term
        assert all(t.rid != old_rid for t in new.starts[-1][1])  # it stopped: no fence
        assert sum(n.counters.get("quorum_recv_resignation") for n in c.live()) == 2
        assert old.m.shutdown is not None and not old.m.is_leader
        await old.m.shutdown()  # a second shutdown is a no-op


def test_follower_shutdown_writes_end_only():
    @cluster_test(3, seed=3)
    async def body(c: Cluster):
        await c.start_all()
        leader = await c.wait_one_leader(5)
        f = next(n for n in c.live() if n is not leader)
        await f.m.shutdown()
        f.alive = False
        assert f.stops == 0
        mine = [e for s, e, t in c.oracle.events if s == f.slot]
        assert mine == [QUORUM_EVENT_BEGIN, QUORUM_EVENT_END]
        await c.run_for(3 * HB)
        assert c.serving() == [leader]  # two of three still make a quorum


def test_minority_never_leads():
    @cluster_test(3, seed=4)
    async def body(c: Cluster):
        lone = await c.start(0)
        await c.run_for(30)
        assert lone.starts == [] and c.oracle.elected == {}
        assert lone.m.role == q.ROLE_CANDIDATE
        assert lone.counters.get("quorum_candidate") > 10  # it kept trying, term after term
        assert lone.m.term == lone.counters.get("quorum_candidate")
        assert c.find_server() is None
        # a second member makes a majority of three
        await c.start(1)
        leader = await c.wait_one_leader(5)
        assert leader.m.term >= lone.m.term - 1


def test_partitioned_leader_is_replaced_and_steps_down():
    @cluster_test(3, seed=5)
    async def body(c: Cluster):
        await c.start_all()
        old = await c.wait_one_leader(5)
        others = [n.slot for n in c.live() if n is not old]
        c.net.isolate(old.slot, others)
        # the majority elects a new leader; the old one sees its ELECT on disk
        await c.wait_until(lambda: any(n.m.is_leader for n in c.live() if n is not old), 10)
        await c.wait_until(lambda: not old.m.role == q.ROLE_LEADER, 1)
        assert old.stops == 1 and old.counters.get("quorum_term_demoted") == 1
        b = c.block(old.slot)
        assert ev(b, QUORUM_EVENT_STOP).term == ev(b, QUORUM_EVENT_ELECT).term
        c.net.heal()
        await c.run_for(3 * HB)
        assert len(c.serving()) == 1


# --------------------------------------------------------------------------- messages


def test_higher_term_message_demotes_leader():
    @cluster_test(3, seed=6)
    async def body(c: Cluster):
        await c.start_all()
        leader = await c.wait_one_leader(5)
        t = leader.m.term
        other = next(n.slot for n in c.live() if n is not leader)
        assert c.net.inject(leader.slot, c.msg(t + 5, q.MSG_HEARTBEAT, other))
        await c.wait_until(lambda: leader.m.server_state == q.SERVER_DOWN, 1)
        assert leader.stops == 1 and not leader.m.is_leader
        assert leader.m.role == q.ROLE_FOLLOWER and leader.m.term == t + 5
        assert leader.counters.get("quorum_term_demoted") == 1
        b = c.block(leader.slot)
        assert ev(b, QUORUM_EVENT_STOP).term == t == ev(b, QUORUM_EVENT_ELECT).term
        # nobody leads term t+5.  The others, still at term t, may first elect t+1 (a
        # majority) while the demoted member ignores them as stale; once it stands past
        # t+5 everybody follows it there
        await c.wait_until(lambda: len(c.serving()) == 1 and c.serving()[0].m.term > t + 5,
                           3 * HB + 2)
        assert all(n.m.term == c.serving()[0].m.term for n in c.live())


def test_higher_term_request_demotes_leader_which_votes():
    @cluster_test(3, seed=7)
    async def body(c: Cluster):
        await c.start_all()
        leader = await c.wait_one_leader(5)
        t = leader.m.term
        # a forged candidate in another slot: it gets the leader's vote
        other = next(n for n in c.live() if n is not leader)
        c.kill(other.slot)
        spy = c.net.transport(other.slot)
        assert c.net.inject(leader.slot, c.msg(t + 1, q.MSG_REQUEST_VOTE, other.slot))
        with trio.fail_after(1):
            while True:
                got = q.unpack_msg(await spy.recv())
                if got is not None and got.type == q.MSG_VOTE:
                    break
        assert (got.term, got.src) == (t + 1, leader.slot)
        assert leader.m.vote_for == other.slot and leader.m.role == q.ROLE_FOLLOWER
        await c.wait_until(lambda: leader.stops == 1, 1)  # the stop runs in its own task
        assert ev(c.block(leader.slot), QUORUM_EVENT_STOP).term == t


def test_stale_and_bad_messages_are_ignored():
    @cluster_test(3, seed=8)
    async def body(c: Cluster):
        await c.start_all()
        leader = await c.wait_one_leader(5)
        # a second election so that term - 1 is a real, stale term
        if leader.m.term == 1:
            c.kill(leader.slot)
            leader = await c.wait_one_leader(HB + 2)
            await c.start(next(n.slot for n in c.nodes if not n.alive))
        t = leader.m.term
        other = next(n.slot for n in c.live() if n is not leader)
        follower = c.nodes[other]
        good = c.msg(t + 3, q.MSG_HEARTBEAT, other)
        bad_crc = bytearray(good)
        bad_crc[-1] ^= 0x55
        bad_body = bytearray(good)
        bad_body[9] ^= 1  # the term, crc left as it was
        unknown_type = q.MSG_BODY.pack(c.sb.fsid, t + 3, 7, other)
        unknown_type += q.MSG_CRC.pack(fmt.crc32c(unknown_type))
        invalid = [bytes(bad_crc), bytes(bad_body), good[:-2], good + b"x", unknown_type,
                   c.msg(t + 3, q.MSG_HEARTBEAT, other, fsid=c.sb.fsid ^ 1),  # other volume
                   c.msg(t + 3, q.MSG_HEARTBEAT, 9),  # a slot mkfs did not configure
                   c.msg(t + 3, q.MSG_HEARTBEAT, leader.slot)]  # "from" ourselves
        before = leader.counters.get("quorum_recv_invalid")
        for data in invalid:
            assert c.net.inject(leader.slot, data)
        # lower terms: a deposed leader's heartbeat, an old candidate's request
        stale_before = leader.counters.get("quorum_recv_stale")
        assert c.net.inject(leader.slot, c.msg(t - 1, q.MSG_HEARTBEAT, other))
        assert c.net.inject(leader.slot, c.msg(t - 1, q.MSG_REQUEST_VOTE, other))
        votes = follower.counters.get("quorum_vote")
        assert c.net.inject(other, c.msg(t - 1, q.MSG_REQUEST_VOTE, leader.slot))
        assert c.net.inject(other, c.msg(t - 1, q.MSG_RESIGNATION, leader.slot))
        await c.run_for(3 * HB)
        assert leader.counters.get("quorum_recv_invalid") - before == len(invalid)
        assert leader.counters.get("quorum_recv_stale") - stale_before == 2
        assert follower.counters.get("quorum_vote") == votes
        assert follower.counters.get("quorum_recv_resignation") == 0
        assert c.serving() == [leader] and leader.m.term == t and leader.stops == 0


def test_follower_votes_once_per_term():
    @cluster_test(3, seed=9)
    async def body(c: Cluster):
        n1 = await c.start(1)
        spy0, spy2 = c.net.transport(0), c.net.transport(2)

        async def votes_at(spy, window=0.05):
            got = []
            with trio.move_on_after(window):
                while True:
                    m = q.unpack_msg(await spy.recv())
                    if m is not None and m.type == q.MSG_VOTE:
                        got.append((m.term, m.src))
            return got

        # before its own election timeout (>= 250 ms) it is a follower that has not voted
        c.net.inject(1, c.msg(1, q.MSG_REQUEST_VOTE, 0))
        assert await votes_at(spy0) == [(1, 1)]
        c.net.inject(1, c.msg(1, q.MSG_REQUEST_VOTE, 2))  # same term: no second vote
        c.net.inject(1, c.msg(1, q.MSG_REQUEST_VOTE, 0))  # nor again for the same one
        assert await votes_at(spy2) == [] and await votes_at(spy0) == []
        assert n1.m.vote_for == 0
        c.net.inject(1, c.msg(2, q.MSG_REQUEST_VOTE, 2))  # a new term: a new vote
        assert await votes_at(spy2) == [(2, 1)]
        assert n1.counters.get("quorum_vote") == 2
        assert n1.starts == []

        # votes are not on disk: a restarted member does not vote at or below its
        # starting term (the greatest term on disk), which covers any term it voted in
        c.kill(1)
        await trio.sleep(0.01)
        qb = c.block(2)
        qb.write_nr += 1
        qb.events[QUORUM_EVENT_TERM] = QuorumEvent(qb.write_nr, 77, 2, (0, 0))
        write_quorum_block(c.meta, 2, qb, c.sb.fsid)  # candidate 2 recorded term 2
        n1 = await c.start(1)
        assert n1.m.term == 2
        c.net.inject(1, c.msg(2, q.MSG_REQUEST_VOTE, 0))
        assert await votes_at(spy0) == []
        c.net.inject(1, c.msg(3, q.MSG_REQUEST_VOTE, 0))
        assert await votes_at(spy0) == [(3, 1)]


def test_a_candidacy_on_disk_gets_one_election_timeout():
    """Another slot recorded a TERM past ours and is not elected yet: its vote request is on
    its way.  A follower whose election timeout fires then waits one more election timeout
    instead of standing too (dueling candidates end with the higher term's winner fencing
    the lower's, a mount that is starting up); a candidacy that never ends delays it once."""
    @cluster_test(3, seed=4)
    async def body(c: Cluster):
        n1 = await c.start(1)
        c.record(2, n1.m.term + 5, QUORUM_EVENT_TERM)  # candidate 2, its request lost
        await c.wait_until(lambda: n1.counters.get("quorum_candidate_deferred") == 1, 2.0)
        assert n1.counters.get("quorum_candidate") == 0
        waited = await c.wait_until(lambda: n1.counters.get("quorum_candidate") > 0, 2.0)
        assert waited >= q.ELECTION_TIMEOUT_S
        assert n1.m.term > ev(c.block(2), QUORUM_EVENT_TERM).term
        assert n1.counters.get("quorum_candidate_deferred") == 1


def test_followers_of_a_dead_leader_do_not_duel():
    """Both followers of a leader that died time out on its heartbeats at about the same
    time.  The first to stand records its TERM; the other, finding that candidacy on disk
    when its own heartbeat timeout fires, gives it one election timeout instead of standing
    in the next term (whose winner would depose and fence the first, a healthy mount).  A
    candidacy that comes to nothing then costs that one election timeout only: the silent
    leader's ELECT on disk is not taken for a live one."""
    @cluster_test(3, seed=5)
    async def body(c: Cluster):
        await c.start(0)
        await c.start(1)
        old = await c.wait_one_leader(5)
        survivor = c.nodes[1 - old.slot]
        await c.run_for(0.5)
        c.kill(old.slot)
        stood = survivor.counters.get("quorum_candidate")
        c.record(2, old.m.term + 1, QUORUM_EVENT_TERM)  # slot 2 stood; its request is lost
        waited = await c.wait_until(
            lambda: survivor.counters.get("quorum_candidate_deferred") == 1, HB + 1)
        assert waited >= HB - 0.5  # at its heartbeat timeout
        assert survivor.counters.get("quorum_candidate") == stood
        waited = await c.wait_until(lambda: survivor.counters.get("quorum_candidate") > stood,
                                    ELECTION_MAX + 0.01)
        assert waited >= q.ELECTION_TIMEOUT_S
        assert survivor.m.term == old.m.term + 2


def test_a_timed_out_candidate_follows_a_leader_elected_in_its_term():
    # elected by the third member while our vote request was lost: standing again in the
    # next term would depose it
    @cluster_test(3, seed=6)
    async def body(c: Cluster):
        n = await c.start(0)
        await c.wait_until(lambda: n.m.role == q.ROLE_CANDIDATE, 2)
        t = n.m.term
        stood = n.counters.get("quorum_candidate")
        c.record(2, t, QUORUM_EVENT_TERM, QUORUM_EVENT_ELECT)
        await c.wait_until(lambda: n.m.role == q.ROLE_FOLLOWER, ELECTION_MAX + 0.01)
        assert n.m.term == t and n.counters.get("quorum_candidate") == stood
        await c.run_for(HB - ELECTION_MAX)  # it waits for that leader's heartbeats
        assert n.m.role == q.ROLE_FOLLOWER and n.counters.get("quorum_candidate") == stood


def test_two_slots_one_vote_elects_and_same_term_leaders_resolve():
    # with fewer than 3 slots one vote elects (as upstream), so two members can both win
    # a term; the one that hears a same-term heartbeat from a lower slot steps down
    @cluster_test(2, seed=16)
    async def body(c: Cluster):
        hi = await c.start(1)
        await c.wait_until(lambda: hi.m.is_leader, 2)  # alone, on its own vote
        t = hi.m.term
        c.net.inject(1, c.msg(t, q.MSG_HEARTBEAT, 0))
        await c.wait_until(lambda: hi.m.server_state == q.SERVER_DOWN, 1)
        assert hi.stops == 1 and hi.m.role == q.ROLE_FOLLOWER and hi.m.term == t
        assert hi.counters.get("quorum_split_brain") == 1
        assert ev(c.block(1), QUORUM_EVENT_STOP).term == t

    @cluster_test(2, seed=17)
    async def body2(c: Cluster):
        lo = await c.start(0)
        await c.wait_until(lambda: lo.m.is_leader, 2)
        t = lo.m.term
        c.net.inject(0, c.msg(t, q.MSG_HEARTBEAT, 1))  # the higher slot yields, not us
        await c.run_for(1)
        assert lo.m.is_leader and lo.stops == 0
        assert lo.counters.get("quorum_split_brain") == 1


def test_candidate_follows_the_heartbeat_of_its_terms_leader():
    @cluster_test(3, seed=10)
    async def body(c: Cluster):
        n = await c.start(0)
        await c.wait_until(lambda: n.m.role == q.ROLE_CANDIDATE, 2)
        t = n.m.term
        c.net.inject(0, c.msg(t, q.MSG_HEARTBEAT, 2))  # slot 2 won term t
        await trio.sleep(0.01)
        assert n.m.role == q.ROLE_FOLLOWER and n.m.last_heartbeat_from == 2
        assert n.m.term == t
        status = n.m.status_text()
        assert "last_heartbeat_from: 2\n" in status and "role: follower\n" in status


# --------------------------------------------------------------------------- the server


def _deposed_by_a_stall(c: Cluster, stop_delay: float):
    """A follower misses the leader's heartbeats (a stall) and stands in the next term
    while the leader is alive: the leader hears the request, votes, and stops its server
    (taking stop_delay), so its STOP reaches the disk after the new leader is elected."""
    async def go():
        await c.start_all()
        old = await c.wait_one_leader(5)
        term = old.m.term
        await c.run_for(0.5)
        old.stop_delay = stop_delay
        stalled = next(n for n in c.live() if n is not old)
        stalled.m._timeout = trio.current_time()  # its heartbeat wait ran out
        stalled.m._wake()
        await c.wait_until(lambda: any(n.m.is_leader and n is not old for n in c.live()),
                           q.DEPOSED_STOP_WAIT_S + 2)
        new = next(n for n in c.live() if n.m.is_leader)
        return old, new, term
    return go()


def test_a_deposed_leader_that_records_stop_is_not_fenced():
    @cluster_test(3, seed=3)
    async def body(c: Cluster):
        old, new, term = await _deposed_by_a_stall(c, 0.3)
        assert new.m.term == term + 1
        assert old.stops == 1 and not old.m.is_leader
        assert new.starts[-1][1] == []  # it waited for the STOP instead of fencing
        assert new.counters.get("quorum_deposed_leader_stopped") == 1
        b = c.block(old.slot)
        assert ev(b, QUORUM_EVENT_STOP).term == ev(b, QUORUM_EVENT_ELECT).term == term


def test_a_deposed_leader_that_does_not_stop_in_time_is_fenced():
    @cluster_test(3, seed=3)
    async def body(c: Cluster):
        t0 = trio.current_time()
        old, new, _ = await _deposed_by_a_stall(c, q.DEPOSED_STOP_WAIT_S + 5)
        assert [(t.slot, t.rid) for t in new.starts[-1][1]] == [(old.slot, old.m.rid)]
        assert new.counters.get("quorum_deposed_leader_stopped") == 0
        assert trio.current_time() - t0 >= q.DEPOSED_STOP_WAIT_S


def test_a_leader_not_heard_is_fenced_without_waiting():
    @cluster_test(3)
    async def body(c: Cluster):
        n = await c.start(0)
        c.record(1, 5, QUORUM_EVENT_TERM, QUORUM_EVENT_ELECT)  # rid 77, never stopped
        target = q.FenceTarget(1, 77, 5)
        t0 = trio.current_time()
        assert await n.m._spare_stopped_leaders(6, [target]) == [target]
        assert trio.current_time() == t0
        # heard long ago (more than the heartbeat timeout): dead, no wait either
        n.m._heard_at[1] = t0 - HB - 0.01
        assert await n.m._spare_stopped_leaders(6, [target]) == [target]
        assert trio.current_time() == t0


def test_only_the_targets_own_stop_spares_it():
    @cluster_test(3)
    async def body(c: Cluster):
        n = await c.start(0)
        c.record(1, 5, QUORUM_EVENT_TERM, QUORUM_EVENT_ELECT)  # rid 77
        target = q.FenceTarget(1, 78, 5)  # an incarnation the STOP below is not from
        n.m._heard_at[1] = trio.current_time()

        async def stop_later():
            await trio.sleep(0.2)
            c.record(1, 5, QUORUM_EVENT_STOP)

        c.nursery.start_soon(stop_later)
        t0 = trio.current_time()
        assert await n.m._spare_stopped_leaders(6, [target]) == [target]
        assert trio.current_time() - t0 >= q.DEPOSED_STOP_WAIT_S


def test_start_server_failure_steps_down():
    @cluster_test(1)
    async def body(c: Cluster):
        node = c.nodes[0]
        node.fail_starts = 1
        await c.start(0)
        await c.wait_until(lambda: node.m.counters.get("quorum_server_start_error") == 1, 5)
        await c.wait_until(lambda: node.m.server_state == q.SERVER_DOWN, 1)
        assert node.m.role == q.ROLE_FOLLOWER and not node.m.is_leader
        b = c.block(0)
        assert ev(b, QUORUM_EVENT_STOP).term == ev(b, QUORUM_EVENT_ELECT).term == 1
        assert ev(b, QUORUM_EVENT_FENCE).term == 0  # never up
        assert c.find_server() is None
        # it stands again after the heartbeat timeout, and this start works
        waited = await c.wait_until(lambda: node.m.is_leader, 10)
        assert waited >= HB - 0.1
        assert [t for t, _ in node.starts] == [1, 2]
        assert node.starts[-1][1] == []  # term 1 recorded STOP: nothing to fence


def test_start_server_failure_hands_over_in_a_cluster():
    @cluster_test(3, seed=11)
    async def body(c: Cluster):
        for n in c.nodes:
            n.fail_starts = 1
        await c.start_all()
        leader = await c.wait_one_leader(4 * (HB + 1))
        failed = [n for n in c.nodes if n.counters.get("quorum_server_start_error")]
        assert failed and leader.slot in {n.slot for n in c.nodes if n.starts}
        for n in failed:
            b = c.block(n.slot)
            assert ev(b, QUORUM_EVENT_STOP).term >= n.starts[0][0]
        # every ELECT term is unique and the serving leader holds the last one
        assert max(c.oracle.elected) == leader.m.term


def test_heartbeats_continue_while_the_server_starts_and_demotion_cancels_it():
    @cluster_test(3, seed=12)
    async def body(c: Cluster):
        for n in c.nodes:
            n.hang_starts = True  # a fence agent that never answers
        await c.start_all()
        await c.wait_until(lambda: len(c.leaders()) == 1, 5)
        leader = c.leaders()[0]
        t = leader.m.term
        await c.run_for(3 * HB)  # the start hangs; followers keep hearing heartbeats
        assert leader.m.server_state == q.SERVER_STARTING and not leader.m.is_leader
        assert all(n.m.term == t for n in c.live())
        assert all(n.counters.get("quorum_heartbeat_timeout") == 0 for n in c.live())
        # a higher term cancels the start and stops whatever it had started
        for n in c.nodes:
            n.hang_starts = False
        other = next(n.slot for n in c.live() if n is not leader)
        c.net.inject(leader.slot, c.msg(t + 1, q.MSG_HEARTBEAT, other))
        await c.wait_until(lambda: leader.m.server_state == q.SERVER_DOWN, 1)
        assert leader.stops == 1
        b = c.block(leader.slot)
        assert ev(b, QUORUM_EVENT_STOP).term == t and ev(b, QUORUM_EVENT_FENCE).term == 0
        await c.wait_one_leader(2 * HB + 2)


def test_shutdown_while_the_server_starts():
    @cluster_test(1)
    async def body(c: Cluster):
        node = c.nodes[0]
        node.hang_starts = True
        await c.start(0)
        await c.wait_until(lambda: node.starts != [], 5)
        await node.m.shutdown()
        assert node.stops == 1
        b = c.block(0)
        assert ev(b, QUORUM_EVENT_STOP).term == 1 and ev(b, QUORUM_EVENT_END).term == 1
        assert c.find_server() is None


def test_server_death_resigns():
    @cluster_test(3, hb_ms=5000, seed=13)
    async def body(c: Cluster):
        await c.start_all()
        leader = await c.wait_one_leader(5)
        t = leader.m.term
        leader.server_up = False
        leader.m.server_stopped()  # the server gave up (e.g. a fence error)
        waited = await c.wait_until(
            lambda: any(n.m.is_leader for n in c.live() if n is not leader), 5)
        assert waited < 1.0  # resignation, not the 5 s heartbeat timeout
        b = c.block(leader.slot)
        assert ev(b, QUORUM_EVENT_STOP).term == t
        assert leader.counters.get("quorum_server_died") == 1
        assert leader.m.role == q.ROLE_FOLLOWER
        leader.m.server_stopped()  # late or repeated notices are harmless
        await c.run_for(1)
        assert len(c.serving()) == 1


def test_abandon_writes_nothing():
    @cluster_test(3, seed=14)
    async def body(c: Cluster):
        await c.start_all()
        leader = await c.wait_one_leader(5)
        rid, dev = leader.m.rid, leader.m.meta_dev
        writes = dev.writes
        await leader.m.abandon()
        leader.alive = False
        assert dev.writes == writes and leader.stops == 0 and not leader.m.is_leader
        assert leader.m.status_text().count("role: stopped") == 1
        new = await c.wait_one_leader(HB + 2)
        assert rid in [t.rid for t in new.starts[-1][1]]


def test_heartbeat_timeout_is_tunable():
    @cluster_test(3, hb_ms=60000, seed=15)
    async def body(c: Cluster):
        await c.start_all()
        leader = await c.wait_one_leader(5)
        for n in c.live():
            n.m.set_heartbeat_timeout_ms(2000)
        assert "heartbeat_timeout_ms: 2000\n" in leader.m.status_text()
        c.kill(leader.slot)
        waited = await c.wait_until(lambda: len(c.serving()) == 1, 60)
        assert waited < HB + 1


# --------------------------------------------------------------------------- real UDP


def free_udp_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def test_trio_udp_elects_over_loopback():
    ports = free_udp_ports(3)
    meta, data = MemDevice(META_SIZE, "meta"), MemDevice(DATA_SIZE, "data")
    sb = make_volume(meta, data, {i: ("127.0.0.1", p) for i, p in enumerate(ports)})

    async def main():
        members = []
        async with trio.open_nursery() as nursery:
            for slot in sb.quorum_slots:
                udp = q.TrioUdp(sb.quorum_slots, slot)
                await udp.bind()

                async def start(term, targets):
                    pass

                async def stop():
                    pass

                m = q.QuorumMember(meta_dev=meta.reopen(), fsid=sb.fsid, slots=sb.quorum_slots,
                                   slot=slot, rid=slot + 1, heartbeat_timeout_ms=2000,
                                   transport=udp, start_server=start, stop_server=stop)
                await nursery.start(m.run)
                members.append(m)
            with trio.fail_after(10):
                while sum(m.is_leader for m in members) != 1 or any(
                        m.last_heartbeat_from is None for m in members if not m.is_leader):
                    await trio.sleep(0.02)
            leader = next(m for m in members if m.is_leader)
            assert q.find_server(meta, sb.fsid, sb.quorum_slots).slot == leader.slot
            # the slot's port is taken while the member runs
            dup = q.TrioUdp(sb.quorum_slots, leader.slot)
            with pytest.raises(FsError) as ei:
                await dup.bind()
            assert ei.value.errno == errno.EADDRINUSE
            assert f"quorum slot {leader.slot} address " in ei.value.msg
            assert "another mount of this slot still running?" in ei.value.msg
            for m in members:
                await m.shutdown()
        for slot in sb.quorum_slots:
            assert read_quorum_block(meta, slot, sb.fsid).events[QUORUM_EVENT_END].rid == slot + 1

    trio.run(main)


# --------------------------------------------------------------------------- random schedules


OPS = st.one_of(
    st.tuples(st.just("kill"), st.integers(0, 4)),
    st.tuples(st.just("kill_leader")),
    st.tuples(st.just("start"), st.integers(0, 4)),
    st.tuples(st.just("shutdown"), st.integers(0, 4)),
    st.tuples(st.just("partition"), st.integers(0, 4), st.integers(0, 4)),
    st.tuples(st.just("heal")),
    st.tuples(st.just("fail_start"), st.integers(0, 4)),
    st.tuples(st.just("lossy"), st.sampled_from([0.0, 0.2, 0.5])),
    st.tuples(st.just("wait"), st.floats(0.0, 3 * HB)),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(nr_slots=st.sampled_from([3, 5]), seed=st.integers(0, 1000),
       delay=st.sampled_from([0.0, 0.02, 0.3]), ops=st.lists(OPS, min_size=1, max_size=14))
def test_random_schedules_keep_one_leader_per_term(nr_slots, seed, delay, ops):
    @cluster_test(nr_slots, seed=seed)
    async def body(c: Cluster):
        # delays reorder datagrams; as long as an election timeout they make candidates
        # overlap and votes cross, which is where a double vote would elect two
        c.net.set_delay(0.0, delay)
        c.net.duplicate = 0.1
        await c.start_all()
        for op in ops:
            kind, args = op[0], op[1:]
            if kind in ("kill", "start", "shutdown", "fail_start"):
                node = c.nodes[args[0] % nr_slots]
                if kind == "kill" and node.alive:
                    c.kill(node.slot)
                elif kind == "shutdown" and node.alive:
                    await node.m.shutdown()
                    node.alive = False
                elif kind == "start" and not node.alive:
                    await c.start(node.slot)
                elif kind == "fail_start":
                    node.fail_starts += 1
            elif kind == "kill_leader":
                # crash whoever leads, once there is one, and bring it back later
                with trio.move_on_after(3 * HB):
                    await c.wait_until(lambda: c.leaders() != [], 3 * HB)
                for n in c.leaders():
                    c.kill(n.slot)
                    await c.run_for(HB)
                    await c.start(n.slot)
            elif kind == "partition":
                c.net.partition(args[0] % nr_slots, args[1] % nr_slots)
            elif kind == "heal":
                c.net.heal()
            elif kind == "lossy":
                c.net.loss = args[0]
            else:
                await c.run_for(args[0])
            c.check()
        # liveness once the faults are gone: every member up, one leader serving
        c.net.heal()
        c.net.loss = 0.0
        for n in c.nodes:
            if not n.alive:
                await c.start(n.slot)
        leader = await c.wait_one_leader(4 * (HB + 1) + 5)
        found = c.find_server()
        assert found is not None and found.slot == leader.slot
        assert c.oracle.elected[leader.m.term] == leader.slot
