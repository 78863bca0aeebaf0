"""The item cache of one mount: cached ranges of items, dirty items, and their lock coverage.

Reads are answered from the cache when the key lies in a *cached range* (a key range whose
complete contents were read from the forest, so a missing key there means no item).  A miss
reads the leaf-sized range around the key from the forest and caches it.  Writes are
synchronous: they put a dirty item (or a dirty tombstone) in the cache under a WRITE or
WRITE_ONLY lock covering the key, inside a transaction hold; the commit writes the dirty
items into this mount's log tree.

Concurrency rules (trio: code between two awaits is atomic):
- A forest read awaits; results are merged afterwards and never overwrite an entry already
  in the cache (dirty, clean or tombstone): anything in the cache is at least as new as what
  the read found, because the lock we hold keeps other mounts out of the range.
- Invalidation (`invalidate_range`) only runs once the lock's users drained and the
  transaction committed, so it never drops dirty items.
- Eviction drops whole cached ranges with their clean items; dirty items always stay.
"""

from __future__ import annotations

import errno
from collections.abc import AsyncIterator
from dataclasses import dataclass

from sortedcontainers import SortedDict

from fs import format as fmt
from fs.errors import FsError

KEY_FIELD_MAX = (255, fmt.U64_MAX, 255, fmt.U64_MAX, fmt.U64_MAX, 255)
# invalidate_range rebuilds the cache instead of deleting item by item past this many items
# (and a quarter of the cache)
INVALIDATE_REBUILD_MIN = 1024


def key_inc(key: fmt.Key) -> fmt.Key | None:
    """The smallest key greater than `key`, or None past KEY_MAX."""
    k = list(key)
    for i in range(5, -1, -1):
        if k[i] < KEY_FIELD_MAX[i]:
            k[i] += 1
            return tuple(k)  # type: ignore[return-value]
        k[i] = 0
    return None


def key_dec(key: fmt.Key) -> fmt.Key | None:
    """The largest key smaller than `key`, or None before KEY_MIN."""
    k = list(key)
    for i in range(5, -1, -1):
        if k[i] > 0:
            k[i] -= 1
            return tuple(k)  # type: ignore[return-value]
        k[i] = KEY_FIELD_MAX[i]
    return None


@dataclass(slots=True)
class CachedItem:
    seq: int
    deleted: bool
    value: bytes
    dirty: bool


class ItemCache:
    def __init__(self, forest, trans_seq, max_items: int = 200_000) -> None:
        self.forest = forest
        self._trans_seq = trans_seq  # callable: the open transaction's seq
        self.cache: SortedDict = SortedDict()  # key -> CachedItem
        self.ranges: SortedDict = SortedDict()  # start -> end of cached ranges (disjoint)
        self.dirty: set[fmt.Key] = set()
        self.dirty_bytes = 0
        self.max_items = max_items

    # ------------------------------------------------------------- cached ranges

    def _range_of(self, key: fmt.Key) -> tuple[fmt.Key, fmt.Key] | None:
        i = self.ranges.bisect_right(key) - 1
        if i >= 0:
            start = self.ranges.keys()[i]
            end = self.ranges[start]
            if key <= end:
                return start, end
        return None

    def _add_range(self, lo: fmt.Key, hi: fmt.Key) -> None:
        # merge with every overlapping or adjacent range
        i = self.ranges.bisect_right(lo) - 1
        if i >= 0:
            s = self.ranges.keys()[i]
            e = self.ranges[s]
            after = key_inc(e)
            if after is None or after >= lo:
                lo = min(lo, s)
                hi = max(hi, e)
                del self.ranges[s]
        for s in list(self.ranges.irange(lo, key_inc(hi) or fmt.KEY_MAX)):
            hi = max(hi, self.ranges.pop(s))
        self.ranges[lo] = hi

    async def _ensure(self, key: fmt.Key, lock) -> tuple[fmt.Key, fmt.Key]:
        rng = self._range_of(key)
        if rng is not None:
            return rng
        if len(self.cache) > self.max_items:
            self.evict()
        lo, hi, found = await self.forest.read_range(key, lock.start, lock.end)
        cache = self.cache
        for k, v in found.items():
            if k not in cache:
                cache[k] = CachedItem(0, False, v, False)
        self._add_range(lo, hi)
        rng = self._range_of(key)
        assert rng is not None
        return rng

    # ------------------------------------------------------------- reads

    def _check(self, key: fmt.Key, lock) -> None:
        if not lock.start <= key <= lock.end:
            raise AssertionError(f"{fmt.format_key(key)} outside {lock}")

    async def lookup(self, key: fmt.Key, lock) -> bytes | None:
        self._check(key, lock)
        it = self.cache.get(key)
        if it is None or not (it.dirty or self._range_of(key)):
            await self._ensure(key, lock)
            it = self.cache.get(key)
        if it is None or it.deleted:
            return None
        return it.value

    async def next(self, key: fmt.Key, last: fmt.Key, lock) -> tuple[fmt.Key, bytes] | None:
        """The first live item with a key in [key, last]."""
        last = min(last, lock.end)
        k: fmt.Key | None = max(key, lock.start)
        while k is not None and k <= last:
            _, end = await self._ensure(k, lock)
            stop = min(end, last)
            for ik in self.cache.irange(k, stop):
                it = self.cache[ik]
                if not it.deleted:
                    return ik, it.value
            k = key_inc(stop)
        return None

    async def prev(self, key: fmt.Key, first: fmt.Key, lock) -> tuple[fmt.Key, bytes] | None:
        """The last live item with a key in [first, key]."""
        first = max(first, lock.start)
        k: fmt.Key | None = min(key, lock.end)
        while k is not None and k >= first:
            start, _ = await self._ensure(k, lock)
            lo = max(start, first)
            for ik in self.cache.irange(lo, k, reverse=True):
                it = self.cache[ik]
                if not it.deleted:
                    return ik, it.value
            k = key_dec(lo)
        return None

    async def next_batch(self, key: fmt.Key, last: fmt.Key, lock, limit: int, *,
                         fill: bool = True) -> list[tuple[fmt.Key, bytes]]:
        """Up to `limit` live items with keys in [key, last], ascending: `next` for many
        items at once (whole cached ranges are scanned per forest read, not one key per
        call; the seq index walk reads 100,000 items this way).

        ``fill=False`` caches what it reads only while the cache is less than half full,
        and past that reads what is not cached straight from the forest without caching it
        (a scan of a range larger than the cache would only evict everything else, over
        and over; a smaller one is served from the cache the next time).  What the cache
        holds outside its cached ranges is dirty, so newer than the forest: it wins over
        what was read, tombstones included."""
        out: list[tuple[fmt.Key, bytes]] = []
        last = min(last, lock.end)
        k: fmt.Key | None = max(key, lock.start)
        while k is not None and k <= last and len(out) < limit:
            if (not fill and len(self.cache) >= self.max_items // 2
                    and self._range_of(k) is None):
                _lo, hi, found = await self.forest.read_range(k, lock.start, lock.end)
                stop = min(hi, last)
                merged = {ik: v for ik, v in found.items() if k <= ik <= stop}
                cache = self.cache
                for ik in cache.irange(k, stop):  # dirty items (none under a READ lock)
                    it = cache[ik]
                    if it.deleted:
                        merged.pop(ik, None)
                    else:
                        merged[ik] = it.value
                for ik in sorted(merged):
                    out.append((ik, merged[ik]))
                    if len(out) >= limit:
                        return out
                k = key_inc(stop)
                continue
            _, end = await self._ensure(k, lock)
            stop = min(end, last)
            cache = self.cache  # (after the await: eviction replaces it)
            for ik in cache.irange(k, stop):
                it = cache[ik]
                if not it.deleted:
                    out.append((ik, it.value))
                    if len(out) >= limit:
                        return out
            k = key_inc(stop)
        return out

    async def items_iter(self, start: fmt.Key, end: fmt.Key,
                         lock) -> AsyncIterator[tuple[fmt.Key, bytes]]:
        k: fmt.Key | None = start
        while k is not None:
            found = await self.next(k, end, lock)
            if found is None:
                return
            yield found
            k = key_inc(found[0])

    def items(self, start: fmt.Key, end: fmt.Key, lock) -> AsyncIterator[tuple[fmt.Key, bytes]]:
        """Every live item in [start, end], ascending (an async iterator)."""
        return self.items_iter(start, end, lock)

    # ------------------------------------------------------------- writes

    def _write(self, key: fmt.Key, value: bytes, deleted: bool, lock, primary=None) -> None:
        self._check(key, lock)
        if lock.mode not in (2, 3):  # WRITE, WRITE_ONLY
            raise AssertionError(f"write of {fmt.format_key(key)} under {lock}")
        # Versions of one key written by different mounts are ordered by seq (newest wins
        # in reads and merges).  Under a WRITE lock the grant order does it: our write_seq
        # is newer than any other mount's.  WRITE_ONLY locks are held by several mounts at
        # once, so an item owned by an inode (its seq index and orphan items) takes the
        # write_seq of the inode's WRITE lock too: a mount deleting the index item another
        # mount wrote holds the inode lock granted after that mount's (scoutfs's "primary"
        # lock of item_create_force/item_delete_force).
        seq = max(self._trans_seq(), lock.write_seq,
                  primary.write_seq if primary is not None else 0)
        old = self.cache.get(key)
        if old is not None and old.dirty:
            self.dirty_bytes -= len(old.value)
        self.cache[key] = CachedItem(seq, deleted, bytes(value), True)
        self.dirty.add(key)
        self.dirty_bytes += len(value) + fmt.BTREE_ENTRY_OVERHEAD
        lock.dirty_trans_seq = self._trans_seq()

    def update(self, key: fmt.Key, value: bytes, lock, primary=None) -> None:
        """Create or replace the item at key (`primary`: see `_write`)."""
        if len(value) > fmt.MAX_VAL_SIZE:
            raise FsError(errno.EINVAL, "item value too large")
        self._write(key, value, False, lock, primary)

    def delete(self, key: fmt.Key, lock, primary=None) -> None:
        """Delete the item at key (a tombstone hides older versions on disk)."""
        self._write(key, b"", True, lock, primary)

    def add_delta(self, key: fmt.Key, total: int, count: int, lock, primary=None) -> None:
        """Add {total, count} to this transaction's delta item at key (a `.totl.` item:
        fs/totl.py).  Deltas are only ever written, never read through the cache: the
        dirty item sums this transaction's deltas, a clean one (already committed) is not
        part of it and is replaced."""
        old = self.cache.get(key)
        if old is not None and old.dirty and not old.deleted:
            t, c = fmt.unpack_totl(old.value)
            total, count = t + total, c + count
        self._write(key, fmt.pack_totl(total, count), False, lock, primary)

    # ------------------------------------------------------------- commit support

    def dirty_items(self) -> list[tuple[fmt.Key, fmt.Item]]:
        out = []
        for k in sorted(self.dirty):
            it = self.cache[k]
            flags = fmt.ITEM_FLAG_DELETION if it.deleted else 0
            out.append((k, fmt.Item(it.seq, flags, it.value)))
        return out

    def mark_clean(self) -> None:
        for k in self.dirty:
            it = self.cache.get(k)
            if it is not None:
                it.dirty = False
        self.dirty.clear()
        self.dirty_bytes = 0
        if len(self.cache) > self.max_items:
            self.evict()

    # ------------------------------------------------------------- invalidation, eviction

    def invalidate_range(self, start: fmt.Key, end: fmt.Key) -> None:
        """Drop every cached item and range in [start, end] (the lock is being dropped).

        A range holding a large part of the cache (a mount that wrote 100,000 inodes and
        then walks the seq index drops 200,000 index items when its WRITE_ONLY lock goes
        to NULL) is dropped by rebuilding the cache from the items outside it, linear in
        the cache, rather than by one sorted-dict deletion per item."""
        cache = self.cache
        lo, hi = cache.bisect_left(start), cache.bisect_right(end)
        inside = cache.keys()[lo:hi]
        for k in inside:
            if k in self.dirty:
                raise AssertionError(f"invalidating dirty item {fmt.format_key(k)}")
        if len(inside) > INVALIDATE_REBUILD_MIN and len(inside) * 4 >= len(cache):
            keys = cache.keys()
            self.cache = SortedDict([(k, cache[k]) for k in keys[:lo]]
                                    + [(k, cache[k]) for k in keys[hi:]])
        else:
            for k in inside:
                del cache[k]
        for s in list(self.ranges.keys()):
            e = self.ranges[s]
            if e < start or s > end:
                continue
            del self.ranges[s]
            before = key_dec(start)
            if s < start and before is not None:
                self.ranges[s] = before
            after = key_inc(end)
            if e > end and after is not None:
                self.ranges[after] = e

    def evict(self) -> None:
        """Forget every clean item and cached range; dirty items stay (a crude bound)."""
        self.ranges.clear()
        keep = SortedDict()
        for k in self.dirty:
            keep[k] = self.cache[k]
        self.cache = keep

    @property
    def nr_dirty(self) -> int:
        return len(self.dirty)
