"""The sysfs/debugfs trees of a mount (fs/sysfs.py), the control ops that serve them
(fs/control.py sysfs_*) and the view's backend (sysview/backend.py), without FUSE."""

from __future__ import annotations

import errno
import os
import re
import shutil
import socket
import stat
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from fs import sysfs
from fs.control import ControlServer
from fs.counters import KNOWN, SPEC_NAMES, Counters
from fs.errors import FsError
from fs.triggers import NAMES as TRIGGER_NAMES
from fs.triggers import Triggers
from sysview.backend import Backend

REPO = Path(__file__).resolve().parents[2]

FSID = 0xFC4986AF41343349
RID = 0xF5419B3DA6052E02


@dataclass
class FenceReq:
    rid: int
    ipv4_addr: str = "127.0.0.1"
    reason: str = "client_reconnect"
    fenced: bool = False
    error: bool = False
    secs: int = 3

    def elapsed_secs(self) -> int:
        return self.secs


@dataclass
class FakeServer:
    fence_requests: dict[int, FenceReq] = field(default_factory=dict)
    answers: list[tuple[int, bool, bool]] = field(default_factory=list)
    lock_server: object = field(default_factory=lambda: SimpleNamespace(
        dump_text=lambda: "key mode list rid 00000000000000aa net_id 1",
        stats_text=lambda: "requests 3\n"))

    async def answer_fence(self, rid: int, fenced: bool = False, error: bool = False) -> None:
        await trio.lowlevel.checkpoint()
        self.answers.append((rid, fenced, error))
        req = self.fence_requests[rid]
        req.fenced, req.error = req.fenced or fenced, req.error or error


class FakeMount:
    RW = {"lock_idle_count": (32, 100000), "orphan_scan_delay_ms": (100, 60000)}

    def __init__(self, data_path: str | None = None, leader: bool = True) -> None:
        self.rid, self.fsid = RID, FSID
        self.sb = SimpleNamespace(fmt_vers=2)
        self.data_dev = SimpleNamespace(path=data_path) if data_path else None
        self.options = {"lock_idle_count": 10000, "orphan_scan_delay_ms": 10000,
                        "metadev_path": "/dev/meta", "quorum_slot_nr": 0}
        self.counters = Counters()
        self.triggers = Triggers()
        self.quorum = SimpleNamespace(is_leader=leader, status_text=lambda: "term 3\nrole leader")
        self.server = FakeServer() if leader else None
        self.locks = SimpleNamespace(dump_text=lambda: "start K end K refresh_gen 1 mode 1")

    def set_option(self, name: str, text: str) -> None:
        if name not in self.RW:
            raise FsError(errno.EACCES)
        lo, hi = self.RW[name]
        if not text.strip().isdigit() or not lo <= int(text) <= hi:
            raise FsError(errno.EINVAL)
        self.options[name] = int(text)


def names(mount, tree: str, path: str) -> list[str]:
    return [e.name for e in sysfs.list_dir(mount, tree, path)]


# --------------------------------------------------------------------------- the tree model


def test_ident_is_six_hex_digits_of_each():
    assert sysfs.ident(FSID, RID) == "f.fc4986.r.f5419b"
    assert sysfs.ident(0x1, 0x2) == "f.000000.r.000000"


@given(st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1))
def test_ident_matches_t_ident(fsid, rid):
    # t_ident_from_mnt: the first 6 hex digits of the 16-digit statfs output
    assert sysfs.ident(fsid, rid) == f"f.{f'{fsid:016x}'[:6]}.r.{f'{rid:016x}'[:6]}"


def test_top_level_files_and_formats(tmp_path):
    img = tmp_path / "data.img"
    img.write_bytes(b"")
    m = FakeMount(str(img))
    assert names(m, "sys", "") == ["counters", "data_device_maj_min", "fence", "format_version",
                                   "fsid", "mount_options", "quorum", "rid"]
    assert sysfs.read(m, "sys", "rid") == f"{RID:016x}\n"
    assert sysfs.read(m, "sys", "fsid") == f"{FSID:016x}\n"
    assert sysfs.read(m, "sys", "format_version") == "2\n"
    st_dev = os.stat(img).st_dev  # an image file: the device holding it
    assert sysfs.read(m, "sys", "data_device_maj_min") == \
        f"{os.major(st_dev)}:{os.minor(st_dev)}\n"
    modes = {e.name: (e.is_dir, e.mode) for e in sysfs.list_dir(m, "sys", "")}
    assert modes["rid"] == (False, 0o444) and modes["counters"] == (True, 0o755)


def test_block_device_uses_its_rdev():
    blk = next((str(p) for p in sorted(Path("/dev").glob("loop[0-9]*"))
                if stat.S_ISBLK(p.stat().st_mode)), None)
    if blk is None:
        pytest.skip("no block device to stat")
    rdev = os.stat(blk).st_rdev
    assert sysfs.device_maj_min(blk) == f"{os.major(rdev)}:{os.minor(rdev)}"


def test_missing_attributes_are_simply_absent():
    bare = SimpleNamespace(rid=RID, fsid=FSID)
    assert names(bare, "sys", "") == ["fsid", "rid"]
    assert names(bare, "debug", "") == ["server_lock_stats", "server_locks"]
    assert sysfs.read(bare, "debug", "server_locks") == ""


def test_counters_show_known_names_at_zero_and_live_values():
    m = FakeMount()
    m.counters.inc("orphan_scan", 3)
    m.counters.inc("some_new_counter")
    listed = names(m, "sys", "counters")
    assert set(SPEC_NAMES) <= set(listed) and "some_new_counter" in listed
    assert listed == sorted(listed)
    assert sysfs.read(m, "sys", "counters/orphan_scan") == "3\n"
    assert sysfs.read(m, "sys", "counters/inode_deleted") == "0\n"
    node = sysfs.resolve(m, "sys", "counters/orphan_scan")
    m.counters.inc("orphan_scan")
    assert node.read() == "4\n"  # read when read, not when listed


def test_every_counter_the_code_increments_is_known():
    used = set()
    for path in (REPO / "fs").rglob("*.py"):
        if path.name == "counters.py":
            continue
        used |= set(re.findall(r"""(?:counters\.inc|_inc)\(\s*["']([a-z0-9_]+)["']""",
                               path.read_text()))
    assert used, "the pattern found no counters at all"
    missing = sorted(used - KNOWN)
    assert not missing, f"add these to fs/counters.py OTHER_NAMES: {missing}"


def test_mount_options_read_write_and_reject():
    m = FakeMount()
    assert names(m, "sys", "mount_options") == ["lock_idle_count", "metadev_path",
                                                "orphan_scan_delay_ms", "quorum_slot_nr"]
    modes = {e.name: e.mode for e in sysfs.list_dir(m, "sys", "mount_options")}
    assert modes == {"lock_idle_count": 0o644, "orphan_scan_delay_ms": 0o644,
                     "metadev_path": 0o444, "quorum_slot_nr": 0o444}
    assert sysfs.read(m, "sys", "mount_options/metadev_path") == "/dev/meta\n"

    async def main():
        await sysfs.write(m, "sys", "mount_options/lock_idle_count", "500\n")
        assert sysfs.read(m, "sys", "mount_options/lock_idle_count") == "500\n"
        with pytest.raises(FsError) as e:
            await sysfs.write(m, "sys", "mount_options/lock_idle_count", "5\n")
        assert e.value.errno == errno.EINVAL
        assert sysfs.read(m, "sys", "mount_options/lock_idle_count") == "500\n"
        with pytest.raises(FsError) as e:
            await sysfs.write(m, "sys", "mount_options/metadev_path", "/x\n")
        assert e.value.errno == errno.EACCES
    trio.run(main)


def test_unset_quorum_slot_reads_minus_one():
    m = FakeMount()
    m.options["quorum_slot_nr"] = None
    assert sysfs.read(m, "sys", "mount_options/quorum_slot_nr") == "-1\n"


def test_quorum_and_fence_dirs_only_where_they_exist():
    leader, client = FakeMount(), FakeMount(leader=False)
    client.quorum = None
    assert "quorum" not in names(client, "sys", "")
    assert "fence" not in names(client, "sys", "")
    assert sysfs.read(leader, "sys", "quorum/is_leader") == "1\n"
    assert sysfs.read(leader, "sys", "quorum/status") == "term 3\nrole leader\n"
    assert names(leader, "sys", "fence") == []
    follower = FakeMount(leader=False)
    assert sysfs.read(follower, "sys", "quorum/is_leader") == "0\n"


def test_fence_request_files_and_answers():
    m = FakeMount()
    rid = 0xAA
    m.server.fence_requests[rid] = FenceReq(rid)
    d = f"fence/{rid:016x}"
    assert names(m, "sys", "fence") == [f"{rid:016x}"]
    assert names(m, "sys", d) == list(sysfs.FENCE_FILES)
    got = {f: sysfs.read(m, "sys", f"{d}/{f}") for f in sysfs.FENCE_FILES}
    assert got == {"elapsed_secs": "3\n", "error": "0\n", "fenced": "0\n",
                   "ipv4_addr": "127.0.0.1\n", "reason": "client_reconnect\n",
                   "rid": f"{rid:016x}\n"}
    modes = {e.name: e.mode for e in sysfs.list_dir(m, "sys", d)}
    assert modes["fenced"] == modes["error"] == 0o644 and modes["rid"] == 0o444

    async def main():
        await sysfs.write(m, "sys", f"{d}/fenced", "0\n")  # no-op
        assert m.server.answers == []
        with pytest.raises(FsError) as e:
            await sysfs.write(m, "sys", f"{d}/fenced", "maybe\n")
        assert e.value.errno == errno.EINVAL
        await sysfs.write(m, "sys", f"{d}/fenced", "1\n")
        assert m.server.answers == [(rid, True, False)]
        assert sysfs.read(m, "sys", f"{d}/fenced") == "1\n"
        del m.server.fence_requests[rid]
        with pytest.raises(FsError) as e:
            await sysfs.write(m, "sys", f"{d}/error", "1\n")
        assert e.value.errno == errno.ENOENT
    trio.run(main)


def test_fence_ipv4_as_integer():
    m = FakeMount()
    m.server.fence_requests[1] = FenceReq(1, ipv4_addr=0x7F000001)  # type: ignore[arg-type]
    assert sysfs.read(m, "sys", f"fence/{1:016x}/ipv4_addr") == "127.0.0.1\n"


def test_triggers_arm_and_read_back():
    m = FakeMount()
    assert names(m, "debug", "trigger") == sorted(TRIGGER_NAMES)

    async def main():
        await sysfs.write(m, "debug", "trigger/statfs_lock_purge", "1\n")
        assert sysfs.read(m, "debug", "trigger/statfs_lock_purge") == "1\n"
        assert m.triggers.fire("statfs_lock_purge")
        assert sysfs.read(m, "debug", "trigger/statfs_lock_purge") == "0\n"
        with pytest.raises(FsError) as e:
            await sysfs.write(m, "debug", "trigger/statfs_lock_purge", "one\n")
        assert e.value.errno == errno.EINVAL
    trio.run(main)


def test_debug_lock_dumps_leader_and_not():
    m = FakeMount()
    assert sysfs.read(m, "debug", "client_locks") == "start K end K refresh_gen 1 mode 1\n"
    assert "rid 00000000000000aa" in sysfs.read(m, "debug", "server_locks")
    assert sysfs.read(m, "debug", "server_lock_stats") == "requests 3\n"
    assert sysfs.read(FakeMount(leader=False), "debug", "server_lock_stats") == ""


@pytest.mark.parametrize("path,err", [
    ("nope", errno.ENOENT), ("rid/x", errno.ENOTDIR), ("../rid", errno.EINVAL),
    ("counters/../rid", errno.EINVAL)])
def test_bad_paths(path, err):
    with pytest.raises(FsError) as e:
        sysfs.read(FakeMount(), "sys", path)
    assert e.value.errno == err


def test_dir_and_file_misuse():
    m = FakeMount()
    with pytest.raises(FsError) as e:
        sysfs.read(m, "sys", "counters")
    assert e.value.errno == errno.EISDIR
    with pytest.raises(FsError) as e:
        sysfs.list_dir(m, "sys", "rid")
    assert e.value.errno == errno.ENOTDIR
    with pytest.raises(FsError) as e:
        sysfs.list_dir(m, "proc", "")
    assert e.value.errno == errno.EINVAL
    with pytest.raises(FsError) as e:
        trio.run(sysfs.write, m, "sys", "rid", "1\n")
    assert e.value.errno == errno.EACCES
    assert sysfs.list_dir(m, "sys", "", "rid") == [sysfs.Entry("rid", False, 0o444)]
    with pytest.raises(FsError) as e:
        sysfs.list_dir(m, "sys", "", "nope")
    assert e.value.errno == errno.ENOENT


@given(st.integers(-(2**40), 2**40), st.sampled_from(["", "\n"]), st.sampled_from(["", "+"]))
def test_parse_int_accepts_kstrtoint_forms(n, nl, plus):
    text = (plus if n >= 0 else "") + str(n) + nl
    assert sysfs.parse_int(text) == n


@given(st.text(max_size=8))
def test_parse_int_rejects_everything_else(text):
    body = text[:-1] if text.endswith("\n") else text
    ok = re.fullmatch(r"[+-]?[0-9]+", body) is not None and body.isascii()
    if ok:
        assert sysfs.parse_int(text) == int(body)
    else:
        with pytest.raises(FsError):
            sysfs.parse_int(text)


@pytest.mark.parametrize("text,val", [("1\n", True), ("y", True), ("Yes", True), ("on", True),
                                      ("0\n", False), ("n", False), ("off\n", False)])
def test_parse_bool(text, val):
    assert sysfs.parse_bool(text) is val


def test_parse_bool_rejects():
    with pytest.raises(FsError):
        sysfs.parse_bool("2\n")


# --------------------------------------------------------------------------- control ops + backend


@pytest.fixture
def run_dir():
    # AF_UNIX paths are limited to 108 bytes: pytest's tmp_path may be too deep
    d = tempfile.mkdtemp(prefix="sysfs-", dir="/tmp")
    yield d
    shutil.rmtree(d, ignore_errors=True)


async def _serve(nursery, mount, run_dir: str, majmin: str) -> ControlServer:
    maj, mnr = map(int, majmin.split(":"))
    srv = ControlServer(mount, maj, mnr, path=os.path.join(run_dir, "ctl", f"{majmin}.sock"))
    srv.bind()
    await nursery.start(srv.serve)
    return srv


def test_backend_discovers_live_mounts_and_forwards(run_dir):
    leader, client = FakeMount(), FakeMount(leader=False)
    client.rid = 0x1234567890ABCDEF

    async def main():
        async with trio.open_nursery() as nursery:
            s1 = await _serve(nursery, leader, run_dir, "0:91")
            s2 = await _serve(nursery, client, run_dir, "0:92")
            # a dead daemon's socket file: bound, nobody listening
            dead = socket.socket(socket.AF_UNIX)
            dead.bind(os.path.join(run_dir, "ctl", "0:93.sock"))
            dead.close()
            b = Backend(run_dir, timeout=5)
            found = await b.mounts()
            assert found == {"f.fc4986.r.f5419b": s1.path, "f.fc4986.r.123456": s2.path}
            assert await b.find("f.fc4986.r.123456") == s2.path
            reply = await b.call(s1.path, {"op": "sysfs_list", "tree": "sys", "path": "quorum"})
            assert reply["entries"] == [["is_leader", "f", 0o444], ["status", "f", 0o444]]
            reply = await b.call(s1.path, {"op": "sysfs_list", "tree": "sys", "path": "",
                                           "name": "counters"})
            assert reply["entries"] == [["counters", "d", 0o755]]
            reply = await b.call(s2.path, {"op": "sysfs_read", "tree": "sys", "path": "rid"})
            assert reply["text"] == "1234567890abcdef\n"
            await b.call(s1.path, {"op": "sysfs_write", "tree": "debug",
                                   "path": "trigger/block_remove_stale", "value": "1\n"})
            assert leader.triggers.get("block_remove_stale") == 1
            with pytest.raises(FsError) as e:
                await b.call(s1.path, {"op": "sysfs_write", "tree": "sys",
                                       "path": "mount_options/lock_idle_count", "value": "1\n"})
            assert e.value.errno == errno.EINVAL
            with pytest.raises(FsError) as e:
                await b.call(s1.path, {"op": "sysfs_read", "tree": "sys", "path": "nope"})
            assert e.value.errno == errno.ENOENT
            # the mount goes away: its socket is removed (or refuses)
            s2.remove()
            assert set(await b.mounts()) == {"f.fc4986.r.f5419b"}
            assert await b.find("f.fc4986.r.123456") is None
            with pytest.raises(FsError) as e:
                await b.call(s2.path, {"op": "ping"})
            assert e.value.errno == errno.ENOENT
            nursery.cancel_scope.cancel()
    trio.run(main)


def test_backend_tells_a_new_daemon_from_the_last_at_the_same_socket_path(run_dir):
    """A later mount gets the FUSE device number (so the socket path) of one that went away,
    and the run dir's filesystem may give its socket file the same inode number (see
    test_control's socket_identity test): the view must ask the new daemon who it is, not
    list the old mount's dir."""
    first, second = FakeMount(), FakeMount(leader=False)
    second.rid = 0x1234567890ABCDEF

    async def main():
        async with trio.open_nursery() as nursery:
            b = Backend(run_dir, timeout=5)
            s1 = await _serve(nursery, first, run_dir, "0:94")
            assert set(await b.mounts()) == {"f.fc4986.r.f5419b"}
            s1.remove()
            s2 = await _serve(nursery, second, run_dir, "0:94")
            assert await b.mounts() == {"f.fc4986.r.123456": s2.path}
            assert await b.find("f.fc4986.r.f5419b") is None
            nursery.cancel_scope.cancel()
    trio.run(main)


def test_sysfs_write_needs_root():
    from fs.control import OPS, Request

    m = FakeMount()
    req = Request({"tree": "debug", "path": "trigger/block_remove_stale", "value": "1"},
                  pid=1, uid=1000, gid=1000)
    with pytest.raises(FsError) as e:
        trio.run(OPS["sysfs_write"], SimpleNamespace(mount=m), req)
    assert e.value.errno == errno.EACCES
    assert m.triggers.get("block_remove_stale") == 0


def test_backend_times_out_on_a_hung_daemon(run_dir):
    """A daemon that accepts but never answers costs the caller the timeout, then EIO; the
    listing skips a mount that does not answer its first ping."""
    os.makedirs(os.path.join(run_dir, "ctl"))
    path = os.path.join(run_dir, "ctl", "0:94.sock")
    hung = socket.socket(socket.AF_UNIX)
    hung.bind(path)
    hung.listen(8)  # never accepted

    async def main():
        b = Backend(run_dir, timeout=15, probe_timeout=2)
        t0 = trio.current_time()
        with pytest.raises(FsError) as e:
            await b.call(path, {"op": "ping"})
        assert e.value.errno == errno.EIO
        assert trio.current_time() - t0 == pytest.approx(15)
        t0 = trio.current_time()
        assert await b.mounts() == {}
        assert trio.current_time() - t0 == pytest.approx(2)

    try:
        trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    finally:
        hung.close()


# --------------------------------------------------------------------------- the view's operations


def test_where_maps_view_paths_to_trees():
    from sysview.ops import where

    assert where(("fs", "scoutfs")) is None
    assert where(("fs", "scoutfs", "f.a.r.b")) == ("f.a.r.b", "sys", "")
    assert where(("fs", "scoutfs", "f.a.r.b", "counters", "x")) == ("f.a.r.b", "sys", "counters/x")
    assert where(("kernel", "debug", "scoutfs", "id", "trigger")) == ("id", "debug", "trigger")
    assert where(("kernel", "debug")) is None


def test_view_operations_without_fuse(run_dir):
    """lookup/getattr/open/read/write/forget of sysview.ops against an in-process daemon
    (no kernel involved: the handlers are called directly)."""
    from fs import fuse
    from sysview.ops import SysfsOperations

    m = FakeMount()
    ident = sysfs.ident(FSID, RID)

    async def lookup_path(ops, *names):
        ino = fuse.ROOT_INODE
        for n in names:
            ino = (await ops.lookup(ino, n.encode())).st_ino
        return ino

    async def main():
        async with trio.open_nursery() as nursery:
            await _serve(nursery, m, run_dir, "0:95")
            ops = SysfsOperations(Backend(run_dir, timeout=5))
            with pytest.raises(fuse.FUSEError) as e:
                await lookup_path(ops, "fs", "scoutfs", "f.000000.r.000000")
            assert e.value.errno == errno.ENOENT
            rid_ino = await lookup_path(ops, "fs", "scoutfs", ident, "rid")
            a = await ops.getattr(rid_ino)
            assert stat.S_ISREG(a.st_mode) and a.st_mode & 0o777 == 0o444
            assert a.st_size == 4096
            fi = await ops.open(rid_ino, os.O_RDONLY, None)
            assert fi.direct_io
            assert await ops.read(fi.fh, 0, 5) == f"{RID:016x}"[:5].encode()
            assert await ops.read(fi.fh, 5, 4096) == f"{RID:016x}\n"[5:].encode()
            assert await ops.read(fi.fh, 17, 4096) == b""
            await ops.release(fi.fh)
            with pytest.raises(fuse.FUSEError) as e:
                await ops.open(rid_ino, os.O_WRONLY, None)
            assert e.value.errno == errno.EACCES

            t_ino = await lookup_path(ops, "kernel", "debug", "scoutfs", ident, "trigger",
                                      "statfs_lock_purge")
            fi = await ops.open(t_ino, os.O_WRONLY | os.O_TRUNC, None)
            assert await ops.write(fi.fh, 0, b"1\n") == 2
            with pytest.raises(fuse.FUSEError) as e:
                await ops.write(fi.fh, 0, b"x\n")
            assert e.value.errno == errno.EINVAL
            await ops.release(fi.fh)
            assert m.triggers.get("statfs_lock_purge") == 1

            # the same path keeps its inode; forgetting every lookup drops it
            assert await lookup_path(ops, "fs", "scoutfs", ident, "rid") == rid_ino
            ops.forget([(rid_ino, 2)])
            with pytest.raises(fuse.FUSEError):
                await ops.getattr(rid_ino)
            assert await lookup_path(ops, "fs", "scoutfs", ident, "rid") != rid_ino
            nursery.cancel_scope.cancel()

    trio.run(main)


def test_view_readdir_counts_lookups_only_for_readdirplus(run_dir):
    """A READDIRPLUS entry gives the kernel a lookup of its inode (kept until forgotten); a
    plain READDIR entry does not, so no inode is kept for it."""
    from fs import fuse
    from sysview.ops import SysfsOperations

    async def main():
        ops = SysfsOperations(Backend(run_dir, timeout=5))
        fh = await ops.opendir(fuse.ROOT_INODE, None)
        token = fuse.ReaddirToken(4096, plus=False)
        await ops.readdir(fh, 0, token)
        assert len(token.parts) == 2  # fs, kernel
        assert set(ops.nodes) == {fuse.ROOT_INODE} and ops.by_path == {(): fuse.ROOT_INODE}
        token = fuse.ReaddirToken(4096, plus=True)
        await ops.readdir(fh, 0, token)
        assert len(token.parts) == 2
        kept = {ops.nodes[ino].path: ops.nodes[ino].nlookup for ino in ops.nodes}
        assert kept == {(): 1, ("fs",): 1, ("kernel",): 1}
        ops.forget([(ops.by_path[("fs",)], 1), (ops.by_path[("kernel",)], 1)])
        assert set(ops.nodes) == {fuse.ROOT_INODE}
        # a reply too small for the second entry keeps no inode for it
        token = fuse.ReaddirToken(len(token.parts[0]), plus=True)
        await ops.readdir(fh, 0, token)
        assert [n.path for n in ops.nodes.values()] == [(), ("fs",)]
        await ops.releasedir(fh)

    trio.run(main)


# --------------------------------------------------------------------------- debug tree: root only


def test_debug_tree_modes_are_root_only():
    """debugfs is root's alone (/sys/kernel/debug is 0700): the debug tree lists its dirs
    0700 and its files 0600 (0400 without a store); the sys tree keeps sysfs's modes."""
    m = FakeMount()
    modes = {e.name: e.mode for e in sysfs.list_dir(m, "debug", "")}
    assert modes == {"trigger": 0o700, "client_locks": 0o400, "server_locks": 0o400,
                     "server_lock_stats": 0o400}
    assert {e.mode for e in sysfs.list_dir(m, "debug", "trigger")} == {0o600}
    assert sysfs.list_dir(m, "debug", "", "trigger") == [sysfs.Entry("trigger", True, 0o700)]
    assert {e.name: e.mode for e in sysfs.list_dir(m, "sys", "")}["counters"] == 0o755


@pytest.mark.parametrize("op,args", [
    ("sysfs_list", {"path": ""}), ("sysfs_list", {"path": "", "name": "client_locks"}),
    ("sysfs_list", {"path": "trigger"}), ("sysfs_read", {"path": "client_locks"}),
    ("sysfs_read", {"path": "server_locks"}), ("sysfs_read", {"path": "trigger/statfs_lock_purge"}),
    ("sysfs_read", {"path": "nope"}),
    ("sysfs_write", {"path": "trigger/statfs_lock_purge", "value": "1"})])
def test_debug_ops_need_root(op, args):
    """The finding: client_locks, server_locks and the triggers were readable by anyone
    (the control socket is 0666); the daemon refuses them to any uid but root."""
    from fs.control import OPS, Request

    m = FakeMount()
    srv = SimpleNamespace(mount=m)
    req = Request(dict(args, tree="debug"), pid=1, uid=1000, gid=1000)
    with pytest.raises(FsError) as e:
        trio.run(OPS[op], srv, req)
    assert e.value.errno == errno.EACCES
    assert m.triggers.get("statfs_lock_purge") == 0


def test_sys_tree_stays_readable_by_anyone():
    from fs.control import OPS, Request

    m = FakeMount()
    srv = SimpleNamespace(mount=m)
    req = Request({"tree": "sys", "path": "rid"}, pid=1, uid=1000, gid=1000)
    assert trio.run(OPS["sysfs_read"], srv, req)["text"] == f"{RID:016x}\n"
    req = Request({"tree": "debug", "path": "client_locks"}, pid=1, uid=0, gid=0)
    assert trio.run(OPS["sysfs_read"], srv, req)["text"].startswith("start K")


def test_view_shows_debug_files_root_only(run_dir):
    """The view takes the daemon's modes (and mounts with default_permissions, so the
    kernel refuses other users before a request reaches the view)."""
    from fs import fuse
    from sysview.ops import SysfsOperations

    m = FakeMount()
    ident = sysfs.ident(FSID, RID)

    async def main():
        async with trio.open_nursery() as nursery:
            await _serve(nursery, m, run_dir, "0:96")
            ops = SysfsOperations(Backend(run_dir, timeout=5))
            ino = fuse.ROOT_INODE
            modes = {}
            for name in ("kernel", "debug", "scoutfs", ident, "trigger", "statfs_lock_purge"):
                a = await ops.lookup(ino, name.encode())
                ino, modes[name] = a.st_ino, a.st_mode & 0o7777
            assert (modes["trigger"], modes["statfs_lock_purge"]) == (0o700, 0o600)
            ino = fuse.ROOT_INODE
            for name in ("kernel", "debug", "scoutfs", ident, "client_locks"):
                ino = (await ops.lookup(ino, name.encode())).st_ino
            assert (await ops.getattr(ino)).st_mode & 0o7777 == 0o400
            nursery.cancel_scope.cancel()

    trio.run(main)


def test_view_debug_dirs_are_root_only(run_dir):
    """/sys/kernel/debug is 0700 as debugfs is: the view's debug dirs too, the sys tree not."""
    from fs import fuse
    from sysview.ops import SysfsOperations

    async def main():
        ops = SysfsOperations(Backend(run_dir, timeout=5))
        kernel = await ops.lookup(fuse.ROOT_INODE, b"kernel", None)
        debug = await ops.lookup(kernel.st_ino, b"debug", None)
        scoutfs = await ops.lookup(debug.st_ino, b"scoutfs", None)
        fs_dir = await ops.lookup(fuse.ROOT_INODE, b"fs", None)
        assert kernel.st_mode & 0o7777 == 0o755
        assert debug.st_mode & 0o7777 == 0o700 and scoutfs.st_mode & 0o7777 == 0o700
        assert fs_dir.st_mode & 0o7777 == 0o755

    trio.run(main)
