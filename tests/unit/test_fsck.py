"""fsck: clean volumes pass; each kind of damage is reported."""

from __future__ import annotations

import os

from fs import format as fmt
from fs import fsck
from fs.block import Device, read_super
from fs.mkfs import make_volume


def make(tmp_path):
    meta, data = tmp_path / "meta.img", tmp_path / "data.img"
    for p, size in ((meta, 256 << 20), (data, 512 << 20)):
        with open(p, "wb") as f:
            f.truncate(size)
    make_volume(str(meta), str(data), {0: ("127.0.0.1", 19700)})
    return str(meta), str(data)


def test_fresh_volume_is_clean(tmp_path):
    assert fsck.check(*make(tmp_path)) == []


def test_corrupt_fs_root_block_is_reported(tmp_path):
    meta, data = make(tmp_path)
    dev = Device(meta)
    sb = read_super(dev)
    dev.close()
    off = sb.fs_root.ref.blkno * fmt.META_BLOCK_SIZE + 100
    with open(meta, "r+b") as f:
        f.seek(off)
        b = f.read(1)
        f.seek(off)
        f.write(bytes([b[0] ^ 0xFF]))
    problems = fsck.check(meta, data)
    assert any("fs_root" in p and "unreadable" in p for p in problems), problems


def test_swapped_devices_are_reported(tmp_path):
    meta, data = make(tmp_path)
    problems = fsck.check(data, meta)
    assert problems and "META" in problems[0] or "flag" in " ".join(problems), problems


def test_missing_super(tmp_path):
    meta, data = make(tmp_path)
    with open(meta, "r+b") as f:
        f.seek(fmt.SUPER_BLKNO * fmt.SMALL_BLOCK_SIZE)
        f.write(bytes(4096))
    assert fsck.check(meta, data)[0].startswith("meta device super")


def test_accounting_finds_double_use_and_leaks():
    problems = fsck.Problems()
    counts = fsck._check_accounting("dev", 10, 30, [(10, 5, "free", "free"),
                                                    (14, 2, "used by x", "used"),
                                                    (20, 10, "free", "free")], problems)
    assert counts == {"used": 2, "free": 15, "pending": 0, "lent": 0, "total": 20}
    text = "\n".join(problems)
    assert "14..14 are both free and used by x" in text
    assert "16..19 leaked" in text
    clean = fsck.Problems()
    fsck._check_accounting("dev", 10, 30, [(10, 10, "free", "free"),
                                           (20, 10, "lent", "lent")], clean)
    assert clean == []


def _entry(items, dir_ino, name, ino, pos, dtype):
    d = fmt.Dirent(ino, fmt.hash64(name), pos, dtype, name)
    v = fmt.pack_dirent(d)
    items[fmt.dirent_key(dir_ino, d.hash, pos)] = v
    items[fmt.readdir_key(dir_ino, pos)] = v
    items[fmt.backref_key(ino, dir_ino, pos)] = v


def _inode(items, ino, mode, nlink, size=0, next_pos=2, seq=5):
    items[fmt.inode_key(ino)] = fmt.pack_inode(fmt.Inode(
        ino=ino, mode=mode, nlink=nlink, size=size, next_readdir_pos=next_pos, meta_seq=seq))
    items[fmt.seq_index_key(fmt.INODE_INDEX_META_SEQ, seq, ino)] = b""


def good_tree():
    items = {}
    _inode(items, 1, 0o40755, 3, size=len(b"d") + len(b"f"), next_pos=4)
    _inode(items, 1024, 0o40755, 2)
    _inode(items, 1025, 0o100644, 1)
    _entry(items, 1, b"d", 1024, 2, fmt.DT_DIR)
    _entry(items, 1, b"f", 1025, 3, fmt.DT_REG)
    return items


def test_namespace_checks_clean_and_damaged():
    p = fsck.Problems()
    fsck._check_items(good_tree(), p)
    assert p == []

    items = good_tree()
    del items[fmt.backref_key(1025, 1, 3)]
    items[fmt.inode_key(1025)] = fmt.pack_inode(fmt.Inode(ino=1025, mode=0o100644, nlink=2,
                                                          meta_seq=5))
    p = fsck.Problems()
    fsck._check_items(items, p)
    text = "\n".join(p)
    assert "missing or different LINK_BACKREF" in text
    assert "inode 1025: nlink 2 but 1 expected" in text

    items = good_tree()
    items[fmt.inode_key(1)] = fmt.pack_inode(fmt.Inode(ino=1, mode=0o40755, nlink=3, size=7,
                                                       next_readdir_pos=3, meta_seq=5))
    p = fsck.Problems()
    fsck._check_items(items, p)
    text = "\n".join(p)
    assert "dir 1: size 7 but its names total 2" in text
    assert "position not below next_readdir_pos 3" in text

    items = good_tree()
    items[fmt.inode_key(1025)] = fmt.pack_inode(fmt.Inode(ino=1025, mode=0o100644, nlink=0,
                                                          meta_seq=5))
    _entry_keys = [k for k in items if k[2] in (fmt.FS_DIRENT, fmt.FS_READDIR,
                                               fmt.FS_LINK_BACKREF) and k[0] == fmt.ZONE_FS
                   and (k[1] == 1025 or fmt.unpack_dirent(items[k]).ino == 1025)]
    for k in _entry_keys:
        del items[k]
    p = fsck.Problems()
    fsck._check_items(items, p)
    assert any("no links and no orphan item" in x for x in p), p
    items[fmt.orphan_key(1025)] = b""
    p = fsck.Problems()
    fsck._check_items(items, p)
    assert not any("orphan" in x for x in p), p


def test_cli_exit_codes(tmp_path):
    meta, data = make(tmp_path)
    rc = os.system(f"{os.sys.executable} -m fs.cli.fsck {meta} {data} > /dev/null")
    assert os.waitstatus_to_exitcode(rc) == 0
    with open(meta, "r+b") as f:
        f.seek(fmt.SUPER_BLKNO * fmt.SMALL_BLOCK_SIZE)
        f.write(bytes(4096))
    rc = os.system(f"{os.sys.executable} -m fs.cli.fsck {meta} {data} > /dev/null")
    assert os.waitstatus_to_exitcode(rc) == 1


def test_readdir_and_backref_values_must_agree_with_their_keys():
    items = good_tree()
    d = fmt.unpack_dirent(items[fmt.readdir_key(1, 3)])
    items[fmt.readdir_key(1, 3)] = fmt.pack_dirent(d._replace(pos=9))
    d = fmt.unpack_dirent(items[fmt.backref_key(1024, 1, 2)])
    items[fmt.backref_key(1024, 1, 2)] = fmt.pack_dirent(d._replace(ino=1025))
    p = fsck.Problems()
    fsck._check_items(items, p)
    text = "\n".join(p)
    assert "value has pos 9" in text
    assert "value names inode 1025 pos 2" in text


def test_item_key_shapes():
    assert fsck._item_key_problem(fmt.inode_key(5)) is None
    assert fsck._item_key_problem(fmt.extent_key(5, 9, 10)) is None
    assert fsck._item_key_problem(fmt.orphan_key(5)) is None
    assert fsck._item_key_problem(fmt.seq_index_key(fmt.INODE_INDEX_DATA_SEQ, 3, 5)) is None
    assert "zero" in fsck._item_key_problem((fmt.ZONE_FS, 5, fmt.FS_INODE, 0, 7, 0))
    assert "zero" in fsck._item_key_problem((fmt.ZONE_ORPHAN, 1, fmt.ORPHAN_TYPE, 5, 0, 0))
    assert "unknown" in fsck._item_key_problem((fmt.ZONE_FS, 5, 5, 0, 0, 0))
    assert "unknown" in fsck._item_key_problem((3, 5, fmt.FS_INODE, 0, 0, 0))
    assert "length" in fsck._item_key_problem(fmt.extent_key(5, 9, 0))
    assert "length" in fsck._item_key_problem(fmt.extent_key(5, 9, 11))


def _rewrite_super(meta, change):
    from fs.block import write_super

    dev = Device(meta)
    sb = read_super(dev)
    change(sb)
    write_super(dev, sb)
    dev.flush()
    dev.close()


def test_lowered_next_ino_is_reported():
    items = good_tree()
    sb = fmt.Super(next_ino=1025)  # inode 1025 is in use
    p = fsck.Problems()
    fsck._check_next_ino(sb, items, p)
    assert p == ["super next_ino 1025 is not above inode 1025, which is in use: new inodes "
                 "would reuse live numbers"]
    p = fsck.Problems()
    fsck._check_next_ino(fmt.Super(next_ino=1026), items, p)
    assert p == []


def test_item_seq_above_the_super_is_reported(tmp_path):
    meta, data = make(tmp_path)
    dev = Device(meta)
    sb = read_super(dev)
    # mkfs's root inode item, as if written with a seq the super never handed out
    level, keys, vals, _used = fmt.unpack_btree_block(dev.read(
        sb.fs_root.ref.blkno * fmt.META_BLOCK_SIZE, fmt.META_BLOCK_SIZE))
    i = keys.index(fmt.inode_key(fmt.ROOT_INO))
    vals[i] = (sb.seq + 5, vals[i][1], vals[i][2])
    buf = fmt.pack_btree_block(level, keys, vals)
    hdr = fmt.parse_header(dev.read(sb.fs_root.ref.blkno * fmt.META_BLOCK_SIZE,
                                    fmt.SMALL_BLOCK_SIZE))
    fmt.seal_block(buf, hdr.magic, hdr.fsid, hdr.seq, hdr.blkno)
    dev.write(sb.fs_root.ref.blkno * fmt.META_BLOCK_SIZE, buf)
    dev.flush()
    dev.close()
    problems = fsck.check(meta, data)
    assert any("fs_root: item" in p and f"has seq {sb.seq + 5}, above {sb.seq}" in p
               for p in problems), problems


def test_bad_quorum_block_is_reported(tmp_path):
    meta, data = make(tmp_path)
    off = fmt.QUORUM_BLKNO * fmt.SMALL_BLOCK_SIZE + 100
    with open(meta, "r+b") as f:
        f.seek(off)
        f.write(b"\xff")
    problems = fsck.check(meta, data)
    assert any(p.startswith("quorum slot 0:") and "bad crc" in p for p in problems), problems



def test_super_with_impossible_quorum_slots_is_reported(tmp_path):
    """A slot number past the quorum blocks or a port 0 in a super whose crc matches
    (fuzzing found fsck raising on the first): fsck reports it, the mount's read refuses."""
    import errno

    import pytest

    from fs.errors import FsError

    for slots, why in (({25: fmt.QuorumSlot("127.0.0.1", 19700)}, "quorum slot 25 out of range"),
                       ({0: fmt.QuorumSlot("127.0.0.1", 0)}, "quorum slot 0 port 0")):
        meta, data = make(tmp_path)
        _rewrite_super(meta, lambda sb, slots=slots: setattr(sb, "quorum_slots", slots))
        dev = Device(meta)
        with pytest.raises(FsError) as e:
            read_super(dev)
        dev.close()
        assert e.value.errno == errno.EINVAL and why in str(e.value)
        problems = fsck.check(meta, data)
        assert problems and why in problems[0], problems


def test_xattr_items_are_checked():
    """An xattr whose key hash is not its name's (fuzzing: listxattr showed a name getxattr
    said ENODATA for, and fsck called the volume clean), missing parts, an unknown inode."""
    from fs.xattr import pack_parts

    def with_xattr(ino, name, value, name_hash=None, drop_part=None):
        items = good_tree()
        items[fmt.inode_key(1025)] = fmt.pack_inode(fmt.Inode(
            ino=1025, mode=0o100644, nlink=1, meta_seq=5, next_xattr_id=2))
        h = fmt.hash64(name) if name_hash is None else name_hash
        for nr, part in enumerate(pack_parts(name, value)):
            if nr != drop_part:
                items[fmt.xattr_key(ino, h, 1, nr)] = part
        p = fsck.Problems()
        fsck._check_items(items, p)
        return "\n".join(p)

    assert with_xattr(1025, b"user.a", b"v" * 2000) == ""
    assert "not the hash of its name b'user.a'" in with_xattr(1025, b"user.a", b"v",
                                                              name_hash=77)
    assert "parts [0, 2] hold" in with_xattr(1025, b"user.a", b"v" * 2000, drop_part=1)
    assert "inode 1099: the inode does not exist" in with_xattr(1099, b"user.a", b"v")


def test_offline_extents_and_counts():
    """Offline extents count as offline (not online), lie inside i_size and are unmapped
    or flagged; the inode's counts must match."""
    def tree(extents, online, offline, size=5 * 4096):
        items = good_tree()
        items[fmt.inode_key(1025)] = fmt.pack_inode(fmt.Inode(
            ino=1025, mode=0o100644, nlink=1, size=size, meta_seq=5,
            online_blocks=online, offline_blocks=offline))
        for start, n, blkno, flags in extents:
            items[fmt.extent_key(1025, start + n - 1, n)] = fmt.pack_extent_val(blkno, flags)
        p = fsck.Problems()
        fsck._check_items(items, p)
        return "\n".join(p)

    off = fmt.EXTENT_FLAG_OFFLINE
    assert tree([(0, 2, 100, 0), (2, 3, 0, off)], 2, 3) == ""
    assert "offline_blocks 2 but extents hold 3" in tree([(0, 2, 100, 0), (2, 3, 0, off)], 2, 2)
    assert "online_blocks 5" in tree([(0, 2, 100, 0), (2, 3, 0, off)], 5, 3)
    assert "past its size" in tree([(0, 6, 0, off)], 0, 6)
    assert "unmapped but not offline" in tree([(0, 1, 0, 0)], 0, 0)
    assert "unknown flags" in tree([(0, 1, 100, 8)], 1, 0)


def test_indx_items_are_checked_against_their_xattrs():
    """Every .indx. xattr has its XATTR_INDX item (major, minor, ino, id), every item an
    .indx. xattr of that inode and id naming its major and minor, and items have no value."""
    from fs.xattr import pack_parts

    def check(names, index, value=b""):
        items = good_tree()
        items[fmt.inode_key(1025)] = fmt.pack_inode(fmt.Inode(
            ino=1025, mode=0o100644, nlink=1, meta_seq=5, next_xattr_id=10))
        for xid, name in names.items():
            for nr, part in enumerate(pack_parts(name, b"")):
                items[fmt.xattr_key(1025, fmt.hash64(name), xid, nr)] = part
        for ent in index:
            items[fmt.xattr_indx_key(*ent)] = value
        p = fsck.Problems()
        fsck._check_items(items, p)
        return "\n".join(p)

    names = {1: b"scoutfs.hide.indx.a.3.0x10", 2: b"scoutfs.indx.b.3.16", 3: b"user.indx.1.2"}
    good = [(3, 16, 1025, 1), (3, 16, 1025, 2)]
    assert check(names, good) == ""
    assert "index items [], not [(3, 16)]" in check(names, good[:1])
    assert "index items [(3, 17)], not [(3, 16)]" in check(names, [(3, 17, 1025, 1), good[1]])
    assert "items [(1, 2)] of inode 1025 id 3: no .indx. xattr" in check(
        names, good + [(1, 2, 1025, 3)])
    assert "of inode 1099 id 1: no .indx. xattr" in check(names, good + [(3, 16, 1099, 1)])
    assert "has a value" in check(names, good, value=b"x")
    # the key shape: the fourth field is zero
    assert fsck._item_key_problem(fmt.xattr_indx_key(255, fmt.U64_MAX, 5, 6)) is None
    assert fsck._item_key_problem((fmt.ZONE_XATTR_INDX, 0, 0, 0, 0, 1)) is not None


def test_totl_totals_are_checked_against_their_xattrs():
    """Every (a, b, c) total and count equal the values and number of the .totl. xattrs
    naming it; a total without xattrs, or a wrong sum, is reported."""
    from fs.xattr import pack_parts

    names = {1: (b"scoutfs.totl.x.1.2.3", b"10"), 2: (b"scoutfs.hide.totl.y.1.2.3", b"0x20"),
             3: (b"scoutfs.totl.z.4.5.6", b"7"), 4: (b"user.totl.7.8.9", b"1")}

    def items():
        its = good_tree()
        its[fmt.inode_key(1025)] = fmt.pack_inode(fmt.Inode(
            ino=1025, mode=0o100644, nlink=1, meta_seq=5, next_xattr_id=10))
        for xid, (name, value) in names.items():
            for nr, part in enumerate(pack_parts(name, value)):
                its[fmt.xattr_key(1025, fmt.hash64(name), xid, nr)] = part
        return its

    def check(totals):
        p = fsck.Problems()
        fsck._check_totals(items(), totals, p)
        return "\n".join(p)

    good = {(1, 2, 3): (42, 2), (4, 5, 6): (7, 1)}
    assert check(good) == ""
    assert "total 1.2.3 is 41, 2; its .totl. xattrs sum to 42, 2" in check(
        {**good, (1, 2, 3): (41, 2)})
    assert "total 4.5.6 is 0, 0; its .totl. xattrs sum to 7, 1" in check(
        {(1, 2, 3): (42, 2)})
    assert "total 7.8.9 is 1, 1; its .totl. xattrs sum to 0, 0" in check(
        {**good, (7, 8, 9): (1, 1)})
    # the key shape: type and fourth field are zero
    assert fsck._item_key_problem(fmt.totl_key(fmt.U64_MAX, 1, 2)) is None
    assert fsck._item_key_problem((fmt.ZONE_XATTR_TOTL, 0, 1, 0, 0, 0)) is not None
