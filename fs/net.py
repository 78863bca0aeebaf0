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

Hostile peers (anybody can connect to a quorum slot's port): nothing a peer sends may stop
a server or a client.  Every frame is checked before it is acted on - the payload size
(`Connection.max_payload`), the header (known flags, no errno on a request, a response's
command matching its request), the JSON, and, on connections given `schemas=PROTOCOL` (the
server's and the client's), the payload of every command against its schema below (types
and ranges of every field the receiver reads; unknown fields are refused too).  A bad frame
raises `ProtocolError` in the receive task: a request is answered EINVAL (when its header
could be read), then that connection - and only it - is closed, with one warning naming the
peer and the reason (rate-limited across connections).  A server connection
(`require_greeting`) accepts nothing but one GREETING, with a small frame size limit, until
its owner calls `set_greeted()`; a handler registered with `close_on_error` (the server's
greeting: wrong fsid, format version or rid) closes the connection after its error reply.
Handlers never see a payload that does not match its schema; an exception other than an
FsError out of a handler is our bug: it is logged with its traceback, answered EINVAL and
closes that connection, but it does not propagate into the owner's nursery.
"""

from __future__ import annotations

import enum
import errno
import json
import logging
import socket
import struct
import time
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
MAX_GREETING_PAYLOAD = 4096  # the frame limit of a server connection until it is greeted
MAX_ERRNO = 4095  # the error field of a response is an errno
REJECT_REPLY_TIMEOUT_S = 1.0  # how long the EINVAL answer to a rejected request may take
GREETING_TIMEOUT_S = 30.0  # a server connection that sent no greeting by then is closed

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
        "srch_file": srch_file_to_wire(lt.srch_file),
    }


def srch_file_to_wire(f: fmt.SrchFile) -> list[int]:
    return [f.ref.blkno, f.ref.seq, f.blocks, f.entries, *f.first, *f.last]


def srch_file_from_wire(v: list[int] | None) -> fmt.SrchFile:
    """A schema-checked srch file (fs.srch.file_from_wire checks its sense)."""
    if v is None:
        return fmt.EMPTY_SRCH_FILE
    from fs.srch import file_from_wire

    return file_from_wire(v)


def log_trees_from_wire(d: dict) -> fmt.LogTrees:
    return fmt.LogTrees(
        rid=int(d["rid"]), nr=int(d["nr"]), item_root=root_from_wire(d["item_root"]),
        meta_avail=extents_from_wire(d["meta_avail"]),
        data_avail=extents_from_wire(d["data_avail"]),
        get_trans_seq=int(d["get_trans_seq"]), commit_trans_seq=int(d["commit_trans_seq"]),
        max_item_seq=int(d["max_item_seq"]), finalize_seq=int(d.get("finalize_seq", 0)),
        flags=int(d.get("flags", 0)), srch_file=srch_file_from_wire(d.get("srch_file")),
    )


# --------------------------------------------------------------------------- checking


class ProtocolError(FsError):
    """A peer sent something we do not accept: its connection is closed.  `reply_to` is the
    (id, cmd) of the request to answer EINVAL before closing, when its header was read."""

    def __init__(self, msg: str, reply_to: tuple[int, int] | None = None) -> None:
        super().__init__(errno.EPROTO, msg)
        self.reply_to = reply_to


class LogLimiter:
    """A token bucket for the log lines a peer can cause: `burst` lines at once, then
    `rate` per second; `allow()` says whether to log now and how many lines were suppressed
    since the last one logged, `log()` logs to `logger` if allowed."""

    def __init__(self, logger: logging.Logger, rate: float = 1.0, burst: int = 20) -> None:
        self.logger = logger
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)
        self._last = time.monotonic()
        self.suppressed = 0

    def allow(self) -> tuple[bool, int]:
        now = time.monotonic()
        self._tokens = min(float(self.burst), self._tokens + (now - self._last) * self.rate)
        self._last = now
        if self._tokens < 1.0:
            self.suppressed += 1
            return False, 0
        self._tokens -= 1.0
        n, self.suppressed = self.suppressed, 0
        return True, n

    def log(self, level: int, msg: str, *args: Any) -> None:
        ok, n = self.allow()
        if ok:
            if n:
                msg += f" ({n} similar messages suppressed)"
            self.logger.log(level, msg, *args)


_reject_log = LogLimiter(log, rate=2.0, burst=50)  # bad frames of every connection of the process


def _short(v: Any) -> str:
    r = repr(v)
    return r if len(r) <= 40 else r[:37] + "..."


class Schema:
    """A payload schema: `check(value, path)` raises ProtocolError naming the bad field."""

    def check(self, v: Any, path: str) -> None:
        raise NotImplementedError

    def _bad(self, v: Any, path: str, want: str) -> ProtocolError:
        return ProtocolError(f"{path}: {want} expected, got {_short(v)}")


def _check_in(sch: Schema, v: Any, path: str, sub: Any) -> None:
    """Check a member of a container; its path (path + sub) is only formatted for the
    error (long lists of extents and lock entries are checked on the server's thread)."""
    try:
        sch.check(v, "")
    except ProtocolError:
        sch.check(v, f"{path}{sub}")  # raises again, naming the member
        raise


class Int(Schema):
    """An int (not a bool) in [lo, hi]."""

    def __init__(self, lo: int, hi: int) -> None:
        self.lo, self.hi = lo, hi

    def check(self, v: Any, path: str) -> None:
        if type(v) is not int or not self.lo <= v <= self.hi:
            raise self._bad(v, path, f"an integer in [{self.lo}, {self.hi}]")


class Bool(Schema):
    def check(self, v: Any, path: str) -> None:
        if type(v) is not bool:
            raise self._bad(v, path, "a boolean")


class Str(Schema):
    def __init__(self, max_len: int = 4096) -> None:
        self.max_len = max_len

    def check(self, v: Any, path: str) -> None:
        if type(v) is not str or len(v) > self.max_len:
            raise self._bad(v, path, f"a string of at most {self.max_len} characters")


class Nullable(Schema):
    def __init__(self, inner: Schema) -> None:
        self.inner = inner

    def check(self, v: Any, path: str) -> None:
        if v is not None:
            self.inner.check(v, path)


class Fixed(Schema):
    """A list of exactly len(items) values, item i of schema items[i]."""

    def __init__(self, *items: Schema) -> None:
        self.items = items
        # keys and roots are lists of ints: checked in one pass
        self._ranges = ([(s.lo, s.hi) for s in items]
                        if all(type(s) is Int for s in items) else None)

    def check(self, v: Any, path: str) -> None:
        if type(v) is not list or len(v) != len(self.items):
            raise self._bad(v, path, f"a list of {len(self.items)}")
        if self._ranges is not None and all(
                type(x) is int and lo <= x <= hi
                for x, (lo, hi) in zip(v, self._ranges, strict=True)):
            return
        for i, (x, sch) in enumerate(zip(v, self.items, strict=True)):
            _check_in(sch, x, path, f"[{i}]")


class List(Schema):
    def __init__(self, item: Schema, max_len: int) -> None:
        self.item, self.max_len = item, max_len

    def check(self, v: Any, path: str) -> None:
        if type(v) is not list or len(v) > self.max_len:
            raise self._bad(v, path, f"a list of at most {self.max_len}")
        item = self.item
        for i, x in enumerate(v):
            _check_in(item, x, path, f"[{i}]")


class Dict(Schema):
    """A dict with these required and optional keys and no others."""

    def __init__(self, required: dict[str, Schema] | None = None,
                 optional: dict[str, Schema] | None = None) -> None:
        self.required = required or {}
        self.optional = optional or {}

    def check(self, v: Any, path: str) -> None:
        if type(v) is not dict:
            raise self._bad(v, path, "an object")
        for k, sch in self.required.items():
            if k not in v:
                raise ProtocolError(f"{path}.{k}: missing")
            _check_in(sch, v[k], path, f".{k}")
        for k, x in v.items():
            sch = self.required.get(k) or self.optional.get(k)
            if sch is None:
                raise ProtocolError(f"{path}: unknown field {_short(k)}")
            if k not in self.required:
                _check_in(sch, x, path, f".{k}")


class Empty(Schema):
    """No payload: none at all, or an empty object."""

    def check(self, v: Any, path: str) -> None:
        if v is not None and v != {}:
            raise self._bad(v, path, "no payload")


class ExtentSchema(Fixed):
    """[start, len]: len >= 1 and the extent ends within u64 block numbers."""

    def __init__(self) -> None:
        super().__init__(U64, Int(1, fmt.U64_MAX))

    def check(self, v: Any, path: str) -> None:
        # inline: extent lists are the longest payloads
        if (type(v) is not list or len(v) != 2 or type(v[0]) is not int
                or type(v[1]) is not int or v[0] < 0 or v[1] < 1
                or v[0] + v[1] > fmt.U64_MAX + 1):
            raise self._bad(v, path, "an extent [start, len >= 1] within u64 block numbers")


U8 = Int(0, 0xFF)
U16 = Int(0, 0xFFFF)
U64 = Int(0, fmt.U64_MAX)
# seqs and terms a peer reports: small enough that the +1s done with them stay u64
SEQ = Int(0, 2**63 - 1)
I64 = Int(-(2**63), 2**63 - 1)
MODE = Int(0, 3)  # lock modes NULL, READ, WRITE, WRITE_ONLY (fs.lock_server.MODES)
MAX_LIST = 1 << 22  # bounded by the frame size anyway
KEY = Fixed(U8, U64, U8, U64, U64, U8)  # fmt.KEY: zone, first, type, second, third, fourth
ROOT = Fixed(U64, U64, U8)  # blkno, seq, height (fmt.ROOT)
EXTENTS = List(ExtentSchema(), MAX_LIST)
MSG = Dict(optional={"msg": Str(64 * 1024)})  # the payload of an error response

SRCH_FILE = Fixed(*([U64] * 10))  # fmt.SrchFile: parent ref, blocks, entries, first, last
_SRCH_WORK = Dict(optional={"id": SEQ, "seq": SEQ, "sorted": Bool(),
                            "inputs": List(SRCH_FILE, 64), "meta_avail": EXTENTS})
_LOCK = Dict({"key": KEY, "old_mode": MODE, "new_mode": MODE}, {"write_seq": SEQ})
_LOCK_REPLY = Dict({"key": KEY, "mode": MODE}, {"write_seq": SEQ})
_LOCK_ENTRY = Dict({"key": KEY, "mode": MODE}, {"write_seq": SEQ})
_LOG_TREES = Dict(
    {"rid": U64, "nr": U64, "item_root": ROOT, "meta_avail": EXTENTS, "data_avail": EXTENTS,
     "get_trans_seq": SEQ, "commit_trans_seq": SEQ, "max_item_seq": SEQ},
    {"finalize_seq": SEQ, "flags": Int(0, 0xFFFFFFFF), "srch_file": SRCH_FILE})

# OPEN_INO_MAP (both ways: a mount asks the server, the server asks every other mount): the
# group number of a 1024-inode group, answered with its open map as 16 little-endian u64
# words (bit i of word w: inode group * 1024 + w * 64 + i is open there)
OMAP_WORDS = fmt.LOCK_GROUP_NR // 64
_OMAP_ARGS = Dict({"group": Int(0, fmt.U64_MAX >> fmt.LOCK_GROUP_SHIFT)})
_OMAP_REPLY = Dict({"bits": Fixed(*[U64] * OMAP_WORDS)})

# the payload of each request, as its receiver reads it (LOCK goes both ways)
REQUEST_SCHEMAS: dict[int, Schema] = {
    Cmd.GREETING: Dict(
        {"fsid": U64, "fmt_vers": U64, "rid": Int(1, fmt.U64_MAX)},
        {"flags": Int(0, GREETING_FLAG_FAREWELL | GREETING_FLAG_QUORUM), "server_term": U64,
         "resume": Bool()}),
    Cmd.ALLOC_INODES: Dict({"count": U64}),
    Cmd.GET_LOG_TREES: Dict(optional={"rid": U64}),
    Cmd.COMMIT_LOG_TREES: Dict(
        {"nr": U64, "item_root": ROOT, "meta_avail": EXTENTS, "data_avail": EXTENTS},
        {"rid": U64, "trans_seq": SEQ, "meta_freed": EXTENTS, "data_freed": EXTENTS,
         "max_item_seq": SEQ, "inode_count_delta": I64, "srch_file": SRCH_FILE}),
    Cmd.SYNC_LOG_TREES: Empty(),
    Cmd.GET_ROOTS: Empty(),
    Cmd.GET_LAST_SEQ: Empty(),
    Cmd.LOCK: _LOCK,
    Cmd.LOCK_RECOVER: Dict(optional={"start": Nullable(KEY), "nr": Int(0, 1 << 20)}),
    Cmd.STATFS: Empty(),
    Cmd.FAREWELL: Dict(optional={"rid": U64}),
    Cmd.SRCH_GET_COMPACT: Empty(),
    Cmd.SRCH_COMMIT_COMPACT: Dict({"id": SEQ, "meta_avail": EXTENTS},
                                  {"output": SRCH_FILE, "abandon": Bool()}),
    Cmd.OPEN_INO_MAP: _OMAP_ARGS,
}

# the payload of each successful response, as the requester reads it
RESPONSE_SCHEMAS: dict[int, Schema] = {
    Cmd.GREETING: Dict({"server_term": U64, "fmt_vers": U64, "rid": U64},
                       {"gone": Bool()}),
    Cmd.ALLOC_INODES: Dict({"first": U64, "nr": U64}),
    Cmd.GET_LOG_TREES: _LOG_TREES,
    Cmd.COMMIT_LOG_TREES: Empty(),
    Cmd.SYNC_LOG_TREES: Empty(),
    Cmd.GET_ROOTS: Dict({"fs_root": ROOT, "logs": List(
        Dict({"rid": U64, "nr": U64, "item_root": ROOT, "max_item_seq": SEQ,
              "flags": Int(0, 0xFFFFFFFF)}, {"srch_file": SRCH_FILE, "merged": Nullable(KEY)}),
            MAX_LIST)}, {"srch_root": ROOT}),
    Cmd.GET_LAST_SEQ: Dict({"last_seq": U64}),
    Cmd.LOCK: _LOCK_REPLY,
    Cmd.LOCK_RECOVER: Dict({"locks": List(_LOCK_ENTRY, 1 << 20)}),
    Cmd.STATFS: Dict({k: U64 for k in (
        "total_meta_blocks", "free_meta_blocks", "total_data_blocks", "free_data_blocks",
        "inode_count", "next_ino")}),
    Cmd.FAREWELL: Empty(),
    Cmd.SRCH_GET_COMPACT: _SRCH_WORK,
    Cmd.SRCH_COMMIT_COMPACT: Empty(),
    Cmd.OPEN_INO_MAP: _OMAP_REPLY,
}


class Schemas:
    """What a Connection checks payloads against (None: only frames and JSON)."""

    def __init__(self, requests: dict[int, Schema], responses: dict[int, Schema]) -> None:
        self.requests = requests
        self.responses = responses


PROTOCOL = Schemas(REQUEST_SCHEMAS, RESPONSE_SCHEMAS)


def check_payload(schema: Schema, payload: Any, what: str) -> None:
    """ProtocolError unless payload matches schema."""
    schema.check(payload, what)


# --------------------------------------------------------------------------- frames


def pack_frame(seq: int, recv_seq: int, mid: int, cmd: int, flags: int, error: int,
               data: bytes) -> bytes:
    return HEADER.pack(seq, recv_seq, mid, len(data), cmd, flags, error) + data


class FrameReader:
    """Splits a byte stream into (header tuple, payload bytes) frames."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes, max_payload: int = MAX_PAYLOAD
             ) -> list[tuple[tuple[int, ...], bytes]]:
        """The frames completed by data; ProtocolError for a payload over max_payload
        (checked as soon as the header is in: nothing that big is buffered)."""
        self._buf += data
        out = []
        while len(self._buf) >= HEADER_SIZE:
            hdr = HEADER.unpack_from(self._buf, 0)
            dlen = hdr[3]
            if dlen > max_payload:
                raise ProtocolError(f"message payload of {dlen} bytes (limit {max_payload})")
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


# the per-key queues of ordered handlers: key -> deque of
# (connection, handler, id, cmd, payload, close_on_error)
OrderedQueues = dict[Hashable, deque]


class Connection:
    """One messaging connection over a trio stream; symmetric (either end may request).

    Use: register handlers, then ``await nursery.start(conn.run)``; `request()` from any
    task; `aclose()` to close.  `closed` is set (and `on_close` called) when the stream ends
    for any reason; `error` says why (None for a clean close; a ProtocolError when we closed
    it because of what the peer sent).

    `schemas` (PROTOCOL for the server's and the client's connections) checks every
    payload; `require_greeting` (the server's) accepts only one GREETING, in frames of at
    most MAX_GREETING_PAYLOAD bytes, until `set_greeted()`.
    """

    def __init__(self, stream: trio.abc.Stream, name: str = "conn", *,
                 task_nursery: trio.Nursery | None = None,
                 ordered: OrderedQueues | None = None,
                 schemas: Schemas | None = None,
                 require_greeting: bool = False) -> None:
        self.stream = stream
        self.name = name
        self._handlers: dict[int, tuple[Handler, Callable[[Any], Hashable] | None, bool]] = {}
        self._send_lock = trio.Lock()
        self._next_seq = 1  # seq of our next message
        self._recv_seq = 0  # greatest seq received (our ack to the peer)
        self._next_id = 1
        self._pending: dict[int, _Pending] = {}
        self._unacked: deque[tuple[int, bytes]] = deque()  # (seq, frame) not yet acked
        self._ordered: OrderedQueues = ordered if ordered is not None else {}
        self._task_nursery = task_nursery
        self._nursery: trio.Nursery | None = None
        self.schemas = schemas
        self.require_greeting = require_greeting
        self.greeted = not require_greeting
        self._greeting_received = False
        self.max_payload = MAX_GREETING_PAYLOAD if require_greeting else MAX_PAYLOAD
        self.closed = trio.Event()
        self.error: BaseException | None = None
        self.on_close: Callable[[Connection], None] | None = None
        self.peer_addr: tuple[str, int] = ("0.0.0.0", 0)
        self.sock_addr: tuple[str, int] = ("0.0.0.0", 0)
        self.context: Any = None  # whatever the owner wants to hang on it (server: rid)
        self.nr_sent = 0
        self.nr_received = 0
        self.nr_duplicates = 0
        self.nr_rejected = 0  # frames that made us close the connection (0 or 1)
        sock = getattr(stream, "socket", None)
        if sock is not None:
            try:
                host, port = sock.getpeername()[:2]
                self.peer_addr = (host, port)
                host, port = sock.getsockname()[:2]
                self.sock_addr = (host, port)
            except (OSError, ValueError):
                pass

    @property
    def peer(self) -> str:
        return f"{self.peer_addr[0]}:{self.peer_addr[1]}"

    @property
    def sock(self) -> str:
        return f"{self.sock_addr[0]}:{self.sock_addr[1]}"

    def register(self, cmd: int, handler: Handler, *,
                 order: Callable[[Any], Hashable] | None = None,
                 close_on_error: bool = False) -> None:
        """Handle incoming requests of cmd with `await handler(payload) -> reply payload`.
        The handler raises FsError to reply with an errno (with `close_on_error`, the
        connection is then closed).  With `order`, requests with equal order(payload) are
        handled one at a time in arrival order."""
        self._handlers[int(cmd)] = (handler, order, close_on_error)

    def set_greeted(self) -> None:
        """The peer's greeting was accepted: other requests and full-size frames now are."""
        self.greeted = True
        self.max_payload = MAX_PAYLOAD

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
        """The receive loop; returns when the stream ends, the connection is closed or the
        peer sent something we refuse (the stream is closed on the way out, whatever ended
        the loop).  Never raises because of what the peer sent."""
        reader = FrameReader()
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                if self.require_greeting:
                    nursery.start_soon(self._greeting_timer)
                task_status.started()
                try:
                    while True:
                        data = await self.stream.receive_some(65536)
                        if not data:
                            break  # the peer closed
                        for hdr, payload in reader.feed(data, self.max_payload):
                            self._receive(hdr, payload)
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as e:
                    if not self.closed.is_set():
                        self.error = e
                except ProtocolError as e:
                    await self._reject(e)
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

    async def _greeting_timer(self) -> None:
        """A peer that connects and says nothing must not hold the connection forever."""
        await trio.sleep(GREETING_TIMEOUT_S)
        if not self._greeting_received and not self.closed.is_set():
            self.nr_rejected += 1
            self.error = ProtocolError(f"no greeting within {GREETING_TIMEOUT_S:g} s")
            _reject_log.log(logging.WARNING, "%s: closing the connection of peer %s: %s",
                            self.name, self.peer, self.error.msg)
            self._lost(self.error)

    async def _reject(self, e: ProtocolError) -> None:
        """The peer sent a bad frame: log it once, answer the request EINVAL if we know
        which it was, and let the caller close the connection."""
        self.nr_rejected += 1
        if self.closed.is_set():
            return  # closed meanwhile (by us): nothing to say
        self.error = e
        _reject_log.log(logging.WARNING, "%s: closing the connection of peer %s: %s",
                        self.name, self.peer, e.msg)
        if e.reply_to is not None:
            mid, cmd = e.reply_to
            with trio.move_on_after(REJECT_REPLY_TIMEOUT_S):
                await self._reply(mid, cmd, errno.EINVAL, {"msg": e.msg})

    def _receive(self, hdr: tuple[int, ...], data: bytes) -> None:
        """Check and dispatch one frame; ProtocolError if the peer must be disconnected."""
        seq, recv_seq, mid, _dlen, cmd, flags, error = hdr
        is_response = bool(flags & FLAG_RESPONSE)
        if flags & ~FLAG_RESPONSE:
            raise ProtocolError(f"unknown header flags {flags:#x}")
        if not is_response and error:
            raise ProtocolError(f"a request carrying error {error}")
        if is_response and error > MAX_ERRNO:
            raise ProtocolError(f"a response carrying error {error}")
        # the peer acknowledged everything up to recv_seq
        while self._unacked and self._unacked[0][0] <= recv_seq:
            self._unacked.popleft()
        if seq <= self._recv_seq:
            self.nr_duplicates += 1
            log.debug("%s: dropping duplicate seq %d (have %d)", self.name, seq, self._recv_seq)
            return
        self._recv_seq = seq
        self.nr_received += 1
        reply_to = None if is_response else (mid, cmd)
        if not is_response:
            self._check_request_header(mid, cmd)
        elif not self.greeted:
            raise ProtocolError("a response before the greeting")
        try:
            payload = decode(data)
        except (ValueError, TypeError, RecursionError) as e:
            raise ProtocolError(f"{_cmd_name(cmd)} payload is not valid JSON: {e}",
                                reply_to) from None
        if is_response:
            self._receive_response(mid, cmd, error, payload)
            return
        if self.schemas is not None:
            try:
                check_payload(self.schemas.requests[cmd], payload, _cmd_name(cmd))
            except ProtocolError as e:
                e.reply_to = reply_to
                raise
        ent = self._handlers.get(cmd)
        if ent is None:
            log.warning("%s: no handler for request cmd %d", self.name, cmd)
            self._nursery.start_soon(self._reply, mid, cmd, errno.EINVAL,
                                     {"msg": f"unknown command {cmd}"})
            return
        handler, order, close_on_error = ent
        tasks = self._task_nursery or self._nursery
        if order is None:
            tasks.start_soon(self._handle, handler, mid, cmd, payload, close_on_error)
            return
        try:
            okey = (cmd, order(payload))
        except Exception:  # malformed payload: let the handler report it
            okey = (cmd, None)
        q = self._ordered.get(okey)
        if q is None:
            q = self._ordered[okey] = deque()
            tasks.start_soon(_ordered_worker, self._ordered, okey, q)
        q.append((self, handler, mid, cmd, payload, close_on_error))

    def _check_request_header(self, mid: int, cmd: int) -> None:
        reply_to = (mid, cmd)
        try:
            Cmd(cmd)
        except ValueError:
            raise ProtocolError(f"unknown command {cmd}", reply_to) from None
        if self.schemas is not None and (cmd not in self.schemas.requests
                                         or cmd not in self._handlers):
            raise ProtocolError(f"{_cmd_name(cmd)} is not served here", reply_to)
        if not self.require_greeting:
            return
        if cmd == Cmd.GREETING:
            if self.greeted or self._greeting_received:
                raise ProtocolError("a second greeting", reply_to)
            self._greeting_received = True
        elif not self.greeted:
            raise ProtocolError(f"{_cmd_name(cmd)} request before greeting", reply_to)

    def _receive_response(self, mid: int, cmd: int, error: int, payload: Any) -> None:
        p = self._pending.get(mid)
        if p is None:
            log.debug("%s: response to unknown request id %d", self.name, mid)
            return
        if cmd != p.cmd:
            raise ProtocolError(f"a {_cmd_name(cmd)} response to {_cmd_name(p.cmd)} "
                                f"request {mid}")
        if error:
            if self.schemas is not None:
                check_payload(MSG, payload, f"{_cmd_name(cmd)} error response")
            p.msg = str(payload.get("msg", "")) if isinstance(payload, dict) else ""
        elif self.schemas is not None and cmd in self.schemas.responses:
            check_payload(self.schemas.responses[cmd], payload, f"{_cmd_name(cmd)} response")
        p.payload = payload
        p.error = error
        p.event.set()

    async def _handle(self, handler: Handler, mid: int, cmd: int, payload: Any,
                      close_on_error: bool = False) -> None:
        """Run a handler and reply (a reply on a connection that ended goes nowhere)."""
        try:
            reply = await handler(payload)
        except FsError as e:
            await self._reply(mid, cmd, e.errno, {"msg": e.msg})
            if close_on_error and not self.closed.is_set():
                _reject_log.log(logging.WARNING, "%s: closing the connection of peer %s: "
                                "%s refused: %s", self.name, self.peer, _cmd_name(cmd), e)
                await self.aclose()
            return
        except (KeyError, TypeError, ValueError) as e:
            # a malformed request: the peer's bug, reported to it, logged here
            _reject_log.log(logging.ERROR, "%s: bad %s request of peer %s: %r", self.name,
                            _cmd_name(cmd), self.peer, e)
            await self._reply(mid, cmd, errno.EINVAL, {"msg": f"malformed request: {e!r}"})
            return
        except Exception as e:
            # our bug (a request that passed every check broke a handler): a traceback in
            # the log, but only this connection ends, never the server or the client
            log.error("%s: %s handler failed on a request of peer %s, closing the "
                      "connection", self.name, _cmd_name(cmd), self.peer, exc_info=e)
            await self._reply(mid, cmd, errno.EINVAL, {"msg": f"request failed: {e!r}"})
            await self.aclose()
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
            conn, handler, mid, cmd, payload, close_on_error = q[0]
            await conn._handle(handler, mid, cmd, payload, close_on_error)
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
