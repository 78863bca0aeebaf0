"""`.srch.` xattrs: the srch log of each mount, compaction into sorted files, and search.

As upstream's srch.c (spec §5.10, §1.5): every create and delete of a ``.srch.`` xattr
logs the entry ``(hash64(name), ino, xattr id)``; an entry that appears twice means the
xattr was created and deleted, so entries cancel in pairs (ids are never reused within an
inode, and a replace keeps its id and logs nothing).  The on-disk files are in
`fs.format` (srch files section).

* **Logging (mount).**  `SrchLog` collects the entries of the open transaction; the commit
  (fs/trans.py) appends them to the mount's log file, recorded in its log_trees record, in
  the same copy-on-write blocks and the same COMMIT_LOG_TREES as the items: an xattr change
  and its srch entry are on disk together or not at all.
* **Rotation (server).**  At each commit whose log file reached `LOG_ROTATE_BLOCKS` (1 MiB)
  or when the server mount's trigger ``srch_force_log_rotate`` is armed (it fires only on a
  non-empty log), and always when a log tree is finalized (also at reclaim of a dead
  mount), the log file moves into the super's srch_root as a LOG item; the mount starts a
  new one.
* **Compaction (mounts ask, the server decides).**  Every ``srch/compact_delay_ms`` a mount
  sends SRCH_GET_COMPACT.  The server gives at most one compaction per mount at a time,
  recorded as a BUSY item (inputs and the meta extents lent for its output): at least
  `COMPACT_NR` log files, or `COMPACT_NR` sorted files of one order (log4 of their blocks).
  The mount merges the inputs (pairs cancel), writes a sorted file into the lent extents
  and sends SRCH_COMMIT_COMPACT; the server then swaps, in one commit, the inputs for the
  output, frees the inputs' blocks (delayed reuse) and returns the unused lent blocks.  A
  compaction that fails is committed as abandoned (counter ``srch_compact_error``); a dead
  mount's is cancelled by reclaim_rid.  Triggers: ``srch_compact_logs_pad_safe`` (server
  mount) lets the next log compaction run with fewer than COMPACT_NR log files (the batch
  is padded with what there is); ``srch_merge_stop_safe`` (compacting mount) stops the
  next merge after its first output leaf, a safe point: the compaction is abandoned whole
  and its inputs stay for the next one.
* **Search (SEARCH_XATTRS).**  Reads the stable roots (GET_ROOTS: srch_root and every log
  tree's committed log file), scans log files and the leaves of sorted files whose range
  holds the hash, and keeps the (ino, id)s found an odd number of times: candidate inodes
  of committed xattrs, sorted.  Stale blocks (a file compacted and freed meanwhile) retry
  with fresh roots.

Validation: every srch block read is checked (header and crc by `MetaBlocks`, then counts,
ordering of sorted files, refs that stay inside the file's stated size); a bad block is
FsError(EIO) for that search or compaction, never the mount's or server's end.  Every
message is checked against its schema (fs/net.py) and then against the server's records
(the compaction id, lent extents, the output's blocks).

Concurrency (trio; code between two awaits is atomic):
* `SrchLog.add` is synchronous and called inside a transaction hold with the xattr's items,
  so an entry joins exactly the transaction of its change; the commit takes the entries
  with no holder inside.
* The compaction worker holds no cluster lock and no transaction hold; it reads only files
  its BUSY item keeps alive (the server frees inputs only when that compaction commits) and
  writes only its lent blocks.  It checkpoints between blocks, so a big merge never stalls
  the daemon.
* The server's handlers change srch_root and the free sets synchronously, then await the
  commit (fs/server.py rules); reads of input files for freeing happen before any change.
* Search awaits only to fetch roots; each pass over the files is synchronous.
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Callable, Iterable

import trio

from fs import format as fmt
from fs.errors import FsError, StaleBlock
from fs.format import BlockRef, SrchEntry, SrchFile

log = logging.getLogger(__name__)

LOG_ROTATE_BLOCKS = (1 << 20) // fmt.META_BLOCK_SIZE  # log files rotate at 1 MiB
COMPACT_NR = 4  # files a compaction merges (fewer log files wait, unless padded)
COMPACT_MAX_BLOCKS = fmt.SRCH_PARENT_MAX_REFS - 2  # inputs of one compaction, at most
COMPACT_DELAY_MS_DEFAULT = 10_000  # srch/compact_delay_ms
COMPACT_DELAY_MS_MAX = 3_600_000
STALE_RETRIES = 5
SEARCH_MAX_NR = 1 << 20  # inodes one search reply carries at most

ENT = fmt.SRCH_ENTRY
ENTRIES_OFF = fmt.SRCH_ENTRIES_OFF


# --------------------------------------------------------------------------- file I/O


def _bad(blocks, blkno: int, why: str) -> FsError:
    return blocks.corrupt(blkno, f"srch block: {why}")


def read_parent(blocks, f: SrchFile) -> list[tuple[BlockRef, SrchEntry]]:
    """The leaf refs of a file, checked against the file's block count."""
    buf = blocks.read(f.ref, fmt.MAGIC_SRCH_PARENT)
    try:
        refs = fmt.unpack_srch_parent(buf)
    except ValueError as e:
        raise _bad(blocks, f.ref.blkno, str(e)) from None
    if len(refs) != f.blocks:
        raise _bad(blocks, f.ref.blkno, f"parent has {len(refs)} leaves, the file says "
                                        f"{f.blocks}")
    return refs


def read_leaf(blocks, ref: BlockRef) -> tuple[bytes, int]:
    """A leaf's verified bytes and entry count."""
    buf = blocks.read(ref, fmt.MAGIC_SRCH_BLOCK)
    try:
        nr = fmt.srch_block_nr(buf, fmt.SRCH_BLOCK_MAX_ENTRIES)
    except ValueError as e:
        raise _bad(blocks, ref.blkno, str(e)) from None
    if nr == 0:
        raise _bad(blocks, ref.blkno, "empty leaf")
    return buf, nr


def leaf_entries(buf: bytes, nr: int) -> list[SrchEntry]:
    return list(ENT.iter_unpack(memoryview(buf)[ENTRIES_OFF:ENTRIES_OFF + nr * ENT.size]))


def file_entries(blocks, f: SrchFile, *, is_sorted: bool) -> list[SrchEntry]:
    """Every entry of a file, checked: the count, and for sorted files ascending order
    within and across leaves and the parent's first entries."""
    if f.ref.blkno == 0:
        return []
    out: list[SrchEntry] = []
    for ref, first in read_parent(blocks, f):
        buf, nr = read_leaf(blocks, ref)
        ents = leaf_entries(buf, nr)
        if ents[0] != first:
            raise _bad(blocks, ref.blkno, "first entry differs from its parent's")
        if is_sorted:
            if out and out[-1] >= ents[0]:
                raise _bad(blocks, ref.blkno, "sorted leaves out of order")
            if any(ents[i] >= ents[i + 1] for i in range(len(ents) - 1)):
                raise _bad(blocks, ref.blkno, "sorted leaf out of order")
        out.extend(ents)
    if len(out) != f.entries:
        raise _bad(blocks, f.ref.blkno, f"file has {len(out)} entries, says {f.entries}")
    if out and (min(out) != f.first or max(out) != f.last):
        raise _bad(blocks, f.ref.blkno, "first/last entries differ from the file's")
    return out


def file_blknos(blocks, f: SrchFile) -> list[int]:
    """The blocks of a file (parent first), reading only its parent."""
    if f.ref.blkno == 0:
        return []
    return [f.ref.blkno] + [r.blkno for r, _first in read_parent(blocks, f)]


def _write_leaves(blocks, entries: list[SrchEntry], seq: int, alloc: Callable[[], int],
                  stop_after_first: bool = False) -> list[tuple[BlockRef, SrchEntry]]:
    refs = []
    step = fmt.SRCH_BLOCK_MAX_ENTRIES
    for i in range(0, len(entries), step):
        chunk = entries[i:i + step]
        blkno = alloc()
        blocks.write(blkno, seq, fmt.MAGIC_SRCH_BLOCK, fmt.pack_srch_leaf(chunk))
        refs.append((BlockRef(blkno, seq), chunk[0]))
        if stop_after_first:
            break
    return refs


def _write_parent(blocks, refs: list[tuple[BlockRef, SrchEntry]], nr_entries: int,
                  first: SrchEntry, last: SrchEntry, seq: int,
                  alloc: Callable[[], int]) -> SrchFile:
    if len(refs) > fmt.SRCH_PARENT_MAX_REFS:
        raise FsError(errno.EFBIG, f"srch file of {len(refs)} leaves is too big")
    blkno = alloc()
    blocks.write(blkno, seq, fmt.MAGIC_SRCH_PARENT, fmt.pack_srch_parent(refs))
    return SrchFile(BlockRef(blkno, seq), len(refs), nr_entries, first, last)


def write_sorted(blocks, entries: list[SrchEntry], seq: int,
                 alloc: Callable[[], int]) -> SrchFile:
    """A sorted file of ascending, distinct entries (the empty file for none)."""
    if not entries:
        return fmt.EMPTY_SRCH_FILE
    refs = _write_leaves(blocks, entries, seq, alloc)
    return _write_parent(blocks, refs, len(entries), entries[0], entries[-1], seq, alloc)


def append_log(blocks, f: SrchFile, entries: list[SrchEntry], seq: int,
               alloc: Callable[[], int], free: Callable[[int], None]) -> SrchFile:
    """Append entries to a log file, copy-on-write: the last leaf (when it has room) and
    the parent are rewritten into new blocks and their old blocks freed."""
    if not entries:
        return f
    refs: list[tuple[BlockRef, SrchEntry]] = []
    head: list[SrchEntry] = []
    nr = 0
    first, last = min(entries), max(entries)
    if f.ref.blkno:
        refs = read_parent(blocks, f)
        lref, _lfirst = refs[-1]
        buf, lnr = read_leaf(blocks, lref)
        if lnr < fmt.SRCH_BLOCK_MAX_ENTRIES:
            head = leaf_entries(buf, lnr)
            refs.pop()
            free(lref.blkno)
        free(f.ref.blkno)
        nr = f.entries
        first, last = min(first, f.first), max(last, f.last)
    refs += _write_leaves(blocks, head + entries, seq, alloc)
    return _write_parent(blocks, refs, nr + len(entries), first, last, seq, alloc)


def merge_entries(inputs: Iterable[list[SrchEntry]]) -> list[SrchEntry]:
    """The entries found an odd number of times across the inputs, ascending: a create
    and its delete cancel (as does a delete that meets its create in a later merge)."""
    every: list[SrchEntry] = []
    for ents in inputs:
        every.extend(ents)
    every.sort()
    out: list[SrchEntry] = []
    i, n = 0, len(every)
    while i < n:
        j = i + 1
        e = every[i]
        while j < n and every[j] == e:
            j += 1
        if (j - i) & 1:
            out.append(e)
        i = j
    return out


def order_of(blocks: int) -> int:
    """A sorted file's size class: log4 of its blocks (files of one order merge)."""
    return max(0, (max(1, blocks).bit_length() - 1) // 2)


# --------------------------------------------------------------------------- wire


def file_to_wire(f: SrchFile) -> list[int]:
    return [f.ref.blkno, f.ref.seq, f.blocks, f.entries, *f.first, *f.last]


def file_from_wire(v: list[int]) -> SrchFile:
    """A srch file a peer sent (schema-checked: ten u64s), checked for sense."""
    f = SrchFile(BlockRef(int(v[0]), int(v[1])), int(v[2]), int(v[3]),
                 (int(v[4]), int(v[5]), int(v[6])), (int(v[7]), int(v[8]), int(v[9])))
    if f.ref.blkno == 0:
        if f != fmt.EMPTY_SRCH_FILE:
            raise FsError(errno.EINVAL, "empty srch file with fields set")
        return f
    if f.ref.blkno < fmt.META_DEV_START_BLKNO:
        raise FsError(errno.EINVAL, f"srch file parent in reserved block {f.ref.blkno}")
    if not 1 <= f.blocks <= fmt.SRCH_PARENT_MAX_REFS:
        raise FsError(errno.EINVAL, f"srch file of {f.blocks} blocks")
    if not f.blocks <= f.entries <= f.blocks * fmt.SRCH_BLOCK_MAX_ENTRIES:
        raise FsError(errno.EINVAL, f"srch file of {f.entries} entries in {f.blocks} blocks")
    if f.first > f.last:
        raise FsError(errno.EINVAL, "srch file first entry after its last")
    return f


# --------------------------------------------------------------------------- logging


class SrchLog:
    """The srch entries of a mount's open transaction (fs/trans.py writes them)."""

    def __init__(self, counters=None) -> None:
        self.pending: list[SrchEntry] = []
        self.counters = counters

    def add(self, name: bytes, ino: int, xid: int) -> None:
        self.pending.append((fmt.hash64(bytes(name)), ino, xid))
        if self.counters is not None:
            self.counters.inc("srch_add_entry")

    def write(self, blocks, f: SrchFile, seq: int, meta_alloc) -> SrchFile:
        """Append the pending entries to log file f (in the commit, no holder inside);
        they are taken only once written."""
        if not self.pending:
            return f
        out = append_log(blocks, f, self.pending, seq, meta_alloc.alloc, meta_alloc.free)
        self.pending = []
        return out


def log_entry(mctx, name: bytes, ino: int, xid: int) -> None:
    """Log the create or delete of a ``.srch.`` xattr (inside the caller's hold, with the
    xattr's own item changes)."""
    slog = getattr(mctx.trans, "srch_log", None)
    if slog is not None:
        slog.add(name, ino, xid)


# --------------------------------------------------------------------------- search


def _scan_leaf(buf: bytes, nr: int, needle: bytes, counts: dict) -> None:
    """Count the entries of a leaf whose hash is needle's (found with bytes.find, then
    checked to sit at an entry boundary)."""
    end = ENTRIES_OFF + nr * ENT.size
    pos = buf.find(needle, ENTRIES_OFF, end)
    while pos >= 0:
        if (pos - ENTRIES_OFF) % ENT.size == 0:
            _h, ino, xid = ENT.unpack_from(buf, pos)
            k = (ino, xid)
            counts[k] = counts.get(k, 0) + 1
            pos = buf.find(needle, pos + ENT.size, end)
        else:
            pos = buf.find(needle, pos + 1, end)


def search_file(blocks, f: SrchFile, is_sorted: bool, h: int, counts: dict) -> None:
    if f.ref.blkno == 0 or not f.first[0] <= h <= f.last[0]:
        return
    refs = read_parent(blocks, f)
    needle = fmt.SRCH_ENTRY.pack(h, 0, 0)[:8]
    lo, hi = (h, 0, 0), (h, fmt.U64_MAX, fmt.U64_MAX)
    for i, (ref, first) in enumerate(refs):
        if is_sorted:
            if first > hi:
                break
            if i + 1 < len(refs) and refs[i + 1][1] < lo:
                continue
        buf, nr = read_leaf(blocks, ref)
        _scan_leaf(buf, nr, needle, counts)


def root_files(blocks, root: fmt.BtreeRoot) -> tuple[list[SrchFile], list[SrchFile]]:
    """(log files, sorted files) of a srch_root."""
    from fs.btree import Btree

    logs: list[SrchFile] = []
    sorted_: list[SrchFile] = []
    if root.height == 0:
        return logs, sorted_
    first = (fmt.ZONE_SRCH, 0, 0, 0, 0, 0)
    last = (fmt.ZONE_SRCH, fmt.U64_MAX, 255, fmt.U64_MAX, fmt.U64_MAX, 255)
    for k, it in Btree(blocks, root).items(first, last):
        if it.deleted or k[2] == fmt.SRCH_BUSY_TYPE:
            continue
        try:
            f = fmt.unpack_srch_file(it.value)
        except Exception:  # noqa: BLE001 - a short value is a corrupt item
            raise FsError(errno.EIO, f"srch_root item {fmt.format_key(k)} is not a file") \
                from None
        (logs if k[2] == fmt.SRCH_LOG_TYPE else sorted_).append(f)
    return logs, sorted_


def search_files(blocks, srch_root: fmt.BtreeRoot, log_files: list[SrchFile],
                 h: int) -> set[int]:
    """Candidate inodes for hash h: (ino, id)s seen an odd number of times."""
    logs, sorted_ = root_files(blocks, srch_root)
    counts: dict[tuple[int, int], int] = {}
    for f in logs + log_files:
        search_file(blocks, f, False, h, counts)
    for f in sorted_:
        search_file(blocks, f, True, h, counts)
    return {ino for (ino, _xid), n in counts.items() if n & 1}


class Srch:
    """A mount's srch work: search and the compaction worker."""

    def __init__(self, client, meta_blocks, meta_dev, counters, triggers) -> None:
        self.client = client
        self.blocks = meta_blocks
        self.meta_dev = meta_dev
        self.counters = counters
        self.triggers = triggers
        self.compact_delay_ms = COMPACT_DELAY_MS_DEFAULT
        self._wake = trio.Event()
        self.closed = False

    def set_compact_delay_ms(self, text: str) -> None:
        """A write to sysfs srch/compact_delay_ms (EINVAL unless 0..COMPACT_DELAY_MS_MAX);
        the worker starts its next wait at once."""
        try:
            v = int(text.strip(), 0)
        except ValueError:
            raise FsError(errno.EINVAL, "compact_delay_ms must be an integer") from None
        if not 0 <= v <= COMPACT_DELAY_MS_MAX:
            raise FsError(errno.EINVAL, f"compact_delay_ms {v} out of range")
        self.compact_delay_ms = v
        self._wake.set()

    async def search(self, name: bytes, next_ino: int, last_ino: int,
                     limit: int) -> tuple[list[int], bool]:
        """SEARCH_XATTRS: candidate inodes in [next_ino, last_ino] holding a committed
        ``.srch.`` xattr `name`, ascending, at most `limit`; and whether that was all."""
        h = fmt.hash64(bytes(name))
        self.counters.inc("srch_search_xattrs")
        for attempt in range(STALE_RETRIES):
            srch_root, log_files = await self.client.get_srch_roots()
            try:
                found = search_files(self.blocks, srch_root, log_files, h)
                break
            except StaleBlock as e:
                self.counters.inc("srch_read_stale")
                log.debug("stale srch block (attempt %d): %s", attempt, e)
        else:
            raise FsError(errno.EIO, "srch files kept changing under the search")
        inos = sorted(i for i in found if next_ino <= i <= last_ino)
        return inos[:limit], len(inos) <= limit

    # ------------------------------------------------------------- compaction

    async def run(self) -> None:
        """Ask for compaction work every compact_delay_ms; keep going while there is."""
        while not self.closed:
            with trio.move_on_after(self.compact_delay_ms / 1000):
                await self._wake.wait()
            self._wake = trio.Event()
            try:
                while not self.closed and await self.compact_once():
                    await trio.lowlevel.checkpoint()
            except FsError as e:
                if self.closed:
                    return
                log.warning("srch compaction request failed: %s", e)
            except Exception:  # our bug: it costs this round of compaction, not the mount
                if self.closed:
                    return
                self.counters.inc("srch_compact_error")
                log.exception("srch compaction failed")

    async def compact_once(self) -> bool:
        """One compaction; returns whether the server had work."""
        work = await self.client.srch_get_compact()
        if not work:
            return False
        if any(k not in work for k in ("id", "seq", "inputs", "meta_avail")):
            raise FsError(errno.EINVAL, f"srch compaction work without {sorted(work)}")
        cid = int(work["id"])
        try:
            output, unused = await self._compact(work)
        except (FsError, StaleBlock, _Stopped) as e:
            if not isinstance(e, _Stopped):
                self.counters.inc("srch_compact_error")
                log.error("srch compaction %d failed: %s", cid, e)
            await self.client.srch_commit_compact({"id": cid, "abandon": True,
                                                   "meta_avail": work["meta_avail"]})
            return not isinstance(e, FsError)
        await self.client.srch_commit_compact({
            "id": cid, "output": file_to_wire(output),
            "meta_avail": [list(e) for e in unused]})
        self.counters.inc("srch_compact_flush")
        return True

    async def _compact(self, work: dict) -> tuple[SrchFile, list[tuple[int, int]]]:
        inputs = [file_from_wire(v) for v in work["inputs"]]
        is_sorted = bool(work.get("sorted"))
        seq = int(work["seq"])
        lent = [(int(s), int(n)) for s, n in work["meta_avail"]]
        for s, n in lent:
            if s < fmt.META_DEV_START_BLKNO or s + n > self.blocks.nr_blocks:
                raise FsError(errno.EINVAL, f"srch compaction lent ({s}, {n}) outside the "
                                            "meta device's blocks")
        lists = []
        for f in inputs:
            lists.append(file_entries(self.blocks, f, is_sorted=is_sorted))
            await trio.lowlevel.checkpoint()
        merged = merge_entries(lists)
        removed = sum(len(x) for x in lists) - len(merged)
        self.counters.inc("srch_compact_removed_entry", removed)
        self.counters.inc("srch_compact_entry", len(merged))
        blknos = [s + i for s, n in lent for i in range(n)]
        it = iter(blknos)

        def alloc() -> int:
            try:
                return next(it)
            except StopIteration:
                raise FsError(errno.ENOSPC, "srch compaction ran out of lent blocks") \
                    from None

        if merged and self.triggers is not None and \
                self.triggers.fire("srch_merge_stop_safe"):
            # stop after the first leaf (an entry boundary, never inside a cancelling
            # pair): the partial output is thrown away with the compaction
            _write_leaves(self.blocks, merged, seq, alloc, stop_after_first=True)
            raise _Stopped()
        out = fmt.EMPTY_SRCH_FILE
        if merged:
            refs = []
            step = fmt.SRCH_BLOCK_MAX_ENTRIES
            for i in range(0, len(merged), step):
                refs += _write_leaves(self.blocks, merged[i:i + step], seq, alloc)
                await trio.lowlevel.checkpoint()
            out = _write_parent(self.blocks, refs, len(merged), merged[0], merged[-1], seq,
                                alloc)
        await trio.to_thread.run_sync(self.meta_dev.flush)
        used = out.blocks + 1 if out.ref.blkno else 0
        rest = blknos[used:]
        unused: list[tuple[int, int]] = []
        for b in rest:
            if unused and unused[-1][0] + unused[-1][1] == b:
                unused[-1] = (unused[-1][0], unused[-1][1] + 1)
            else:
                unused.append((b, 1))
        return out, unused


class _Stopped(Exception):
    """srch_merge_stop_safe stopped a merge: abandon the compaction (not an error)."""


# --------------------------------------------------------------------------- server


def _pack_busy(cid: int, is_sorted: bool, inputs: list[tuple[fmt.Key, SrchFile]],
               lent: list[tuple[int, int]]) -> bytes:
    import struct

    out = bytearray(struct.pack("<QII", cid, int(is_sorted), len(inputs)))
    for k, f in inputs:
        out += fmt.pack_key(k) + fmt.pack_srch_file(f)
    out += struct.pack("<I", len(lent))
    for s, n in lent:
        out += fmt.EXTENT.pack(s, n)
    return bytes(out)


def unpack_busy(buf: bytes) -> tuple[int, bool, list[tuple[fmt.Key, SrchFile]],
                                     list[tuple[int, int]]]:
    import struct

    cid, is_sorted, nin = struct.unpack_from("<QII", buf, 0)
    off = 16
    inputs = []
    for _ in range(nin):
        k = fmt.unpack_key(buf, off)
        off += fmt.KEY_SIZE
        inputs.append((k, fmt.unpack_srch_file(buf, off)))
        off += fmt.SRCH_FILE.size
    (nl,) = struct.unpack_from("<I", buf, off)
    off += 4
    lent = []
    for _ in range(nl):
        lent.append(tuple(fmt.EXTENT.unpack_from(buf, off)))
        off += fmt.EXTENT.size
    return cid, bool(is_sorted), inputs, lent


SRCH_FIRST = (fmt.ZONE_SRCH, 0, 0, 0, 0, 0)
SRCH_LAST = (fmt.ZONE_SRCH, fmt.U64_MAX, 255, fmt.U64_MAX, fmt.U64_MAX, 255)


class SrchServer:
    """The server's srch_root: rotation, compaction bookkeeping, reclaim (fs/server.py
    owns the btree `server.srch` and commits it with the super)."""

    def __init__(self, server) -> None:
        self.server = server

    @property
    def tree(self):
        return self.server.srch

    def _insert(self, key: fmt.Key, value: bytes) -> None:
        self.tree.insert(key, fmt.Item(self.server.epoch_seq, 0, value))

    def rotate_log(self, lt: fmt.LogTrees, force: bool) -> bool:
        """Move lt's log file into srch_root when it is big enough, the trigger
        srch_force_log_rotate fires, or `force` (finalize, reclaim).  The caller stores
        lt.  An empty log never rotates (and never uses up the trigger)."""
        f = lt.srch_file
        if f.ref.blkno == 0:
            return False
        if not (force or f.blocks >= LOG_ROTATE_BLOCKS
                or self.server.triggers.fire("srch_force_log_rotate")):
            return False
        self._insert(fmt.srch_log_key(f.ref.blkno), fmt.pack_srch_file(f))
        lt.srch_file = fmt.EMPTY_SRCH_FILE
        self.server.counters.inc("srch_rotate_log")
        return True

    def _items(self):
        return [(k, it.value) for k, it in self.tree.items(SRCH_FIRST, SRCH_LAST)
                if not it.deleted]

    def _busy(self, rid: int):
        it = self.tree.lookup(fmt.srch_busy_key(rid))
        return None if it is None or it.deleted else unpack_busy(bytes(it.value))

    def _reply(self, busy) -> dict:
        cid, is_sorted, inputs, lent = busy
        return {"id": cid, "seq": cid, "sorted": is_sorted,
                "inputs": [file_to_wire(f) for _k, f in inputs],
                "meta_avail": [list(e) for e in lent]}

    def _choose(self) -> tuple[bool, list[tuple[fmt.Key, SrchFile]]]:
        items = self._items()
        busy_keys = set()
        for k, v in items:
            if k[2] == fmt.SRCH_BUSY_TYPE:
                busy_keys |= {ik for ik, _f in unpack_busy(bytes(v))[2]}
        logs, by_order = [], {}
        for k, v in items:
            if k in busy_keys or k[2] == fmt.SRCH_BUSY_TYPE:
                continue
            f = fmt.unpack_srch_file(v)
            if k[2] == fmt.SRCH_LOG_TYPE:
                logs.append((k, f))
            elif k[2] == fmt.SRCH_SORTED_TYPE:
                by_order.setdefault(k[3], []).append((k, f))

        def within(cands):
            out, total = [], 0
            for k, f in cands:
                if out and total + f.blocks > COMPACT_MAX_BLOCKS:
                    break
                out.append((k, f))
                total += f.blocks
            return out

        if len(logs) >= COMPACT_NR or (
                logs and self.server.triggers.fire("srch_compact_logs_pad_safe")):
            return False, within(logs[:COMPACT_NR])
        for order in sorted(by_order):
            cands = by_order[order]
            if len(cands) >= COMPACT_NR:
                chosen = within(cands[:COMPACT_NR])
                if len(chosen) > 1:
                    return True, chosen
        return False, []

    async def get_compact(self, rid: int, p) -> dict:
        srv = self.server
        busy = self._busy(rid)
        if busy is None:
            is_sorted, inputs = self._choose()
            if not inputs:
                return {}
            need = sum(f.blocks for _k, f in inputs) + 2
            lent: list[tuple[int, int]] = []
            while need > 0:
                got = srv.meta_free.alloc(need, min_length=1)
                if got is None:
                    for e in lent:
                        srv.meta_free.add(*e)
                    log.warning("no meta space for a srch compaction")
                    return {}
                lent.append(got)
                need -= got[1]
            busy = (srv.next_seq(), is_sorted, inputs, lent)
            self._insert(fmt.srch_busy_key(rid), _pack_busy(*busy))
            srv.counters.inc("srch_compact_start")
        await srv.commit()
        return self._reply(busy)

    async def commit_compact(self, rid: int, p: dict) -> dict:
        srv = self.server
        busy = self._busy(rid)
        cid = int(p["id"])
        if busy is None or busy[0] != cid:
            # a resend of a compaction already committed, or one cancelled by reclaim:
            # nothing to do (only its own rid could have committed it)
            await srv.commit()
            return {}
        _cid, is_sorted, inputs, lent = busy
        from fs.alloc import ExtentSet

        lent_set = ExtentSet(lent)
        unused = ExtentSet()
        for s, n in p.get("meta_avail", []):
            s, n = int(s), int(n)
            if not lent_set.contains(s, n):
                raise FsError(errno.EINVAL, f"srch compaction returned ({s}, {n}) it was "
                                            "not lent")
            try:
                unused.add(s, n)
            except ValueError:
                raise FsError(errno.EINVAL, "srch compaction returned a block twice") \
                    from None
        if p.get("abandon"):
            self._cancel(rid, lent)
            await srv.commit()
            return {}
        try:
            # check and read everything before changing anything
            out, in_blocks = self._check_commit(p, lent, unused, inputs)
        except (FsError, StaleBlock) as e:
            # a bad output (or an unreadable input) costs this compaction, not the server
            log.error("srch compaction %d of rid %016x refused: %s", cid, rid, e)
            self._cancel(rid, lent)
            await srv.commit()
            raise FsError(errno.EINVAL, f"srch compaction refused: {e}") from None
        # apply
        for (k, _f), blknos in zip(inputs, in_blocks, strict=True):
            self.tree.delete(k)
            for b in blknos:
                srv.meta_pend_cur.add(b, 1)
        for s, n in unused.extents():
            srv.meta_free.add(s, n)
        if out.ref.blkno:
            self._insert(fmt.srch_sorted_key(order_of(out.blocks), out.ref.blkno),
                         fmt.pack_srch_file(out))
        self.tree.delete(fmt.srch_busy_key(rid))
        srv.counters.inc("srch_compact_complete")
        await srv.commit()
        return {}

    def _check_commit(self, p: dict, lent, unused, inputs) -> tuple[SrchFile, list[list[int]]]:
        from fs.alloc import ExtentSet

        srv = self.server
        out = file_from_wire(p["output"]) if p.get("output") is not None else \
            fmt.EMPTY_SRCH_FILE
        used = ExtentSet(lent)
        for s, n in unused.extents():
            used.remove(s, n)
        out_blocks = file_blknos(srv.blocks, out)
        if len(out_blocks) != used.total or any(not used.contains(b, 1) for b in out_blocks):
            raise FsError(errno.EINVAL, "srch compaction output is not the blocks it used")
        if out.ref.blkno:
            file_entries(srv.blocks, out, is_sorted=True)  # sorted: no entry twice
        return out, [file_blknos(srv.blocks, f) for _k, f in inputs]

    def _cancel(self, rid: int, lent: list[tuple[int, int]]) -> None:
        # the lent blocks were never referenced by anything committed: free at once
        for s, n in lent:
            self.server.meta_free.add(s, n)
        self.tree.delete(fmt.srch_busy_key(rid))

    def cancel_rid(self, rid: int) -> None:
        """reclaim_rid: cancel the rid's compaction (its inputs become available again)."""
        busy = self._busy(rid)
        if busy is not None:
            self._cancel(rid, busy[3])
            log.info("cancelled srch compaction %d of rid %016x", busy[0], rid)

    def lent_total(self) -> int:
        return sum(n for k, v in self._items() if k[2] == fmt.SRCH_BUSY_TYPE
                   for _s, n in unpack_busy(bytes(v))[3])


# --------------------------------------------------------------------------- fsck


def fsck_claims(blocks, sb: fmt.Super, log_records: list[fmt.LogTrees],
                problems) -> list[tuple[int, int, str, str]]:
    """Check every srch file (srch_root's and each log tree's) block by block and return
    the meta block claims of their blocks and of compactions' lent extents."""
    from fs.btree import Btree

    claims: list[tuple[int, int, str, str]] = []

    def check_file(name: str, f: SrchFile, is_sorted: bool) -> None:
        if f.ref.blkno == 0:
            return
        try:
            # the blocks are the file's even when an entry is bad: claim them first
            for b in file_blknos(blocks, f):
                claims.append((b, 1, f"used by {name}", "used"))
            file_entries(blocks, f, is_sorted=is_sorted)
        except (FsError, StaleBlock) as e:
            problems.add(f"{name}: {e}")

    if sb.srch_root.height:
        busy_inputs: dict[fmt.Key, int] = {}
        try:
            items = [(k, bytes(it.value)) for k, it in
                     Btree(blocks, sb.srch_root).items(SRCH_FIRST, SRCH_LAST)]
        except (FsError, StaleBlock) as e:
            problems.add(f"srch_root: unreadable: {e}")
            items = []
        files = {}
        for k, v in items:
            name = f"srch_root {fmt.format_key(k)}"
            try:
                if k[2] == fmt.SRCH_BUSY_TYPE:
                    _cid, _s, inputs, lent = unpack_busy(v)
                    for ik, _f in inputs:
                        busy_inputs[ik] = k[3]
                    for s, n in lent:
                        claims.append((s, n, f"lent to srch compaction of rid {k[3]:016x}",
                                       "lent"))
                elif k[2] in (fmt.SRCH_LOG_TYPE, fmt.SRCH_SORTED_TYPE):
                    f = fmt.unpack_srch_file(v)
                    files[k] = f
                    want = (fmt.srch_log_key(f.ref.blkno) if k[2] == fmt.SRCH_LOG_TYPE
                            else fmt.srch_sorted_key(order_of(f.blocks), f.ref.blkno))
                    if k != want:
                        problems.add(f"{name}: key does not match its file")
                    check_file(name, f, k[2] == fmt.SRCH_SORTED_TYPE)
                else:
                    problems.add(f"{name}: unknown srch item type")
            except Exception as e:  # noqa: BLE001 - a malformed value is a problem
                problems.add(f"{name}: bad value: {e}")
        for ik, rid in busy_inputs.items():
            if ik not in files:
                problems.add(f"srch compaction of rid {rid:016x}: input "
                             f"{fmt.format_key(ik)} is not in srch_root")
    for lt in log_records:
        check_file(f"srch log of rid {lt.rid:016x} nr {lt.nr}", lt.srch_file, False)
    return claims
