"""Item cache: cached ranges, dirty items, tombstones, invalidation, against a dict model."""

from __future__ import annotations

import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from fs import format as fmt
from fs.item import ItemCache, key_dec, key_inc
from fs.lock import LOCK_READ, LOCK_WRITE, LOCK_WRITE_ONLY, Lock, zone_range


class FakeForest:
    """Committed items in a dict; leaf ranges of a fixed number of keys around the key."""

    def __init__(self, items: dict, leaf: int = 4) -> None:
        self.items = dict(items)
        self.leaf = leaf
        self.reads = 0

    async def read_range(self, key, start, end):
        self.reads += 1
        await trio.sleep(0)
        keys = sorted(self.items)
        # leaf boundaries: every `leaf` keys
        lo, hi = start, end
        below = [k for k in keys if k < key]
        above = [k for k in keys if k >= key]
        if len(below) >= self.leaf:
            lo = max(lo, key_inc(below[-self.leaf]))
        if len(above) > self.leaf:
            hi = min(hi, key_dec(above[self.leaf]))
        return lo, hi, {k: v for k, v in self.items.items() if lo <= k <= hi}


def k(ino: int, typ: int = fmt.FS_INODE, second: int = 0) -> fmt.Key:
    return (fmt.ZONE_FS, ino, typ, second, 0, 0)


def group_lock(mode: int) -> Lock:
    start, end = fmt.inode_group_range(1024)
    lock = Lock(start, end)
    lock.mode = mode
    return lock


def test_key_inc_dec_roundtrip():
    for key in [fmt.KEY_MIN, (16, 5, 4, 0, 0, 255), (16, 5, 255, fmt.U64_MAX, fmt.U64_MAX, 255)]:
        nxt = key_inc(key)
        assert nxt is not None and nxt > key
        assert key_dec(nxt) == key
    assert key_inc(fmt.KEY_MAX) is None
    assert key_dec(fmt.KEY_MIN) is None


def test_reads_cache_and_tombstones():
    committed = {k(1024 + i): b"v%d" % i for i in range(20)}
    forest = FakeForest(committed)
    cache = ItemCache(forest, lambda: 7)
    lock = group_lock(LOCK_WRITE)

    async def main():
        assert await cache.lookup(k(1030), lock) == b"v6"
        reads = forest.reads
        assert await cache.lookup(k(1031), lock) == b"v7"
        assert forest.reads == reads  # same leaf: served from the cache
        cache.delete(k(1031), lock)
        assert await cache.lookup(k(1031), lock) is None
        assert await cache.next(k(1031), k(2047), lock) == (k(1032), b"v8")
        cache.update(k(1031, second=1), b"new", lock)
        assert await cache.next(k(1031), k(2047), lock) == (k(1031, second=1), b"new")
        assert await cache.prev(k(1031, second=2), k(1024), lock) == (k(1031, second=1), b"new")
        dirty = cache.dirty_items()
        assert [key for key, _ in dirty] == [k(1031), k(1031, second=1)]
        assert dirty[0][1].deleted and dirty[0][1].seq == 7
        # a read finishing later never overwrites what is cached
        forest.items[k(1031, second=1)] = b"older"
        cache.mark_clean()
        cache.evict()
        assert await cache.lookup(k(1031, second=1), lock) == b"older"

    trio.run(main)


def test_items_of_an_inode_under_write_only_take_the_inode_locks_write_seq():
    # another mount's WRITE_ONLY grant (and its index item) may be newer than ours: our
    # deletion of that item must still win, by the inode WRITE lock granted after it
    cache = ItemCache(FakeForest({}), lambda: 5)
    index = Lock(*zone_range(fmt.ZONE_INODE_INDEX))
    index.mode, index.write_seq = LOCK_WRITE_ONLY, 10
    inode = group_lock(LOCK_WRITE)
    inode.write_seq = 40
    key = fmt.seq_index_key(fmt.INODE_INDEX_META_SEQ, 30, 1024)
    cache.delete(key, index)
    assert dict(cache.dirty_items())[key].seq == 10
    cache.delete(key, index, primary=inode)
    assert dict(cache.dirty_items())[key].seq == 40
    cache.update(key, b"", index, primary=inode)
    assert dict(cache.dirty_items())[key].seq == 40


def test_invalidate_drops_range():
    forest = FakeForest({k(1024 + i): b"x" for i in range(8)})
    cache = ItemCache(forest, lambda: 3)
    lock = group_lock(LOCK_READ)

    async def main():
        assert await cache.lookup(k(1025), lock) == b"x"
        forest.items[k(1025)] = b"changed elsewhere"
        cache.invalidate_range(lock.start, lock.end)
        assert not cache.ranges and not cache.cache
        assert await cache.lookup(k(1025), lock) == b"changed elsewhere"

    trio.run(main)


ops = st.lists(
    st.tuples(st.sampled_from(["update", "delete", "lookup", "next", "commit", "evict"]),
              st.integers(0, 40), st.binary(max_size=4)),
    max_size=60,
)


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(st.integers(0, 40), st.binary(max_size=4), max_size=25), ops)
def test_cache_matches_model(initial, operations):
    forest = FakeForest({k(1024 + i): v for i, v in initial.items()}, leaf=3)
    cache = ItemCache(forest, lambda: 5)
    model = {k(1024 + i): v for i, v in initial.items()}
    lock = group_lock(LOCK_WRITE)

    async def main():
        for op, i, val in operations:
            key = k(1024 + i)
            if op == "update":
                cache.update(key, val, lock)
                model[key] = val
            elif op == "delete":
                cache.delete(key, lock)
                model.pop(key, None)
            elif op == "lookup":
                assert await cache.lookup(key, lock) == model.get(key)
            elif op == "next":
                want = min((kk for kk in model if kk >= key), default=None)
                got = await cache.next(key, lock.end, lock)
                assert got == (None if want is None else (want, model[want]))
            elif op == "commit":
                for dk, item in cache.dirty_items():
                    if item.deleted:
                        forest.items.pop(dk, None)
                    else:
                        forest.items[dk] = item.value
                cache.mark_clean()
            elif op == "evict":
                cache.evict()
        got = [kv async for kv in cache.items(lock.start, lock.end, lock)]
        assert got == sorted(model.items())

    trio.run(main)


def test_invalidate_of_most_of_the_cache_rebuilds_it_and_keeps_the_rest():
    """A big range (past INVALIDATE_REBUILD_MIN items and a quarter of the cache) is dropped
    by rebuilding the cache from what lies outside it: the same result as deleting each."""
    from fs.item import INVALIDATE_REBUILD_MIN

    n = INVALIDATE_REBUILD_MIN * 2
    index = {fmt.seq_index_key(fmt.INODE_INDEX_META_SEQ, 5, 1024 + i): b"" for i in range(n)}
    inodes = {k(1024 + i): b"i" for i in range(100)}
    forest = FakeForest({**index, **inodes}, leaf=n + 200)
    cache = ItemCache(forest, lambda: 3)
    ilock = Lock(*zone_range(fmt.ZONE_INODE_INDEX))
    ilock.mode = LOCK_READ
    glock = group_lock(LOCK_WRITE)

    async def main():
        got = await cache.next_batch(ilock.start, ilock.end, ilock, n + 10)
        assert [key for key, _v in got] == sorted(index)
        assert await cache.lookup(k(1030), glock) == b"i"
        cache.update(k(1031), b"dirty", glock)
        before = len(cache.cache)
        cache.invalidate_range(ilock.start, ilock.end)
        assert len(cache.cache) == before - n
        assert not any(key[0] == fmt.ZONE_INODE_INDEX for key in cache.cache)
        assert cache.cache[k(1031)].dirty and k(1031) in cache.dirty
        assert await cache.lookup(k(1030), glock) == b"i"
        # a dirty item inside the range refuses, dropping nothing
        ilock.mode = LOCK_WRITE_ONLY
        await cache.next_batch(ilock.start, ilock.end, ilock, n + 10)
        cache.update(fmt.seq_index_key(fmt.INODE_INDEX_META_SEQ, 6, 1024), b"", ilock)
        size = len(cache.cache)
        try:
            cache.invalidate_range(ilock.start, ilock.end)
        except AssertionError:
            pass
        else:
            raise AssertionError("invalidated a dirty item")
        assert len(cache.cache) == size

    trio.run(main)


def test_next_batch_without_fill_reads_the_forest_and_leaves_the_cache_alone():
    """...once the cache is half full (max_items 8 here); before, it caches as fill=True."""
    forest = FakeForest({k(1024 + i): b"%d" % i for i in range(40)}, leaf=8)
    roomy = ItemCache(forest, lambda: 3)
    cache = ItemCache(forest, lambda: 3, max_items=8)
    lock = group_lock(LOCK_WRITE)

    async def main():
        # a cached range, a dirty item and a dirty tombstone outside any cached range
        assert await cache.lookup(k(1030), lock) == b"6"
        cache.update(k(1050), b"new", lock)
        cache.update(k(1100), b"created", lock)
        cache.delete(k(1060), lock)
        cached_ranges = dict(cache.ranges)
        nr_cached = len(cache.cache)
        got = await cache.next_batch(k(1024), k(2047), lock, 1000, fill=False)
        want = {k(1024 + i): b"%d" % i for i in range(40)}
        want[k(1050)] = b"new"
        want[k(1100)] = b"created"
        del want[k(1060)]
        assert got == sorted(want.items())
        assert dict(cache.ranges) == cached_ranges and len(cache.cache) == nr_cached
        # limits and starting points as next_batch with fill
        for start, limit in ((k(1024), 5), (k(1031), 7), (k(1055), 3), (k(1064), 100)):
            a = await cache.next_batch(start, k(2047), lock, limit, fill=False)
            assert a == [kv for kv in sorted(want.items()) if kv[0] >= start][:limit]
        assert await cache.next_batch(k(1024), k(2047), lock, 1000) == got
        # a cache with room caches what it reads
        roomy_got = await roomy.next_batch(k(1024), k(2047), lock, 1000, fill=False)
        assert roomy_got == [(key, b"%d" % (key[1] - 1024)) for key in sorted(forest.items)]
        assert len(roomy.cache) == 40 and roomy.ranges

    trio.run(main)
