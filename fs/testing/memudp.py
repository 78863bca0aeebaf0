"""An in-memory datagram network for quorum tests: one `MemUdpNet`, one transport per slot.

Owns the fake network between quorum members and its fault knobs: partitions between pairs
of slots, a slot whose datagrams are all dropped (a dead or mute member), a slot that
receives nothing, random loss, duplication and delay (which also reorders), and raw
injection of datagrams (forged, stale or corrupt messages).

Concurrency: everything runs on the trio thread.  `send` delivers synchronously into the
destination's bounded inbox (a full inbox drops the datagram, as a socket buffer would) and
then checkpoints; delayed datagrams are delivered by trio system tasks, so they need no
nursery and vanish with the run.  A datagram goes to whichever transport holds the slot
when it is delivered, like a packet reaching a re-bound port.
"""

from __future__ import annotations

import random

import trio

INBOX_DEPTH = 256


class MemUdpTransport:
    """One slot's end of the network (the `fs.quorum.UdpTransport` protocol)."""

    def __init__(self, net: MemUdpNet, slot: int):
        self.net = net
        self.slot = slot
        self._send, self._recv = trio.open_memory_channel(INBOX_DEPTH)
        self.closed = False

    async def send(self, slot: int, data: bytes) -> None:
        if not self.closed:
            self.net._route(self.slot, slot, bytes(data))
        await trio.lowlevel.checkpoint()

    async def recv(self) -> bytes:
        if self.closed:
            raise trio.ClosedResourceError("transport closed")
        try:
            return await self._recv.receive()
        except trio.EndOfChannel:
            raise trio.ClosedResourceError("transport closed") from None

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._send.close()
        if self.net._ends.get(self.slot) is self:
            del self.net._ends[self.slot]

    def _deliver(self, data: bytes) -> bool:
        if self.closed:
            return False
        try:
            self._send.send_nowait(data)
        except (trio.WouldBlock, trio.ClosedResourceError):
            return False
        return True


class MemUdpNet:
    """The network.  Knobs may be changed at any time; they apply to datagrams sent later
    (a delayed datagram already in flight is still delivered)."""

    def __init__(self, rng: random.Random | None = None):
        self.rng = rng or random.Random(0)
        self._ends: dict[int, MemUdpTransport] = {}
        self._cut: set[frozenset[int]] = set()  # unordered pairs that cannot talk
        self._mute: set[int] = set()  # slots whose datagrams are dropped
        self._deaf: set[int] = set()  # slots that receive nothing
        self.loss = 0.0  # probability a datagram is lost
        self.duplicate = 0.0  # probability a datagram arrives twice
        self.delay = (0.0, 0.0)  # each datagram is delayed uniformly in [lo, hi] seconds
        self.nr_sent = 0
        self.nr_delivered = 0
        self.nr_dropped = 0

    def transport(self, slot: int) -> MemUdpTransport:
        """A new transport for the slot; it replaces (closes) the slot's previous one."""
        old = self._ends.get(slot)
        if old is not None:
            old.close()
        end = MemUdpTransport(self, slot)
        self._ends[slot] = end
        return end

    # ------------------------------------------------------------------ faults

    def partition(self, a: int, b: int) -> None:
        """Datagrams between a and b (both ways) are dropped until heal()."""
        if a != b:
            self._cut.add(frozenset((a, b)))

    def isolate(self, slot: int, others) -> None:
        """Partition slot from every slot in others."""
        for o in others:
            self.partition(slot, o)

    def heal(self) -> None:
        """Remove every partition (mute/deaf slots stay as they are)."""
        self._cut.clear()

    def drop_from(self, slot: int, drop: bool = True) -> None:
        """Drop everything slot sends (a dead member sends nothing)."""
        (self._mute.add if drop else self._mute.discard)(slot)

    def drop_to(self, slot: int, drop: bool = True) -> None:
        """Drop everything sent to slot."""
        (self._deaf.add if drop else self._deaf.discard)(slot)

    def set_delay(self, lo: float, hi: float) -> None:
        self.delay = (lo, hi)

    def inject(self, to_slot: int, data: bytes) -> bool:
        """Deliver raw bytes to a slot now, as if from anywhere; False if nobody holds it."""
        end = self._ends.get(to_slot)
        return end is not None and end._deliver(bytes(data))

    def can_talk(self, a: int, b: int) -> bool:
        return (a not in self._mute and b not in self._deaf
                and frozenset((a, b)) not in self._cut)

    # ------------------------------------------------------------------ delivery

    def _route(self, src: int, dst: int, data: bytes) -> None:
        self.nr_sent += 1
        if not self.can_talk(src, dst) or (self.loss and self.rng.random() < self.loss):
            self.nr_dropped += 1
            return
        copies = 2 if self.duplicate and self.rng.random() < self.duplicate else 1
        for _ in range(copies):
            lo, hi = self.delay
            if hi > 0:
                wait = self.rng.uniform(lo, hi)
                trio.lowlevel.spawn_system_task(self._later, dst, data, wait)
            else:
                self._arrive(dst, data)

    async def _later(self, dst: int, data: bytes, wait: float) -> None:
        await trio.sleep(wait)
        self._arrive(dst, data)

    def _arrive(self, dst: int, data: bytes) -> None:
        end = self._ends.get(dst)
        if end is not None and dst not in self._deaf and end._deliver(data):
            self.nr_delivered += 1
        else:
            self.nr_dropped += 1
