"""The client side of messaging: one mount's typed calls to the server.

Owns the mount's connection to the server, its GREETING (with the mount's rid, a random u64
per mount instance), the typed request methods the items layer uses, and dispatching the
server's requests to the mount (lock invalidations, SYNC_LOG_TREES).

Every method raises `FsError` on failure: the server's errno, or ENOTCONN when the
connection is lost (reconnect and resend come with the cluster issue).

Concurrency: methods may be called from any number of tasks at once; each is one request
awaiting its response.  Invalidations from the server run in their own task, one at a time
per lock key in arrival order (the handler may await commits; it must not await the
kernel).
"""

from __future__ import annotations

import errno
import logging
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from fs import format as fmt
from fs import net
from fs.errors import FsError
from fs.net import Cmd, Connection

log = logging.getLogger(__name__)

InvalidateHandler = Callable[[fmt.Key, int], Awaitable[None]]


class Client:
    """A mount's connection to the server.  Build with `connect_tcp` or `connect_stream`."""

    def __init__(self, *, fsid: int, fmt_vers: int, rid: int | None = None,
                 quorum: bool = False) -> None:
        self.fsid = fsid
        self.fmt_vers = fmt_vers
        self.rid = rid if rid else (secrets.randbits(64) or 1)
        self.quorum = quorum
        self.server_term = 0
        self.conn: Connection | None = None
        self._invalidate: InvalidateHandler | None = None
        self._sync_log_trees: Callable[[], Awaitable[None]] | None = None
        self.farewell_done = False

    # ------------------------------------------------------------------ connecting

    @classmethod
    async def connect_tcp(cls, addr: str, port: int, *, fsid: int, fmt_vers: int,
                          nursery: trio.Nursery, rid: int | None = None,
                          quorum: bool = False) -> Client:
        """Connect to the server at a quorum slot's address and greet it."""
        stream = await net.open_tcp(addr, port)
        return await cls.connect_stream(stream, fsid=fsid, fmt_vers=fmt_vers, nursery=nursery,
                                        rid=rid, quorum=quorum)

    @classmethod
    async def connect_stream(cls, stream: trio.abc.Stream, *, fsid: int, fmt_vers: int,
                             nursery: trio.Nursery, rid: int | None = None,
                             quorum: bool = False) -> Client:
        """Greet the server over an already connected stream (memory streams in tests);
        the receive loop runs in `nursery`."""
        self = cls(fsid=fsid, fmt_vers=fmt_vers, rid=rid, quorum=quorum)
        await self.attach(stream, nursery)
        return self

    async def attach(self, stream: trio.abc.Stream, nursery: trio.Nursery) -> None:
        conn = Connection(stream, name=f"client {self.rid:016x}")
        conn.register(Cmd.LOCK, self._on_lock, order=lambda p: tuple(p["key"]))
        conn.register(Cmd.SYNC_LOG_TREES, self._on_sync_log_trees)
        await nursery.start(conn.run)
        self.conn = conn
        try:
            await self.greet()
        except BaseException:
            await conn.aclose()
            raise

    async def greet(self) -> dict:
        flags = net.GREETING_FLAG_QUORUM if self.quorum else 0
        reply = await self._request(Cmd.GREETING, {"fsid": self.fsid, "fmt_vers": self.fmt_vers,
                                                   "rid": self.rid, "flags": flags})
        if int(reply["rid"]) != self.rid or int(reply["fmt_vers"]) != self.fmt_vers:
            raise FsError(errno.EINVAL, f"bad greeting reply {reply!r}")
        self.server_term = int(reply["server_term"])
        return reply

    async def close(self) -> None:
        if self.conn is not None:
            await self.conn.aclose()

    async def _request(self, cmd: Cmd, payload: Any = None) -> Any:
        if self.conn is None:
            raise FsError(errno.ENOTCONN, "not connected")
        return await self.conn.request(cmd, payload)

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
        After it the old avail must not be used: get_log_trees() hands out the next."""
        await self._request(Cmd.COMMIT_LOG_TREES, {
            "rid": self.rid, "nr": lt.nr, "item_root": net.root_to_wire(lt.item_root),
            "meta_avail": [list(e) for e in lt.meta_avail],
            "data_avail": [list(e) for e in lt.data_avail],
            "meta_freed": [list(e) for e in meta_freed],
            "data_freed": [list(e) for e in data_freed],
            "max_item_seq": lt.max_item_seq, "inode_count_delta": inode_count_delta,
        })

    async def get_roots(self) -> tuple[fmt.BtreeRoot, list[dict]]:
        """Stable roots as of the server's last commit: (fs_root, logs), each log a dict
        {rid, nr, item_root (BtreeRoot), max_item_seq, flags}."""
        r = await self._request(Cmd.GET_ROOTS)
        logs = [{"rid": int(lt["rid"]), "nr": int(lt["nr"]),
                 "item_root": net.root_from_wire(lt["item_root"]),
                 "max_item_seq": int(lt["max_item_seq"]), "flags": int(lt["flags"])}
                for lt in r["logs"]]
        return net.root_from_wire(r["fs_root"]), logs

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

    async def farewell(self) -> None:
        """Clean unmount: the server reclaims this mount (its log tree is finalized and
        merged, its locks dropped) before replying."""
        await self._request(Cmd.FAREWELL, {"rid": self.rid})
        self.farewell_done = True

    # ------------------------------------------------------------------ server requests

    def set_invalidate_handler(self, fn: InvalidateHandler) -> None:
        """`await fn(key, new_mode)` serves the server's invalidation of the lock starting
        at key; the response goes back when it returns."""
        self._invalidate = fn

    def set_sync_log_trees_handler(self, fn: Callable[[], Awaitable[None]]) -> None:
        """`await fn()` commits the open transaction (SYNC_LOG_TREES, coordinated
        finalize)."""
        self._sync_log_trees = fn

    async def _on_lock(self, p: dict) -> dict:
        key = net.key_from_wire(p["key"])
        new_mode = int(p["new_mode"])
        if self._invalidate is not None:
            await self._invalidate(key, new_mode)
        return {"key": list(key), "mode": new_mode}

    async def _on_sync_log_trees(self, p: Any) -> dict:
        if self._sync_log_trees is not None:
            await self._sync_log_trees()
        return {}
