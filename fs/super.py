"""One mount's in-process stack: devices, server (when this mount leads), client, locks, item
cache, transaction and the Filesystem, assembled in order and torn down in reverse.

This is scoutfs's fill_super/put_super: `Mount.open` is what the daemon (fs/mount.py) and
the in-process tests both call.  It does not know about FUSE.

Shutdown order: stop taking new work, commit, say farewell to the server, stop the server
(if ours), close the devices.  Background tasks (commit timer, deletion worker, server) run
in a nursery the mount owns, cancelled last.
"""

from __future__ import annotations

import errno
import logging
import secrets
from typing import Any

import trio

from fs.block import Device, MetaBlocks, read_super
from fs.context import MountContext
from fs.counters import Counters
from fs.errors import FsError
from fs.forest import Forest, Roots
from fs.item import ItemCache
from fs.lock import LockClient
from fs.trans import Trans

log = logging.getLogger(__name__)

INO_ALLOC_BATCH = 1024


class InoAllocator:
    """Hands out inode numbers from ranges the server grants (ALLOC_INODES)."""

    def __init__(self, client, batch: int) -> None:
        self.client = client
        self.batch = batch
        self.next = 0
        self.end = 0
        self._lock = trio.Lock()

    async def alloc(self) -> int:
        async with self._lock:
            if self.next >= self.end:
                first, nr = await self.client.alloc_inodes(self.batch)
                self.next, self.end = first, first + nr
            ino = self.next
            self.next += 1
            return ino


class Mount:
    """A mounted volume in this process."""

    def __init__(self) -> None:
        self.counters = Counters()
        self.options: dict[str, Any] = {}
        self.server = None
        self.client = None
        self.fs = None
        self.closed = False

    @classmethod
    async def open(cls, meta_path: str, data_path: str, options: dict[str, Any],
                   nursery: trio.Nursery, *, meta_dev=None, data_dev=None,
                   connect=None) -> Mount:
        """Assemble the mount.  `meta_dev`/`data_dev` (already open devices) and `connect`
        (an async function returning a connected Client) let tests run in memory."""
        self = cls()
        self.options = dict(options)
        self.nursery = nursery
        self.meta_dev = meta_dev or Device(meta_path)
        self.data_dev = data_dev or Device(data_path)
        try:
            await self._open(connect)
        except BaseException:
            self._close_devices()
            raise
        return self

    async def _open(self, connect) -> None:
        sb = read_super(self.meta_dev)
        self.sb = sb
        self.fsid = sb.fsid
        self.rid = secrets.randbits(64) or 1
        cache_blocks = int(self.options.get("cache_blocks", 1024))
        # parsed nodes cost several times their 64 KiB: keep a quarter as many
        self.meta_blocks = MetaBlocks(self.meta_dev, sb.fsid, cache_blocks,
                                      parsed_blocks=max(16, cache_blocks // 4))
        from fs.client import Client
        from fs.server import Server

        slot = self.options.get("quorum_slot_nr")
        if connect is None:
            if slot is not None:
                if int(slot) not in sb.quorum_slots:
                    raise FsError(errno.EINVAL, f"quorum_slot_nr {slot} not configured by mkfs")
                # Until elections exist (the cluster issue), a quorum member leads.
                q = sb.quorum_slots[int(slot)]
                # the server keeps its own block cache, within the same cache_blocks limit
                self.server = Server(self.meta_dev, self.data_dev, self.counters,
                                     cache_blocks=cache_blocks)
                await self.nursery.start(self.server.serve_tcp, q.addr, q.port)
                addr, port = q.addr, q.port
            else:
                q = sb.quorum_slots[min(sb.quorum_slots)]
                addr, port = q.addr, q.port
            self.client = await Client.connect_tcp(addr, port, fsid=sb.fsid, rid=self.rid,
                                                   fmt_vers=sb.fmt_vers,
                                                   quorum=slot is not None,
                                                   nursery=self.nursery)
        else:
            self.client = await connect(self)

        self.locks = LockClient(self.client.lock_request)
        self.forest = Forest(self.meta_blocks, self._get_roots)
        self.trans: Trans | None = None
        self.items = ItemCache(self.forest, lambda: self.trans.seq,
                               int(self.options.get("item_cache_items", 100_000)))
        self.trans = Trans(self.client, self.items, self.meta_blocks, self.meta_dev,
                           self.data_dev, self.forest, self.counters)
        await self.trans.start()
        self.locks.on_invalidate = self._on_invalidate
        self.locks.on_grant = self.forest.refresh
        self.client.set_invalidate_handler(self.locks.invalidate)
        self.inos = InoAllocator(self.client, int(self.options.get("ino_alloc_per_lock",
                                                                   INO_ALLOC_BATCH)))
        self.mctx = MountContext(
            items=self.items, locks=self.locks, trans=self.trans, data_dev=self.data_dev,
            alloc_ino=self.inos.alloc, statfs=self.client.statfs, fmt_vers=self.sb.fmt_vers,
            fsid=self.fsid, rid=self.rid, options=self.options, counters=self.counters,
        )
        from fs.filesystem import Filesystem

        self.fs = Filesystem(self.mctx)
        self.nursery.start_soon(self.trans.run)
        self.nursery.start_soon(self.fs.run)
        log.info("mounted fsid %016x rid %016x", self.fsid, self.rid)

    async def _get_roots(self) -> Roots:
        fs_root, logs = await self.client.get_roots()
        return Roots(fs_root, [lt["item_root"] for lt in logs])

    async def _on_invalidate(self, lock, old_mode: int, new_mode: int) -> None:
        """The lock is being weakened: commit what it dirtied, drop what it covered."""
        from fs.lock import LOCK_READ, LOCK_WRITE, LOCK_WRITE_ONLY

        if old_mode in (LOCK_WRITE, LOCK_WRITE_ONLY) and lock.dirty_trans_seq == self.trans.seq:
            await self.trans.commit()
        if not (old_mode == LOCK_WRITE and new_mode == LOCK_READ):
            self.items.invalidate_range(lock.start, lock.end)

    async def sync(self) -> None:
        await self.trans.sync()

    async def close(self) -> None:
        """Commit, say farewell, stop the server and close the devices."""
        if self.closed:
            return
        self.closed = True
        try:
            if self.fs is not None:
                await self.fs.drain_deletions()
            if self.trans is not None:
                await self.trans.sync()
                self.trans.closed = True
            if self.client is not None:
                await self.client.farewell()
                await self.client.close()
            if self.server is not None:
                await self.server.shutdown()
        finally:
            self._close_devices()
            log.info("unmounted fsid %016x rid %016x", self.fsid, self.rid)

    def _close_devices(self) -> None:
        for dev in (getattr(self, "meta_dev", None), getattr(self, "data_dev", None)):
            if dev is not None:
                try:
                    dev.close()
                except OSError:
                    pass

