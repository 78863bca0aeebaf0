"""One mount's in-process stack: devices, quorum membership (with the server while this mount
leads), client, locks, item cache, transaction and the Filesystem, assembled in order and torn
down in reverse.

This is scoutfs's fill_super/put_super: `Mount.open` is what the daemon (fs/mount.py) and
the in-process tests both call.  It does not know about FUSE.

Open order: read the super; join the quorum (fs/quorum.py: elections run in their own task, and
winning one starts a Server on our slot's address); connect the client to whichever server the
quorum blocks name (waiting until there is one); then locks, items, transaction, Filesystem.

Shutdown order: stop taking new work, commit, say farewell to the server, leave the quorum
(stopping our server if we lead), close the devices.  A forced unmount skips the commit and the
farewell.  Background tasks (commit timer, deletion worker, quorum, server) run in a nursery the
mount owns, cancelled last.

Concurrency: lock invalidation (`_on_invalidate`) commits, drops cached items and queues kernel
notifications, waiting for those at most NOTIFY_WAIT_S; it never takes a cluster lock or waits on
an inode release.
"""

from __future__ import annotations

import errno
import logging
import secrets
from collections.abc import Container
from typing import Any

import trio

from fs import format as fmt
from fs.block import Device, MetaBlocks, read_super
from fs.btree import Btree
from fs.context import MountContext
from fs.counters import Counters
from fs.errors import FsError, StaleBlock
from fs.forest import Forest, Roots
from fs.item import ItemCache
from fs.kmsg import KMSG
from fs.lock import LockClient
from fs.omap import Omap
from fs.orphan import OrphanScanner
from fs.trans import Trans
from fs.triggers import Triggers

log = logging.getLogger(__name__)

INO_ALLOC_BATCH = 1024
NOTIFY_WAIT_S = 1.0  # longest an invalidation waits for its kernel cache notifications
LOCATE_POLL_S = 0.1  # how often a mount looks for the elected server in the quorum blocks
# our own server failing to start this many times in a row on corrupt metadata (EIO) ends
# the mount with that reason: every member reads the same metadata, so waiting cannot help
# (once when ours is the only quorum slot: no other member could start one)
START_FAILURES_REFUSE = 2
# sysfs mount_options that may change at runtime (spec §6.2); others are read-only
RUNTIME_OPTIONS = frozenset({
    "data_prealloc_blocks", "data_prealloc_contig_only", "orphan_scan_delay_ms",
    "quorum_heartbeat_timeout_ms", "ino_alloc_per_lock", "lock_idle_count",
    "log_merge_wait_timeout_ms",
})


class InoAllocator:
    """Hands out inode numbers from ranges the server grants (ALLOC_INODES), using at most
    `per_lock` numbers of each 1024-inode lock group (mount option ino_alloc_per_lock): a
    smaller value spreads new inodes over more groups, so fewer creates share a lock."""

    def __init__(self, client, per_lock: int) -> None:
        self.client = client
        self.per_lock = per_lock
        self.next = 0
        self.end = 0
        self._lock = trio.Lock()

    async def alloc(self) -> int:
        async with self._lock:
            while True:
                if self.next >= self.end:
                    first, nr = await self.client.alloc_inodes(INO_ALLOC_BATCH)
                    self.next, self.end = first, first + nr
                ino = self.next
                if ino % fmt.LOCK_GROUP_NR >= self.per_lock:
                    self.next = fmt.lock_group_first(ino) + fmt.LOCK_GROUP_NR
                    continue
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
        self.quorum = None
        self.closed = False
        self.forced = False  # umount -f: leave without commit or farewell
        self.notifier = None  # fs.vfs.Notifier, set by the daemon
        self.kernel_inodes: Container[int] = ()  # inos the kernel holds (the daemon sets it)
        self.open_inodes: Container[int] = ()  # inos open here (the daemon sets it)

    @classmethod
    async def open(cls, meta_path: str, data_path: str, options: dict[str, Any],
                   nursery: trio.Nursery, *, meta_dev=None, data_dev=None,
                   connect=None, on_created=None) -> Mount:
        """Assemble the mount.  `meta_dev`/`data_dev` (already open devices) and `connect`
        (an async function returning a connected Client) let tests run in memory.
        `on_created(mount)` is called as soon as the mount knows its fsid and rid, before
        it waits for a quorum: the daemon serves its control socket from then on, so the
        sysfs view shows a starting server's fence requests."""
        self = cls()
        self._on_created = on_created
        self.options = dict(options)
        self.nursery = nursery
        self.meta_dev = meta_dev or Device(meta_path)
        self.data_dev = data_dev or Device(data_path)
        try:
            await self._open(connect)
        except BaseException:
            await self._stop_quorum_after_failed_open()
            self._close_devices()
            raise
        return self

    async def _stop_quorum_after_failed_open(self) -> None:
        """A mount refused or interrupted while it waited: leave the quorum (stopping a
        server we may have started) before the devices close under its tasks."""
        with trio.CancelScope(shield=True):
            if self.quorum is not None:
                with trio.move_on_after(10) as scope:
                    await self.quorum.shutdown()
                if scope.cancelled_caught:
                    await self.quorum.abandon()
            if self.server is not None:
                await self.server.stop()

    async def _open(self, connect) -> None:
        sb = read_super(self.meta_dev)
        self.sb = sb
        self.fsid = sb.fsid
        self.rid = secrets.randbits(64) or 1
        self.triggers = Triggers()
        self.quorum = None
        if self._on_created is not None:
            self._on_created(self)
        self.cache_blocks = int(self.options.get("cache_blocks", 1024))
        # parsed nodes cost several times their 64 KiB: keep a quarter as many
        self.meta_blocks = MetaBlocks(self.meta_dev, sb.fsid, self.cache_blocks,
                                      parsed_blocks=max(16, self.cache_blocks // 4))
        from fs.client import Client

        slot = self.options.get("quorum_slot_nr")
        if connect is None:
            if slot is not None:
                await self._start_quorum(int(slot))
            self.client = Client(fsid=sb.fsid, fmt_vers=sb.fmt_vers, rid=self.rid,
                                 quorum=slot is not None, locate=self._locate,
                                 counters=self.counters)
            await self.client.start(self.nursery)
        else:
            self.client = await connect(self)

        self.locks = LockClient(self.client.lock_request, self.counters)
        self.locks.idle_count = int(self.options.get("lock_idle_count", 10000))
        self.locks.start(self.nursery)
        self.forest = Forest(self.meta_blocks, self._get_roots)
        self.trans: Trans | None = None
        self.items = ItemCache(self.forest, lambda: self.trans.seq,
                               int(self.options.get("item_cache_items", 100_000)))
        self.trans = Trans(self.client, self.items, self.meta_blocks, self.meta_dev,
                           self.data_dev, self.forest, self.counters)
        await self.trans.start()
        self.locks.on_invalidate = self._on_invalidate
        self.locks.on_grant = self.forest.refresh
        self.client.set_invalidate_handler(self.locks.invalidate,
                                           note=self.locks.note_invalidation)
        self.client.set_recover_handler(self.locks.recover_entries)
        self.client.set_sync_log_trees_handler(lambda: self.trans.commit(force=True))
        self.omap = Omap(lambda: self.open_inodes)
        self.client.set_omap_handler(self.omap.group_bits)
        self.inos = InoAllocator(self.client, int(self.options.get("ino_alloc_per_lock",
                                                                   INO_ALLOC_BATCH)))
        self.mctx = MountContext(
            items=self.items, locks=self.locks, trans=self.trans, data_dev=self.data_dev,
            alloc_ino=self.inos.alloc, statfs=self._statfs, fmt_vers=self.sb.fmt_vers,
            fsid=self.fsid, rid=self.rid, options=self.options, counters=self.counters,
            drop_pages=self._drop_pages,
            last_seq=self.client.get_last_seq, triggers=self.triggers,
            forest=self.forest, omap=self.omap, open_ino_map=self.client.open_ino_map,
        )
        from fs.filesystem import Filesystem

        self.fs = Filesystem(self.mctx)
        self.nursery.start_soon(self.trans.run)
        self.nursery.start_soon(self.fs.run)
        from fs.srch import Srch

        self.srch = Srch(self.client, self.meta_blocks, self.meta_dev, self.counters,
                         self.triggers)  # search and compaction of .srch. files
        self.nursery.start_soon(self.srch.run)
        self.scanner = OrphanScanner(self.fs, self.meta_blocks, self._fs_root, self.options,
                                     self.counters)
        self.nursery.start_soon(self.scanner.run)
        log.info("mounted fsid %016x rid %016x", self.fsid, self.rid, extra=KMSG)

    # ------------------------------------------------------------------ quorum and server

    async def _start_quorum(self, slot: int) -> None:
        from fs.quorum import QuorumMember, TrioUdp

        if slot not in self.sb.quorum_slots:
            raise FsError(errno.EINVAL, f"quorum_slot_nr {slot} not configured by mkfs")
        transport = TrioUdp(self.sb.quorum_slots, slot)
        await transport.bind()
        self.quorum = QuorumMember(
            meta_dev=self.meta_dev, fsid=self.fsid, slots=self.sb.quorum_slots, slot=slot,
            rid=self.rid,
            heartbeat_timeout_ms=int(self.options.get("quorum_heartbeat_timeout_ms", 10000)),
            transport=transport, start_server=self._start_server,
            stop_server=self._stop_server, counters=self.counters)
        await self.nursery.start(self.quorum.run)

    async def _locate(self) -> tuple[str, int]:
        """The elected server's address from the quorum blocks; waits until there is one
        (a mount that cannot reach a quorum waits here, and can be killed meanwhile)."""
        from fs.quorum import find_server

        start = trio.current_time()
        next_note = 5.0  # said after 5 s and every 30 s after that (the mount command shows it)
        while True:
            found = find_server(self.meta_dev, self.fsid, self.sb.quorum_slots)
            if found is not None:
                return found.addr, found.port
            q = self.quorum
            refuse_at = 1 if len(self.sb.quorum_slots) == 1 else START_FAILURES_REFUSE
            if q is not None and q.start_failures >= refuse_at:
                err = q.last_start_error
                from fs.server import ServerFailed

                # not a ServerFailed: earlier leaders not fenced in time is worth waiting on
                if isinstance(err, FsError) and err.errno == errno.EIO and \
                        not isinstance(err, ServerFailed):
                    from fs.client import NoServer

                    raise NoServer(errno.EIO, f"the server cannot start: {err.msg or err}")
            waited = trio.current_time() - start
            if waited >= next_note:
                log.warning("waiting for a quorum to elect a server (%.0fs so far)", waited)
                next_note += 30.0
            await trio.sleep(LOCATE_POLL_S)

    async def _start_server(self, term: int, fence_targets) -> None:
        """We won an election: fence earlier leaders, start the server on our slot's
        address; returns once it listens (quorum.py awaits it in its own task)."""
        from fs.server import Server

        q = self.sb.quorum_slots[int(self.options["quorum_slot_nr"])]
        server = Server(self.meta_dev, self.data_dev, self.counters, term=term,
                        cache_blocks=self.cache_blocks, triggers=self.triggers,
                        log_merge_wait_timeout=int(self.options.get(
                            "log_merge_wait_timeout_ms", 500)) / 1000)
        self.server = server
        try:
            await self.nursery.start(self._run_server, server, q.addr, q.port,
                                     list(fence_targets))
        except BaseException:
            if self.server is server:
                self.server = None
            raise

    async def _run_server(self, server, addr: str, port: int, fence_targets, *,
                          task_status=trio.TASK_STATUS_IGNORED) -> None:
        try:
            await server.serve_tcp(addr, port, fence_targets=fence_targets,
                                   task_status=task_status)
        finally:
            if self.server is server:
                self.server = None
                if self.quorum is not None and not self.closed:
                    self.quorum.server_stopped()

    async def _stop_server(self) -> None:
        """A higher term demoted us: stop serving at once (no farewell, no merge)."""
        server, self.server = self.server, None
        if server is not None:
            await server.stop()

    # ------------------------------------------------------------------ runtime tunables

    def set_option(self, name: str, text: str) -> None:
        """A write to sysfs mount_options/<name>: validate, store and apply, or raise
        FsError(EINVAL) and change nothing."""
        from fs.options import OptionError, validate

        if name not in RUNTIME_OPTIONS:
            raise FsError(errno.EACCES if name in self.options else errno.ENOENT,
                          f"mount option {name} cannot be changed")
        try:
            value = validate(name, text.strip())
        except OptionError as e:
            raise FsError(errno.EINVAL, str(e)) from None
        self.options[name] = value
        if name == "lock_idle_count":
            self.locks.idle_count = int(value)
        elif name == "quorum_heartbeat_timeout_ms" and self.quorum is not None:
            self.quorum.set_heartbeat_timeout_ms(int(value))
        elif name == "orphan_scan_delay_ms":
            self.scanner.delay_changed()
        elif name == "ino_alloc_per_lock":
            self.inos.per_lock = int(value)
        elif name == "log_merge_wait_timeout_ms" and self.server is not None:
            self.server.log_merge_wait_timeout = int(value) / 1000

    async def _statfs(self) -> dict[str, int]:
        if self.triggers.fire("statfs_lock_purge"):
            await self.locks.purge_idle()
        return await self.client.statfs()

    async def _get_roots(self) -> Roots:
        fs_root, logs = await self.client.get_roots()
        return Roots(fs_root, [lt["item_root"] for lt in logs],
                     [lt.get("merged") for lt in logs])

    async def _fs_root(self) -> fmt.BtreeRoot:
        fs_root, _logs = await self.client.get_roots()
        return fs_root

    def _drop_pages(self, ino: int) -> None:
        """Queue the kernel's cached pages of ino to be dropped (release); never awaits."""
        if self.notifier is not None and ino in self.kernel_inodes:
            self.notifier.queue_invalidate_inode(ino)

    async def _on_invalidate(self, lock, old_mode: int, new_mode: int) -> None:
        """The lock is being weakened: commit what it dirtied, drop what it covered, and
        queue (never await) the kernel cache invalidations of the inodes it covers.  Data
        waiters of those inodes are woken (events set, nothing awaited): they retry, which
        asks for the lock again and so waits for the writer (a stage) that wants it."""
        from fs.lock import LOCK_READ, LOCK_WRITE, LOCK_WRITE_ONLY

        waiters = getattr(getattr(self, "mctx", None), "waiters", None)
        if waiters is not None and lock.start[0] == fmt.ZONE_FS:
            waiters.wake_range(lock.start[1], lock.end[1])

        if old_mode in (LOCK_WRITE, LOCK_WRITE_ONLY) and lock.dirty_trans_seq == self.trans.seq:
            await self.trans.commit()
        if old_mode == LOCK_WRITE and new_mode == LOCK_READ:
            return
        self.items.invalidate_range(lock.start, lock.end)
        self.counters.inc("lock_invalidate_drop")
        if lock.start[0] == fmt.ZONE_FS and self.notifier is not None:
            # the kernel's cached pages and attributes of these inodes may be stale once
            # another mount writes: queued to the notifier thread (ARCHITECTURE.md §5)
            known = self.kernel_inodes
            queued = 0
            waiting = getattr(waiters, "by_ino", None) or {}
            for ino in range(lock.start[1], lock.end[1] + 1):
                if ino in known:
                    # a read waiting for offline blocks of ino holds its pages locked: the
                    # page invalidation would stall the notifier's page thread until the
                    # blocks are staged.  Its online pages can't have changed meanwhile
                    # (a write elsewhere would have waited for the offline ones first), so
                    # only its attributes are dropped.
                    self.notifier.queue_invalidate_inode(ino, attr_only=ino in waiting)
                    queued += 1
            # The kernel trusts cached sizes for up to a jiffy even with attr timeouts of
            # 0: once we reply, another mount's append can return before our reader's next
            # read, which must not stop at the old size.  So the reply waits for the queued
            # attribute invalidations (a reader then refetches attributes, and the kernel
            # drops the pages itself when size or mtime changed) and for the page ones too,
            # unless a read or write is in flight here: it holds page locks while it may wait
            # for this very lock, and its pages are dropped once it is done.  Bounded all the
            # same (see Notifier.flush): a stuck notification costs a stall, never a deadlock.
            if queued:
                flushed = await self.notifier.flush(NOTIFY_WAIT_S)
                if flushed == "pages deferred":
                    self.counters.inc("lock_invalidate_pages_deferred")
                elif flushed == "timeout":
                    self.counters.inc("lock_invalidate_notify_timeout")
                    log.warning("kernel cache notifications of %s took over %.1fs: replying",
                                fmt.format_key(lock.start), NOTIFY_WAIT_S)

    async def sync(self) -> None:
        await self.trans.sync()

    def _reclaimed_on_disk(self) -> bool:
        """Whether our mounted_clients item is gone from the super on disk (a fresh read:
        the server of another daemon wrote it)."""
        try:
            sb = read_super(self.meta_dev)
            blocks = MetaBlocks(self.meta_dev, sb.fsid, 16, parsed_blocks=16)
            return Btree(blocks, sb.mounted_clients).lookup(
                fmt.mounted_client_key(self.rid)) is None
        except (FsError, StaleBlock) as e:  # a block rewritten under us: ask again later
            log.debug("reading the super for our farewell: %s", e)
            return False

    async def close(self) -> None:
        """Commit, say farewell, stop the server and close the devices.  After a forced
        unmount (`forced`): no commit and no farewell; the mount vanishes as a crashed one
        would, and the server fences it."""
        if self.closed:
            return
        self.closed = True
        if getattr(self, "srch", None) is not None:
            self.srch.closed = True  # no new compaction
        try:
            if getattr(self, "scanner", None) is not None:
                self.scanner.stop()
            if self.forced:
                log.warning("forcing unmount, can return errors and lose unwritten data",
                            extra=KMSG)
                if self.trans is not None:
                    self.trans.abandon()
                if self.client is not None:
                    await self.client.abandon()
                if self.trans is not None:
                    # a timed or invalidation commit may be flushing a device in a thread
                    await self.trans.quiesce()
                if self.quorum is not None:
                    await self.quorum.abandon()
                if self.server is not None:
                    await self.server.stop()
                return
            if self.fs is not None:
                await self.fs.drain_deletions()
            if self.trans is not None:
                await self.trans.sync()
                self.trans.closed = True
            if self.client is not None:
                await self.client.farewell(gone=self._reclaimed_on_disk)
                await self.client.close()
            if self.quorum is not None:
                # stops our server if we lead (STOP, resignation), then END
                await self.quorum.shutdown()
            if self.server is not None:
                await self.server.shutdown()
        finally:
            if self.trans is not None:
                self.trans.abandon()  # whatever failed above, no commit starts from now on
            self._close_devices()
            log.info("unmounted fsid %016x rid %016x", self.fsid, self.rid, extra=KMSG)

    def _close_devices(self) -> None:
        for dev in (getattr(self, "meta_dev", None), getattr(self, "data_dev", None)):
            if dev is not None:
                try:
                    dev.close()
                except OSError:
                    pass

