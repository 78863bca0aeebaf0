"""Data waiters (spec §5.5): tasks whose read, write or truncate touched offline blocks.

An operation that finds offline blocks under its inode's cluster lock calls `must_wait`,
which registers a `Waiter` for (ino, iblock, op) *while the lock is still held* and raises
`MustWait`.  The exception leaves the operation's context managers, so the per-inode rwsem,
the cluster lock and any transaction hold are released; the operation's retry loop
(`retry`) then parks in `wait` and runs the whole operation again when woken.  Because
registration happens under the lock, no wakeup can be lost: whatever brings the blocks
online must take the inode's WRITE lock after us.

Wakeups (all synchronous: they set events, nothing awaits):
- `wake_ino` -- a stage or punch on this mount changed the inode's extents;
- `wake_range` -- the inode group's cluster lock was invalidated (another mount wants to
  write, e.g. to stage): called from the lock invalidation path, which must not do heavy
  work inline; a woken waiter re-requests its lock and so waits for that writer itself;
- `set_err` (DATA_WAIT_ERR) -- matching waiters fail with the given errno;
- the request's `InterruptToken` (fs.context) -- a FUSE INTERRUPT ends the wait with
  EINTR, leaving nothing registered.

A read failed by DATA_WAIT_ERR leaves its error for one more read of the same block: the
kernel's readahead READ is a background request, and when it fails the kernel reads the
page the reader wants again, synchronously, which would otherwise wait anew.  That error is
consumed by the next read of (ino, iblock) that would wait, and dropped when the inode's
blocks change on this mount (`wake_ino`).

Concurrency rule: the registry is only touched between awaits (atomic under trio); a waiter
holds no cluster lock, rwsem, transaction or trio lock while it is parked.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass, field

import trio

from fs.context import current_interrupt
from fs.errors import FsError

OP_READ, OP_WRITE, OP_CHANGE_SIZE = 1, 2, 4
OP_MASK = OP_READ | OP_WRITE | OP_CHANGE_SIZE
OP_NAMES = {OP_READ: "read", OP_WRITE: "write", OP_CHANGE_SIZE: "change_size"}


@dataclass(eq=False)
class Waiter:
    ino: int
    iblock: int
    op: int
    event: trio.Event = field(default_factory=trio.Event)
    err: int = 0


class MustWait(Exception):  # noqa: N818 - control flow, not an error
    """Raised inside an operation (under its locks) to leave them and wait."""

    def __init__(self, waiter: Waiter) -> None:
        super().__init__(waiter.ino, waiter.iblock, waiter.op)
        self.waiter = waiter


class DataWaiters:
    """This mount's waiters, by inode."""

    def __init__(self) -> None:
        self.by_ino: dict[int, list[Waiter]] = {}
        self.read_errs: dict[tuple[int, int], int] = {}  # (ino, iblock) -> errno, see above
        self.registered = trio.lowlevel.ParkingLot()  # DATA_WAITING callers that block

    def register(self, ino: int, iblock: int, op: int) -> Waiter:
        if op == OP_READ and self.read_errs:
            err = self.read_errs.pop((ino, iblock), 0)
            if err:
                raise FsError(err, f"data wait of inode {ino} failed")
        w = Waiter(ino, iblock, op)
        self.by_ino.setdefault(ino, []).append(w)
        self.registered.unpark_all()
        return w

    async def wait_registered(self, timeout: float) -> None:
        """Park until a waiter registers or timeout seconds pass (a blocking DATA_WAITING
        for agents, instead of polling)."""
        with trio.move_on_after(timeout):
            await self.registered.park()

    def unregister(self, w: Waiter) -> None:
        lst = self.by_ino.get(w.ino)
        if lst is None:
            return
        try:
            lst.remove(w)
        except ValueError:
            pass
        if not lst:
            del self.by_ino[w.ino]

    def wake_ino(self, ino: int) -> int:
        for k in [k for k in self.read_errs if k[0] == ino]:
            del self.read_errs[k]
        n = 0
        for w in self.by_ino.get(ino, ()):
            w.event.set()
            n += 1
        return n

    def wake_range(self, first_ino: int, last_ino: int) -> int:
        n = 0
        for ino in [i for i in self.by_ino if first_ino <= i <= last_ino]:
            n += self.wake_ino(ino)
        return n

    def waiting(self, after_ino: int, after_iblock: int, limit: int) -> list[tuple[int, int, int]]:
        """(ino, iblock, ops) strictly after the cursor, ascending, ops ORed per pair."""
        ops: dict[tuple[int, int], int] = {}
        for ino, lst in self.by_ino.items():
            for w in lst:
                if w.event.is_set():
                    continue
                k = (ino, w.iblock)
                if k > (after_ino, after_iblock):
                    ops[k] = ops.get(k, 0) | w.op
        return [(i, b, o) for (i, b), o in sorted(ops.items())[:limit]]

    def set_err(self, ino: int, first: int, last: int, op: int, err: int) -> int:
        """Fail the waiters of ino in iblocks [first, last] waiting for op; their count."""
        n = 0
        for w in self.by_ino.get(ino, ()):
            if first <= w.iblock <= last and w.op & op and not w.event.is_set():
                w.err = err
                w.event.set()
                n += 1
                if w.op == OP_READ and len(self.read_errs) < 4096:
                    self.read_errs[(ino, w.iblock)] = err
        return n


def waiters(mctx) -> DataWaiters:
    w = getattr(mctx, "waiters", None)
    if w is None:
        w = DataWaiters()
        mctx.waiters = w
    return w


def must_wait(mctx, ino: int, iblock: int, op: int):
    """Register a waiter (call it holding the inode's lock) and leave the operation."""
    raise MustWait(waiters(mctx).register(ino, iblock, op))


async def wait(mctx, w: Waiter) -> None:
    """Park until woken; EINTR if the request is interrupted, the waiter's errno if one
    was set.  The waiter is unregistered however this ends."""
    tok = current_interrupt.get()
    try:
        with trio.CancelScope() as scope:
            if tok is not None:
                tok.add(scope.cancel)
            try:
                await w.event.wait()
            finally:
                if tok is not None:
                    tok.remove(scope.cancel)
        if scope.cancelled_caught and not w.event.is_set():
            raise FsError(errno.EINTR, "interrupted while waiting for offline data")
    finally:
        waiters(mctx).unregister(w)
    if w.err:
        raise FsError(w.err, f"data wait of inode {w.ino} failed")


async def retry(mctx, fn, *args, **kw):
    """Run `await fn(*args, **kw)` until it completes without having to wait."""
    while True:
        try:
            return await fn(mctx, *args, **kw)
        except MustWait as mw:
            await wait(mctx, mw.waiter)
