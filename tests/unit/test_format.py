"""Unit tests of fs.format: key order and stepping, block images, super and quorum codecs."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fs import format as fmt
from fs.format import (
    BTREE_BLOCK_PAYLOAD,
    EXTLIST_MAX,
    HDR_SIZE,
    KEY_MAX,
    KEY_MIN,
    META_BLOCK_SIZE,
    NULL_REF,
    BlockRef,
    BtreeRoot,
    QuorumBlock,
    QuorumEvent,
    QuorumSlot,
    Super,
)

U64 = fmt.U64_MAX
keys = st.tuples(
    st.sampled_from([0, 1, 16, 254, 255]),
    st.sampled_from([0, 1, 2, U64 - 1, U64]) | st.integers(0, U64),
    st.sampled_from([0, 4, 255]),
    st.sampled_from([0, 1, U64]) | st.integers(0, U64),
    st.sampled_from([0, 1, U64]) | st.integers(0, U64),
    st.sampled_from([0, 1, 254, 255]),
)


@given(keys, keys)
def test_packed_keys_sort_like_tuples(a, b):
    assert (a < b) == (fmt.pack_key(a) < fmt.pack_key(b))
    assert fmt.unpack_key(fmt.pack_key(a)) == a


@given(keys)
def test_key_next_prev_are_neighbours(k):
    if k != KEY_MAX:
        n = fmt.key_next(k)
        assert n > k
        assert fmt.key_prev(n) == k
        # nothing packs strictly between k and its successor: big-endian increment
        assert int.from_bytes(fmt.pack_key(n), "big") == int.from_bytes(fmt.pack_key(k), "big") + 1
    if k != KEY_MIN:
        p = fmt.key_prev(k)
        assert p < k
        assert fmt.key_next(p) == k


def test_key_step_edges():
    with pytest.raises(ValueError):
        fmt.key_next(KEY_MAX)
    with pytest.raises(ValueError):
        fmt.key_prev(KEY_MIN)
    assert fmt.key_next((16, 5, 4, U64, U64, 255)) == (16, 5, 5, 0, 0, 0)
    assert fmt.key_prev((16, 5, 5, 0, 0, 0)) == (16, 5, 4, U64, U64, 255)


def test_seal_and_crc():
    buf = bytearray(META_BLOCK_SIZE)
    buf[100] = 7
    fmt.seal_block(buf, fmt.MAGIC_BTREE, 0x1234, 9, 77)
    assert fmt.block_crc_ok(buf)
    hdr = fmt.parse_header(buf)
    assert (hdr.magic, hdr.fsid, hdr.seq, hdr.blkno) == (fmt.MAGIC_BTREE, 0x1234, 9, 77)
    buf[META_BLOCK_SIZE - 1] ^= 1
    assert not fmt.block_crc_ok(buf)


def test_btree_block_roundtrip_leaf_and_parent():
    ks = [(16, i, 4, 0, 0, 0) for i in range(10)]
    vals = [(i + 1, i % 2, bytes([i]) * i) for i in range(10)]
    buf = fmt.pack_btree_block(0, ks, vals)
    assert len(buf) == META_BLOCK_SIZE
    level, k2, v2, used = fmt.unpack_btree_block(buf)
    assert (level, k2, v2) == (0, ks, vals)
    assert used == sum(fmt.btree_entry_size(len(v[2])) for v in vals)

    refs = [BlockRef(100 + i, 5) for i in range(10)]
    level, k3, v3, used = fmt.unpack_btree_block(fmt.pack_btree_block(3, ks, refs))
    assert (level, k3, v3) == (3, ks, refs)
    assert used == 10 * fmt.BTREE_PARENT_ENTRY_SIZE


def test_btree_block_rejects_malformed():
    ks = [(16, 2, 4, 0, 0, 0), (16, 1, 4, 0, 0, 0)]
    buf = fmt.pack_btree_block(0, ks, [(1, 0, b""), (1, 0, b"")])
    with pytest.raises(ValueError, match="order"):
        fmt.unpack_btree_block(buf)
    # a value length that runs past the end of the block
    buf = fmt.pack_btree_block(0, [(16, 1, 4, 0, 0, 0)], [(1, 0, b"abc")])
    off = HDR_SIZE + fmt.BTREE_HDR.size + fmt.KEY_SIZE
    fmt.BTREE_ITEM_HDR.pack_into(buf, off, 1, 0, 65000)
    with pytest.raises(ValueError, match="value of 65000 bytes"):
        fmt.unpack_btree_block(buf)
    with pytest.raises(ValueError):
        fmt.pack_btree_block(0, [(16, 1, 4, 0, 0, 0)], [(1, 0, b"x" * BTREE_BLOCK_PAYLOAD)])


def test_extent_list_block_roundtrip():
    exts = [(i * 10, 3) for i in range(EXTLIST_MAX)]
    buf = fmt.pack_extent_list_block(BlockRef(9, 4), exts)
    nxt, out = fmt.unpack_extent_list_block(buf)
    assert nxt == BlockRef(9, 4) and out == exts
    with pytest.raises(ValueError):
        fmt.pack_extent_list_block(NULL_REF, exts + [(1, 1)])
    bad = fmt.pack_extent_list_block(NULL_REF, [(5, 0)])
    with pytest.raises(ValueError, match="bad extent"):
        fmt.unpack_extent_list_block(bad)


def test_super_block_roundtrip():
    fsid, uuid = fmt.new_fsid_uuid()
    sb = Super(fsid=fsid, uuid=uuid, seq=17, flags=fmt.SUPER_FLAG_META,
               quorum_slots={0: QuorumSlot("10.0.0.1", 7000), 4: QuorumSlot("127.0.0.1", 1)},
               meta_free=BlockRef(3, 2), fs_root=BtreeRoot(BlockRef(5, 6), 2),
               total_meta_blocks=1000, free_data_blocks=12)
    buf = fmt.pack_super_block(sb)
    assert len(buf) == fmt.SMALL_BLOCK_SIZE and fmt.block_crc_ok(buf)
    hdr = fmt.parse_header(buf)
    assert (hdr.magic, hdr.blkno, hdr.seq, hdr.fsid) == (fmt.MAGIC_SUPER, fmt.SUPER_BLKNO, 17, fsid)
    assert fmt.unpack_super(buf[HDR_SIZE:]) == sb


def test_quorum_block_roundtrip():
    qb = QuorumBlock(write_nr=3)
    qb.events[fmt.QUORUM_EVENT_ELECT] = QuorumEvent(3, 42, 7, (100, 5))
    buf = fmt.pack_quorum_block(qb, 0xABC, 2)
    hdr = fmt.parse_header(buf)
    assert (hdr.magic, hdr.blkno, hdr.seq) == (fmt.MAGIC_QUORUM, fmt.QUORUM_BLKNO + 2, 3)
    assert fmt.unpack_quorum(buf[HDR_SIZE:]) == qb
