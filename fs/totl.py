"""`.totl.` xattr totals: delta items, how trees combine them, and the weak read cache.

An xattr named ``scoutfs.totl.NAME.A.B.C`` with a u64 value V contributes (V, 1) to the total
of (A, B, C) (spec §5.10).  Every set, replace and remove of such an xattr, and the deletion
of a file holding one, writes a *delta* item ``fmt.totl_key(A, B, C)`` = {±value, ±1} in the
same transaction as the xattr items themselves (`xattr_changed`, `xattr_deleted`), under a
WRITE_ONLY lock over the whole XATTR_TOTL zone (`totl_lock`; WRITE_ONLY is compatible across
mounts, so writers never contend and nothing ever takes READ: totals are read without
cluster locks, from stable roots).

The counting rule (each committed delta is counted exactly once):

* a mount's open transaction keeps one dirty delta per key, the sum of its changes
  (`ItemCache.add_delta`); its commit *adds* it to the item its log tree already holds
  (`combine_in_tree`), so a log tree's item is the sum of every delta that tree received;
* the server's merge adds each finalized tree's item into fs_root's (`merge_into`), so
  fs_root's item is the sum of every merged delta; a sum of zero is deleted;
* while a merge is partly committed (it commits every MERGE_COMMIT_ITEMS items and awaits
  between chunks, and other requests commit meanwhile) fs_root holds the sums of the keys
  merged so far *and* the finalized trees still hold their items.  The server keeps a merge
  status item in logs_root: the trees being merged and the last key whose items are already
  in fs_root.  It is updated before every await of the merge, so every server commit (the
  merge's own or anyone's) writes fs_root and the status that describes it together, and it
  is deleted in the commit that deletes the merged trees' records.  GET_ROOTS hands each
  tree's "merged up to" key with the roots;
* a read (`sum_trees`) therefore takes fs_root's item plus every log tree's item, except the
  items of a tree under merge with keys up to its merged key: those are in fs_root already.
  Item seqs play no part (a delta is never "newer" than another; all of them count).  A
  server that restarts resumes a merge from its status (`fs/server.py`), never merging a
  delta twice.

Reads (READ_XATTR_TOTALS, quota checks) show committed totals only: they sum the items of
stable roots fetched fresh from the server, and keep the result for WEAK_CACHE_S (upstream's
weak item cache); `drop_weak_cache` (debugfs ``drop_weak_item_cache``) forgets it.

Concurrency: `sum_trees` and `combine_in_tree` / `merge_into` are synchronous; a read awaits
only to fetch roots, so one read sees one consistent set of roots and merge status.
"""

from __future__ import annotations

import errno
import logging
import time
from collections.abc import Iterable
from contextlib import asynccontextmanager
from typing import Any

from fs import format as fmt
from fs.btree import Btree
from fs.errors import FsError, StaleBlock
from fs.xattr_names import parse_tags, parse_totl_name, parse_u64

log = logging.getLogger(__name__)

LOCK_WRITE_ONLY = 3  # fs.lock mode
WEAK_CACHE_S = 5.0  # upstream's weak item cache lifetime
STALE_RETRIES = 5
TOTL_ZONE_KEY = (fmt.ZONE_XATTR_TOTL, 0, 0, 0, 0, 0)
TOTL_FIRST: fmt.Key = (fmt.ZONE_XATTR_TOTL, 0, 0, 0, 0, 0)
TOTL_LAST: fmt.Key = (fmt.ZONE_XATTR_TOTL, fmt.U64_MAX, 255, fmt.U64_MAX, fmt.U64_MAX, 255)
U64 = fmt.U64_MAX


# --------------------------------------------------------------------------- writing deltas


@asynccontextmanager
async def totl_lock(mctx, needed: bool = True):
    """The WRITE_ONLY lock over the XATTR_TOTL zone (None when not `needed`); taken after
    the orphan lock and before the indx lock and the transaction hold."""
    if not needed:
        yield None
        return
    async with mctx.locks.zone(TOTL_ZONE_KEY, LOCK_WRITE_ONLY) as lock:
        yield lock


def is_totl_name(name: bytes) -> bool:
    if not name.startswith(b"scoutfs."):
        return False
    try:
        return parse_tags(name).totl
    except FsError:
        return False


def _value(v: bytes | None) -> int | None:
    if v is None:
        return None
    try:
        return parse_u64(bytes(v))
    except FsError:
        return 0  # only checked values are stored: count it, as a 0


def xattr_changed(mctx, name: bytes, old: bytes | None, new: bytes | None, lock,
                  primary=None) -> None:
    """The delta of one `.totl.` xattr going from `old` to `new` (None: absent), written as
    a dirty delta item (synchronous; inside the caller's hold and totl_lock)."""
    a, b, c = parse_totl_name(name)
    ov, nv = _value(old), _value(new)
    total = (nv or 0) - (ov or 0)
    count = (new is not None) - (old is not None)
    if total == 0 and count == 0:
        return
    mctx.items.add_delta(fmt.totl_key(a, b, c), total, count, lock, primary)


def xattr_deleted(mctx, name: bytes, value: bytes, lock, primary=None) -> None:
    """The xattr of a deleted file goes: its delta {-value, -1}."""
    xattr_changed(mctx, name, value, None, lock, primary)


# --------------------------------------------------------------------------- combining


def _add(a: bytes | memoryview, b: bytes | memoryview) -> tuple[int, int]:
    t1, c1 = fmt.unpack_totl(a)
    t2, c2 = fmt.unpack_totl(b)
    return (t1 + t2) & U64, (c1 + c2) & U64


def combine_in_tree(tree: Btree, key: fmt.Key, item: fmt.Item) -> fmt.Item | None:
    """The item a commit stores for the dirty delta `item`: the sum with what the log tree
    holds.  None when nothing is to be inserted (the sum is zero: any old item is deleted)."""
    old = tree.lookup(key)
    if old is None or old.deleted:
        if fmt.unpack_totl(item.value) == (0, 0):
            return None
        return item
    t, c = _add(old.value, item.value)
    if t == 0 and c == 0:
        tree.delete(key)
        return None
    return fmt.Item(max(old.seq, item.seq), 0, fmt.pack_totl(t, c))


def merge_into(fs_root: Btree, key: fmt.Key, item: fmt.Item) -> None:
    """Add a finalized tree's delta to fs_root's sum (the server's merge)."""
    if item.deleted:
        return
    cur = fs_root.lookup(key)
    if cur is None or cur.deleted:
        if fmt.unpack_totl(item.value) != (0, 0):
            fs_root.insert(key, fmt.Item(item.seq, 0, bytes(item.value)))
        return
    t, c = _add(cur.value, item.value)
    if t == 0 and c == 0:
        fs_root.delete(key)
    else:
        fs_root.insert(key, fmt.Item(max(cur.seq, item.seq), 0, fmt.pack_totl(t, c)))


def sum_trees(fs_items: Iterable[tuple[fmt.Key, fmt.Item]],
              logs: Iterable[tuple[Iterable[tuple[fmt.Key, fmt.Item]], fmt.Key | None]]
              ) -> dict[tuple[int, int, int], tuple[int, int]]:
    """Totals by (a, b, c) from fs_root's totl items and each log tree's (items, merged up
    to key or None): a tree's items at or below its merged key are in fs_root already.
    Zero sums are left out."""
    acc: dict[fmt.Key, list[int]] = {}

    def add(k: fmt.Key, it: fmt.Item) -> None:
        if it.deleted or k[0] != fmt.ZONE_XATTR_TOTL:
            return
        t, c = fmt.unpack_totl(it.value)
        cur = acc.get(k)
        if cur is None:
            acc[k] = [t, c]
        else:
            cur[0] = (cur[0] + t) & U64
            cur[1] = (cur[1] + c) & U64

    for k, it in fs_items:
        add(k, it)
    for items, upto in logs:
        for k, it in items:
            if upto is not None and k <= upto:
                continue
            add(k, it)
    return {(k[1], k[3], k[4]): (t, c) for k, (t, c) in sorted(acc.items())
            if t or c}


def sum_roots(blocks, fs_root: fmt.BtreeRoot,
              logs: Iterable[tuple[fmt.BtreeRoot, fmt.Key | None]]
              ) -> dict[tuple[int, int, int], tuple[int, int]]:
    """`sum_trees` over btree roots (StaleBlock propagates: read again with fresh roots)."""
    def items(root: fmt.BtreeRoot):
        if root.height == 0:
            return iter(())
        return Btree(blocks, root).items(TOTL_FIRST, TOTL_LAST)
    return sum_trees(items(fs_root), [(items(r), upto) for r, upto in logs])


# --------------------------------------------------------------------------- reading


class WeakCache:
    """The committed totals as last read, for WEAK_CACHE_S (upstream's weak item cache)."""

    def __init__(self, clock=time.monotonic) -> None:
        self.clock = clock
        self.totals: dict[tuple[int, int, int], tuple[int, int]] | None = None
        self.read_at = 0.0

    def get(self) -> dict[tuple[int, int, int], tuple[int, int]] | None:
        if self.totals is not None and self.clock() - self.read_at < WEAK_CACHE_S:
            return self.totals
        return None

    def put(self, totals: dict[tuple[int, int, int], tuple[int, int]]) -> None:
        self.totals = totals
        self.read_at = self.clock()

    def drop(self) -> None:
        self.totals = None


def weak_cache(mctx) -> WeakCache:
    c = getattr(mctx, "totl", None)
    if c is None:
        c = WeakCache()
        mctx.totl = c
    return c


def drop_weak_cache(mctx) -> None:
    """debugfs drop_weak_item_cache."""
    weak_cache(mctx).drop()


async def read_totals(mctx) -> dict[tuple[int, int, int], tuple[int, int]]:
    """Every non-zero committed total (through the weak cache)."""
    cache = weak_cache(mctx)
    got = cache.get()
    if got is not None:
        return got
    forest: Any = mctx.forest
    for attempt in range(STALE_RETRIES):
        roots = await forest.fresh_roots()
        merged = roots.log_merged or [None] * len(roots.log_roots)
        try:
            totals = sum_roots(forest.blocks, roots.fs_root,
                               list(zip(roots.log_roots, merged, strict=True)))
        except StaleBlock as e:
            log.debug("stale block reading totals (attempt %d): %s", attempt, e)
            continue
        cache.put(totals)
        return totals
    raise FsError(errno.EIO, "persistent stale blocks reading totals")


async def read_total(mctx, abc: tuple[int, int, int]) -> tuple[int, int]:
    """One committed (total, count), (0, 0) when there is none."""
    return (await read_totals(mctx)).get(abc, (0, 0))
