"""GET_ATTR_X / SET_ATTR_X (fs/archive.py), retention enforcement (spec §5.11) and the
control ops get_attr_x, set_attr_x and fiemap (fs/control.py), against the in-memory fakes."""

from __future__ import annotations

import errno
import json
import os
from types import SimpleNamespace

import pytest
import trio

from fs import archive, data
from fs import format as fmt
from fs import inode as inode_mod
from fs.control import ControlServer, Request
from fs.filesystem import Filesystem
from fs.inode import Ctx
from fs.testing.fakes import errno_of, make_context
from tests.unit.test_data import BS, CTX, INO, check_invariants, make_file, pattern, raw_inode

A = archive
ROOT = fmt.ROOT_INO
ALL = A.IAX_MASK
RET = A.IAX_RETENTION
PROJ = A.IAX_PROJECT_ID
OFF = fmt.EXTENT_FLAG_OFFLINE


def run(fn, *args):
    return trio.run(fn, *args)


async def sax(mctx, ino=INO, **kw):
    kw.setdefault("admin", True)
    await A.set_attr_x(mctx, ino, **kw)


def test_get_attr_x_fields_and_filled():
    async def main():
        mctx = make_context()
        await make_file(mctx)
        await data.write(mctx, INO, 0, pattern(3 * BS), CTX)
        i = raw_inode(mctx)
        r = await A.get_attr_x(mctx, INO, ALL)
        assert r == {"meta_seq": i.meta_seq, "data_seq": i.data_seq,
                     "data_version": i.data_version, "online_blocks": 3,
                     "offline_blocks": 0, "ctime_sec": i.ctime[0], "ctime_nsec": i.ctime[1],
                     "crtime_sec": i.crtime[0], "crtime_nsec": i.crtime[1],
                     "size": 3 * BS, "bits": 0, "project_id": 0, "filled": 104}
        assert await A.get_attr_x(mctx, INO, 0) == {"filled": 0}
        assert await A.get_attr_x(mctx, INO, A.IAX_META_SEQ) == {"meta_seq": i.meta_seq,
                                                                  "filled": 24}
        assert (await A.get_attr_x(mctx, INO, A.IAX_SIZE | A.IAX_DATA_SEQ))["filled"] == 88
        assert await errno_of(A.get_attr_x(mctx, INO, 1 << 10)) == errno.EINVAL
        assert await errno_of(A.get_attr_x(mctx, INO + 5, ALL)) == errno.ENOENT

    run(main)


def test_set_attr_x_errno_order():
    async def main():
        mctx = make_context()
        await make_file(mctx)
        d = INO + 1
        await make_file(mctx, d, 0o40755)
        e = errno_of
        # 1. EPERM before anything else
        assert await e(sax(mctx, mask=1 << 12, admin=False)) == errno.EPERM
        # 2. unknown mask, flag or bits
        assert await e(sax(mctx, mask=1 << 10)) == errno.EINVAL
        assert await e(sax(mctx, mask=0, flags=2)) == errno.EINVAL
        assert await e(sax(mctx, mask=RET, bits=2)) == errno.EINVAL
        # 4. EINVAL rules
        assert await e(sax(mctx, mask=A.IAX_DATA_VERSION, data_version=0)) == errno.EINVAL
        assert await e(sax(mctx, d, mask=A.IAX_DATA_VERSION, data_version=3)) == errno.EINVAL
        assert await e(sax(mctx, d, mask=A.IAX_SIZE, size=0)) == errno.EINVAL
        assert await e(sax(mctx, mask=A.IAX_SIZE, size=5)) == errno.EINVAL
        assert await e(sax(mctx, mask=A.IAX_SIZE | A.IAX_DATA_VERSION, size=0,
                           data_version=2, flags=A.IAX_F_SIZE_OFFLINE)) == errno.EINVAL
        assert await e(sax(mctx, flags=A.IAX_F_SIZE_OFFLINE, mask=0)) == errno.EINVAL
        assert await e(sax(mctx, d, mask=RET, bits=1)) == errno.EINVAL
        assert await e(sax(mctx, d, mask=RET, bits=0)) == errno.EINVAL
        # size 0 without a data_version is fine; read-only fields in the mask are ignored
        await sax(mctx, mask=A.IAX_SIZE | A.IAX_META_SEQ | A.IAX_ONLINE_BLOCKS, size=0)
        await sax(mctx, mask=0)
        assert raw_inode(mctx).data_version == 0

    run(main)


def test_set_attr_x_v1_refuses_retention_and_project():
    async def main():
        mctx = make_context(fmt_vers=1)
        await make_file(mctx)
        assert await errno_of(sax(mctx, mask=RET, bits=1)) == errno.EOPNOTSUPP
        assert await errno_of(sax(mctx, mask=PROJ, project_id=3)) == errno.EOPNOTSUPP
        # EPERM and EINVAL of the mask come first
        assert await errno_of(sax(mctx, mask=RET, admin=False)) == errno.EPERM
        assert await errno_of(sax(mctx, mask=RET | (1 << 11))) == errno.EINVAL
        await sax(mctx, mask=A.IAX_CTIME, ctime=(4, 5))
        assert raw_inode(mctx).ctime == (4, 5)

    run(main)


def test_set_attr_x_effects():
    async def main():
        mctx = make_context()
        await make_file(mctx)
        seq0 = raw_inode(mctx).meta_seq
        await sax(mctx, mask=A.IAX_SIZE | A.IAX_DATA_VERSION | A.IAX_CTIME | A.IAX_CRTIME
                  | PROJ, flags=A.IAX_F_SIZE_OFFLINE, size=2 * BS + 1, data_version=9,
                  ctime=(7, 8), crtime=(1, 999_999_999), project_id=(1 << 64) - 1)
        i = raw_inode(mctx)
        assert (i.size, i.data_version, i.ctime, i.crtime, i.proj) == (
            2 * BS + 1, 9, (7, 8), (1, 999_999_999), (1 << 64) - 1)
        assert (i.online_blocks, i.offline_blocks) == (0, 3)
        assert i.data_seq == i.meta_seq == mctx.trans.seq >= seq0
        check_invariants(mctx)
        # data_version is set now: size and data_version can't be set again
        assert await errno_of(sax(mctx, mask=A.IAX_DATA_VERSION, data_version=1)) == \
            errno.EINVAL
        # a file with blocks (and data_version 0 through no call here) is refused too
        f2 = INO + 2
        await make_file(mctx, f2)
        await data.write(mctx, f2, 0, b"x", CTX)
        assert await errno_of(sax(mctx, f2, mask=A.IAX_SIZE, size=0)) == errno.EINVAL

    run(main)


def test_retention_set_clear_and_enforced():
    async def main():
        mctx = make_context()
        fs = Filesystem(mctx)
        uctx = Ctx(uid=0, gid=0, pid=1)
        f = await fs.mknod(ROOT, b"f", 0o100644, 0, uctx)
        await fs.write(f.ino, 0, b"hello", uctx)
        await fs.setxattr(f.ino, b"user.a", b"1", 0, uctx)
        await sax(mctx, f.ino, mask=RET, bits=1)
        assert (await A.get_attr_x(mctx, f.ino, RET))["bits"] == 1
        e = errno_of
        ops = [fs.write(f.ino, 0, b"x", uctx),
               fs.setattr(f.ino, size=0, ctx=uctx),
               fs.setattr(f.ino, mtime=(1, 1), atime=(1, 1), ctx=uctx),
               fs.setattr(f.ino, mode=0o600, ctx=uctx),
               fs.unlink(ROOT, b"f"),
               fs.rename(ROOT, b"f", ROOT, b"g", 0, uctx),
               fs.setxattr(f.ino, b"user.b", b"2", 0, uctx),
               fs.removexattr(f.ino, b"user.a", uctx),
               fs.punch_offline(f.ino, 0, BS, 1, 0, writable=True),
               # set_attr_x that doesn't clear retention, even by root
               sax(mctx, f.ino, mask=PROJ, project_id=5),
               sax(mctx, f.ino, mask=RET, bits=1)]
        for coro in ops:
            assert await e(coro) == errno.EPERM
        # rename over it
        await fs.mknod(ROOT, b"other", 0o100644, 0, uctx)
        assert await e(fs.rename(ROOT, b"other", ROOT, b"f", 0, uctx)) == errno.EPERM
        # non-root can't clear it
        assert await e(sax(mctx, f.ino, mask=RET, bits=0, admin=False)) == errno.EPERM
        # hidden scoutfs xattrs still work; reads work
        await fs.setxattr(f.ino, b"scoutfs.hide.x", b"1", 0, uctx)
        await fs.removexattr(f.ino, b"scoutfs.hide.x", uctx)
        assert await fs.read(f.ino, 0, 10) == b"hello"
        # clearing it may change other attributes in the same call
        await sax(mctx, f.ino, mask=RET | PROJ, bits=0, project_id=6)
        r = await A.get_attr_x(mctx, f.ino, RET | PROJ)
        assert (r["bits"], r["project_id"]) == (0, 6)
        await fs.write(f.ino, 0, b"x", uctx)
        await fs.unlink(ROOT, b"f")

    run(main)


def test_project_id_set_is_inherited():
    async def main():
        mctx = make_context()
        fs = Filesystem(mctx)
        uctx = Ctx(uid=0, gid=0, pid=1)
        d = await fs.mkdir(ROOT, b"d", 0o755, uctx)
        await sax(mctx, d.ino, mask=PROJ, project_id=8675309)
        f = await fs.mknod(d.ino, b"f", 0o100644, 0, uctx)
        sub = await fs.mkdir(d.ino, b"s", 0o755, uctx)
        t = await fs.tmpfile(d.ino, 0o100600, uctx)
        for ino in (f.ino, sub.ino, t.ino):
            assert (await A.get_attr_x(mctx, ino, PROJ))["project_id"] == 8675309
        await sax(mctx, d.ino, mask=PROJ, project_id=0)
        g = await fs.mknod(d.ino, b"g", 0o100644, 0, uctx)
        assert (await A.get_attr_x(mctx, g.ino, PROJ))["project_id"] == 0

    run(main)


def test_setattr_more_still_runs_as_set_attr_x():
    async def main():
        mctx = make_context()
        await make_file(mctx)
        await sax(mctx, mask=RET, bits=1)
        assert await errno_of(A.setattr_more(mctx, INO, data_version=1, size=BS, flags=1,
                                             ctime=(1, 0), crtime=(1, 0), writable=True,
                                             admin=True)) == errno.EPERM
        async with mctx.locks.inodes([INO], 2) as locks:
            assert (await inode_mod.load_inode(mctx, INO, locks[INO])).offline_blocks == 0

    run(main)


# --------------------------------------------------------------------------- control ops


@pytest.fixture
def ctl(monkeypatch, tmp_path):
    """(mctx, ask): ask(uid, fd_flags, ino, **args) sends one request with a passed fd (a
    real file opened with fd_flags, standing for a file of inode `ino`) or no fd."""
    inos: dict[int, int] = {}
    monkeypatch.setattr(Request, "inode", lambda self, i=0: inos[self.fd(i)])
    mctx = make_context()
    mount = SimpleNamespace(fs=Filesystem(mctx), kernel_inodes=set(), options={})
    srv = ControlServer(mount, 0, 0, path="/nonexistent/x.sock")
    path = tmp_path / "f"
    path.write_bytes(b"")

    async def ask(uid=0, fd_flags=os.O_RDONLY, ino=INO, **args):
        fds = []
        if fd_flags is not None:
            fd = os.open(path, fd_flags)
            inos[fd] = ino
            fds.append(fd)
        try:
            return await srv._handle(json.dumps(args).encode(), 1, uid, 0, fds)
        finally:
            for fd in fds:
                os.close(fd)

    return mctx, ask


def test_control_attr_x_ops(ctl):
    mctx, ask = ctl

    async def main():
        await make_file(mctx)
        await make_file(mctx, INO + 1, 0o20644)  # a char device node
        # get: anyone, any open mode; fields and filled
        r = await ask(uid=1000, op="get_attr_x", x_mask=PROJ | RET)
        assert r == {"errno": 0, "bits": 0, "project_id": 0, "filled": 104}
        assert (await ask(op="get_attr_x", x_mask=1 << 10))["errno"] == errno.EINVAL
        for bad in (-1, "1", 1.0, True, None, 1 << 64):
            assert (await ask(op="get_attr_x", x_mask=bad))["errno"] == errno.EINVAL
        assert (await ask(op="get_attr_x", fd_flags=None, x_mask=1))["errno"] == errno.EBADF
        assert (await ask(op="get_attr_x", ino=INO + 1, x_mask=1))["errno"] == errno.ENOTTY
        # set: root only (opened read-only is enough); arguments type- and range-checked
        assert (await ask(uid=1000, op="set_attr_x", x_mask=PROJ, project_id=4))["errno"] \
            == errno.EPERM
        for k, v in (("x_mask", -1), ("project_id", 1 << 64), ("ctime_nsec", 10 ** 9),
                     ("size", "1"), ("bits", None), ("data_version", 2.0)):
            r = await ask(op="set_attr_x", **{"x_mask": PROJ, k: v})
            assert r["errno"] == errno.EINVAL, (k, v)
        assert await ask(op="set_attr_x", x_mask=PROJ | RET, project_id=4, bits=1) == \
            {"errno": 0}
        r = await ask(op="get_attr_x", x_mask=PROJ | RET)
        assert (r["project_id"], r["bits"]) == (4, 1)
        assert (await ask(op="set_attr_x", x_mask=PROJ, project_id=5))["errno"] == \
            errno.EPERM

    run(main)


def test_control_fiemap_op(ctl):
    mctx, ask = ctl

    async def main():
        await make_file(mctx)
        dirino = INO + 1
        await make_file(mctx, dirino, 0o40755)
        await data.write(mctx, INO, 0, pattern(2 * BS), CTX)
        await data.fallocate(mctx, INO, 0, 2 * BS, 3 * BS, CTX)
        dv = raw_inode(mctx).data_version
        await A.release(mctx, INO, 0, BS, dv, writable=True)
        r = await ask(op="fiemap", start=0)
        ex = r["extents"]
        assert [(lg, ln, fl) for lg, ph, ln, fl in ex] == [
            (0, BS, 0x2), (BS, BS, 0), (2 * BS, 3 * BS, 0x800 | 0x1)]
        assert ex[0][1] == 0 and ex[1][1] and ex[2][1]
        # nr caps the reply; start moves past extents
        assert len((await ask(op="fiemap", start=0, nr=1))["extents"]) == 1
        assert [e[0] for e in (await ask(op="fiemap", start=2 * BS))["extents"]] == [2 * BS]
        assert (await ask(op="fiemap", start=5 * BS))["extents"] == []
        assert (await ask(op="fiemap", start=(1 << 64) - 1))["extents"] == []
        for k, v in (("start", -1), ("length", 0), ("length", "x"), ("nr", -1),
                     ("start", 1 << 64)):
            assert (await ask(op="fiemap", **{k: v}))["errno"] == errno.EINVAL, (k, v)
        assert (await ask(op="fiemap", ino=dirino))["errno"] == errno.EOPNOTSUPP
        assert (await ask(op="fiemap", fd_flags=None))["errno"] == errno.EBADF

    run(main)


def test_fiemap_limit_pages_through_the_extents():
    """fiemap with a limit returns whole extents, LAST only on the file's last one; paging
    after the last returned extent gives the same list as one unlimited call."""
    async def main():
        mctx = make_context()
        await make_file(mctx)
        for b in range(0, 40, 2):  # 20 one-block extents with holes between them
            await data.write(mctx, INO, b * BS, pattern(BS), CTX)
        await data.fallocate(mctx, INO, 0, 40 * BS, 3 * BS, CTX)  # and an unwritten one
        whole = await data.fiemap(mctx, INO, 0, 1 << 62)
        assert len(whole) == 21 and whole[-1][3] & 0x1
        assert not any(e[3] & 0x1 for e in whole[:-1])
        for limit in (1, 2, 7, 20, 21, 22):
            got, start = [], 0
            while True:
                part = await data.fiemap(mctx, INO, start, (1 << 62) - start, limit)
                assert len(part) <= limit
                got += part
                if not part or part[-1][3] & 0x1:
                    break
                start = part[-1][0] + part[-1][2]
            assert got == whole, limit

    run(main)


# --------------------------------------------------------------------------- the commands


def _try(cmd: str) -> str:
    return f"Try `{cmd} --help' or `{cmd} --usage' for more information.\n"


@pytest.mark.parametrize("argv,msg", [
    (["set-attr-x", "-v", "0", "F"], "data version must not be 0"),
    (["set-attr-x", "-t", "2", "F"], "retention must be 0 or 1: '2'"),
    (["set-attr-x", "-p", "1"], "must provide file path"),
    (["get-attr-x"], "must provide file path"),
    (["get-attr-x", "F", "G"], "more than one argument given"),
    (["get-attr-x", "-p", "7", "F"], "too many arguments"),
    (["get-fiemap", "-P", "-L", "F"], "can only specify one of --physical and --logical"),
    (["get-fiemap"], "must provide file path"),
])
def test_attr_x_and_fiemap_usage_errors(capsys, argv, msg):
    from fs.cli.main import main

    if msg == "too many arguments":  # get's flags take no value: 7 is a second path
        msg = "more than one argument given"
    assert main(argv) == 64
    out, err = capsys.readouterr()
    assert err == f"{argv[0]}: {msg}\n" + _try(argv[0]) and out == ""


@pytest.mark.parametrize("cmd", ["get-attr-x", "set-attr-x", "get-fiemap"])
def test_commands_on_a_file_off_scoutfs(capsys, tmp_path, cmd):
    """A file of another filesystem: the open works, the call fails (no daemon answers)
    with a failed line; a missing file is upstream's failed-to-open line."""
    from fs.cli.main import main

    f = tmp_path / "f"
    f.write_bytes(b"x")
    assert main([cmd, str(tmp_path / "nothing")]) == 1
    err = capsys.readouterr().err
    assert err == (f"failed to open '{tmp_path}/nothing': No such file or directory (2)\n"
                   f"scoutfs: {cmd} failed: No such file or directory (2)\n")
    assert main([cmd, str(f)]) == 1
    err = capsys.readouterr().err
    prefix = "fiemap ioctl failed: " if cmd == "get-fiemap" else \
        f"attr_x ioctl failed on '{f}': "
    lines = err.splitlines()
    assert len(lines) == 2 and lines[0].startswith(prefix), err
    assert lines[1].startswith(f"scoutfs: {cmd} failed: ") and "Traceback" not in err
