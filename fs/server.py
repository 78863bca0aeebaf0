"""The server role: the one writer of the super block, allocator, lock manager and merger.

Owns, for the volume (spec §1.5-§1.8, §2.2-§2.3):

* the super block and its commits (only the server writes it);
* the free and pending extent sets of both devices, and lending them to mounts' open
  transactions (GET_LOG_TREES) and taking back what they freed (COMMIT_LOG_TREES);
* the btrees `logs_root` (one log_trees record per mount tree, keyed (rid, nr)),
  `mounted_clients` (rid -> address, flags) and `fs_root` (the merged items);
* inode number ranges (ALLOC_INODES), stable roots (GET_ROOTS), the last stable seq
  (GET_LAST_SEQ), statfs totals (STATFS);
* the lock table (fs/lock_server.py), farewell and reclaim of departed or dead mounts;
* finalizing log trees and merging finalized trees into fs_root (one pass, on the server:
  spec §8.7 allows it).

Allocation policy (scaled from scoutfs for small volumes; see `_lend`):
* meta: every GET_LOG_TREES tops the mount's meta_avail up to META_LEND_TARGET blocks;
* data: when the mount's data_avail is below DATA_LEND_LOW it is topped up to
  DATA_LEND_TARGET (scoutfs: below 1 GiB, up to 4 GiB; we use 256 MiB / 1 GiB);
* one refill takes at most 1/LEND_FRACTION of the free set (but at least a small minimum
  while any is free), so one mount cannot take a small volume's whole free space, and the
  server keeps SERVER_META_RESERVE meta blocks for its own commits.  A mount whose avail is
  empty and whose refill gives nothing gets ENOSPC from its own allocator.
* lent space counts as free in STATFS (it is still free to the user).

Delayed reuse: blocks freed while commit N is being built (by mounts' commits, by the
server's own copy-on-write, by merges, old extent-list blocks) are written in commit N's
pending list and return to the free sets only once commit N+1 is on disk.  After a restart
everything on the persisted pending lists counts as freed by the first commit.

Concurrency rules (trio: code between two awaits is atomic):
* Every request handler reads and changes the in-memory state (btrees, extent sets, the seq
  counter, sb fields) synchronously, then awaits `commit()` and only then replies, so a
  reply never reports a state that is not on disk.
* `commit()` is serialised by `_commit_lock`.  The block writes of a commit (btree flushes,
  extent lists) happen synchronously at its start, then the btrees begin the next epoch at
  once so handlers can keep changing state while the commit awaits device flushes; the super
  written is the snapshot taken at the start.  Commits are grouped: a handler whose changes
  were already written by a commit that started after them returns without committing.
* The server never awaits a client while holding the commit lock: lock invalidations and
  (later) SYNC_LOG_TREES run in their own tasks.
* The merge is serialised by `_merge_lock`; it awaits (checkpoints) between chunks of items,
  which is safe because a partially merged fs_root holds items that are also still in the
  unmerged trees (readers take the newest seq), and the merged trees' blocks are freed only
  at the end.
"""

from __future__ import annotations

import dataclasses
import errno
import heapq
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import trio

from fs import format as fmt
from fs import net
from fs.alloc import ExtentSet, extent_list_nr_blocks, read_extent_list, write_extent_list
from fs.block import Device, MetaBlocks, read_super, write_super
from fs.btree import Btree
from fs.counters import Counters
from fs.errors import FsError
from fs.format import (
    KEY_MAX,
    KEY_MIN,
    LOG_TREES_FLAG_FINALIZED,
    NULL_REF,
    U64_MAX,
    BlockRef,
    Item,
    LogTrees,
)
from fs.lock_server import LockServer
from fs.net import Cmd, Connection

log = logging.getLogger(__name__)

META_LEND_TARGET = 512  # 64 KiB blocks: 32 MiB of meta per open transaction
DATA_LEND_LOW = 256 * 1024 * 1024 // fmt.DATA_BLOCK_SIZE  # refill data below 256 MiB...
DATA_LEND_TARGET = 1024 * 1024 * 1024 // fmt.DATA_BLOCK_SIZE  # ...up to 1 GiB
LEND_FRACTION = 4  # one refill takes at most a quarter of the free set...
META_LEND_MIN = 64  # ...but at least this much while there is any
DATA_LEND_MIN = 2048  # (8 MiB: data_prealloc_blocks' default)
SERVER_META_RESERVE = 16  # meta blocks never lent: the server's own commits need them
LEND_MAX_EXTENTS = 128  # keeps a log_trees record well under MAX_VAL_SIZE
FINALIZE_HEIGHT = 2  # a log tree taller than this is finalized at its commit
MERGE_COMMIT_ITEMS = 2048  # commit a long merge every this many items
MERGE_CHUNK = 512  # items merged between checkpoints

RECOVERY_TIMEOUT_S = 30.0  # spec §2.3: a mounted rid must greet within 30 s of server start
RECONNECT_TIMEOUT_S = 20.0  # spec §2.3: a mount whose socket is down this long is reclaimed

LOG_TREES_FIRST: fmt.Key = fmt.log_trees_key(0, 0)
LOG_TREES_LAST: fmt.Key = (fmt.ZONE_LOG_TREES, U64_MAX, fmt.LOG_TREES_TYPE, U64_MAX, U64_MAX, 255)
MOUNTED_FIRST: fmt.Key = fmt.mounted_client_key(0)
MOUNTED_LAST: fmt.Key = (fmt.ZONE_MOUNTED_CLIENT, U64_MAX, fmt.MOUNTED_CLIENT_TYPE, U64_MAX,
                         U64_MAX, 255)


def _union(*sets: ExtentSet) -> ExtentSet:
    out = ExtentSet()
    for s in sets:
        for e in s.extents():
            out.add(*e)
    return out


def _total(extents: Iterable[tuple[int, int]]) -> int:
    return sum(n for _s, n in extents)


@dataclass
class _Lists:
    """The four extent lists a commit writes: refs and the blknos of their chains."""

    refs: dict[str, BlockRef]
    chains: dict[str, list[int]]


class Server:
    """The server of one volume.  `await nursery.start(server.serve, listener)`."""

    def __init__(self, meta_dev, data_dev, counters: Counters | None = None, *,
                 recovery_timeout: float = RECOVERY_TIMEOUT_S,
                 reconnect_timeout: float = RECONNECT_TIMEOUT_S,
                 term: int = 0, cache_blocks: int = 1024) -> None:
        self.cache_blocks = cache_blocks  # the server's own block cache limit (64 KiB blocks)
        self.meta_dev = meta_dev
        self.data_dev = data_dev
        self.counters = counters if counters is not None else Counters()
        self.recovery_timeout = recovery_timeout
        self.reconnect_timeout = reconnect_timeout
        self.term = term
        # trigger log_merge_force_finalize_ours: armed by writing True; the next commit of
        # a log tree finalizes it and disarms the trigger
        self.force_finalize_ours = False
        self.lock_server = LockServer(self.next_seq, self._send_invalidate, self.counters)
        self.sb: fmt.Super | None = None
        self.blocks: MetaBlocks | None = None
        self._conns: dict[int, Connection] = {}  # rid -> its current connection
        self._recovery_pending: set[int] = set()
        self._reclaimed: set[int] = set()
        self._last_nr: dict[int, int] = {}
        self._commit_lock = trio.Lock()
        self._merge_lock = trio.Lock()
        self._merge_wake = trio.Event()
        self._epoch = 0  # number of the commit being built
        self.epoch_seq = 0  # block seq of the commit being built
        self.nr_commits = 0
        self._failed: BaseException | None = None
        self._nursery: trio.Nursery | None = None
        self._done = trio.Event()
        self._stable: dict = {}
        self.listen_addr: tuple[str, int] | None = None

    # ------------------------------------------------------------------ loading

    def _load(self) -> None:
        sb = read_super(self.meta_dev)
        if not sb.flags & fmt.SUPER_FLAG_META:
            raise FsError(errno.EINVAL, f"{self.meta_dev.path}: not the meta device super")
        self.sb = sb
        self.blocks = MetaBlocks(self.meta_dev, sb.fsid, self.cache_blocks,
                                 parsed_blocks=max(16, self.cache_blocks // 4))
        chains: dict[str, list[int]] = {}

        def load(name: str, ref: BlockRef) -> ExtentSet:
            if ref == NULL_REF or ref.blkno == 0:
                chains[name] = []
                return ExtentSet()
            exts, chain = read_extent_list(self.blocks, ref)
            chains[name] = chain
            return ExtentSet(exts)

        self.meta_free = load("meta_free", sb.meta_free)
        self.data_free = load("data_free", sb.data_free)
        # everything pending counts as freed by the first commit of this server
        self.meta_pend_cur = load("meta_pending", sb.meta_pending)
        self.data_pend_cur = load("data_pending", sb.data_pending)
        self.meta_pend_prev = ExtentSet()
        self.data_pend_prev = ExtentSet()
        self._lists = _Lists({"meta_free": sb.meta_free, "data_free": sb.data_free,
                              "meta_pending": sb.meta_pending,
                              "data_pending": sb.data_pending}, chains)
        self.fs_root = Btree(self.blocks, sb.fs_root)
        self.logs = Btree(self.blocks, sb.logs_root)
        self.mounted = Btree(self.blocks, sb.mounted_clients)
        # spec §2.1: seq = max(super.seq, largest log item seq); the open transactions'
        # seqs were committed with their records
        for lt in self._records():
            sb.seq = max(sb.seq, lt.get_trans_seq + 1, lt.max_item_seq + 1)
            self._last_nr[lt.rid] = max(self._last_nr.get(lt.rid, 0), lt.nr)
            if lt.flags & LOG_TREES_FLAG_FINALIZED:
                self._merge_wake.set()
        self._recovery_pending = {rid for rid, _a, _p, _f in self._mounted_records()}
        self._begin_epoch()
        self._stable = self._snapshot_roots()

    def _begin_epoch(self) -> None:
        self._epoch += 1
        self.epoch_seq = self.next_seq()
        for t in (self.fs_root, self.logs, self.mounted):
            t.begin(self.epoch_seq, self._alloc_meta, self._free_meta)

    def next_seq(self) -> int:
        """The server's seq counter (transaction seqs, lock write seqs, block seqs)."""
        seq = self.sb.seq
        self.sb.seq += 1
        return seq

    def _alloc_meta(self) -> int:
        got = self.meta_free.alloc(1)
        if got is None:
            raise FsError(errno.ENOSPC, "server out of meta blocks")
        return got[0]

    def _free_meta(self, blkno: int) -> None:
        self.meta_pend_cur.add(blkno, 1)

    # ------------------------------------------------------------------ records

    def _records(self, rid: int | None = None) -> list[LogTrees]:
        if rid is None:
            first, last = LOG_TREES_FIRST, LOG_TREES_LAST
        else:
            first = fmt.log_trees_key(rid, 0)
            last = (fmt.ZONE_LOG_TREES, rid, fmt.LOG_TREES_TYPE, U64_MAX, U64_MAX, 255)
        return [fmt.unpack_log_trees(it.value) for _k, it in self.logs.items(first, last)]

    def _put_record(self, lt: LogTrees) -> None:
        self.logs.insert(fmt.log_trees_key(lt.rid, lt.nr),
                         Item(self.epoch_seq, 0, fmt.pack_log_trees(lt)))

    def _mounted_records(self) -> list[tuple[int, str, int, int]]:
        out = []
        for k, it in self.mounted.items(MOUNTED_FIRST, MOUNTED_LAST):
            addr, port, flags = fmt.unpack_mounted_client(it.value)
            out.append((k[1], addr, port, flags))
        return out

    def _snapshot_roots(self) -> dict:
        """GET_ROOTS reply as of the last commit (roots on disk)."""
        return {
            "fs_root": net.root_to_wire(self.fs_root.root),
            "logs": [{"rid": lt.rid, "nr": lt.nr, "item_root": net.root_to_wire(lt.item_root),
                      "max_item_seq": lt.max_item_seq, "flags": lt.flags}
                     for lt in (fmt.unpack_log_trees(it.value)
                                for _k, it in Btree(self.blocks, self.logs.root).items(
                                    LOG_TREES_FIRST, LOG_TREES_LAST))],
        }

    # ------------------------------------------------------------------ commits

    async def commit(self) -> None:
        """Make every change made so far durable (super written and flushed)."""
        want = self._epoch
        async with self._commit_lock:
            if self._failed is not None:
                raise FsError(errno.EIO, f"server commit failed earlier: {self._failed}")
            if self._epoch > want:
                return  # a commit that started after our changes wrote them
            try:
                await self._commit_locked()
            except BaseException as e:
                # a half-done commit leaves memory ahead of disk: stop serving
                self._failed = e
                log.exception("server commit failed")
                raise FsError(errno.EIO, f"server commit failed: {e}") from e

    async def _commit_locked(self) -> None:
        sb = self.sb
        seq = self.epoch_seq
        # 1. every block of the commit, synchronously (state cannot change under us)
        sb.fs_root = self.fs_root.flush()
        sb.logs_root = self.logs.flush()
        sb.mounted_clients = self.mounted.flush()
        self._write_lists(seq)
        sb.meta_free, sb.data_free = self._lists.refs["meta_free"], self._lists.refs["data_free"]
        sb.meta_pending = self._lists.refs["meta_pending"]
        sb.data_pending = self._lists.refs["data_pending"]
        sb.free_meta_blocks = self.meta_free.total
        sb.free_data_blocks = self.data_free.total
        image = dataclasses.replace(sb, quorum_slots=dict(sb.quorum_slots))
        stable = self._snapshot_roots()
        # blocks freed by the previous commit return once this one is on disk; blocks freed
        # while building this one wait for the next
        meta_ready, data_ready = self.meta_pend_prev, self.data_pend_prev
        self.meta_pend_prev, self.data_pend_prev = self.meta_pend_cur, self.data_pend_cur
        self.meta_pend_cur, self.data_pend_cur = ExtentSet(), ExtentSet()
        # handlers may change state for the next commit from here on
        self._begin_epoch()
        # 2. blocks durable, then the super, then the super durable
        await self._flush_dev()
        write_super(self.meta_dev, image)
        await self._flush_dev()
        for e in meta_ready.extents():
            self.meta_free.add(*e)
        for e in data_ready.extents():
            self.data_free.add(*e)
        self._stable = stable
        self.nr_commits += 1

    async def _flush_dev(self) -> None:
        if isinstance(self.meta_dev, Device):
            await trio.to_thread.run_sync(self.meta_dev.flush)
        else:
            # in-memory devices are shared with the trio thread's writers: not in a thread
            self.meta_dev.flush()

    def _write_lists(self, seq: int) -> None:
        """Write the free and pending lists of both devices for this commit.

        List blocks come straight from the meta free set.  The meta free list describes
        the set its own blocks were taken from, so it is written last, after reserving
        blocks one at a time until they cover the remaining set.  If the last block taken
        shrank the list below the reservation, an extent is split into two entries so the
        list uses it; when no extent can be split (every free extent is one block), the
        attempt is undone (nothing written is referenced yet), the surplus block is parked
        in the pending set and the lists are rewritten.
        """
        # the previous commit's list blocks are unreferenced once this super is written
        for chain in self._lists.chains.values():
            for b in chain:
                self.meta_pend_cur.add(b, 1)
        self._lists.chains = {}
        for _attempt in range(16):
            refs, chains, used, surplus = self._try_write_lists(seq)
            if not surplus:
                self._lists = _Lists(refs, chains)
                return
            log.debug("extent list reservation left %d surplus blocks: rewriting", len(surplus))
            for b in used:
                self.meta_free.add(b, 1)
            for b in surplus:
                self.meta_free.remove(b, 1)
                self.meta_pend_cur.add(b, 1)
        raise RuntimeError("extent lists did not settle")

    def _try_write_lists(self, seq: int):
        """One attempt of _write_lists: (refs, chains, every block taken, surplus)."""
        used: list[int] = []
        refs: dict[str, BlockRef] = {}
        chains: dict[str, list[int]] = {}

        def take() -> int:
            b = self._alloc_meta()
            used.append(b)
            return b

        for name, extents in (
            ("data_free", self.data_free.extents()),
            ("data_pending", _union(self.data_pend_prev, self.data_pend_cur).extents()),
            ("meta_pending", _union(self.meta_pend_prev, self.meta_pend_cur).extents()),
        ):
            start = len(used)
            refs[name] = write_extent_list(self.blocks, extents, seq, take)
            chains[name] = used[start:]
        # one block at a time: the smallest reservation that covers the remaining set;
        # each block taken removes at most one extent, so at most one block is surplus
        reserved: list[int] = []
        while extent_list_nr_blocks(len(self.meta_free)) > len(reserved):
            reserved.append(self._alloc_meta())
        used.extend(reserved)
        entries = self.meta_free.extents()
        if extent_list_nr_blocks(len(entries)) < len(reserved):
            # the list just crossed a block boundary: split an extent in two entries (the
            # format allows adjacent entries) so the list uses every reserved block
            for i, (st, n) in enumerate(entries):
                if n >= 2:
                    entries[i:i + 1] = [(st, 1), (st + 1, n - 1)]
                    break
        it = iter(reserved)
        refs["meta_free"] = write_extent_list(self.blocks, entries, seq, lambda: next(it))
        surplus = list(it)
        chains["meta_free"] = reserved[:len(reserved) - len(surplus)]
        return refs, chains, used, surplus

    # ------------------------------------------------------------------ serving

    async def serve(self, listener: Any, *,
                    task_status: trio.TaskStatus[Server] = trio.TASK_STATUS_IGNORED) -> None:
        """Load the volume and serve connections from listener (a trio Listener, or a list
        of them) until cancelled or `shutdown()`."""
        self._load()
        listeners = listener if isinstance(listener, list | tuple) else [listener]
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                self.lock_server.start(nursery)
                nursery.start_soon(self._merge_worker)
                if self._recovery_pending:
                    nursery.start_soon(self._recovery_timer)
                for lst in listeners:
                    nursery.start_soon(self._accept_loop, lst)
                log.info("server fsid %016x serving, seq %d, %d mounted rids pending recovery",
                         self.sb.fsid, self.sb.seq, len(self._recovery_pending))
                task_status.started(self)
        finally:
            self._nursery = None
            for conn in list(self._conns.values()):
                with trio.CancelScope(shield=True):
                    await conn.aclose()
            for lst in listeners:
                with trio.CancelScope(shield=True):
                    try:
                        await lst.aclose()
                    except Exception:
                        pass
            self._done.set()

    async def serve_tcp(self, addr: str, port: int, *,
                        task_status: trio.TaskStatus[Server] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve on a quorum slot's TCP address."""
        listener = await net.open_listener(addr, port)
        self.listen_addr = listener.socket.getsockname()[:2]
        await self.serve(listener, task_status=task_status)

    async def shutdown(self) -> None:
        """Stop serving: connections close, background work stops.  Changes not yet
        committed are dropped (every reply was sent after its commit)."""
        if self._nursery is not None:
            # let an in-flight merge and commit finish: cancelling one half-way would leave
            # memory ahead of disk (and log it as a failure)
            async with self._merge_lock, self._commit_lock:
                self._nursery.cancel_scope.cancel()
            await self._done.wait()

    async def _accept_loop(self, listener) -> None:
        while True:
            stream = await listener.accept()
            net.setup_accepted(stream)
            self._nursery.start_soon(self._serve_conn, stream)

    async def _serve_conn(self, stream) -> None:
        conn = Connection(stream, name="server")
        conn.register(Cmd.GREETING, lambda p: self._greeting(conn, p))
        handlers = {
            Cmd.ALLOC_INODES: self._alloc_inodes,
            Cmd.GET_LOG_TREES: self._get_log_trees,
            Cmd.COMMIT_LOG_TREES: self._commit_log_trees,
            Cmd.GET_ROOTS: self._get_roots,
            Cmd.GET_LAST_SEQ: self._get_last_seq,
            Cmd.STATFS: self._statfs,
            Cmd.FAREWELL: self._farewell,
        }
        for cmd, fn in handlers.items():
            conn.register(cmd, self._greeted(conn, fn))
        conn.register(Cmd.LOCK, self._greeted(conn, self._lock),
                      order=lambda p: tuple(p["key"]))
        conn.on_close = self._conn_closed
        await conn.run()

    def _greeted(self, conn: Connection, fn):
        async def handler(p):
            rid = conn.context
            if rid is None:
                raise FsError(errno.EINVAL, "request before greeting")
            if self._failed is not None:
                raise FsError(errno.EIO, "server failed")
            return await fn(rid, p)
        return handler

    def _conn_closed(self, conn: Connection) -> None:
        rid = conn.context
        if rid is None or self._conns.get(rid) is not conn:
            return
        del self._conns[rid]
        if self._nursery is not None and rid not in self._reclaimed:
            self._nursery.start_soon(self._reconnect_timer, rid)

    async def _send_invalidate(self, rid: int, key: fmt.Key, old_mode: int,
                               new_mode: int) -> None:
        conn = self._conns.get(rid)
        if conn is None:
            raise FsError(errno.ENOTCONN, f"rid {rid:016x} is not connected")
        await conn.request(Cmd.LOCK, {"key": list(key), "old_mode": old_mode,
                                      "new_mode": new_mode})

    # ------------------------------------------------------------------ handlers

    async def _greeting(self, conn: Connection, p: dict) -> dict:
        sb = self.sb
        if int(p["fsid"]) != sb.fsid:
            raise FsError(errno.EINVAL, f"greeting fsid {int(p['fsid']):016x} is not the "
                                        f"volume's {sb.fsid:016x}")
        if int(p["fmt_vers"]) != sb.fmt_vers:
            raise FsError(errno.EINVAL, f"greeting format version {p['fmt_vers']} is not "
                                        f"the volume's {sb.fmt_vers}")
        rid = int(p["rid"])
        if rid == 0:
            raise FsError(errno.EINVAL, "greeting rid 0")
        if rid in self._reclaimed:
            raise FsError(errno.EINVAL, f"rid {rid:016x} was reclaimed")
        if self._failed is not None:
            raise FsError(errno.EIO, "server failed")
        flags = int(p.get("flags", 0))
        old = self._conns.get(rid)
        conn.context = rid
        self._conns[rid] = conn
        if old is not None and old is not conn:
            old.context = None
            await old.aclose()
        self._recovery_pending.discard(rid)
        addr, port = conn.peer_addr
        if addr.count(".") != 3:
            addr = "0.0.0.0"
        mflags = fmt.MOUNTED_CLIENT_FLAG_QUORUM if flags & net.GREETING_FLAG_QUORUM else 0
        self.mounted.insert(fmt.mounted_client_key(rid),
                            Item(self.epoch_seq, 0, fmt.pack_mounted_client(addr, port, mflags)))
        await self.commit()
        log.info("greeting from rid %016x at %s:%d", rid, addr, port)
        return {"server_term": self.term, "fmt_vers": sb.fmt_vers, "rid": rid}

    async def _alloc_inodes(self, rid: int, p: dict) -> dict:
        count = int(p["count"])
        if count <= 0 or count > 1 << 20:
            raise FsError(errno.EINVAL, f"alloc_inodes count {count}")
        first = self.sb.next_ino
        self.sb.next_ino += count
        # committed before replying: numbers are never handed out twice, even after a crash
        await self.commit()
        return {"first": first, "nr": count}

    def _lend(self, free: ExtentSet, want: int, minimum: int, reserve: int = 0
              ) -> list[tuple[int, int]]:
        avail = free.total - reserve
        if want <= 0 or avail <= 0:
            return []
        count = min(want, max(avail // LEND_FRACTION, min(avail, minimum)))
        out: list[tuple[int, int]] = []
        while count > 0 and len(out) < LEND_MAX_EXTENTS:
            got = free.alloc(count)
            if got is None:
                break
            out.append(got)
            count -= got[1]
        return out

    async def _get_log_trees(self, rid: int, p: dict) -> dict:
        recs = self._records(rid)
        lt = recs[-1] if recs else None
        if lt is None or lt.flags & LOG_TREES_FLAG_FINALIZED:
            nr = max(self._last_nr.get(rid, -1), lt.nr if lt else -1) + 1
            self._last_nr[rid] = nr
            lt = LogTrees(rid=rid, nr=nr)
        meta = ExtentSet(lt.meta_avail)
        for e in self._lend(self.meta_free, META_LEND_TARGET - meta.total, META_LEND_MIN,
                            SERVER_META_RESERVE):
            meta.add(*e)
        data = ExtentSet(lt.data_avail)
        if data.total < DATA_LEND_LOW:
            for e in self._lend(self.data_free, DATA_LEND_TARGET - data.total, DATA_LEND_MIN):
                data.add(*e)
        lt.meta_avail = meta.extents()
        lt.data_avail = data.extents()
        if lt.get_trans_seq <= lt.commit_trans_seq:
            # open a new transaction; one already open keeps its seq (its items have it)
            lt.get_trans_seq = self.next_seq()
        self._put_record(lt)
        await self.commit()
        return net.log_trees_to_wire(lt)

    async def _commit_log_trees(self, rid: int, p: dict) -> dict:
        nr = int(p["nr"])
        if int(p.get("rid", rid)) != rid:
            raise FsError(errno.EINVAL, "commit of another mount's log tree")
        item = self.logs.lookup(fmt.log_trees_key(rid, nr))
        if item is None:
            raise FsError(errno.ENOENT, f"no log tree {rid:016x}.{nr}")
        lt = fmt.unpack_log_trees(item.value)
        if lt.flags & LOG_TREES_FLAG_FINALIZED:
            raise FsError(errno.EINVAL, f"log tree {rid:016x}.{nr} is finalized")
        meta_avail = net.extents_from_wire(p["meta_avail"])
        data_avail = net.extents_from_wire(p["data_avail"])
        meta_freed = net.extents_from_wire(p.get("meta_freed", []))
        data_freed = net.extents_from_wire(p.get("data_freed", []))
        # check everything before changing anything: a bad commit is the mount's bug
        lent_meta, lent_data = ExtentSet(lt.meta_avail), ExtentSet(lt.data_avail)
        for what, exts, lent in (("meta", meta_avail, lent_meta), ("data", data_avail, lent_data)):
            for s, n in exts:
                if not lent.contains(s, n):
                    raise FsError(errno.EINVAL, f"{what} avail ({s}, {n}) was not lent")
        for what, exts, sets in (
            ("meta", meta_freed, (self.meta_free, self.meta_pend_prev, self.meta_pend_cur,
                                  ExtentSet(meta_avail))),
            ("data", data_freed, (self.data_free, self.data_pend_prev, self.data_pend_cur,
                                  ExtentSet(data_avail))),
        ):
            check = ExtentSet()
            for s, n in exts:
                try:
                    check.add(s, n)
                except ValueError as e:
                    raise FsError(errno.EINVAL, f"{what} freed twice: {e}") from e
                if any(st.intersect(s, n) for st in sets):
                    raise FsError(errno.EINVAL, f"{what} freed ({s}, {n}) is already free")
        # apply
        for e in meta_freed:
            self.meta_pend_cur.add(*e)
        for e in data_freed:
            self.data_pend_cur.add(*e)
        lt.item_root = net.root_from_wire(p["item_root"])
        lt.meta_avail, lt.data_avail = meta_avail, data_avail
        lt.max_item_seq = max(lt.max_item_seq, int(p.get("max_item_seq", 0)))
        lt.commit_trans_seq = lt.get_trans_seq
        self.sb.inode_count = max(0, self.sb.inode_count + int(p.get("inode_count_delta", 0)))
        finalize = lt.item_root.height > FINALIZE_HEIGHT or self.force_finalize_ours
        if self.force_finalize_ours:
            self.force_finalize_ours = False  # the trigger reads 0 after firing
        if finalize:
            self._finalize(lt)
        self._put_record(lt)
        await self.commit()
        if finalize:
            self._merge_wake.set()
        return {}

    def _finalize(self, lt: LogTrees) -> None:
        """No more writes to this tree: drain its lent space, mark it for merging.
        (Coordinated finalize with SYNC_LOG_TREES comes with multi-mount merging.)"""
        for e in lt.meta_avail:
            self.meta_free.add(*e)
        for e in lt.data_avail:
            self.data_free.add(*e)
        lt.meta_avail, lt.data_avail = [], []
        lt.flags |= LOG_TREES_FLAG_FINALIZED
        lt.finalize_seq = self.next_seq()

    async def _get_roots(self, rid: int, p: Any) -> dict:
        return self._stable

    async def _get_last_seq(self, rid: int, p: Any) -> dict:
        return {"last_seq": self.last_seq()}

    def last_seq(self) -> int:
        """The last stable seq (spec §5.6): below every open transaction's seq."""
        last = self.sb.seq - 1
        for lt in self._records():
            if not lt.flags & LOG_TREES_FLAG_FINALIZED and lt.get_trans_seq > lt.commit_trans_seq:
                last = min(last, lt.get_trans_seq - 1)
        return last

    def statfs(self) -> dict:
        """Totals and free counts; free includes pending (freed, waiting out delayed
        reuse) and lent space (free to the user until a mount commits using it)."""
        sb = self.sb
        lent_meta = lent_data = 0
        for lt in self._records():
            lent_meta += _total(lt.meta_avail)
            lent_data += _total(lt.data_avail)
        meta_pend = self.meta_pend_prev.total + self.meta_pend_cur.total
        data_pend = self.data_pend_prev.total + self.data_pend_cur.total
        return {
            "total_meta_blocks": sb.total_meta_blocks,
            "free_meta_blocks": self.meta_free.total + meta_pend + lent_meta,
            "total_data_blocks": sb.total_data_blocks,
            "free_data_blocks": self.data_free.total + data_pend + lent_data,
            "inode_count": sb.inode_count,
            "next_ino": sb.next_ino,
        }

    async def _statfs(self, rid: int, p: Any) -> dict:
        return self.statfs()

    async def _lock(self, rid: int, p: dict) -> dict:
        return await self.lock_server.request(
            rid, net.key_from_wire(p["key"]), int(p["old_mode"]), int(p["new_mode"]),
            int(p.get("write_seq", 0)))

    async def _farewell(self, rid: int, p: Any) -> dict:
        merge = self._reclaim_rid(rid, reason="farewell")
        await self.commit()
        if merge:
            self._merge_wake.set()
        log.info("farewell from rid %016x", rid)
        return {}

    # ------------------------------------------------------------------ reclaim

    def _reclaim_rid(self, rid: int, reason: str) -> bool:
        """reclaim_rid (spec §2.3), synchronously: drop the rid's lock state, finalize its
        open log tree (returning its lent space), delete its mounted_clients item last.
        Idempotent.  Returns whether a tree now waits for merging."""
        self.lock_server.remove_rid(rid)
        merge = False
        for lt in self._records(rid):
            if lt.flags & LOG_TREES_FLAG_FINALIZED:
                merge = True
                continue
            self._finalize(lt)
            if lt.item_root.height == 0:
                # nothing was ever committed to it: nothing to merge
                self.logs.delete(fmt.log_trees_key(lt.rid, lt.nr))
                continue
            self.counters.inc("reclaimed_open_logs")
            self._put_record(lt)
            merge = True
        self.mounted.delete(fmt.mounted_client_key(rid))
        self._recovery_pending.discard(rid)
        self._reclaimed.add(rid)
        conn = self._conns.pop(rid, None)
        if conn is not None:
            conn.context = None
        log.info("reclaimed rid %016x (%s)", rid, reason)
        return merge

    async def _reclaim_dead(self, rids: list[int], reason: str) -> None:
        # fencing hooks in here (fs/fence.py, the cluster issue): publish fence/<rid>/ with
        # this reason, wait for the agent to report `fenced`, and only then reclaim
        merge = False
        for rid in rids:
            log.warning("reclaiming rid %016x: %s", rid, reason)
            merge |= self._reclaim_rid(rid, reason)
        await self.commit()
        if merge:
            self._merge_wake.set()

    async def _recovery_timer(self) -> None:
        await trio.sleep(self.recovery_timeout)
        dead = sorted(self._recovery_pending)
        if dead:
            await self._reclaim_dead(dead, "client_recovery")

    async def _reconnect_timer(self, rid: int) -> None:
        await trio.sleep(self.reconnect_timeout)
        if rid in self._conns or rid in self._reclaimed:
            return
        if self.mounted.lookup(fmt.mounted_client_key(rid)) is None:
            return
        await self._reclaim_dead([rid], "client_reconnect")

    # ------------------------------------------------------------------ log merge

    async def _merge_worker(self) -> None:
        while True:
            await self._merge_wake.wait()
            self._merge_wake = trio.Event()
            try:
                await self.merge_now()
            except FsError as e:
                log.error("log merge failed: %s", e)

    async def merge_now(self) -> bool:
        """Merge every finalized log tree into fs_root in one pass and commit.  Returns
        whether anything was merged (counters log_merge_start/complete/no_finalized)."""
        async with self._merge_lock:
            records = self._records()
            fin = [lt for lt in records if lt.flags & LOG_TREES_FLAG_FINALIZED]
            if not fin:
                self.counters.inc("log_merge_no_finalized")
                return False
            self.counters.inc("log_merge_start")
            fin_keys = {(lt.rid, lt.nr) for lt in fin}
            others = [lt for lt in records if (lt.rid, lt.nr) not in fin_keys]
            trees = [Btree(self.blocks, lt.item_root) for lt in fin]
            merged = heapq.merge(*[self._tree_stream(t, i) for i, t in enumerate(trees)])
            last_key = None
            n = 0
            for (key, _negseq, _i), item in merged:
                if key == last_key:
                    continue  # an older version of a key already merged
                last_key = key
                self._merge_item(key, item, others)
                n += 1
                if n % MERGE_COMMIT_ITEMS == 0:
                    # bound the dirty fs_root blocks held in memory: a partial merge on disk
                    # is safe, the finalized trees stay in logs_root until the end and
                    # merging an item again is idempotent (seq comparison)
                    await self.commit()
                elif n % MERGE_CHUNK == 0:
                    await trio.lowlevel.checkpoint()
            # the merged trees' blocks are free once the commit dropping them is on disk
            for lt, t in zip(fin, trees, strict=True):
                for ref, _level in t.block_refs():
                    self.meta_pend_cur.add(ref.blkno, 1)
                for e in lt.meta_avail:
                    self.meta_free.add(*e)
                for e in lt.data_avail:
                    self.data_free.add(*e)
                self.logs.delete(fmt.log_trees_key(lt.rid, lt.nr))
            await self.commit()
            self.counters.inc("log_merge_complete")
            log.debug("merged %d items from %d log trees", n, len(fin))
            return True

    @staticmethod
    def _tree_stream(tree: Btree, i: int):
        for k, it in tree.items(KEY_MIN, KEY_MAX):
            yield (k, -it.seq, i), it

    def _merge_item(self, key: fmt.Key, item: Item, others: list[LogTrees]) -> None:
        cur = self.fs_root.lookup(key)
        if cur is not None and cur.seq > item.seq:
            return  # fs_root already has a newer version
        if item.deleted:
            # a tombstone is kept only while an unmerged tree may hold an older version it
            # must keep hiding; otherwise it just removes fs_root's item
            if any(lt.item_root.height and Btree(self.blocks, lt.item_root).lookup(key)
                   is not None for lt in others):
                self.fs_root.insert(key, Item(item.seq, item.flags, item.value))
            elif cur is not None:
                self.fs_root.delete(key)
            return
        # .totl. delta items are summed here later (spec §1.5)
        self.fs_root.insert(key, Item(item.seq, item.flags, item.value))

