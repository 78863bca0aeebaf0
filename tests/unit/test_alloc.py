"""Unit tests of fs.alloc: extent sets (against a set-of-blocks model), extent lists on the
meta device, and the per-transaction meta and data allocators."""

from __future__ import annotations

import errno

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fs import format as fmt
from fs.alloc import (
    DataAlloc,
    ExtentSet,
    MetaAlloc,
    extent_list_nr_blocks,
    read_extent_list,
    write_extent_list,
)
from fs.block import MetaBlocks
from fs.errors import FsError
from fs.format import EXTLIST_MAX, META_BLOCK_SIZE, NULL_REF, BlockRef
from fs.testing.memdev import MemDevice


def blocks_of(es: ExtentSet) -> set[int]:
    return {b for s, n in es.extents() for b in range(s, s + n)}


def check_canonical(es: ExtentSet) -> None:
    exts = es.extents()
    for (s1, n1), (s2, _n2) in zip(exts, exts[1:], strict=False):
        assert s1 + n1 < s2  # disjoint and never touching (merged)
    assert all(n > 0 for _, n in exts)
    assert es.total == sum(n for _, n in exts)
    assert sorted((n, s) for s, n in exts) == list(es._by_len)


def test_add_merges_and_detects_double_free():
    es = ExtentSet()
    es.add(10, 5)
    es.add(20, 5)
    es.add(15, 5)  # bridges both
    assert es.extents() == [(10, 15)] and es.total == 15
    for s, n in [(10, 1), (24, 3), (5, 6), (9, 30)]:
        with pytest.raises(ValueError):
            es.add(s, n)
    assert es.extents() == [(10, 15)] and es.total == 15
    with pytest.raises(ValueError):
        es.add(3, 0)


def test_remove_splits_and_requires_containment():
    es = ExtentSet([(0, 10), (20, 10)])
    es.remove(3, 2)
    assert es.extents() == [(0, 3), (5, 5), (20, 10)]
    with pytest.raises(ValueError):
        es.remove(8, 4)  # runs past (5, 5)
    with pytest.raises(ValueError):
        es.remove(12, 1)
    es.remove(20, 10)
    assert es.extents() == [(0, 3), (5, 5)] and es.total == 8


def test_alloc_lowest_fit_else_largest():
    es = ExtentSet([(100, 2), (200, 8), (300, 4), (400, 8)])
    assert es.alloc(3) == (200, 3)  # lowest extent that holds 3
    assert es.alloc(6) == (400, 6)  # (203, 5) is too short now
    assert es.alloc(10) == (203, 5)  # none holds 10: the (lowest) largest, whole
    assert es.alloc(10, min_length=5) is None  # largest left is 4
    assert es.alloc(10, min_length=4) == (300, 4)
    assert es.alloc(1) == (100, 1)
    assert es.total == 1 + 2
    assert ExtentSet().alloc(1) is None
    with pytest.raises(ValueError):
        es.alloc(0)


def test_take_contains_intersect():
    es = ExtentSet([(10, 3), (20, 3), (30, 3)])
    assert es.contains(20, 3) and not es.contains(19, 2) and 31 in es and 33 not in es
    assert es.intersect(11, 20) == [(11, 2), (20, 3), (30, 1)]
    assert es.take(5) == [(10, 3), (20, 2)]
    assert es.extents() == [(22, 1), (30, 3)]
    assert es.take(100) == [(22, 1), (30, 3)] and es.total == 0


ops = st.lists(
    st.tuples(st.sampled_from(["add", "remove", "alloc", "take"]), st.integers(0, 60),
              st.integers(1, 12)),
    max_size=60,
)


@given(ops)
@settings(max_examples=200, deadline=None)
def test_extent_set_matches_block_set_model(seq):
    es = ExtentSet()
    model: set[int] = set()
    for op, a, n in seq:
        rng = set(range(a, a + n))
        if op == "add":
            if rng & model:
                with pytest.raises(ValueError):
                    es.add(a, n)
            else:
                es.add(a, n)
                model |= rng
        elif op == "remove":
            if es.contains(a, n):
                assert rng <= model
                es.remove(a, n)
                model -= rng
            else:
                with pytest.raises(ValueError):
                    es.remove(a, n)
        elif op == "alloc":
            got = es.alloc(n)
            if got is None:
                assert not model
            else:
                s, k = got
                taken = set(range(s, s + k))
                assert taken <= model and 0 < k <= n
                model -= taken
        else:
            got = es.take(n)
            taken = {b for s, k in got for b in range(s, s + k)}
            assert taken == set(sorted(model)[:n])
            model -= taken
        check_canonical(es)
        assert blocks_of(es) == model


# --------------------------------------------------------------------------- extent lists


FSID = 77


def test_extent_list_roundtrip_multi_block():
    dev = MemDevice(64 * META_BLOCK_SIZE)
    mb = MetaBlocks(dev, FSID)
    exts = [(i * 3, 2) for i in range(EXTLIST_MAX * 2 + 5)]
    assert extent_list_nr_blocks(len(exts)) == 3
    assert extent_list_nr_blocks(0) == 0 and extent_list_nr_blocks(1) == 1
    assert extent_list_nr_blocks(EXTLIST_MAX) == 1
    free = iter([10, 11, 12])
    ref = write_extent_list(mb, exts, 5, lambda: next(free))
    assert ref.seq == 5 and ref.blkno == 10
    out, chain = read_extent_list(MetaBlocks(dev, FSID), ref)
    assert out == exts and chain == [10, 11, 12]
    assert write_extent_list(mb, [], 5, lambda: 1 / 0) == NULL_REF
    assert read_extent_list(mb, NULL_REF) == ([], [])


def test_extent_list_loop_and_corruption_are_eio():
    dev = MemDevice(64 * META_BLOCK_SIZE)
    mb = MetaBlocks(dev, FSID)
    # a chain whose second block points back at the first
    mb.write(5, 1, fmt.MAGIC_EXTENT_LIST, fmt.pack_extent_list_block(BlockRef(6, 1), [(1, 1)]))
    mb.write(6, 1, fmt.MAGIC_EXTENT_LIST, fmt.pack_extent_list_block(BlockRef(5, 1), [(3, 1)]))
    with pytest.raises(FsError, match="loops") as ei:
        read_extent_list(mb, BlockRef(5, 1))
    assert ei.value.errno == errno.EIO
    buf = fmt.pack_extent_list_block(NULL_REF, [(1, 1)])
    fmt.EXTLIST_HDR.pack_into(buf, fmt.HDR_SIZE, 0, 0, EXTLIST_MAX + 1)
    mb.write(7, 1, fmt.MAGIC_EXTENT_LIST, buf)
    with pytest.raises(FsError, match="malformed"):
        read_extent_list(MetaBlocks(dev, FSID), BlockRef(7, 1))


# --------------------------------------------------------------------------- allocators


def test_meta_alloc_frees_by_transaction():
    ma = MetaAlloc([(10, 3)])
    a = ma.alloc()
    b = ma.alloc()
    assert (a, b) == (10, 11)
    ma.free(a)  # allocated in this transaction: reusable at once
    assert ma.avail.contains(10) and ma.freed.total == 0
    ma.free(500)  # written earlier: waits for the commit
    assert ma.freed.extents() == [(500, 1)] and not ma.avail.contains(500)
    with pytest.raises(ValueError):
        ma.free(500)  # double free
    assert ma.alloc() == 10 and ma.alloc() == 12
    with pytest.raises(FsError) as ei:
        ma.alloc()
    assert ei.value.errno == errno.ENOSPC
    assert ma.end_transaction() == [(500, 1)]
    ma.free(11)  # allocated in the previous transaction: now it must wait
    assert ma.freed.extents() == [(11, 1)]


def test_data_alloc_extents_and_split_frees():
    da = DataAlloc([(100, 10), (200, 50)])
    assert da.alloc(20) == (200, 20)
    assert da.alloc(64) == (220, 30)  # largest available, short
    assert da.alloc(4) == (100, 4)
    # a free spanning blocks allocated now and blocks from an earlier transaction
    da.free(195, 10)
    assert da.freed.extents() == [(195, 5)]
    assert da.avail.contains(200, 5)
    assert da.allocated.extents() == [(100, 4), (205, 45)]
    while da.avail.total:
        da.alloc(1000)
    with pytest.raises(FsError) as ei:
        da.alloc(1)
    assert ei.value.errno == errno.ENOSPC
    assert da.end_transaction() == [(195, 5)] and da.allocated.total == 0


def test_overlaps():
    from fs.alloc import ExtentSet

    s = ExtentSet([(10, 5), (30, 2)])
    assert s.overlaps(12) and s.overlaps(8, 3) and s.overlaps(14, 20)
    assert not s.overlaps(15, 15) and not s.overlaps(0, 10) and not s.overlaps(32, 100)
    assert s.overlaps(29, 2)
