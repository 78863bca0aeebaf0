"""Control socket hardening (fs/control.py): connection limits per uid and in total (below the
daemon's fd limit), EMFILE at accept, the request size cap, the idle timeout, passed fds, the
credential and range checks of the ops, and the modes of the daemon's log files (fs/mount.py).

The servers run in-process (as in test_control.py).  A connection's uid normally comes from
SO_PEERCRED; `UidServer` lets a test speak as any uid: a client that binds its socket to the
abstract name ``\\0scoutfs-test-uid-<uid>-<n>`` is that uid to the server.
"""

from __future__ import annotations

import array
import errno
import itertools
import json
import logging
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import trio

from fs import control, control_client
from fs.control import OPS, ControlServer, Request
from fs.errors import FsError

REPO = Path(__file__).resolve().parents[2]
USER = 12345
_names = itertools.count()


class UidServer(ControlServer):
    def peer_creds(self, conn) -> tuple[int, int, int]:
        pid, uid, gid = super().peer_creds(conn)
        name = conn.getpeername()
        if isinstance(name, bytes) and name.startswith(b"\0scoutfs-test-uid-"):
            uid = gid = int(name.split(b"-")[3])
        return pid, uid, gid


@pytest.fixture
def sock_dir():
    # AF_UNIX paths are limited to 108 bytes: pytest's tmp_path may be too deep
    d = tempfile.mkdtemp(prefix="ctl-", dir="/tmp")
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _mount() -> SimpleNamespace:
    return SimpleNamespace(fsid=0x1234, rid=0x5678)


def _client(uid: int | None = None) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    if uid is not None:
        s.bind(f"\0scoutfs-test-uid-{uid}-{os.getpid()}-{next(_names)}".encode())
    return s


async def _connect(path: str, uid: int | None = None) -> trio.socket.SocketType:
    s = trio.socket.from_stdlib_socket(_client(uid))
    await s.connect(path)
    return s


async def _recv_line(s) -> bytes:
    """A reply line, or b"" when the server closed the connection."""
    buf = b""
    while not buf.endswith(b"\n"):
        try:
            chunk = await s.recv(1 << 16)
        except ConnectionResetError:
            return b""
        if not chunk:
            return b""
        buf += chunk
    return buf


async def _ask(s, req: dict) -> dict | None:
    """Send a request; its reply, or None when the server refused the connection."""
    data = json.dumps(req).encode() + b"\n"
    try:
        while data:
            data = data[await s.send(data):]
    except (BrokenPipeError, ConnectionResetError):
        pass
    line = await _recv_line(s)
    reply = json.loads(line) if line else None
    return None if reply == REFUSED else reply


REFUSED = {"errno": errno.EAGAIN}  # what a refused connection reads before its end


async def _refused(s) -> bool:
    """Whether the server refused this fresh connection at once: EAGAIN, then its end,
    without a request."""
    with trio.fail_after(5):
        line = await _recv_line(s)
        return (not line or json.loads(line) == REFUSED) and await _recv_line(s) == b""


async def _serving(nursery, srv: ControlServer) -> ControlServer:
    srv.bind()
    await nursery.start(srv.serve)
    return srv


def _server(sock_dir: str, cls=UidServer) -> ControlServer:
    return cls(_mount(), 0, 0, path=os.path.join(sock_dir, "ctl", "0:0.sock"))


# --------------------------------------------------------------------------- connections


def test_connections_per_uid_are_limited(sock_dir):
    srv = _server(sock_dir)

    async def main():
        async with trio.open_nursery() as nursery:
            await _serving(nursery, srv)
            held = []
            for _ in range(getattr(srv, "max_per_uid", 16)):
                s = await _connect(srv.path, USER)
                assert (await _ask(s, {"op": "ping"}))["rid"] == 0x5678
                held.append(s)
            extra = await _connect(srv.path, USER)
            assert await _refused(extra)
            extra.close()
            # another user is not affected, nor is root
            other = await _connect(srv.path, USER + 1)
            assert (await _ask(other, {"op": "ping"}))["errno"] == 0
            other.close()
            root = await _connect(srv.path, 0)
            assert (await _ask(root, {"op": "ping"}))["errno"] == 0
            root.close()
            # a closed connection frees its slot
            held.pop().close()
            with trio.fail_after(5):
                while True:
                    s = await _connect(srv.path, USER)
                    if await _ask(s, {"op": "ping"}) is not None:
                        break
                    s.close()
                    await trio.sleep(0.01)
            held.append(s)
            for s in held:
                s.close()
            nursery.cancel_scope.cancel()

    trio.run(main)


def test_total_connections_are_limited_with_slots_kept_for_root(sock_dir):
    srv = _server(sock_dir)
    srv.max_total, srv.root_reserved, srv.max_per_uid = 8, 2, 4

    async def main():
        async with trio.open_nursery() as nursery:
            await _serving(nursery, srv)
            held = []
            for uid in (USER, USER, USER, USER + 1, USER + 1, USER + 2):
                s = await _connect(srv.path, uid)
                assert await _ask(s, {"op": "ping"}) is not None
                held.append(s)
            # users together have max_total - root_reserved
            s = await _connect(srv.path, USER + 3)
            assert await _refused(s)
            s.close()
            # root has the rest, and no more
            for _ in range(2):
                s = await _connect(srv.path, 0)
                assert await _ask(s, {"op": "ping"}) is not None
                held.append(s)
            s = await _connect(srv.path, 0)
            assert await _refused(s)
            s.close()
            for s in held:
                s.close()
            nursery.cancel_scope.cancel()

    trio.run(main)


def test_total_limit_stays_within_the_fd_limit(monkeypatch):
    srv = ControlServer(_mount(), 0, 0, path="/nonexistent/x.sock")
    assert srv.total_limit() == srv.max_total  # the default fd limit leaves room for all
    monkeypatch.setattr(control.resource, "getrlimit", lambda what: (256, 4096))
    limit = srv.total_limit()
    # each connection may hold its socket and MAX_FDS passed fds
    assert 2 <= limit and limit * (1 + control.MAX_FDS) <= 256 - control.FD_RESERVE
    monkeypatch.setattr(control.resource, "getrlimit", lambda what: (32, 4096))
    assert srv.total_limit() >= 1  # root can always get in


def test_accept_survives_emfile(sock_dir, caplog):
    srv = _server(sock_dir, ControlServer)

    async def main():
        async with trio.open_nursery() as nursery:
            await _serving(nursery, srv)
            real = srv.sock
            fails = {"left": 5}

            class Exhausted:
                async def accept(self):
                    if fails["left"]:
                        fails["left"] -= 1
                        await trio.sleep(0)
                        raise OSError(errno.EMFILE, "Too many open files")
                    return await real.accept()

                def close(self):
                    real.close()

            srv.sock = Exhausted()
            with trio.fail_after(10):
                for _ in range(2):  # the first is taken by the accept already waiting
                    s = await _connect(srv.path)
                    assert (await _ask(s, {"op": "ping"}))["fsid"] == 0x1234
                    s.close()
            assert fails["left"] == 0
            nursery.cancel_scope.cancel()

    with caplog.at_level(logging.WARNING, logger="fs.control"):
        trio.run(main)
    emfile = [r for r in caplog.records if "accept" in r.getMessage()]
    assert 1 <= len(emfile) <= 2  # rate limited, not one line per failure


CHILD = textwrap.dedent("""
    import os, resource, sys
    sys.path.insert(0, sys.argv[1])
    import trio
    from types import SimpleNamespace
    from fs.control import ControlServer

    class UidServer(ControlServer):
        def peer_creds(self, conn):
            pid, uid, gid = super().peer_creds(conn)
            name = conn.getpeername()
            if isinstance(name, bytes) and name.startswith(b"\\0scoutfs-test-uid-"):
                uid = gid = int(name.split(b"-")[3])
            return pid, uid, gid

    resource.setrlimit(resource.RLIMIT_NOFILE, (256, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
    srv = UidServer(SimpleNamespace(fsid=1, rid=2), 0, 0, path=sys.argv[2])

    async def main():
        async with trio.open_nursery() as nursery:
            srv.bind()
            await nursery.start(srv.serve)
            print("ready", flush=True)
            await trio.sleep_forever()

    trio.run(main)
""")


def _ping(path: str, uid: int | None = None, timeout: float = 10) -> dict | None:
    with _client(uid) as s:
        _connect_retrying(s, path, timeout)
        try:
            s.sendall(b'{"op": "ping"}\n')
            buf = b""
            while not buf.endswith(b"\n"):
                chunk = s.recv(4096)
                if not chunk:
                    return None
                buf += chunk
        except (BrokenPipeError, ConnectionResetError):
            return None
    return json.loads(buf)


def test_400_connections_of_a_user_do_not_exhaust_a_256_fd_daemon(sock_dir):
    """The finding: 400 connections of one unprivileged user to a daemon started with a
    256 fd limit made accept fail with EMFILE, which took the server (and the mount) down."""
    path = os.path.join(sock_dir, "ctl", "0:0.sock")
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(REPO), path],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    held: list[socket.socket] = []
    try:
        assert child.stdout.readline().strip() == "ready", child.stderr.read()
        try:
            for i in range(400):
                s = _client(USER + i % 3)  # three users, all over their limits
                held.append(s)
                _connect_retrying(s, path)
        except OSError as e:
            child.kill()
            raise AssertionError(f"connection {i}: {e}: {child.stderr.read()[-3000:]}") from e
        time.sleep(0.5)
        assert child.poll() is None, child.stderr.read()
        reply = _ping(path)  # root still gets in
        assert reply is not None and reply["rid"] == 2
        # the users' excess connections were closed at once, the others still stand
        open_ = sum(1 for s in held if not _closed(s))
        assert 0 < open_ <= 3 * 16
        for s in held:
            s.close()
        held.clear()
        # the daemon sees the closes as it gets to them: until then the user is still at
        # its limit and is refused (EAGAIN); it gets in once they are counted
        with_retry = None
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with_retry = _ping(path, USER)
            if with_retry is not None and "rid" in with_retry:
                break
            time.sleep(0.05)
        assert with_retry is not None and with_retry.get("rid") == 2, with_retry
        assert child.poll() is None
    finally:
        for s in held:
            s.close()
        child.send_signal(signal.SIGKILL)
        child.wait(10)


def _connect_retrying(s: socket.socket, path: str, timeout: float = 10) -> None:
    """connect(); a full listen backlog (EAGAIN on a socket with a timeout) is waited out."""
    s.settimeout(timeout)
    deadline = time.monotonic() + timeout
    while True:
        try:
            s.connect(path)
            return
        except BlockingIOError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.005)


def _closed(s: socket.socket) -> bool:
    """Whether the server refused (or closed) this connection, which sent no request."""
    s.setblocking(False)
    try:
        got = s.recv(4096)
        return got == b"" or json.loads(got) == REFUSED
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True
    finally:
        s.setblocking(True)


# --------------------------------------------------------------------------- requests


def test_a_request_without_newline_is_cut_off_at_the_size_cap(sock_dir):
    srv = _server(sock_dir)

    async def main():
        async with trio.open_nursery() as nursery:
            await _serving(nursery, srv)
            s = await _connect(srv.path, USER)
            chunk = b"x" * (1 << 16)
            sent = 0
            closed = False
            with trio.fail_after(20):
                while sent < 8 * getattr(control, "MAX_REQUEST", 1 << 20):
                    try:
                        sent += await s.send(chunk)
                    except (BrokenPipeError, ConnectionResetError):
                        closed = True
                        break
            assert closed, f"{sent} bytes without a newline were taken"
            s.close()
            # a large request under the cap is still served
            s = await _connect(srv.path, USER)
            reply = await _ask(s, {"op": "ping", "pad": "y" * (1 << 19)})
            assert reply is not None and reply["rid"] == 0x5678
            s.close()
            nursery.cancel_scope.cancel()

    trio.run(main)


def test_idle_connections_are_closed(sock_dir):
    srv = _server(sock_dir)
    srv.idle_timeout = 0.5

    async def main():
        async with trio.open_nursery() as nursery:
            await _serving(nursery, srv)
            silent = await _connect(srv.path, USER)
            partial = await _connect(srv.path, USER)
            await partial.send(b'{"op": "pi')
            busy = await _connect(srv.path, USER)
            t0 = trio.current_time()
            # a connection that keeps sending complete requests is not idle
            for _ in range(6):
                assert await _ask(busy, {"op": "ping"}) is not None
                await trio.sleep(0.2)
            with trio.fail_after(5):
                assert await _recv_line(silent) == b""
                assert await _recv_line(partial) == b""
            assert trio.current_time() - t0 >= 0.4
            for s in (silent, partial, busy):
                s.close()
            nursery.cancel_scope.cancel()

    trio.run(main)


def _fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_passed_fds_are_bounded_per_request(sock_dir):
    """fds sent in many messages without a newline piled up in the daemon, unbounded."""
    srv = _server(sock_dir)

    async def main():
        async with trio.open_nursery() as nursery:
            await _serving(nursery, srv)
            null = os.open(os.devnull, os.O_RDONLY)
            base = _fd_count()
            s = _client(USER)
            s.connect(srv.path)
            anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [null] * 4).tobytes())]
            closed = False
            for _ in range(50):
                try:
                    await trio.to_thread.run_sync(s.sendmsg, [b" "], anc)
                except (BrokenPipeError, ConnectionResetError):
                    closed = True
                    break
                await trio.sleep(0.005)
            await trio.sleep(0.2)
            assert _fd_count() <= base + control.MAX_FDS + 2
            s.setblocking(False)
            try:
                closed = closed or s.recv(1) == b""
            except BlockingIOError:
                pass
            except ConnectionResetError:
                closed = True
            assert closed
            s.close()
            os.close(null)
            nursery.cancel_scope.cancel()

    trio.run(main)


@pytest.mark.parametrize("line", [b'{"op": []}', b'{"op": {"a": 1}}', b"[1, 2]", b'"ping"',
                                  b"[" * 100000, b"\xff\xfe"])
def test_malformed_requests_are_einval(sock_dir, line, caplog):
    srv = _server(sock_dir)

    async def main():
        async with trio.open_nursery() as nursery:
            await _serving(nursery, srv)
            s = await _connect(srv.path, USER)
            await s.send(line + b"\n")
            with trio.fail_after(5):
                reply = await _recv_line(s)
            assert json.loads(reply) == {"errno": errno.EINVAL}
            s.close()
            nursery.cancel_scope.cancel()

    with caplog.at_level(logging.ERROR, logger="fs.control"):
        trio.run(main)
    assert not caplog.records


# --------------------------------------------------------------------------- ops


class FakeFs:
    """Records what the ops asked; any inode is a regular file."""

    def __init__(self) -> None:
        self.asked: list[int] = []

    async def getattr(self, ino: int):
        self.asked.append(ino)
        return SimpleNamespace(mode=stat.S_IFREG | 0o600, crtime=(7, 8))

    async def stat_more(self, ino: int) -> dict:
        self.asked.append(ino)
        return {"meta_seq": 3, "data_seq": 4, "data_version": 5, "online_blocks": 6,
                "offline_blocks": 0, "crtime": (7, 8)}


def _srv_for(path: str | None = None) -> SimpleNamespace:
    """A server whose mount is the one holding `path` (so fds of files there are "ours")."""
    mnt_id = -1
    if path is not None:
        fd = os.open(path, os.O_RDONLY)
        try:
            mnt_id = int(control.fdinfo(fd)["mnt_id"])
        finally:
            os.close(fd)
    sb = SimpleNamespace(total_meta_blocks=10, free_meta_blocks=5, total_data_blocks=20,
                         free_data_blocks=9, seq=3)
    mount = SimpleNamespace(fs=FakeFs(), fsid=1, rid=2, sb=sb, synced=0)

    async def sync():
        mount.synced += 1

    mount.sync = sync
    return SimpleNamespace(mount=mount, mnt_id=mnt_id, major=0, minor=0)


def _call(srv, name: str, args: dict, uid: int = USER, fds: list[int] | None = None) -> dict:
    req = Request(dict(args, op=name), pid=1, uid=uid, gid=uid, fds=list(fds or []),
                  server=srv)  # type: ignore[arg-type]
    return trio.run(OPS[name], srv, req)


def _errno_of(srv, name: str, args: dict, **kw) -> int:
    with pytest.raises(FsError) as e:
        _call(srv, name, args, **kw)
    return e.value.errno


def test_stat_more_by_inode_number_needs_root():
    """The finding: any user got meta_seq, data_seq, data_version, online blocks and crtime
    of any inode by its number; upstream's STAT_MORE acts on the fd the caller opened."""
    srv = _srv_for()
    assert _errno_of(srv, "stat_more", {"ino": 1025}) == errno.EPERM
    assert srv.mount.fs.asked == []
    assert _call(srv, "stat_more", {"ino": 1025}, uid=0)["data_version"] == 5


@pytest.mark.parametrize("ino", [0, -1, 2**64, 2**64 + 5, 2**70, "1025", 1025.0, True, None,
                                 [1025]])
def test_inode_numbers_are_range_checked_before_any_lock(ino):
    """The finding: an inode number beyond 2^64 left a granted lock on a bogus key."""
    srv = _srv_for()
    assert _errno_of(srv, "stat_more", {"ino": ino}, uid=0) == errno.EINVAL
    assert srv.mount.fs.asked == []


def test_stat_more_acts_on_a_passed_fd(tmp_path):
    f = tmp_path / "f"
    f.write_bytes(b"x")
    srv = _srv_for(str(f))
    fd = os.open(f, os.O_RDONLY)
    try:
        r = _call(srv, "stat_more", {}, fds=[fd])
        assert (r["data_version"], r["crtime_sec"], r["crtime_nsec"]) == (5, 7, 8)
        assert srv.mount.fs.asked == [os.stat(f).st_ino] * 2
        # the fd is what counts: an "ino" beside it is not looked at
        srv.mount.fs.asked.clear()
        _call(srv, "stat_more", {"ino": 2**80}, fds=[fd])
        assert srv.mount.fs.asked == [os.stat(f).st_ino] * 2
    finally:
        os.close(fd)


def test_an_o_path_fd_is_ebadf(tmp_path):
    """An O_PATH fd needs no read permission on the file (only search on its dir): an ioctl
    on one is EBADF, and so is any op given one here."""
    f = tmp_path / "secret"
    f.write_bytes(b"x")
    srv = _srv_for(str(f))
    fd = os.open(f, os.O_PATH)
    try:
        for name in ("stat_more", "statfs_more", "alloc_detail", "sync"):
            assert _errno_of(srv, name, {}, fds=[fd]) == errno.EBADF, name
        assert srv.mount.fs.asked == [] and srv.mount.synced == 0
    finally:
        os.close(fd)


def test_mount_wide_ops_need_an_fd_on_the_mount_or_root(tmp_path):
    """statfs_more, alloc_detail and sync are ioctls on an open file of the mount: a user
    who cannot reach the mount cannot ask them."""
    f = tmp_path / "f"
    f.write_bytes(b"x")
    srv = _srv_for(str(f))
    for name in ("statfs_more", "alloc_detail", "sync"):
        assert _errno_of(srv, name, {}) == errno.EBADF, name
    assert srv.mount.synced == 0
    fd = os.open(f, os.O_RDONLY)
    try:
        assert _call(srv, "statfs_more", {}, fds=[fd])["fsid"] == 1
        _call(srv, "sync", {}, fds=[fd])
        assert srv.mount.synced == 1
    finally:
        os.close(fd)
    assert _call(srv, "statfs_more", {}, uid=0)["rid"] == 2
    _call(srv, "sync", {}, uid=0)
    assert srv.mount.synced == 2


# --------------------------------------------------------------------------- log files


def test_log_file_handler_creates_private_files(tmp_path):
    from fs import mount

    old = os.umask(0o022)
    try:
        path = tmp_path / "log" / "x.log"
        h = mount._add_file_handler(str(path))
        try:
            logging.getLogger("fs.test").warning("hello")
            h.flush()
        finally:
            logging.getLogger().removeHandler(h)
            h.close()
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
        # a log left world-readable by an older daemon is made private when opened again
        os.chmod(path, 0o644)
        h = mount._add_file_handler(str(path))
        logging.getLogger().removeHandler(h)
        h.close()
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    finally:
        os.umask(old)


def test_redirected_stdout_log_is_private(tmp_path):
    from fs import mount

    path = tmp_path / "log" / "y.log"
    pid = os.fork()
    if pid == 0:  # the daemon's own redirection, in a child: it replaces fds 0, 1 and 2
        code = 1
        try:
            os.umask(0o022)
            mount._redirect_std(str(path))
            os.write(1, b"out\n")
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert path.read_text() == "out\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


def test_the_client_reports_a_refused_connection_as_eagain(sock_dir):
    """`call` (the CLI's side) of a connection over the limits: ControlError(EAGAIN), not a
    broken pipe."""
    srv = _server(sock_dir, ControlServer)
    srv.max_total, srv.root_reserved = 1, 1

    async def main():
        async with trio.open_nursery() as nursery:
            await _serving(nursery, srv)
            held = await _connect(srv.path)  # root's only slot
            assert await _ask(held, {"op": "ping"}) is not None
            st_dev = 12345
            with pytest.MonkeyPatch.context() as mp:
                # (the client side lives in fs.control_client)
                mp.setattr(control_client, "socket_path_for_dev", lambda dev: srv.path)
                for _ in range(3):
                    with pytest.raises(control.ControlError) as e:
                        await trio.to_thread.run_sync(control.call, st_dev, {"op": "ping"})
                    assert e.value.errno == errno.EAGAIN
            held.close()
            nursery.cancel_scope.cancel()

    trio.run(main)
