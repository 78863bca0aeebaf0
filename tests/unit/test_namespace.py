"""Namespace operations of fs.filesystem over the in-memory fakes of fs.testing.fakes."""

from __future__ import annotations

import errno
import os
import stat

import pytest
import trio

from fs import format as fmt
from fs.errors import FsError
from fs.filesystem import (
    INODES_PER_META_BLOCK,
    RENAME_EXCHANGE,
    RENAME_NOREPLACE,
    Filesystem,
)
from fs.inode import Ctx
from fs.testing.fakes import LOCK_READ, LOCK_WRITE, LOCK_WRITE_ONLY, make_context

ROOT = fmt.ROOT_INO
CTX = Ctx(uid=1000, gid=100, pid=42)


class StubData:
    """Stands in for fs.data: records calls, frees extent items on deletion."""

    def __init__(self) -> None:
        self.truncates: list[tuple[int, int]] = []
        self.freed: list[int] = []

    async def truncate(self, mctx, ino, size, ctx):
        from fs import inode as fsinode

        self.truncates.append((ino, size))
        async with mctx.locks.inodes([ino], LOCK_WRITE) as locks, \
                fsinode.index_lock(mctx) as ilock, mctx.trans.hold():
            inode = await fsinode.load_inode(mctx, ino, locks[ino])
            inode.size = size
            fsinode.touch(inode, True, True, mctx.now())
            fsinode.bump_data(inode, mctx)
            fsinode.store_inode(mctx, inode, locks[ino], ilock)

    async def free_extents(self, mctx, inode, lock):
        self.freed.append(inode.ino)
        for key in list(mctx.items.data.irange(fmt.extent_key(inode.ino, 0, 0),
                                               fmt.extent_key(inode.ino, fmt.U64_MAX, 255))):
            mctx.items.delete(key, lock)


class StubXattr:
    def __init__(self) -> None:
        self.deleted: list[int] = []

    def indx_lock(self, mctx):
        from fs import xattr

        return xattr.indx_lock(mctx)

    async def delete_all(self, mctx, ino, lock, xlock=None, tlock=None):
        self.deleted.append(ino)
        start = fmt.xattr_key(ino, 0, 0, 0)
        end = fmt.xattr_key(ino, fmt.U64_MAX, fmt.U64_MAX, 255)
        for key in [k async for k, _ in mctx.items.items(start, end, lock)]:
            mctx.items.delete(key, lock)


class Clock:
    def __init__(self) -> None:
        self.t = 1000

    def __call__(self) -> tuple[int, int]:
        self.t += 1
        return (self.t, 500)


def setup(inos: list[int] | None = None):
    mctx = make_context()
    mctx.now = Clock()
    if inos is not None:  # hand out chosen inode numbers (to place inodes in lock groups)
        it = iter(inos)

        async def alloc_ino() -> int:
            return next(it)

        mctx.alloc_ino = alloc_ino
    fs = Filesystem(mctx)
    fs.data = StubData()
    fs.xattr = StubXattr()
    return mctx, fs


def run(fn):
    return trio.run(fn)


def err(excinfo) -> int:
    return excinfo.value.errno


def items_of(mctx, zone=None, typ=None, first=None):
    return {k: v for k, v in mctx.items.data.items()
            if (zone is None or k[0] == zone) and (typ is None or k[2] == typ)
            and (first is None or k[1] == first)}


async def names(fs, ino) -> list[bytes]:
    return [n for n, _, _ in await fs.readdir(ino, 0)][2:]


def check_seq_index(mctx) -> None:
    """Every inode has exactly one META_SEQ item at its meta_seq; regular files exactly one
    DATA_SEQ item at their data_seq; nothing else is indexed."""
    inodes = {k[1]: fmt.unpack_inode(k[1], v) for k, v in items_of(mctx, fmt.ZONE_FS,
                                                                    fmt.FS_INODE).items()}
    meta, data = {}, {}
    for k in items_of(mctx, fmt.ZONE_INODE_INDEX):
        tab = meta if k[2] == fmt.INODE_INDEX_META_SEQ else data
        assert k[4] not in tab, f"two index items for {k[4]}"
        tab[k[4]] = k[3]
    for ino, inode in inodes.items():
        if ino == ROOT and ino not in meta:
            continue  # the fake mkfs writes no index items for the root
        assert meta.get(ino) == inode.meta_seq, ino
        if stat.S_ISREG(inode.mode):
            assert data.get(ino) == inode.data_seq, ino
        else:
            assert ino not in data
    assert set(meta) <= set(inodes)
    assert set(data) <= set(inodes)


def check_entries(mctx) -> None:
    """Every entry's three items agree; directory sizes are the sum of name lengths."""
    dirents = items_of(mctx, fmt.ZONE_FS, fmt.FS_DIRENT)
    readdirs = items_of(mctx, fmt.ZONE_FS, fmt.FS_READDIR)
    backrefs = items_of(mctx, fmt.ZONE_FS, fmt.FS_LINK_BACKREF)
    assert len(dirents) == len(readdirs) == len(backrefs)
    sizes: dict[int, int] = {}
    for k, v in readdirs.items():
        d = fmt.unpack_dirent(v)
        dino = k[1]
        assert d.pos == k[3]
        assert dirents[fmt.dirent_key(dino, fmt.hash64(d.name), d.pos)] == v
        assert backrefs[fmt.backref_key(d.ino, dino, d.pos)] == v
        sizes[dino] = sizes.get(dino, 0) + len(d.name)
    for k, v in items_of(mctx, fmt.ZONE_FS, fmt.FS_INODE).items():
        inode = fmt.unpack_inode(k[1], v)
        if stat.S_ISDIR(inode.mode):
            assert inode.size == sizes.get(k[1], 0)


# ------------------------------------------------------------------------- creation


def test_create_every_type():
    mctx, fs = setup()

    async def main():
        now0 = mctx.now.t
        a = await fs.mknod(ROOT, b"reg", 0o644, 0, CTX)
        assert stat.S_ISREG(a.mode) and a.mode & 0o7777 == 0o644
        assert (a.nlink, a.uid, a.gid, a.size, a.blocks, a.rdev) == (1, 1000, 100, 0, 0, 0)
        assert a.atime == a.mtime == a.ctime == a.crtime and a.atime[0] > now0
        a0 = await fs.mknod(ROOT, b"typeless", 0o600, 0, CTX)
        assert stat.S_ISREG(a0.mode)
        for name, typ in ((b"fifo", stat.S_IFIFO), (b"sock", stat.S_IFSOCK)):
            a = await fs.mknod(ROOT, name, typ | 0o600, 1234, CTX)
            assert a.mode == typ | 0o600 and a.rdev == 0
        for name, typ in ((b"chr", stat.S_IFCHR), (b"blk", stat.S_IFBLK)):
            a = await fs.mknod(ROOT, name, typ | 0o600, os.makedev(8, 1), CTX)
            assert a.mode == typ | 0o600 and a.rdev == os.makedev(8, 1)
            assert (await fs.lookup(ROOT, name)).rdev == os.makedev(8, 1)
        d = await fs.mkdir(ROOT, b"dir", 0o755, CTX)
        assert d.mode == stat.S_IFDIR | 0o755 and d.nlink == 2 and d.size == 0
        s = await fs.symlink(ROOT, b"lnk", b"target/path", CTX)
        assert s.mode == stat.S_IFLNK | 0o777 and s.size == len(b"target/path")
        assert await fs.readlink(s.ino) == b"target/path"
        with pytest.raises(FsError) as e:
            await fs.mknod(ROOT, b"d2", stat.S_IFDIR | 0o755, 0, CTX)
        assert err(e) == errno.EINVAL
        root = await fs.getattr(ROOT)
        assert root.nlink == 3  # one subdirectory
        want = [b"reg", b"typeless", b"fifo", b"sock", b"chr", b"blk", b"dir", b"lnk"]
        assert await names(fs, ROOT) == want
        assert root.size == sum(len(n) for n in want)
        for n in want:
            a = await fs.lookup(ROOT, n)
            assert a == await fs.getattr(a.ino)
        check_entries(mctx)
        check_seq_index(mctx)

    run(main)


def test_entry_items_and_dtypes():
    mctx, fs = setup()

    async def main():
        f = await fs.mknod(ROOT, b"file", 0o644, 0, CTX)
        d = await fs.mkdir(ROOT, b"sub", 0o755, CTX)
        h = fmt.hash64(b"file")
        val = mctx.items.data[fmt.dirent_key(ROOT, h, 2)]
        assert fmt.unpack_dirent(val) == fmt.Dirent(f.ino, h, 2, fmt.DT_REG, b"file")
        assert mctx.items.data[fmt.readdir_key(ROOT, 2)] == val
        assert mctx.items.data[fmt.backref_key(f.ino, ROOT, 2)] == val
        dval = fmt.unpack_dirent(mctx.items.data[fmt.readdir_key(ROOT, 3)])
        assert dval.dtype == fmt.DT_DIR and dval.ino == d.ino
        refs = await fs.get_referring_entries(f.ino)
        assert [(dino, de.pos, de.name) for dino, de in refs] == [(ROOT, 2, b"file")]
        # a dir holding only "file" has size 4
        await fs.mknod(d.ino, b"file", 0o644, 0, CTX)
        assert (await fs.getattr(d.ino)).size == 4

    run(main)


def test_name_errors():
    mctx, fs = setup()

    async def main():
        f = await fs.mknod(ROOT, b"f", 0o644, 0, CTX)
        for op in (lambda n: fs.mknod(ROOT, n, 0o644, 0, CTX),
                   lambda n: fs.mkdir(ROOT, n, 0o755, CTX),
                   lambda n: fs.symlink(ROOT, n, b"t", CTX),
                   lambda n: fs.link(f.ino, ROOT, n, CTX)):
            with pytest.raises(FsError) as e:
                await op(b"x" * 256)
            assert err(e) == errno.ENAMETOOLONG
            with pytest.raises(FsError) as e:
                await op(b"f")
            assert err(e) == errno.EEXIST
            for bad in (b"a/b", b"a\0b"):
                with pytest.raises(FsError) as e:
                    await op(bad)
                assert err(e) == errno.EINVAL
        a = await fs.mknod(ROOT, b"y" * 255, 0o644, 0, CTX)
        assert (await fs.lookup(ROOT, b"y" * 255)).ino == a.ino
        with pytest.raises(FsError) as e:
            await fs.lookup(ROOT, b"y" * 256)
        assert err(e) == errno.ENAMETOOLONG
        with pytest.raises(FsError) as e:
            await fs.lookup(ROOT, b"nope")
        assert err(e) == errno.ENOENT
        with pytest.raises(FsError) as e:
            await fs.lookup(f.ino, b"x")
        assert err(e) == errno.ENOTDIR
        with pytest.raises(FsError) as e:
            await fs.mknod(f.ino, b"x", 0o644, 0, CTX)
        assert err(e) == errno.ENOTDIR
        with pytest.raises(FsError) as e:
            await fs.lookup(99999, b"x")
        assert err(e) == errno.ENOENT
        with pytest.raises(FsError) as e:
            await fs.getattr(99999)
        assert err(e) == errno.ENOENT

    run(main)


def test_dot_and_dotdot():
    mctx, fs = setup()

    async def main():
        a = await fs.mkdir(ROOT, b"a", 0o755, CTX)
        b = await fs.mkdir(a.ino, b"b", 0o755, CTX)
        assert (await fs.lookup(b.ino, b".")).ino == b.ino
        assert (await fs.lookup(b.ino, b"..")).ino == a.ino
        assert (await fs.lookup(a.ino, b"..")).ino == ROOT
        assert (await fs.lookup(ROOT, b"..")).ino == ROOT
        c = await fs.mkdir(ROOT, b"c", 0o755, CTX)
        await fs.rename(a.ino, b"b", c.ino, b"b2", 0, CTX)
        assert (await fs.lookup(b.ino, b"..")).ino == c.ino

    run(main)


def test_hash_collisions(monkeypatch):
    mctx, fs = setup()
    monkeypatch.setattr(fmt, "hash64", lambda name: 7)

    async def main():
        inos = {}
        for n in (b"a", b"b", b"c", b"d"):
            inos[n] = (await fs.mknod(ROOT, n, 0o644, 0, CTX)).ino
        for n, ino in inos.items():
            assert (await fs.lookup(ROOT, n)).ino == ino
        with pytest.raises(FsError) as e:
            await fs.mknod(ROOT, b"c", 0o644, 0, CTX)
        assert err(e) == errno.EEXIST
        await fs.unlink(ROOT, b"b")
        with pytest.raises(FsError):
            await fs.lookup(ROOT, b"b")
        for n in (b"a", b"c", b"d"):
            assert (await fs.lookup(ROOT, n)).ino == inos[n]
        await fs.rename(ROOT, b"c", ROOT, b"a", 0, CTX)
        assert (await fs.lookup(ROOT, b"a")).ino == inos[b"c"]
        assert await names(fs, ROOT) == [b"d", b"a"]
        check_entries(mctx)

    run(main)


def test_setgid_and_project_inheritance():
    mctx, fs = setup()

    async def main():
        d = await fs.mkdir(ROOT, b"sg", 0o2775, CTX)
        assert not d.mode & stat.S_ISGID  # mkdir never sets it from the mode (as Linux)
        await fs.setattr(d.ino, mode=0o2775, gid=555, ctx=CTX)
        # a project id on the parent is inherited
        async with mctx.locks.inodes([d.ino], LOCK_WRITE) as locks:
            from fs import inode as fsinode

            inode = await fsinode.load_inode(mctx, d.ino, locks[d.ino])
            inode.proj = 77
            async with fsinode.index_lock(mctx) as il, mctx.trans.hold():
                fsinode.store_inode(mctx, inode, locks[d.ino], il)
        sub = await fs.mkdir(d.ino, b"sub", 0o755, CTX)
        assert sub.gid == 555 and sub.mode & stat.S_ISGID
        f = await fs.mknod(d.ino, b"f", 0o644, 0, CTX)
        assert f.gid == 555 and not f.mode & stat.S_ISGID
        plain = await fs.mkdir(ROOT, b"plain", 0o755, CTX)
        assert plain.gid == CTX.gid and not plain.mode & stat.S_ISGID
        for a in (sub, f):
            assert (await fs.stat_more(a.ino)) is not None
            async with mctx.locks.inodes([a.ino], LOCK_READ) as locks:
                from fs import inode as fsinode

                assert (await fsinode.load_inode(mctx, a.ino, locks[a.ino])).proj == 77
        assert (await fs.stat_more(plain.ino)) is not None

    run(main)


# ------------------------------------------------------------------------- symlinks


def test_symlinks():
    mctx, fs = setup()

    async def main():
        long = bytes(range(1, 256)) * 16  # 4080 bytes: several SYMLINK items
        long = long.replace(b"\0", b"x")
        s = await fs.symlink(ROOT, b"long", long, CTX)
        assert s.size == len(long)
        assert await fs.readlink(s.ino) == long
        parts = items_of(mctx, fmt.ZONE_FS, fmt.FS_SYMLINK, s.ino)
        assert len(parts) == -(-len(long) // fmt.XATTR_PART_SIZE) > 1
        assert all(len(v) <= fmt.XATTR_PART_SIZE for v in parts.values())
        await fs.symlink(ROOT, b"max", b"m" * (fmt.SYMLINK_MAX - 1), CTX)
        with pytest.raises(FsError) as e:
            await fs.symlink(ROOT, b"toolong", b"m" * fmt.SYMLINK_MAX, CTX)
        assert err(e) == errno.ENAMETOOLONG
        with pytest.raises(FsError) as e:
            await fs.symlink(ROOT, b"empty", b"", CTX)
        assert err(e) == errno.ENOENT
        f = await fs.mknod(ROOT, b"f", 0o644, 0, CTX)
        with pytest.raises(FsError) as e:
            await fs.readlink(f.ino)
        assert err(e) == errno.EINVAL
        # deletion removes the symlink items
        await fs.unlink(ROOT, b"long")
        await fs.forget(s.ino)
        await fs.drain_deletions()
        assert not items_of(mctx, fmt.ZONE_FS, None, s.ino)

    run(main)


# ------------------------------------------------------------------------- readdir


def test_readdir_positions_after_deletions():
    mctx, fs = setup()

    async def main():
        inos = []
        for i in range(10):
            inos.append((await fs.mknod(ROOT, b"f%d" % i, 0o644, 0, CTX)).ino)
        ents = await fs.readdir(ROOT, 0)
        assert [(n, nx) for n, _, nx in ents] == [(b".", 1), (b"..", 2)] + [
            (b"f%d" % i, i + 3) for i in range(10)]
        assert ents[0][1].ino == ROOT and ents[1][1].ino == ROOT
        assert [a.ino for _, a, _ in ents[2:]] == inos
        for i in range(3, 8):
            await fs.unlink(ROOT, b"f%d" % i)
        ents = await fs.readdir(ROOT, 0)
        # positions: f0..f9 at 2..11; f3..f7 (5..9) are gone
        assert [(n, nx) for n, _, nx in ents] == [
            (b".", 1), (b"..", 2), (b"f0", 3), (b"f1", 4), (b"f2", 10), (b"f8", 11),
            (b"f9", 12)]
        # seeking resumes at the first entry with position >= k
        assert [n for n, _, _ in await fs.readdir(ROOT, 5)] == [b"f8", b"f9"]
        assert [n for n, _, _ in await fs.readdir(ROOT, 1)][:2] == [b"..", b"f0"]
        assert await fs.readdir(ROOT, 12) == []
        # limit: the next offset is still the next live entry
        ents = await fs.readdir(ROOT, 2, limit=3)
        assert [(n, nx) for n, _, nx in ents] == [(b"f0", 3), (b"f1", 4), (b"f2", 10)]
        # positions are never reused
        a = await fs.mknod(ROOT, b"f3", 0o644, 0, CTX)
        ents = await fs.readdir(ROOT, 11)
        assert [(n, nx) for n, _, nx in ents] == [(b"f9", 12), (b"f3", 13)]
        assert ents[1][1].ino == a.ino
        assert (await fs.getattr(ROOT)).size == sum(
            len(n) for n in (b"f0", b"f1", b"f2", b"f8", b"f9", b"f3"))

    run(main)


def test_readdir_empty_and_errors():
    mctx, fs = setup()

    async def main():
        d = await fs.mkdir(ROOT, b"d", 0o755, CTX)
        ents = await fs.readdir(d.ino, 0)
        assert [(n, a.ino, nx) for n, a, nx in ents] == [(b".", d.ino, 1), (b"..", ROOT, 2)]
        f = await fs.mknod(ROOT, b"f", 0o644, 0, CTX)
        with pytest.raises(FsError) as e:
            await fs.readdir(f.ino, 0)
        assert err(e) == errno.ENOTDIR
        await fs.rmdir(ROOT, b"d")
        assert await fs.readdir(d.ino, 0) == []

    run(main)


def test_corrupt_entries_give_eio_instead_of_looping():
    """Damage with valid checksums (fuzz findings): an entry naming an inode that does not
    exist made lookup retry forever (it took it for a race with unlink), and a readdir item
    whose value holds another position than its key sent readers back to an earlier offset
    forever.  Both are EIO now."""
    mctx, fs = setup()

    async def main():
        d = await fs.mkdir(ROOT, b"d", 0o755, CTX)
        f = await fs.mknod(d.ino, b"f", 0o644, 0, CTX)
        del mctx.items.data[fmt.inode_key(f.ino)]
        with trio.fail_after(10), pytest.raises(FsError) as e:
            await fs.lookup(d.ino, b"f")
        assert err(e) == errno.EIO

        g = await fs.mknod(ROOT, b"g", 0o644, 0, CTX)
        key = next(k for k, v in items_of(mctx, typ=fmt.FS_READDIR, first=ROOT).items()
                   if fmt.unpack_dirent(v).ino == g.ino)
        bad = fmt.unpack_dirent(mctx.items.data[key])._replace(pos=2)
        mctx.items.data[key] = fmt.pack_dirent(bad)
        with trio.fail_after(10), pytest.raises(FsError) as e:
            await fs.readdir(ROOT, 0)
        assert err(e) == errno.EIO

    run(main)


# ------------------------------------------------------------------------- links


def test_link_counts_and_errors():
    mctx, fs = setup()

    async def main():
        d1 = await fs.mkdir(ROOT, b"d1", 0o755, CTX)
        d2 = await fs.mkdir(ROOT, b"d2", 0o755, CTX)
        assert (await fs.getattr(ROOT)).nlink == 4
        f = await fs.mknod(d1.ino, b"f", 0o644, 0, CTX)
        t0 = (await fs.getattr(f.ino)).ctime
        a = await fs.link(f.ino, d2.ino, b"g", CTX)
        assert a.nlink == 2 and a.ctime > t0
        assert (await fs.lookup(d2.ino, b"g")).ino == f.ino
        assert len(await fs.get_referring_entries(f.ino)) == 2
        with pytest.raises(FsError) as e:
            await fs.link(d1.ino, d2.ino, b"dl", CTX)
        assert err(e) == errno.EPERM
        with pytest.raises(FsError) as e:
            await fs.link(f.ino, d2.ino, b"g", CTX)
        assert err(e) == errno.EEXIST
        with pytest.raises(FsError) as e:
            await fs.link(f.ino, f.ino, b"x", CTX)
        assert err(e) == errno.ENOTDIR
        await fs.unlink(d1.ino, b"f")
        a = await fs.getattr(f.ino)
        assert a.nlink == 1 and a.ctime > t0
        assert not items_of(mctx, fmt.ZONE_ORPHAN)
        sub = await fs.mkdir(d2.ino, b"sub", 0o755, CTX)
        assert (await fs.getattr(d2.ino)).nlink == 3
        assert sub.nlink == 2
        await fs.rmdir(d2.ino, b"sub")
        assert (await fs.getattr(d2.ino)).nlink == 2
        assert (await fs.getattr(sub.ino)).nlink == 0
        check_entries(mctx)
        check_seq_index(mctx)

    run(main)


def test_unlink_rmdir_errors():
    mctx, fs = setup()

    async def main():
        d = await fs.mkdir(ROOT, b"d", 0o755, CTX)
        await fs.mknod(d.ino, b"f", 0o644, 0, CTX)
        f2 = await fs.mknod(ROOT, b"f2", 0o644, 0, CTX)
        cases = [
            (fs.unlink(ROOT, b"d"), errno.EISDIR),
            (fs.unlink(ROOT, b"missing"), errno.ENOENT),
            (fs.rmdir(ROOT, b"missing"), errno.ENOENT),
            (fs.rmdir(ROOT, b"f2"), errno.ENOTDIR),
            (fs.rmdir(ROOT, b"d"), errno.ENOTEMPTY),
            (fs.rmdir(d.ino, b"."), errno.EINVAL),
            (fs.rmdir(d.ino, b".."), errno.ENOTEMPTY),
            (fs.unlink(f2.ino, b"x"), errno.ENOTDIR),
            (fs.unlink(ROOT, b"z" * 256), errno.ENAMETOOLONG),
        ]
        for coro, want in cases:
            with pytest.raises(FsError) as e:
                await coro
            assert err(e) == want
        await fs.unlink(d.ino, b"f")
        t0 = (await fs.getattr(d.ino)).mtime
        await fs.rmdir(ROOT, b"d")
        with pytest.raises(FsError) as e:
            await fs.mknod(d.ino, b"new", 0o644, 0, CTX)
        assert err(e) == errno.ENOENT
        with pytest.raises(FsError) as e:
            await fs.link(f2.ino, d.ino, b"new", CTX)
        assert err(e) == errno.ENOENT
        assert (await fs.getattr(ROOT)).mtime > t0

    run(main)


def test_dir_times_change_on_entry_changes():
    mctx, fs = setup()

    async def main():
        r0 = await fs.getattr(ROOT)
        f = await fs.mknod(ROOT, b"f", 0o644, 0, CTX)
        r1 = await fs.getattr(ROOT)
        assert r1.mtime == r1.ctime == f.crtime and r1.mtime > r0.mtime
        assert r1.crtime == r0.crtime
        await fs.unlink(ROOT, b"f")
        r2 = await fs.getattr(ROOT)
        assert r2.mtime > r1.mtime and r2.ctime == r2.mtime

    run(main)


# ------------------------------------------------------------------------- rename


def test_rename_simple_and_onto_file():
    mctx, fs = setup()

    async def main():
        a = await fs.mknod(ROOT, b"a", 0o644, 0, CTX)
        b = await fs.mknod(ROOT, b"b", 0o644, 0, CTX)
        await fs.rename(ROOT, b"a", ROOT, b"c", 0, CTX)
        assert (await fs.lookup(ROOT, b"c")).ino == a.ino
        with pytest.raises(FsError):
            await fs.lookup(ROOT, b"a")
        assert (await fs.getattr(a.ino)).ctime > a.ctime
        await fs.rename(ROOT, b"c", ROOT, b"b", 0, CTX)
        assert (await fs.lookup(ROOT, b"b")).ino == a.ino
        assert await names(fs, ROOT) == [b"b"]
        assert (await fs.getattr(b.ino)).nlink == 0
        assert fmt.orphan_key(b.ino) in mctx.items.data
        # the replaced file goes away on forget
        await fs.forget(b.ino)
        await fs.drain_deletions()
        with pytest.raises(FsError) as e:
            await fs.getattr(b.ino)
        assert err(e) == errno.ENOENT
        assert (await fs.getattr(ROOT)).size == 1
        # rename over another name of the same inode does nothing
        await fs.link(a.ino, ROOT, b"hard", CTX)
        await fs.rename(ROOT, b"b", ROOT, b"hard", 0, CTX)
        assert sorted(await names(fs, ROOT)) == [b"b", b"hard"]
        assert (await fs.getattr(a.ino)).nlink == 2
        check_entries(mctx)
        check_seq_index(mctx)

    run(main)


def test_rename_directories():
    mctx, fs = setup()

    async def main():
        d1 = await fs.mkdir(ROOT, b"d1", 0o755, CTX)
        d2 = await fs.mkdir(ROOT, b"d2", 0o755, CTX)
        s = await fs.mkdir(d1.ino, b"s", 0o755, CTX)
        await fs.mknod(s.ino, b"inner", 0o644, 0, CTX)
        empty = await fs.mkdir(d2.ino, b"empty", 0o755, CTX)
        full = await fs.mkdir(d2.ino, b"full", 0o755, CTX)
        await fs.mknod(full.ino, b"x", 0o644, 0, CTX)
        f = await fs.mknod(d2.ino, b"file", 0o644, 0, CTX)
        cases = [
            ((d1.ino, b"s", d2.ino, b"full", 0), errno.ENOTEMPTY),
            ((d1.ino, b"s", d2.ino, b"file", 0), errno.ENOTDIR),
            ((d2.ino, b"file", d2.ino, b"empty", 0), errno.EISDIR),
            ((d2.ino, b"file", d1.ino, b"s", 0), errno.EISDIR),
            ((ROOT, b"d1", s.ino, b"x", 0), errno.EINVAL),  # into its own subtree
            ((ROOT, b"d1", d1.ino, b"x", 0), errno.EINVAL),  # into itself
            ((d1.ino, b"missing", d2.ino, b"x", 0), errno.ENOENT),
            ((d2.ino, b"file", d2.ino, b"empty", RENAME_NOREPLACE), errno.EEXIST),
            ((d2.ino, b"file", d1.ino, b"nothere", RENAME_EXCHANGE), errno.ENOENT),
            ((d2.ino, b"file", d1.ino, b"y", RENAME_EXCHANGE | RENAME_NOREPLACE),
             errno.EINVAL),
            ((d2.ino, b"file", d1.ino, b"y", 8), errno.EINVAL),
            ((d2.ino, b"file", d1.ino, b"y" * 256, 0), errno.ENAMETOOLONG),
        ]
        for args, want in cases:
            with pytest.raises(FsError) as e:
                await fs.rename(*args, CTX)
            assert err(e) == want, args
        # a directory onto an empty directory, across directories
        await fs.rename(d1.ino, b"s", d2.ino, b"empty", 0, CTX)
        assert (await fs.lookup(d2.ino, b"empty")).ino == s.ino
        assert (await fs.lookup(s.ino, b"..")).ino == d2.ino
        assert (await fs.getattr(d1.ino)).nlink == 2
        assert (await fs.getattr(d2.ino)).nlink == 4  # full, empty(=s), plus 2
        assert (await fs.getattr(empty.ino)).nlink == 0
        assert fmt.orphan_key(empty.ino) in mctx.items.data
        # NOREPLACE onto a free name works
        await fs.rename(d2.ino, b"file", d1.ino, b"moved", RENAME_NOREPLACE, CTX)
        assert (await fs.lookup(d1.ino, b"moved")).ino == f.ino
        assert (await fs.getattr(d1.ino)).size == len(b"moved")
        assert (await fs.getattr(d2.ino)).size == len(b"empty") + len(b"full")
        check_entries(mctx)
        check_seq_index(mctx)

    run(main)


def test_rename_exchange_file_and_dir_across_dirs():
    mctx, fs = setup()

    async def main():
        d1 = await fs.mkdir(ROOT, b"d1", 0o755, CTX)
        d2 = await fs.mkdir(ROOT, b"d2", 0o755, CTX)
        f = await fs.mknod(d1.ino, b"file", 0o644, 0, CTX)
        sub = await fs.mkdir(d2.ino, b"subdir", 0o755, CTX)
        await fs.rename(d1.ino, b"file", d2.ino, b"subdir", RENAME_EXCHANGE, CTX)
        assert (await fs.lookup(d1.ino, b"file")).ino == sub.ino
        assert (await fs.lookup(d2.ino, b"subdir")).ino == f.ino
        assert (await fs.lookup(sub.ino, b"..")).ino == d1.ino
        assert (await fs.getattr(d1.ino)).nlink == 3
        assert (await fs.getattr(d2.ino)).nlink == 2
        assert (await fs.getattr(f.ino)).nlink == 1
        assert (await fs.getattr(sub.ino)).nlink == 2
        assert (await fs.getattr(d1.ino)).size == 4
        assert (await fs.getattr(d2.ino)).size == 6
        assert not items_of(mctx, fmt.ZONE_ORPHAN)
        # exchange within one directory
        g = await fs.mknod(d1.ino, b"g", 0o644, 0, CTX)
        await fs.rename(d1.ino, b"g", d1.ino, b"file", RENAME_EXCHANGE, CTX)
        assert (await fs.lookup(d1.ino, b"file")).ino == g.ino
        assert (await fs.lookup(d1.ino, b"g")).ino == sub.ino
        assert (await fs.getattr(d1.ino)).nlink == 3
        # exchanging a directory with a file inside it is a move into its own subtree
        inner = await fs.mknod(sub.ino, b"inner", 0o644, 0, CTX)
        with pytest.raises(FsError) as e:
            await fs.rename(d1.ino, b"g", sub.ino, b"inner", RENAME_EXCHANGE, CTX)
        assert err(e) == errno.EINVAL
        with pytest.raises(FsError) as e:
            await fs.rename(sub.ino, b"inner", d1.ino, b"g", RENAME_EXCHANGE, CTX)
        assert err(e) == errno.EINVAL
        assert (await fs.lookup(sub.ino, b"inner")).ino == inner.ino
        check_entries(mctx)
        check_seq_index(mctx)

    run(main)


def test_lock_order_and_rename_lock():
    # d1 in group 4096, d2 in group 2048, the file in 3072, the replaced file in 5120
    mctx, fs = setup([5000, 2100, 3100, 5200, 3300])

    async def main():
        d1 = await fs.mkdir(ROOT, b"d1", 0o755, CTX)
        d2 = await fs.mkdir(ROOT, b"d2", 0o755, CTX)
        f = await fs.mknod(d1.ino, b"f", 0o644, 0, CTX)
        await fs.mknod(d2.ino, b"victim", 0o644, 0, CTX)
        assert (d1.ino, d2.ino, f.ino) == (5000, 2100, 3100)
        hist = mctx.locks.history
        hist.clear()
        await fs.rename(d1.ino, b"f", d2.ino, b"victim", 0, CTX)
        assert hist[0] == ("rename", 0, LOCK_WRITE)
        writes = [h for h in hist if h[0] == "inode" and h[2] == LOCK_WRITE]
        assert [g for _, g, _ in writes] == [2048, 3072, 4096, 5120]
        last_inode = max(i for i, h in enumerate(hist) if h[0] == "inode")
        zones = [(i, h) for i, h in enumerate(hist) if h[0] == "zone"]
        assert [h[1] for _, h in zones] == [fmt.ZONE_INODE_INDEX, fmt.ZONE_ORPHAN]
        assert all(h[2] == LOCK_WRITE_ONLY for _, h in zones)
        assert all(i > last_inode for i, _ in zones)
        # every lock request of one locks.inodes call is ascending: the fake records
        # groups per call in order, and the write call covers all four groups at once
        hist.clear()
        await fs.rename(d2.ino, b"victim", d2.ino, b"again", 0, CTX)
        assert not [h for h in hist if h[0] == "rename"]
        hist.clear()
        await fs.mknod(d1.ino, b"new", 0o644, 0, CTX)  # ino 3300 < parent 5000
        assert [g for k, g, _ in hist if k == "inode"] == [3072, 4096]

    run(main)


# ------------------------------------------------------------------------- seq index


def test_seq_index_items_move_with_changes():
    mctx, fs = setup()

    async def main():
        f = await fs.mknod(ROOT, b"f", 0o644, 0, CTX)
        d = await fs.mkdir(ROOT, b"d", 0o755, CTX)
        seq0 = mctx.trans.seq
        check_seq_index(mctx)
        m = await fs.stat_more(f.ino)
        assert m["meta_seq"] == seq0 and m["data_seq"] == seq0 and m["data_version"] == 0
        assert fmt.seq_index_key(fmt.INODE_INDEX_DATA_SEQ, seq0, f.ino) in mctx.items.data
        assert not [k for k in items_of(mctx, fmt.ZONE_INODE_INDEX)
                    if k[2] == fmt.INODE_INDEX_DATA_SEQ and k[4] == d.ino]
        await mctx.trans.sync()
        await fs.setattr(f.ino, mode=0o600, ctx=CTX)
        check_seq_index(mctx)
        m = await fs.stat_more(f.ino)
        assert m["meta_seq"] == seq0 + 1 and m["data_seq"] == seq0
        await mctx.trans.sync()
        await fs.setattr(f.ino, size=100, ctx=CTX)  # the stub bumps data
        check_seq_index(mctx)
        m = await fs.stat_more(f.ino)
        assert m["meta_seq"] == m["data_seq"] == seq0 + 2 and m["data_version"] == 1
        await mctx.trans.sync()
        await fs.mknod(d.ino, b"x", 0o644, 0, CTX)
        await fs.rename(d.ino, b"x", ROOT, b"y", 0, CTX)
        await fs.link(f.ino, d.ino, b"f2", CTX)
        check_seq_index(mctx)
        assert (await fs.stat_more(d.ino))["meta_seq"] == seq0 + 3
        await fs.unlink(ROOT, b"f")
        await fs.unlink(d.ino, b"f2")
        await fs.forget(f.ino)
        await fs.drain_deletions()
        check_seq_index(mctx)
        assert not [k for k in items_of(mctx, fmt.ZONE_INODE_INDEX) if k[4] == f.ino]

    run(main)


# ------------------------------------------------------------------------- setattr


def test_setattr():
    mctx, fs = setup()

    async def main():
        f = await fs.mknod(ROOT, b"f", 0o644, 0, CTX)
        a = await fs.setattr(f.ino, mode=0o4755, ctx=CTX)
        assert a.mode == stat.S_IFREG | 0o4755 and a.ctime > f.ctime
        assert a.mtime == f.mtime and a.crtime == f.crtime
        a = await fs.setattr(f.ino, uid=7, gid=8, ctx=CTX)
        assert (a.uid, a.gid) == (7, 8)
        a = await fs.setattr(f.ino, atime=(5, 6), mtime=(7, 8), ctx=CTX)
        assert a.atime == (5, 6) and a.mtime == (7, 8) and a.ctime > (7, 8)
        a = await fs.setattr(f.ino, atime="now", mtime="now", ctx=CTX)
        assert a.atime == a.mtime == a.ctime and a.atime[0] > 1000
        a = await fs.setattr(f.ino, ctime=(3, 4), ctx=CTX)
        assert a.ctime == (3, 4) and a.crtime == f.crtime
        assert a == await fs.getattr(f.ino)
        a = await fs.setattr(f.ino, size=12345, ctx=CTX)
        assert fs.data.truncates == [(f.ino, 12345)] and a.size == 12345
        d = await fs.mkdir(ROOT, b"d", 0o755, CTX)
        with pytest.raises(FsError) as e:
            await fs.setattr(d.ino, size=0, ctx=CTX)
        assert err(e) == errno.EISDIR
        s = await fs.symlink(ROOT, b"s", b"t", CTX)
        with pytest.raises(FsError) as e:
            await fs.setattr(s.ino, size=0, ctx=CTX)
        assert err(e) == errno.EINVAL
        a = await fs.setattr(d.ino, mode=0o700, ctx=CTX)
        assert a.mode == stat.S_IFDIR | 0o700
        with pytest.raises(FsError) as e:
            await fs.setattr(99999, mode=0o700, ctx=CTX)
        assert err(e) == errno.ENOENT

    run(main)


def test_retention_blocks_namespace_changes():
    mctx, fs = setup()

    async def main():
        from fs import inode as fsinode

        f = await fs.mknod(ROOT, b"f", 0o644, 0, CTX)
        async with mctx.locks.inodes([f.ino], LOCK_WRITE) as locks, \
                fsinode.index_lock(mctx) as il, mctx.trans.hold():
            inode = await fsinode.load_inode(mctx, f.ino, locks[f.ino])
            inode.flags |= fmt.INODE_FLAG_RETENTION
            fsinode.store_inode(mctx, inode, locks[f.ino], il)
        for coro in (fs.unlink(ROOT, b"f"), fs.rename(ROOT, b"f", ROOT, b"g", 0, CTX),
                     fs.setattr(f.ino, mtime="now", ctx=CTX),
                     fs.setattr(f.ino, size=0, ctx=CTX),
                     # setattr of any attribute (spec §5.11 "truncate/setattr")
                     fs.setattr(f.ino, mode=0o600, ctx=CTX),
                     fs.setattr(f.ino, uid=5, gid=5, ctx=CTX),
                     fs.setattr(f.ino, ctime=(1, 2), ctx=CTX)):
            with pytest.raises(FsError) as e:
                await coro
            assert err(e) == errno.EPERM
        # a link to it and reading its attributes still work
        await fs.link(f.ino, ROOT, b"h", CTX)
        assert (await fs.getattr(f.ino)).mode & 0o7777 == 0o644

    run(main)


# ------------------------------------------------------------------------- deletion


def test_orphan_and_deletion_on_forget():
    mctx, fs = setup()

    async def main():
        f = await fs.mknod(ROOT, b"f", 0o644, 0, CTX)
        # an xattr item and an extent item to be freed with it
        mctx.items.data[fmt.xattr_key(f.ino, 1, 1, 0)] = b"x"
        mctx.items.data[fmt.extent_key(f.ino, 0, 1)] = fmt.pack_extent_val(100, 0)
        await fs.forget(f.ino)  # still linked: nothing happens
        await fs.drain_deletions()
        assert (await fs.getattr(f.ino)).nlink == 1
        hist = mctx.locks.history
        hist.clear()
        await fs.unlink(ROOT, b"f")
        assert mctx.items.data[fmt.orphan_key(f.ino)] == b""
        assert ("zone", fmt.ZONE_ORPHAN, LOCK_WRITE_ONLY) in hist
        # open-unlinked: still there until the kernel forgets it
        a = await fs.getattr(f.ino)
        assert a.nlink == 0
        await fs.drain_deletions()
        assert (await fs.getattr(f.ino)).nlink == 0
        hist.clear()
        await fs.forget(f.ino)
        await fs.drain_deletions()
        assert hist[0] == ("inode", fmt.lock_group_first(f.ino), LOCK_WRITE)
        assert ("zone", fmt.ZONE_ORPHAN, LOCK_WRITE_ONLY) in hist
        assert not items_of(mctx, fmt.ZONE_FS, None, f.ino)
        assert not items_of(mctx, fmt.ZONE_ORPHAN)
        assert not [k for k in items_of(mctx, fmt.ZONE_INODE_INDEX) if k[4] == f.ino]
        assert fs.data.freed == [f.ino] and fs.xattr.deleted == [f.ino]
        assert mctx.counters.get("inode_deleted") == 1
        # a second forget finds nothing to do
        await fs.forget(f.ino)
        await fs.drain_deletions()
        assert mctx.counters.get("inode_deleted") == 1
        # rmdir: orphan and deletion of the directory
        d = await fs.mkdir(ROOT, b"d", 0o755, CTX)
        await fs.rmdir(ROOT, b"d")
        assert fmt.orphan_key(d.ino) in mctx.items.data
        await fs.forget(d.ino)
        await fs.drain_deletions()
        assert not items_of(mctx, fmt.ZONE_FS, None, d.ino)
        assert not items_of(mctx, fmt.ZONE_ORPHAN)
        assert mctx.counters.get("inode_deleted") == 2
        check_seq_index(mctx)

    run(main)


def test_deletion_worker_runs_in_background():
    mctx, fs = setup()

    async def main():
        f = await fs.mknod(ROOT, b"f", 0o644, 0, CTX)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(fs.run)
            await trio.sleep(0.01)
            await fs.unlink(ROOT, b"f")
            await fs.forget(f.ino)
            with trio.fail_after(5):
                while mctx.counters.get("inode_deleted") == 0:
                    await trio.sleep(0.001)
            nursery.cancel_scope.cancel()
        assert not items_of(mctx, fmt.ZONE_FS, None, f.ino)

    run(main)


def test_link_of_unlinked_inode_removes_orphan():
    mctx, fs = setup()

    async def main():
        f = await fs.mknod(ROOT, b"tmp", 0o644, 0, CTX)
        await fs.unlink(ROOT, b"tmp")
        assert fmt.orphan_key(f.ino) in mctx.items.data
        a = await fs.link(f.ino, ROOT, b"linked", CTX)
        assert a.nlink == 1
        assert fmt.orphan_key(f.ino) not in mctx.items.data
        await fs.forget(f.ino)
        await fs.drain_deletions()
        assert (await fs.lookup(ROOT, b"linked")).ino == f.ino

    run(main)


# ------------------------------------------------------------------------- misc


def test_open_statfs_sync():
    mctx, fs = setup()

    async def main():
        d = await fs.mkdir(ROOT, b"d", 0o755, CTX)
        f = await fs.mknod(ROOT, b"f", 0o644, 0, CTX)
        await fs.open(f.ino, os.O_RDWR, CTX)
        await fs.open(d.ino, os.O_RDONLY | os.O_DIRECTORY, CTX)
        for flags in (os.O_WRONLY, os.O_RDWR):
            with pytest.raises(FsError) as e:
                await fs.open(d.ino, flags, CTX)
            assert err(e) == errno.EISDIR
        with pytest.raises(FsError) as e:
            await fs.open(99999, os.O_RDONLY, CTX)
        assert err(e) == errno.ENOENT
        s = await fs.statfs()
        raw = await mctx.statfs()
        assert s.f_bsize == s.f_frsize == 4096 and s.f_namemax == 255
        assert s.f_blocks == raw["total_data_blocks"]
        assert s.f_bfree == s.f_bavail == raw["free_data_blocks"]
        assert s.f_ffree == raw["free_meta_blocks"] * INODES_PER_META_BLOCK
        assert s.f_files == raw["inode_count"] + s.f_ffree
        commits = mctx.trans.commits
        await fs.sync()
        assert mctx.trans.commits == commits + 1
        m = await fs.stat_more(f.ino)
        assert set(m) == {"meta_seq", "data_seq", "data_version", "online_blocks",
                          "offline_blocks", "crtime"}
        assert m["crtime"] == f.crtime

    run(main)


def test_blocks_count_online_and_offline():
    mctx, fs = setup()

    async def main():
        from fs import inode as fsinode

        f = await fs.mknod(ROOT, b"f", 0o644, 0, CTX)
        async with mctx.locks.inodes([f.ino], LOCK_WRITE) as locks, \
                fsinode.index_lock(mctx) as il, mctx.trans.hold():
            inode = await fsinode.load_inode(mctx, f.ino, locks[f.ino])
            inode.online_blocks, inode.offline_blocks = 1, 2
            fsinode.store_inode(mctx, inode, locks[f.ino], il)
        assert (await fs.getattr(f.ino)).blocks == 24

    run(main)


def test_delegation_and_deletion_with_real_modules():
    data = pytest.importorskip("fs.data")
    xattr = pytest.importorskip("fs.xattr")
    mctx, fs = setup()
    fs.data, fs.xattr = data, xattr

    async def main():
        f = await fs.mknod(ROOT, b"f", 0o644, 0, CTX)
        assert await fs.write(f.ino, 0, b"x" * 10000, CTX) == 10000
        assert await fs.read(f.ino, 0, 20000) == b"x" * 10000
        a = await fs.getattr(f.ino)
        assert a.size == 10000 and a.blocks == 24
        await fs.setxattr(f.ino, b"user.k", b"v", 0, CTX)
        assert await fs.getxattr(f.ino, b"user.k", CTX) == b"v"
        assert await fs.listxattr(f.ino, CTX) == [b"user.k"]
        a = await fs.setattr(f.ino, size=5000, ctx=CTX)
        assert a.size == 5000 and a.blocks == 16
        await fs.fsync(f.ino, False)
        check_seq_index(mctx)
        await fs.unlink(ROOT, b"f")
        await fs.forget(f.ino)
        await fs.drain_deletions()
        assert not items_of(mctx, fmt.ZONE_FS, None, f.ino)
        assert sum(n for _, n in mctx.trans.data_alloc.freed) == 3
        check_seq_index(mctx)

    run(main)


def test_readdir_batches_like_fuse():
    from fs.filesystem import READDIR_BATCH

    mctx, fs = setup()
    n = READDIR_BATCH + 400

    async def main():
        d = await fs.mkdir(ROOT, b"big", 0o755, CTX)
        for i in range(n):
            await fs.mknod(d.ino, b"%05d" % i, 0o644, 0, CTX)
        for i in range(0, n, 7):
            await fs.unlink(d.ino, b"%05d" % i)
        # as the kernel does: call again from the last next_pos until nothing comes back
        got, pos, calls = [], 0, 0
        while True:
            ents = await fs.readdir(d.ino, pos)
            if not ents:
                break
            calls += 1
            assert len(ents) <= READDIR_BATCH + 2
            got += [name for name, _, _ in ents]
            pos = ents[-1][2]
        assert calls == 2
        assert got == [b".", b".."] + [b"%05d" % i for i in range(n) if i % 7]

    run(main)
