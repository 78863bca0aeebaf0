"""Extended attributes (fs/xattr.py) against the in-memory fakes."""

from __future__ import annotations

import errno

import pytest
import trio

from fs import format as fmt
from fs import inode as inode_mod
from fs import xattr
from fs.testing.fakes import errno_of, make_context

INO = 1025
ROOT = inode_mod.Ctx(uid=0, gid=0, pid=1)
USER = inode_mod.Ctx(uid=1000, gid=1000, pid=2)
CREATE, REPLACE = xattr.XATTR_CREATE, xattr.XATTR_REPLACE


def run(fn, *args):
    return trio.run(fn, *args)


async def setup(fmt_vers: int = 2):
    mctx = make_context(fmt_vers)
    async with mctx.locks.inodes([INO], 2) as locks, inode_mod.index_lock(mctx) as il, \
            mctx.trans.hold():
        inode = inode_mod.new_inode(mctx, INO, 0o100644, 0, 0, (5, 0))
        inode_mod.store_inode(mctx, inode, locks[INO], il)
    return mctx


def raw_inode(mctx) -> fmt.Inode:
    return fmt.unpack_inode(INO, mctx.items.data[fmt.inode_key(INO)])


def xattr_items(mctx):
    return {k: v for k, v in mctx.items.data.items()
            if k[:3] == (fmt.ZONE_FS, INO, fmt.FS_XATTR)}


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("size", [0, 1, 892, 893, 896, 897, 1792, 1793, 4096, 65535])
def test_value_sizes_roundtrip(size):
    async def main():
        mctx = await setup()
        name = b"user.v"
        val = bytes((i * 13) & 0xFF for i in range(size))
        await xattr.setxattr(mctx, INO, name, val, 0, ROOT)
        assert await xattr.getxattr(mctx, INO, name, ROOT) == val
        nparts = xattr.nr_parts(len(name), size)
        items = xattr_items(mctx)
        assert len(items) == nparts
        assert all(len(v) <= fmt.XATTR_PART_SIZE for v in items.values())
        # replace with shorter and longer values: leftover parts go
        for v2 in (b"x", (val + b"yz")[:65535], b""):
            await xattr.setxattr(mctx, INO, name, v2, REPLACE, ROOT)
            assert await xattr.getxattr(mctx, INO, name, ROOT) == v2
            assert len(xattr_items(mctx)) == xattr.nr_parts(len(name), len(v2))
        await xattr.removexattr(mctx, INO, name, ROOT)
        assert xattr_items(mctx) == {}

    run(main)


def test_value_too_big_and_name_lengths():
    async def main():
        mctx = await setup()
        assert await errno_of(xattr.setxattr(mctx, INO, b"user.a", bytes(65536), 0, ROOT)) \
            == errno.E2BIG
        n255 = b"user." + b"n" * 250
        n256 = n255 + b"n"
        await xattr.setxattr(mctx, INO, n255, bytes(65535), 0, ROOT)
        assert await xattr.getxattr(mctx, INO, n255, ROOT) == bytes(65535)
        assert await errno_of(xattr.setxattr(mctx, INO, n256, b"v", 0, ROOT)) == errno.ERANGE
        assert await errno_of(xattr.getxattr(mctx, INO, n256, ROOT)) == errno.ERANGE
        assert await errno_of(xattr.removexattr(mctx, INO, n256, ROOT)) == errno.ERANGE
        assert await xattr.listxattr(mctx, INO, ROOT) == [n255]

    run(main)


def test_namespaces():
    async def main():
        mctx = await setup()
        for name in (b"user.x", b"trusted.x", b"security.selinux", b"scoutfs.hide.x"):
            await xattr.setxattr(mctx, INO, name, b"v", 0, ROOT)
            assert await xattr.getxattr(mctx, INO, name, ROOT) == b"v"
        # ACL names take only well-formed ACLs (round trips are in test_acl.py)
        for name in (b"system.posix_acl_access", b"system.posix_acl_default"):
            assert await errno_of(xattr.setxattr(mctx, INO, name, b"v", 0, ROOT)) \
                == errno.EINVAL, name
        for name in (b"", b"foo.bar", b"nonamespace", b"system.other", b"User.x"):
            assert await errno_of(xattr.setxattr(mctx, INO, name, b"v", 0, ROOT)) \
                == errno.EOPNOTSUPP, name
            assert await errno_of(xattr.getxattr(mctx, INO, name, ROOT)) == errno.EOPNOTSUPP
        assert await errno_of(xattr.setxattr(mctx, INO, b"user.", b"v", 0, ROOT)) \
            == errno.EINVAL

    run(main)


def test_flags():
    async def main():
        mctx = await setup()
        assert await errno_of(xattr.setxattr(mctx, INO, b"user.a", b"1", CREATE | REPLACE,
                                             ROOT)) == errno.EINVAL
        assert await errno_of(xattr.setxattr(mctx, INO, b"user.a", b"1", 4, ROOT)) \
            == errno.EINVAL
        assert await errno_of(xattr.setxattr(mctx, INO, b"user.a", b"1", REPLACE, ROOT)) \
            == errno.ENODATA
        await xattr.setxattr(mctx, INO, b"user.a", b"1", CREATE, ROOT)
        assert await errno_of(xattr.setxattr(mctx, INO, b"user.a", b"2", CREATE, ROOT)) \
            == errno.EEXIST
        await xattr.setxattr(mctx, INO, b"user.a", b"3", REPLACE, ROOT)
        await xattr.setxattr(mctx, INO, b"user.a", b"4", 0, ROOT)
        assert await xattr.getxattr(mctx, INO, b"user.a", ROOT) == b"4"
        assert await errno_of(xattr.getxattr(mctx, INO, b"user.b", ROOT)) == errno.ENODATA
        assert await errno_of(xattr.removexattr(mctx, INO, b"user.b", ROOT)) == errno.ENODATA
        await xattr.removexattr(mctx, INO, b"user.a", ROOT)
        assert await errno_of(xattr.removexattr(mctx, INO, b"user.a", ROOT)) == errno.ENODATA
        assert await errno_of(xattr.getxattr(mctx, 5000, b"user.a", ROOT)) == errno.ENOENT

    run(main)


def test_ctime_meta_seq_and_ids():
    async def main():
        mctx = await setup()
        mctx.now = lambda: (77, 1)
        await mctx.trans.sync()
        i0 = raw_inode(mctx)
        await xattr.setxattr(mctx, INO, b"user.a", b"1", 0, ROOT)
        i1 = raw_inode(mctx)
        assert i1.ctime == (77, 1) and i1.mtime == i0.mtime
        assert i1.meta_seq == mctx.trans.seq != i0.meta_seq
        assert i1.data_version == i0.data_version and i1.data_seq == i0.data_seq
        assert i1.next_xattr_id == i0.next_xattr_id + 1
        await xattr.setxattr(mctx, INO, b"user.a", b"2", 0, ROOT)  # replace keeps the id
        assert raw_inode(mctx).next_xattr_id == i1.next_xattr_id
        await mctx.trans.sync()
        mctx.now = lambda: (88, 0)
        await xattr.removexattr(mctx, INO, b"user.a", ROOT)
        i2 = raw_inode(mctx)
        assert i2.ctime == (88, 0) and i2.meta_seq == mctx.trans.seq
        # failures change nothing
        before = dict(mctx.items.data)
        await errno_of(xattr.removexattr(mctx, INO, b"user.a", ROOT))
        await errno_of(xattr.setxattr(mctx, INO, b"user.q", b"1", REPLACE, ROOT))
        assert dict(mctx.items.data) == before

    run(main)


def test_hash_collisions(monkeypatch):
    monkeypatch.setattr(fmt, "hash64", lambda name: 42)

    async def main():
        mctx = await setup()
        names = [b"user.%d" % i for i in range(5)]
        for i, n in enumerate(names):
            await xattr.setxattr(mctx, INO, n, bytes([i]) * (i * 500), 0, ROOT)
        for i, n in enumerate(names):
            assert await xattr.getxattr(mctx, INO, n, ROOT) == bytes([i]) * (i * 500)
        await xattr.removexattr(mctx, INO, names[2], ROOT)
        assert await errno_of(xattr.getxattr(mctx, INO, names[2], ROOT)) == errno.ENODATA
        assert await xattr.getxattr(mctx, INO, names[3], ROOT) == bytes([3]) * 1500
        assert sorted(await xattr.listxattr(mctx, INO, ROOT)) == sorted(
            names[:2] + names[3:])

    run(main)


def test_many_xattrs_and_delete_all():
    async def main():
        mctx = await setup()
        names = [b"user.attr-%04d" % i for i in range(300)]
        for n in names:
            await xattr.setxattr(mctx, INO, n, n * 5, 0, ROOT)
        assert sorted(await xattr.listxattr(mctx, INO, ROOT)) == names
        for n in names[::37]:
            assert await xattr.getxattr(mctx, INO, n, ROOT) == n * 5
        async with mctx.locks.inodes([INO], 2) as locks, mctx.trans.hold():
            await xattr.delete_all(mctx, INO, locks[INO])
        assert xattr_items(mctx) == {}

    run(main)


# --------------------------------------------------------------------------- list


def test_list_hides_hidden_and_trusted_for_users():
    async def main():
        mctx = await setup()
        for n in (b"user.a", b"scoutfs.hide.h", b"scoutfs.srch.hide.h2", b"scoutfs.totl.t.1.2.3",
                  b"trusted.t", b"security.s"):
            await xattr.setxattr(mctx, INO, n, b"7", 0, ROOT)
        assert sorted(await xattr.listxattr(mctx, INO, ROOT)) == [
            b"scoutfs.totl.t.1.2.3", b"security.s", b"trusted.t", b"user.a"]
        assert sorted(await xattr.listxattr(mctx, INO, USER)) == [
            b"scoutfs.totl.t.1.2.3", b"security.s", b"user.a"]
        assert sorted(n for *_, n in await xattr.list_hidden(mctx, INO)) == [
            b"scoutfs.hide.h", b"scoutfs.srch.hide.h2"]
        # hidden ones can still be read by name
        assert await xattr.getxattr(mctx, INO, b"scoutfs.hide.h", USER) == b"7"

    run(main)


# --------------------------------------------------------------------------- tags


@pytest.mark.parametrize("name", [
    b"scoutfs.hide.x", b"scoutfs.srch.x", b"scoutfs.hide.srch.x", b"scoutfs.srch.hide.x",
    b"scoutfs.hide.srch.", b"scoutfs.totl.a.1.2.3", b"scoutfs.hide.totl.0x10.010.99",
    b"scoutfs.indx.0.0", b"scoutfs.hide.indx.foo.255.18446744073709551615",
])
def test_valid_tags(name):
    async def main():
        mctx = await setup()
        val = b"" if b"indx." in name else b"5"
        await xattr.setxattr(mctx, INO, name, val, 0, ROOT)
        assert await xattr.getxattr(mctx, INO, name, ROOT) == val
        await xattr.removexattr(mctx, INO, name, ROOT)

    run(main)


@pytest.mark.parametrize("name", [
    b"scoutfs.", b"scoutfs.x", b"scoutfs.hid.x", b"scoutfs.hide.hide.x",
    b"scoutfs.srch.hide.srch.x", b"scoutfs.totl.indx.1.2.3", b"scoutfs.indx.totl.1.2",
    b"scoutfs.totl.1.2", b"scoutfs.totl.a.b.1.2", b"scoutfs.totl.a.1.2.+3",
    b"scoutfs.totl.a.1..3", b"scoutfs.totl.a.1.2.18446744073709551616",
    b"scoutfs.totl.a.1.2.09", b"scoutfs.indx.256.1", b"scoutfs.indx.1", b"scoutfs.indx.1.x",
])
def test_invalid_tags(name):
    async def main():
        mctx = await setup()
        assert await errno_of(xattr.setxattr(mctx, INO, name, b"", 0, ROOT)) == errno.EINVAL
        assert await errno_of(xattr.getxattr(mctx, INO, name, ROOT)) == errno.ENODATA

    run(main)


@pytest.mark.parametrize("value,ok", [
    (b"1", True), (b"0", True), (b"0x1f", True), (b"017", True), (b"18446744073709551615", True),
    (b"+1", False), (b"10.", False), (b"-", False), (b"-1", False), (b"junk10", False),
    (b"10junk", False), (b"", False), (b"1\n", False), (b" 1", False), (b"08", False),
    (b"0x", False), (b"18446744073709551616", False), (b"0" * 24, False),
])
def test_totl_values(value, ok):
    async def main():
        mctx = await setup()
        err = await errno_of(xattr.setxattr(mctx, INO, b"scoutfs.totl.t.1.2.3", value, 0, ROOT))
        assert err == (0 if ok else errno.EINVAL)

    run(main)


def test_indx_rules():
    async def main():
        mctx = await setup()
        name = b"scoutfs.hide.indx.x.3.4"
        assert await errno_of(xattr.setxattr(mctx, INO, name, b"v", 0, ROOT)) == errno.EINVAL
        await xattr.setxattr(mctx, INO, name, b"", 0, ROOT)
        await xattr.setxattr(mctx, INO, name, b"", 0, ROOT)  # again: fine
        v1 = await setup(fmt_vers=1)
        assert await errno_of(xattr.setxattr(v1, INO, name, b"", 0, ROOT)) == errno.EINVAL

    run(main)


def test_scoutfs_names_need_root():
    async def main():
        mctx = await setup()
        for n in (b"scoutfs.hide.x", b"scoutfs.totl.a.1.2.3", b"scoutfs.srch.s"):
            assert await errno_of(xattr.setxattr(mctx, INO, n, b"1", 0, USER)) == errno.EPERM
            await xattr.setxattr(mctx, INO, n, b"1", 0, ROOT)
            assert await errno_of(xattr.removexattr(mctx, INO, n, USER)) == errno.EPERM
        # tag syntax is checked before permission
        assert await errno_of(xattr.setxattr(mctx, INO, b"scoutfs.x", b"1", 0, USER)) \
            == errno.EINVAL
        await xattr.setxattr(mctx, INO, b"user.u", b"1", 0, USER)

    run(main)


def test_retention_refuses_only_user_xattrs():
    async def main():
        mctx = await setup()
        await xattr.setxattr(mctx, INO, b"user.a", b"1", 0, ROOT)
        async with mctx.locks.inodes([INO], 2) as locks, inode_mod.index_lock(mctx) as il, \
                mctx.trans.hold():
            inode = await inode_mod.load_inode(mctx, INO, locks[INO])
            inode.flags |= fmt.INODE_FLAG_RETENTION
            inode_mod.store_inode(mctx, inode, locks[INO], il)
        assert await errno_of(xattr.setxattr(mctx, INO, b"user.b", b"1", 0, ROOT)) \
            == errno.EPERM
        assert await errno_of(xattr.removexattr(mctx, INO, b"user.a", ROOT)) == errno.EPERM
        # other xattrs still work (spec §5.11)
        for name in (b"scoutfs.hide.x", b"trusted.t", b"security.s", b"scoutfs.srch.y"):
            await xattr.setxattr(mctx, INO, name, b"1", 0, ROOT)
            await xattr.removexattr(mctx, INO, name, ROOT)

    run(main)


def test_parse_u64():
    assert xattr.parse_u64(b"0") == 0
    assert xattr.parse_u64(b"0x10") == 16
    assert xattr.parse_u64(b"0X1f") == 31
    assert xattr.parse_u64(b"010") == 8
    assert xattr.parse_u64(b"18446744073709551615") == fmt.U64_MAX
    assert xattr.parse_totl_name(b"scoutfs.totl.name.1.0x2.03") == (1, 2, 3)
    assert xattr.parse_indx_name(b"scoutfs.indx.n.255.7") == (255, 7)


def test_no_ctx_is_privileged():
    async def main():
        mctx = await setup()
        await xattr.setxattr(mctx, INO, b"scoutfs.hide.x", b"1", 0, None)
        await xattr.setxattr(mctx, INO, b"trusted.t", b"1", 0, None)
        assert await xattr.listxattr(mctx, INO, None) == [b"trusted.t"]
        assert await xattr.getxattr(mctx, INO, b"scoutfs.hide.x", None) == b"1"
        await xattr.removexattr(mctx, INO, b"scoutfs.hide.x", None)

    run(main)


def test_permission_before_totl_indx_names():
    """Upstream's order: tag syntax (EINVAL), then CAP_SYS_ADMIN (EPERM), then the .totl. /
    .indx. name numbers and values (EINVAL)."""
    async def main():
        mctx = await setup()
        for n, v in ((b"scoutfs.totl.a.1.2.x", b"1"), (b"scoutfs.totl.a.1.2.3", b"junk"),
                     (b"scoutfs.indx.a.256.1", b""), (b"scoutfs.indx.a.1.2", b"v")):
            assert await errno_of(xattr.setxattr(mctx, INO, n, v, 0, USER)) == errno.EPERM
            assert await errno_of(xattr.setxattr(mctx, INO, n, v, 0, ROOT)) == errno.EINVAL
        for n in (b"scoutfs.", b"scoutfs.hide.hide.x", b"scoutfs.totl.indx.a.1.2.3"):
            assert await errno_of(xattr.setxattr(mctx, INO, n, b"", 0, USER)) == errno.EINVAL
        assert await errno_of(xattr.setxattr(mctx, INO, b"scoutfs.hide." + b"x" * 243, b"",
                                             0, ROOT)) == errno.ERANGE
        assert await errno_of(xattr.setxattr(mctx, INO, b"scoutfs.hide.x", b"x" * 65536, 0,
                                             ROOT)) == errno.E2BIG

    run(main)


# --------------------------------------------------------------------------- .indx. items


def indx_items(mctx):
    return sorted(fmt.unpack_xattr_indx_key(k) for k in mctx.items.data
                  if k[0] == fmt.ZONE_XATTR_INDX)


async def read_all(mctx, first=(0, 0, 0), last=(255, fmt.U64_MAX, fmt.U64_MAX), limit=1000):
    async with mctx.locks.zone(xattr.INDX_ZONE_KEY, 1) as lock:
        return await xattr.read_index(mctx, first, last, limit, lock)


def test_indx_key_packing_sorts():
    keys = [(0, 0, 0, 0), (0, 0, 0, 1), (0, 0, 1, 0), (0, 255, 0, 0), (0, 256, 0, 0),
            (0, fmt.U64_MAX, fmt.U64_MAX, fmt.U64_MAX), (1, 0, 0, 0),
            (255, fmt.U64_MAX, fmt.U64_MAX, fmt.U64_MAX)]
    packed = [fmt.xattr_indx_key(*k) for k in keys]
    assert packed == sorted(packed)
    assert [fmt.unpack_xattr_indx_key(p) for p in packed] == keys
    assert all(p[0] == fmt.ZONE_XATTR_INDX for p in packed)


def test_indx_items_follow_xattrs():
    async def main():
        mctx = await setup()
        await xattr.setxattr(mctx, INO, b"scoutfs.hide.indx.a.3.4", b"", 0, ROOT)
        await xattr.setxattr(mctx, INO, b"scoutfs.indx.b.3.4", b"", 0, ROOT)  # same entry
        await xattr.setxattr(mctx, INO, b"scoutfs.hide.indx.c.0x10.0", b"", 0, ROOT)
        await xattr.setxattr(mctx, INO, b"user.indx.1.2", b"", 0, ROOT)  # no tag: no item
        items = indx_items(mctx)
        assert [(ma, mi, ino) for ma, mi, ino, _ in items] == [(3, 4, INO), (3, 4, INO),
                                                               (16, 0, INO)]
        assert len({xid for *_, xid in items}) == 3
        # setting it again is a no-op
        await xattr.setxattr(mctx, INO, b"scoutfs.indx.b.3.4", b"", 0, ROOT)
        assert indx_items(mctx) == items
        # de-duplicated reads, ranges
        assert await read_all(mctx) == [(3, 4, INO), (16, 0, INO)]
        assert await read_all(mctx, (3, 4, INO + 1)) == [(16, 0, INO)]
        assert await read_all(mctx, (0, 0, 0), (3, 4, INO)) == [(3, 4, INO)]
        assert await read_all(mctx, (0, 0, 0), (3, 4, INO - 1)) == []
        assert await read_all(mctx, limit=1) == [(3, 4, INO)]
        # removal deletes just that xattr's item
        await xattr.removexattr(mctx, INO, b"scoutfs.hide.indx.a.3.4", ROOT)
        assert await read_all(mctx) == [(3, 4, INO), (16, 0, INO)]
        await xattr.removexattr(mctx, INO, b"scoutfs.indx.b.3.4", ROOT)
        assert await read_all(mctx) == [(16, 0, INO)]
        assert await errno_of(xattr.removexattr(mctx, INO, b"scoutfs.indx.b.3.4", ROOT)) \
            == errno.ENODATA
        assert await read_all(mctx) == [(16, 0, INO)]

    run(main)


def test_failed_indx_sets_leave_no_items():
    async def main():
        mctx = await setup()
        n = b"scoutfs.indx.a.1.2"
        assert await errno_of(xattr.setxattr(mctx, INO, n, b"", REPLACE, ROOT)) == errno.ENODATA
        assert await errno_of(xattr.setxattr(mctx, INO, n, b"x", 0, ROOT)) == errno.EINVAL
        assert await errno_of(xattr.setxattr(mctx, INO, n, b"", 0, USER)) == errno.EPERM
        assert indx_items(mctx) == []
        await xattr.setxattr(mctx, INO, n, b"", CREATE, ROOT)
        assert await errno_of(xattr.setxattr(mctx, INO, n, b"", CREATE, ROOT)) == errno.EEXIST
        assert len(indx_items(mctx)) == 1

    run(main)


def test_delete_all_deletes_indx_items():
    async def main():
        mctx = await setup()
        await xattr.setxattr(mctx, INO, b"scoutfs.indx.a.1.2", b"", 0, ROOT)
        await xattr.setxattr(mctx, INO, b"scoutfs.hide.indx.b.255.7", b"", 0, ROOT)
        await xattr.setxattr(mctx, INO, b"user.x", b"1", 0, ROOT)
        async with mctx.locks.inodes([INO], 2) as locks:
            with pytest.raises(AssertionError):
                async with mctx.trans.hold():
                    await xattr.delete_all(mctx, INO, locks[INO])
            async with xattr.indx_lock(mctx) as xl, mctx.trans.hold():
                await xattr.delete_all(mctx, INO, locks[INO], xl)
        assert indx_items(mctx) == []
        assert xattr_items(mctx) == {}
        assert await read_all(mctx) == []

    run(main)


def test_list_hidden_names():
    async def main():
        mctx = await setup()
        for n in (b"scoutfs.hide.a", b"scoutfs.srch.hide.b", b"scoutfs.srch.c", b"user.d",
                  b"scoutfs.hide.indx.e.1.2"):
            await xattr.setxattr(mctx, INO, n, b"" if b"indx" in n else b"1", 0, ROOT)
        assert sorted(n for *_, n in await xattr.list_hidden(mctx, INO)) == [
            b"scoutfs.hide.a", b"scoutfs.hide.indx.e.1.2", b"scoutfs.srch.hide.b"]
        assert sorted(await xattr.listxattr(mctx, INO, ROOT)) == [b"scoutfs.srch.c", b"user.d"]

    run(main)
