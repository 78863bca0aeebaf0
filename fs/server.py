"""The server role: the one writer of the super block, allocator, lock manager and merger.

Owns, for the volume (spec §1.5-§1.8, §2.2-§2.3):

* the super block and its commits (only the server writes it);
* the free and pending extent sets of both devices, and lending them to mounts' open
  transactions (GET_LOG_TREES) and taking back what they freed (COMMIT_LOG_TREES);
* the btrees `logs_root` (one log_trees record per mount tree, keyed (rid, nr)),
  `mounted_clients` (rid -> address, flags) and `fs_root` (the merged items);
* inode number ranges (ALLOC_INODES), stable roots (GET_ROOTS), the last stable seq
  (GET_LAST_SEQ), statfs totals (STATFS);
* the lock table (fs/lock_server.py) and its recovery after a server change (LOCK_RECOVER
  to every mounted rid; `recovery_timeout`);
* OPEN_INO_MAP: the OR of every other mounted rid's open map of an inode group (spec §4.5),
  after lock recovery, waiting for away rids and dropping departed ones;
* farewell (spec §2.3 rules for quorum members), fencing (fs/fence.py: nothing is
  reclaimed that was not fenced first, or that did not say farewell) and reclaim_rid;
* coordinated finalize (SYNC_LOG_TREES to every mount) and merging finalized trees into
  fs_root (one pass, on the server: spec §8.7 allows it);
* the btree `srch` (the super's srch_root): srch log files rotated out of log trees and the
  compactions handed to mounts (SRCH_GET_COMPACT / SRCH_COMMIT_COMPACT), kept by
  `fs.srch.SrchServer`.

Failover model: every request is idempotent, because a client resends every request still
unanswered when its connection drops, possibly to the next server.  COMMIT_LOG_TREES
carries the transaction seq and is a no-op (but still waits for the disk) when that
transaction is already committed; trees are finalized only in GET_LOG_TREES (spec §1.6), so
a resent commit never meets a tree finalized under it; GET_LOG_TREES keeps an open
transaction's seq; ALLOC_INODES may waste a range; LOCK requests of a dropped connection are
cancelled with it (the resend replaces them).  A greeting of a known rid on a new
connection resumes it (the old connection is closed, pending invalidations are resent);
a greeting of a rid that is not (or no longer) mounted is refused with ENOLINK, except with
the FAREWELL flag, which is answered "gone" (the farewell completed).

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
* `commit()` is serialised by `_commit_lock` and shielded from cancellation: a handler
  cancelled because its connection dropped must not stop a commit half-way (memory would
  be ahead of disk).  The block writes of a commit (btree flushes, extent lists) happen
  synchronously at its start, then the btrees begin the next epoch at once so handlers can
  keep changing state while the commit awaits device flushes; the super written is the
  snapshot taken at the start.  Commits are grouped: a handler whose changes were already
  written by a commit that started after them returns without committing.
* The server never awaits a client while holding the commit or merge lock: lock
  invalidations, LOCK_RECOVER and SYNC_LOG_TREES run in their own tasks, and the
  coordinated finalize waits for SYNC_LOG_TREES (bounded by log_merge_wait_timeout) before
  taking `_merge_lock`.
* Background workers, each woken by an event: merge (`_merge_wake`), farewell
  (`_farewell_wake`: answers what the quorum rules allow, reclaims, commits, then replies),
  fencing (fs/fence.py changes, polled every second while requests are pending).
* The merge is serialised by `_merge_lock`; it awaits (checkpoints) between chunks of items,
  which is safe because a partially merged fs_root holds items that are also still in the
  unmerged trees (readers take the newest seq), and the merged trees' blocks are freed only
  at the end.
* Failing (fence error or timeout, a failed commit) sets `failed` and cancels the serve
  scope: serve() then returns (it raises ServerFailed only if it fails before it started).
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import heapq
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import trio

from fs import format as fmt
from fs import net, omap, totl
from fs.alloc import ExtentSet, extent_list_nr_blocks, read_extent_list, write_extent_list
from fs.block import Device, MetaBlocks, read_super, write_super
from fs.btree import Btree
from fs.counters import Counters
from fs.errors import FsError, StaleBlock
from fs.fence import (
    FENCE_TIMEOUT_S,
    REASON_CLIENT_RECONNECT,
    REASON_CLIENT_RECOVERY,
    REASON_QUORUM_BLOCK_LEADER,
    START_FENCE_TIMEOUT_S,
    FenceRequest,
    Fencing,
)
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
from fs.kmsg import KMSG, KMSG_ERR
from fs.lock_server import LockServer
from fs.net import Cmd, Connection
from fs.srch import SrchServer
from fs.triggers import Triggers

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

RECOVERY_TIMEOUT_S = 30.0  # spec §2.3: a mounted rid must recover within 30 s of server start
FENCE_WAIT_NOTE_S = 5.0  # a start waiting for fences says why after this long
FENCE_WAIT_NOTE_EVERY_S = 10.0  # and again this often
RECONNECT_TIMEOUT_S = 20.0  # spec §2.3: a mount whose socket is down this long is fenced
LOG_MERGE_WAIT_TIMEOUT_S = 0.5  # spec §7 log_merge_wait_timeout_ms default: 500
RECOVER_PAGE = 512  # LOCK_RECOVER entries asked for per request

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



@contextlib.contextmanager
def _stale_is_corrupt():
    """The server reads through the roots of its own super, which nothing else changes: a
    block that does not match its ref (StaleBlock, a retry for a mount) is corruption."""
    try:
        yield
    except StaleBlock as e:
        log.error("server: metadata block does not match its reference: %s", e, extra=KMSG)
        raise FsError(errno.EIO, f"corrupt metadata: {e}") from None


def _allocator_problem(sb: fmt.Super, meta_free: ExtentSet, meta_pend: ExtentSet,
                       data_free: ExtentSet, data_pend: ExtentSet,
                       chains: dict[str, list[int]]) -> str | None:
    """Why the free and pending sets of a super cannot be right (they would make us hand
    out a block twice), or None: each within its device, free and pending disjoint, and
    no list block free or in two lists."""
    for name, ext, first, total in (
            ("meta_free", meta_free, fmt.META_DEV_START_BLKNO, sb.total_meta_blocks),
            ("meta_pending", meta_pend, fmt.META_DEV_START_BLKNO, sb.total_meta_blocks),
            ("data_free", data_free, fmt.DATA_DEV_START_BLKNO, sb.total_data_blocks),
            ("data_pending", data_pend, fmt.DATA_DEV_START_BLKNO, sb.total_data_blocks)):
        for start, length in ext.extents():
            if start < first or start + length > total:
                return f"{name} extent {start}+{length} outside the device [{first}, {total})"
    # every commit records the free sets' totals with them (fsck checks the same)
    for name, recorded, ext in (("meta", sb.free_meta_blocks, meta_free),
                                ("data", sb.free_data_blocks, data_free)):
        if recorded != ext.total:
            return f"free_{name}_blocks {recorded} but the {name}_free list holds {ext.total}"
    for name, a, b in (("meta", meta_free, meta_pend), ("data", data_free, data_pend)):
        for start, length in b.extents():
            if a.overlaps(start, length):
                return f"{name} pending extent {start}+{length} is also free"
    seen: set[int] = set()
    for name, chain in chains.items():
        for blkno in chain:
            if blkno in seen or meta_free.overlaps(blkno, 1) or meta_pend.overlaps(blkno, 1):
                return f"{name} list block {blkno} is free or in another list"
            seen.add(blkno)
    return None

class ServerFailed(FsError):
    """The server stopped itself (a fence failed or timed out, a commit failed) or could
    not start (earlier leaders not fenced in time)."""

    def __init__(self, msg: str) -> None:
        super().__init__(errno.EIO, msg)


def votes_needed(nr_slots: int) -> int:
    """Votes a quorum of nr_slots configured slots needs (spec §2.1)."""
    return 1 if nr_slots < 3 else nr_slots // 2 + 1


@dataclass
class _Lists:
    """The four extent lists a commit writes: refs and the blknos of their chains."""

    refs: dict[str, BlockRef]
    chains: dict[str, list[int]]


class Server:
    """The server of one volume.  `await nursery.start(server.serve, listener)` (memory
    listeners in tests) or `server.serve_tcp(addr, port, fence_targets=...)`."""

    def __init__(self, meta_dev, data_dev, counters: Counters | None = None, *,
                 recovery_timeout: float = RECOVERY_TIMEOUT_S,
                 reconnect_timeout: float = RECONNECT_TIMEOUT_S,
                 fence_timeout: float = FENCE_TIMEOUT_S,
                 start_fence_timeout: float = START_FENCE_TIMEOUT_S,
                 log_merge_wait_timeout: float = LOG_MERGE_WAIT_TIMEOUT_S,
                 term: int = 0, cache_blocks: int = 1024,
                 triggers: Triggers | None = None) -> None:
        self.cache_blocks = cache_blocks  # the server's own block cache limit (64 KiB blocks)
        self.meta_dev = meta_dev
        self.data_dev = data_dev
        self.counters = counters if counters is not None else Counters()
        self.recovery_timeout = recovery_timeout
        self.reconnect_timeout = reconnect_timeout
        self.fence_timeout = fence_timeout
        self.start_fence_timeout = start_fence_timeout
        # seconds the coordinated finalize waits for SYNC_LOG_TREES answers (a runtime
        # mount option: the mount sets it)
        self.log_merge_wait_timeout = log_merge_wait_timeout
        self.term = term
        # the debugfs triggers of the server's mount (log_merge_force_finalize_ours)
        self.triggers = triggers if triggers is not None else Triggers()
        self.lock_server = LockServer(self.next_seq, self._send_invalidate, self.counters)
        self.fencing = Fencing()
        self.srch_server = SrchServer(self)  # srch_root: rotation, compaction (fs/srch.py)
        self.sb: fmt.Super | None = None
        self.blocks: MetaBlocks | None = None
        self._conns: dict[int, Connection] = {}  # rid -> its current connection
        self._conn_gen: dict[int, int] = {}  # rid -> greetings seen (reconnect timers)
        self._recovering: set[int] = set()  # mounted rids whose lock recovery is not done
        # set (and replaced) whenever a rid connects, drops, recovers or is reclaimed:
        # OPEN_INO_MAP requests wait on it for recovery and for departed or away rids
        self._rids_changed = trio.Event()
        self._reclaimed: set[int] = set()
        self._farewells: dict[int, trio.Event] = {}  # pending farewells, arrival order
        self._farewell_wake = trio.Event()
        self._finalize_all = False  # coordinated finalize: GET_LOG_TREES finalizes
        self._last_nr: dict[int, int] = {}
        self._commit_lock = trio.Lock()
        self._merge_lock = trio.Lock()
        self._merge_wake = trio.Event()
        self._epoch = 0  # number of the commit being built
        self.epoch_seq = 0  # block seq of the commit being built
        self.nr_commits = 0
        self._failed: BaseException | None = None
        self.failed = trio.Event()  # set when the server stopped itself
        self.fail_reason = ""
        self._nursery: trio.Nursery | None = None
        self._scope: trio.CancelScope | None = None
        self._running = False
        self._done = trio.Event()
        self._stable: dict = {}
        self.listen_addr: tuple[str, int] | None = None
        self.slot_addr = "0.0.0.0:0"  # the kernel log's "server starting at ADDR"
        self._said_shutdown = False

    @property
    def fence_requests(self) -> dict[int, FenceRequest]:
        """Pending fence requests by rid (sysfs fence/<rid>/ on the leader's mount)."""
        return self.fencing.requests

    def answer_fence(self, rid: int, *, fenced: bool = False, error: bool = False) -> None:
        """An agent's answer to a fence request (sysfs writes of fenced/error); FsError
        ENOENT if rid has no request."""
        self.fencing.answer(rid, fenced=fenced, error=error)

    @property
    def recovering(self) -> set[int]:
        """Mounted rids whose lock recovery is not finished (a copy)."""
        return set(self._recovering)

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
            try:
                return ExtentSet(exts)
            except ValueError as e:
                raise self._corrupt(f"{name} extent list: {e}") from None

        self.meta_free = load("meta_free", sb.meta_free)
        self.data_free = load("data_free", sb.data_free)
        # everything pending counts as freed by the first commit of this server
        self.meta_pend_cur = load("meta_pending", sb.meta_pending)
        self.data_pend_cur = load("data_pending", sb.data_pending)
        why = _allocator_problem(sb, self.meta_free, self.meta_pend_cur, self.data_free,
                                 self.data_pend_cur, chains)
        if why:
            raise self._corrupt(why)
        self.meta_pend_prev = ExtentSet()
        self.data_pend_prev = ExtentSet()
        self._lists = _Lists({"meta_free": sb.meta_free, "data_free": sb.data_free,
                              "meta_pending": sb.meta_pending,
                              "data_pending": sb.data_pending}, chains)
        self.fs_root = Btree(self.blocks, sb.fs_root)
        self.logs = Btree(self.blocks, sb.logs_root)
        self.mounted = Btree(self.blocks, sb.mounted_clients)
        self.srch = Btree(self.blocks, sb.srch_root)
        # spec §2.1: seq = max(super.seq, largest log item seq); the open transactions'
        # seqs were committed with their records
        for lt in self._records():
            sb.seq = max(sb.seq, lt.get_trans_seq + 1, lt.max_item_seq + 1)
            self._last_nr[lt.rid] = max(self._last_nr.get(lt.rid, 0), lt.nr)
            if lt.flags & LOG_TREES_FLAG_FINALIZED:
                self._merge_wake.set()
        # spec §2.3 recovery: every mounted rid must greet and recover its locks
        self._recovering = {rid for rid, _a, _p, _f in self._mounted_records()}
        self._begin_epoch()
        self._stable = self._snapshot_roots()

    def _corrupt(self, why: str) -> FsError:
        log.error("%s: corrupt allocator state in the super: %s", self.meta_dev.path, why, extra=KMSG)
        return FsError(errno.EIO, f"{self.meta_dev.path}: corrupt allocator state: {why}")

    def _peek_mounted_addrs(self) -> dict[int, str]:
        """rid -> ipv4 address of the mounted_clients on disk, read before this server
        loads (fence requests of earlier leaders are published before that)."""
        try:
            sb = read_super(self.meta_dev)
            tree = Btree(MetaBlocks(self.meta_dev, sb.fsid, 16, parsed_blocks=16),
                         sb.mounted_clients)
            return {k[1]: fmt.unpack_mounted_client(it.value)[0]
                    for k, it in tree.items(MOUNTED_FIRST, MOUNTED_LAST)}
        except Exception as e:  # only an address for a sysfs file: never fatal
            log.warning("could not read mounted clients for fencing: %s", e)
            return {}

    def _mounted_addr(self, rid: int) -> str:
        item = self.mounted.lookup(fmt.mounted_client_key(rid)) if self.sb else None
        if item is None:
            return "0.0.0.0"
        return fmt.unpack_mounted_client(item.value)[0]

    def _begin_epoch(self) -> None:
        self._epoch += 1
        self.epoch_seq = self.next_seq()
        for t in (self.fs_root, self.logs, self.mounted, self.srch):
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
        """GET_ROOTS reply as of the last commit (roots on disk), with each tree under a
        merge in flight's "merged up to" key (fs/totl.py)."""
        logs = Btree(self.blocks, self.logs.root)
        merged: dict[tuple[int, int], list[int]] = {}
        status = logs.lookup(fmt.log_merge_status_key())
        if status is not None and not status.deleted:
            upto, trees = fmt.unpack_log_merge_status(status.value)
            merged = {t: list(upto) for t in trees}
        recs = [fmt.unpack_log_trees(it.value)
                for _k, it in logs.items(LOG_TREES_FIRST, LOG_TREES_LAST)]
        out = {
            "fs_root": net.root_to_wire(self.fs_root.root),
            "logs": [{"rid": lt.rid, "nr": lt.nr, "item_root": net.root_to_wire(lt.item_root),
                      "max_item_seq": lt.max_item_seq, "flags": lt.flags,
                      "merged": merged.get((lt.rid, lt.nr))}
                     for lt in recs],
            "srch_root": net.root_to_wire(self.srch.root),
        }
        for d, lt in zip(out["logs"], recs, strict=True):
            d["srch_file"] = net.srch_file_to_wire(lt.srch_file)
        return out

    # ------------------------------------------------------------------ commits

    async def commit(self) -> None:
        """Make every change made so far durable (super written and flushed)."""
        want = self._epoch
        async with self._commit_lock:
            if self._failed is not None:
                raise FsError(errno.EIO, f"server failed: {self._failed}")
            if self._epoch > want:
                return  # a commit that started after our changes wrote them
            try:
                # a caller cancelled half-way (its connection dropped) must not leave
                # memory ahead of disk: the commit runs to its end
                with trio.CancelScope(shield=True):
                    await self._commit_locked()
            except Exception as e:
                # a half-done commit leaves memory ahead of disk: stop serving
                if isinstance(e, FsError):  # a reason (ENOSPC, EIO): one line
                    log.error("server commit failed: %s", e, extra=KMSG)
                else:
                    log.exception("server commit failed")
                self._fail(f"commit failed: {e}")
                raise FsError(errno.EIO, f"server commit failed: {e}") from e

    def _fail(self, why: str) -> None:
        """Stop serving: we can no longer be trusted to write the super (spec §2.3: a
        failed fence stops the server; the quorum elects again)."""
        if self.failed.is_set():
            return
        log.error("server fsid %016x stopping: %s", self.sb.fsid if self.sb else 0, why, extra=KMSG)
        self.fail_reason = why
        self._failed = ServerFailed(why)
        self.failed.set()
        if self._scope is not None:
            self._scope.cancel()

    async def _commit_locked(self) -> None:
        sb = self.sb
        seq = self.epoch_seq
        # 1. every block of the commit, synchronously (state cannot change under us)
        sb.fs_root = self.fs_root.flush()
        sb.logs_root = self.logs.flush()
        sb.mounted_clients = self.mounted.flush()
        sb.srch_root = self.srch.flush()
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

    async def serve(self, listener: Any, *, fence_targets: Iterable[Any] = (),
                    task_status: trio.TaskStatus[Server] = trio.TASK_STATUS_IGNORED) -> None:
        """Fence `fence_targets`, load the volume and serve connections from listener (a
        trio Listener, or a list of them) until cancelled, `stop()`, `shutdown()` or a
        failure (`failed`)."""
        listeners = list(listener) if isinstance(listener, list | tuple) else [listener]

        async def opened() -> list:
            return listeners

        await self._serve(opened, fence_targets, task_status)

    async def serve_tcp(self, addr: str, port: int, *, fence_targets: Iterable[Any] = (),
                        task_status: trio.TaskStatus[Server] = trio.TASK_STATUS_IGNORED
                        ) -> None:
        """Start as spec §2.1 says: fence earlier leaders (`fence_targets`: objects with
        .rid, .term and .reason, e.g. fs.quorum.FenceTarget), waiting up to
        start_fence_timeout for them (ServerFailed if they are not fenced), reclaim them,
        load, then bind TCP on the quorum slot's address, start the lock server and
        recovery, and report started."""
        self.slot_addr = f"{addr}:{port}"

        async def opened() -> list:
            listener = await net.open_listener(addr, port)
            self.listen_addr = listener.socket.getsockname()[:2]
            return [listener]

        await self._serve(opened, fence_targets, task_status)

    async def _serve(self, open_listeners, fence_targets: Iterable[Any],
                     task_status: trio.TaskStatus[Server]) -> None:
        self._scope = trio.CancelScope()
        self._running = True
        listeners: list = []
        started = False
        log.info("server starting at %s", self.slot_addr, extra=KMSG)
        try:
            with self._scope, _stale_is_corrupt():
                await self._fence_at_start(list(fence_targets))
                listeners = await open_listeners()
                async with trio.open_nursery() as nursery:
                    self._nursery = nursery
                    self.lock_server.start(nursery)
                    self.lock_server.begin_recovery(set(self._recovering))
                    nursery.start_soon(self._merge_worker)
                    nursery.start_soon(self._farewell_worker)
                    nursery.start_soon(self._fence_worker)
                    if self._recovering:
                        nursery.start_soon(self._recovery_timer)
                    for lst in listeners:
                        nursery.start_soon(self._accept_loop, lst)
                    log.info("server fsid %016x term %d serving, seq %d, %d mounted rids "
                             "to recover", self.sb.fsid, self.term, self.sb.seq,
                             len(self._recovering))
                    log.info("server ready at %s", self.slot_addr, extra=KMSG)
                    if self._recovering:
                        log.info("waiting for %d clients", len(self._recovering), extra=KMSG)
                    started = True
                    task_status.started(self)
        finally:
            self._say_shutting_down()  # (whoever cancelled us did not say it)
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
            log.info("server stopped at %s", self.slot_addr, extra=KMSG)
        if not started:
            raise ServerFailed(self.fail_reason or "server stopped before it started")

    async def _fence_at_start(self, targets: list[Any]) -> None:
        """Fence the earlier leaders, then load; reclaim the fenced rids (their open log
        trees are finalized and merged).  ServerFailed if a fence fails or times out."""
        rids: dict[int, str] = {}
        for t in targets:
            rids.setdefault(int(t.rid), getattr(t, "reason", None) or REASON_QUORUM_BLOCK_LEADER)
        if rids:
            addrs = self._peek_mounted_addrs()
            for rid, reason in rids.items():
                self.fencing.request(rid, addrs.get(rid, "0.0.0.0"), reason)
            start = trio.current_time()
            deadline = start + self.start_fence_timeout
            next_note = start + FENCE_WAIT_NOTE_S
            while True:
                reqs = [self.fencing.requests.get(rid) for rid in rids]
                why = ""
                if any(r is None or r.error for r in reqs):
                    why = "fencing an earlier leader failed"
                elif all(r.fenced for r in reqs):
                    break
                elif trio.current_time() >= deadline:
                    why = (f"earlier leaders not fenced within {self.start_fence_timeout:g} s: "
                           + " ".join(f"{r:016x}" for r in rids))
                if why:
                    for rid in rids:
                        self.fencing.remove(rid)
                    self.fail_reason = why
                    self._failed = ServerFailed(why)
                    self.failed.set()
                    log.error("server not starting: %s", why, extra=KMSG)
                    raise ServerFailed(why)
                now = trio.current_time()
                if now >= next_note:
                    # the mount command shows this while the mount waits (fs/mount.py)
                    log.warning("waiting for rid %s to be fenced (%.0fs so far): no fencing "
                                "agent has answered; is scoutfs-fenced running?",
                                " ".join(f"{r:016x}" for r, q in zip(rids, reqs, strict=True)
                                         if q is not None and not q.fenced), now - start)
                    next_note = now + FENCE_WAIT_NOTE_EVERY_S
                await self.fencing.wait_change(max(0.0, min(deadline, next_note) - now))
        self._load()
        if rids:
            merge = False
            for rid, reason in rids.items():
                merge |= self._reclaim_rid(rid, f"fenced: {reason}")
            await self.commit()
            for rid in rids:
                self.fencing.remove(rid)
            if merge:
                self._merge_wake.set()

    async def shutdown(self) -> None:
        """Stop serving: connections close, background work stops.  Changes not yet
        committed are dropped (every reply was sent after its commit)."""
        self._say_shutting_down()
        if self._nursery is not None:
            # let an in-flight merge and commit finish: cancelling one half-way would leave
            # memory ahead of disk (and log it as a failure)
            async with self._merge_lock, self._commit_lock:
                if self._scope is not None:
                    self._scope.cancel()
        elif self._scope is not None:
            self._scope.cancel()
        if self._running:
            await self._done.wait()

    def _say_shutting_down(self) -> None:
        if self._running and not self._done.is_set() and not self._said_shutdown:
            self._said_shutdown = True
            log.info("server shutting down at %s", self.slot_addr, extra=KMSG)

    async def stop(self) -> None:
        """Stop serving now (demotion: a higher term elected another server): no
        farewell, no waiting for a merge; a commit already writing completes (it is
        shielded), nothing else is written."""
        self._say_shutting_down()
        if self._scope is not None:
            self._scope.cancel()
        if self._running:
            await self._done.wait()

    async def _accept_loop(self, listener) -> None:
        while True:
            try:
                stream = await listener.accept()
            except (trio.ClosedResourceError, trio.BrokenResourceError):
                return
            except OSError as e:  # e.g. out of fds: keep listening
                log.error("accept failed: %s", e)
                await trio.sleep(0.1)
                continue
            net.setup_accepted(stream)
            self._nursery.start_soon(self._serve_conn, stream)

    async def _serve_conn(self, stream) -> None:
        # every payload is checked against its schema (fs/net.py) before a handler sees
        # it, and nothing but a greeting is accepted before one succeeded: a bad frame
        # closes this connection only (one log line), never the server
        conn = Connection(stream, name="server", schemas=net.PROTOCOL, require_greeting=True)
        log.info("server accepted %s -> %s", conn.sock, conn.peer, extra=KMSG)
        conn.register(Cmd.GREETING, lambda p: self._greeting(conn, p), close_on_error=True)
        handlers = {
            Cmd.ALLOC_INODES: self._alloc_inodes,
            Cmd.GET_LOG_TREES: self._get_log_trees,
            Cmd.COMMIT_LOG_TREES: self._commit_log_trees,
            Cmd.GET_ROOTS: self._get_roots,
            Cmd.GET_LAST_SEQ: self._get_last_seq,
            Cmd.STATFS: self._statfs,
            Cmd.FAREWELL: self._farewell,
            Cmd.SRCH_GET_COMPACT: self.srch_server.get_compact,
            Cmd.SRCH_COMMIT_COMPACT: self.srch_server.commit_compact,
            Cmd.OPEN_INO_MAP: self._open_ino_map,
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
        self._note_rids_changed()
        if self._nursery is not None and rid not in self._reclaimed and not self.failed.is_set():
            log.info("rid %016x disconnected", rid)
            self._nursery.start_soon(self._reconnect_timer, rid, self._conn_gen.get(rid, 0))

    async def _send_invalidate(self, rid: int, key: fmt.Key, old_mode: int,
                               new_mode: int) -> None:
        conn = self._conns.get(rid)
        if conn is None:
            # stays pending in the lock server: resent when the rid greets again
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
        if self._failed is not None:
            raise FsError(errno.EIO, "server failed")
        flags = int(p.get("flags", 0))
        reply = {"server_term": self.term, "fmt_vers": sb.fmt_vers, "rid": rid, "gone": False}
        item = self.mounted.lookup(fmt.mounted_client_key(rid))
        if item is None:
            if flags & net.GREETING_FLAG_FAREWELL:
                # its farewell was answered (or it was reclaimed) while it was away
                log.info("rid %016x greets in farewell but is gone", rid)
                return {**reply, "gone": True}
            if p.get("resume") or rid in self._reclaimed or rid in self.fencing.requests:
                raise FsError(errno.ENOLINK, f"rid {rid:016x} is not mounted (reclaimed)")
        elif rid in self.fencing.requests:
            raise FsError(errno.ENOLINK, f"rid {rid:016x} is being fenced")
        old = self._conns.get(rid)
        conn.context = rid
        conn.set_greeted()
        self._conns[rid] = conn
        self._conn_gen[rid] = self._conn_gen.get(rid, 0) + 1
        self._note_rids_changed()
        if conn.closed.is_set():
            self._conn_closed(conn)  # dropped while we looked: the reconnect timer runs
            raise net.ConnectionLost("greeting connection closed")
        if old is not None and old is not conn:
            # resume: the new connection replaces the old one (its handlers are
            # cancelled; the client resends what they did not answer)
            old.context = None
            await old.aclose()
        if item is None:
            addr, port = conn.peer_addr
            if addr.count(".") != 3:
                addr = "0.0.0.0"
            mflags = fmt.MOUNTED_CLIENT_FLAG_QUORUM if flags & net.GREETING_FLAG_QUORUM else 0
            self.mounted.insert(fmt.mounted_client_key(rid),
                                Item(self.epoch_seq, 0,
                                     fmt.pack_mounted_client(addr, port, mflags)))
            await self.commit()
            log.info("greeting from rid %016x at %s:%d", rid, addr, port)
            # a new quorum member may be what a waiting farewell needs
            self._farewell_wake.set()
        elif rid in self._recovering:
            log.info("rid %016x reconnected: recovering its locks", rid)
            self._nursery.start_soon(self._recover_rid, rid, conn)
        else:
            log.info("rid %016x reconnected", rid)
            self.lock_server.resend_invalidations(rid)
        return reply

    async def _recover_rid(self, rid: int, conn: Connection) -> None:
        """LOCK_RECOVER (spec §2.3): collect the locks a reconnected rid holds, page by
        page, and give them to the lock server.  A lost connection leaves the rid
        recovering: its next greeting starts again (or the recovery timer fences it)."""
        entries: list[dict] = []
        start = None
        try:
            while True:
                r = await conn.request(Cmd.LOCK_RECOVER, {"start": start, "nr": RECOVER_PAGE})
                page = r["locks"]
                last = net.key_from_wire(start) if start is not None else None
                for e in page:
                    key = net.key_from_wire(e["key"])
                    if last is not None and key <= last:
                        # pages are in ascending key order after `start`: anything else
                        # could make us ask forever
                        await conn.aclose()
                        raise FsError(errno.EINVAL, f"LOCK_RECOVER page out of order at "
                                                    f"{fmt.format_key(key)}")
                    last = key
                    entries.append({"key": key, "mode": int(e["mode"]),
                                    "write_seq": int(e.get("write_seq", 0))})
                if len(page) < RECOVER_PAGE:
                    break
                start = page[-1]["key"]
        except FsError as e:
            log.warning("lock recovery of rid %016x interrupted: %s", rid, e)
            return
        if (rid not in self._recovering or self._conns.get(rid) is not conn
                or rid in self.fencing.requests):
            return  # a newer connection recovers it, or it is being fenced
        # write seqs the previous server granted may be above our seq (grants are not
        # committed): later grants must still be newer
        for e in entries:
            self.sb.seq = max(self.sb.seq, e["write_seq"] + 1)
        self.lock_server.recover(rid, entries)
        self.lock_server.recovery_done(rid)
        self._recovering.discard(rid)
        self._note_rids_changed()
        self.counters.inc("server_lock_recover")
        log.info("rid %016x recovered %d locks", rid, len(entries))
        if not self._recovering:
            log.info("all clients recovered", extra=KMSG)
        self._farewell_wake.set()

    def _note_rids_changed(self) -> None:
        self._rids_changed.set()
        self._rids_changed = trio.Event()

    async def _open_ino_map(self, rid: int, p: dict) -> dict:
        """OPEN_INO_MAP (spec §4.5): the OR of the open maps of one inode group of every
        mounted rid but the asker.  Waits for lock recovery first (a recovering mount may
        hold inodes open), then asks each rid over its connection; a rid that is away is
        waited for until it reconnects or is reclaimed (fenced, farewell), and one that
        departs meanwhile drops out of the request."""
        group = int(p["group"])
        while self._recovering:
            await self._rids_changed.wait()
        rids = [r for r, _a, _p, _f in self._mounted_records() if r != rid]
        maps: list[int] = []
        async with trio.open_nursery() as n:
            for other in rids:
                n.start_soon(self._ask_omap, other, group, maps)
        bits = 0
        for b in maps:
            bits |= b
        return {"bits": omap.to_wire(bits)}

    async def _ask_omap(self, rid: int, group: int, maps: list[int]) -> None:
        while True:
            changed = self._rids_changed
            if (rid in self._reclaimed
                    or self.mounted.lookup(fmt.mounted_client_key(rid)) is None):
                return  # departed: its open map went with it
            conn = self._conns.get(rid)
            if conn is None:
                await changed.wait()  # away: wait for its reconnect or its reclaim
                continue
            try:
                r = await conn.request(Cmd.OPEN_INO_MAP, {"group": group})
            except net.ConnectionLost:
                if self._conns.get(rid) is conn:
                    await changed.wait()
                continue
            except FsError as e:
                # it could not answer: count every inode of the group as open there, so
                # nothing is deleted under it (its own release or a later scan retries)
                log.warning("OPEN_INO_MAP to rid %016x failed: %s", rid, e)
                maps.append((1 << omap.GROUP_NR) - 1)
                return
            maps.append(omap.from_wire(r["bits"]))
            return

    async def _alloc_inodes(self, rid: int, p: dict) -> dict:
        count = int(p["count"])
        if count <= 0 or count > 1 << 20:
            raise FsError(errno.EINVAL, f"alloc_inodes count {count}")
        first = self.sb.next_ino
        self.sb.next_ino += count
        # committed before replying: numbers are never handed out twice, even after a crash
        await self.commit()
        return {"first": first, "nr": count}

    def _lend(self, free: ExtentSet, want: int, minimum: int, reserve: int = 0,
              max_extents: int = LEND_MAX_EXTENTS) -> list[tuple[int, int]]:
        avail = free.total - reserve
        if want <= 0 or avail <= 0:
            return []
        count = min(want, max(avail // LEND_FRACTION, min(avail, minimum)))
        out: list[tuple[int, int]] = []
        while count > 0 and len(out) < max_extents:
            got = free.alloc(count)
            if got is None:
                break
            out.append(got)
            count -= got[1]
        return out

    async def _get_log_trees(self, rid: int, p: dict) -> dict:
        recs = self._records(rid)
        lt = recs[-1] if recs else None
        finalized = False
        if (lt is not None and not lt.flags & LOG_TREES_FLAG_FINALIZED
                and lt.get_trans_seq <= lt.commit_trans_seq and lt.item_root.height > 0
                and self._want_finalize(lt)):
            # spec §1.6: trees are finalized here, between a committed transaction and
            # the next, never under a commit that may still be resent
            self._finalize(lt)
            self._put_record(lt)
            finalized = True
        if lt is None or lt.flags & LOG_TREES_FLAG_FINALIZED:
            nr = max(self._last_nr.get(rid, -1), lt.nr if lt else -1) + 1
            self._last_nr[rid] = nr
            lt = LogTrees(rid=rid, nr=nr)
        meta = ExtentSet(lt.meta_avail)
        data = ExtentSet(lt.data_avail)
        # the record must still fit in an item with what we add (a mount's avail can be
        # fragmented: refusing here would leak what was already taken from the free sets)
        lt.meta_avail, lt.data_avail = meta.extents(), data.extents()
        room = max(0, (fmt.MAX_VAL_SIZE - len(fmt.pack_log_trees(lt))) // fmt.EXTENT.size)
        lent = self._lend(self.meta_free, META_LEND_TARGET - meta.total, META_LEND_MIN,
                          SERVER_META_RESERVE, min(LEND_MAX_EXTENTS, room // 2))
        for e in lent:
            meta.add(*e)
        if data.total < DATA_LEND_LOW:
            for e in self._lend(self.data_free, DATA_LEND_TARGET - data.total, DATA_LEND_MIN,
                                max_extents=min(LEND_MAX_EXTENTS, room - len(lent))):
                data.add(*e)
        lt.meta_avail = meta.extents()
        lt.data_avail = data.extents()
        if lt.get_trans_seq <= lt.commit_trans_seq:
            # open a new transaction; one already open keeps its seq (its items have it,
            # and a resent GET_LOG_TREES must not move it)
            lt.get_trans_seq = self.next_seq()
        self._put_record(lt)
        await self.commit()
        if finalized:
            self._merge_wake.set()
        return net.log_trees_to_wire(lt)

    def _want_finalize(self, lt: LogTrees) -> bool:
        """Finalize a committed tree: too tall, a coordinated finalize is collecting every
        tree, or the trigger log_merge_force_finalize_ours is armed (it fires here)."""
        return (lt.item_root.height > FINALIZE_HEIGHT or self._finalize_all
                or self.triggers.fire("log_merge_force_finalize_ours"))

    async def _commit_log_trees(self, rid: int, p: dict) -> dict:
        nr = int(p["nr"])
        if int(p.get("rid", rid)) != rid:
            raise FsError(errno.EINVAL, "commit of another mount's log tree")
        item = self.logs.lookup(fmt.log_trees_key(rid, nr))
        if item is None:
            raise FsError(errno.ENOENT, f"no log tree {rid:016x}.{nr}")
        lt = fmt.unpack_log_trees(item.value)
        trans_seq = int(p.get("trans_seq", lt.get_trans_seq))
        if lt.commit_trans_seq == lt.get_trans_seq == trans_seq:
            # a resend of a commit already made (its reply was lost in a reconnect or a
            # failover): change nothing, but reply only once it is on disk
            self.counters.inc("server_commit_resend")
            await self.commit()
            return {}
        if lt.flags & LOG_TREES_FLAG_FINALIZED:
            raise FsError(errno.EINVAL, f"log tree {rid:016x}.{nr} is finalized")
        if trans_seq != lt.get_trans_seq:
            raise FsError(errno.EINVAL, f"commit of transaction {trans_seq} of log tree "
                                        f"{rid:016x}.{nr}, open is {lt.get_trans_seq}")
        meta_avail = net.extents_from_wire(p["meta_avail"])
        data_avail = net.extents_from_wire(p["data_avail"])
        meta_freed = net.extents_from_wire(p.get("meta_freed", []))
        data_freed = net.extents_from_wire(p.get("data_freed", []))
        # check everything before changing anything: a bad commit is the mount's bug (or
        # a hostile peer's: nothing it claims may make a later commit of ours fail)
        for what, exts, first, end in (
            ("meta", meta_freed, fmt.META_DEV_START_BLKNO, self.sb.total_meta_blocks),
            ("data", data_freed, fmt.DATA_DEV_START_BLKNO, self.sb.total_data_blocks),
        ):
            for s, n in exts:
                if s < first or s + n > end:
                    raise FsError(errno.EINVAL, f"{what} freed ({s}, {n}) is outside the "
                                                f"device's blocks [{first}, {end})")
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
        new_root = net.root_from_wire(p["item_root"])
        srch_file = net.srch_file_from_wire(p.get("srch_file"))
        record = dataclasses.replace(lt, item_root=new_root, meta_avail=meta_avail,
                                     data_avail=data_avail)
        if len(fmt.pack_log_trees(record)) > fmt.MAX_VAL_SIZE:
            raise FsError(errno.EINVAL, f"log tree {rid:016x}.{nr} record would be too big "
                                        f"({len(meta_avail)} + {len(data_avail)} extents)")
        # apply
        for e in meta_freed:
            self.meta_pend_cur.add(*e)
        for e in data_freed:
            self.data_pend_cur.add(*e)
        lt.item_root = new_root
        lt.meta_avail, lt.data_avail = meta_avail, data_avail
        lt.max_item_seq = max(lt.max_item_seq, int(p.get("max_item_seq", 0)))
        lt.commit_trans_seq = lt.get_trans_seq
        lt.srch_file = srch_file
        self.srch_server.rotate_log(lt, force=False)
        self.sb.inode_count = min(U64_MAX, max(
            0, self.sb.inode_count + int(p.get("inode_count_delta", 0))))
        self._put_record(lt)
        await self.commit()
        return {}

    def _finalize(self, lt: LogTrees) -> None:
        """No more writes to this tree: drain its lent space, mark it for merging (the
        caller stores the record)."""
        for e in lt.meta_avail:
            self.meta_free.add(*e)
        for e in lt.data_avail:
            self.data_free.add(*e)
        lt.meta_avail, lt.data_avail = [], []
        self.srch_server.rotate_log(lt, force=True)  # its srch log goes to srch_root
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
        """Clean unmount: answered by the farewell worker once the quorum rules allow it,
        after reclaim_rid is on disk.  A resend joins the pending request."""
        if rid not in self._farewells:
            log.info("farewell request from rid %016x", rid)
            self._farewells[rid] = trio.Event()
        ev = self._farewells[rid]
        self._farewell_wake.set()
        await ev.wait()
        return {}

    def _farewells_ready(self) -> list[int]:
        """The pending farewells that may be answered now (spec §2.3): a non-quorum mount
        at once; a quorum member while more than votes_needed quorum members would stay
        mounted, or once every remaining mount is a departing quorum member; any rid only
        after its own lock recovery."""
        mounted = {rid: flags for rid, _a, _p, flags in self._mounted_records()}
        votes = votes_needed(len(self.sb.quorum_slots))
        nr_quorum = sum(1 for f in mounted.values() if f & fmt.MOUNTED_CLIENT_FLAG_QUORUM)
        ready: list[int] = []
        for rid in self._farewells:
            if rid in self._recovering:
                continue
            flags = mounted.get(rid)
            if flags is None or not flags & fmt.MOUNTED_CLIENT_FLAG_QUORUM:
                ready.append(rid)
            elif nr_quorum > votes:
                ready.append(rid)
                nr_quorum -= 1
        remaining = [rid for rid in mounted if rid not in ready]
        if remaining and all(rid in self._farewells and rid not in self._recovering
                             and mounted[rid] & fmt.MOUNTED_CLIENT_FLAG_QUORUM
                             for rid in remaining):
            ready += [rid for rid in self._farewells if rid in remaining]
        return ready

    async def _farewell_worker(self) -> None:
        while True:
            await self._farewell_wake.wait()
            self._farewell_wake = trio.Event()
            ready = self._farewells_ready()
            if not ready:
                continue
            merge = False
            for rid in ready:
                merge |= self._reclaim_rid(rid, "farewell", close_conn=False)
            await self.commit()
            for rid in ready:
                ev = self._farewells.pop(rid, None)
                if ev is not None:
                    ev.set()
            if merge:
                self._merge_wake.set()

    # ------------------------------------------------------------------ reclaim, fencing

    def _reclaim_rid(self, rid: int, reason: str, *, close_conn: bool = True) -> bool:
        """reclaim_rid (spec §2.3), synchronously: drop the rid's lock state, finalize its
        open log tree (returning its lent space), delete its mounted_clients item last.
        Idempotent.  Returns whether a tree now waits for merging.  Only for a rid that
        said farewell or was fenced."""
        self.lock_server.remove_rid(rid)
        self.srch_server.cancel_rid(rid)
        merge = False
        skip_finalize = self.triggers.fire("reclaim_skip_finalize")
        for lt in self._records(rid):
            if lt.flags & LOG_TREES_FLAG_FINALIZED:
                merge = True
                continue
            if skip_finalize and lt.item_root.height > 0:
                # trigger: leave the open tree to finalize_and_merge's reclaim of the
                # trees of rids that are no longer mounted ("orphan log trees")
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
        self._recovering.discard(rid)
        self._reclaimed.add(rid)
        self._note_rids_changed()
        conn = self._conns.pop(rid, None)
        if conn is not None:
            conn.context = None
            if close_conn and self._nursery is not None:
                # a fenced mount that still talks to us learns it is gone when it greets
                self._nursery.start_soon(conn.aclose)
        log.info("reclaimed resources of rid %016x (%s)", rid, reason, extra=KMSG)
        return merge

    def _fence(self, rid: int, reason: str) -> None:
        """Publish a fence request; the fence worker reclaims the rid once it is fenced."""
        if rid in self._reclaimed or rid in self.fencing.requests:
            return
        self.counters.inc("server_fence_request")
        self.fencing.request(rid, self._mounted_addr(rid), reason)

    async def _fence_worker(self) -> None:
        """Reclaim fenced rids; stop the server on a fence error or timeout (spec §2.3).
        Woken by every change of the requests, and polls every second while any is
        pending (the timeout)."""
        while True:
            now = trio.current_time()
            done: list[FenceRequest] = []
            for req in list(self.fencing.requests.values()):
                if req.error:
                    self._fail(f"fencing rid {req.rid:016x} ({req.reason}) reported an error")
                    return
                if req.fenced:
                    done.append(req)
                elif now - req.started >= self.fence_timeout:
                    self._fail(f"fencing rid {req.rid:016x} ({req.reason}) not answered "
                               f"within {self.fence_timeout:g} s")
                    return
            if done:
                merge = False
                for req in done:
                    merge |= self._reclaim_rid(req.rid, f"fenced: {req.reason}")
                await self.commit()
                for req in done:
                    self.fencing.remove(req.rid)
                    ev = self._farewells.pop(req.rid, None)
                    if ev is not None:
                        ev.set()
                if merge:
                    self._merge_wake.set()
                self._farewell_wake.set()
                continue
            await self.fencing.wait_change(1.0 if self.fencing.requests else None)

    async def _recovery_timer(self) -> None:
        await trio.sleep(self.recovery_timeout)
        for rid in sorted(self._recovering):
            log.warning("client rid %016x lock recovery timed out after %g s", rid,
                        self.recovery_timeout, extra=KMSG_ERR)
            self._fence(rid, REASON_CLIENT_RECOVERY)

    async def _reconnect_timer(self, rid: int, gen: int) -> None:
        await trio.sleep(self.reconnect_timeout)
        if rid in self._conns or self._conn_gen.get(rid, 0) != gen:
            return  # it came back (maybe to leave again: that one has its own timer)
        if rid in self._reclaimed or self.mounted.lookup(fmt.mounted_client_key(rid)) is None:
            return
        log.warning("client rid %016x did not reconnect within %g s", rid,
                    self.reconnect_timeout, extra=KMSG)
        self._fence(rid, REASON_CLIENT_RECONNECT)

    # ------------------------------------------------------------------ log merge

    async def _merge_worker(self) -> None:
        while True:
            await self._merge_wake.wait()
            try:
                await self.finalize_and_merge()
            except FsError as e:
                log.error("log merge failed: %s", e)
                self._merge_wake = trio.Event()  # the next finalize tries again
            except Exception as e:
                # a log tree a mount committed can be garbage (a bug, or a hostile peer):
                # that must not stop the server; a failed commit stopped it already
                log.error("log merge failed: %r", e, exc_info=e)
                self._merge_wake = trio.Event()

    async def finalize_and_merge(self) -> bool:
        """Coordinated finalize (spec §1.6), then merge: open trees of rids that are no
        longer mounted are finalized (reclaimed_open_logs); every connected mount gets
        SYNC_LOG_TREES and, while we wait for the answers (at most
        log_merge_wait_timeout), every GET_LOG_TREES finalizes the committed tree; then
        every finalized tree is merged.  Returns whether anything was merged."""
        mounted = {rid for rid, _a, _p, _f in self._mounted_records()}
        for lt in self._records():
            if (not lt.flags & LOG_TREES_FLAG_FINALIZED and lt.rid not in mounted
                    and lt.rid not in self._conns and lt.item_root.height > 0):
                log.info("reclaiming orphan log trees for rid %016x nr %d", lt.rid, lt.nr,
                         extra=KMSG_ERR)
                self._finalize(lt)
                self._put_record(lt)
                self.counters.inc("reclaimed_open_logs")
        conns = list(self._conns.items())
        if conns and self.log_merge_wait_timeout > 0:
            self._finalize_all = True
            try:
                with trio.move_on_after(self.log_merge_wait_timeout):
                    async with trio.open_nursery() as n:
                        for rid, conn in conns:
                            n.start_soon(self._sync_log_trees, rid, conn)
            finally:
                self._finalize_all = False
        # what finalized while we waited is merged now, not in another round
        self._merge_wake = trio.Event()
        return await self.merge_now()

    async def _sync_log_trees(self, rid: int, conn: Connection) -> None:
        try:
            await conn.request(Cmd.SYNC_LOG_TREES, {})
        except FsError as e:
            log.debug("SYNC_LOG_TREES to rid %016x: %s", rid, e)

    async def merge_now(self) -> bool:
        """Merge every finalized log tree into fs_root in one pass and commit.  Returns
        whether anything was merged (counters log_merge_start/complete/no_finalized)."""
        async with self._merge_lock:
            records = self._records()
            fin = [lt for lt in records if lt.flags & LOG_TREES_FLAG_FINALIZED]
            # a merge partly committed before a server restart resumes: the same trees,
            # after the last key already in fs_root (merging a .totl. delta twice would
            # count it twice)
            resume_after = None
            status_key = fmt.log_merge_status_key()
            status = self.logs.lookup(status_key)
            if status is not None and not status.deleted:
                resume_after, was = fmt.unpack_log_merge_status(status.value)
                fin = [lt for lt in fin if (lt.rid, lt.nr) in set(was)]
            if not fin:
                if status is not None:
                    self.logs.delete(status_key)
                self.counters.inc("log_merge_no_finalized")
                return False
            self.counters.inc("log_merge_start")
            fin_keys = {(lt.rid, lt.nr) for lt in fin}
            fin_list = sorted(fin_keys)

            def note_progress(upto: fmt.Key | None) -> None:
                # before every await: any commit from here writes fs_root's partial sums
                # with the status saying which keys they cover (fs/totl.py)
                if upto is not None:
                    self.logs.insert(status_key, Item(self.epoch_seq, 0,
                                                      fmt.pack_log_merge_status(upto, fin_list)))

            def unmerged() -> list[LogTrees]:
                # read again after every await: meanwhile the clients of open trees commit
                # newer roots, and the blocks of the old ones are freed and may be reused
                return [lt for lt in self._records() if (lt.rid, lt.nr) not in fin_keys]

            others = unmerged()
            trees = [Btree(self.blocks, lt.item_root) for lt in fin]
            merged = heapq.merge(*[self._tree_stream(t, i) for i, t in enumerate(trees)])
            last_key = None
            n = 0
            pause = 0  # 1: checkpoint, 2: commit, at the next key (never inside one key)
            for (key, _negseq, _i), item in merged:
                if resume_after is not None and key <= resume_after:
                    continue  # in fs_root before the restart
                if pause and key != last_key:
                    # every tree's item of last_key is merged: fs_root has all keys up to
                    # it.  A commit bounds the dirty fs_root blocks held in memory; a
                    # partial merge on disk is safe, the finalized trees stay in logs_root
                    # until the end and the status records how far fs_root has them
                    note_progress(last_key)
                    if pause == 2:
                        await self.commit()
                    else:
                        await trio.lowlevel.checkpoint()
                    others = unmerged()
                    pause = 0
                if key[0] == fmt.ZONE_XATTR_TOTL:
                    totl.merge_into(self.fs_root, key, item)  # every tree's delta adds up
                    last_key = key
                else:
                    if key == last_key:
                        continue  # an older version of a key already merged
                    last_key = key
                    self._merge_item(key, item, others)
                n += 1
                if n % MERGE_COMMIT_ITEMS == 0 or (
                        n == 1 and self.triggers.fire("log_merge_force_partial")):
                    pause = 2  # commit at the next key (see above)
                elif n % MERGE_CHUNK == 0:
                    pause = max(pause, 1)
            # the merged trees' blocks are free once the commit dropping them is on disk
            for lt, t in zip(fin, trees, strict=True):
                for ref, _level in t.block_refs():
                    self.meta_pend_cur.add(ref.blkno, 1)
                for e in lt.meta_avail:
                    self.meta_free.add(*e)
                for e in lt.data_avail:
                    self.data_free.add(*e)
                self.logs.delete(fmt.log_trees_key(lt.rid, lt.nr))
            if self.logs.lookup(status_key) is not None:
                self.logs.delete(status_key)  # in the commit that drops the trees
            await self.commit()
            self.counters.inc("log_merge_complete")
            if resume_after is not None:
                self._merge_wake.set()  # trees finalized besides the resumed ones
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
        self.fs_root.insert(key, Item(item.seq, item.flags, item.value))

