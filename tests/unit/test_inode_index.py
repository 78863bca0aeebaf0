"""The inode index commands: WALK_INODES, INO_PATH, GET_REFERRING_ENTRIES and
GET_ALLOCATED_INOS -- the filesystem layer over the in-memory fakes, the control ops'
argument checks (the socket is 0666: every number is validated before a lock is taken), and
the CLI's parsing and output against a fake daemon."""

from __future__ import annotations

import errno
import os
from types import SimpleNamespace

import pytest
import trio

from fs import format as fmt
from fs.cli import main as cli_main
from fs.cli import walk as cli_walk
from fs.control import OPS, ControlError, Request
from fs.errors import FsError
from fs.filesystem import PATH_MAX, Filesystem
from fs.inode import Ctx
from fs.testing.fakes import LOCK_READ, errno_of, make_context


class StubData:
    """Stands in for fs.data: deleting an inode frees its extent items."""

    async def free_extents(self, mctx, inode, lock):
        for key in list(mctx.items.data.irange(fmt.extent_key(inode.ino, 0, 0),
                                               fmt.extent_key(inode.ino, fmt.U64_MAX, 255))):
            mctx.items.delete(key, lock)


class StubXattr:
    def indx_lock(self, mctx):
        from fs import xattr

        return xattr.indx_lock(mctx)

    async def delete_all(self, mctx, ino, lock, xlock=None, tlock=None):
        pass


ROOT = fmt.ROOT_INO
CTX = Ctx(uid=0, gid=0, pid=1)
U64_MAX = fmt.U64_MAX


def setup():
    mctx = make_context()
    fs = Filesystem(mctx)
    fs.data = StubData()
    fs.xattr = StubXattr()
    return mctx, fs


def run(fn):
    return trio.run(fn)


# --------------------------------------------------------------------------- walk


def test_walk_lists_meta_and_data_seq_in_order_clamped_to_the_last_stable_seq():
    mctx, fs = setup()

    async def main():
        f = await fs.mknod(ROOT, b"f", 0o100644, 0, CTX)  # seq 10
        d = await fs.mkdir(ROOT, b"d", 0o755, CTX)  # seq 10 (the root too)
        await mctx.trans.sync()  # seq 11
        g = await fs.mknod(d.ino, b"g", 0o100644, 0, CTX)  # seq 11 (d too)
        # the open transaction (11) is not stable: only seqs up to 10 show
        meta = await fs.walk_inodes(0, (0, 0), (U64_MAX, U64_MAX), 100)
        assert meta == [(10, ROOT), (10, f.ino)]
        await mctx.trans.sync()  # seq 12: 11 is stable now
        meta = await fs.walk_inodes(0, (0, 0), (U64_MAX, U64_MAX), 100)
        assert meta == [(10, ROOT), (10, f.ino), (11, d.ino), (11, g.ino)]
        # directories are not in data_seq
        data = await fs.walk_inodes(1, (0, 0), (U64_MAX, U64_MAX), 100)
        assert data == [(10, f.ino), (11, g.ino)]
        # positions: first and last inclusive, by (major, ino); limit
        assert await fs.walk_inodes(0, (10, f.ino), (11, d.ino), 100) == [
            (10, f.ino), (11, d.ino)]
        assert await fs.walk_inodes(0, (10, f.ino + 1), (11, 0), 100) == []
        assert await fs.walk_inodes(0, (0, 0), (U64_MAX, U64_MAX), 3) == [
            (10, ROOT), (10, f.ino), (11, d.ino)]
        assert await fs.walk_inodes(0, (0, 0), (U64_MAX, U64_MAX), 0) == []
        assert await fs.walk_inodes(0, (12, 0), (11, 0), 10) == []  # first > last
        # a READ lock of the index zone was taken for the reads
        assert ("zone", fmt.ZONE_INODE_INDEX, LOCK_READ) in mctx.locks.history
        # an unlinked and deleted inode leaves both indexes
        await fs.unlink(d.ino, b"g", CTX)
        await fs.forget(g.ino)
        await fs.drain_deletions()
        await mctx.trans.sync()
        data = await fs.walk_inodes(1, (0, 0), (U64_MAX, U64_MAX), 100)
        assert data == [(10, f.ino)]
        assert g.ino not in [i for _s, i in
                             await fs.walk_inodes(0, (0, 0), (U64_MAX, U64_MAX), 100)]

    run(main)


def test_walk_asks_the_servers_last_seq():
    mctx, fs = setup()
    asked = []

    async def last_seq() -> int:
        asked.append(1)
        return stable[0]

    mctx.last_seq = last_seq
    stable = [9]  # below the seq (10) of the new file and the root it changed

    async def main():
        f = await fs.mknod(ROOT, b"f", 0o100644, 0, CTX)
        await mctx.trans.sync()
        assert await fs.walk_inodes(0, (0, 0), (U64_MAX, U64_MAX), 100) == []
        stable[0] = 10
        assert await fs.walk_inodes(0, (0, 0), (U64_MAX, U64_MAX), 100) == [
            (10, ROOT), (10, f.ino)]
        assert len(asked) == 2

    run(main)


def test_walk_of_an_unknown_index_is_einval():
    _mctx, fs = setup()

    async def main():
        for index in (2, -1, 255):
            assert await errno_of(fs.walk_inodes(index, (0, 0), (1, 1), 10)) == errno.EINVAL

    run(main)


def test_walk_of_many_inodes_in_batches_sees_each_once():
    mctx, fs = setup()

    async def main():
        d = await fs.mkdir(ROOT, b"d", 0o755, CTX)
        inos = []
        for i in range(300):
            inos.append((await fs.mknod(d.ino, b"f%d" % i, 0o100644, 0, CTX)).ino)
            if i % 70 == 0:
                await mctx.trans.sync()
        await mctx.trans.sync()
        got = []
        first = (0, 0)
        while True:
            batch = await fs.walk_inodes(1, first, (U64_MAX, U64_MAX), 32)
            if not batch:
                break
            got += batch
            first = (batch[-1][0], batch[-1][1] + 1)
        assert [i for _s, i in got] == inos
        assert got == sorted(got)

    run(main)


# --------------------------------------------------------------------------- ino_path


def test_ino_path_of_hard_links_in_several_directories():
    mctx, fs = setup()

    async def main():
        a = await fs.mkdir(ROOT, b"a", 0o755, CTX)
        b = await fs.mkdir(a.ino, b"b", 0o755, CTX)
        c = await fs.mkdir(ROOT, b"c", 0o755, CTX)
        f = await fs.mknod(b.ino, b"file", 0o100644, 0, CTX)
        await fs.link(f.ino, c.ino, b"link", CTX)
        await fs.link(f.ino, b.ino, b"second", CTX)
        paths = []
        cur = (0, 0)
        while True:
            try:
                d_ino, d_pos, path = await fs.ino_path(f.ino, *cur)
            except FsError as e:
                assert e.errno == errno.ENOENT
                break
            paths.append((d_ino, d_pos, path))
            cur = (d_ino, d_pos + 1)
        # ordered by (parent ino, position)
        assert paths == sorted(paths)
        assert sorted(p for _d, _p, p in paths) == [b"a/b/file", b"a/b/second", b"c/link"]
        assert [p for d, _p, p in paths if d == b.ino] == [b"a/b/file", b"a/b/second"]
        # the root and an unused inode have no path
        assert await errno_of(fs.ino_path(ROOT)) == errno.ENOENT
        assert await errno_of(fs.ino_path(999999)) == errno.ENOENT
        # a directory's path; after a rename the new one
        assert (await fs.ino_path(b.ino))[2] == b"a/b"
        await fs.rename(a.ino, b"b", c.ino, b"bb", 0, CTX)
        assert (await fs.ino_path(f.ino, b.ino, 0))[2] == b"c/bb/file"
        # an unlinked inode has none
        g = await fs.mknod(ROOT, b"g", 0o100644, 0, CTX)
        assert (await fs.ino_path(g.ino))[2] == b"g"
        await fs.unlink(ROOT, b"g", CTX)
        assert await errno_of(fs.ino_path(g.ino)) == errno.ENOENT

    run(main)


def test_ino_path_longer_than_path_max_is_enametoolong():
    mctx, fs = setup()

    async def main():
        parent = ROOT
        name = b"x" * 250
        for _ in range(PATH_MAX // 251 + 1):
            parent = (await fs.mkdir(parent, name, 0o755, CTX)).ino
        assert await errno_of(fs.ino_path(parent)) == errno.ENAMETOOLONG

    run(main)


# --------------------------------------------------------------------------- referring entries


def test_referring_entries_cursor_and_limit():
    mctx, fs = setup()

    async def main():
        d = await fs.mkdir(ROOT, b"d", 0o755, CTX)
        f = await fs.mknod(ROOT, b"f", 0o100644, 0, CTX)
        for i in range(5):
            await fs.link(f.ino, d.ino, b"l%d" % i, CTX)
        allr = await fs.get_referring_entries(f.ino)
        assert [(dd, e.name) for dd, e in allr] == [(ROOT, b"f")] + [
            (d.ino, b"l%d" % i) for i in range(5)]
        first = await fs.get_referring_entries(f.ino, 0, 0, 2)
        assert first == allr[:2]
        dd, e = first[-1]
        assert await fs.get_referring_entries(f.ino, dd, e.pos + 1, 10) == allr[2:]
        assert await fs.get_referring_entries(ROOT) == []
        assert await fs.get_referring_entries(999999, 0, 0, 10) == []

    run(main)


# --------------------------------------------------------------------------- allocated inos


def test_allocated_inos_after_creates_and_unlinks():
    mctx, fs = setup()

    async def main():
        assert await fs.get_allocated_inos(0, 1024) == [ROOT]
        fs_ = [await fs.mknod(ROOT, b"f%d" % i, 0o100644, 0, CTX) for i in range(5)]
        inos = [a.ino for a in fs_]
        assert await fs.get_allocated_inos(inos[0], 1024) == inos
        assert await fs.get_allocated_inos(inos[2], 1024) == inos[2:]
        assert await fs.get_allocated_inos(inos[0], 2) == inos[:2]
        # unlinked but not yet forgotten (open): still allocated; then deleted: gone
        await fs.unlink(ROOT, b"f1", CTX)
        assert await fs.get_allocated_inos(inos[0], 1024) == inos
        await fs.forget(inos[1])
        await fs.drain_deletions()
        assert await fs.get_allocated_inos(inos[0], 1024) == [inos[0]] + inos[2:]
        # only the start's group
        assert await fs.get_allocated_inos(2, 1024) == []
        assert await fs.get_allocated_inos(inos[0] + fmt.LOCK_GROUP_NR, 1024) == []
        assert await fs.get_allocated_inos(U64_MAX, 1024) == []
        assert ("inode", fmt.lock_group_first(inos[0]), LOCK_READ) in mctx.locks.history

    run(main)


# --------------------------------------------------------------------------- control ops


class RecFs:
    """Records what the ops asked of the filesystem."""

    def __init__(self) -> None:
        self.asked: list[tuple] = []

    async def walk_inodes(self, index, first, last, nr):
        self.asked.append(("walk", index, first, last, nr))
        return [(5, 1025), (6, 1026)][:nr]

    async def ino_path(self, ino, dir_ino, dir_pos):
        self.asked.append(("path", ino, dir_ino, dir_pos))
        if dir_pos > 2:
            raise FsError(errno.ENOENT)
        return 1, 2, "dé".encode("latin-1")

    async def get_referring_entries(self, ino, dir_ino, dir_pos, nr):
        self.asked.append(("refs", ino, dir_ino, dir_pos, nr))
        ents = [(1, fmt.Dirent(ino, 0, p, fmt.DT_REG, b"n%d" % p)) for p in (2, 3, 4)]
        return [(d, e) for d, e in ents if (d, e.pos) >= (dir_ino, dir_pos)][:nr]

    async def get_allocated_inos(self, start, nr):
        self.asked.append(("alloc", start, nr))
        return [start]


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


GOOD_WALK = {"index": 0, "first": [0, 0, 0], "last": [U64_MAX, 2**32 - 1, U64_MAX], "nr": 10}


def test_walk_op_passes_major_and_ino_and_caps_nr():
    srv = _srv()
    r = _call(srv, "walk_inodes", GOOD_WALK)
    assert r["seq_ino"] == [5, 1025, 6, 1026]  # [major, ino, ...]: minor is always 0
    assert srv.mount.fs.asked == [("walk", 0, (0, 0), (U64_MAX, U64_MAX), 10)]
    _call(srv, "walk_inodes", dict(GOOD_WALK, nr=2**32 - 1))
    assert srv.mount.fs.asked[-1][-1] == 16384


@pytest.mark.parametrize("bad", [
    {"index": "0"}, {"index": None}, {"index": 0.0}, {"index": True},
    {"first": [0, 0]}, {"first": [0, 0, 0, 0]}, {"first": "0.0.0"}, {"first": None},
    {"first": [-1, 0, 0]}, {"first": [2**64, 0, 0]}, {"first": [0, 2**32, 0]},
    {"last": [0, 0, 2**64]}, {"last": [0, 0, "1"]}, {"last": [0, 0, 1.0]},
    {"nr": -1}, {"nr": 2**32}, {"nr": "10"}, {"nr": None},
])
def test_walk_op_bad_arguments_are_einval_before_the_fs_is_asked(bad):
    srv = _srv()
    assert _errno(srv, "walk_inodes", dict(GOOD_WALK, **bad)) == errno.EINVAL
    assert srv.mount.fs.asked == []


def test_walk_op_needs_an_fd_on_the_mount_unless_root():
    srv = _srv()
    assert _errno(srv, "walk_inodes", GOOD_WALK, uid=1000) == errno.EBADF
    assert srv.mount.fs.asked == []


@pytest.mark.parametrize("name,args", [
    ("ino_path", {"ino": 1025}),
    ("get_referring_entries", {"ino": 1025}),
    ("get_allocated_inos", {"start_ino": 1025}),
])
def test_privileged_ops_are_eperm_for_users_before_anything(name, args):
    srv = _srv()
    assert _errno(srv, name, args, uid=1000) == errno.EPERM
    # even with nonsense arguments: the capability check comes first
    assert _errno(srv, name, {"ino": "x", "start_ino": -5}, uid=1000) == errno.EPERM
    assert srv.mount.fs.asked == []


@pytest.mark.parametrize("name", ["ino_path", "get_referring_entries"])
@pytest.mark.parametrize("bad", [
    {"ino": 0}, {"ino": -1}, {"ino": 2**64}, {"ino": "1025"}, {"ino": None}, {"ino": True},
    {"ino": 1025, "dir_ino": -1}, {"ino": 1025, "dir_ino": 2**64},
    {"ino": 1025, "dir_pos": "2"}, {"ino": 1025, "dir_pos": 2.5},
])
def test_ino_ops_range_check_every_number(name, bad):
    srv = _srv()
    assert _errno(srv, name, bad) == errno.EINVAL
    assert srv.mount.fs.asked == []


@pytest.mark.parametrize("bad", [{"start_ino": -1}, {"start_ino": 2**64}, {"start_ino": "1"},
                                 {"start_ino": None}, {"start_ino": 1, "nr": -1},
                                 {"start_ino": 1, "nr": 2**32}])
def test_allocated_op_range_checks(bad):
    srv = _srv()
    assert _errno(srv, "get_allocated_inos", bad) == errno.EINVAL
    assert srv.mount.fs.asked == []


def test_ino_ops_answers():
    srv = _srv()
    r = _call(srv, "ino_path", {"ino": 1025, "dir_ino": 0, "dir_pos": 0})
    assert (r["dir_ino"], r["dir_pos"], r["path"].encode("latin-1")) == (1, 2, "dé".encode(
        "latin-1"))
    assert _errno(srv, "ino_path", {"ino": 1025, "dir_ino": 1, "dir_pos": 3}) == errno.ENOENT
    r = _call(srv, "get_referring_entries", {"ino": 1025, "nr": 2})
    assert r == {"entries": [[1, 2, fmt.DT_REG, "n2"], [1, 3, fmt.DT_REG, "n3"]],
                 "last": False}
    r = _call(srv, "get_referring_entries", {"ino": 1025, "dir_ino": 1, "dir_pos": 4})
    assert r == {"entries": [[1, 4, fmt.DT_REG, "n4"]], "last": True}
    assert _call(srv, "get_allocated_inos", {"start_ino": 0})["inos"] == [0]
    assert srv.mount.fs.asked[-1] == ("alloc", 0, fmt.LOCK_GROUP_NR)


# --------------------------------------------------------------------------- CLI


class FakeDaemon:
    """Stands in for daemon_call: answers from a table of index entries."""

    def __init__(self, entries=(), paths=(), refs=(), inos=(), fail=0):
        self.entries = sorted(entries)
        self.paths = list(paths)
        self.refs = list(refs)
        self.inos = list(inos)
        self.fail = fail
        self.calls: list[dict] = []

    def __call__(self, fd, req):
        self.calls.append(req)
        if self.fail:
            raise ControlError(self.fail)
        o = req["op"]
        if o == "walk_inodes":
            f, la = req["first"], req["last"]
            ents = [e for e in self.entries if (f[0], f[2]) <= e <= (la[0], la[2])]
            return {"seq_ino": [x for e in ents[:req["nr"]] for x in e]}
        if o == "ino_path":
            for d, p, path in self.paths:
                if (d, p) >= (req["dir_ino"], req["dir_pos"]):
                    return {"dir_ino": d, "dir_pos": p, "path": path}
            raise ControlError(errno.ENOENT)
        if o == "get_referring_entries":
            ents = [r for r in self.refs if (r[0], r[1]) >= (req["dir_ino"], req["dir_pos"])]
            return {"entries": ents[:2], "last": len(ents) <= 2}
        if o == "get_allocated_inos":
            return {"inos": [i for i in self.inos if i >= req["start_ino"]]
                    [:3 if req["start_ino"] < 2000 else 0]}
        raise AssertionError(o)


def _cli(monkeypatch, capfd, argv, daemon=None, cwd=None):
    if daemon is not None:
        monkeypatch.setattr(cli_walk, "daemon_call", daemon)
    if cwd is not None:
        monkeypatch.chdir(cwd)
    rc = cli_main.main(argv)
    out, errout = capfd.readouterr()
    return rc, out, errout


def test_walk_inodes_output_headers_every_25_rows(monkeypatch, capfd, tmp_path):
    ents = [(7 + n // 10, 1024 + n) for n in range(30)]
    d = FakeDaemon(entries=ents)
    monkeypatch.setattr(cli_walk, "WALK_BATCH", 7)  # several requests
    rc, out, errout = _cli(monkeypatch, capfd, ["walk-inodes", "-p", str(tmp_path),
                                                "meta_seq", "0", "--", "-1"], d)
    assert (rc, errout) == (0, "")
    lines = out.splitlines(keepends=True)
    hdr = "#                    major                minor      ino                 \n"
    assert lines[0] == hdr and lines[26] == hdr and len(lines) == 32
    assert lines[1] == "0                    7                    0          1024                \n"
    assert lines[27].startswith("25                   9                    0          1049 ")
    # each request continues after the last entry it got
    assert [c["first"] for c in d.calls[:2]] == [[0, 0, 0], [7, 0, 1031]]
    assert d.calls[0]["last"] == [U64_MAX, 2**32 - 1, U64_MAX]
    assert d.calls[0]["index"] == 0


@pytest.mark.parametrize("start", [0, 1, 24, 25, 26, 49, 50, 1000, 1013])
@pytest.mark.parametrize("count", [0, 1, 24, 25, 26, 51, 100, 137])
def test_walk_rows_formatted_in_blocks_as_row_by_row(start, count):
    flat = [x for k in range(count) for x in (3 + k // 7, 2**64 - 1 - k)]
    want = []
    for k in range(count):
        if not (start + k) % 25:
            want.append(cli_walk._walk_header())
        want.append(cli_walk.WALK_ROW % (start + k, flat[2 * k], 0, flat[2 * k + 1]))
    assert cli_walk.format_walk_rows(start, flat) == "".join(want)


def test_walk_inodes_positions(monkeypatch, capfd, tmp_path):
    d = FakeDaemon()
    rc, _out, _err = _cli(monkeypatch, capfd, ["walk-inodes", "-p", str(tmp_path), "DATA_SEQ",
                                               "0x10.2.3", "017.0"], d)
    assert rc == 0
    assert d.calls[0]["first"] == [16, 2, 3] and d.calls[0]["last"] == [15, 0, 0]
    assert d.calls[0]["index"] == 1
    assert cli_walk.parse_walk_pos("5") == (5, 0, 0)
    assert cli_walk.parse_walk_pos("5.-1.-1") == (5, 2**32 - 1, U64_MAX)


@pytest.mark.parametrize("argv,msg", [
    ([], "no index given"),
    (["meta_seq"], "no first entry given"),
    (["meta_seq", "0"], "no last entry given"),
    (["meta_seq", "0", "1", "2"], "more than three arguments given"),
    (["meta_seq", "0", "-1"], "invalid option -- '1'"),
])
def test_walk_inodes_usage_errors(monkeypatch, capfd, argv, msg):
    rc, out, errout = _cli(monkeypatch, capfd, ["walk-inodes", *argv], FakeDaemon())
    assert rc == 64 and out == ""
    assert errout == (f"walk-inodes: {msg}\nTry `walk-inodes --help' or "
                      "`walk-inodes --usage' for more information.\n")


@pytest.mark.parametrize("pos,bad", [("x", "x"), ("1.x.3", "x"), ("1.2.y", "y"),
                                     ("1.4294967296", "4294967296"), ("1..2", ""),
                                     ("1.2.3.4", "4"), ("18446744073709551616", None)])
def test_walk_inodes_bad_positions(monkeypatch, capfd, pos, bad):
    bad = pos if bad is None else bad
    for which, argv in (("first", [pos, "0"]), ("last", ["0", pos])):
        rc, out, errout = _cli(monkeypatch, capfd, ["walk-inodes", "meta_seq", *argv],
                               FakeDaemon())
        assert rc == 64 and out == ""
        assert errout.splitlines() == [
            f"bad index pos at '{bad}'",
            f"walk-inodes: invalid {which} position '{pos}', try '1.2.3' or '-1'",
            "Try `walk-inodes --help' or `walk-inodes --usage' for more information."]


def test_walk_inodes_unknown_index_and_ioctl_failure(monkeypatch, capfd, tmp_path):
    rc, out, errout = _cli(monkeypatch, capfd, ["walk-inodes", "-p", str(tmp_path), "nope",
                                                "0", "1"], FakeDaemon())
    assert (rc, out) == (1, "")
    assert errout == ("unknown index 'nope', try 'meta_seq' or 'data_seq'\n"
                      "scoutfs: walk-inodes failed: Invalid argument (22)\n")
    rc, out, errout = _cli(monkeypatch, capfd, ["walk-inodes", "-p", str(tmp_path),
                                                "meta_seq", "0", "1"],
                           FakeDaemon(fail=errno.ENOTTY))
    assert (rc, out) == (1, "")
    assert errout == ("walk_inodes ioctl failed: Inappropriate ioctl for device (25)\n"
                      "scoutfs: walk-inodes failed: Inappropriate ioctl for device (25)\n")
    rc, out, errout = _cli(monkeypatch, capfd, ["walk-inodes", "-p", str(tmp_path / "no"),
                                                "meta_seq", "0", "1"], FakeDaemon())
    assert rc == 1 and f"failed to open '{tmp_path / 'no'}': No such file" in errout


def test_ino_path_and_referring_entries_output(monkeypatch, capfdbinary, tmp_path):
    d = FakeDaemon(paths=[(1, 2, "a/b"), (1, 5, "a/c"), (7, 2, "x/\xe9")])
    rc, out, errout = _cli(monkeypatch, capfdbinary, ["ino-path", "-p", str(tmp_path),
                                                      "1030"], d)
    assert (rc, errout) == (0, b"")
    assert out == b"a/b\na/c\nx/\xe9\n"  # names are bytes, printed as they are
    assert [(c["dir_ino"], c["dir_pos"]) for c in d.calls] == [(0, 0), (1, 3), (1, 6), (7, 3)]
    d = FakeDaemon(refs=[[1, 2, 8, "f"], [9, 3, 8, "g"], [9, 4, 4, "h"]])
    rc, out, errout = _cli(monkeypatch, capfdbinary, ["get-referring-entries", "-p",
                                                      str(tmp_path), "1030"], d)
    assert (rc, errout) == (0, b"")
    assert out == (b"dir 1 pos 2 type 8 name f\ndir 9 pos 3 type 8 name g\n"
                   b"dir 9 pos 4 type 4 name h\n")
    assert [(c["dir_ino"], c["dir_pos"]) for c in d.calls] == [(0, 0), (9, 4)]


@pytest.mark.parametrize("cmd", ["ino-path", "get-referring-entries"])
def test_ino_commands_errors(monkeypatch, capfd, tmp_path, cmd):
    try_line = f"Try `{cmd} --help' or `{cmd} --usage' for more information.\n"
    for argv, msg in (([], "must provide inode number"), (["0"], "must provide inode number"),
                      (["1", "2"], "more than one argument given"),
                      (["x"], "invalid 64bit value: 'x'")):
        rc, out, errout = _cli(monkeypatch, capfd, [cmd, *argv], FakeDaemon())
        assert (rc, out, errout) == (64, "", f"{cmd}: {msg}\n" + try_line)
    rc, out, errout = _cli(monkeypatch, capfd, [cmd, "-p", str(tmp_path), "5"],
                           FakeDaemon(fail=errno.EPERM))
    assert (rc, out) == (1, "")
    assert errout == ("ioctl failed: Operation not permitted (1)\n"
                      f"scoutfs: {cmd} failed: Operation not permitted (1)\n")


def test_get_allocated_inos(monkeypatch, capfd, tmp_path):
    d = FakeDaemon(inos=[1030, 1031, 1033, 1040, 1041])
    rc, out, errout = _cli(monkeypatch, capfd, ["get-allocated-inos", "-i", "1031", "-p",
                                                str(tmp_path)], d)
    assert (rc, errout) == (0, "")
    assert out == "1031\n1033\n1040\n1041\n"
    assert [c["start_ino"] for c in d.calls] == [1031, 1041, 1042]
    for ino, want in (("1033", "1033\n"), ("1032", ""), ("0x406", "1030\n")):
        rc, out, errout = _cli(monkeypatch, capfd, ["get-allocated-inos", "-i", ino, "-s",
                                                    "-p", str(tmp_path)], d)
        assert (rc, out, errout) == (0, want, "")
    # -i also sets the path (upstream's fallthrough): -p must come after it
    os.mkdir(tmp_path / "1033")
    rc, out, _e = _cli(monkeypatch, capfd, ["get-allocated-inos", "-s", "-i", "1033"], d,
                       cwd=tmp_path)
    assert (rc, out) == (0, "1033\n")
    rc, out, errout = _cli(monkeypatch, capfd, ["get-allocated-inos", "-p", str(tmp_path),
                                                "-i", "1030"], d, cwd="/")
    assert rc == 1 and errout.startswith("failed to open '1030': No such file or directory")
    rc, out, errout = _cli(monkeypatch, capfd, ["get-allocated-inos", "-p", str(tmp_path)], d)
    assert rc == 64 and errout.startswith("get-allocated-inos: must provide --ino\n")
    rc, out, errout = _cli(monkeypatch, capfd, ["get-allocated-inos", "-i", "1", "-p",
                                                str(tmp_path)], FakeDaemon(fail=errno.EPERM))
    assert (rc, out) == (1, "")
    assert errout == ("get_allocated_inos ioctl failed: Operation not permitted (1)\n"
                      "scoutfs: get-allocated-inos failed: Operation not permitted (1)\n")


# --------------------------------------------------------------------------- a real mount


@pytest.fixture
def volume(tmp_path):
    import socket

    from fs import mkfs

    meta, data = str(tmp_path / "meta.img"), str(tmp_path / "data.img")
    with open(meta, "wb") as f:
        f.truncate(256 << 20)
    with open(data, "wb") as f:
        f.truncate(64 << 20)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mkfs.make_volume(meta, data, {0: ("127.0.0.1", port)})
    return meta, data


def test_index_commands_on_a_mount_with_item_cache_locks_and_server(volume):
    """The real stack: the item cache's batched reads, the READ lock of the index zone taken
    after this mount's WRITE_ONLY writes, and the server's last stable seq."""
    from fs.super import Mount

    async def main():
        async with trio.open_nursery() as n:
            m = await Mount.open(*volume, {"quorum_slot_nr": 0}, n)
            fs = m.fs
            d = await fs.mkdir(ROOT, b"d", 0o755, CTX)
            inos = [(await fs.mknod(d.ino, b"f%04d" % i, 0o100644, 0, CTX)).ino
                    for i in range(600)]
            # not committed yet: the open transaction is not stable
            assert await fs.walk_inodes(1, (0, 0), (U64_MAX, U64_MAX), 10) == []
            await m.sync()
            ents = []
            first = (0, 0)
            while batch := await fs.walk_inodes(1, first, (U64_MAX, U64_MAX), 250):
                ents += batch
                first = (batch[-1][0], batch[-1][1] + 1)
            assert [i for _s, i in ents] == inos
            meta = await fs.walk_inodes(0, (0, 0), (U64_MAX, U64_MAX), 5000)
            assert {ROOT, d.ino, *inos} == {i for _s, i in meta} and meta == sorted(meta)
            # writes after a walk take the index back (WRITE_ONLY) and show after a commit
            await fs.write(inos[7], 0, b"x", CTX)
            await m.sync()
            ents = await fs.walk_inodes(1, (0, 0), (U64_MAX, U64_MAX), 5000)
            assert [i for _s, i in ents] == inos[:7] + inos[8:] + [inos[7]]
            assert (await fs.ino_path(inos[3]))[2] == b"d/f0003"
            assert await fs.get_allocated_inos(inos[0], 2) == inos[:2]
            await fs.unlink(d.ino, b"f0001", CTX)
            await fs.forget(inos[1])
            await fs.drain_deletions()
            assert await fs.get_allocated_inos(inos[0], 2) == [inos[0], inos[2]]
            await m.close()
            n.cancel_scope.cancel()

    trio.run(main)
