"""File contents: extent items, reads, writes, truncate, fallocate, SEEK_DATA/SEEK_HOLE,
fiemap and freeing a file's blocks.

A regular file's blocks are mapped by extent items ``(FS, ino, DATA_EXTENT, last, len)`` ->
``{blkno, flags}`` (layout in `fs.format`): ``len`` logical 4 KiB blocks ending at logical
block ``last`` live at data-device blocks ``blkno .. blkno+len-1``.  ``blkno`` 0 means
unmapped (an OFFLINE extent whose contents live in an archive); UNWRITTEN blocks are
allocated but read as zeros.  Extents never overlap, never exceed `EXTENT_MAX_BLOCKS`, and
logically and physically contiguous neighbours with the same flags are merged.  Because
keys carry ``last`` and ``len``, changing an extent's size deletes its item and writes a new
one.

Counting (spec §5.4): a block is *online* if it is mapped and neither UNWRITTEN nor OFFLINE,
*offline* if its extent has the OFFLINE flag.  ``inode.online_blocks`` and
``inode.offline_blocks`` are kept in step with every extent change here.

Writes overwrite blocks that are already allocated in place (as scoutfs does) and allocate
holes and blocks past EOF from the transaction's lent data extents.  Bytes of the last
block past ``i_size`` are always zero on disk (truncate zeroes them), so extending a file by
a write or a truncate exposes zeros.

`fallocate` maps holes to UNWRITTEN extents; with KEEP_SIZE they may lie past EOF (the only
extents that do), until a truncate below them frees them.  A write into an unwritten block
writes the whole block (zeros around the data) and makes just the written blocks online.

Serialisation: like the VFS ``i_rwsem``, a per-inode reader/writer semaphore (`inode_rwsem`)
orders writes, truncates and xattr changes of one inode on this mount (exclusive) against
reads (shared).  It is taken before any cluster lock.  Cluster locks and the transaction
hold come after it, in the order of docs/design.md.

Quotas (`fs.quota`): `write` and `fallocate` refresh the cached quota rules before any lock;
an allocation checks its data quota (EDQUOT) under the inode's locks but before its
transaction hold, and rewriting allocated blocks allocates nothing and checks nothing.

Atomicity: each operation reads the extents and the inode it needs (awaits), does its
device I/O (awaits: large transfers run in a worker thread), then applies every item change
and the inode store with synchronous calls, so no other task sees a half-made change.
"""

from __future__ import annotations

import errno
import stat
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import NamedTuple

import trio

from fs import datawait, quota
from fs import format as fmt
from fs import inode as inode_mod
from fs.errors import FsError

LOCK_READ, LOCK_WRITE = 1, 2  # fs.lock modes

BLOCK_SHIFT = fmt.DATA_BLOCK_SHIFT
BLOCK_SIZE = fmt.DATA_BLOCK_SIZE
EXTENT_MAX_BLOCKS = 16384  # 64 MiB: keeps extents (and the work one change does) bounded
THREAD_IO_MIN = 64 * 1024  # device transfers larger than this run in a worker thread
TRUNCATE_BATCH = 1024  # extents freed per transaction hold by a shrinking truncate

FLAG_OFFLINE = fmt.EXTENT_FLAG_OFFLINE
FLAG_UNWRITTEN = fmt.EXTENT_FLAG_UNWRITTEN

# data waiter ops (spec §5.5)
OP_READ, OP_WRITE, OP_CHANGE_SIZE = 1, 2, 4

# fallocate(2) modes: only KEEP_SIZE is supported (as upstream scoutfs)
FALLOC_FL_KEEP_SIZE = 0x01
FALLOCATE_BATCH = EXTENT_MAX_BLOCKS  # logical blocks a fallocate fills per transaction hold

# lseek(2) whences handled here (the adapter does SEEK_SET/CUR/END)
SEEK_DATA, SEEK_HOLE = 3, 4
LSEEK_BATCH = 256  # extents read per step by lseek and fiemap

# Linux FIEMAP extent flags (linux/fiemap.h)
FIEMAP_EXTENT_LAST = 0x1
FIEMAP_EXTENT_UNKNOWN = 0x2  # offline: the data lives in an archive, physical 0
FIEMAP_EXTENT_UNWRITTEN = 0x800  # allocated by fallocate, reads as zeros

_ZEROS = bytes(1 << 20)


# --------------------------------------------------------------------------- extents


class Extent(NamedTuple):
    start: int  # first logical block
    length: int  # blocks
    blkno: int  # first data-device block, 0 = unmapped
    flags: int  # EXTENT_FLAG_*

    @property
    def last(self) -> int:
        return self.start + self.length - 1

    def key(self, ino: int) -> fmt.Key:
        return fmt.extent_key(ino, self.last, self.length)

    def clip(self, first: int, last: int) -> Extent:
        """The part of this extent covering logical blocks [first, last] (within it)."""
        blkno = self.blkno + (first - self.start) if self.blkno else 0
        return Extent(first, last - first + 1, blkno, self.flags)

    @property
    def online(self) -> bool:
        return self.blkno != 0 and not self.flags & (FLAG_OFFLINE | FLAG_UNWRITTEN)

    @property
    def offline(self) -> bool:
        return bool(self.flags & FLAG_OFFLINE)

    @property
    def readable(self) -> bool:
        """Reads come from the device (else zeros, or a wait for offline data)."""
        return self.blkno != 0 and not self.flags & (FLAG_OFFLINE | FLAG_UNWRITTEN)


def extent_from_item(key: fmt.Key, val: bytes) -> Extent:
    last, length = key[3], key[4]
    blkno, flags = fmt.unpack_extent_val(val)
    return Extent(last - length + 1, length, blkno, flags)


def _extents_end(ino: int) -> fmt.Key:
    return (fmt.ZONE_FS, ino, fmt.FS_DATA_EXTENT, fmt.U64_MAX, fmt.U64_MAX, 255)


async def load_extents(mctx, ino: int, first: int, last: int, lock,
                       limit: int = 0) -> list[Extent]:
    """The extents overlapping logical blocks [first, last], ascending (at most limit)."""
    out: list[Extent] = []
    end = _extents_end(ino)
    items = mctx.items
    key = fmt.extent_key(ino, first, 0)
    while True:
        found = await items.next(key, end, lock)
        if found is None:
            break
        e = extent_from_item(*found)
        if e.start > last:
            break
        out.append(e)
        if (limit and len(out) >= limit) or e.last >= last:
            break
        key = fmt.extent_key(ino, e.last + 1, 0)
    return out


async def collect_extents(mctx, ino: int, lock) -> list[Extent]:
    """Every extent of the inode, ascending."""
    return [extent_from_item(k, v) async for k, v in
            mctx.items.items(fmt.extent_key(ino, 0, 0), _extents_end(ino), lock)]


def _counts(exts) -> tuple[int, int]:
    online = offline = 0
    for e in exts:
        if e.online:
            online += e.length
        elif e.offline:
            offline += e.length
    return online, offline


def _mergeable(a: Extent, b: Extent) -> bool:
    if a.start + a.length != b.start or a.flags != b.flags:
        return False
    if a.length + b.length > EXTENT_MAX_BLOCKS:
        return False
    if a.blkno == 0 or b.blkno == 0:
        return a.blkno == 0 and b.blkno == 0
    return a.blkno + a.length == b.blkno


def merge_extents(exts: list[Extent]) -> list[Extent]:
    """Sort by start and merge contiguous neighbours (logically and physically, same flags)."""
    out: list[Extent] = []
    for e in sorted(exts):
        if out and _mergeable(out[-1], e):
            p = out[-1]
            out[-1] = Extent(p.start, p.length + e.length, p.blkno, p.flags)
        else:
            out.append(e)
    return out


def replace_range(window: list[Extent], first: int, last: int,
                  new: list[Extent]) -> list[Extent]:
    """The extents of `window` with logical blocks [first, last] replaced by `new`, merged.

    `window` must hold every extent overlapping [first-1, last+1] so that the new extents
    merge with their neighbours.
    """
    pieces = list(new)
    for e in window:
        if e.start < first:
            pieces.append(e.clip(e.start, min(e.last, first - 1)))
        if e.last > last:
            pieces.append(e.clip(max(e.start, last + 1), e.last))
    return merge_extents(pieces)


def apply_extents(mctx, ino: int, lock, old: list[Extent], new: list[Extent]) -> tuple[int, int]:
    """Replace the items of `old` by those of `new` (synchronous, inside a hold).

    Items that are unchanged are not rewritten.  Returns the change of the online and
    offline block counts.
    """
    old_by_key = {e.key(ino): e for e in old}
    new_by_key = {e.key(ino): e for e in new}
    items = mctx.items
    for k in old_by_key:
        if k not in new_by_key:
            items.delete(k, lock)
    for k, e in new_by_key.items():
        if old_by_key.get(k) != e:
            items.update(k, fmt.pack_extent_val(e.blkno, e.flags), lock)
    on0, off0 = _counts(old)
    on1, off1 = _counts(new)
    return on1 - on0, off1 - off0


# --------------------------------------------------------------------------- per-inode rwsem


class _RwSem:
    __slots__ = ("readers", "writer", "waiting_writers", "users", "lot")

    def __init__(self) -> None:
        self.readers = 0
        self.writer = False
        self.waiting_writers = 0
        self.users = 0
        self.lot = trio.lowlevel.ParkingLot()


def _sems(mctx) -> dict[int, _RwSem]:
    tab = getattr(mctx, "_data_rwsems", None)
    if tab is None:
        tab = {}
        mctx._data_rwsems = tab
    return tab


@asynccontextmanager
async def inode_rwsem(mctx, ino: int, exclusive: bool) -> AsyncIterator[None]:
    """This mount's i_rwsem of an inode: exclusive for changes of its contents and xattrs,
    shared for reads.  Waiting writers keep new readers out.  Take it before cluster locks.
    """
    tab = _sems(mctx)
    sem = tab.get(ino)
    if sem is None:
        sem = tab[ino] = _RwSem()
    sem.users += 1
    try:
        if exclusive:
            sem.waiting_writers += 1
            try:
                while sem.writer or sem.readers:
                    await sem.lot.park()
            finally:
                sem.waiting_writers -= 1
                sem.lot.unpark_all()  # readers held back by us may go if we gave up
            sem.writer = True
            try:
                yield
            finally:
                sem.writer = False
                sem.lot.unpark_all()
        else:
            while sem.writer or sem.waiting_writers:
                await sem.lot.park()
            sem.readers += 1
            try:
                yield
            finally:
                sem.readers -= 1
                if not sem.readers:
                    sem.lot.unpark_all()
    finally:
        sem.users -= 1
        if not sem.users and tab.get(ino) is sem:
            del tab[ino]


# --------------------------------------------------------------------------- helpers


def _check_regular(inode: fmt.Inode) -> None:
    if stat.S_ISDIR(inode.mode):
        raise FsError(errno.EISDIR)
    if not stat.S_ISREG(inode.mode):
        raise FsError(errno.EINVAL, "not a regular file")


def _check_retention(inode: fmt.Inode) -> None:
    if inode.flags & fmt.INODE_FLAG_RETENTION:
        raise FsError(errno.EPERM, "file is under retention")


def stat_blocks(inode: fmt.Inode) -> int:
    """st_blocks: 512-byte sectors of online and offline blocks (cli-and-harness §3.5)."""
    return (inode.online_blocks + inode.offline_blocks) * (BLOCK_SIZE // 512)


def wait_for_online(mctx, ino: int, iblock: int, op: int) -> None:
    """An access of offline data (spec §5.5): register a waiter while the caller still
    holds the inode's lock and leave the operation (`fs.datawait.MustWait`); the public
    entry points retry once staging (or data-wait-err, or an interrupt) ends the wait."""
    datawait.must_wait(mctx, ino, iblock, op)


async def _first_offline(mctx, ino: int, first: int, last: int, lock) -> int | None:
    """The first offline logical block in [first, last], or None."""
    if last < first:
        return None
    for e in await load_extents(mctx, ino, first, last, lock):
        if e.offline:
            return max(e.start, first)
    return None


async def _dev_read(mctx, offset: int, length: int) -> bytes:
    if length > THREAD_IO_MIN:
        return await trio.to_thread.run_sync(mctx.data_dev.read, offset, length)
    return mctx.data_dev.read(offset, length)


async def _dev_write(mctx, offset: int, buf) -> None:
    if len(buf) > THREAD_IO_MIN:
        await trio.to_thread.run_sync(mctx.data_dev.write, offset, buf)
    else:
        mctx.data_dev.write(offset, buf)


def _zeros(nbytes: int):
    if nbytes <= len(_ZEROS):
        return memoryview(_ZEROS)[:nbytes]
    return bytes(nbytes)


# --------------------------------------------------------------------------- read



async def read(mctx, ino: int, offset: int, size: int, short: bool = False) -> bytes:
    """`_read_once`, retried after waiting for offline data (fs.datawait).

    A read whose first block is offline waits.  With `short` (the FUSE adapter: the kernel
    reads ahead), a read whose first blocks are online returns just those when offline
    blocks follow; without it the whole range must be online first."""
    return await datawait.retry(mctx, _read_once, ino, offset, size, short)

async def _read_once(mctx, ino: int, offset: int, size: int, short: bool = False) -> bytes:
    """Up to size bytes at offset, clamped to i_size; holes and unwritten blocks are zeros."""
    if offset < 0 or size < 0:
        raise FsError(errno.EINVAL)
    if size == 0:
        return b""
    async with inode_rwsem(mctx, ino, exclusive=False), \
            mctx.locks.inodes([ino], LOCK_READ) as locks:
        lock = locks[ino]
        inode = await inode_mod.load_inode(mctx, ino, lock)
        _check_regular(inode)
        if offset >= inode.size:
            return b""
        end = min(offset + size, inode.size)
        first = offset >> BLOCK_SHIFT
        last = (end - 1) >> BLOCK_SHIFT
        exts = await load_extents(mctx, ino, first, last, lock)
        for e in exts:
            if e.offline:
                if e.start <= first or not short:
                    wait_for_online(mctx, ino, max(e.start, first), OP_READ)
                # the kernel's readahead asks for more than the reader wants: answer
                # the online blocks before the offline ones (a short read); the
                # kernel asks again for the rest, which then waits
                last = e.start - 1
                end = min(end, (last + 1) << BLOCK_SHIFT)
                exts = [x for x in exts if x.start <= last]
                break

        # runs of (blkno or 0 for zeros, nblocks), device runs physically contiguous
        runs: list[list[int]] = []

        def add(blkno: int, n: int) -> None:
            if runs:
                p = runs[-1]
                if (blkno == 0 and p[0] == 0) or (blkno and p[0] and p[0] + p[1] == blkno):
                    p[1] += n
                    return
            runs.append([blkno, n])

        b = first
        for e in exts:
            s = max(e.start, first)
            t = min(e.last, last)
            if s > b:
                add(0, s - b)
            add(e.blkno + (s - e.start) if e.readable else 0, t - s + 1)
            b = t + 1
        if b <= last:
            add(0, last - b + 1)

        pieces = []
        for blkno, n in runs:
            if blkno:
                pieces.append(await _dev_read(mctx, blkno << BLOCK_SHIFT, n << BLOCK_SHIFT))
            else:
                pieces.append(_zeros(n << BLOCK_SHIFT))

    head = offset - (first << BLOCK_SHIFT)
    want = end - offset
    if len(pieces) == 1:
        p = pieces[0]
        if head == 0 and len(p) == want and isinstance(p, bytes):
            return p
        return bytes(memoryview(p)[head:head + want])
    total = sum(len(p) for p in pieces)
    mvs = [memoryview(p) for p in pieces]
    mvs[0] = mvs[0][head:]
    mvs[-1] = mvs[-1][:len(mvs[-1]) - (total - head - want)]
    return b"".join(mvs)


# --------------------------------------------------------------------------- write


class _Seg(NamedTuple):
    iblock: int
    nblocks: int
    blkno: int
    old: bool  # the block holds file data to keep (read-modify-write of partial blocks)


def _plan(window: list[Extent], first: int, last: int) -> tuple[list[tuple], int]:
    """Split [first, last] into mapped parts (blkno, readable) and holes (blkno None)."""
    plan: list[tuple] = []
    holes = 0
    b = first
    for e in window:
        if e.last < first or e.start > last or e.blkno == 0:
            continue
        s = max(e.start, first)
        t = min(e.last, last)
        if s > b:
            plan.append((b, s - b, None, False))
            holes += s - b
        plan.append((s, t - s + 1, e.blkno + (s - e.start), e.readable))
        b = t + 1
    if b <= last:
        plan.append((b, last - b + 1, None, False))
        holes += last - b + 1
    return plan, holes


def _allocate(mctx, plan: list[tuple], allocated: list[tuple[int, int]]) -> list[_Seg]:
    """Give every hole of the plan new blocks (recorded in `allocated` for undo)."""
    segs: list[_Seg] = []
    alloc = mctx.trans.data_alloc
    for iblock, n, blkno, readable in plan:
        if blkno is not None:
            segs.append(_Seg(iblock, n, blkno, readable))
            continue
        while n:
            start, got = alloc.alloc(min(n, EXTENT_MAX_BLOCKS))
            allocated.append((start, got))
            segs.append(_Seg(iblock, got, start, False))
            iblock += got
            n -= got
    return segs


async def _write_segs(mctx, segs: list[_Seg], mv: memoryview, offset: int, end: int) -> None:
    """Write the data into the segments' blocks, one device call per contiguous run."""
    dev = mctx.data_dev
    i = 0
    while i < len(segs):
        j = i + 1
        while (j < len(segs) and segs[j].iblock == segs[j - 1].iblock + segs[j - 1].nblocks
               and segs[j].blkno == segs[j - 1].blkno + segs[j - 1].nblocks):
            j += 1
        run = segs[i:j]
        i = j
        rstart = run[0].iblock << BLOCK_SHIFT
        rend = (run[-1].iblock + run[-1].nblocks) << BLOCK_SHIFT
        dev_off = run[0].blkno << BLOCK_SHIFT
        ds = max(offset, rstart)
        de = min(end, rend)
        if ds == rstart and de == rend:
            await _dev_write(mctx, dev_off, mv[ds - offset:de - offset])
            continue
        buf = bytearray(rend - rstart)
        if ds > rstart and run[0].old:  # partial first block keeps its old bytes
            buf[:BLOCK_SIZE] = dev.read(dev_off, BLOCK_SIZE)
        if de < rend and run[-1].old:  # partial last block
            lb = rend - BLOCK_SIZE
            if not (lb == rstart and ds > rstart and run[0].old):
                buf[lb - rstart:] = dev.read(dev_off + lb - rstart, BLOCK_SIZE)
        buf[ds - rstart:de - rstart] = mv[ds - offset:de - offset]
        await _dev_write(mctx, dev_off, buf)



async def write(mctx, ino: int, offset: int, data, ctx, append: bool = False) -> int:
    """`_write_once`, retried after waiting for offline data (fs.datawait)."""
    await quota.prepare(mctx)  # (no lock held: it may take the quota zone's)
    return await datawait.retry(mctx, _write_once, ino, offset, data, ctx, append=append)

async def _write_once(mctx, ino: int, offset: int, data, ctx, append: bool = False) -> int:
    """Write data at offset; returns the bytes written (all of them, or an error).

    `append` (the file was opened O_APPEND) writes at the size the inode has under its
    cluster lock: the kernel's offset comes from its cached size, which another mount's
    appends may have made stale."""
    mv = memoryview(data)
    if mv.ndim != 1 or mv.itemsize != 1:
        mv = mv.cast("B")
    n = mv.nbytes
    if offset < 0:
        raise FsError(errno.EINVAL)
    if n == 0:
        return 0
    if offset + n > fmt.MAX_FILE_SIZE and not append:
        raise FsError(errno.EFBIG)
    async with inode_rwsem(mctx, ino, exclusive=True), \
            mctx.locks.inodes([ino], LOCK_WRITE) as locks:
        lock = locks[ino]
        async with inode_mod.index_lock(mctx) as ilock:
            inode = await inode_mod.load_inode(mctx, ino, lock)
            if append:
                offset = inode.size
            end = offset + n
            if end > fmt.MAX_FILE_SIZE:
                raise FsError(errno.EFBIG)
            first = offset >> BLOCK_SHIFT
            last = (end - 1) >> BLOCK_SHIFT
            _check_regular(inode)
            _check_retention(inode)
            if inode.offline_blocks:
                # a write waits while any of 0..i_size is offline: data_version covers it all
                nblk = (inode.size + BLOCK_SIZE - 1) >> BLOCK_SHIFT
                off_b = await _first_offline(mctx, ino, 0, max(nblk, last + 1) - 1, lock)
                if off_b is not None:
                    wait_for_online(mctx, ino, off_b, OP_WRITE)
            window = await load_extents(mctx, ino, max(first - 1, 0), last + 1, lock)
            plan, nalloc = _plan(window, first, last)
            if nalloc and quota.has_rules(mctx, quota.OP_DATA):
                await quota.check_data(mctx, inode)  # EDQUOT (before the hold)
            async with mctx.trans.hold(data_blocks=nalloc):
                allocated: list[tuple[int, int]] = []
                try:
                    segs = _allocate(mctx, plan, allocated)
                    await _write_segs(mctx, segs, mv, offset, end)
                    inode = await inode_mod.load_inode(mctx, ino, lock)
                except BaseException:
                    for s, c in allocated:
                        mctx.trans.data_alloc.free(s, c)
                    raise
                # atomic from here: extent items and the inode
                mctx.trans.note_data_written()  # its commit flushes the data device first
                new = replace_range(window, first, last,
                                    [Extent(s.iblock, s.nblocks, s.blkno, 0) for s in segs])
                d_on, d_off = apply_extents(mctx, ino, lock, window, new)
                inode.online_blocks += d_on
                inode.offline_blocks += d_off
                if end > inode.size:
                    inode.size = end
                inode_mod.touch(inode, mtime=True, ctime=True, now=mctx.now())
                inode_mod.bump_data(inode, mctx)
                inode_mod.store_inode(mctx, inode, lock, ilock)
    return n


# --------------------------------------------------------------------------- truncate


def _free_extent_blocks(mctx, e: Extent, first: int, last: int) -> None:
    if e.blkno:
        mctx.trans.data_alloc.free(e.blkno + (first - e.start), last - first + 1)



async def truncate(mctx, ino: int, size: int, ctx) -> None:
    """`_truncate_once`, retried after waiting for offline data (fs.datawait)."""
    return await datawait.retry(mctx, _truncate_once, ino, size, ctx)

async def _truncate_once(mctx, ino: int, size: int, ctx) -> None:
    """Set i_size: shrinking frees whole blocks past it and zeroes the tail of the last
    partial block; growing leaves a sparse tail.  A size change updates mtime, ctime,
    data_version and data_seq; the same size updates only mtime and ctime."""
    if size < 0:
        raise FsError(errno.EINVAL)
    if size > fmt.MAX_FILE_SIZE:
        raise FsError(errno.EFBIG)
    keep = (size + BLOCK_SIZE - 1) >> BLOCK_SHIFT  # blocks (partly) inside the new size
    async with inode_rwsem(mctx, ino, exclusive=True), \
            mctx.locks.inodes([ino], LOCK_WRITE) as locks:
        lock = locks[ino]
        async with inode_mod.index_lock(mctx) as ilock:
            inode = await inode_mod.load_inode(mctx, ino, lock)
            _check_regular(inode)
            _check_retention(inode)
            if size == inode.size:
                async with mctx.trans.hold():
                    inode = await inode_mod.load_inode(mctx, ino, lock)
                    inode_mod.touch(inode, mtime=True, ctime=True, now=mctx.now())
                    inode_mod.store_inode(mctx, inode, lock, ilock)
                return
            if size and inode.offline_blocks:
                off_b = await _first_offline(mctx, ino, 0, keep - 1, lock)
                if off_b is not None:
                    wait_for_online(mctx, ino, 0, OP_CHANGE_SIZE)
            if size > inode.size:  # growing: a sparse tail, nothing to free or zero
                async with mctx.trans.hold():
                    inode = await inode_mod.load_inode(mctx, ino, lock)
                    inode.size = size
                    inode_mod.touch(inode, mtime=True, ctime=True, now=mctx.now())
                    inode_mod.bump_data(inode, mctx)
                    inode_mod.store_inode(mctx, inode, lock, ilock)
                return

            first_pass = True
            while True:
                batch = await load_extents(mctx, ino, keep, fmt.U64_MAX, lock,
                                           limit=TRUNCATE_BATCH)
                more = len(batch) >= TRUNCATE_BATCH
                tail = None
                if first_pass and size % BLOCK_SIZE:
                    tb = size >> BLOCK_SHIFT
                    te = await load_extents(mctx, ino, tb, tb, lock)
                    if te and te[0].readable:
                        tail = (te[0].blkno + tb - te[0].start) << BLOCK_SHIFT
                async with mctx.trans.hold():
                    inode = await inode_mod.load_inode(mctx, ino, lock)
                    # atomic from here
                    if first_pass:
                        if tail is not None:
                            blk = bytearray(mctx.data_dev.read(tail, BLOCK_SIZE))
                            cut = size % BLOCK_SIZE
                            blk[cut:] = bytes(BLOCK_SIZE - cut)
                            mctx.data_dev.write(tail, blk)
                            mctx.trans.note_data_written()  # its commit flushes the data device first
                        inode.size = size
                        inode_mod.touch(inode, mtime=True, ctime=True, now=mctx.now())
                        inode_mod.bump_data(inode, mctx)
                    new = []
                    for e in batch:
                        if e.start < keep:
                            _free_extent_blocks(mctx, e, keep, e.last)
                            new.append(e.clip(e.start, keep - 1))
                        else:
                            _free_extent_blocks(mctx, e, e.start, e.last)
                    d_on, d_off = apply_extents(mctx, ino, lock, batch, new)
                    inode.online_blocks += d_on
                    inode.offline_blocks += d_off
                    if more:
                        inode.flags |= fmt.INODE_FLAG_TRUNCATE
                    else:
                        inode.flags &= ~fmt.INODE_FLAG_TRUNCATE
                    inode_mod.store_inode(mctx, inode, lock, ilock)
                first_pass = False
                if not more:
                    break


# --------------------------------------------------------------------------- fallocate


def _holes(window: list[Extent], first: int, last: int) -> list[tuple[int, int]]:
    """The ranges of [first, last] no extent covers, as (start, count); any extent (online,
    unwritten or offline, mapped or not) is not a hole."""
    out: list[tuple[int, int]] = []
    b = first
    for e in window:
        if e.last < b or e.start > last:
            continue
        if e.start > b:
            out.append((b, e.start - b))
        b = e.last + 1
    if b <= last:
        out.append((b, last - b + 1))
    return out


def _alloc_holes(mctx, holes: list[tuple[int, int]],
                 ) -> tuple[list[Extent], int | None]:
    """Unwritten extents of newly allocated blocks for the holes, in order (synchronous).

    Returns the new extents and, if the lent space ran out, the first block left a hole
    (None when every hole got blocks)."""
    alloc = mctx.trans.data_alloc
    new: list[Extent] = []
    try:
        for s, n in holes:
            while n:
                try:
                    blkno, got = alloc.alloc(min(n, EXTENT_MAX_BLOCKS))
                except FsError as e:
                    if e.errno != errno.ENOSPC:
                        raise
                    return new, s
                new.append(Extent(s, got, blkno, FLAG_UNWRITTEN))
                s += got
                n -= got
    except BaseException:
        for e in new:
            alloc.free(e.blkno, e.length)
        raise
    return new, None


async def _hold_for_alloc(mctx, stack: AsyncExitStack, nblocks: int) -> None:
    """Enter a transaction hold for allocating up to nblocks data blocks.

    A volume with fewer free blocks than asked makes `hold` fail with ENOSPC although some
    remain: then hold for one block and allocate what there is, as upstream fills the
    volume before it fails."""
    try:
        await stack.enter_async_context(mctx.trans.hold(data_blocks=nblocks))
    except FsError as e:
        if e.errno != errno.ENOSPC or nblocks <= 1:
            raise
        await stack.enter_async_context(mctx.trans.hold(data_blocks=1))



async def fallocate(mctx, ino: int, mode: int, offset: int, length: int, ctx) -> None:
    """`_fallocate_once`, retried after waiting for offline data (fs.datawait)."""
    await quota.prepare(mctx)  # (no lock held: it may take the quota zone's)
    return await datawait.retry(mctx, _fallocate_once, ino, mode, offset, length, ctx)

async def _fallocate_once(mctx, ino: int, mode: int, offset: int, length: int, ctx) -> None:
    """Allocate the holes of the byte range [offset, offset+length) as UNWRITTEN extents.

    Blocks that are already mapped stay as they are.  Unwritten blocks read as zeros, are
    neither online nor offline, and become online when written.  Mode 0 grows i_size to
    offset+length (mtime and ctime change with it), KEEP_SIZE never changes i_size (and
    may leave unwritten extents past EOF, which truncate frees).  ctime always changes;
    data_version and data_seq change once per call if blocks were allocated or the size
    grew.  The range is filled in batches of `FALLOCATE_BATCH` blocks, one transaction
    hold each; running out of data blocks fails with ENOSPC and keeps what was allocated
    (and, without KEEP_SIZE, the size grown over it), as upstream.
    """
    if mode & ~FALLOC_FL_KEEP_SIZE:
        raise FsError(errno.EOPNOTSUPP, f"fallocate mode {mode:#x}")
    if offset < 0 or length <= 0:
        raise FsError(errno.EINVAL)
    end = offset + length
    if end > fmt.MAX_FILE_SIZE:
        raise FsError(errno.EFBIG)
    keep_size = bool(mode & FALLOC_FL_KEEP_SIZE)
    first = offset >> BLOCK_SHIFT
    last = (end - 1) >> BLOCK_SHIFT
    async with inode_rwsem(mctx, ino, exclusive=True), \
            mctx.locks.inodes([ino], LOCK_WRITE) as locks:
        lock = locks[ino]
        async with inode_mod.index_lock(mctx) as ilock:
            inode = await inode_mod.load_inode(mctx, ino, lock)
            if stat.S_ISDIR(inode.mode):
                raise FsError(errno.EISDIR)
            if not stat.S_ISREG(inode.mode):
                raise FsError(errno.ENODEV, "fallocate of a file that is not regular")
            _check_retention(inode)
            if inode.offline_blocks:
                off_b = await _first_offline(mctx, ino, first, last, lock)
                if off_b is not None:
                    wait_for_online(mctx, ino, off_b, OP_WRITE)
            changed = False  # data_version bumped already
            b = first
            while True:
                cl = min(last, b + FALLOCATE_BATCH - 1)
                window = await load_extents(mctx, ino, max(b - 1, 0), cl + 1, lock)
                holes = _holes(window, b, cl)
                if not holes and cl < last:
                    b = cl + 1
                    continue  # nothing to do here; the last batch always stores the inode
                nholes = sum(n for _, n in holes)
                if nholes and quota.has_rules(mctx, quota.OP_DATA):
                    await quota.check_data(mctx, inode)  # EDQUOT (before the hold)
                async with AsyncExitStack() as stack:
                    if nholes:
                        await _hold_for_alloc(mctx, stack, nholes)
                    else:
                        await stack.enter_async_context(mctx.trans.hold())
                    inode = await inode_mod.load_inode(mctx, ino, lock)
                    # atomic from here: allocation, extent items and the inode
                    new, short = _alloc_holes(mctx, holes)
                    if new:
                        merged = merge_extents(window + new)
                        d_on, d_off = apply_extents(mctx, ino, lock, window, merged)
                        inode.online_blocks += d_on
                        inode.offline_blocks += d_off
                    done = cl + 1 if short is None else short  # all of [first, done) mapped
                    grown = False
                    if not keep_size and done > first:
                        size = min(end, done << BLOCK_SHIFT)
                        if size > inode.size:
                            inode.size = size
                            grown = True
                    inode_mod.touch(inode, mtime=grown, ctime=True, now=mctx.now())
                    if (new or grown) and not changed:
                        inode_mod.bump_data(inode, mctx)
                        changed = True
                    inode_mod.store_inode(mctx, inode, lock, ilock)
                if short is not None:
                    raise FsError(errno.ENOSPC, "fallocate ran out of data blocks")
                if cl >= last:
                    break
                b = cl + 1


# --------------------------------------------------------------------------- lseek, fiemap


def _is_data(e: Extent) -> bool:
    """SEEK_DATA's data: online or offline blocks (unwritten ones are holes, as in ext4
    without dirty pages)."""
    return e.online or e.offline


async def lseek(mctx, ino: int, offset: int, whence: int) -> int:
    """SEEK_DATA / SEEK_HOLE: the byte offset of the first data / hole at or after offset.

    ENXIO if offset is negative or not below i_size, and for SEEK_DATA when no data
    follows; EOF counts as a hole, so SEEK_HOLE returns at most i_size.
    """
    if whence not in (SEEK_DATA, SEEK_HOLE):
        raise FsError(errno.EINVAL, f"lseek whence {whence}")
    async with inode_rwsem(mctx, ino, exclusive=False), \
            mctx.locks.inodes([ino], LOCK_READ) as locks:
        lock = locks[ino]
        inode = await inode_mod.load_inode(mctx, ino, lock)
        _check_regular(inode)
        size = inode.size
        if offset < 0 or offset >= size:
            raise FsError(errno.ENXIO)
        pos = offset >> BLOCK_SHIFT  # first block not yet looked at
        lastb = (size - 1) >> BLOCK_SHIFT
        while pos <= lastb:
            exts = await load_extents(mctx, ino, pos, lastb, lock, limit=LSEEK_BATCH)
            for e in exts:
                s = max(e.start, pos)
                if whence == SEEK_DATA:
                    if _is_data(e):
                        return max(offset, s << BLOCK_SHIFT)
                elif s > pos or not _is_data(e):
                    return max(offset, pos << BLOCK_SHIFT)
                pos = e.last + 1
            if len(exts) < LSEEK_BATCH:
                break
        if whence == SEEK_DATA:
            raise FsError(errno.ENXIO)
        return min(max(offset, pos << BLOCK_SHIFT), size)


def _fiemap_entry(e: Extent) -> list[int]:
    if e.offline:
        return [e.start, 0, e.length, FIEMAP_EXTENT_UNKNOWN]
    flags = FIEMAP_EXTENT_UNWRITTEN if e.flags & FLAG_UNWRITTEN else 0
    return [e.start, e.blkno, e.length, flags]


async def fiemap(mctx, ino: int, start: int, length: int,
                 limit: int | None = None) -> list[tuple[int, int, int, int]]:
    """The extents overlapping bytes [start, start+length) as (logical byte, physical byte,
    length in bytes, FIEMAP_EXTENT_* flags), whole (not clipped to the range); at most
    `limit` of them (the reading stops there: a caller continues after the last).

    Offline extents are UNKNOWN with physical 0, unwritten ones UNWRITTEN; neighbours that
    are logically and physically contiguous with the same flags are reported as one
    extent (also past `EXTENT_MAX_BLOCKS`); the file's last extent has LAST.
    """
    if start < 0 or length <= 0:
        raise FsError(errno.EINVAL)
    first = start >> BLOCK_SHIFT
    last = min((start + length - 1) >> BLOCK_SHIFT, fmt.U64_MAX)
    out: list[list[int]] = []
    more_after = False
    async with inode_rwsem(mctx, ino, exclusive=False), \
            mctx.locks.inodes([ino], LOCK_READ) as locks:
        lock = locks[ino]
        await inode_mod.load_inode(mctx, ino, lock)
        pos = first
        while pos <= last:
            exts = await load_extents(mctx, ino, pos, last, lock, limit=LSEEK_BATCH)
            for e in exts:
                ent = _fiemap_entry(e)
                if out:
                    p = out[-1]
                    if p[0] + p[2] == ent[0] and p[3] == ent[3] and (
                            p[1] + p[2] == ent[1] if ent[1] else p[1] == 0):
                        p[2] += ent[2]
                        continue
                out.append(ent)
                if limit is not None and len(out) > limit:
                    break  # out[limit - 1] is whole: one more started after it
            if limit is not None and len(out) > limit:
                del out[limit:]
                more_after = True
                break
            if len(exts) < LSEEK_BATCH:
                break
            pos = exts[-1].last + 1
        if out and not more_after:
            nxt = out[-1][0] + out[-1][2]
            if nxt <= fmt.U64_MAX:
                more_after = await mctx.items.next(fmt.extent_key(ino, nxt, 0),
                                                   _extents_end(ino), lock) is not None
    if out and not more_after:
        out[-1][3] |= FIEMAP_EXTENT_LAST
    return [(lg << BLOCK_SHIFT, ph << BLOCK_SHIFT, n << BLOCK_SHIFT, fl)
            for lg, ph, n, fl in out]


# --------------------------------------------------------------------------- the rest


async def fsync(mctx, ino: int, datasync: bool) -> None:
    """Make the file's data and metadata durable: commit the open transaction."""
    await mctx.trans.sync()


def free_extent_list(mctx, inode: fmt.Inode, exts: list[Extent], lock) -> None:
    """Free the blocks of `exts` and delete their items (synchronous, inside a hold)."""
    ino = inode.ino
    for e in exts:
        _free_extent_blocks(mctx, e, e.start, e.last)
        mctx.items.delete(e.key(ino), lock)
    d_on, d_off = _counts(exts)
    inode.online_blocks = max(0, inode.online_blocks - d_on)
    inode.offline_blocks = max(0, inode.offline_blocks - d_off)


async def free_extents(mctx, inode: fmt.Inode, lock) -> None:
    """Free every block of a file being deleted and delete its extent items.

    Called inside the caller's hold and inode WRITE lock: it reads the extents (awaits, no
    item writes), then frees them all without awaiting.  Clears the inode's block counts.
    """
    exts = await collect_extents(mctx, inode.ino, lock)
    free_extent_list(mctx, inode, exts, lock)
    inode.online_blocks = 0
    inode.offline_blocks = 0


async def extents(mctx, ino: int) -> list[tuple[int, int, int, int]]:
    """Every extent as (logical block, physical blkno, nr blocks, flags), for fiemap."""
    async with mctx.locks.inodes([ino], LOCK_READ) as locks:
        exts = await collect_extents(mctx, ino, locks[ino])
    return [(e.start, e.blkno, e.length, e.flags) for e in exts]
