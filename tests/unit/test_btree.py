"""Unit tests of fs.btree: behaviour against a dict model, structure invariants of every
written block, copy-on-write and exact block accounting, corruption, and speed."""

from __future__ import annotations

import errno
import random
import time

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from fs import format as fmt
from fs.alloc import ExtentSet, MetaAlloc
from fs.block import MetaBlocks
from fs.btree import Btree
from fs.errors import FsError
from fs.format import (
    BTREE_BLOCK_PAYLOAD,
    EMPTY_ROOT,
    KEY_MAX,
    KEY_MIN,
    MAGIC_BTREE,
    MAX_VAL_SIZE,
    META_BLOCK_SIZE,
    META_DEV_START_BLKNO,
    BlockRef,
    BtreeRoot,
    Item,
)
from fs.testing.memdev import MemDevice

FSID = 0xB7EE


def k(i: int, t: int = fmt.FS_INODE) -> fmt.Key:
    return (fmt.ZONE_FS, i, t, 0, 0, 0)


class Volume:
    """A meta device, its blocks, and a free set with delayed reuse, as the server keeps."""

    def __init__(self, nr_blocks: int = 4096):
        self.nr_blocks = nr_blocks
        self.dev = MemDevice(nr_blocks * META_BLOCK_SIZE, path="btree-meta")
        self.blocks = MetaBlocks(self.dev, FSID)
        self.free = ExtentSet([(META_DEV_START_BLKNO, nr_blocks - META_DEV_START_BLKNO)])
        self.pending: list[tuple[int, int]] = []  # freed by the last commit: not yet reusable
        self.seq = 1
        self.ma = MetaAlloc(self.free)

    def begin(self, tree: Btree) -> None:
        tree.begin(self.seq, self.ma.alloc, self.ma.free)

    def commit(self, tree: Btree) -> BtreeRoot:
        root = tree.flush()
        self.dev.flush()
        freed = self.ma.end_transaction()
        # blocks freed by commit N are reused from transaction N + 2 on
        for s, n in self.pending:
            self.free.add(s, n)
        self.pending = freed
        self.seq += 1
        return root

    def universe(self) -> set[int]:
        return set(range(META_DEV_START_BLKNO, self.nr_blocks))


def ext_blocks(exts) -> set[int]:
    return {b for s, n in exts for b in range(s, s + n)}


def check_tree(blocks: MetaBlocks, root: BtreeRoot, cap: int = BTREE_BLOCK_PAYLOAD,
               model: dict | None = None) -> set[int]:
    """Verify every block of a written tree by reading it raw; returns their blknos."""
    seen: set[int] = set()
    items: list = []

    def walk(ref: BlockRef, level: int, is_root: bool) -> fmt.Key | None:
        assert ref.blkno not in seen, f"block {ref.blkno} referenced twice"
        seen.add(ref.blkno)
        buf = blocks.read(ref, MAGIC_BTREE)  # crc, fsid, magic, blkno and seq verified
        lvl, keys, vals, used = fmt.unpack_btree_block(buf)
        assert lvl == level
        assert used <= cap
        assert keys or is_root
        if level == 0:
            items.extend(zip(keys, vals, strict=True))
            return keys[-1] if keys else None
        assert len(keys) >= (2 if is_root else 1)
        prev = None
        for key, child in zip(keys, vals, strict=True):
            largest = walk(child, level - 1, False)
            assert largest == key, "a parent key is not the largest key of its child"
            assert prev is None or prev < largest
            prev = largest
        return keys[-1]

    if root.height:
        walk(root.ref, root.height - 1, True)
    else:
        assert root == EMPTY_ROOT
    if model is not None:
        assert [(key, Item(*v)) for key, v in items] == sorted(model.items())
    return seen


# --------------------------------------------------------------------------- basics


def test_empty_tree():
    vol = Volume(64)
    t = Btree(vol.blocks, EMPTY_ROOT)
    assert t.lookup(k(1)) is None
    assert list(t.items(KEY_MIN, KEY_MAX)) == []
    assert t.leaf_range(k(5)) == (KEY_MIN, KEY_MAX)
    assert list(t.block_refs()) == []
    with pytest.raises(RuntimeError):
        t.insert(k(1), Item(1, 0, b""))
    vol.begin(t)
    assert t.delete(k(1)) is False
    assert t.flush() == EMPTY_ROOT and vol.blocks.writes == 0


def test_insert_replace_delete_and_tombstones():
    vol = Volume(64)
    t = Btree(vol.blocks, EMPTY_ROOT)
    vol.begin(t)
    t.insert(k(2), Item(1, 0, b"two"))
    t.insert(k(1), Item(1, fmt.ITEM_FLAG_DELETION, b""))
    t.insert(k(3), Item(1, 0, b"three"))
    t.insert(k(2), Item(2, 0, b"TWO"))
    assert t.lookup(k(2)) == Item(2, 0, b"TWO")
    assert t.lookup(k(1)).deleted  # tombstones are returned, not hidden
    assert [key for key, _ in t.items(k(1), k(2))] == [k(1), k(2)]
    assert t.delete(k(2)) and not t.delete(k(2))
    assert t.lookup(k(2)) is None
    root = vol.commit(t)
    assert root.height == 1 and root.ref.seq == 1
    t2 = Btree(MetaBlocks(vol.dev, FSID), root)
    assert [(key, it.value) for key, it in t2.items(KEY_MIN, KEY_MAX)] == [(k(1), b""), (k(3), b"three")]
    # returned items are copies: changing one changes nothing in the tree
    t2.lookup(k(3)).value = b"mutated"
    assert t2.lookup(k(3)).value == b"three"


def test_rejects_bad_values_and_keys():
    vol = Volume(64)
    t = Btree(vol.blocks, EMPTY_ROOT)
    vol.begin(t)
    t.insert(k(1), Item(1, 0, b"x" * MAX_VAL_SIZE))
    with pytest.raises(ValueError):
        t.insert(k(2), Item(1, 0, b"x" * (MAX_VAL_SIZE + 1)))
    with pytest.raises(ValueError):
        t.insert((16, -1, 4, 0, 0, 0), Item(1, 0, b""))
    with pytest.raises(ValueError):
        t.insert((256, 1, 4, 0, 0, 0), Item(1, 0, b""))


def test_begin_with_unflushed_changes_refused():
    vol = Volume(64)
    t = Btree(vol.blocks, EMPTY_ROOT)
    vol.begin(t)
    t.insert(k(1), Item(1, 0, b""))
    with pytest.raises(RuntimeError):
        vol.begin(t)
    vol.commit(t)
    with pytest.raises(RuntimeError):  # flush ended the transaction
        t.insert(k(2), Item(1, 0, b""))


def test_leaf_ranges_tile_the_key_space():
    vol = Volume(512)
    t = Btree(vol.blocks, EMPTY_ROOT, capacity=600)
    vol.begin(t)
    for i in range(0, 600, 2):
        t.insert(k(i), Item(1, 0, b"v" * 20))
    root = vol.commit(t)
    assert root.height >= 3
    t = Btree(vol.blocks, root, capacity=600)
    lo, ranges = KEY_MIN, []
    while True:
        r = t.leaf_range(lo)
        assert r[0] == lo <= r[1]
        ranges.append(r)
        # every item in the range lives in one leaf: the range's items are those the
        # leaf holds, and the leaf of any key inside is the same range
        mid = [key for key, _ in t.items(r[0], r[1])]
        for key in mid:
            assert t.leaf_range(key) == r
        if r[1] == KEY_MAX:
            break
        lo = fmt.key_next(r[1])
    leaves = [ref for ref, level in t.block_refs() if level == 0]
    assert len(ranges) == len(leaves) > 10


# --------------------------------------------------------------------------- copy-on-write


def test_cow_allocates_once_per_transaction_and_frees_the_old_block():
    vol = Volume(64)
    t = Btree(vol.blocks, EMPTY_ROOT)
    vol.begin(t)
    t.insert(k(1), Item(1, 0, b"a"))
    root1 = vol.commit(t)
    allocs, frees = [], []

    def alloc():
        b = vol.ma.alloc()
        allocs.append(b)
        return b

    def free(b):
        frees.append(b)
        vol.ma.free(b)

    t.begin(vol.seq, alloc, free)
    t.insert(k(2), Item(2, 0, b"b"))
    t.insert(k(3), Item(2, 0, b"c"))  # the copy is dirty now: changes in place
    assert len(allocs) == 1 and frees == [root1.ref.blkno]
    assert t.root == root1  # the flushed root until flush
    root2 = vol.commit(t)
    assert root2.ref.blkno == allocs[0] != root1.ref.blkno and root2.ref.seq == 2
    # the old root is intact for readers of the old root
    old = Btree(MetaBlocks(vol.dev, FSID), root1)
    assert [key for key, _ in old.items(KEY_MIN, KEY_MAX)] == [k(1)]
    new = Btree(MetaBlocks(vol.dev, FSID), root2)
    assert [key for key, _ in new.items(KEY_MIN, KEY_MAX)] == [k(1), k(2), k(3)]


def test_grow_then_shrink_to_empty_with_exact_accounting():
    vol = Volume(2048)
    t = Btree(vol.blocks, EMPTY_ROOT, capacity=800)
    vol.begin(t)
    model = {}
    rnd = random.Random(7)
    order = list(range(2000))
    rnd.shuffle(order)
    for i in order:
        it = Item(1, 0, bytes([i % 256]) * rnd.randrange(0, 120))
        t.insert(k(i), it)
        model[k(i)] = it
    root = vol.commit(t)
    assert root.height >= 4
    used = check_tree(MetaBlocks(vol.dev, FSID), root, 800, model)
    assert used == {ref.blkno for ref, _ in t.block_refs()}
    assert used.isdisjoint(ext_blocks(vol.free.extents()))
    assert len(used) + vol.free.total == len(vol.universe())

    t = Btree(vol.blocks, root, capacity=800)
    vol.begin(t)
    rnd.shuffle(order)
    for n, i in enumerate(order):
        assert t.delete(k(i))
        del model[k(i)]
        if n % 500 == 0:
            root = vol.commit(t)
            check_tree(MetaBlocks(vol.dev, FSID), root, 800, model)
            vol.begin(t)
    root = vol.commit(t)
    assert root == EMPTY_ROOT
    vol.commit(Btree(vol.blocks, EMPTY_ROOT))  # let the last frees through delayed reuse
    assert vol.free.total == len(vol.universe())


def test_max_size_values_split_and_join():
    vol = Volume(1024)
    t = Btree(vol.blocks, EMPTY_ROOT)
    vol.begin(t)
    model = {}
    for i in range(200):
        it = Item(1, 0, bytes([i]) * (MAX_VAL_SIZE if i % 3 else 10))
        t.insert(k(i), it)
        model[k(i)] = it
    root = vol.commit(t)
    assert root.height == 2
    check_tree(MetaBlocks(vol.dev, FSID), root, model=model)
    vol.begin(t)
    for i in range(0, 200, 2):
        t.delete(k(i))
        del model[k(i)]
    # replacing values with smaller ones leaves underfull leaves to join
    for i in range(1, 200, 2):
        model[k(i)] = Item(2, 0, b"s")
        t.insert(k(i), model[k(i)])
    root = vol.commit(t)
    used = check_tree(MetaBlocks(vol.dev, FSID), root, model=model)
    assert root.height == 1 and len(used) == 1


def test_hundred_thousand_inserts_are_fast():
    vol = Volume(4096)
    t = Btree(vol.blocks, EMPTY_ROOT)
    keys = [k(i) for i in range(100_000)]
    random.Random(3).shuffle(keys)
    start = time.perf_counter()
    vol.begin(t)
    for key in keys:
        t.insert(key, Item(1, 0, b"v" * 32))
    root = vol.commit(t)
    elapsed = time.perf_counter() - start
    assert elapsed < 5, f"100k inserts + flush took {elapsed:.1f}s"
    fresh = Btree(MetaBlocks(vol.dev, FSID), root)
    start = time.perf_counter()
    for key in keys[:10_000]:
        assert fresh.lookup(key) is not None
    assert time.perf_counter() - start < 2
    assert sum(1 for _ in fresh.items(KEY_MIN, KEY_MAX)) == 100_000


# --------------------------------------------------------------------------- corruption


def test_corrupt_and_wrong_level_blocks_are_eio(caplog):
    vol = Volume(256)
    t = Btree(vol.blocks, EMPTY_ROOT, capacity=600)
    vol.begin(t)
    for i in range(200):
        t.insert(k(i), Item(1, 0, b"x" * 30))
    root = vol.commit(t)
    leaf = next(ref for ref, level in t.block_refs() if level == 0)
    # a well-sealed block whose contents are out of order: crc passes, parsing refuses
    bad = fmt.pack_btree_block(0, [k(5), k(4)], [(1, 0, b""), (1, 0, b"")])
    vol.blocks.write(leaf.blkno, leaf.seq, MAGIC_BTREE, bad)
    with pytest.raises(FsError) as ei:
        list(Btree(MetaBlocks(vol.dev, FSID), root).items(KEY_MIN, KEY_MAX))
    assert ei.value.errno == errno.EIO and f"meta block {leaf.blkno}" in str(ei.value)
    # a parent where a leaf is expected
    vol.blocks.write(leaf.blkno, leaf.seq, MAGIC_BTREE,
                     fmt.pack_btree_block(1, [k(1)], [BlockRef(3, 1)]))
    with pytest.raises(FsError, match="level"):
        list(Btree(MetaBlocks(vol.dev, FSID), root).items(KEY_MIN, KEY_MAX))
    # a flipped byte
    vol.dev.poke(root.ref.blkno * META_BLOCK_SIZE + 1000, b"\x99")
    with pytest.raises(FsError, match="crc"):
        Btree(MetaBlocks(vol.dev, FSID), root).lookup(k(1))


# --------------------------------------------------------------------------- model test

KEYS = [KEY_MIN, KEY_MAX] + [k(i) for i in range(0, 400, 3)] + [k(7, t) for t in range(256)]
VAL_SIZES = [0, 1, 10, 40, 100]


class BtreeModel(RuleBasedStateMachine):
    """Random changes, flushes and reopenings of a small-block btree against a dict."""

    cap = 400  # small blocks (7 children per parent): tall trees from a few hundred items

    def __init__(self):
        super().__init__()
        # two versions of a tree of ~350 items of 100 B in 400 B blocks, plus delayed reuse
        self.vol = Volume(2000)
        self.tree = Btree(self.vol.blocks, EMPTY_ROOT, capacity=self.cap)
        self.model: dict = {}
        self.prev: tuple[BtreeRoot, dict] | None = None  # last committed root and contents
        self.vol.begin(self.tree)

    @rule(key=st.sampled_from(KEYS), size=st.sampled_from(VAL_SIZES), flags=st.integers(0, 1),
          tag=st.integers(0, 255))
    def insert(self, key, size, flags, tag):
        it = Item(self.vol.seq, flags, bytes([tag]) * size)
        self.tree.insert(key, it)
        self.model[key] = it

    @rule(data=st.data(), size=st.sampled_from(VAL_SIZES), tag=st.integers(0, 255))
    def insert_many(self, data, size, tag):
        # bulk inserts drive splits and height growth
        n = data.draw(st.integers(1, len(KEYS)))
        start = data.draw(st.integers(0, len(KEYS) - n))
        for key in KEYS[start : start + n]:
            self.insert(key, size, 0, tag)

    @rule(key=st.sampled_from(KEYS))
    def delete(self, key):
        assert self.tree.delete(key) == (key in self.model)
        self.model.pop(key, None)

    @precondition(lambda self: len(self.model) > 5)
    @rule(data=st.data())
    def delete_many(self, data):
        # bulk deletes drive joins and height shrinks
        keys = sorted(self.model)
        n = data.draw(st.integers(1, len(keys)))
        start = data.draw(st.integers(0, len(keys) - n))
        for key in keys[start : start + n]:
            assert self.tree.delete(key)
            del self.model[key]

    @rule(key=st.sampled_from(KEYS))
    def lookup(self, key):
        assert self.tree.lookup(key) == self.model.get(key)

    @rule(a=st.sampled_from(KEYS), b=st.sampled_from(KEYS))
    def items(self, a, b):
        got = list(self.tree.items(a, b))
        assert got == sorted((key, v) for key, v in self.model.items() if a <= key <= b)

    @rule(key=st.sampled_from(KEYS))
    def leaf_range(self, key):
        lo, hi = self.tree.leaf_range(key)
        assert lo <= key <= hi

    @rule(reopen=st.sampled_from(["none", "same", "fresh"]))
    def commit(self, reopen):
        vol = self.vol
        root = vol.commit(self.tree)
        assert root == self.tree.root
        fresh = MetaBlocks(vol.dev, FSID)  # empty cache: everything from the device
        used = check_tree(fresh, root, self.cap, self.model)
        assert used == {ref.blkno for ref, _ in self.tree.block_refs()}
        # exact accounting: every block is in the tree, free, or waiting out reuse
        free = ext_blocks(vol.free.extents())
        pending = ext_blocks(vol.pending)
        assert used.isdisjoint(free) and used.isdisjoint(pending) and free.isdisjoint(pending)
        prev_used = check_tree(fresh, self.prev[0], self.cap, self.prev[1]) if self.prev else set()
        # the previous root is still whole on disk (its freed blocks are not reused yet)
        assert (used | free | pending | prev_used) == vol.universe()
        assert len(used) + len(free) + len(pending) == len(vol.universe())
        self.prev = (root, dict(self.model))
        if reopen == "same":
            self.tree = Btree(vol.blocks, root, capacity=self.cap)
        elif reopen == "fresh":
            vol.blocks = fresh
            self.tree = Btree(fresh, root, capacity=self.cap)
        vol.begin(self.tree)

    @invariant()
    def sizes_agree(self):
        assert sum(1 for _ in self.tree.items(KEY_MIN, KEY_MAX)) == len(self.model)


BtreeModel.TestCase.settings = settings(
    max_examples=60, stateful_step_count=60, deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestBtreeModel = BtreeModel.TestCase


class BigBlockModel(BtreeModel):
    """The same with real 64 KiB blocks and values up to MAX_VAL_SIZE."""

    cap = BTREE_BLOCK_PAYLOAD

    @rule(key=st.sampled_from(KEYS), size=st.sampled_from([1000, 8000, MAX_VAL_SIZE]),
          tag=st.integers(0, 255))
    def insert_big(self, key, size, tag):
        it = Item(self.vol.seq, 0, bytes([tag]) * size)
        self.tree.insert(key, it)
        self.model[key] = it


BigBlockModel.TestCase.settings = settings(
    max_examples=25, stateful_step_count=50, deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestBigBlockModel = BigBlockModel.TestCase
