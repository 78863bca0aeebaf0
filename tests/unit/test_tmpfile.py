"""O_TMPFILE (Filesystem.tmpfile) and linking such an inode, over the in-memory fakes."""

from __future__ import annotations

import errno
import stat

import pytest
import trio

from fs import acl, data, xattr
from fs import format as fmt
from fs import inode as fsinode
from fs.inode import Ctx
from fs.testing.fakes import errno_of
from tests.unit.test_fallocate import fsck_problems
from tests.unit.test_namespace import (
    CTX,
    LOCK_WRITE,
    LOCK_WRITE_ONLY,
    check_entries,
    check_seq_index,
    items_of,
    names,
    setup,
)

ROOT = fmt.ROOT_INO


def run(fn):
    return trio.run(fn)


def real_setup():
    mctx, fs = setup()
    fs.data, fs.xattr = data, xattr
    return mctx, fs


def test_tmpfile_is_orphaned_and_deleted_on_forget():
    mctx, fs = setup()

    async def main():
        root0 = await fs.getattr(ROOT)
        hist = mctx.locks.history
        hist.clear()
        t = await fs.tmpfile(ROOT, 0o666, CTX)
        assert t.mode == stat.S_IFREG | 0o644  # the umask applies
        assert (t.nlink, t.uid, t.gid, t.size, t.blocks) == (0, 1000, 100, 0, 0)
        assert t.atime == t.mtime == t.ctime == t.crtime
        assert ("zone", fmt.ZONE_ORPHAN, LOCK_WRITE_ONLY) in hist
        assert ("inode", fmt.lock_group_first(t.ino), LOCK_WRITE) in hist
        assert mctx.items.data[fmt.orphan_key(t.ino)] == b""
        # no entry: the parent is unchanged
        assert await names(fs, ROOT) == []
        assert await fs.getattr(ROOT) == root0
        assert await fs.getattr(t.ino) == t
        check_entries(mctx)
        check_seq_index(mctx)
        assert fsck_problems(mctx) == []
        # never linked: its last forget deletes it, as an unlinked open file
        await fs.forget(t.ino)
        await fs.drain_deletions()
        assert not items_of(mctx, fmt.ZONE_FS, None, t.ino)
        assert not items_of(mctx, fmt.ZONE_ORPHAN)
        assert fs.data.freed == [t.ino] and fs.xattr.deleted == [t.ino]
        assert mctx.counters.get("inode_deleted") == 1
        assert await errno_of(fs.getattr(t.ino)) == errno.ENOENT
        check_seq_index(mctx)
        assert fsck_problems(mctx) == []

    run(main)


def test_tmpfile_linked_survives_forget():
    mctx, fs = real_setup()

    async def main():
        d = await fs.mkdir(ROOT, b"d", 0o755, CTX)
        t = await fs.tmpfile(d.ino, stat.S_IFREG | 0o600, CTX)
        assert t.mode == stat.S_IFREG | 0o600
        await fs.write(t.ino, 0, b"contents", CTX)
        await fs.setxattr(t.ino, b"user.x", b"1", 0, CTX)
        a = await fs.link(t.ino, ROOT, b"linked", CTX)
        assert a.nlink == 1
        assert fmt.orphan_key(t.ino) not in mctx.items.data
        assert fsck_problems(mctx) == []
        # the kernel's last forget after linkat leaves it alone
        await fs.forget(t.ino)
        await fs.drain_deletions()
        assert mctx.counters.get("inode_deleted") == 0
        assert (await fs.lookup(ROOT, b"linked")).ino == t.ino
        assert await fs.read(t.ino, 0, 100) == b"contents"
        assert await fs.getxattr(t.ino, b"user.x", CTX) == b"1"
        # a second link, then both names go: deleted on the next last forget
        await fs.link(t.ino, d.ino, b"again", CTX)
        assert (await fs.getattr(t.ino)).nlink == 2
        await fs.unlink(ROOT, b"linked")
        await fs.unlink(d.ino, b"again")
        assert fmt.orphan_key(t.ino) in mctx.items.data
        await fs.forget(t.ino)
        await fs.drain_deletions()
        assert mctx.counters.get("inode_deleted") == 1
        assert not items_of(mctx, fmt.ZONE_FS, None, t.ino)
        assert sum(n for _, n in mctx.trans.data_alloc.freed) == 1
        check_entries(mctx)
        check_seq_index(mctx)
        assert fsck_problems(mctx) == []

    run(main)


def test_forget_queued_before_link_does_not_delete():
    """Deletion re-checks the link count under the WRITE lock."""
    mctx, fs = setup()

    async def main():
        t = await fs.tmpfile(ROOT, 0o644, CTX)
        await fs.forget(t.ino)  # queued, not run yet
        await fs.link(t.ino, ROOT, b"n", CTX)
        await fs.drain_deletions()
        assert mctx.counters.get("inode_deleted") == 0
        assert (await fs.lookup(ROOT, b"n")).nlink == 1

    run(main)


def test_tmpfile_inherits_like_create():
    mctx, fs = real_setup()

    async def main():
        # setgid group and project id
        d = await fs.mkdir(ROOT, b"sg", 0o755, CTX)
        await fs.setattr(d.ino, mode=0o2775, gid=555, ctx=CTX)
        async with mctx.locks.inodes([d.ino], LOCK_WRITE) as locks:
            inode = await fsinode.load_inode(mctx, d.ino, locks[d.ino])
            inode.proj = 77
            async with fsinode.index_lock(mctx) as il, mctx.trans.hold():
                fsinode.store_inode(mctx, inode, locks[d.ino], il)
        t = await fs.tmpfile(d.ino, 0o2755, CTX)
        assert t.gid == 555 and not t.mode & stat.S_ISGID  # not in the group: dropped
        assert fmt.unpack_inode(t.ino, mctx.items.data[fmt.inode_key(t.ino)]).proj == 77
        # a default ACL replaces the umask and becomes the access ACL
        u077 = Ctx(uid=1000, gid=100, pid=0, umask=0o077)
        default = [(acl.USER_OBJ, 7, acl.UNDEFINED_ID), (acl.USER, 6, 22222),
                   (acl.GROUP_OBJ, 0, acl.UNDEFINED_ID), (acl.MASK, 6, acl.UNDEFINED_ID),
                   (acl.OTHER, 0, acl.UNDEFINED_ID)]
        a = await fs.mkdir(ROOT, b"acl", 0o777, CTX)
        await fs.setxattr(a.ino, acl.DEFAULT, acl.format_acl(default), 0, CTX)
        t2 = await fs.tmpfile(a.ino, 0o666, u077)
        assert t2.mode == stat.S_IFREG | 0o660
        assert (acl.USER, 6, 22222) in acl.parse(await fs.getxattr(t2.ino, acl.ACCESS, CTX))
        assert await errno_of(fs.getxattr(t2.ino, acl.DEFAULT, CTX)) == errno.ENODATA
        t3 = await fs.tmpfile(ROOT, 0o666, u077)
        assert t3.mode == stat.S_IFREG | 0o600
        check_seq_index(mctx)
        assert fsck_problems(mctx) == []

    run(main)


def test_tmpfile_errors():
    mctx, fs = setup()

    async def main():
        f = await fs.mknod(ROOT, b"f", 0o644, 0, CTX)
        assert await errno_of(fs.tmpfile(f.ino, 0o644, CTX)) == errno.ENOTDIR
        assert await errno_of(fs.tmpfile(99999, 0o644, CTX)) == errno.ENOENT
        for mode in (stat.S_IFDIR | 0o755, stat.S_IFIFO | 0o644, stat.S_IFLNK | 0o777):
            assert await errno_of(fs.tmpfile(ROOT, mode, CTX)) == errno.EINVAL
        d = await fs.mkdir(ROOT, b"d", 0o755, CTX)
        await fs.rmdir(ROOT, b"d")
        assert await errno_of(fs.tmpfile(d.ino, 0o644, CTX)) == errno.ENOENT
        assert set(items_of(mctx, fmt.ZONE_ORPHAN)) == {fmt.orphan_key(d.ino)}  # rmdir's

    run(main)


@pytest.mark.parametrize("name", [b"user.k", acl.ACCESS])
def test_setxattr_flags_through_filesystem(name):
    """XATTR_CREATE / XATTR_REPLACE reach fs.xattr (checked under the inode's WRITE lock)."""
    mctx, fs = real_setup()
    create, replace = xattr.XATTR_CREATE, xattr.XATTR_REPLACE
    value = acl.format_acl([(acl.USER_OBJ, 6, acl.UNDEFINED_ID),
                            (acl.USER, 4, 5000), (acl.GROUP_OBJ, 4, acl.UNDEFINED_ID),
                            (acl.MASK, 4, acl.UNDEFINED_ID), (acl.OTHER, 0, acl.UNDEFINED_ID)])

    async def main():
        f = await fs.mknod(ROOT, b"f", 0o644, 0, CTX)
        assert await errno_of(fs.setxattr(f.ino, name, value, create | replace, CTX)) \
            == errno.EINVAL
        assert await errno_of(fs.setxattr(f.ino, name, value, replace, CTX)) == errno.ENODATA
        await fs.setxattr(f.ino, name, value, create, CTX)
        assert await errno_of(fs.setxattr(f.ino, name, value, create, CTX)) == errno.EEXIST
        await fs.setxattr(f.ino, name, value, replace, CTX)
        assert await fs.getxattr(f.ino, name, CTX) == value

    run(main)
