"""What the filesystem layer is given by its mount: the layers under it, options and clock.

`fs/super.py` builds one `MountContext` per mount; the filesystem modules (inode, dir, data,
xattr) receive it and never reach below it.  Unit tests build it with in-memory fakes.
"""

from __future__ import annotations

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
    # the server's last stable seq (GET_LAST_SEQ, spec §5.6); None: the open transaction's
    # seq - 1 (a lone mount without a server, as in unit tests)
    last_seq: Callable[[], Awaitable[int]] | None = None
