"""The control socket: the daemon's equivalent of the scoutfs ioctls (ARCHITECTURE.md §2).

One Unix stream socket per mount at ``<run dir>/ctl/<maj>:<min>.sock`` (maj:min = st_dev of
the FUSE mount).  Requests are JSON lines ``{"op": NAME, ...}``, each sent with one
``sendmsg`` that may carry file descriptors (``SCM_RIGHTS``); answers are JSON lines
``{"errno": 0, ...}`` or ``{"errno": N}``.  The caller's uid/gid/pid come from
``SO_PEERCRED``.

Adding an operation is one function::

    @op("release")
    async def _release(srv: ControlServer, req: Request) -> dict: ...

raising `FsError(errno)` for failures.  A passed fd is resolved to our inode number with
`Request.inode()` (reads ``/proc/self/fdinfo``: kernel-local, no FUSE request) and its open
flags with `Request.open_flags()` (``fcntl(F_GETFL)``).  Never ``fstat``/``read`` a passed fd
of our own mount from the trio thread: that is a FUSE request to ourselves (deadlock).  Even
``close()`` of a passed fd sends FLUSH: passed fds are closed from a worker thread.

The ``sysfs_list``/``sysfs_read``/``sysfs_write`` ops serve the sysfs/debugfs view
(fs/sysfs.py builds the trees; sysview/ is the FUSE program that forwards to them).

The socket is 0666: any user may connect, so every op checks what upstream's ioctl checks
and nothing a user does may stop the mount (see "Limits" below):

* an op about a file acts on the fd the caller opened and passed, as an ioctl acts on its
  fd (`Request.inode`: the fd must be on this mount and not O_PATH, which needs no
  permission on the file); an inode number in the arguments is for root only and is
  range-checked (`parse_ino`) before anything takes a lock;
* a mount-wide op (statfs_more, alloc_detail, sync) needs an fd on the mount, or root;
* privileged ops (sysfs_write, force_unmount) need root; the debug tree (upstream's
  debugfs, root's alone) is root's for reading too.

Limits (`ControlServer`): connections per uid (root excepted) and in total, the total also
kept below what the daemon's RLIMIT_NOFILE leaves after `FD_RESERVE` (each connection may
hold its socket and `MAX_FDS` passed fds), with `root_reserved` of them kept for root (the
umount helper's force_unmount must get through); an excess connection is answered EAGAIN
and closed at once.  A request is at most `MAX_REQUEST` bytes (read in bounded chunks: a
longer one closes the connection) and must arrive complete within `idle_timeout` of the
last one (a reply must be taken within it too).  accept() failing (EMFILE...) is logged and
retried, never fatal.  Everything a client can make us log is rate limited.

The client side (`call`, in fs/control_client.py so the CLI need not import trio) is used
by the CLI.
"""

from __future__ import annotations

import array
import contextlib
import errno
import fcntl
import gc
import json
import logging
import os
import resource
import socket
import stat
import struct
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import trio

# the client side (the CLI's): no trio, so the commands start fast; re-exported from here
from fs.control_client import (  # noqa: F401
    MAX_MSG,
    ControlError,
    call,
    call_fd,
    run_dir,
    socket_path,
    socket_path_for_dev,
)
from fs.errors import FsError

log = logging.getLogger(__name__)

MAX_FDS = 4  # fds one request may pass
MAX_REQUEST = 1 << 20  # bytes of one request line
RECV_CHUNK = 1 << 16
MAX_CONNS_TOTAL = 64
MAX_CONNS_PER_UID = 16  # of each uid but root's
ROOT_RESERVED = 8  # of the total, only root may use
FD_RESERVE = 128  # fds of RLIMIT_NOFILE left to the rest of the daemon
IDLE_TIMEOUT_S = 30.0
ACCEPT_RETRY_S = 0.1  # after accept() failed (EMFILE, ENFILE, ENOBUFS, ...)
LOG_EVERY_S = 10.0  # at most one line of a kind per this many seconds
INO_LIMIT = 1 << 64  # inode numbers are u64, and 0 is none


SocketIdentity = tuple[int, int, int]


def socket_identity(st: os.stat_result) -> SocketIdentity:
    """What tells one socket file from a later one at the same path: the device number that
    names it is reused by later mounts, and the run dir's filesystem (ext4 for /run here)
    reuses the inode number of a file just removed, so the inode's change time is part of it."""
    return (st.st_dev, st.st_ino, st.st_ctime_ns)


# --------------------------------------------------------------------------- mountinfo


@dataclass
class MountInfo:
    mnt_id: int
    major: int
    minor: int
    mountpoint: str
    fstype: str
    source: str


def _unescape(s: str) -> str:
    out, i = [], 0
    while i < len(s):
        if s[i] == "\\" and i + 3 < len(s) and s[i + 1:i + 4].isdigit():
            out.append(chr(int(s[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(s[i])
            i += 1
    return "".join(out)


def read_mountinfo(path: str = "/proc/self/mountinfo") -> list[MountInfo]:
    out = []
    with open(path) as f:
        for line in f:
            parts = line.split()
            sep = parts.index("-")
            maj, mnr = parts[2].split(":")
            out.append(MountInfo(int(parts[0]), int(maj), int(mnr), _unescape(parts[4]),
                                 parts[sep + 1], _unescape(parts[sep + 2])))
    return out


def find_mount(mountpoint: str, fstype: str = "fuse.scoutfs") -> MountInfo | None:
    """The (last, i.e. topmost) mount of fstype at mountpoint, from mountinfo only."""
    mp = os.path.abspath(mountpoint)
    found = None
    for m in read_mountinfo():
        if m.mountpoint == mp and m.fstype == fstype:
            found = m
    return found


def fdinfo(fd: int) -> dict[str, str]:
    """/proc/self/fdinfo/<fd> fields (pos, flags, mnt_id, ino): no request to any fs."""
    out = {}
    with open(f"/proc/self/fdinfo/{fd}") as f:
        for line in f:
            k, _, v = line.partition(":")
            out[k.strip()] = v.strip()
    return out


# --------------------------------------------------------------------------- server

Handler = Callable[["ControlServer", "Request"], Awaitable[dict]]
OPS: dict[str, Handler] = {}


def op(name: str) -> Callable[[Handler], Handler]:
    def reg(fn: Handler) -> Handler:
        OPS[name] = fn
        return fn
    return reg


@dataclass
class Request:
    args: dict[str, Any]
    pid: int
    uid: int
    gid: int
    fds: list[int] = field(default_factory=list)
    server: ControlServer | None = None

    def ctx(self):
        from fs.inode import Ctx

        return Ctx(uid=self.uid, gid=self.gid, pid=self.pid)

    def fd(self, i: int = 0) -> int:
        if i >= len(self.fds):
            raise FsError(errno.EBADF)
        return self.fds[i]

    def open_flags(self, i: int = 0) -> int:
        return fcntl.fcntl(self.fd(i), fcntl.F_GETFL)

    def inode(self, i: int = 0) -> int:
        """Our inode number of the i-th passed fd; ENOTTY if the fd is not on this mount
        (an ioctl on a file of another filesystem is ENOTTY), EBADF for an O_PATH fd (as
        ioctl(2) answers: opening one needs no permission on the file itself)."""
        info = fdinfo(self.fd(i))
        if int(info.get("flags", "0"), 8) & os.O_PATH:
            raise FsError(errno.EBADF)
        mnt_id = int(info.get("mnt_id", "-1"))
        srv = self.server
        if srv is not None and mnt_id != srv.mnt_id:
            ok = any(m.mnt_id == mnt_id and (m.major, m.minor) == (srv.major, srv.minor)
                     for m in read_mountinfo())
            if not ok:
                raise FsError(errno.ENOTTY)
        return int(info["ino"])

    def target_ino(self) -> int:
        """The inode the request is about: the passed fd's (the caller opened it, so may
        see it); else, for root only (EPERM), the "ino" argument (`parse_ino`)."""
        if self.fds:
            return self.inode(0)
        if self.uid != 0:
            raise FsError(errno.EPERM)
        return parse_ino(self.args.get("ino"))

    async def drop_fds(self) -> None:
        """Close the passed fds now, once what the op needs of them was read: an op that
        may last (stage, release, move_blocks) must not hold a file of our own mount open,
        because if the daemon is killed meanwhile, the kernel's close of it at our exit
        sends FLUSH to ourselves and our exit never ends.  Empties the connection's list
        in place, so they are not closed twice."""
        held = list(self.fds)
        self.fds.clear()
        await _close_fds(held)

    def check_mount_fd(self) -> None:
        """A mount-wide op: the caller passes an fd on the mount (as the ioctl is made on
        one), unless root; EBADF (no fd), ENOTTY (another fs) otherwise."""
        if self.fds:
            self.inode(0)
        elif self.uid != 0:
            raise FsError(errno.EBADF)


def parse_ino(v: Any) -> int:
    """An inode number from a request: an integer (not a bool, string or float) in
    0 < ino < 2^64, else EINVAL.  Checked before any lock is taken on it."""
    if type(v) is not int or not 0 < v < INO_LIMIT:
        raise FsError(errno.EINVAL)
    return v


async def _close_fds(fds: list[int]) -> None:
    """Close passed fds from a worker thread: close() of a file on our own mount sends a
    FLUSH request to this daemon and waits for it, so on the trio thread it deadlocks.

    A thread of its own (not trio's shared limiter): the close of a file on a FUSE mount
    whose daemon never answers (a user can make one) hangs, and must not stall the
    threads the mount works with; the connection waits, holding one of its uid's slots."""
    if fds:
        await trio.to_thread.run_sync(_close_all, list(fds), limiter=trio.CapacityLimiter(1),
                                      abandon_on_cancel=True)


def _close_all(fds: list[int]) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


def _passed_fds(anc: list) -> list[int]:
    out: list[int] = []
    for level, typ, cdata in anc:
        if level == socket.SOL_SOCKET and typ == socket.SCM_RIGHTS:
            a = array.array("i")
            a.frombytes(cdata[:len(cdata) - len(cdata) % 4])
            out.extend(a)
    return out


class _RateLimitedLog:
    """At most one line of each kind per `every` seconds; the next one says how many were
    left out meanwhile."""

    def __init__(self, every: float = LOG_EVERY_S) -> None:
        self.every = every
        self._last: dict[Any, float] = {}
        self._skipped: dict[Any, int] = {}

    def __call__(self, kind: Any, level: int, msg: str, *args: Any,
                 exc_info: bool = False) -> None:
        now = time.monotonic()
        last = self._last.get(kind)
        if last is not None and now - last < self.every:
            self._skipped[kind] = self._skipped.get(kind, 0) + 1
            return
        self._last[kind] = now
        skipped = self._skipped.pop(kind, 0)
        if skipped:
            msg += " (and %d more like it)"
            args += (skipped,)
        log.log(level, msg, *args, exc_info=exc_info)


class ControlServer:
    # the limits (see the module doc); attributes, so a test may set others
    max_total = MAX_CONNS_TOTAL
    max_per_uid = MAX_CONNS_PER_UID
    root_reserved = ROOT_RESERVED
    idle_timeout = IDLE_TIMEOUT_S

    def __init__(self, mount: Any, major: int, minor: int, mnt_id: int = -1,
                 path: str | None = None):
        self.mount = mount
        self.major, self.minor, self.mnt_id = major, minor, mnt_id
        self.path = path or socket_path(major, minor)
        self.sock: trio.socket.SocketType | None = None
        self._bound: SocketIdentity | None = None
        self._conns: dict[int, int] = {}  # uid -> open connections
        self._total = 0
        self._ratelog = _RateLimitedLog()

    def bind(self) -> None:
        """Create and listen on the socket (synchronously, before readiness is reported)."""
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        # bind is a plain syscall on a local path (not on our mount): fine on this thread
        s.bind(self.path)
        os.chmod(self.path, 0o666)  # any user may ask; handlers check credentials
        self._bound = socket_identity(os.stat(self.path))
        s.listen(64)
        self.sock = trio.socket.from_stdlib_socket(s)

    def remove(self) -> None:
        """Stop serving and unlink our socket file, unless the path is no longer ours: the
        mount's device number, which names it, is reused by a mount made after our FUSE
        mount went away, and that mount's socket must stay."""
        try:
            if socket_identity(os.stat(self.path)) == self._bound:
                os.unlink(self.path)
        except FileNotFoundError:
            pass
        if self.sock is not None:
            sock, self.sock = self.sock, None
            sock.close()

    async def serve(self, task_status=trio.TASK_STATUS_IGNORED) -> None:
        if self.sock is None:
            self.bind()
        task_status.started()
        async with trio.open_nursery() as nursery:
            # remove() (at shutdown, or of a starting mount's early socket once the real one
            # serves) stops the accepting; requests already accepted are answered
            while (sock := self.sock) is not None:
                try:
                    conn, _ = await sock.accept()
                except trio.ClosedResourceError:
                    return
                except OSError as e:
                    if self.sock is None:
                        return
                    # out of fds (EMFILE, ENFILE) or memory: the connection waits in the
                    # backlog; the mount serves on
                    self._ratelog("accept", logging.WARNING,
                                  "control socket accept failed: %s; retrying", e)
                    await trio.sleep(ACCEPT_RETRY_S)
                    continue
                self._admit(conn, nursery)

    def peer_creds(self, conn) -> tuple[int, int, int]:
        """(pid, uid, gid) of the peer, from SO_PEERCRED."""
        creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        pid, uid, gid = struct.unpack("3i", creds)
        return pid, uid, gid

    def total_limit(self) -> int:
        """`max_total`, or fewer if the fd limit is lower: each connection may hold its
        socket and MAX_FDS passed fds, and FD_RESERVE fds stay for the rest of the mount."""
        soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft == resource.RLIM_INFINITY:
            return self.max_total
        return max(1, min(self.max_total, (soft - FD_RESERVE) // (1 + MAX_FDS)))

    def _refusal(self, uid: int) -> str | None:
        """Why a new connection of `uid` is refused, or None if it may have one."""
        total = self.total_limit()
        if uid == 0:
            if self._total >= total:
                return f"{self._total} connections open (limit {total})"
            return None
        if self._conns.get(uid, 0) >= self.max_per_uid:
            return f"{self._conns[uid]} connections of that uid open (limit {self.max_per_uid})"
        users = self._total - self._conns.get(0, 0)
        users_limit = total - min(self.root_reserved, max(1, total // 2))
        if users >= users_limit:
            return f"{users} connections of users open (limit {users_limit})"
        return None

    def _admit(self, conn, nursery) -> None:
        try:
            pid, uid, gid = self.peer_creds(conn)
        except OSError:
            conn.close()
            return
        why = self._refusal(uid)
        if why is not None:
            self._ratelog("refuse", logging.WARNING,
                          "refusing a control connection of uid %d pid %d: %s", uid, pid, why)
            try:  # best effort, never waits: a fresh connection's buffer has room
                os.write(conn.fileno(), b'{"errno": %d}\n' % errno.EAGAIN)
            except OSError:
                pass
            conn.close()
            return
        self._conns[uid] = self._conns.get(uid, 0) + 1
        self._total += 1
        nursery.start_soon(self._conn, conn, pid, uid, gid)

    def _release(self, uid: int) -> None:
        self._total -= 1
        self._conns[uid] -= 1
        if not self._conns[uid]:
            del self._conns[uid]

    async def _conn(self, conn, pid: int, uid: int, gid: int) -> None:
        fds: list[int] = []
        try:
            with conn:
                try:
                    buf = bytearray()
                    while True:
                        line = await self._next_request(conn, buf, fds, uid)
                        if line is None:
                            return
                        reply = await self._handle(line, pid, uid, gid, fds)
                        held, fds = fds, []
                        await _close_fds(held)
                        out = json.dumps(reply).encode() + b"\n"
                        with trio.move_on_after(self.idle_timeout):
                            while out:
                                out = out[await conn.send(out):]
                        if out:
                            return  # the client does not take its reply
                except (OSError, trio.BrokenResourceError, trio.ClosedResourceError):
                    pass
                except Exception:  # a bad client must never take the daemon down
                    self._ratelog("conn", logging.ERROR, "control connection failed",
                                  exc_info=True)
                finally:
                    await _close_fds(fds)
        finally:
            self._release(uid)

    async def _next_request(self, conn, buf: bytearray, fds: list[int],
                            uid: int) -> bytes | None:
        """The next request line (taken out of `buf`; passed fds added to `fds`), or None
        when the connection is to be closed: end of stream, idle for `idle_timeout`, a
        request over MAX_REQUEST bytes or passing over MAX_FDS fds."""
        seen = 0  # buf[:seen] holds no newline
        with trio.move_on_after(self.idle_timeout):
            while True:
                i = buf.find(b"\n", seen)
                if 0 <= i <= MAX_REQUEST:
                    line = bytes(buf[:i])
                    del buf[:i + 1]
                    return line
                if i > MAX_REQUEST or len(buf) > MAX_REQUEST:
                    self._ratelog("big", logging.WARNING, "control request of uid %d over "
                                  "%d bytes: connection closed", uid, MAX_REQUEST)
                    return None
                seen = len(buf)
                data, anc, flags, _ = await conn.recvmsg(
                    RECV_CHUNK, socket.CMSG_SPACE(MAX_FDS * 4), socket.MSG_CMSG_CLOEXEC)
                fds.extend(_passed_fds(anc))
                if flags & socket.MSG_CTRUNC or len(fds) > MAX_FDS:
                    self._ratelog("fds", logging.WARNING, "control request of uid %d passes "
                                  "over %d fds: connection closed", uid, MAX_FDS)
                    return None
                if not data:
                    return None
                buf += data
        return None  # idle

    async def _handle(self, line: bytes, pid: int, uid: int, gid: int,
                      fds: list[int]) -> dict:
        try:
            args = json.loads(line)
        except (ValueError, RecursionError):
            return {"errno": errno.EINVAL}
        name = args.get("op") if isinstance(args, dict) else None
        if not isinstance(name, str):
            return {"errno": errno.EINVAL}
        fn = OPS.get(name)
        if fn is None:
            return {"errno": errno.ENOTTY}
        req = Request(args, pid, uid, gid, fds, self)  # the list itself: see drop_fds
        try:
            out = await fn(self, req)
        except FsError as e:
            return {"errno": e.errno}
        except OSError as e:
            return {"errno": e.errno or errno.EIO}
        except Exception:
            self._ratelog(("op", name), logging.ERROR, "control op %s failed", name,
                          exc_info=True)
            return {"errno": errno.EIO}
        out = dict(out or {})
        out.setdefault("errno", 0)
        return out


# --------------------------------------------------------------------------- ops


async def _statfs_dict(mount: Any) -> dict[str, int]:
    # the ioctl asks the server directly: only a VFS statfs fires statfs_lock_purge
    client = getattr(mount, "client", None)
    if client is not None:
        return dict(await client.statfs())
    mctx = getattr(mount, "mctx", None)
    if mctx is not None:
        return dict(await mctx.statfs())
    sb = mount.sb
    return {"total_meta_blocks": sb.total_meta_blocks, "free_meta_blocks": sb.free_meta_blocks,
            "total_data_blocks": sb.total_data_blocks, "free_data_blocks": sb.free_data_blocks}


def _committed_seq(mount: Any, st: dict) -> int:
    if "committed_seq" in st:
        return int(st["committed_seq"])
    trans = getattr(getattr(mount, "mctx", None), "trans", None)
    for name in ("committed_seq", "last_committed_seq"):
        v = getattr(trans, name, None)
        if isinstance(v, int):
            return v
    if trans is not None and isinstance(getattr(trans, "seq", None), int):
        return max(trans.seq - 1, 0)
    return int(getattr(mount.sb, "seq", 0))


@op("statfs_more")
async def _statfs_more(srv: ControlServer, req: Request) -> dict:
    req.check_mount_fd()
    m = srv.mount
    st = await _statfs_dict(m)
    return {"fsid": m.fsid, "rid": m.rid, "committed_seq": _committed_seq(m, st),
            "total_meta_blocks": int(st.get("total_meta_blocks", m.sb.total_meta_blocks)),
            "total_data_blocks": int(st.get("total_data_blocks", m.sb.total_data_blocks)),
            "reserved_meta_blocks": int(st.get("reserved_meta_blocks", 0)),
            "free_meta_blocks": int(st.get("free_meta_blocks", 0)),
            "free_data_blocks": int(st.get("free_data_blocks", 0))}


@op("alloc_detail")
async def _alloc_detail(srv: ControlServer, req: Request) -> dict:
    req.check_mount_fd()
    st = await _statfs_dict(srv.mount)
    return {"allocators": [
        {"meta": True, "blocks": int(st.get("free_meta_blocks", 0))},
        {"meta": False, "blocks": int(st.get("free_data_blocks", 0))},
    ]}


def _split_ts(v: Any) -> tuple[int, int]:
    if isinstance(v, (tuple, list)):
        return int(v[0]), int(v[1])
    return int(v), 0


@op("stat_more")
async def _stat_more(srv: ControlServer, req: Request) -> dict:
    """Upstream's STAT_MORE ioctl: of the file the caller opened and passed (root may name
    an inode number instead)."""
    ino = req.target_ino()
    fs = srv.mount.fs
    a = await fs.getattr(ino)
    if not (stat.S_ISREG(a.mode) or stat.S_ISDIR(a.mode)):
        # the ioctl of an opened device node, fifo or socket never reaches the fs
        raise FsError(errno.ENOTTY)
    sm = dict(await fs.stat_more(ino))
    sec, nsec = _split_ts(sm.get("crtime", a.crtime))
    if "crtime_nsec" in sm:
        sec, nsec = int(sm["crtime"]), int(sm["crtime_nsec"])
    return {"meta_seq": int(sm.get("meta_seq", 0)), "data_seq": int(sm.get("data_seq", 0)),
            "data_version": int(sm.get("data_version", 0)),
            "online_blocks": int(sm.get("online_blocks", 0)),
            "offline_blocks": int(sm.get("offline_blocks", 0)),
            "crtime_sec": sec, "crtime_nsec": nsec}


# --------------------------------------------------------------- inode index commands
#
# WALK_INODES, INO_PATH, GET_REFERRING_ENTRIES and GET_ALLOCATED_INOS (spec semantics §5.6,
# §6.1).  Every number a client sends is type- and range-checked here, before any lock is
# taken: u64 fields in [0, 2^64), minor in [0, 2^32), counts capped.  Names and paths are
# bytes: they travel as latin-1 strings (one char per byte).

WALK_MAX_NR = 16384  # entries one walk_inodes reply carries at most (the CLI loops)
DIRENTS_MAX_NR = 1024  # entries of one get_referring_entries reply
U32_LIMIT = 1 << 32


def _uint(v: Any, limit: int = INO_LIMIT) -> int:
    """An unsigned integer argument in [0, limit), else EINVAL (no bools, strings, floats)."""
    if type(v) is not int or not 0 <= v < limit:
        raise FsError(errno.EINVAL)
    return v


def _count(v: Any, cap: int) -> int:
    """An entry count (a u32, as the ioctls' nr fields), capped to what one reply carries."""
    return min(_uint(v, U32_LIMIT), cap)


def _walk_pos(v: Any) -> tuple[int, int, int]:
    """A walk position [major (u64), minor (u32), ino (u64)]."""
    if not isinstance(v, list) or len(v) != 3:
        raise FsError(errno.EINVAL)
    return _uint(v[0]), _uint(v[1], U32_LIMIT), _uint(v[2])


_gc_pauses = 0
_gc_was_enabled = False


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic garbage collection while a bulk request builds its reply.  A walk of 16,384
    index entries makes about 100,000 short-lived containers (items, tuples, dicts); with the
    collector running, the young ones alive at each collection are promoted, and every few
    batches their count sets off a full collection of the daemon's whole heap (block and
    item caches: 50-100 ms each, the better part of a walk's time).  They are all freed by
    reference counting when the request ends, so pausing loses nothing.  Nests (trio tasks
    interleave): the collector is enabled again when the last pause ends."""
    global _gc_pauses, _gc_was_enabled
    if _gc_pauses == 0:
        _gc_was_enabled = gc.isenabled()
        gc.disable()
    _gc_pauses += 1
    try:
        yield
    finally:
        _gc_pauses -= 1
        if _gc_pauses == 0 and _gc_was_enabled:
            gc.enable()


def _need_admin(req: Request) -> None:
    """CAP_SYS_ADMIN / CAP_DAC_READ_SEARCH: root here (checked first, as the ioctls do)."""
    if req.uid != 0:
        raise FsError(errno.EPERM)


@op("walk_inodes")
async def _walk_inodes(srv: ControlServer, req: Request) -> dict:
    """{index: 0 meta_seq | 1 data_seq, first, last: [major, minor, ino], nr} ->
    {seq_ino: [major, ino, major, ino, ...]}: up to nr entries from first to last (minor is
    always 0 and not part of the index key)."""
    req.check_mount_fd()
    a = req.args
    index = a.get("index")
    if type(index) is not int:
        raise FsError(errno.EINVAL)
    first, last = _walk_pos(a.get("first")), _walk_pos(a.get("last"))
    nr = _count(a.get("nr"), WALK_MAX_NR)
    with gc_paused():
        ents = await srv.mount.fs.walk_inodes(index, (first[0], first[2]), (last[0], last[2]),
                                              nr)
        # flat [major, ino, major, ino, ...]: one list, not one per entry (see gc_paused)
        flat = [x for ent in ents for x in ent]
    return {"seq_ino": flat}


@op("ino_path")
async def _ino_path(srv: ControlServer, req: Request) -> dict:
    """{ino, dir_ino, dir_pos} -> {dir_ino, dir_pos, path}: the path of the first entry
    naming ino at or after (dir_ino, dir_pos); ENOENT when none is left."""
    _need_admin(req)
    req.check_mount_fd()
    a = req.args
    ino = parse_ino(a.get("ino"))
    dir_ino, dir_pos = _uint(a.get("dir_ino", 0)), _uint(a.get("dir_pos", 0))
    d_ino, d_pos, path = await srv.mount.fs.ino_path(ino, dir_ino, dir_pos)
    return {"dir_ino": d_ino, "dir_pos": d_pos, "path": path.decode("latin-1")}


@op("get_referring_entries")
async def _get_referring_entries(srv: ControlServer, req: Request) -> dict:
    """{ino, dir_ino, dir_pos, nr} -> {entries: [[dir_ino, dir_pos, d_type, name], ...],
    last: whether the final entry is among them}."""
    _need_admin(req)
    req.check_mount_fd()
    a = req.args
    ino = parse_ino(a.get("ino"))
    dir_ino, dir_pos = _uint(a.get("dir_ino", 0)), _uint(a.get("dir_pos", 0))
    nr = _count(a.get("nr", DIRENTS_MAX_NR), DIRENTS_MAX_NR)
    if nr == 0:
        return {"entries": [], "last": False}
    ents = await srv.mount.fs.get_referring_entries(ino, dir_ino, dir_pos, nr + 1)
    last = len(ents) <= nr
    return {"entries": [[d, e.pos, e.dtype, e.name.decode("latin-1")] for d, e in ents[:nr]],
            "last": last}


@op("get_allocated_inos")
async def _get_allocated_inos(srv: ControlServer, req: Request) -> dict:
    """{start_ino, nr} -> {inos: [...]}: allocated inode numbers from start_ino to the end
    of its inode group."""
    from fs import format as fmt

    _need_admin(req)
    req.check_mount_fd()
    a = req.args
    start = _uint(a.get("start_ino"))
    nr = _count(a.get("nr", fmt.LOCK_GROUP_NR), fmt.LOCK_GROUP_NR)
    return {"inos": await srv.mount.fs.get_allocated_inos(start, nr)}


# ---- tagged xattrs (fs/xattr.py): LISTXATTR_HIDDEN and READ_XATTR_INDEX (spec §5.10, §6.1)

HIDDEN_MAX_NR = 256  # names one list_hidden_xattrs reply carries at most (<= 255 bytes each)
INDX_MAX_NR = 16384  # entries of one read_xattr_index reply (the CLI loops)
INDX_MAJOR_LIMIT = 256


@op("list_hidden_xattrs")
async def _list_hidden_xattrs(srv: ControlServer, req: Request) -> dict:
    """{pos: [name hash, id]} -> {names: [...], next}: the ``scoutfs.hide.`` names of the
    passed fd's inode from xattr key (hash, id) pos on, at most HIDDEN_MAX_NR; next is the
    pos to ask next (as the ioctl's hash_pos/id_pos cursor), or null after the last."""
    ino = req.inode(0)
    pos = req.args.get("pos", [0, 0])
    if not isinstance(pos, list) or len(pos) != 2:
        raise FsError(errno.EINVAL)
    after = (_uint(pos[0]), _uint(pos[1]))
    found = await srv.mount.fs.list_hidden_xattrs(ino, after)
    part = found[:HIDDEN_MAX_NR]
    nxt = None
    if len(found) > HIDDEN_MAX_NR:
        nxt = [found[HIDDEN_MAX_NR][0], found[HIDDEN_MAX_NR][1]]
    return {"names": [n.decode("latin-1") for _h, _x, n in part], "next": nxt}


def _indx_pos(v: Any) -> tuple[int, int, int]:
    """An index position [major (u8), minor (u64), ino (u64)], else EINVAL."""
    if not isinstance(v, list) or len(v) != 3:
        raise FsError(errno.EINVAL)
    return _uint(v[0], INDX_MAJOR_LIMIT), _uint(v[1]), _uint(v[2])


@op("read_xattr_index")
async def _read_xattr_index(srv: ControlServer, req: Request) -> dict:
    """{first, last: [major, minor, ino], nr} -> {entries: [[major, minor, ino], ...]}: up
    to nr de-duplicated entries of the .indx. index from first to last; first > last is
    EINVAL, as the ioctl."""
    req.check_mount_fd()
    a = req.args
    first, last = _indx_pos(a.get("first")), _indx_pos(a.get("last"))
    if first > last:
        raise FsError(errno.EINVAL)
    nr = _count(a.get("nr", INDX_MAX_NR), INDX_MAX_NR)
    ents = await srv.mount.fs.read_xattr_index(first, last, nr)
    return {"entries": [list(e) for e in ents]}


@op("search_xattrs")
async def _search_xattrs(srv: ControlServer, req: Request) -> dict:
    """{name, next_ino, last_ino, nr} -> {inos: [...], end}: SEARCH_XATTRS (fs/srch.py),
    candidate inodes of committed ``.srch.`` xattrs `name` from next_ino to last_ino; end
    when no more follow.  CAP_SYS_ADMIN first, then EINVAL for a name longer than 255
    bytes, next_ino > last_ino, or a name without the srch tag, as the ioctl."""
    _need_admin(req)
    req.check_mount_fd()
    a = req.args
    name = a.get("name")
    if not isinstance(name, str):
        raise FsError(errno.EINVAL)
    try:
        raw = name.encode("latin-1")
    except UnicodeEncodeError:
        raise FsError(errno.EINVAL) from None
    next_ino, last_ino = _uint(a.get("next_ino", 0)), _uint(a.get("last_ino", INO_LIMIT - 1))
    nr = _count(a.get("nr", SRCH_MAX_NR), SRCH_MAX_NR)
    if len(raw) > 255 or next_ino > last_ino or nr == 0:  # XATTR_NAME_MAX
        raise FsError(errno.EINVAL)
    from fs.xattr_names import SCOUTFS_PREFIX, parse_tags

    if not raw.startswith(SCOUTFS_PREFIX) or not parse_tags(raw).srch:
        raise FsError(errno.EINVAL)
    inos, end = await srv.mount.srch.search(raw, next_ino, last_ino, nr)
    return {"inos": inos, "end": end}


SRCH_MAX_NR = 1 << 20  # inodes of one search_xattrs reply (the CLI loops)


# ---- .totl. totals (fs/totl.py): READ_XATTR_TOTALS (spec §5.10, §6.1)

TOTALS_MAX_NR = 8192  # totals one read_xattr_totals reply carries at most (the CLI loops)


@op("read_xattr_totals")
async def _read_xattr_totals(srv: ControlServer, req: Request) -> dict:
    """{pos: [a, b, c], nr} -> {totals: [[a, b, c, total, count], ...]}: up to nr committed
    non-zero totals from name pos on, ascending (CAP_SYS_ADMIN, as the ioctl)."""
    _need_admin(req)
    req.check_mount_fd()
    a = req.args
    pos = a.get("pos", [0, 0, 0])
    if not isinstance(pos, list) or len(pos) != 3:
        raise FsError(errno.EINVAL)
    start = (_uint(pos[0]), _uint(pos[1]), _uint(pos[2]))
    nr = _count(a.get("nr", TOTALS_MAX_NR), TOTALS_MAX_NR)
    got = await srv.mount.fs.read_xattr_totals(start, nr)
    return {"totals": [[*abc, t, c] for abc, (t, c) in got]}


# ---- quota rules (fs/quota.py): GET/ADD/DEL_QUOTA_RULE (spec §5.11, §6.1)


def _quota_rule(v: Any):
    """{prio, names: [[value, source, flags] x3], op, limit, flags} -> fs.quota.Rule;
    EINVAL for anything malformed or out of range."""
    from fs.quota import Rule

    if not isinstance(v, dict) or set(v) != {"prio", "names", "op", "limit", "flags"}:
        raise FsError(errno.EINVAL)
    names = v["names"]
    if not isinstance(names, list) or len(names) != 3 or \
            not all(isinstance(n, list) and len(n) == 3 for n in names):
        raise FsError(errno.EINVAL)
    return Rule(_uint(v["prio"], 256), tuple((_uint(n[0]), _uint(n[1], 256),
                                              _uint(n[2], 256)) for n in names),
                _uint(v["op"], 256), _uint(v["limit"]), _uint(v["flags"], 256)).check()


def _quota_rule_wire(r) -> dict:
    return {"prio": r.prio, "names": [list(n) for n in r.names], "op": r.op,
            "limit": r.limit, "flags": r.flags}


@op("quota_mod")
async def _quota_mod(srv: ControlServer, req: Request) -> dict:
    """{rule, add: bool}: ADD_QUOTA_RULE (EEXIST for an identical rule) or
    DEL_QUOTA_RULE (ENOENT); CAP_SYS_ADMIN."""
    from fs import quota

    _need_admin(req)
    req.check_mount_fd()
    rule = _quota_rule(req.args.get("rule"))
    add = req.args.get("add")
    if type(add) is not bool:
        raise FsError(errno.EINVAL)
    fn = quota.add_rule if add else quota.del_rule
    await fn(srv.mount.fs.mctx, rule)
    return {}


@op("quota_list")
async def _quota_list(srv: ControlServer, req: Request) -> dict:
    """{} -> {rules: [...]}: every quota rule, in storage order (GET_QUOTA_RULES)."""
    from fs import quota

    req.check_mount_fd()
    return {"rules": [_quota_rule_wire(r) for r in await quota.list_rules(srv.mount.fs.mctx)]}


# ---- archive ops (fs/archive.py, fs/datawait.py): upstream's RELEASE, STAGE, DATA_WAITING,
# DATA_WAIT_ERR, SETATTR_MORE and PUNCH_OFFLINE ioctls.  Each acts on the fd the caller
# opened and passed; how it was opened (for writing, O_APPEND...) is read from the fd's
# flags.  Checks and errnos are the filesystem layer's, in the spec's order.

U64_MAX = (1 << 64) - 1
STAGE_MAX_BYTES = 1 << 20  # decoded payload of one stage request
FIEMAP_MAX_NR = 4096  # extents of one fiemap reply (the CLI continues after the last)


def _arg_int(req: Request, name: str, default: int | None = 0, lo: int = 0,
             hi: int = U64_MAX) -> int:
    v = req.args.get(name, default)
    if type(v) is not int or not lo <= v <= hi:
        raise FsError(errno.EINVAL)
    return v


async def _file_ino(srv: ControlServer, req: Request) -> int:
    """The passed fd's inode; ENOTTY for a device node, fifo or socket (the ioctl of such
    an fd never reaches the filesystem)."""
    if not req.fds:
        raise FsError(errno.EBADF)
    ino = req.inode(0)
    a = await srv.mount.fs.getattr(ino)
    if not (stat.S_ISREG(a.mode) or stat.S_ISDIR(a.mode)):
        raise FsError(errno.ENOTTY)
    return ino


def _writable(req: Request) -> bool:
    return req.open_flags() & os.O_ACCMODE in (os.O_WRONLY, os.O_RDWR)


def _readonly(srv: ControlServer) -> bool:
    return bool(getattr(srv.mount, "options", {}).get("ro"))


async def _flush_kernel_pages(srv: ControlServer) -> None:
    """Wait (boundedly, holding nothing) for the page invalidations a release queued."""
    notifier = getattr(srv.mount, "notifier", None)
    if notifier is not None:
        await notifier.flush(1.0)


@op("release")
async def _release_op(srv: ControlServer, req: Request) -> dict:
    ino = await _file_ino(srv, req)
    writable = _writable(req)
    await req.drop_fds()
    await srv.mount.fs.release_data(ino, _arg_int(req, "offset"), _arg_int(req, "length"),
                                    _arg_int(req, "data_version"), writable=writable,
                                    readonly=_readonly(srv))
    await _flush_kernel_pages(srv)
    return {}


@op("stage")
async def _stage_op(srv: ControlServer, req: Request) -> dict:
    import base64
    import binascii

    ino = await _file_ino(srv, req)
    data = req.args.get("data", "")
    if not isinstance(data, str) or len(data) > (STAGE_MAX_BYTES * 4 // 3) + 4:
        raise FsError(errno.EINVAL)
    try:
        buf = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise FsError(errno.EINVAL) from None
    if len(buf) > STAGE_MAX_BYTES:
        raise FsError(errno.EINVAL)
    flags = req.open_flags()
    bad = bool(flags & (os.O_APPEND | os.O_DIRECT | os.O_DSYNC))
    writable = _writable(req)
    await req.drop_fds()
    n = await srv.mount.fs.stage(ino, _arg_int(req, "offset"), buf,
                                 _arg_int(req, "data_version"), writable=writable,
                                 bad_flags=bad, readonly=_readonly(srv))
    return {"staged": n}


STAGE_FROM_MAX = 8 << 20  # archive bytes one stage_from request reads


@op("stage_from")
async def _stage_from_op(srv: ControlServer, req: Request) -> dict:
    """STAGE with the archive passed as the second fd {offset, data_version,
    archive_offset, length}: the daemon reads up to `length` (<= STAGE_FROM_MAX) bytes of
    the archive at archive_offset and stages them at offset (the checks are stage's) ->
    {"staged": n}; n < length when the archive ended (0: nothing staged).  Ours (the
    STAGE ioctl takes a buffer): it saves the bytes a trip through JSON."""
    ino = await _file_ino(srv, req)
    if len(req.fds) < 2:
        raise FsError(errno.EBADF)
    afd = req.fd(1)
    length = _arg_int(req, "length", 0, 0, STAGE_FROM_MAX)
    aoff = _arg_int(req, "archive_offset", 0, 0, (1 << 63) - 1)
    offset, dv = _arg_int(req, "offset"), _arg_int(req, "data_version")
    flags = req.open_flags()
    bad = bool(flags & (os.O_APPEND | os.O_DIRECT | os.O_DSYNC))
    writable = _writable(req)
    # a worker thread: the archive may be a file of this very mount (a FUSE request to us)
    buf = await trio.to_thread.run_sync(os.pread, afd, length, aoff)
    await req.drop_fds()
    if not buf:
        return {"staged": 0}
    n = await srv.mount.fs.stage(ino, offset, buf, dv, writable=writable, bad_flags=bad,
                                 readonly=_readonly(srv))
    return {"staged": n}


@op("data_waiting")
async def _data_waiting_op(srv: ControlServer, req: Request) -> dict:
    req.check_mount_fd()
    if _arg_int(req, "flags"):
        raise FsError(errno.EINVAL)
    nr = _arg_int(req, "nr", 128, 1, 4096)
    # our own: wait_ms holds an empty answer until a waiter registers (agents block on
    # it rather than poll); at most a minute, within the connection's idle timeout
    wait_ms = _arg_int(req, "wait_ms", 0, 0, 60_000)
    ents = await srv.mount.fs.data_waiting_wait(_arg_int(req, "after_ino"),
                                                _arg_int(req, "after_iblock"), nr,
                                                wait_ms / 1000)
    return {"entries": [list(e) for e in ents]}


@op("data_wait_err")
async def _data_wait_err_op(srv: ControlServer, req: Request) -> dict:
    from fs.datawait import OP_MASK

    req.check_mount_fd()
    if req.uid != 0:
        raise FsError(errno.EPERM)
    ino = _arg_int(req, "ino")
    _arg_int(req, "data_version")  # ignored, as upstream
    offset = _arg_int(req, "offset")
    count = _arg_int(req, "count")
    op_ = _arg_int(req, "wait_op")
    err = req.args.get("err")
    if count == 0:
        return {"found": 0}
    if type(err) is not int or not -4095 <= err <= -1 or not op_ or op_ & ~OP_MASK:
        raise FsError(errno.EINVAL)
    if offset + count - 1 > U64_MAX:
        raise FsError(errno.EINVAL)
    fs = srv.mount.fs
    cached = (ino == 1 or ino in getattr(srv.mount, "kernel_inodes", ())
              or fs.has_data_waiters(ino))
    if not cached or ino == 0:
        raise FsError(errno.ESTALE)
    a = await fs.getattr(ino)
    if not stat.S_ISREG(a.mode):
        raise FsError(errno.EINVAL)
    first = offset >> 12
    last = (offset + count - 1) >> 12
    return {"found": fs.data_wait_err(ino, first, last, op_, -err)}


@op("setattr_more")
async def _setattr_more_op(srv: ControlServer, req: Request) -> dict:
    ino = await _file_ino(srv, req)
    await srv.mount.fs.setattr_more(
        ino, data_version=_arg_int(req, "data_version"), size=_arg_int(req, "i_size"),
        flags=_arg_int(req, "flags"),
        ctime=(_arg_int(req, "ctime_sec"), _arg_int(req, "ctime_nsec", 0, 0, 999_999_999)),
        crtime=(_arg_int(req, "crtime_sec"),
                _arg_int(req, "crtime_nsec", 0, 0, 999_999_999)),
        writable=_writable(req), admin=req.uid == 0)
    return {}


def _timespec(req: Request, name: str) -> tuple[int, int]:
    return (_arg_int(req, f"{name}_sec"), _arg_int(req, f"{name}_nsec", 0, 0, 999_999_999))


@op("get_attr_x")
async def _get_attr_x_op(srv: ControlServer, req: Request) -> dict:
    """{x_mask} -> the fields asked for (fs.archive.attr_x_of) and "filled": of the file
    the caller opened (any way: anyone may read these)."""
    ino = await _file_ino(srv, req)
    return await srv.mount.fs.get_attr_x(ino, _arg_int(req, "x_mask"))


@op("set_attr_x")
async def _set_attr_x_op(srv: ControlServer, req: Request) -> dict:
    """{x_mask, x_flags, bits, data_version, size, ctime_sec/nsec, crtime_sec/nsec,
    project_id}: of the file the caller opened (any way; root only, checked first by the
    filesystem layer after the arguments' types)."""
    ino = await _file_ino(srv, req)
    await srv.mount.fs.set_attr_x(
        ino, mask=_arg_int(req, "x_mask"), flags=_arg_int(req, "x_flags"),
        bits=_arg_int(req, "bits"), data_version=_arg_int(req, "data_version"),
        size=_arg_int(req, "size"), ctime=_timespec(req, "ctime"),
        crtime=_timespec(req, "crtime"), project_id=_arg_int(req, "project_id"),
        admin=req.uid == 0)
    return {}


@op("fiemap")
async def _fiemap_op(srv: ControlServer, req: Request) -> dict:
    """FS_IOC_FIEMAP {start, length, nr} -> {extents: [[logical, physical, length, flags],
    ...]} (bytes; FIEMAP_EXTENT_* flags) of at most nr extents overlapping the range;
    a directory has none (EOPNOTSUPP, as the dir inode has no fiemap)."""
    ino = await _file_ino(srv, req)
    start = _arg_int(req, "start")
    length = _arg_int(req, "length", U64_MAX)
    nr = _arg_int(req, "nr", FIEMAP_MAX_NR, 0, U32_LIMIT - 1)
    a = await srv.mount.fs.getattr(ino)
    if not stat.S_ISREG(a.mode):
        raise FsError(errno.EOPNOTSUPP)
    if length == 0:
        raise FsError(errno.EINVAL)
    length = min(length, U64_MAX + 1 - start)
    if nr == 0:
        return {"extents": []}
    exts = await srv.mount.fs.fiemap(ino, start, length, min(nr, FIEMAP_MAX_NR))
    return {"extents": [list(e) for e in exts]}


@op("punch_offline")
async def _punch_offline_op(srv: ControlServer, req: Request) -> dict:
    ino = await _file_ino(srv, req)
    await srv.mount.fs.punch_offline(ino, _arg_int(req, "offset"), _arg_int(req, "length"),
                                     _arg_int(req, "data_version"), _arg_int(req, "flags"),
                                     writable=_writable(req))
    return {}


@op("move_blocks")
async def _move_blocks_op(srv: ControlServer, req: Request) -> dict:
    """MOVE_BLOCKS {from_off, len, to_off, data_version, flags}: the first passed fd is
    the destination (the file the ioctl is made on), the second the source (the ioctl's
    from_fd); checks in the order of spec §5.8 -> {}."""
    to_ino = await _file_ino(srv, req)
    from_off, length = _arg_int(req, "from_off"), _arg_int(req, "len")
    to_off = _arg_int(req, "to_off")
    if length == 0:
        return {}
    if from_off + length - 1 > U64_MAX or to_off + length - 1 > U64_MAX:
        raise FsError(errno.EOVERFLOW)
    if len(req.fds) < 2:
        raise FsError(errno.EBADF)
    try:
        from_ino = req.inode(1)
    except FsError as e:
        if e.errno == errno.ENOTTY:  # another filesystem's file
            raise FsError(errno.EXDEV) from None
        raise
    await req.drop_fds()
    await srv.mount.fs.move_blocks(from_ino, from_off, length, to_ino, to_off,
                                   _arg_int(req, "data_version"), _arg_int(req, "flags"),
                                   uid=req.uid, gid=req.gid, readonly=_readonly(srv))
    await _flush_kernel_pages(srv)
    return {}


@op("sync")
async def _sync(srv: ControlServer, req: Request) -> dict:
    req.check_mount_fd()
    await srv.mount.sync()
    return {}


@op("ping")
async def _ping(srv: ControlServer, req: Request) -> dict:
    return {"fsid": srv.mount.fsid, "rid": srv.mount.rid, "pid": os.getpid()}


# sysfs/debugfs view (fs/sysfs.py; served as files by sysview/).  Arguments: "tree" ("sys" or
# "debug") and "path" relative to the mount's ident dir ("" is the dir itself).  These only
# read memory (and stat the data device): they never touch a path on our own mount.  The
# debug tree is root's alone (debugfs is): listing, reading and writing it.  The view asks
# as root (it runs as root, mounted with allow_other and default_permissions): there the
# kernel keeps other users out by the debug tree's modes (0700 dirs, 0600/0400 files).


def _sysfs_args(req: Request) -> tuple[str, str]:
    tree, path = req.args.get("tree"), req.args.get("path", "")
    if not isinstance(tree, str) or not isinstance(path, str):
        raise FsError(errno.EINVAL)
    if tree == "debug" and req.uid != 0:
        raise FsError(errno.EACCES)
    return tree, path


@op("sysfs_list")
async def _sysfs_list(srv: ControlServer, req: Request) -> dict:
    """{"entries": [[name, "d"|"f", mode], ...]}; with "name", only that entry (ENOENT)."""
    from fs import sysfs

    tree, path = _sysfs_args(req)
    name = req.args.get("name")
    if name is not None and not isinstance(name, str):
        raise FsError(errno.EINVAL)
    ents = sysfs.list_dir(srv.mount, tree, path, name)
    return {"entries": [[e.name, "d" if e.is_dir else "f", e.mode] for e in ents]}


@op("sysfs_read")
async def _sysfs_read(srv: ControlServer, req: Request) -> dict:
    from fs import sysfs

    tree, path = _sysfs_args(req)
    return {"text": sysfs.read(srv.mount, tree, path)}


@op("sysfs_write")
async def _sysfs_write(srv: ControlServer, req: Request) -> dict:
    """Store "value" into a file; only root may (sysfs files are root's 0644)."""
    from fs import sysfs

    tree, path = _sysfs_args(req)
    value = req.args.get("value")
    if not isinstance(value, str):
        raise FsError(errno.EINVAL)
    if req.uid != 0:
        raise FsError(errno.EACCES)
    await sysfs.write(srv.mount, tree, path, value)
    return {}
