"""The client side of messaging: one mount's typed calls to the server, across failovers.

Owns the mount's connection to the server: finding the server (`locate`, or a `connect`
stream factory in tests), the GREETING (with the mount's rid, a random u64 per mount
instance, the last server_term seen, and flags QUORUM and FAREWELL), reconnecting when the
connection drops and RESENDING every request still unanswered on the new connection (spec
§2.2), the typed request methods the items layer uses, and dispatching the server's
requests to the mount (lock invalidations, LOCK_RECOVER, SYNC_LOG_TREES, OPEN_INO_MAP).

Failure model: callers never see a lost connection.  A request fails only with the
server's own errno, or with ENOTCONN once the client was closed (`close`/`abandon`) or the
server refused it for good (ENOLINK: the rid was fenced and reclaimed).  The server makes
every request idempotent (fs/server.py), so a request whose response was lost may be sent
again.  FAREWELL completes either by its response or, after a reconnect, by the server
saying the rid is gone (its mounted_clients item was deleted by the farewell).

Concurrency (trio; code between two awaits is atomic):
* one connection manager task (`_run`, in the nursery given to `start`) connects, greets,
  publishes `conn` and waits for the connection to end, then starts over with backoff;
* requests may be made from any number of tasks; each waits for a greeted connection
  (`_wait_conn`), sends, and loops on ConnectionLost;
* the server's requests are handled in tasks of the client's nursery, not the
  connection's: a dropped connection must not cancel an invalidation in the middle of its
  commit (the commit itself waits for the reconnect).  LOCK requests are handled one at a
  time per lock key, in arrival order, across connections (shared ordered queues).
* nothing here holds a lock across an await.
"""

from __future__ import annotations

import errno
import inspect
import logging
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from fs import format as fmt
from fs import net
from fs.counters import Counters
from fs.errors import FsError
from fs.kmsg import KMSG
from fs.net import Cmd, Connection, ConnectionLost

log = logging.getLogger(__name__)

FAREWELL_GONE_POLL_S = 0.25  # how often a farewell checks the super for its reclaim

InvalidateHandler = Callable[[fmt.Key, int, int], Awaitable[None]]
RecoverHandler = Callable[[], Any]  # -> list of {"key", "mode", "write_seq"} (or awaitable)
Locate = Callable[[], Awaitable[tuple[str, int]]]
ConnectFn = Callable[[], Awaitable[trio.abc.Stream]]

BACKOFF_MIN_S = 0.1  # first retry of a failed connect or greeting
BACKOFF_MAX_S = 1.0
RECOVER_PAGE = 512  # LOCK_RECOVER entries per page when the server does not say

# a greeting refused with one of these errnos is final (wrong volume, or fenced rid)
FATAL_GREETING_ERRNOS = (errno.EINVAL, errno.ENOLINK)


class NoServer(FsError):
    """Raised by `locate()` when no server can ever be found (our own server cannot start on
    corrupt metadata): the client gives up instead of retrying."""


class _RidGone(Exception):
    """The server no longer knows this rid (its mounted_clients item is gone)."""


class Client:
    """A mount's connection to the server.

    `Client(fsid, fmt_vers, rid, quorum, locate, connect)` then `await client.start(nursery)`;
    `connect_tcp` and `connect_stream` do both for one fixed address or stream.
    """

    def __init__(self, fsid: int, fmt_vers: int, rid: int | None = None,
                 quorum: bool = False, locate: Locate | None = None,
                 connect: ConnectFn | None = None, *,
                 counters: Counters | None = None) -> None:
        if locate is None and connect is None:
            raise ValueError("Client needs locate() or connect()")
        self.fsid = fsid
        self.fmt_vers = fmt_vers
        self.rid = rid if rid else (secrets.randbits(64) or 1)
        self.quorum = quorum
        self.counters = counters if counters is not None else Counters()
        self._locate = locate
        self._connect = connect
        self.server_term = 0  # term of the last server that greeted us
        self.greeted = False  # some server has greeted this rid (later greetings resume)
        self.conn: Connection | None = None  # the current greeted connection
        self.closed = False  # close() or abandon(): requests fail with ENOTCONN
        self.dead: FsError | None = None  # the server refused us for good
        self.farewell_started = False
        self.farewell_done = False
        self._rid_gone = False
        self._invalidate: InvalidateHandler | None = None
        self._note_invalidation: Callable[[fmt.Key], None] | None = None
        self._recover: RecoverHandler | None = None
        self._sync_log_trees: Callable[[], Awaitable[Any]] | None = None
        self._omap: Callable[[int], int] | None = None  # group -> our open map (bits)
        self._ordered: net.OrderedQueues = {}  # LOCK requests per key, across connections
        self._changed = trio.Event()  # set (and replaced) when conn/closed/dead change
        self._nursery: trio.Nursery | None = None
        self._scope: trio.CancelScope | None = None

    # ------------------------------------------------------------------ connecting

    @classmethod
    async def connect_tcp(cls, addr: str, port: int, *, fsid: int, fmt_vers: int,
                          nursery: trio.Nursery, rid: int | None = None,
                          quorum: bool = False, counters: Counters | None = None) -> Client:
        """A started client of the server at one fixed TCP address (reconnects there)."""
        async def locate() -> tuple[str, int]:
            return addr, port

        self = cls(fsid, fmt_vers, rid, quorum, locate=locate, counters=counters)
        await self.start(nursery)
        return self

    @classmethod
    async def connect_stream(cls, stream: trio.abc.Stream, *, fsid: int, fmt_vers: int,
                             nursery: trio.Nursery, rid: int | None = None,
                             quorum: bool = False) -> Client:
        """A started client over one already connected stream (tests).  It cannot
        reconnect: once the stream is lost, requests wait until `close()`."""
        streams = [stream]

        async def connect() -> trio.abc.Stream:
            if streams:
                return streams.pop()
            await trio.sleep_forever()
            raise AssertionError("unreachable")

        self = cls(fsid, fmt_vers, rid, quorum, connect=connect)
        await self.start(nursery)
        return self

    async def start(self, nursery: trio.Nursery) -> None:
        """Connect and greet (retrying with backoff until it works); the connection
        manager keeps running in `nursery`.  Raises FsError if the server refuses the
        greeting for good (wrong fsid or format version, a reclaimed rid)."""
        self._nursery = nursery
        await nursery.start(self._run)

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def _open_stream(self) -> trio.abc.Stream:
        if self._connect is not None:
            return await self._connect()
        assert self._locate is not None
        addr, port = await self._locate()
        return await net.open_tcp(addr, port)

    def _greeting_payload(self) -> dict:
        flags = net.GREETING_FLAG_QUORUM if self.quorum else 0
        if self.farewell_started:
            flags |= net.GREETING_FLAG_FAREWELL
        return {"fsid": self.fsid, "fmt_vers": self.fmt_vers, "rid": self.rid,
                "flags": flags, "server_term": self.server_term, "resume": self.greeted}

    def _new_conn(self, stream: trio.abc.Stream) -> Connection:
        # every frame and payload from the server is checked (fs/net.py PROTOCOL): a bad
        # one closes the connection, and we reconnect and resend as after any loss
        conn = Connection(stream, name=f"client {self.rid:016x}",
                          task_nursery=self._nursery, ordered=self._ordered,
                          schemas=net.PROTOCOL)
        conn.register(Cmd.LOCK, self._on_lock, order=self._lock_order)
        conn.register(Cmd.LOCK_RECOVER, self._on_lock_recover)
        conn.register(Cmd.SYNC_LOG_TREES, self._on_sync_log_trees)
        conn.register(Cmd.OPEN_INO_MAP, self._on_open_ino_map)
        return conn

    async def _run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                   ) -> None:
        """The connection manager: connect, greet, serve, and again when it drops."""
        started = False
        delay = BACKOFF_MIN_S
        self._scope = trio.CancelScope()
        with self._scope:
            while not self.closed:
                try:
                    stream = await self._open_stream()
                except NoServer as e:
                    if not started:
                        raise
                    log.error("client %016x: no server can start: %s", self.rid, e, extra=KMSG)
                    self.dead = e
                    self._notify()
                    return
                except (OSError, FsError, trio.BrokenResourceError) as e:
                    log.debug("client %016x: connect failed: %s", self.rid, e)
                    self.counters.inc("client_connect_fail")
                    await trio.sleep(delay)
                    delay = min(delay * 2, BACKOFF_MAX_S)
                    continue
                conn = self._new_conn(stream)
                assert self._nursery is not None
                await self._nursery.start(conn.run)
                try:
                    reply = await conn.request(Cmd.GREETING, self._greeting_payload())
                    if int(reply["rid"]) != self.rid or int(reply["fmt_vers"]) != self.fmt_vers:
                        raise FsError(errno.EINVAL, f"bad greeting reply {reply!r}")
                except ConnectionLost as e:
                    log.debug("client %016x: greeting lost: %s", self.rid, e)
                    await conn.aclose()
                    await trio.sleep(delay)
                    delay = min(delay * 2, BACKOFF_MAX_S)
                    continue
                except FsError as e:
                    await conn.aclose()
                    if e.errno not in FATAL_GREETING_ERRNOS:
                        log.warning("client %016x: greeting refused (%s), retrying",
                                    self.rid, e)
                        await trio.sleep(delay)
                        delay = min(delay * 2, BACKOFF_MAX_S)
                        continue
                    if not started:
                        raise
                    log.error("client %016x: server refused us: %s", self.rid, e, extra=KMSG)
                    self.dead = e
                    self._notify()
                    return
                if reply.get("gone"):
                    # our farewell was answered while we were away: the rid is reclaimed
                    log.info("client %016x: server says our rid is gone", self.rid)
                    self._rid_gone = True
                    await conn.aclose()
                    self._notify()
                    if not started:
                        task_status.started()
                    return
                if self.greeted:
                    self.counters.inc("client_reconnect")
                    log.info("client %016x: reconnected to server term %d", self.rid,
                             int(reply["server_term"]))
                self.greeted = True
                self.server_term = int(reply["server_term"])
                self.conn = conn
                log.info("client connected %s -> %s", conn.sock, conn.peer, extra=KMSG)
                delay = BACKOFF_MIN_S
                self._notify()
                if not started:
                    started = True
                    task_status.started()
                try:
                    await conn.closed.wait()
                finally:
                    if not self.closed:  # (close() says it itself, in order)
                        log.info("client disconnected %s -> %s", conn.sock, conn.peer,
                                 extra=KMSG)
                if self.conn is conn:
                    self.conn = None
                    self._notify()
                if not self.closed:
                    log.info("client %016x: connection to the server lost", self.rid)

    async def close(self) -> None:
        """Stop: close the connection; pending and later requests fail with ENOTCONN.
        (After `farewell()` this is the clean end of a mount.)"""
        if not self.closed and self.conn is not None:
            log.info("client disconnected %s -> %s", self.conn.sock, self.conn.peer,
                     extra=KMSG)
        self.closed = True
        conn, self.conn = self.conn, None
        self._notify()
        if self._scope is not None:
            self._scope.cancel()
        if conn is not None:
            await conn.aclose()

    async def abandon(self) -> None:
        """Close without farewell (forced unmount, a crash): the server will fence and
        reclaim this rid."""
        await self.close()

    async def _wait_conn(self) -> Connection:
        while True:
            if self.closed:
                raise FsError(errno.ENOTCONN, "client closed")
            if self._rid_gone:
                raise _RidGone()
            if self.dead is not None:
                raise FsError(errno.ENOTCONN, f"server refused this mount: {self.dead}")
            if self.conn is not None and not self.conn.closed.is_set():
                return self.conn
            await self._changed.wait()

    async def _request(self, cmd: Cmd, payload: Any = None) -> Any:
        """Send until answered: a lost connection means wait for the next one and resend."""
        while True:
            try:
                conn = await self._wait_conn()
            except _RidGone:
                raise FsError(errno.ENOTCONN, "this mount's rid is gone") from None
            try:
                return await conn.request(cmd, payload)
            except ConnectionLost:
                if self.closed:
                    raise FsError(errno.ENOTCONN, "client closed") from None
                self.counters.inc("client_resend")
                log.debug("client %016x: resending %s", self.rid, cmd.name)

    # ------------------------------------------------------------------ requests

    async def alloc_inodes(self, count: int) -> tuple[int, int]:
        """A range of unused inode numbers: (first, nr)."""
        r = await self._request(Cmd.ALLOC_INODES, {"count": count})
        return int(r["first"]), int(r["nr"])

    async def get_log_trees(self) -> fmt.LogTrees:
        """Open (or continue) this mount's transaction: the log tree record with refilled
        meta_avail/data_avail and get_trans_seq = the transaction's seq."""
        r = await self._request(Cmd.GET_LOG_TREES, {"rid": self.rid})
        return net.log_trees_from_wire(r)

    async def commit_log_trees(self, lt: fmt.LogTrees, meta_freed: list[tuple[int, int]],
                               data_freed: list[tuple[int, int]], *,
                               inode_count_delta: int = 0) -> None:
        """Publish a committed transaction: lt carries the new item_root, the remaining
        (unused) meta_avail/data_avail and max_item_seq; *_freed are blocks the transaction
        freed that earlier commits wrote.  Returns once the server's super is on disk.
        After it the old avail must not be used: get_log_trees() hands out the next.
        `trans_seq` (lt.get_trans_seq) lets the server recognise a resend of a commit it
        already made."""
        await self._request(Cmd.COMMIT_LOG_TREES, {
            "rid": self.rid, "nr": lt.nr, "trans_seq": lt.get_trans_seq,
            "item_root": net.root_to_wire(lt.item_root),
            "meta_avail": [list(e) for e in lt.meta_avail],
            "data_avail": [list(e) for e in lt.data_avail],
            "meta_freed": [list(e) for e in meta_freed],
            "data_freed": [list(e) for e in data_freed],
            "max_item_seq": lt.max_item_seq, "inode_count_delta": inode_count_delta,
            "srch_file": net.srch_file_to_wire(lt.srch_file),
        })

    async def get_roots(self) -> tuple[fmt.BtreeRoot, list[dict]]:
        """Stable roots as of the server's last commit: (fs_root, logs), each log a dict
        {rid, nr, item_root (BtreeRoot), max_item_seq, flags}."""
        r = await self._request(Cmd.GET_ROOTS)
        logs = [{"rid": int(lt["rid"]), "nr": int(lt["nr"]),
                 "item_root": net.root_from_wire(lt["item_root"]),
                 "max_item_seq": int(lt["max_item_seq"]), "flags": int(lt["flags"]),
                 "merged": (net.key_from_wire(lt["merged"]) if lt.get("merged") is not None
                            else None)}
                for lt in r["logs"]]
        return net.root_from_wire(r["fs_root"]), logs

    async def get_srch_roots(self) -> tuple[fmt.BtreeRoot, list[fmt.SrchFile]]:
        """The stable srch_root and every log tree's committed srch log file (fs/srch.py)."""
        r = await self._request(Cmd.GET_ROOTS)
        root = net.root_from_wire(r["srch_root"]) if "srch_root" in r else fmt.EMPTY_ROOT
        return root, [net.srch_file_from_wire(lt.get("srch_file")) for lt in r["logs"]]

    async def srch_get_compact(self) -> dict:
        """SRCH_GET_COMPACT: a compaction to do ({} when there is none)."""
        return await self._request(Cmd.SRCH_GET_COMPACT) or {}

    async def srch_commit_compact(self, p: dict) -> None:
        await self._request(Cmd.SRCH_COMMIT_COMPACT, p)

    async def get_last_seq(self) -> int:
        r = await self._request(Cmd.GET_LAST_SEQ)
        return int(r["last_seq"])

    async def statfs(self) -> dict[str, int]:
        """{total_meta_blocks, free_meta_blocks, total_data_blocks, free_data_blocks,
        inode_count, next_ino}; free counts include pending and lent space."""
        r = await self._request(Cmd.STATFS)
        return {k: int(v) for k, v in r.items()}

    async def lock_request(self, key: fmt.Key, old_mode: int, new_mode: int,
                           write_seq: int) -> dict:
        """Ask for a lock mode; returns the grant {key, mode, write_seq} once made."""
        r = await self._request(Cmd.LOCK, {"key": list(key), "old_mode": old_mode,
                                           "new_mode": new_mode, "write_seq": write_seq})
        return {"key": net.key_from_wire(r["key"]), "mode": int(r["mode"]),
                "write_seq": int(r["write_seq"])}

    async def open_ino_map(self, group: int) -> int:
        """OPEN_INO_MAP (spec §4.5): the OR of every other mount's open map of an inode
        group, as an int (bit i: inode group * 1024 + i).  The server answers once lock
        recovery is done and every other mounted rid answered or was reclaimed."""
        from fs import omap

        r = await self._request(Cmd.OPEN_INO_MAP, {"group": group})
        return omap.from_wire(r["bits"])

    async def farewell(self, gone: Callable[[], bool] | None = None) -> None:
        """Clean unmount: the server reclaims this mount (its log tree is finalized and
        merged, its locks dropped) before replying.  Survives reconnects: if the reply was
        lost, the next greeting learns that the rid is gone, which completes it.  `gone()`
        says whether our mounted_clients item left the super on disk (spec §2.3): when the
        server that reclaimed us is gone too and no quorum remains to elect another, that
        is how a lost reply still completes the farewell; polled while we wait."""
        self.farewell_started = True
        async with trio.open_nursery() as nursery:
            if gone is not None:
                nursery.start_soon(self._watch_gone, gone, nursery.cancel_scope)
            await self._farewell_requests()
            nursery.cancel_scope.cancel()
        self.farewell_done = True

    async def _watch_gone(self, gone: Callable[[], bool], scope: trio.CancelScope) -> None:
        while True:
            await trio.sleep(FAREWELL_GONE_POLL_S)
            if gone():
                log.info("client %016x: our mounted_clients item is gone: farewell done",
                         self.rid)
                scope.cancel()
                return

    async def _farewell_requests(self) -> None:
        while True:
            try:
                conn = await self._wait_conn()
            except _RidGone:
                return
            try:
                await conn.request(Cmd.FAREWELL, {"rid": self.rid})
                return
            except ConnectionLost:
                if self.closed:
                    raise FsError(errno.ENOTCONN, "client closed") from None
                self.counters.inc("client_resend")

    # ------------------------------------------------------------------ server requests

    def set_invalidate_handler(self, fn: InvalidateHandler,
                               note: Callable[[fmt.Key], None] | None = None) -> None:
        """`await fn(key, new_mode, old_mode)` serves the server's invalidation of the lock
        starting at key; the response goes back when it returns.  `note(key)` is called
        synchronously as each invalidation arrives, before it waits its turn behind earlier
        ones of the same lock (LockClient.note_invalidation: a request whose grant crosses
        an invalidation needs to know one is coming)."""
        self._invalidate = fn
        self._note_invalidation = note

    def _lock_order(self, p: dict) -> tuple:
        key = tuple(p["key"])
        if self._note_invalidation is not None:
            self._note_invalidation(net.key_from_wire(p["key"]))
        return key

    def set_recover_handler(self, fn: RecoverHandler) -> None:
        """`fn()` returns the locks this mount holds for a new server's LOCK_RECOVER:
        a list of {"key": Key, "mode": int, "write_seq": int} (LockClient.recover_entries;
        an awaitable result is awaited)."""
        self._recover = fn

    def set_sync_log_trees_handler(self, fn: Callable[[], Awaitable[Any]]) -> None:
        """`await fn()` commits the open transaction (SYNC_LOG_TREES, coordinated
        finalize)."""
        self._sync_log_trees = fn

    def set_omap_handler(self, fn: Callable[[int], int]) -> None:
        """`fn(group)` returns this mount's open map of an inode group (synchronously: the
        answer never waits for a lock, fs/omap.py)."""
        self._omap = fn

    async def _on_open_ino_map(self, p: dict) -> dict:
        from fs import omap

        bits = self._omap(int(p["group"])) if self._omap is not None else 0
        return {"bits": omap.to_wire(bits)}

    async def _on_lock(self, p: dict) -> dict:
        key = net.key_from_wire(p["key"])
        new_mode = int(p["new_mode"])
        if self._invalidate is not None:
            await self._invalidate(key, new_mode, int(p.get("old_mode", new_mode)))
        return {"key": list(key), "mode": new_mode}

    async def _on_lock_recover(self, p: dict) -> dict:
        """One page of our locks, in key order, after `start` (exclusive); a page shorter
        than `nr` is the last."""
        entries: Any = self._recover() if self._recover is not None else []
        if inspect.isawaitable(entries):
            entries = await entries
        nr = int(p.get("nr") or RECOVER_PAGE)
        start = p.get("start")
        start_key = net.key_from_wire(start) if start is not None else None
        out = []
        for e in sorted(entries, key=lambda e: tuple(e["key"])):
            key = tuple(e["key"])
            if start_key is not None and key <= start_key:
                continue
            out.append({"key": list(key), "mode": int(e["mode"]),
                        "write_seq": int(e.get("write_seq", 0))})
            if len(out) >= nr:
                break
        return {"locks": out}

    async def _on_sync_log_trees(self, p: Any) -> dict:
        if self._sync_log_trees is not None:
            await self._sync_log_trees()
        return {}
