"""POSIX ACLs: fs/acl.py's format and mode math, and the filesystem keeping ACLs and modes in
step (setxattr, chmod, create inheritance, umask) over the in-memory fakes."""

from __future__ import annotations

import errno
import stat

import pytest
import trio

from fs import acl, xattr
from fs import format as fmt
from fs.errors import FsError
from fs.filesystem import Filesystem
from fs.inode import Ctx
from fs.testing.fakes import make_context

ROOT_INO = fmt.ROOT_INO
ROOT = Ctx(uid=0, gid=0, pid=0, umask=0o022)
USER = Ctx(uid=1000, gid=100, pid=0, umask=0o022)
U = acl.UNDEFINED_ID


def entries(*spec) -> list[acl.Entry]:
    """Entries from (tag, perm) or (tag, perm, id) tuples."""
    return [(s[0], s[1], s[2] if len(s) > 2 else U) for s in spec]


def base(u, g, o):
    return entries((acl.USER_OBJ, u), (acl.GROUP_OBJ, g), (acl.OTHER, o))


NAMED = entries((acl.USER_OBJ, 6), (acl.USER, 6, 22222), (acl.GROUP_OBJ, 0),
                (acl.GROUP, 4, 44444), (acl.MASK, 6), (acl.OTHER, 0))


def run(fn):
    return trio.run(fn)


def errno_of(fn, *args) -> int:
    try:
        fn(*args)
    except FsError as e:
        return e.errno
    return 0


# --------------------------------------------------------------------------- format


def test_parse_format_roundtrip():
    value = acl.format_acl(NAMED)
    assert value[:4] == b"\x02\x00\x00\x00" and len(value) == 4 + 8 * len(NAMED)
    assert acl.parse(value) == NAMED
    assert acl.parse_valid(value) == NAMED
    # ids of the object entries are written (and read) as undefined
    raw = acl.HDR.pack(2) + acl.ENTRY.pack(acl.USER_OBJ, 7, 5) + \
        acl.ENTRY.pack(acl.GROUP_OBJ, 5, 6) + acl.ENTRY.pack(acl.OTHER, 0, 7)
    assert acl.parse(raw) == base(7, 5, 0)
    assert acl.format_acl(acl.parse(raw)) == acl.format_acl(base(7, 5, 0))


def test_parse_empty_and_malformed():
    assert acl.parse(b"") is None
    assert acl.parse(acl.HDR.pack(2)) is None
    good = acl.format_acl(base(6, 4, 4))
    assert errno_of(acl.parse, b"\x02\x00") == errno.EINVAL
    assert errno_of(acl.parse, good + b"\x00") == errno.EINVAL
    assert errno_of(acl.parse, acl.HDR.pack(1) + good[4:]) == errno.EOPNOTSUPP
    assert errno_of(acl.parse, good + acl.ENTRY.pack(0x40, 0, 0)) == errno.EINVAL


@pytest.mark.parametrize("bad", [
    entries((acl.GROUP_OBJ, 4), (acl.USER_OBJ, 6), (acl.OTHER, 4)),        # order
    entries((acl.USER_OBJ, 6), (acl.OTHER, 4)),                             # no group
    entries((acl.USER_OBJ, 6), (acl.GROUP_OBJ, 4)),                         # no other
    entries((acl.USER_OBJ, 6), (acl.USER, 6, 5), (acl.GROUP_OBJ, 4), (acl.OTHER, 0)),  # mask
    entries((acl.USER_OBJ, 8), (acl.GROUP_OBJ, 4), (acl.OTHER, 4)),        # perm bits
    entries((acl.USER_OBJ, 6), (acl.USER_OBJ, 6), (acl.GROUP_OBJ, 4), (acl.OTHER, 4)),
    entries((acl.USER_OBJ, 6), (acl.GROUP_OBJ, 4), (acl.USER, 6, 5), (acl.MASK, 6),
            (acl.OTHER, 4)),
])
def test_check_rejects(bad):
    assert errno_of(acl.check, bad) == errno.EINVAL
    assert errno_of(acl.parse_valid, acl.format_acl(bad)) == errno.EINVAL


def test_check_accepts():
    acl.check(base(7, 5, 5))
    acl.check(NAMED)
    acl.check(entries((acl.USER_OBJ, 6), (acl.GROUP_OBJ, 4), (acl.MASK, 4), (acl.OTHER, 0)))


# --------------------------------------------------------------------------- mode math


def test_equiv_mode():
    assert acl.equiv_mode(base(6, 4, 0), 0o100777) == (False, 0o100640)
    assert acl.equiv_mode(base(7, 0, 5), 0o42000) == (False, 0o42705)
    # the mask, not GROUP_OBJ, gives the group bits
    assert acl.equiv_mode(NAMED, 0o100600) == (True, 0o100660)
    only_mask = entries((acl.USER_OBJ, 6), (acl.GROUP_OBJ, 0), (acl.MASK, 4), (acl.OTHER, 0))
    assert acl.equiv_mode(only_mask, 0o100000) == (True, 0o100640)
    assert acl.from_mode(0o100754) == base(7, 5, 4)


def test_chmod_updates_obj_and_mask_entries():
    out = acl.chmod(NAMED, 0o100750)
    assert out == entries((acl.USER_OBJ, 7), (acl.USER, 6, 22222), (acl.GROUP_OBJ, 0),
                          (acl.GROUP, 4, 44444), (acl.MASK, 5), (acl.OTHER, 0))
    # without a mask GROUP_OBJ takes the group bits
    assert acl.chmod(base(6, 4, 4), 0o100705) == base(7, 0, 5)


def test_create_masq_and_inheritance():
    default = entries((acl.USER_OBJ, 7), (acl.USER, 6, 22222), (acl.USER, 4, 33333),
                      (acl.GROUP_OBJ, 0), (acl.MASK, 6), (acl.OTHER, 0))
    dval = acl.format_acl(default)
    # a file asking 0666: mask rw-, mode rw-rw----, no umask
    mode, access, dflt = acl.create(dval, stat.S_IFREG | 0o666, 0o077)
    assert mode == stat.S_IFREG | 0o660 and dflt is None
    assert acl.parse(access) == entries(
        (acl.USER_OBJ, 6), (acl.USER, 6, 22222), (acl.USER, 4, 33333), (acl.GROUP_OBJ, 0),
        (acl.MASK, 6), (acl.OTHER, 0))
    # a directory asking 0777 also inherits the default ACL
    mode, access, dflt = acl.create(dval, stat.S_IFDIR | 0o2777, 0o022)
    assert mode == stat.S_IFDIR | 0o2760 and dflt == dval
    assert acl.parse(access)[0] == (acl.USER_OBJ, 7, U)
    # a file asking 0600: the mask becomes ---
    mode, access, _ = acl.create(dval, stat.S_IFREG | 0o600, 0o022)
    assert mode == stat.S_IFREG | 0o600
    assert (acl.MASK, 0, U) in acl.parse(access)
    # a default ACL equivalent to a mode gives no access ACL, only the mode
    eq = acl.format_acl(base(7, 5, 0))
    assert acl.create(eq, stat.S_IFREG | 0o666, 0o022) == (stat.S_IFREG | 0o640, None, None)
    assert acl.create(eq, stat.S_IFDIR | 0o777, 0o022) == (stat.S_IFDIR | 0o750, None, eq)
    # without a default ACL: the umask, no ACLs; symlinks: nothing at all
    assert acl.create(None, stat.S_IFREG | 0o4666, 0o027) == (stat.S_IFREG | 0o4640, None, None)
    assert acl.create(dval, stat.S_IFLNK | 0o777, 0o022) == (stat.S_IFLNK | 0o777, None, None)


def test_create_masq_without_mask_uses_group_obj():
    not_equiv, out, mode = acl.create_masq(base(7, 7, 7), stat.S_IFREG | 0o640)
    assert not not_equiv and out == base(6, 4, 0) and mode == stat.S_IFREG | 0o640


# --------------------------------------------------------------------------- filesystem


def setup():
    mctx = make_context()
    t = [1000]

    def now():
        t[0] += 1
        return (t[0], 0)

    mctx.now = now
    fs = Filesystem(mctx)
    return mctx, fs


async def get(fs, ino, name) -> bytes | None:
    try:
        return await fs.getxattr(ino, name, ROOT)
    except FsError as e:
        assert e.errno == errno.ENODATA
        return None


async def fs_errno(coro) -> int:
    try:
        await coro
    except FsError as e:
        return e.errno
    return 0


def test_set_access_acl_updates_mode_and_reduces_equivalent():
    async def main():
        mctx, fs = setup()
        f = await fs.mknod(ROOT_INO, b"f", stat.S_IFREG | 0o600, 0, USER)
        before = await fs.getattr(f.ino)
        await fs.setxattr(f.ino, acl.ACCESS, acl.format_acl(NAMED), 0, USER)
        a = await fs.getattr(f.ino)
        assert a.mode == stat.S_IFREG | 0o660 and a.ctime > before.ctime
        assert acl.parse(await get(fs, f.ino, acl.ACCESS)) == NAMED
        # an equivalent ACL: only the mode changes, the stored ACL goes away
        await fs.setxattr(f.ino, acl.ACCESS, acl.format_acl(base(6, 0, 4)), 0, USER)
        assert (await fs.getattr(f.ino)).mode == stat.S_IFREG | 0o604
        assert await get(fs, f.ino, acl.ACCESS) is None
        assert acl.ACCESS not in await fs.listxattr(f.ino, USER)
        # an empty value removes it; removing a missing ACL succeeds
        await fs.setxattr(f.ino, acl.ACCESS, acl.format_acl(NAMED), 0, USER)
        await fs.setxattr(f.ino, acl.ACCESS, acl.HDR.pack(2), 0, USER)
        assert await get(fs, f.ino, acl.ACCESS) is None
        await fs.removexattr(f.ino, acl.ACCESS, USER)
        # removal leaves the mode as it is
        await fs.setxattr(f.ino, acl.ACCESS, acl.format_acl(NAMED), 0, USER)
        await fs.removexattr(f.ino, acl.ACCESS, USER)
        assert (await fs.getattr(f.ino)).mode == stat.S_IFREG | 0o660
        assert await get(fs, f.ino, acl.ACCESS) is None

    run(main)


def test_set_acl_errors():
    async def main():
        mctx, fs = setup()
        f = await fs.mknod(ROOT_INO, b"f", stat.S_IFREG | 0o644, 0, USER)
        d = await fs.mkdir(ROOT_INO, b"d", 0o755, USER)
        other = Ctx(uid=2000, gid=100, pid=0)
        good = acl.format_acl(NAMED)
        assert await fs_errno(fs.setxattr(f.ino, acl.ACCESS, good, 0, other)) == errno.EPERM
        assert await fs_errno(fs.setxattr(d.ino, acl.DEFAULT, good, 0, other)) == errno.EPERM
        assert await fs_errno(fs.removexattr(f.ino, acl.ACCESS, other)) == errno.EPERM
        await fs.setxattr(f.ino, acl.ACCESS, good, 0, ROOT)  # root may
        assert await fs_errno(fs.setxattr(f.ino, acl.ACCESS, good[:-1], 0, USER)) == \
            errno.EINVAL
        bad = acl.format_acl(entries((acl.USER_OBJ, 6), (acl.USER, 6, 5), (acl.GROUP_OBJ, 4),
                                     (acl.OTHER, 0)))
        assert await fs_errno(fs.setxattr(f.ino, acl.ACCESS, bad, 0, USER)) == errno.EINVAL
        # default ACLs only on directories; removing one elsewhere is a no-op
        assert await fs_errno(fs.setxattr(f.ino, acl.DEFAULT, good, 0, USER)) == errno.EACCES
        await fs.removexattr(f.ino, acl.DEFAULT, USER)
        await fs.setxattr(d.ino, acl.DEFAULT, good, 0, USER)
        assert await get(fs, d.ino, acl.DEFAULT) == good
        assert (await fs.getattr(d.ino)).mode == stat.S_IFDIR | 0o755  # mode untouched
        await fs.removexattr(d.ino, acl.DEFAULT, USER)
        assert await get(fs, d.ino, acl.DEFAULT) is None
        # a default ACL equal to a mode is still a default ACL
        await fs.setxattr(d.ino, acl.DEFAULT, acl.format_acl(base(7, 5, 5)), 0, USER)
        assert await get(fs, d.ino, acl.DEFAULT) is not None

    run(main)


def test_set_access_acl_clears_sgid_outside_the_group():
    async def main():
        mctx, fs = setup()
        f = await fs.mknod(ROOT_INO, b"f", stat.S_IFREG | 0o2770, 0, USER)
        await fs.setattr(f.ino, gid=555, mode=0o2770, ctx=ROOT)
        await fs.setxattr(f.ino, acl.ACCESS, acl.format_acl(NAMED), 0, USER)
        assert (await fs.getattr(f.ino)).mode == stat.S_IFREG | 0o660
        g = await fs.mknod(ROOT_INO, b"g", stat.S_IFREG | 0o2770, 0, USER)
        await fs.setattr(g.ino, mode=0o2770, ctx=ROOT)  # gid 100: the caller's group
        await fs.setxattr(g.ino, acl.ACCESS, acl.format_acl(NAMED), 0, USER)
        assert (await fs.getattr(g.ino)).mode == stat.S_IFREG | 0o2660

    run(main)


def test_chmod_updates_access_acl():
    async def main():
        mctx, fs = setup()
        f = await fs.mknod(ROOT_INO, b"f", stat.S_IFREG | 0o600, 0, USER)
        await fs.setxattr(f.ino, acl.ACCESS, acl.format_acl(NAMED), 0, USER)
        await fs.setattr(f.ino, mode=0o745, ctx=USER)
        assert acl.parse(await get(fs, f.ino, acl.ACCESS)) == acl.chmod(NAMED, 0o745)
        assert (await fs.getattr(f.ino)).mode == stat.S_IFREG | 0o745
        # a file without an ACL gets none from chmod
        g = await fs.mknod(ROOT_INO, b"g", stat.S_IFREG | 0o600, 0, USER)
        await fs.setattr(g.ino, mode=0o640, ctx=USER)
        assert await get(fs, g.ino, acl.ACCESS) is None

    run(main)


def test_create_applies_umask_only_without_default_acl():
    async def main():
        mctx, fs = setup()
        u077 = Ctx(uid=1000, gid=100, pid=0, umask=0o077)
        f = await fs.mknod(ROOT_INO, b"f", stat.S_IFREG | 0o666, 0, u077)
        d = await fs.mkdir(ROOT_INO, b"d", 0o777, USER)
        p = await fs.mknod(ROOT_INO, b"p", stat.S_IFIFO | 0o666, 0, u077)
        s = await fs.symlink(ROOT_INO, b"s", b"t", u077)
        assert f.mode == stat.S_IFREG | 0o600 and p.mode == stat.S_IFIFO | 0o600
        assert d.mode == stat.S_IFDIR | 0o755 and s.mode == stat.S_IFLNK | 0o777
        for ino in (f.ino, d.ino, p.ino, s.ino):
            assert await fs.listxattr(ino, ROOT) == []

        default = entries((acl.USER_OBJ, 7), (acl.USER, 6, 22222), (acl.GROUP_OBJ, 0),
                          (acl.MASK, 6), (acl.OTHER, 0))
        dval = acl.format_acl(default)
        await fs.setxattr(d.ino, acl.DEFAULT, dval, 0, USER)
        nf = await fs.mknod(d.ino, b"f", stat.S_IFREG | 0o666, 0, u077)
        assert nf.mode == stat.S_IFREG | 0o660  # no umask
        assert acl.parse(await get(fs, nf.ino, acl.ACCESS)) == entries(
            (acl.USER_OBJ, 6), (acl.USER, 6, 22222), (acl.GROUP_OBJ, 0), (acl.MASK, 6),
            (acl.OTHER, 0))
        assert await get(fs, nf.ino, acl.DEFAULT) is None
        nd = await fs.mkdir(d.ino, b"sub", 0o777, u077)
        assert nd.mode == stat.S_IFDIR | 0o760
        assert await get(fs, nd.ino, acl.DEFAULT) == dval
        assert (acl.MASK, 6, U) in acl.parse(await get(fs, nd.ino, acl.ACCESS))
        # grandchildren inherit from the inherited default
        gf = await fs.mknod(nd.ino, b"g", stat.S_IFREG | 0o640, 0, USER)
        assert gf.mode == stat.S_IFREG | 0o640
        assert (acl.MASK, 4, U) in acl.parse(await get(fs, gf.ino, acl.ACCESS))
        ns = await fs.symlink(d.ino, b"s", b"t", USER)
        assert ns.mode == stat.S_IFLNK | 0o777 and await fs.listxattr(ns.ino, ROOT) == []
        # both ACL xattrs are items of the new inode, with distinct ids
        ids = {k[4] for k in mctx.items.data if k[:3] == (fmt.ZONE_FS, nd.ino, fmt.FS_XATTR)}
        assert len(ids) == 2
        # deleting the inode deletes its ACLs
        await fs.unlink(d.ino, b"f", USER)
        await fs.forget(nf.ino)
        await fs.drain_deletions()
        assert not [k for k in mctx.items.data if k[:3] == (fmt.ZONE_FS, nf.ino, fmt.FS_XATTR)]

    run(main)


def test_xattr_put_helper():
    async def main():
        mctx, fs = setup()
        f = await fs.mknod(ROOT_INO, b"f", stat.S_IFREG | 0o600, 0, USER)
        await fs.setxattr(f.ino, b"user.x", b"1", 0, USER)
        await fs.setxattr(f.ino, acl.ACCESS, acl.format_acl(NAMED), 0, USER)
        assert sorted(await fs.listxattr(f.ino, USER)) == [b"system.posix_acl_access",
                                                           b"user.x"]
        assert await xattr.getxattr(mctx, f.ino, b"user.x", USER) == b"1"

    run(main)
