"""What the filesystem layer is given by its mount: the layers under it, options and clock.

`fs/super.py` builds one `MountContext` per mount; the filesystem modules (inode, dir, data,
xattr) receive it and never reach below it.  Unit tests build it with in-memory fakes.
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from fs.counters import Counters


def now_ts() -> tuple[int, int]:
    """The wall clock as (sec, nsec), the resolution inode times keep."""
    ns = time.time_ns()
    return ns // 1_000_000_000, ns % 1_000_000_000


@dataclass
class MountContext:
    items: Any  # fs.item.ItemCache (or a fake with the same methods)
    locks: Any  # fs.lock.LockClient
    trans: Any  # fs.trans.Trans: .seq, .hold(), .sync(), .data_alloc
    data_dev: Any  # fs.block.Device of the data device
    alloc_ino: Callable[[], Awaitable[int]]  # next unused inode number (server-granted ranges)
    statfs: Callable[[], Awaitable[dict[str, int]]]  # server's totals and free counts
    fmt_vers: int = 2
    fsid: int = 0
    rid: int = 0
    options: dict[str, Any] = field(default_factory=dict)
    counters: Counters = field(default_factory=Counters)
    now: Callable[[], tuple[int, int]] = now_ts
    # queue (never await) the kernel's cached pages of an inode to be dropped (release)
    drop_pages: Callable[[int], None] | None = None
    waiters: Any = None  # fs.datawait.DataWaiters, made on first use
    # the server's last stable seq (GET_LAST_SEQ, spec §5.6); None: the open transaction's
    # seq - 1 (a lone mount without a server, as in unit tests)
    last_seq: Callable[[], Awaitable[int]] | None = None
    triggers: Any = None  # fs.triggers.Triggers of the mount (None in unit tests)
    forest: Any = None  # fs.forest.Forest: lock-free stable-root reads (`.totl.` totals)
    totl: Any = None  # fs.totl.WeakCache, made on first use
    quota: Any = None  # fs.quota.CheckCache, made on first use
    # the open map of this mount (fs.omap.Omap) and OPEN_INO_MAP (group -> the other
    # mounts' map); None: a lone mount (unit tests), nothing is open elsewhere
    omap: Any = None
    open_ino_map: Callable[[int], Awaitable[int]] | None = None


class InterruptToken:
    """How a request adapter tells a long wait in the filesystem layer that its caller gave
    up (a FUSE INTERRUPT).  The adapter sets `current_interrupt` for the duration of a
    request and calls `fire()` (synchronous, never awaits) when the interrupt arrives; a
    waiter registers a callback with `add` (run at once when already fired).  Only
    interruptible waits use it: they end with EINTR and change nothing."""

    __slots__ = ("fired", "_cbs", "on_wait")

    def __init__(self) -> None:
        self.fired = False
        self._cbs: list[Callable[[], None]] = []
        # called (synchronously, once) when a wait first registers: the adapter may start
        # watching for the caller's exit then (a FUSE background request is never
        # interrupted by the kernel)
        self.on_wait: Callable[[], None] | None = None

    def add(self, cb: Callable[[], None]) -> None:
        if self.fired:
            cb()
            return
        self._cbs.append(cb)
        if self.on_wait is not None:
            on_wait, self.on_wait = self.on_wait, None
            on_wait()

    def remove(self, cb: Callable[[], None]) -> None:
        try:
            self._cbs.remove(cb)
        except ValueError:
            pass

    def fire(self) -> None:
        self.fired = True
        cbs, self._cbs = self._cbs, []
        for cb in cbs:
            cb()


current_interrupt: contextvars.ContextVar[InterruptToken | None] = contextvars.ContextVar(
    "current_interrupt", default=None)
