"""Quorum: electing the mount that runs the server (spec/semantics.md §2.1, scoutfs quorum.c).

Owns:

* the election protocol of one quorum member (`QuorumMember`): terms, votes, heartbeats and
  resignations over UDP (`TrioUdp`, or `fs.testing.memudp` in tests), and the events this
  member records in ITS OWN slot's quorum block (BEGIN, TERM, ELECT, FENCE, STOP, END;
  every other slot's block is only ever read);
* when to start and stop this mount's server: it calls the `start_server(term,
  fence_targets)` / `stop_server()` callbacks it was given, never the server itself; the
  mount tells it `server_stopped()` when the server dies on its own (we resign), and
  `abandon()`s it on a forced unmount (nothing more is written, as after a crash);
* what the quorum blocks say to everybody else: `find_server` (where clients connect),
  `fence_targets` (which earlier leaders a new server must fence), `votes_needed`.

Protocol (as upstream): a member starts at the greatest term in any quorum block and records
BEGIN.  A follower that hears no heartbeat for the heartbeat timeout (or, when the blocks show
no live leader, the election timeout of 250 ms + up to 100 ms) stands as candidate - but only
while its own server is down, not while the blocks show another slot's candidacy it has not
yet given one election timeout (a TERM past ours with no ELECT: its vote request is on the way;
typically the other follower of a leader that just died), and not while they show a leader
elected in our term or later that has not gone silent on us: term+1 (and past every term on
disk), a TERM event, a vote for itself, REQUEST_VOTE to the others.  (Standing past another's
candidacy or election would depose its winner, and our server would fence that mount.)
Followers vote once per term.  A candidate with `votes_needed` votes writes ELECT, heartbeats
every 100 ms and starts the server in a task, which fences the earlier leaders the blocks
show unstopped (one it still hears first gets DEPOSED_STOP_WAIT_S to record STOP: a leader
our election deposed is stopping, not dead); once the server is up it writes FENCE.  Any
higher term (in a message, or an ELECT in another slot's block, which the leader re-reads at
each heartbeat) demotes a leader: its server is stopped and STOP written.  A clean shutdown
of a leader stops the server, writes STOP and sends RESIGNATION; every clean shutdown ends
with END.

Two rules keep "at most one leader per term" across restarts (votes are not on disk):
* a candidate writes (and flushes) its TERM event before it asks for votes, so every term
  anybody voted in is on disk;
* a member never votes in a term at or below the term it started at.
With fewer than 3 slots one vote elects (as upstream), so two members may both win a term;
a leader that hears a same-term heartbeat from a lower slot steps down to end that quickly.

Concurrency (trio; code between two awaits is atomic):
* One main-loop task owns the protocol state (term, role, votes, timeout).  A receiver task
  feeds it datagrams through a bounded inbox (full inbox: the datagram is dropped, as UDP
  would); the server tasks and `server_stopped()` post wake-ups to the same inbox.
* Server start and stop run in their own tasks (heartbeats keep going while a start fences
  for seconds), serialised by `_server_lock`; a start task is tagged with its term and a
  stop task with the term it stops, so a stale task never touches a newer server.  A
  demotion cancels a start in progress (`_start_scope`) and then calls `stop_server()`,
  which must therefore cope with a half-started server.  The member never stands while
  `server_state` is not "down".
* Quorum block I/O is synchronous 4 KiB reads/writes of our in-memory copy of our block
  (every write is the whole block, so writes from different tasks cannot tear each other);
  only the flush awaits (in a thread for a real `fs.block.Device`).
* Nothing here waits on the server, on locks or on the network except `start_server` /
  `stop_server` in their tasks; `send` never blocks on a peer.

Hostile datagrams (anybody can send to a slot's UDP port): every datagram is checked before
it is acted on - its size, crc, type (`unpack_msg`), then `check_msg`: this volume's fsid,
a configured slot other than ours, a term that leaves room for the +1s of later elections
(`MAX_TERM`, so a forged huge term cannot overflow the quorum block's u64).  A bad one is
dropped and counted (`quorum_recv_invalid`) with a rate-limited log line naming the sender
and the reason.  (The crc is no authentication: a well-formed forged message of a higher
term still demotes a leader, as upstream.)
"""

from __future__ import annotations

import errno
import logging
import os
import random
import socket
import struct
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

import trio

from fs import format as fmt
from fs.block import Device, read_quorum_block, write_quorum_block
from fs.errors import FsError
from fs.format import (
    QUORUM_EVENT_BEGIN,
    QUORUM_EVENT_ELECT,
    QUORUM_EVENT_END,
    QUORUM_EVENT_FENCE,
    QUORUM_EVENT_STOP,
    QUORUM_EVENT_TERM,
    QuorumBlock,
    QuorumEvent,
    QuorumSlot,
)
from fs.kmsg import KMSG
from fs.net import LogLimiter

log = logging.getLogger(__name__)

# timing (spec §2.1)
ELECTION_TIMEOUT_S = 0.250  # base election timeout ...
ELECTION_RANDOM_S = 0.100  # ... plus up to this much, so candidates rarely collide
HEARTBEAT_INTERVAL_S = 0.100  # leader heartbeats
HEARTBEAT_DELAY_WARN_S = 1.0  # log a new longest heartbeat send delay past this
# a new leader gives an earlier leader it still hears this long to record STOP before
# fencing it (a live leader deposed by our election stops its server on hearing us)
DEPOSED_STOP_WAIT_S = 2.0
DEPOSED_STOP_POLL_S = 0.05

# message types (upstream numbering)
MSG_REQUEST_VOTE, MSG_VOTE, MSG_HEARTBEAT, MSG_RESIGNATION = 0, 1, 2, 3
MSG_NAMES = {MSG_REQUEST_VOTE: "request_vote", MSG_VOTE: "vote",
             MSG_HEARTBEAT: "heartbeat", MSG_RESIGNATION: "resignation"}
# {fsid u64, term u64, type u8, from u8, pad u16} then crc32c u32 of those 20 bytes
MSG_BODY = struct.Struct("<QQBBxx")
MSG_CRC = struct.Struct("<I")
MSG_SIZE = MSG_BODY.size + MSG_CRC.size

ROLE_FOLLOWER, ROLE_CANDIDATE, ROLE_LEADER = "follower", "candidate", "leader"
SERVER_DOWN, SERVER_STARTING, SERVER_UP, SERVER_STOPPING = "down", "starting", "up", "stopping"

INBOX_DEPTH = 256  # datagrams queued for the main loop; more are dropped
MAX_TERM = 2**63 - 1  # a greater term in a message is refused (terms are u64 on disk)


def votes_needed(nr_slots: int) -> int:
    """Votes a candidate needs: 1 with fewer than 3 slots, else a strict majority."""
    return 1 if nr_slots < 3 else nr_slots // 2 + 1


# --------------------------------------------------------------------------- messages


@dataclass(frozen=True, slots=True)
class QuorumMsg:
    fsid: int
    term: int
    type: int
    src: int  # the sender's slot ("from")


def pack_msg(fsid: int, term: int, type_: int, src: int) -> bytes:
    body = MSG_BODY.pack(fsid, term, type_, src)
    return body + MSG_CRC.pack(fmt.crc32c(body))


def unpack_msg(data: bytes) -> QuorumMsg | None:
    """The message in a datagram, or None if it is not a well-formed one (size, crc, type)."""
    if len(data) != MSG_SIZE:
        return None
    body = data[: MSG_BODY.size]
    (crc,) = MSG_CRC.unpack_from(data, MSG_BODY.size)
    if crc != fmt.crc32c(body):
        return None
    fsid, term, type_, src = MSG_BODY.unpack(body)
    if type_ not in MSG_NAMES:
        return None
    return QuorumMsg(fsid, term, type_, src)


def check_msg(msg: QuorumMsg | None, fsid: int, slots: Iterable[int], my_slot: int
              ) -> str | None:
    """Why an unpacked datagram must be dropped (None if it may be acted on)."""
    if msg is None:
        return "not a quorum message (size, crc or type)"
    if msg.fsid != fsid:
        return f"fsid {msg.fsid:016x} is not this volume's"
    if msg.src not in slots:
        return f"from slot {msg.src}, which is not configured"
    if msg.src == my_slot:
        return f"from our own slot {msg.src}"
    if msg.term > MAX_TERM:
        return f"term {msg.term} out of range"
    return None


# --------------------------------------------------------------------------- quorum blocks


@dataclass
class ServerAddr:
    slot: int
    addr: str
    port: int
    term: int


@dataclass
class FenceTarget:
    slot: int
    rid: int
    term: int
    reason: str = "quorum_block_leader"


def read_quorum_blocks(meta_dev, fsid: int, slots: Iterable[int]) -> dict[int, QuorumBlock]:
    """Every configured slot's quorum block (slots: slot nrs, or the super's slot dict).
    FsError(EIO) if one is corrupt or of another volume."""
    return {slot: read_quorum_block(meta_dev, slot, fsid) for slot in sorted(slots)}


def _live_leader(qb: QuorumBlock) -> bool:
    """The slot was elected and never recorded stopping (running, or crashed)."""
    return qb.events[QUORUM_EVENT_ELECT].term > qb.events[QUORUM_EVENT_STOP].term


def greatest_term(blocks: dict[int, QuorumBlock]) -> int:
    return max((ev.term for qb in blocks.values() for ev in qb.events), default=0)


def find_server(meta_dev, fsid: int, slots: dict[int, QuorumSlot]) -> ServerAddr | None:
    """Where clients connect: the slot with the greatest ELECT term that is still above its
    STOP term (spec §2.1), or None.  A few synchronous 4 KiB reads; callers poll it.  The
    server may not be listening yet (elected, still fencing) or be dead (crashed, not yet
    replaced): callers retry."""
    return server_in_blocks(read_quorum_blocks(meta_dev, fsid, slots), slots)


def server_in_blocks(blocks: dict[int, QuorumBlock], slots: dict[int, QuorumSlot]
                     ) -> ServerAddr | None:
    """`find_server` on blocks already read."""
    best: ServerAddr | None = None
    for slot, qb in blocks.items():
        if slot not in slots or not _live_leader(qb):
            continue
        term = qb.events[QUORUM_EVENT_ELECT].term
        if best is None or term > best.term:
            best = ServerAddr(slot, slots[slot].addr, slots[slot].port, term)
    return best


def fence_targets(blocks: dict[int, QuorumBlock], my_slot: int, new_term: int
                  ) -> list[FenceTarget]:
    """Earlier leaders a server elected in `new_term` must fence before it starts.

    Per slot (our own included: a previous incarnation of our slot that crashed while
    leading left its ELECT behind), an earlier leader is
    * an ELECT without a later STOP: elected and never recorded stopping;
    * a FENCE between STOP and ELECT: a leader that got its server up and never stopped,
      whose ELECT a later election of the same slot has overwritten.
    A leader with a term below the newest FENCE term anywhere is skipped: the leader that
    wrote that FENCE fenced it before its server came up.  Events at or after `new_term`
    are not earlier (our own ELECT, should the blocks already hold it).  Each rid once.

    The blocks should be read before we record our own ELECT, which overwrites the ELECT
    of our slot's previous incarnation.  `my_slot` gets no special treatment: our own
    slot's earlier incarnation is fenced like anybody else (the caller drops its own rid).
    """
    newest_fence = max((qb.events[QUORUM_EVENT_FENCE].term for qb in blocks.values()),
                       default=0)
    out: list[FenceTarget] = []
    seen: set[int] = set()
    for slot in sorted(blocks):
        ev = blocks[slot].events
        elect, fence, stop = ev[QUORUM_EVENT_ELECT], ev[QUORUM_EVENT_FENCE], ev[QUORUM_EVENT_STOP]
        found: list[QuorumEvent] = []
        if elect.term > stop.term:
            found.append(elect)
        if stop.term < fence.term < elect.term:
            found.append(fence)
        for e in found:
            if e.term >= new_term or e.term < newest_fence or e.rid in seen:
                continue
            seen.add(e.rid)
            out.append(FenceTarget(slot, e.rid, e.term))
    return out


# --------------------------------------------------------------------------- transports


class UdpTransport(Protocol):
    async def send(self, slot: int, data: bytes) -> None:
        """Best effort: never raises on loss or an unreachable peer."""

    async def recv(self) -> bytes:
        """The next datagram; trio.ClosedResourceError (or EndOfChannel) once closed."""

    def close(self) -> None: ...


class TrioUdp:
    """UDP on the slot's address and port (the same number as the slot's TCP port).

    `await bind()` before use; binding fails (FsError EADDRINUSE) if another mount already
    holds the slot on this host, which is the point: two members must never share a slot.
    """

    def __init__(self, slots: dict[int, QuorumSlot], my_slot: int):
        if my_slot not in slots:
            raise FsError(errno.EINVAL, f"quorum slot {my_slot} is not configured")
        self.slots = dict(slots)
        self.my_slot = my_slot
        self.sock: trio.socket.SocketType | None = None

    async def bind(self) -> None:
        me = self.slots[self.my_slot]
        sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            await sock.bind((me.addr, me.port))
        except OSError as e:
            sock.close()
            hint = ("; is another mount of this slot still running?"
                    if e.errno == errno.EADDRINUSE else "")
            raise FsError(e.errno or errno.EIO,
                          f"quorum slot {self.my_slot} address {me.addr}:{me.port}: "
                          f"{os.strerror(e.errno or errno.EIO)}{hint}") from None
        except BaseException:
            sock.close()
            raise
        self.sock = sock

    async def send(self, slot: int, data: bytes) -> None:
        sock = self.sock
        peer = self.slots.get(slot)
        if sock is None or peer is None or sock.fileno() < 0:
            await trio.lowlevel.checkpoint()
            return
        try:
            await sock.sendto(data, (peer.addr, peer.port))
        except OSError as e:
            # unreachable peers, full buffers: a lost datagram, the protocol retries
            log.debug("quorum send to slot %d failed: %s", slot, e)

    async def recv(self) -> bytes:
        return (await self.recv_from())[0]

    async def recv_from(self) -> tuple[bytes, str]:
        """The next datagram and its sender ("addr:port", for logging)."""
        while True:
            if self.sock is None:
                raise trio.ClosedResourceError("quorum socket not bound")
            try:
                # a bigger datagram is truncated, and then refused for its size
                data, addr = await self.sock.recvfrom(MSG_SIZE * 4)
            except OSError as e:
                if self.sock.fileno() < 0:
                    raise trio.ClosedResourceError("quorum socket closed") from e
                # an ICMP error reported on the socket: not a message, keep listening
                log.debug("quorum recv error: %s", e)
                continue
            return data, f"{addr[0]}:{addr[1]}"

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()


# --------------------------------------------------------------------------- the member


def _now_ts() -> tuple[int, int]:
    ns = time.time_ns()
    return ns // 1_000_000_000, ns % 1_000_000_000


class QuorumMember:
    """One mount's quorum member: runs elections and starts/stops this mount's server."""

    def __init__(self, *, meta_dev, fsid: int, slots: dict[int, QuorumSlot], slot: int,
                 rid: int, heartbeat_timeout_ms: int, transport: UdpTransport,
                 start_server: Callable[[int, list[FenceTarget]], Awaitable[None]],
                 stop_server: Callable[[], Awaitable[None]],
                 counters=None, rng: random.Random | None = None):
        if slot not in slots:
            raise FsError(errno.EINVAL, f"quorum slot {slot} is not configured")
        self.meta_dev = meta_dev
        self.fsid = fsid
        self.slots = dict(slots)
        self.slot = slot
        self.rid = rid
        self.heartbeat_timeout = heartbeat_timeout_ms / 1000
        self.transport = transport
        self._start_server = start_server
        self._stop_server = stop_server
        self.counters = counters
        self.rng = rng or random.Random()
        self.votes_needed = votes_needed(len(self.slots))

        # protocol state, owned by the main loop
        self.term = 0
        self.role = ROLE_FOLLOWER
        self.vote_for: int | None = None  # whom we voted for in `term`
        self.votes: set[int] = set()  # slots that voted for us (candidate) in `term`
        self.last_heartbeat_from: int | None = None
        self._timeout = 0.0  # trio time of the next timeout (stand / send a heartbeat)
        self._hb_wait = False  # the timeout is a wait for a leader's heartbeat
        self._no_vote_through = 0  # never vote in a term <= this (our starting term)
        self._candidacies_waited: set[tuple[int, int]] = set()  # (slot, term) we gave time
        self._silent_through = 0  # a leader of a term <= this went silent on us
        self._heard_at: dict[int, float] = {}  # slot -> trio time of its last valid datagram
        self._longest_hb_delay = 0.0

        # our server: its state and the term it is (being) started or stopped for
        self.server_state = SERVER_DOWN
        self.server_term = 0
        self._server_died = False  # server_stopped() while starting or up
        # consecutive failed starts of our server and the last error (the mount refuses
        # when the metadata it needs is corrupt: see Mount._locate)
        self.start_failures = 0
        self.last_start_error: BaseException | None = None
        self._server_lock = trio.Lock()
        self._start_scope: trio.CancelScope | None = None

        self._block: QuorumBlock | None = None  # our slot's block as last written
        self._inbox_send, self._inbox_recv = trio.open_memory_channel(INBOX_DEPTH)
        self._nursery: trio.Nursery | None = None
        self._run_scope: trio.CancelScope | None = None
        self._closing = False
        self._running = False
        self._finished = False
        self._run_done = trio.Event()
        self._bad_log = LogLimiter(log, rate=1.0, burst=10)  # dropped datagrams

    # ------------------------------------------------------------------ public view

    @property
    def is_leader(self) -> bool:
        """True while our server is up in the current term (sysfs quorum/is_leader)."""
        return (self._running and self.role == ROLE_LEADER and self.server_state == SERVER_UP
                and self.server_term == self.term)

    def set_heartbeat_timeout_ms(self, ms: int) -> None:
        """Runtime tunable (sysfs mount_options/quorum_heartbeat_timeout_ms); the caller
        has validated the range.  A follower's pending wait is shortened if it now ends
        later than the new timeout would."""
        self.heartbeat_timeout = ms / 1000
        if self._running and self.role == ROLE_FOLLOWER:
            try:
                now = trio.current_time()
            except RuntimeError:  # not in trio: applies from the next heartbeat
                return
            if self._hb_wait:
                self._timeout = min(self._timeout, now + self.heartbeat_timeout)
            self._wake()

    def status_text(self) -> str:
        """sysfs quorum/status: one "key: value" per line."""
        lines = [
            ("quorum_slot_nr", self.slot),
            ("rid", f"{self.rid:016x}"),
            ("term", self.term),
            ("role", self.role if self._running else "stopped"),
            ("vote_for", -1 if self.vote_for is None else self.vote_for),
            ("votes_needed", self.votes_needed),
            ("votes_received", len(self.votes) if self.role == ROLE_CANDIDATE else 0),
            ("last_heartbeat_from",
             -1 if self.last_heartbeat_from is None else self.last_heartbeat_from),
            ("heartbeat_timeout_ms", int(self.heartbeat_timeout * 1000)),
            ("server_state", self.server_state),
            ("server_term", self.server_term),
            ("is_leader", int(self.is_leader)),
        ]
        return "".join(f"{k}: {v}\n" for k, v in lines)

    def server_stopped(self) -> None:
        """Our server stopped by itself (error, fencing timeout): resign so that another
        member (or we, later) takes over.  Harmless when we are stopping it ourselves."""
        if self.server_state == SERVER_STARTING:
            self._server_died = True  # the start task sees it when start_server returns
        elif self.server_state == SERVER_UP:
            self.server_state = SERVER_STOPPING  # is_leader goes false at once
            self._server_died = True
            self._wake()

    # ------------------------------------------------------------------ lifecycle

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Read the blocks, record BEGIN (then started()), and take part in elections until
        cancelled, shutdown() or abandon().  Closes the transport when it ends.  Raises on
        quorum block I/O errors."""
        if self._running or self._finished:
            raise RuntimeError("a QuorumMember runs once")
        self._running = True
        try:
            with trio.CancelScope() as scope:
                self._run_scope = scope
                blocks = read_quorum_blocks(self.meta_dev, self.fsid, self.slots)
                self._block = blocks[self.slot]
                self.term = greatest_term(blocks)
                # votes are not on disk: a term we may have voted in before a restart is
                # at most the greatest term on disk (candidates record TERM first)
                self._no_vote_through = self.term
                await self._record(QUORUM_EVENT_BEGIN, self.term)
                live = [s for s, qb in blocks.items() if _live_leader(qb)]
                self._wait(heartbeat=bool(live))
                log.info("quorum slot %d starting at term %d%s", self.slot, self.term,
                         f", blocks show a leader in slot {live[0]}" if live else "")
                task_status.started()
                async with trio.open_nursery() as nursery:
                    self._nursery = nursery
                    nursery.start_soon(self._receive_loop)
                    await self._main_loop()
                    await self._shutdown_sequence()
                    nursery.cancel_scope.cancel()
        finally:
            self._running = False
            self._finished = True
            self._nursery = None
            self.transport.close()
            self._run_done.set()

    async def shutdown(self) -> None:
        """Clean unmount: if leader, stop_server(), write STOP and send RESIGNATION; write
        END; run() then returns.  A no-op if run() is not running."""
        if not self._running:
            return
        self._closing = True
        self._wake()
        await self._run_done.wait()

    async def abandon(self) -> None:
        """Forced unmount: stop at once and write nothing, as a crash would (the next
        leader fences us).  The server is the caller's to stop."""
        if self._run_scope is not None:
            self._run_scope.cancel()
        if self._running:
            await self._run_done.wait()

    # ------------------------------------------------------------------ main loop

    async def _main_loop(self) -> None:
        while not self._closing:
            if self._server_died and self.server_state == SERVER_STOPPING:
                self._server_gone()
            now = trio.current_time()
            if now >= self._timeout:
                await self._on_timeout(now)
                continue
            ev = None
            with trio.move_on_at(self._timeout):
                ev = await self._inbox_recv.receive()
            if ev is not None and ev[0] == "msg":
                await self._on_message(ev[1], ev[2])

    async def _receive_loop(self) -> None:
        recv_from = getattr(self.transport, "recv_from", None)
        while True:
            try:
                if recv_from is not None:
                    data, peer = await recv_from()
                else:
                    data, peer = await self.transport.recv(), "?"
            except (trio.ClosedResourceError, trio.EndOfChannel):
                return
            try:
                self._inbox_send.send_nowait(("msg", data, peer))
            except trio.WouldBlock:
                self._inc("quorum_recv_dropped")

    def _wake(self) -> None:
        try:
            self._inbox_send.send_nowait(("wake", None, None))
        except (trio.WouldBlock, trio.ClosedResourceError):
            pass  # the loop has messages to process and checks its flags after each

    async def _on_timeout(self, now: float) -> None:
        if self.role == ROLE_LEADER:
            delay = now - self._timeout
            if delay > self._longest_hb_delay:
                self._longest_hb_delay = delay
                if delay >= HEARTBEAT_DELAY_WARN_S:
                    log.warning("longest quorum heartbeat send delay of %d ms so far",
                                int(delay * 1000), extra=KMSG)
            self._timeout = now + HEARTBEAT_INTERVAL_S
            await self._send_others(MSG_HEARTBEAT)
            self._check_blocks_as_leader()
            return
        if self.server_state != SERVER_DOWN:
            # our server of an earlier term is still stopping: no standing until it is down
            self._wait(heartbeat=False)
            self._inc("quorum_candidate_server_stopping")
            return
        if self.role == ROLE_CANDIDATE:
            self._inc("quorum_candidate_timeout")  # no majority in time: a new term
        elif self._hb_wait:
            self._inc("quorum_heartbeat_timeout")
            self._silent_through = max(self._silent_through, self.term)
        # Standing in a term past another's live leader or candidacy deposes the winner of
        # that term, and our server fences it: a healthy mount, often one starting up or
        # the other follower of a leader that just died (both time out together).
        # One read of the blocks for every check and for the term we stand in: a candidacy
        # recorded between two reads would make us stand past it unseen.  (One recorded
        # after this read gets the same term as ours: a split vote, which deposes nobody.)
        try:
            blocks: dict[int, QuorumBlock] | None = read_quorum_blocks(
                self.meta_dev, self.fsid, self.slots)
        except FsError as e:
            log.error("quorum: reading the quorum blocks failed: %s", e)
            blocks = None
        if not self._hb_wait and blocks is not None and self._live_leader_in(blocks):
            # elected in our term or later while we waited the short election timeout
            # (its heartbeats are late, e.g. on a loaded host): wait for it as for any
            # live leader (spec §2.1).  After a heartbeat timeout, the leader on disk is
            # the one that went silent.
            self.role = ROLE_FOLLOWER
            self._wait(heartbeat=True)
            return
        if (self.role == ROLE_FOLLOWER and blocks is not None
                and self._new_candidacy_in(blocks)):
            # another slot recorded a TERM past ours and is not elected in it yet: it is
            # asking for votes now (its request has not reached us).  Each candidacy gets
            # one election timeout, so a candidate that died delays us only once.
            self._wait(heartbeat=False)
            self._inc("quorum_candidate_deferred")
            return
        await self._stand(greatest_term(blocks) if blocks is not None else 0)

    def _new_candidacy_in(self, blocks: dict[int, QuorumBlock]) -> bool:
        for slot, qb in blocks.items():
            term = qb.events[QUORUM_EVENT_TERM].term
            if (slot != self.slot and term > self.term
                    and qb.events[QUORUM_EVENT_ELECT].term < term
                    and (slot, term) not in self._candidacies_waited):
                self._candidacies_waited.add((slot, term))
                return True
        return False

    def _live_leader_in(self, blocks: dict[int, QuorumBlock]) -> bool:
        found = server_in_blocks(blocks, self.slots)
        return (found is not None and found.slot != self.slot and found.term >= self.term
                and found.term > self._silent_through)

    async def _stand(self, on_disk: int) -> None:
        """Become a candidate in a new term past every term we know of (`on_disk`: the
        greatest term in the blocks, as read for the decision to stand)."""
        self.term = max(self.term, on_disk) + 1
        self.role = ROLE_CANDIDATE
        self.vote_for = self.slot
        self.votes = {self.slot}
        self._inc("quorum_candidate")
        # on disk before anybody can vote in this term (see the module docstring)
        await self._record(QUORUM_EVENT_TERM, self.term)
        self._wait(heartbeat=False)
        await self._send_others(MSG_REQUEST_VOTE)
        if len(self.votes) >= self.votes_needed:
            await self._elected()

    async def _elected(self) -> None:
        term = self.term
        try:
            blocks = read_quorum_blocks(self.meta_dev, self.fsid, self.slots)
        except FsError as e:
            # we cannot tell whom to fence: do not lead
            log.error("quorum: reading the quorum blocks failed, not leading term %d: %s",
                      term, e)
            self.role = ROLE_FOLLOWER
            self._wait(heartbeat=True)
            return
        targets = []
        for t in fence_targets(blocks, self.slot, term):
            if t.rid == self.rid:
                # only if a STOP of ours never made it to disk: never fence ourselves
                log.warning("quorum: blocks show our own rid unstopped in term %d", t.term)
                continue
            targets.append(t)
        self.role = ROLE_LEADER
        self.last_heartbeat_from = None
        self._inc("quorum_elected")
        await self._record(QUORUM_EVENT_ELECT, term)
        log.info("quorum slot %d elected leader in term %d (%d to fence)", self.slot, term,
                 len(targets), extra=KMSG)
        self.server_state = SERVER_STARTING
        self.server_term = term
        self._server_died = False
        assert self._nursery is not None
        self._nursery.start_soon(self._server_start_task, term, targets)
        self._hb_wait = False
        self._timeout = trio.current_time() + HEARTBEAT_INTERVAL_S
        await self._send_others(MSG_HEARTBEAT)

    async def _on_message(self, data: bytes, peer: str = "?") -> None:
        msg = unpack_msg(data)
        why = check_msg(msg, self.fsid, self.slots, self.slot)
        if why is not None:
            self._inc("quorum_recv_invalid")
            self._bad_log.log(logging.WARNING, "quorum slot %d: dropping a datagram of %d "
                              "bytes from %s: %s", self.slot, len(data), peer, why)
            return
        assert msg is not None
        self._heard_at[msg.src] = trio.current_time()  # stale terms too: the sender lives
        if msg.term < self.term:
            self._inc("quorum_recv_stale")
            return
        if msg.term > self.term:
            if self.role == ROLE_LEADER:
                log.info("quorum slot %d: term %d %s from slot %d, leader of term %d "
                         "stepping down", self.slot, msg.term, MSG_NAMES[msg.type], msg.src,
                         self.term)
                self._inc("quorum_term_demoted")
                self._step_down()
            self.term = msg.term
            self.role = ROLE_FOLLOWER
            self.vote_for = None
            self.votes = set()
            self._wait(heartbeat=msg.type == MSG_HEARTBEAT)

        if msg.type == MSG_HEARTBEAT:
            if self.role == ROLE_LEADER:
                # another leader in our term: only possible with < 3 slots (one vote elects)
                self._inc("quorum_split_brain")
                if msg.src > self.slot:
                    return  # it steps down when it hears ours
                log.warning("quorum slot %d: slot %d also leads term %d, stepping down",
                            self.slot, msg.src, self.term, extra=KMSG)
                self._step_down()
            self.role = ROLE_FOLLOWER  # a candidate hearing the term's leader follows it
            self.last_heartbeat_from = msg.src
            self._wait(heartbeat=True)
        elif msg.type == MSG_RESIGNATION:
            if self.role == ROLE_FOLLOWER:
                # the leader left cleanly: elect the next one without waiting it out
                self._inc("quorum_recv_resignation")
                if self._hb_wait:
                    self._wait(heartbeat=False)
        elif msg.type == MSG_REQUEST_VOTE:
            if (self.role == ROLE_FOLLOWER and self.vote_for is None
                    and msg.term > self._no_vote_through):
                self.vote_for = msg.src
                self._wait(heartbeat=False)
                self._inc("quorum_vote")
                await self._send(msg.src, MSG_VOTE)
        elif msg.type == MSG_VOTE:
            if self.role == ROLE_CANDIDATE:
                self.votes.add(msg.src)
                if len(self.votes) >= self.votes_needed:
                    await self._elected()

    def _check_blocks_as_leader(self) -> None:
        """A leader that cannot hear the others (partitioned UDP) still sees their ELECTs
        on disk: a later ELECT means another leader won, so step down.  TERM events of
        candidates that cannot win are not enough (they would depose a working leader)."""
        try:
            blocks = read_quorum_blocks(self.meta_dev, self.fsid, self.slots)
        except FsError as e:
            log.error("quorum: reading the quorum blocks failed: %s", e)
            return
        for slot, qb in blocks.items():
            elect = qb.events[QUORUM_EVENT_ELECT].term
            if slot == self.slot:
                continue
            if elect > self.term or (elect == self.term and slot < self.slot):
                log.info("quorum slot %d: slot %d was elected in term %d, leader of term %d "
                         "stepping down", self.slot, slot, elect, self.term)
                self._inc("quorum_term_demoted")
                self._step_down()
                if elect > self.term:
                    self.term = elect
                    self.vote_for = None
                    self.votes = set()
                self._wait(heartbeat=True)
                return

    # ------------------------------------------------------------------ our server

    def _step_down(self) -> None:
        """Stop leading now; our server is stopped (and STOP written) by a task."""
        self.role = ROLE_FOLLOWER
        if self.server_state in (SERVER_STARTING, SERVER_UP):
            if self._start_scope is not None:
                self._start_scope.cancel()
            assert self._nursery is not None
            self._nursery.start_soon(self._server_stop_task, self.server_term, False)

    def _server_gone(self) -> None:
        """Our server died while up: resign (STOP, RESIGNATION) and let others stand first."""
        self._server_died = False
        log.warning("quorum slot %d: our server of term %d stopped, resigning", self.slot,
                    self.server_term, extra=KMSG)
        self._inc("quorum_server_died")
        resign = self.role == ROLE_LEADER and self.term == self.server_term
        self.role = ROLE_FOLLOWER
        self._wait(heartbeat=True)  # let the others stand first
        assert self._nursery is not None
        self._nursery.start_soon(self._server_stop_task, self.server_term, resign)

    async def _server_start_task(self, term: int, targets: list[FenceTarget]) -> None:
        async with self._server_lock:
            if (self.role != ROLE_LEADER or self.term != term or self._closing
                    or self.server_term != term or self.server_state != SERVER_STARTING):
                return  # demoted before we began: the stop task records STOP
            error: BaseException | None = None
            with trio.CancelScope() as scope:
                self._start_scope = scope
                try:
                    targets = await self._spare_stopped_leaders(term, targets)
                    await self._start_server(term, targets)
                except Exception as e:
                    error = e
            self._start_scope = None
            if scope.cancel_called:
                return  # demoted or shutting down: whoever cancelled stops the server
            if error is None and self._server_died:
                error = RuntimeError("the server stopped as it started")
            if error is not None:
                # one line: the harness counts traceback lines as unexpected errors
                log.error("quorum slot %d: starting the server for term %d failed: %r",
                          self.slot, term, error, extra=KMSG)
                log.debug("quorum server start failure", exc_info=error)
                self._inc("quorum_server_start_error")
                self.start_failures += 1
                self.last_start_error = error
                self._server_died = False
                await self._record(QUORUM_EVENT_STOP, term)
                self.server_state = SERVER_DOWN
                if self.role == ROLE_LEADER and self.term == term:
                    self.role = ROLE_FOLLOWER
                    # let the others stand first: a start that failed may fail again
                    self._wait(heartbeat=True)
                    await self._send_others(MSG_RESIGNATION, term)
                self._wake()
                return
            self.server_state = SERVER_UP
            self.start_failures = 0
            # the server is up and every earlier leader is fenced (spec §2.1)
            await self._record(QUORUM_EVENT_FENCE, term)
            log.info("quorum slot %d: server up in term %d", self.slot, term)
            self._wake()

    async def _spare_stopped_leaders(self, term: int, targets: list[FenceTarget]
                                     ) -> list[FenceTarget]:
        """The fence targets left once the earlier leaders we still hear have had up to
        DEPOSED_STOP_WAIT_S to record STOP.

        Two members standing at about the same time (mounts starting together on a loaded
        host) can elect one in term t and the other in t+1; the winner of t hears t+1 and
        steps down, but its STOP may reach the disk just after we read the blocks.  Fencing
        it then would fail a healthy mount.  A STOP recorded by the target's rid at or past
        its term means its server has stopped (STOP is written after stop_server()), so it
        needs no fence.  A leader we have not heard from within the heartbeat timeout (dead,
        or cut off) is fenced at once, as upstream does, so failover is not delayed."""
        deadline = trio.current_time() + DEPOSED_STOP_WAIT_S
        logged = False
        while True:
            now = trio.current_time()
            heard = [t for t in targets
                     if now - self._heard_at.get(t.slot, float("-inf")) < self.heartbeat_timeout]
            if not heard or now >= deadline:
                return targets
            if not logged:
                logged = True
                log.info("quorum slot %d: term %d: waiting up to %.1f s for %s to record "
                         "stopping before fencing", self.slot, term, DEPOSED_STOP_WAIT_S,
                         ", ".join(f"slot {t.slot} (leader of term {t.term})"
                                   for t in heard))
            await trio.sleep(DEPOSED_STOP_POLL_S)
            try:
                blocks = read_quorum_blocks(self.meta_dev, self.fsid, self.slots)
            except FsError:
                return targets
            left = []
            for t in targets:
                stop = blocks[t.slot].events[QUORUM_EVENT_STOP]
                if stop.rid == t.rid and stop.term >= t.term:
                    log.info("quorum slot %d: term %d: slot %d recorded stopping its "
                             "server of term %d, no fence needed", self.slot, term, t.slot,
                             t.term)
                    self._inc("quorum_deposed_leader_stopped")
                else:
                    left.append(t)
            targets = left

    async def _server_stop_task(self, term: int, resign: bool) -> None:
        """Stop our server of `term` (if it is still the one running) and record STOP.
        stop_server() is called even for a server that stopped by itself: the caller's
        clean-up is idempotent and this way there is one path."""
        async with self._server_lock:
            if self.server_term != term or self.server_state == SERVER_DOWN:
                return
            await self._stop_locked(term, resign)

    async def _stop_locked(self, term: int, resign: bool) -> None:
        self.server_state = SERVER_STOPPING
        try:
            await self._stop_server()
        except Exception as e:
            log.error("quorum slot %d: stopping the server of term %d failed: %r", self.slot,
                      term, e, extra=KMSG)
            log.debug("quorum server stop failure", exc_info=e)
        await self._record(QUORUM_EVENT_STOP, term)
        self.server_state = SERVER_DOWN
        if resign:
            await self._send_others(MSG_RESIGNATION, term)
            self._inc("quorum_send_resignation")
        self._wake()

    async def _shutdown_sequence(self) -> None:
        if self._start_scope is not None:
            self._start_scope.cancel()
        async with self._server_lock:  # a stop in progress finishes first
            if self.server_state != SERVER_DOWN:
                resign = self.role == ROLE_LEADER and self.term == self.server_term
                log.info("quorum slot %d: shutting down our server of term %d", self.slot,
                         self.server_term)
                await self._stop_locked(self.server_term, resign)
            self.role = ROLE_FOLLOWER
            await self._record(QUORUM_EVENT_END, self.term)

    # ------------------------------------------------------------------ helpers

    def _wait(self, *, heartbeat: bool) -> None:
        """Set the timeout at which we stand: the heartbeat timeout while a leader is
        (believed) alive, else the election timeout.  Both get the random part, so the
        followers of a leader that died do not all stand at the same instant and split the
        vote."""
        base = self.heartbeat_timeout if heartbeat else ELECTION_TIMEOUT_S
        self._timeout = trio.current_time() + base + self.rng.random() * ELECTION_RANDOM_S
        self._hb_wait = heartbeat

    async def _send(self, slot: int, type_: int, term: int | None = None) -> None:
        data = pack_msg(self.fsid, self.term if term is None else term, type_, self.slot)
        await self.transport.send(slot, data)

    async def _send_others(self, type_: int, term: int | None = None) -> None:
        for slot in self.slots:
            if slot != self.slot:
                await self._send(slot, type_, term)

    async def _record(self, event: int, term: int) -> None:
        """Record an event in our slot's block and make it durable."""
        qb = self._block
        assert qb is not None
        qb.write_nr += 1
        qb.events[event] = QuorumEvent(qb.write_nr, self.rid, term, _now_ts())
        write_quorum_block(self.meta_dev, self.slot, qb, self.fsid)
        if isinstance(self.meta_dev, Device):
            await trio.to_thread.run_sync(self.meta_dev.flush)
        else:
            # in-memory devices are shared with the trio thread's writers: not in a thread
            self.meta_dev.flush()
            await trio.lowlevel.checkpoint()

    def _inc(self, name: str) -> None:
        if self.counters is not None:
            self.counters.inc(name)
