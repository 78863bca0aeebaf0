"""The one open transaction of a mount, and its commit into the mount's log tree.

Writers *hold* the open transaction while they change items; a commit waits until nobody
holds it and keeps new holders out until it is done.  Commit order (spec §1.8):

1. data writes reach the data device (flush),
2. the dirty items go into new blocks of this mount's log tree (copy-on-write into lent
   space), the transaction's `.srch.` entries are appended to its srch log file
   (fs/srch.py), and those blocks reach the meta device,
3. COMMIT_LOG_TREES: the server records the new root and writes the super before replying,
4. the cache is marked clean,
5. GET_LOG_TREES opens the next transaction with a new seq and refilled allocators.

A crash before step 3 completes leaves the previous root in the super: the new blocks were
in lent space, which the server still records as lent, so nothing leaks and nothing
half-written is visible.

Commit triggers: fsync and `scoutfs sync` (`sync`), the timer (`run`), the dirty-item
limit and low lent space (`hold`), invalidation of a lock that dirtied this transaction
(fs/super.py), unmount.

Concurrency rules:
- Holders never wait for a lock while holding (lock order ends with the hold), and never
  nest holds: a commit waits for every holder to leave.
- Only one commit runs at a time (`_commit_lock`); the item writes of a commit happen with no
  holder inside, so the dirty set it writes is exactly the transaction.
- The commit awaits the server with no holder inside and holds no cluster lock.
- A forced unmount abandons the transaction (`abandon`): no commit starts after it and a
  commit in flight stops at its next step; `quiesce` returns when none runs, so the mount
  closes its devices under no commit (a commit's device flush runs in a thread).
"""

from __future__ import annotations

import errno
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

from fs import format as fmt
from fs import totl
from fs.alloc import DataAlloc, MetaAlloc
from fs.btree import Btree
from fs.errors import FsError
from fs.kmsg import KMSG
from fs.srch import SrchLog

log = logging.getLogger(__name__)

COMMIT_INTERVAL_S = 10.0  # scoutfs commits a dirty transaction every 10 s
DIRTY_ITEMS_LIMIT = 20_000  # commit before the dirty item set grows past this
META_RESERVE_BLOCKS = 64  # commit before lent meta space runs this low


class Trans:
    def __init__(self, client, items, meta_blocks, meta_dev, data_dev, forest,
                 counters, *, dirty_limit: int = DIRTY_ITEMS_LIMIT) -> None:
        self.client = client
        self.items = items
        self.meta_blocks = meta_blocks
        self.meta_dev = meta_dev
        self.data_dev = data_dev
        self.forest = forest
        self.counters = counters
        self.dirty_limit = dirty_limit
        self.seq = 0
        self.lt: fmt.LogTrees | None = None
        self.meta_alloc: MetaAlloc | None = None
        self.data_alloc: DataAlloc | None = None
        self.commit_gen = 0
        self._holders = 0
        self._committing = False
        self._wake = trio.Event()
        self._commit_lock = trio.Lock()
        self._refill_tried_seq = -1
        self._data_written = False
        self.srch_log = SrchLog(counters)  # .srch. entries of the open transaction
        self.closed = False
        self.abandoned = False

    def _notify(self) -> None:
        self._wake.set()
        self._wake = trio.Event()

    def _begin(self, lt: fmt.LogTrees) -> None:
        self.lt = lt
        self.seq = lt.get_trans_seq
        self.meta_alloc = MetaAlloc(lt.meta_avail)
        self.data_alloc = DataAlloc(lt.data_avail)

    async def start(self) -> None:
        self._begin(await self.client.get_log_trees())

    # ------------------------------------------------------------- holding

    def _meta_low(self) -> bool:
        need = META_RESERVE_BLOCKS + self.items.dirty_bytes // (fmt.META_BLOCK_SIZE // 4)
        return self.meta_alloc.avail.total < need

    @asynccontextmanager
    async def hold(self, data_blocks: int = 0) -> AsyncIterator[None]:
        while True:
            if self.closed:
                raise FsError(errno.EROFS, "unmounting")
            if self._committing:
                await self._wake.wait()
                continue
            if self.items.nr_dirty >= self.dirty_limit or self._meta_low():
                await self.commit()
                continue
            if data_blocks and self.data_alloc.avail.total < data_blocks:
                # the server lends a share of its free space per transaction: commit and
                # refill until the lent space covers the request, and fail only when a
                # refill brought nothing more
                before = self.data_alloc.avail.total
                if self._refill_tried_seq == self.seq:
                    raise FsError(errno.ENOSPC)
                await self.commit(force=True)
                if self.data_alloc.avail.total <= before:
                    self._refill_tried_seq = self.seq
                continue
            break
        self._holders += 1
        try:
            yield
        finally:
            self._holders -= 1
            if self._holders == 0:
                self._notify()

    def note_data_written(self) -> None:
        """Data blocks were written in place: the next commit must flush the data device."""
        self._data_written = True

    # ------------------------------------------------------------- committing

    def _dirty(self) -> bool:
        return bool(self.items.nr_dirty or self.srch_log.pending or self.meta_alloc.freed.total
                    or self.data_alloc.freed.total or self._data_written)

    async def sync(self) -> None:
        """Commit the open transaction if it changed anything, and wait for it."""
        await self.commit()

    async def commit(self, force: bool = False) -> None:
        async with self._commit_lock:
            self._check_abandoned()
            if not force and not self._dirty():
                return
            self._committing = True
            try:
                while self._holders:
                    await self._wake.wait()
                    self._check_abandoned()
                await self._commit_locked()
            finally:
                self._committing = False
                self._notify()

    def _check_abandoned(self) -> None:
        if self.abandoned:
            raise FsError(errno.ENOTCONN, "transaction abandoned (forced unmount)")

    def abandon(self) -> None:
        """Forced unmount: drop the open transaction; no commit starts after this."""
        self.closed = True
        self.abandoned = True
        self._notify()  # a commit waiting for holders stops now

    async def quiesce(self) -> None:
        """After `abandon` and the client's close (which fails a commit's RPC): return once
        the commit in flight, if any, has stopped."""
        async with self._commit_lock:
            pass

    async def _commit_locked(self) -> None:
        lt = self.lt
        # 1. data reaches the data device before any item that refers to it
        if self._data_written:
            await trio.to_thread.run_sync(self.data_dev.flush)
            self._data_written = False
        self._check_abandoned()
        # 2. dirty items into the log tree's copy-on-write blocks
        dirty = self.items.dirty_items()
        root = lt.item_root
        if dirty:
            tree = Btree(self.meta_blocks, lt.item_root)
            tree.begin(self.seq, self.meta_alloc.alloc, self.meta_alloc.free)
            max_seq = lt.max_item_seq
            for key, item in dirty:
                if key[0] == fmt.ZONE_XATTR_TOTL:
                    # a delta adds to what this tree holds already (fs/totl.py)
                    item = totl.combine_in_tree(tree, key, item)
                    if item is None:
                        continue
                tree.insert(key, item)
                max_seq = max(max_seq, item.seq)
            root = tree.flush()
            lt.max_item_seq = max_seq
        # the srch entries of the transaction go into its log file, in the same commit
        srch_file = self.srch_log.write(self.meta_blocks, lt.srch_file, self.seq,
                                        self.meta_alloc)
        if dirty or srch_file != lt.srch_file:
            await trio.to_thread.run_sync(self.meta_dev.flush)
            self._check_abandoned()
        lt.srch_file = srch_file
        lt.item_root = root
        lt.meta_avail = self.meta_alloc.avail.extents()
        lt.data_avail = self.data_alloc.avail.extents()
        # 3. the server records the root and writes the super before replying
        delay = 0.05
        while True:
            try:
                await self.client.commit_log_trees(lt, self.meta_alloc.freed.extents(),
                                                   self.data_alloc.freed.extents())
                break
            except FsError as e:
                # the client resends across reconnects itself: an error here is the
                # server's answer, or the client gave up (unmounting, or fenced)
                self._check_abandoned()
                gone = self.closed or getattr(self.client, "closed", False) or \
                    getattr(self.client, "dead", False)
                if gone and e.errno in (errno.ENOTCONN, errno.EPIPE, errno.ENOLINK):
                    raise
                log.warning("commit of seq %d failed (%s), retrying", self.seq, e)
                await trio.sleep(delay)
                delay = min(delay * 2, 2.0)
        # 4. clean
        self.items.mark_clean()
        self.commit_gen += 1
        self.counters.inc("trans_commit")
        self.forest.refresh()
        # 5. the next transaction
        self._begin(await self.client.get_log_trees())

    async def run(self) -> None:
        """Commit a dirty transaction every COMMIT_INTERVAL_S (the scoutfs timer)."""
        while not self.closed:
            await trio.sleep(COMMIT_INTERVAL_S)
            if self._dirty():
                try:
                    await self.commit()
                except FsError as e:
                    if self.abandoned:
                        return
                    log.error("timed commit failed: %s", e, extra=KMSG)
