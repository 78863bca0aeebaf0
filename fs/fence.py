"""Fencing: the server's requests that an agent cut a mount off the storage (spec §2.3).

Owns the fence requests of one server.  Before the server reclaims a mount that did not
leave cleanly (its log tree finalized, its locks dropped, its mounted_clients item
deleted), that mount must be unable to write: its socket may be down while its daemon still
runs.  So the server publishes a request (sysfs `fence/<rid>/` on the leader's mount: rid,
ipv4_addr, reason, elapsed_secs, fenced, error) and an agent (scoutfs-fenced, or a test)
answers it by writing `fenced` or `error`, which lands in `Fencing.answer`.

Reasons (scoutfs's strings): `client_reconnect` (socket down longer than the reconnect
timeout), `client_recovery` (not recovered within the recovery timeout of a new server),
`quorum_block_leader` (an earlier leader found in the quorum blocks at server start).

What the server does with the answers (fs/server.py): `fenced` -> reclaim the rid and drop
the request; `error`, or no answer within the fence timeout -> the server stops (another
election follows).

Concurrency: trio, single-threaded; every method is synchronous except `wait_change`.
Requests change only through `request`/`answer`/`remove`, each of which wakes waiters.
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import trio

from fs.errors import FsError
from fs.kmsg import KMSG_ERR

log = logging.getLogger(__name__)

REASON_CLIENT_RECONNECT = "client_reconnect"
REASON_CLIENT_RECOVERY = "client_recovery"
REASON_QUORUM_BLOCK_LEADER = "quorum_block_leader"
REASONS = (REASON_CLIENT_RECONNECT, REASON_CLIENT_RECOVERY, REASON_QUORUM_BLOCK_LEADER)

FENCE_TIMEOUT_S = 30.0  # spec §2.3: 30 s without an answer stops the server
START_FENCE_TIMEOUT_S = 15.0  # spec §2.1: a starting server waits this long for old leaders


def _now() -> float:
    return trio.current_time()


@dataclass(eq=False)
class FenceRequest:
    """One pending fence request, as sysfs fence/<rid>/ shows it."""

    rid: int
    ipv4_addr: str
    reason: str
    started: float  # trio.current_time() when requested
    fenced: bool = False
    error: bool = False
    clock: Callable[[], float] = field(default=_now, repr=False)

    def elapsed_secs(self) -> int:
        return max(0, int(self.clock() - self.started))

    @property
    def answered(self) -> bool:
        return self.fenced or self.error


class Fencing:
    """The pending fence requests of one server, keyed by rid."""

    def __init__(self, clock: Callable[[], float] = _now) -> None:
        self.requests: dict[int, FenceRequest] = {}
        self.clock = clock
        self._changed = trio.Event()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def request(self, rid: int, ipv4_addr: str, reason: str) -> FenceRequest:
        """Publish a request for rid (an existing one is kept as it is)."""
        req = self.requests.get(rid)
        if req is not None:
            return req
        req = FenceRequest(rid, ipv4_addr or "0.0.0.0", reason, self.clock(), clock=self.clock)
        self.requests[rid] = req
        log.warning("fencing rid %016x at %s: %s", rid, req.ipv4_addr, reason, extra=KMSG_ERR)
        self._notify()
        return req

    def answer(self, rid: int, *, fenced: bool = False, error: bool = False) -> None:
        """The agent's answer (sysfs writes of `fenced` or `error`)."""
        req = self.requests.get(rid)
        if req is None:
            raise FsError(errno.ENOENT, f"no fence request for rid {rid:016x}")
        if fenced:
            req.fenced = True
        if error:
            req.error = True
        log.info("fence of rid %016x answered: fenced=%d error=%d", rid, req.fenced,
                 req.error)
        self._notify()

    def remove(self, rid: int) -> None:
        if self.requests.pop(rid, None) is not None:
            self._notify()

    async def wait_change(self, timeout: float | None = None) -> None:
        """Until a request is added, answered or removed (or timeout seconds pass)."""
        ev = self._changed
        if timeout is None:
            await ev.wait()
            return
        with trio.move_on_after(timeout):
            await ev.wait()
