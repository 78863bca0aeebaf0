"""The orphan scanner (spec §4.6-§4.7): every mount deletes the orphans nobody else will.

An orphan item marks an inode whose last link went while it may still be open.  Normally the
last mount to release it deletes it (`Filesystem.evict` -> `try_delete`).  When that mount
died, or its release found the inode open elsewhere and the other mount's own release came
too early to see it unlinked, the orphan item stays; this scanner finds it.

Every `orphan_scan_delay_ms` (a mount option and sysfs file, read at each pass, ±20 %
jitter so mounts do not scan in step) a pass walks the orphan items of the **persistent
fs_root only** (GET_ROOTS; an orphan is seen once its log tree was merged, which after a
crash means: fenced, reclaimed, finalized and merged), skipping tombstones, and for each:

* an inode this mount deleted itself (its orphan item is gone from its log tree, not yet
  from fs_root) is skipped without a lock;
* an inode this mount has in its open map is skipped (`orphan_scan_cached`): our own release
  will try;
* the other mounts' open map of its group (OPEN_INO_MAP, one request per group and pass)
  with its bit set: skipped (`orphan_scan_omap_set`), that mount's release will try;
* otherwise `try_delete` (`orphan_scan_attempts`), which checks again under the group's
  WRITE lock (a stale fs_root orphan of an inode already deleted costs a lock and a lookup).

Counters: `orphan_scan` (a pass ended), `orphan_scan_item` (orphan items seen),
`orphan_scan_empty` (a pass that found no orphan item), `orphan_scan_error` (a pass or an
attempt failed; the next pass retries).

Concurrency: the scanner is one task in the mount's nursery; it holds no lock between
items and never runs in a lock invalidation or kernel notification path.  `try_delete`'s
"trying" bit keeps it and the deletion worker from deleting the same inode twice.
"""

from __future__ import annotations

import errno
import logging
import random
from collections.abc import Awaitable, Callable

import trio

from fs import format as fmt
from fs import omap as omap_mod
from fs.btree import Btree
from fs.errors import FsError, StaleBlock

log = logging.getLogger(__name__)

JITTER = 0.2  # spec §4.6: ±20 %
DEFAULT_DELAY_MS = 10000
STALE_RETRIES = 5
ORPHAN_FIRST: fmt.Key = fmt.orphan_key(0)
ORPHAN_LAST: fmt.Key = (fmt.ZONE_ORPHAN, 0, fmt.ORPHAN_TYPE, fmt.U64_MAX, fmt.U64_MAX, 255)


class OrphanScanner:
    """The scanner of one mount.  `fs_root()` returns the persistent fs_root (GET_ROOTS),
    `blocks` reads it; `fs` is the mount's Filesystem (its try_delete and open map)."""

    def __init__(self, fs, blocks, fs_root: Callable[[], Awaitable[fmt.BtreeRoot]],
                 options: dict, counters) -> None:
        self.fs = fs
        self.blocks = blocks
        self._fs_root = fs_root
        self.options = options
        self.counters = counters
        self._scope: trio.CancelScope | None = None
        self._kicked = trio.Event()

    def delay(self) -> float:
        """Seconds until the next pass: the option's value with ±20 % jitter."""
        ms = int(self.options.get("orphan_scan_delay_ms") or DEFAULT_DELAY_MS)
        return ms / 1000.0 * random.uniform(1 - JITTER, 1 + JITTER)

    async def run(self) -> None:
        """Scan forever (until `stop`); the mount starts it in its nursery."""
        with trio.CancelScope() as self._scope:
            while True:
                kicked = self._kicked
                with trio.move_on_after(self.delay()):
                    await kicked.wait()
                if kicked.is_set():
                    self._kicked = trio.Event()
                    continue  # the delay changed: wait the new one
                await self.scan()

    def delay_changed(self) -> None:
        """orphan_scan_delay_ms was written (sysfs): the wait restarts with the new value."""
        self._kicked.set()

    def stop(self) -> None:
        if self._scope is not None:
            self._scope.cancel()

    async def orphans(self) -> list[int]:
        """The inode numbers of the orphan items in the persistent fs_root, ascending."""
        for attempt in range(STALE_RETRIES):
            root = await self._fs_root()
            if root.height == 0:
                return []
            try:
                return [k[3] for k, it in Btree(self.blocks, root).items(ORPHAN_FIRST,
                                                                         ORPHAN_LAST)
                        if not it.deleted]
            except StaleBlock as e:  # the server freed and reused a block: fresh roots
                log.debug("stale block reading orphans (attempt %d): %s", attempt, e)
        raise FsError(errno.EIO, "persistent stale blocks reading the orphan items")

    async def scan(self) -> None:
        """One pass (see the module docstring); errors are counted, never raised."""
        c = self.counters
        try:
            inos = await self.orphans()
        except FsError as e:
            log.warning("orphan scan could not read the orphan items: %s", e)
            c.inc("orphan_scan_error")
            c.inc("orphan_scan")
            return
        if not inos:
            c.inc("orphan_scan_empty")
        mctx = self.fs.mctx
        group, remote = -1, 0
        for ino in inos:
            c.inc("orphan_scan_item")
            if ino in self.fs.deleted_recently:
                continue  # we deleted it; its orphan item leaves fs_root at the next merge
            if mctx.omap is not None and mctx.omap.test(ino):
                c.inc("orphan_scan_cached")
                continue
            try:
                if mctx.open_ino_map is not None and omap_mod.group_of(ino) != group:
                    group = omap_mod.group_of(ino)
                    remote = await mctx.open_ino_map(group)
                if remote >> omap_mod.bit_of(ino) & 1:
                    c.inc("orphan_scan_omap_set")
                    continue
                c.inc("orphan_scan_attempts")
                await self.fs.try_delete(ino)
            except FsError as e:
                log.warning("orphan scan: deleting inode %d failed: %s", ino, e)
                c.inc("orphan_scan_error")
                group = -1
        c.inc("orphan_scan")
