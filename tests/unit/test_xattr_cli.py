"""Tagged xattr commands: the filesystem layer's READ_XATTR_INDEX and LISTXATTR_HIDDEN over
the in-memory fakes (inode deletion included), the control ops' argument checks (the socket
is 0666), and the CLI's parsing, output and errors against a fake daemon."""

from __future__ import annotations

import errno
from types import SimpleNamespace

import pytest
import trio

from fs import format as fmt
from fs import xattr
from fs.cli import main as cli_main
from fs.cli import xattrs as cli_xattrs
from fs.control import OPS, ControlError, Request
from fs.errors import FsError
from fs.filesystem import Filesystem
from fs.inode import Ctx
from fs.testing.fakes import make_context

ROOT = fmt.ROOT_INO
CTX = Ctx(uid=0, gid=0, pid=1)
U64_MAX = fmt.U64_MAX
ALL = ((0, 0, 0), (255, U64_MAX, U64_MAX))


class StubData:
    async def free_extents(self, mctx, inode, lock):
        pass


def setup():
    mctx = make_context(2)
    fs = Filesystem(mctx)
    fs.data = StubData()
    fs.xattr = xattr
    return mctx, fs


# --------------------------------------------------------------------------- filesystem


def test_index_through_the_filesystem_and_inode_deletion():
    mctx, fs = setup()

    async def main():
        f = await fs.mknod(ROOT, b"f", 0o100644, 0, CTX)
        g = await fs.mknod(ROOT, b"g", 0o100644, 0, CTX)
        await fs.setxattr(f.ino, b"scoutfs.hide.indx.a.1.2", b"", 0, CTX)
        await fs.setxattr(f.ino, b"scoutfs.indx.b.1.2", b"", 0, CTX)
        await fs.setxattr(g.ino, b"scoutfs.indx.a.1.2", b"", 0, CTX)
        await fs.setxattr(g.ino, b"scoutfs.hide.x", b"1", 0, CTX)
        assert await fs.read_xattr_index(*ALL, 100) == [(1, 2, f.ino), (1, 2, g.ino)]
        assert await fs.read_xattr_index((1, 2, f.ino + 1), ALL[1], 100) == [(1, 2, g.ino)]
        assert await fs.read_xattr_index(ALL[1], ALL[0], 100) == []
        assert await fs.read_xattr_index(*ALL, 0) == []
        assert [n for *_, n in await fs.list_hidden_xattrs(g.ino)] == [b"scoutfs.hide.x"]
        await mctx.trans.sync()
        # deleting an inode deletes its index items
        await fs.unlink(ROOT, b"f", CTX)
        await fs.forget(f.ino)
        await fs.drain_deletions()
        assert await fs.read_xattr_index(*ALL, 100) == [(1, 2, g.ino)]
        assert not [k for k in mctx.items.data if k[0] == fmt.ZONE_XATTR_INDX
                    and fmt.unpack_xattr_indx_key(k)[2] == f.ino]

    trio.run(main)


# --------------------------------------------------------------------------- control ops


class RecFs:
    def __init__(self):
        self.asked = []

    async def read_xattr_index(self, first, last, nr):
        self.asked.append((first, last, nr))
        return [(1, 2, 1025)]

    async def list_hidden_xattrs(self, ino, after):
        self.asked.append((ino, after))
        return [(h, 0, b"scoutfs.hide.%d" % h) for h in range(600) if (h, 0) >= after]


def _srv():
    return SimpleNamespace(mount=SimpleNamespace(fs=RecFs()), mnt_id=-1, major=0, minor=0)


def _call(srv, name, args, uid=0, fds=None):
    req = Request(dict(args, op=name), pid=1, uid=uid, gid=uid, fds=list(fds or []),
                  server=srv)
    return trio.run(OPS[name], srv, req)


def _errno(srv, name, args, **kw) -> int:
    with pytest.raises(FsError) as e:
        _call(srv, name, args, **kw)
    return e.value.errno


def test_read_xattr_index_op_checks_every_argument():
    srv = _srv()
    good = {"first": [0, 0, 0], "last": [255, U64_MAX, U64_MAX], "nr": 10}
    assert _call(srv, "read_xattr_index", good) == {"entries": [[1, 2, 1025]]}
    assert srv.mount.fs.asked == [((0, 0, 0), (255, U64_MAX, U64_MAX), 10)]
    _call(srv, "read_xattr_index", dict(good, nr=10**9))
    assert srv.mount.fs.asked[-1][2] == 16384
    for bad in ({"first": [256, 0, 0]}, {"last": [0, 2**64, 0]}, {"first": [0, 0, -1]},
                {"first": [0, 0]}, {"first": "0.0.0"}, {"first": [0, 0, True]},
                {"first": [0, 0.0, 0]}, {"nr": -1}, {"nr": "1"}, {"nr": 2**32},
                {"first": [2, 0, 0], "last": [1, 0, 0]}):
        assert _errno(srv, "read_xattr_index", dict(good, **bad)) == errno.EINVAL, bad
    # no fd: root only (a mount-wide op)
    assert _errno(srv, "read_xattr_index", good, uid=1000) == errno.EBADF
    assert len(srv.mount.fs.asked) == 2


def test_list_hidden_op_needs_an_fd_and_pages():
    srv = _srv()
    assert _errno(srv, "list_hidden_xattrs", {}) == errno.EBADF
    assert _errno(srv, "list_hidden_xattrs", {"pos": [0, 0]}, uid=1000) == errno.EBADF


def test_list_hidden_op_pages_by_key(monkeypatch):
    srv = _srv()
    monkeypatch.setattr(Request, "inode", lambda self, i=0: 1025)
    r = _call(srv, "list_hidden_xattrs", {}, fds=[99])
    assert r["names"][0] == "scoutfs.hide.0" and len(r["names"]) == 256
    assert r["next"] == [256, 0]
    r = _call(srv, "list_hidden_xattrs", {"pos": [512, 0]}, fds=[99])
    assert len(r["names"]) == 88 and r["next"] is None
    assert srv.mount.fs.asked == [(1025, (0, 0)), (1025, (512, 0))]
    for bad in (0, [0], [0, -1], [2**64, 0], ["0", 0], [0, True]):
        assert _errno(srv, "list_hidden_xattrs", {"pos": bad}, fds=[99]) == errno.EINVAL


# --------------------------------------------------------------------------- CLI


class FakeDaemon:
    def __init__(self, entries=(), names=(), fail=0, page=3):
        self.entries = sorted(entries)
        self.names = list(names)
        self.fail = fail
        self.page = page
        self.calls: list[dict] = []

    def __call__(self, fd, req):
        self.calls.append(req)
        if self.fail:
            raise ControlError(self.fail)
        if req["op"] == "read_xattr_index":
            f, la = tuple(req["first"]), tuple(req["last"])
            ents = [e for e in self.entries if f <= e <= la]
            return {"entries": [list(e) for e in ents[:self.page]]}
        if req["op"] == "list_hidden_xattrs":
            pos = req["pos"][0]
            part = self.names[pos:pos + self.page]
            nxt = [pos + len(part), 0] if pos + len(part) < len(self.names) else None
            return {"names": part, "next": nxt}
        raise AssertionError(req)


def _cli(monkeypatch, capfd, argv, daemon=None):
    if daemon is not None:
        monkeypatch.setattr(cli_xattrs, "daemon_call", daemon)
    rc = cli_main.main(argv)
    out, errout = capfd.readouterr()
    return rc, out, errout


BAD = ("bad index position entry argument '{}', it must be in the form \"a.b.ino\" where each "
       "value can be prefixed by '0' for octal or '0x' for hex\n")
FAILED = "scoutfs: read-xattr-index failed: Invalid argument (22)\n"


def test_read_xattr_index_output_loops_and_defaults(monkeypatch, capfd, tmp_path):
    ents = [(1, 2, 5), (1, 2, U64_MAX), (1, 3, 0), (7, U64_MAX, U64_MAX), (255, 0, 1)]
    d = FakeDaemon(entries=ents, page=2)
    rc, out, errout = _cli(monkeypatch, capfd, ["read-xattr-index", "-p", str(tmp_path)], d)
    assert (rc, errout) == (0, "")
    assert out == ("1.2 = 5\n1.2 = 18446744073709551615\n1.3 = 0\n"
                   "7.18446744073709551615 = 18446744073709551615\n255.0 = 1\n")
    assert [c["first"] for c in d.calls] == [[0, 0, 0], [1, 3, 0], [8, 0, 0],
                                                [255, 0, 2]]
    assert all(c["last"] == [255, U64_MAX, U64_MAX] for c in d.calls)


def test_read_xattr_index_positions(monkeypatch, capfd, tmp_path):
    d = FakeDaemon()
    rc, _o, _e = _cli(monkeypatch, capfd, ["read-xattr-index", "-p", str(tmp_path),
                                           "0x10.010.9", "16.8.-1"], d)
    assert rc == 0
    assert d.calls[0]["first"] == [16, 8, 9] and d.calls[0]["last"] == [16, 8, U64_MAX]
    ent = [0, 0, 0]
    assert cli_xattrs.parse_entry(" 1.2.3junk", ent) == 0 and ent == [1, 2, 3]
    ent = [0, 0, 0]
    # %lli saturates at LLONG_MAX
    assert cli_xattrs.parse_entry("1.18446744073709551615.2", ent) == 0
    assert ent == [1, (1 << 63) - 1, 2]
    capfd.readouterr()
    ent = [0, 0, 0]
    assert cli_xattrs.parse_entry("300.4.5", ent) == -errno.EINVAL
    assert ent == [0, 4, 5]  # minor and ino are stored as scanned, major only when valid


@pytest.mark.parametrize("argv,msgs", [
    (["x"], [BAD.format("x"), FAILED]),
    (["1.2"], [BAD.format("1.2"), FAILED]),
    (["1.2.x"], [BAD.format("1.2.x"), FAILED]),
    (["08.1.2"], [BAD.format("08.1.2"), FAILED]),
    (["0.0.0", "1..2"], [BAD.format("1..2"), FAILED]),
    (["256.0.0"], ["initial major index position '256' must be between 0 and 255, "
                   "inclusive.\n", FAILED]),
    (["--", "-1.0.0"], ["initial major index position '-1' must be between 0 and 255, "
                        "inclusive.\n", FAILED]),
    (["2.0.0", "1.0.0"], ["first index position 2.0.0 must be less than last index "
                          "position 1.0.0\n", FAILED]),
])
def test_read_xattr_index_errors(monkeypatch, capfd, argv, msgs):
    d = FakeDaemon()
    rc, out, errout = _cli(monkeypatch, capfd, ["read-xattr-index", *argv], d)
    assert (rc, out, errout) == (1, "", "".join(msgs))
    assert d.calls == []


def test_read_xattr_index_quirks_usage_and_ioctl_failure(monkeypatch, capfd, tmp_path):
    # a bad FIRST's status is overwritten by a good LAST: the message, then on
    d = FakeDaemon(entries=[(1, 1, 1)])
    rc, out, errout = _cli(monkeypatch, capfd, ["read-xattr-index", "-p", str(tmp_path), "x",
                                                "2.0.0"], d)
    assert (rc, out, errout) == (0, "1.1 = 1\n", BAD.format("x"))
    rc, out, errout = _cli(monkeypatch, capfd, ["read-xattr-index", "1.0.0", "2.0.0", "3"], d)
    assert (rc, out) == (64, "")
    assert errout.splitlines()[0] == "read-xattr-index: more than two arguments given"
    rc, out, errout = _cli(monkeypatch, capfd, ["read-xattr-index", "-p", str(tmp_path)],
                           FakeDaemon(fail=errno.ENOTTY))
    assert (rc, out) == (1, "")
    assert errout == ("read_xattr_index ioctl failed: Inappropriate ioctl for device (25)\n"
                      "scoutfs: read-xattr-index failed: Inappropriate ioctl for device (25)\n")


def test_list_hidden_output_pages_and_errors(monkeypatch, capfd, tmp_path):
    f = tmp_path / "f"
    f.write_text("")
    names = ["scoutfs.hide.a", "scoutfs.hide.b\x01\t\x7f\xe9", "scoutfs.srch.hide.c",
             "scoutfs.hide.d"]
    d = FakeDaemon(names=names, page=3)
    rc, out, errout = _cli(monkeypatch, capfd, ["list-hidden-xattrs", str(f)], d)
    assert (rc, errout) == (0, "")
    assert out == "scoutfs.hide.a\nscoutfs.hide.b????\nscoutfs.srch.hide.c\nscoutfs.hide.d\n"
    assert [c["pos"] for c in d.calls] == [[0, 0], [3, 0]]
    rc, out, errout = _cli(monkeypatch, capfd, ["list-hidden-xattrs"], d)
    assert (rc, out) == (64, "")
    assert errout.splitlines()[0] == "list-hidden-xattrs: no filename given"
    rc, out, errout = _cli(monkeypatch, capfd, ["list-hidden-xattrs", str(f), str(f)], d)
    assert rc == 64
    assert errout.splitlines()[0] == "list-hidden-xattrs: more than one argument given"
    rc, out, errout = _cli(monkeypatch, capfd, ["list-hidden-xattrs", str(tmp_path / "no")], d)
    assert (rc, out) == (1, "")
    assert errout == (f"failed to open '{tmp_path / 'no'}': No such file or directory (2)\n"
                      "scoutfs: list-hidden-xattrs failed: No such file or directory (2)\n")
    rc, out, errout = _cli(monkeypatch, capfd, ["list-hidden-xattrs", str(f)],
                           FakeDaemon(fail=errno.ENOTTY))
    assert (rc, out) == (1, "")
    assert errout == ("listxattr_hidden ioctl failed: Inappropriate ioctl for device (25)\n"
                      "scoutfs: list-hidden-xattrs failed: Inappropriate ioctl for device "
                      "(25)\n")
