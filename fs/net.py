"""Messaging between mounts and the server: framed requests and responses over a trio stream.

Owns the wire: a fixed header per message (spec §2.2)

    {seq u64, recv_seq u64, id u64, data_len u32, cmd u8, flags u8, error u16}

followed by `data_len` bytes of payload, JSON with a tiny codec (`encode`/`decode`: bytes are
hex strings tagged ``{"__b__": hex}``, tuples become lists).  We do not need wire compatibility
with scoutfs, only its behaviour:

* every message carries the sender's `seq` (1, 2, ... per connection direction) and the last
  seq it received (`recv_seq`, a piggybacked acknowledgement);
* a message whose seq is not newer than the last one received is a duplicate and is dropped;
* a request carries an `id`; the response carries the same id and the RESPONSE flag, and an
  errno in `error` (the payload is then ``{"msg": text}``); `Connection.request` raises
  `FsError(error)` for it;
* either side may send requests (the server sends lock invalidations, LOCK_RECOVER and
  SYNC_LOG_TREES).

Connection loss is its own exception, `ConnectionLost` (an FsError with ENOTCONN, so code
that only knows errnos still sees ENOTCONN): the client (fs/client.py) catches it, reconnects
(possibly to another server after a failover) and resends the request on the new
connection.  Resending is per request, above this module: every stream gets a new
Connection, so seqs and duplicate dropping start afresh with each stream and stay sane; the
server makes every request idempotent (fs/server.py), which is what makes a resend of a
request whose response was lost harmless.

Concurrency (trio; code between two awaits is atomic):
* one receive task per connection (`run`) parses frames and never awaits a handler: each
  incoming request is handled in its own task, except that requests registered with an
  `order` function are handled one at a time, in arrival order, per order key (scoutfs's
  per-lock ordered workers, `c313b71b`);
* handler tasks run in `task_nursery` when one is given (the client's: a lost connection
  must not cancel an invalidation half-way through its commit; the reply then goes nowhere
  and the server resends the request), else in the connection's own nursery (the server's:
  cancelled with the connection, its handlers are idempotent);
* connections given the same `ordered` dict share their per-key queues, so a request resent
  on a new connection still waits behind the one of the same key still running for the old;
* sends are serialised by `_send_lock` (a frame is written whole);
* a handler may itself send requests on the same connection (no deadlock: the receive task
  keeps running).
"""

from __future__ import annotations

import enum
import errno
import json
import logging
import socket
import struct
from collections import deque
from collections.abc import Awaitable, Callable, Hashable
from typing import Any

import trio

from fs import format as fmt
from fs.errors import FsError

log = logging.getLogger(__name__)

HEADER = struct.Struct("<QQQIBBH")  # seq, recv_seq, id, data_len, cmd, flags, error
HEADER_SIZE = HEADER.size  # 32
FLAG_RESPONSE = 1 << 0
MAX_PAYLOAD = 64 * 1024 * 1024  # a bigger frame is a protocol error (corrupt stream)

TCP_KEEPALIVE_S = 24  # spec §7 tcp_keepalive_timeout_ms default: 24000


class Cmd(enum.IntEnum):
    """Message commands (spec §2.2).  LOCK goes both ways: client->server it requests a mode
    and the response is the grant; server->client it is an invalidation and the response
    says the client dropped to the requested mode."""

    GREETING = 1
    ALLOC_INODES = 2
    GET_LOG_TREES = 3
    COMMIT_LOG_TREES = 4
    SYNC_LOG_TREES = 5
    GET_ROOTS = 6
    GET_LAST_SEQ = 7
    LOCK = 8
    LOCK_RECOVER = 9
    SRCH_GET_COMPACT = 10
    SRCH_COMMIT_COMPACT = 11
    GET_LOG_MERGE = 12
    COMMIT_LOG_MERGE = 13
    OPEN_INO_MAP = 14
    GET_VOLOPT = 15
    SET_VOLOPT = 16
    CLEAR_VOLOPT = 17
    RESIZE_DEVICES = 18
    STATFS = 19
    FAREWELL = 20


# greeting flags (spec §2.2)
GREETING_FLAG_FAREWELL = 1 << 0
GREETING_FLAG_QUORUM = 1 << 1


# --------------------------------------------------------------------------- payload codec


def _enc(obj: Any) -> Any:
    if isinstance(obj, bytes | bytearray | memoryview):
        return {"__b__": bytes(obj).hex()}
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            if not isinstance(k, str) or k == "__b__":
                raise TypeError(f"payload dict key {k!r} is not a str or is reserved")
            out[k] = _enc(v)
        return out
    if isinstance(obj, list | tuple):
        return [_enc(v) for v in obj]
    if obj is None or isinstance(obj, bool | int | float | str):
        return obj
    raise TypeError(f"cannot encode {type(obj).__name__} in a message payload")


def _dec_hook(d: dict) -> Any:
    if len(d) == 1 and isinstance(d.get("__b__"), str):
        return bytes.fromhex(d["__b__"])
    return d


def encode(payload: Any) -> bytes:
    """Payload object -> bytes.  Bytes survive; tuples come back as lists."""
    if payload is None:
        return b""
    return json.dumps(_enc(payload), separators=(",", ":")).encode()


def decode(data: bytes) -> Any:
    if not data:
        return None
    return json.loads(data, object_hook=_dec_hook)


# typed helpers for the structures messages carry

def root_to_wire(root: fmt.BtreeRoot) -> list[int]:
    return [root.ref.blkno, root.ref.seq, root.height]


def root_from_wire(v: list[int]) -> fmt.BtreeRoot:
    return fmt.BtreeRoot(fmt.BlockRef(int(v[0]), int(v[1])), int(v[2]))


def key_from_wire(v: list[int]) -> fmt.Key:
    if len(v) != 6:
        raise FsError(errno.EINVAL, f"malformed key {v!r}")
    return tuple(int(x) for x in v)  # type: ignore[return-value]


def extents_from_wire(v: list) -> list[tuple[int, int]]:
    return [(int(s), int(n)) for s, n in v]


def log_trees_to_wire(lt: fmt.LogTrees) -> dict:
    return {
        "rid": lt.rid, "nr": lt.nr, "item_root": root_to_wire(lt.item_root),
        "meta_avail": [list(e) for e in lt.meta_avail],
        "data_avail": [list(e) for e in lt.data_avail],
        "get_trans_seq": lt.get_trans_seq, "commit_trans_seq": lt.commit_trans_seq,
        "max_item_seq": lt.max_item_seq, "finalize_seq": lt.finalize_seq, "flags": lt.flags,
    }


def log_trees_from_wire(d: dict) -> fmt.LogTrees:
    return fmt.LogTrees(
        rid=int(d["rid"]), nr=int(d["nr"]), item_root=root_from_wire(d["item_root"]),
        meta_avail=extents_from_wire(d["meta_avail"]),
        data_avail=extents_from_wire(d["data_avail"]),
        get_trans_seq=int(d["get_trans_seq"]), commit_trans_seq=int(d["commit_trans_seq"]),
        max_item_seq=int(d["max_item_seq"]), finalize_seq=int(d.get("finalize_seq", 0)),
        flags=int(d.get("flags", 0)),
    )


# --------------------------------------------------------------------------- frames


def pack_frame(seq: int, recv_seq: int, mid: int, cmd: int, flags: int, error: int,
               data: bytes) -> bytes:
    return HEADER.pack(seq, recv_seq, mid, len(data), cmd, flags, error) + data


class FrameReader:
    """Splits a byte stream into (header tuple, payload bytes) frames."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[tuple[tuple[int, ...], bytes]]:
        self._buf += data
        out = []
        while len(self._buf) >= HEADER_SIZE:
            hdr = HEADER.unpack_from(self._buf, 0)
            dlen = hdr[3]
            if dlen > MAX_PAYLOAD:
                raise FsError(errno.EIO, f"message payload of {dlen} bytes")
            if len(self._buf) < HEADER_SIZE + dlen:
                break
            payload = bytes(self._buf[HEADER_SIZE:HEADER_SIZE + dlen])
            del self._buf[:HEADER_SIZE + dlen]
            out.append((hdr, payload))
        return out


# --------------------------------------------------------------------------- connection

Handler = Callable[[Any], Awaitable[Any]]


class ConnectionLost(FsError):
    """The connection ended before the request was answered: the request may or may not
    have reached the peer (resend it on a new connection; the server is idempotent)."""

    def __init__(self, msg: str = "") -> None:
        super().__init__(errno.ENOTCONN, msg)


class _Pending:
    __slots__ = ("cmd", "event", "payload", "error", "msg", "lost")

    def __init__(self, cmd: int) -> None:
        self.cmd = cmd
        self.event = trio.Event()
        self.payload: Any = None
        self.error = 0
        self.msg = ""
        self.lost = False  # failed by the connection's end, not by the peer's errno


# the per-key queues of ordered handlers: key -> deque of (connection, id, cmd, payload)
OrderedQueues = dict[Hashable, deque]


class Connection:
    """One messaging connection over a trio stream; symmetric (either end may request).

    Use: register handlers, then ``await nursery.start(conn.run)``; `request()` from any
    task; `aclose()` to close.  `closed` is set (and `on_close` called) when the stream ends
    for any reason; `error` says why (None for a clean close).
    """

    def __init__(self, stream: trio.abc.Stream, name: str = "conn", *,
                 task_nursery: trio.Nursery | None = None,
                 ordered: OrderedQueues | None = None) -> None:
        self.stream = stream
        self.name = name
        self._handlers: dict[int, tuple[Handler, Callable[[Any], Hashable] | None]] = {}
        self._send_lock = trio.Lock()
        self._next_seq = 1  # seq of our next message
        self._recv_seq = 0  # greatest seq received (our ack to the peer)
        self._next_id = 1
        self._pending: dict[int, _Pending] = {}
        self._unacked: deque[tuple[int, bytes]] = deque()  # (seq, frame) not yet acked
        self._ordered: OrderedQueues = ordered if ordered is not None else {}
        self._task_nursery = task_nursery
        self._nursery: trio.Nursery | None = None
        self.closed = trio.Event()
        self.error: BaseException | None = None
        self.on_close: Callable[[Connection], None] | None = None
        self.peer_addr: tuple[str, int] = ("0.0.0.0", 0)
        self.context: Any = None  # whatever the owner wants to hang on it (server: rid)
        self.nr_sent = 0
        self.nr_received = 0
        self.nr_duplicates = 0
        sock = getattr(stream, "socket", None)
        if sock is not None:
            try:
                host, port = sock.getpeername()[:2]
                self.peer_addr = (host, port)
            except OSError:
                pass

    def register(self, cmd: int, handler: Handler, *,
                 order: Callable[[Any], Hashable] | None = None) -> None:
        """Handle incoming requests of cmd with `await handler(payload) -> reply payload`.
        The handler raises FsError to reply with an errno.  With `order`, requests with
        equal order(payload) are handled one at a time in arrival order."""
        self._handlers[int(cmd)] = (handler, order)

    # ------------------------------------------------------------------ sending

    async def _send(self, mid: int, cmd: int, flags: int, error: int, payload: Any) -> None:
        data = encode(payload)
        if self.closed.is_set():
            raise ConnectionLost(f"{self.name}: connection closed")
        async with self._send_lock:
            # the seq is taken under the lock so frames go out in seq order
            seq = self._next_seq
            self._next_seq += 1
            frame = pack_frame(seq, self._recv_seq, mid, cmd, flags, error, data)
            self._unacked.append((seq, frame))
            try:
                await self.stream.send_all(frame)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as e:
                self._lost(e)
                raise ConnectionLost(f"{self.name}: send failed: {e}") from e
            self.nr_sent += 1

    async def request(self, cmd: int, payload: Any = None) -> Any:
        """Send a request and wait for its response payload (FsError on an error reply,
        ConnectionLost if the connection is lost first)."""
        mid = self._next_id
        self._next_id += 1
        p = _Pending(int(cmd))
        self._pending[mid] = p
        try:
            await self._send(mid, int(cmd), 0, 0, payload)
            await p.event.wait()
        finally:
            self._pending.pop(mid, None)
        if p.lost:
            raise ConnectionLost(p.msg)
        if p.error:
            raise FsError(p.error, p.msg)
        return p.payload

    # ------------------------------------------------------------------ receiving

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        """The receive loop; returns when the stream ends or the connection is closed (the
        stream is closed on the way out, whatever ended the loop)."""
        reader = FrameReader()
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                task_status.started()
                try:
                    while True:
                        data = await self.stream.receive_some(65536)
                        if not data:
                            break  # the peer closed
                        for hdr, payload in reader.feed(data):
                            self._receive(hdr, payload)
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as e:
                    if not self.closed.is_set():
                        self.error = e
                except FsError as e:
                    log.error("%s: %s", self.name, e)
                    self.error = e
                self._lost(self.error)
                nursery.cancel_scope.cancel()
        finally:
            self._nursery = None
            self._lost(self.error)
            # the peer must see the end too (the loop may end by cancellation)
            with trio.CancelScope(shield=True):
                try:
                    await self.stream.aclose()
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                    pass

    def _receive(self, hdr: tuple[int, ...], data: bytes) -> None:
        seq, recv_seq, mid, _dlen, cmd, flags, error = hdr
        # the peer acknowledged everything up to recv_seq
        while self._unacked and self._unacked[0][0] <= recv_seq:
            self._unacked.popleft()
        if seq <= self._recv_seq:
            self.nr_duplicates += 1
            log.debug("%s: dropping duplicate seq %d (have %d)", self.name, seq, self._recv_seq)
            return
        self._recv_seq = seq
        self.nr_received += 1
        payload = decode(data)
        if flags & FLAG_RESPONSE:
            p = self._pending.get(mid)
            if p is None:
                log.debug("%s: response to unknown request id %d", self.name, mid)
                return
            p.payload = payload
            p.error = error
            if error and isinstance(payload, dict):
                p.msg = str(payload.get("msg", ""))
            p.event.set()
            return
        ent = self._handlers.get(cmd)
        if ent is None:
            log.warning("%s: no handler for request cmd %d", self.name, cmd)
            self._nursery.start_soon(self._reply, mid, cmd, errno.EINVAL,
                                     {"msg": f"unknown command {cmd}"})
            return
        handler, order = ent
        tasks = self._task_nursery or self._nursery
        if order is None:
            tasks.start_soon(self._handle, handler, mid, cmd, payload)
            return
        try:
            okey = (cmd, order(payload))
        except Exception:  # malformed payload: let the handler report it
            okey = (cmd, None)
        q = self._ordered.get(okey)
        if q is None:
            q = self._ordered[okey] = deque()
            tasks.start_soon(_ordered_worker, self._ordered, okey, q)
        q.append((self, handler, mid, cmd, payload))

    async def _handle(self, handler: Handler, mid: int, cmd: int, payload: Any) -> None:
        """Run a handler and reply (a reply on a connection that ended goes nowhere)."""
        try:
            reply = await handler(payload)
        except FsError as e:
            await self._reply(mid, cmd, e.errno, {"msg": e.msg})
            return
        except (KeyError, TypeError, ValueError) as e:
            # a malformed request: the peer's bug, reported to it, logged here
            log.error("%s: bad %s request: %r", self.name, _cmd_name(cmd), e)
            await self._reply(mid, cmd, errno.EINVAL, {"msg": f"malformed request: {e!r}"})
            return
        await self._reply(mid, cmd, 0, reply)

    async def _reply(self, mid: int, cmd: int, error: int, payload: Any) -> None:
        try:
            await self._send(mid, cmd, FLAG_RESPONSE, error, payload)
        except FsError as e:
            log.debug("%s: could not reply to %s: %s", self.name, _cmd_name(cmd), e)

    # ------------------------------------------------------------------ closing

    def _lost(self, err: BaseException | None) -> None:
        if self.closed.is_set():
            return
        self.closed.set()
        for p in self._pending.values():
            p.error = errno.ENOTCONN
            p.lost = True
            p.msg = f"{self.name}: connection lost" + (f": {err}" if err else "")
            p.event.set()
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()
        if self.on_close is not None:
            try:
                self.on_close(self)
            except Exception:
                log.exception("%s: on_close failed", self.name)

    async def aclose(self) -> None:
        """Close the connection: pending requests fail with ENOTCONN, the loop ends."""
        self._lost(None)
        with trio.CancelScope(shield=True):
            try:
                await self.stream.aclose()
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                pass


async def _ordered_worker(queues: OrderedQueues, okey: Hashable, q: deque) -> None:
    """Handle the requests of one order key one at a time, whichever connection each came
    on (a request resent after a reconnect waits for the old one to finish)."""
    try:
        while q:
            conn, handler, mid, cmd, payload = q[0]
            await conn._handle(handler, mid, cmd, payload)
            q.popleft()
    finally:
        if queues.get(okey) is q:
            del queues[okey]


def _cmd_name(cmd: int) -> str:
    try:
        return Cmd(cmd).name
    except ValueError:
        return str(cmd)


# --------------------------------------------------------------------------- TCP


def _set_keepalive(sock: trio.socket.SocketType) -> None:
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if hasattr(socket, "TCP_KEEPIDLE"):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, TCP_KEEPALIVE_S // 3)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 1)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT,
                            max(1, TCP_KEEPALIVE_S - TCP_KEEPALIVE_S // 3))
    except OSError as e:  # not fatal: the connection works without keepalive
        log.debug("keepalive options: %s", e)


async def open_listener(addr: str, port: int) -> trio.SocketListener:
    """A TCP listener on a quorum slot's address (SO_REUSEADDR, as trio sets it)."""
    listeners = await trio.open_tcp_listeners(port, host=addr)
    return listeners[0]


async def open_tcp(addr: str, port: int) -> trio.SocketStream:
    """Connect to a server; FsError(ENOTCONN) if it cannot be reached."""
    try:
        stream = await trio.open_tcp_stream(addr, port)
    except OSError as e:
        raise FsError(errno.ENOTCONN, f"connect to {addr}:{port}: {e}") from e
    _set_keepalive(stream.socket)
    return stream


def setup_accepted(stream: trio.abc.Stream) -> None:
    sock = getattr(stream, "socket", None)
    if sock is not None:
        _set_keepalive(sock)
