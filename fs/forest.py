"""Reading items from the forest: fs_root merged with every mount's log tree.

The server publishes stable roots (GET_ROOTS): the merged fs_root and the committed root of
each log tree.  A read of a key range walks each tree, and for every key the item with the
highest seq wins; a tombstone (DELETION) hides older versions.  Reads take no tree locks: a
block freed and reused under a stale root fails its ref check (StaleBlock) and the read is
retried with fresh roots; a block still wrong after fresh roots is an I/O error.

Concurrency: `read_range` awaits only to fetch roots; the tree walks themselves are
synchronous, so one read sees one consistent set of roots.
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from fs import format as fmt
from fs.btree import Btree
from fs.errors import FsError, StaleBlock
from fs.kmsg import KMSG

log = logging.getLogger(__name__)

STALE_RETRIES = 5


@dataclass
class Roots:
    fs_root: fmt.BtreeRoot
    log_roots: list[fmt.BtreeRoot]
    # per log root: the last key whose `.totl.` deltas a merge in flight already put in
    # fs_root, or None (fs/totl.py; newest-wins reads of other zones ignore it)
    log_merged: list[fmt.Key | None] = field(default_factory=list)


class Forest:
    """Stable-root reads for one mount.

    `get_roots()` returns the server's stable roots; `want_fresh()` tells whether they must be
    fetched again (a commit of ours, a new lock grant: anything that may have made the cached
    roots miss committed items we are now allowed to see).
    """

    def __init__(self, blocks, get_roots: Callable[[], Awaitable[Roots]]) -> None:
        self.blocks = blocks
        self._get_roots = get_roots
        self._roots: Roots | None = None
        self.gen = 0  # bump to make the next read fetch fresh roots

    def refresh(self) -> None:
        self._roots = None

    async def fresh_roots(self) -> Roots:
        """The server's stable roots as of now (also kept for the next reads)."""
        self._roots = await self._get_roots()
        return self._roots

    async def roots(self) -> Roots:
        if self._roots is None:
            self._roots = await self._get_roots()
        return self._roots

    async def read_range(self, key: fmt.Key, start: fmt.Key,
                         end: fmt.Key) -> tuple[fmt.Key, fmt.Key, dict[fmt.Key, bytes]]:
        """Read the items around `key` within [start, end].

        Returns (lo, hi, items): every live item with a key in [lo, hi], where lo <= key <= hi
        is the intersection of the leaf ranges of every tree (so the result is complete for
        that range) with [start, end].
        """
        for attempt in range(STALE_RETRIES):
            roots = await self.roots()
            try:
                return self._read(roots, key, start, end)
            except StaleBlock as e:
                log.debug("stale block reading %s (attempt %d): %s", key, attempt, e)
                self.refresh()
        log.error("read of %s kept finding stale blocks after fresh roots",
                  fmt.format_key(key), extra=KMSG)
        raise FsError(errno.EIO, "persistent stale blocks")

    def _read(self, roots: Roots, key: fmt.Key, start: fmt.Key,
              end: fmt.Key) -> tuple[fmt.Key, fmt.Key, dict[fmt.Key, bytes]]:
        trees = [Btree(self.blocks, r) for r in [roots.fs_root, *roots.log_roots]
                 if r.height > 0]
        lo, hi = start, end
        for t in trees:
            tlo, thi = t.leaf_range(key)
            lo = max(lo, tlo)
            hi = min(hi, thi)
        best: dict[fmt.Key, fmt.Item] = {}
        for t in trees:
            for k, item in t.items(lo, hi):
                cur = best.get(k)
                if cur is None or item.seq > cur.seq:
                    best[k] = item
        return lo, hi, {k: it.value for k, it in best.items() if not it.deleted}
