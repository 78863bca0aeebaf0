"""The archive interfaces on file contents: RELEASE, STAGE, PUNCH_OFFLINE, SETATTR_MORE
(spec §5.2, §5.3, §5.7, §5.9), with their argument checks in the spec's errno order.

GET_ATTR_X and SET_ATTR_X (§5.7, §5.11: retention, project id) live here too, and
MOVE_BLOCKS (§5.8), which hands one file's extents to another (with MB_STAGE: into the
other's offline extents, the way an agent stages from a file it wrote on this volume).

The caller (fs/control.py) tells each call how the file was opened (`writable`, and for
stage `bad_flags`: O_APPEND, O_DIRECT or O_DSYNC) and whether the mount is read-only;
everything else is decided here under the inode's cluster WRITE lock.

Extents (fs/data.py): release turns mapped and unwritten blocks inside i_size into OFFLINE
unmapped extents (blkno 0) and frees them; neighbouring offline extents merge.  Stage
allocates new blocks for the offline (and hole) blocks of its range, writes the archive's
bytes into them (the data device is flushed before the commit that records the extents:
`note_data_written`), and makes them online; blocks already mapped are left alone.  A crash
therefore leaves a block either offline or fully staged.

Versioning (§5.1): release, stage and punch-offline leave data_version, data_seq and the
times unchanged; they update meta_seq (`store_inode`).  setattr_more sets size, ctime,
crtime and, when given, data_version (and then data_seq).

Concurrency rule: like every content change, each call takes the per-inode rwsem
(exclusive) before the inode's cluster WRITE lock and the index zone lock, reads what it
needs (awaits), then makes all its item changes and the inode store in one transaction hold
without awaiting between them.  move_blocks takes two inodes: both rwsems in ascending
inode order, then both cluster WRITE locks in one `locks.inodes` call (ascending groups),
then the index zone lock; each extent it moves changes both files in one hold.  Stage and
punch wake this mount's data waiters of the inode
afterwards (synchronous); waiters on other mounts are woken by the invalidation of their
lock that our WRITE lock caused.
"""

from __future__ import annotations

import errno
import stat

import trio

from fs import data as fsdata
from fs import datawait
from fs import format as fmt
from fs import inode as inode_mod
from fs.data import BLOCK_SHIFT, BLOCK_SIZE, EXTENT_MAX_BLOCKS, FLAG_OFFLINE, Extent
from fs.errors import FsError

LOCK_WRITE = fsdata.LOCK_WRITE
U64_MAX = fmt.U64_MAX
SETATTR_MORE_OFFLINE = 1  # SCOUTFS_IOC_SETATTR_MORE_OFFLINE
SETATTR_MORE_FLAGS = SETATTR_MORE_OFFLINE
STAGE_MAX = 1 << 20  # bytes one stage request may carry (the CLI sends at most this)


async def _stall_if_armed(mctx, name: str) -> None:
    """Crash-test hook (fs.triggers: ours): once the trigger is armed, park here for good,
    holding whatever the caller holds, until the mount is killed."""
    triggers = getattr(mctx, "triggers", None)
    if triggers is not None and triggers.fire(name):
        await trio.sleep_forever()


def _nblocks(size: int) -> int:
    return (size + BLOCK_SIZE - 1) >> BLOCK_SHIFT


def _offline_pieces(first: int, last: int) -> list[Extent]:
    """OFFLINE unmapped extents covering [first, last], each at most EXTENT_MAX_BLOCKS."""
    out = []
    b = first
    while b <= last:
        n = min(EXTENT_MAX_BLOCKS, last - b + 1)
        out.append(Extent(b, n, 0, FLAG_OFFLINE))
        b += n
    return out


# --------------------------------------------------------------------------- release


async def release(mctx, ino: int, offset: int, length: int, data_version: int, *,
                  writable: bool, readonly: bool = False) -> None:
    """RELEASE (§5.2): free the mapped and unwritten blocks of [offset, offset+length),
    leaving OFFLINE unmapped extents inside i_size; past i_size blocks are just freed."""
    if length == 0:
        return
    if offset + length - 1 > U64_MAX or offset % BLOCK_SIZE or length % BLOCK_SIZE:
        raise FsError(errno.EINVAL, "release range wraps or is not 4 KiB aligned")
    if readonly:
        raise FsError(errno.EROFS)
    first = offset >> BLOCK_SHIFT
    last = (offset + length - 1) >> BLOCK_SHIFT
    async with fsdata.inode_rwsem(mctx, ino, exclusive=True), \
            mctx.locks.inodes([ino], LOCK_WRITE) as locks:
        lock = locks[ino]
        async with inode_mod.index_lock(mctx) as ilock:
            inode = await inode_mod.load_inode(mctx, ino, lock)
            if not stat.S_ISREG(inode.mode) or not writable:
                raise FsError(errno.EINVAL, "release of a file not regular or not writable")
            if inode.data_version != data_version:
                raise FsError(errno.ESTALE, "data_version mismatch")
            if mctx.drop_pages is not None:
                mctx.drop_pages(ino)
            eof = _nblocks(inode.size)  # first block wholly past i_size
            window = await fsdata.load_extents(mctx, ino, max(first - 1, 0),
                                               min(last + 1, U64_MAX), lock)
            pieces: list[Extent] = []
            freed: list[Extent] = []
            for e in window:
                if e.last < first or e.start > last:
                    continue
                c = e.clip(max(e.start, first), min(e.last, last))
                if c.blkno == 0:
                    pieces.append(c)  # a hole stays one, offline stays offline
                    continue
                freed.append(c)
                if c.start < eof:
                    pieces += _offline_pieces(c.start, min(c.last, eof - 1))
            new = fsdata.replace_range(window, first, last, pieces)
            async with mctx.trans.hold():
                inode = await inode_mod.load_inode(mctx, ino, lock)
                # atomic from here
                for c in freed:
                    mctx.trans.data_alloc.free(c.blkno, c.length)
                d_on, d_off = fsdata.apply_extents(mctx, ino, lock, window, new)
                inode.online_blocks += d_on
                inode.offline_blocks += d_off
                inode_mod.store_inode(mctx, inode, lock, ilock)
                await _stall_if_armed(mctx, "archive_release_stall")  # changed, uncommitted
            if inode.online_blocks == 0:
                await _truncate_past_eof(mctx, ino, eof, lock, ilock)


async def _truncate_past_eof(mctx, ino: int, eof: int, lock, ilock) -> None:
    """No online blocks remain: free every extent past i_size (§5.2)."""
    while True:
        batch = await fsdata.load_extents(mctx, ino, eof, U64_MAX, lock,
                                          limit=fsdata.TRUNCATE_BATCH)
        if not batch:
            return
        async with mctx.trans.hold():
            inode = await inode_mod.load_inode(mctx, ino, lock)
            new = []
            for e in batch:
                s = max(e.start, eof)
                if e.blkno:
                    mctx.trans.data_alloc.free(e.blkno + (s - e.start), e.last - s + 1)
                if e.start < eof:
                    new.append(e.clip(e.start, eof - 1))
            d_on, d_off = fsdata.apply_extents(mctx, ino, lock, batch, new)
            inode.online_blocks += d_on
            inode.offline_blocks += d_off
            inode_mod.store_inode(mctx, inode, lock, ilock)
        if len(batch) < fsdata.TRUNCATE_BATCH:
            return


# --------------------------------------------------------------------------- stage


async def stage(mctx, ino: int, offset: int, buf, data_version: int, *, writable: bool,
                bad_flags: bool = False, readonly: bool = False) -> int:
    """STAGE (§5.3): write buf at offset into the offline (and hole) blocks of the range,
    which become online; returns the bytes staged."""
    mv = memoryview(buf)
    length = mv.nbytes
    if length < 0 or offset < 0 or offset + length - 1 > U64_MAX or offset % BLOCK_SIZE:
        raise FsError(errno.EINVAL, "stage range wraps or offset not 4 KiB aligned")
    if length == 0:
        return 0
    if readonly:
        raise FsError(errno.EROFS)
    end = offset + length
    first = offset >> BLOCK_SHIFT
    last = (end - 1) >> BLOCK_SHIFT
    async with fsdata.inode_rwsem(mctx, ino, exclusive=True), \
            mctx.locks.inodes([ino], LOCK_WRITE) as locks:
        lock = locks[ino]
        async with inode_mod.index_lock(mctx) as ilock:
            inode = await inode_mod.load_inode(mctx, ino, lock)
            if not stat.S_ISREG(inode.mode) or not writable or bad_flags:
                raise FsError(errno.EINVAL, "stage into a file not regular or not writable")
            if end > inode.size or (end % BLOCK_SIZE and end != inode.size):
                raise FsError(errno.EINVAL, "stage past i_size or with an unaligned end")
            if inode.data_version != data_version:
                raise FsError(errno.ESTALE, "data_version mismatch")
            window = await fsdata.load_extents(mctx, ino, max(first - 1, 0), last + 1, lock)
            keep: list[Extent] = []  # mapped blocks in the range: left as they are
            targets: list[tuple] = []  # (iblock, n, None, False): to allocate and write
            b = first
            for e in window:
                if e.last < first or e.start > last or e.blkno == 0:
                    continue
                s, t = max(e.start, first), min(e.last, last)
                if s > b:
                    targets.append((b, s - b, None, False))
                keep.append(e.clip(s, t))
                b = t + 1
            if b <= last:
                targets.append((b, last - b + 1, None, False))
            nalloc = sum(t[1] for t in targets)
            if not nalloc:
                return length  # all online already: nothing to do
            async with mctx.trans.hold(data_blocks=nalloc):
                allocated: list[tuple[int, int]] = []
                try:
                    segs = fsdata._allocate(mctx, targets, allocated)
                    await fsdata._write_segs(mctx, segs, mv, offset, end)
                    # blocks written, extents not yet changed, nothing committed
                    await _stall_if_armed(mctx, "archive_stage_stall")
                    inode = await inode_mod.load_inode(mctx, ino, lock)
                except BaseException:
                    for s, c in allocated:
                        mctx.trans.data_alloc.free(s, c)
                    raise
                # atomic from here: extent items and the inode
                mctx.trans.note_data_written()
                staged = [Extent(s.iblock, s.nblocks, s.blkno, 0) for s in segs]
                new = fsdata.replace_range(window, first, last, keep + staged)
                d_on, d_off = fsdata.apply_extents(mctx, ino, lock, window, new)
                inode.online_blocks += d_on
                inode.offline_blocks += d_off
                inode_mod.store_inode(mctx, inode, lock, ilock)
    datawait.waiters(mctx).wake_ino(ino)
    return length


# --------------------------------------------------------------------------- punch_offline


async def punch_offline(mctx, ino: int, offset: int, length: int, data_version: int,
                        flags: int, *, writable: bool) -> None:
    """PUNCH_OFFLINE (§5.9): offline unmapped extents in the range become holes; a mapped
    extent in the range fails with EINVAL after the offline ones before it were punched."""
    if length == 0:
        return
    if offset + length - 1 > U64_MAX or offset % BLOCK_SIZE or length % BLOCK_SIZE:
        raise FsError(errno.EOVERFLOW, "punch range wraps or is not 4 KiB aligned")
    if flags:
        raise FsError(errno.EINVAL, "unknown punch_offline flags")
    first = offset >> BLOCK_SHIFT
    last = (offset + length - 1) >> BLOCK_SHIFT
    async with fsdata.inode_rwsem(mctx, ino, exclusive=True), \
            mctx.locks.inodes([ino], LOCK_WRITE) as locks:
        lock = locks[ino]
        async with inode_mod.index_lock(mctx) as ilock:
            inode = await inode_mod.load_inode(mctx, ino, lock)
            if not stat.S_ISREG(inode.mode) or not writable:
                raise FsError(errno.EINVAL, "punch of a file not regular or not writable")
            if inode.data_version != data_version:
                raise FsError(errno.ESTALE, "data_version mismatch")
            fsdata._check_retention(inode)
            window = await fsdata.load_extents(mctx, ino, first, last, lock)
            old: list[Extent] = []
            new: list[Extent] = []
            bad = False
            for e in window:
                if e.blkno or not e.offline:
                    bad = True  # a mapped (online or unwritten) extent: stop here
                    break
                s, t = max(e.start, first), min(e.last, last)
                old.append(e)
                if e.start < s:
                    new.append(e.clip(e.start, s - 1))
                if e.last > t:
                    new.append(e.clip(t + 1, e.last))
            if old:
                async with mctx.trans.hold():
                    inode = await inode_mod.load_inode(mctx, ino, lock)
                    d_on, d_off = fsdata.apply_extents(mctx, ino, lock, old, new)
                    inode.online_blocks += d_on
                    inode.offline_blocks += d_off
                    inode_mod.store_inode(mctx, inode, lock, ilock)
    if old:
        datawait.waiters(mctx).wake_ino(ino)
    if bad:
        raise FsError(errno.EINVAL, "punch_offline range holds mapped blocks")


# --------------------------------------------------------------------------- move_blocks

MB_STAGE = 1  # SCOUTFS_IOC_MB_STAGE
MB_FLAGS = MB_STAGE


def may_write(inode: fmt.Inode, uid: int, gid: int) -> bool:
    """inode_permission(MAY_WRITE) from the mode bits: root may, else the owner's, group's
    or others' write bit (ACLs and supplementary groups are not consulted)."""
    if uid == 0:
        return True
    if uid == inode.uid:
        return bool(inode.mode & 0o200)
    if gid == inode.gid:
        return bool(inode.mode & 0o020)
    return bool(inode.mode & 0o002)


def _covered_offline(exts: list[Extent], first: int, last: int) -> bool:
    """Whether offline extents cover every block of [first, last] (an offline run may be
    stored as several extents of at most EXTENT_MAX_BLOCKS)."""
    b = first
    for x in exts:
        if x.start > b or not x.offline:
            return False
        b = x.last + 1
        if b > last:
            return True
    return False


async def move_blocks(mctx, from_ino: int, from_off: int, length: int, to_ino: int,
                      to_off: int, data_version: int, flags: int, *, uid: int = 0,
                      gid: int = 0, readonly: bool = False) -> int:
    """MOVE_BLOCKS (§5.8): move the extents of from's [from_off, from_off+length) (up to
    its EOF) to `to` at to_off, leaving holes in from; returns the bytes of the range
    covered (0 when nothing was to move).

    Without MB_STAGE the destination range must hold no extents; with it, each moved
    extent must land inside an offline extent of `to`, whose data_version must be
    `data_version` and which keeps its data_version, data_seq and times.  Each source
    extent moves in its own transaction, so an error can come after partial progress (as
    upstream).  The bad-fd and other-filesystem checks (EBADF, EXDEV) are the caller's."""
    if length == 0:
        return 0
    if from_off + length - 1 > U64_MAX or to_off + length - 1 > U64_MAX:
        raise FsError(errno.EOVERFLOW, "move_blocks range wraps")
    if from_ino == to_ino:
        raise FsError(errno.EINVAL, "move_blocks within one inode")
    if flags & ~MB_FLAGS:
        raise FsError(errno.EINVAL, "unknown move_blocks flags")
    if readonly:
        raise FsError(errno.EROFS)
    is_stage = bool(flags & MB_STAGE)
    lo, hi = sorted((from_ino, to_ino))
    async with fsdata.inode_rwsem(mctx, lo, exclusive=True), \
            fsdata.inode_rwsem(mctx, hi, exclusive=True), \
            mctx.locks.inodes([from_ino, to_ino], LOCK_WRITE) as locks:
        flock, tlock = locks[from_ino], locks[to_ino]
        async with inode_mod.index_lock(mctx) as ilock:
            finode = await inode_mod.load_inode(mctx, from_ino, flock)
            tinode = await inode_mod.load_inode(mctx, to_ino, tlock)
            if not is_stage:
                fsdata._check_retention(tinode)
            from_size = finode.size
            if (from_off % BLOCK_SIZE or to_off % BLOCK_SIZE
                    or (length % BLOCK_SIZE and from_off + length != from_size)):
                raise FsError(errno.EINVAL, "move_blocks range not 4 KiB aligned")
            if is_stage and data_version != tinode.data_version:
                raise FsError(errno.ESTALE, "data_version mismatch")
            if from_off >= from_size:
                return 0
            if stat.S_ISDIR(finode.mode) or stat.S_ISDIR(tinode.mode):
                raise FsError(errno.EISDIR)
            if not stat.S_ISREG(finode.mode) or not stat.S_ISREG(tinode.mode):
                raise FsError(errno.EINVAL, "move_blocks of a file not regular")
            if not may_write(finode, uid, gid) or not may_write(tinode, uid, gid):
                raise FsError(errno.EACCES)
            if finode.offline_blocks or (tinode.offline_blocks and not is_stage):
                raise FsError(errno.ENODATA, "move_blocks with offline blocks")
            from_first = from_off >> BLOCK_SHIFT
            count = _nblocks(min(length, from_size - from_off))
            from_last = from_first + count - 1
            to_first = to_off >> BLOCK_SHIFT
            eof_blk = _nblocks(from_size)  # a piece ending here carries from's partial tail
            if mctx.drop_pages is not None:
                mctx.drop_pages(from_ino)
                mctx.drop_pages(to_ino)
            bumped = False
            cur = from_first
            while cur <= from_last:
                found = await fsdata.load_extents(mctx, from_ino, cur, from_last, flock,
                                                  limit=1)
                if not found:
                    break
                e = found[0]
                s = max(e.start, cur)
                n = min(e.last, from_last) - s + 1
                t = to_first + (s - from_first)
                piece = e.clip(s, s + n - 1)
                dwin = await fsdata.load_extents(mctx, to_ino, max(t - 1, 0), t + n, tlock)
                inside = [x for x in dwin if x.last >= t and x.start <= t + n - 1]
                if is_stage:
                    if not _covered_offline(inside, t, t + n - 1):
                        raise FsError(errno.EINVAL, "move_blocks stage outside offline")
                elif inside:
                    raise FsError(errno.EINVAL, "move_blocks destination overlaps")
                swin = await fsdata.load_extents(mctx, from_ino, max(s - 1, 0), s + n,
                                                 flock)
                async with mctx.trans.hold():
                    finode = await inode_mod.load_inode(mctx, from_ino, flock)
                    tinode = await inode_mod.load_inode(mctx, to_ino, tlock)
                    # atomic from here: both files' extent items and inodes
                    for x in inside:  # a mapped offline preallocation being replaced
                        c = x.clip(max(x.start, t), min(x.last, t + n - 1))
                        if c.blkno:
                            mctx.trans.data_alloc.free(c.blkno, c.length)
                    moved = Extent(t, n, piece.blkno, piece.flags & ~FLAG_OFFLINE)
                    new_d = fsdata.replace_range(dwin, t, t + n - 1, [moved])
                    d_on, d_off = fsdata.apply_extents(mctx, to_ino, tlock, dwin, new_d)
                    tinode.online_blocks += d_on
                    tinode.offline_blocks += d_off
                    new_s = fsdata.replace_range(swin, s, s + n - 1, [])
                    d_on, d_off = fsdata.apply_extents(mctx, from_ino, flock, swin, new_s)
                    finode.online_blocks += d_on
                    finode.offline_blocks += d_off
                    to_size = (t + n) << BLOCK_SHIFT
                    if s + n == eof_blk and from_size % BLOCK_SIZE:
                        to_size -= BLOCK_SIZE - from_size % BLOCK_SIZE
                    now = mctx.now()
                    inode_mod.touch(finode, mtime=True, ctime=True, now=now)
                    if not is_stage:
                        inode_mod.touch(tinode, mtime=True, ctime=True, now=now)
                        if to_size > tinode.size:
                            tinode.size = to_size
                    if not bumped:
                        inode_mod.bump_data(finode, mctx)
                        if not is_stage:
                            inode_mod.bump_data(tinode, mctx)
                        bumped = True
                    inode_mod.store_inode(mctx, finode, flock, ilock)
                    inode_mod.store_inode(mctx, tinode, tlock, ilock)
                cur = s + n
    if is_stage:
        datawait.waiters(mctx).wake_ino(to_ino)
    return length


# --------------------------------------------------------------------------- attr_x
#
# GET_ATTR_X / SET_ATTR_X (§5.7): the fields are chosen by x_mask bits (upstream's
# SCOUTFS_IOC_IAX_*); boolean attributes travel in `bits` (B_RETENTION), operation flags in
# x_flags (F_SIZE_OFFLINE).  meta_seq, data_seq and the block counts can only be read.

IAX_META_SEQ = 1 << 0
IAX_DATA_SEQ = 1 << 1
IAX_DATA_VERSION = 1 << 2
IAX_ONLINE_BLOCKS = 1 << 3
IAX_OFFLINE_BLOCKS = 1 << 4
IAX_CTIME = 1 << 5
IAX_CRTIME = 1 << 6
IAX_SIZE = 1 << 7
IAX_RETENTION = 1 << 8
IAX_PROJECT_ID = 1 << 9
IAX_MASK = (1 << 10) - 1
IAX_B_RETENTION = 1 << 0
IAX_BITS = IAX_B_RETENTION
IAX_F_SIZE_OFFLINE = 1 << 0
IAX_FLAGS = IAX_F_SIZE_OFFLINE

# the end offset in upstream's 104-byte struct scoutfs_ioctl_inode_attr_x of each field:
# GET_ATTR_X returns how many bytes it filled (up to the last field asked for)
_IAX_END = {IAX_META_SEQ: 24, IAX_DATA_SEQ: 32, IAX_DATA_VERSION: 40, IAX_ONLINE_BLOCKS: 48,
            IAX_OFFLINE_BLOCKS: 56, IAX_CTIME: 68, IAX_CRTIME: 80, IAX_SIZE: 88,
            IAX_RETENTION: 96, IAX_PROJECT_ID: 104}


def attr_x_of(inode: fmt.Inode, mask: int) -> dict:
    """GET_ATTR_X of a loaded inode: {name: value} of the fields in mask, and "filled",
    the bytes of the ioctl's struct that upstream's call fills (0 for an empty mask)."""
    out: dict = {}
    if mask & IAX_META_SEQ:
        out["meta_seq"] = inode.meta_seq
    if mask & IAX_DATA_SEQ:
        out["data_seq"] = inode.data_seq
    if mask & IAX_DATA_VERSION:
        out["data_version"] = inode.data_version
    if mask & IAX_ONLINE_BLOCKS:
        out["online_blocks"] = inode.online_blocks
    if mask & IAX_OFFLINE_BLOCKS:
        out["offline_blocks"] = inode.offline_blocks
    if mask & IAX_CTIME:
        out["ctime_sec"], out["ctime_nsec"] = inode.ctime
    if mask & IAX_CRTIME:
        out["crtime_sec"], out["crtime_nsec"] = inode.crtime
    if mask & IAX_SIZE:
        out["size"] = inode.size
    if mask & IAX_RETENTION:
        out["bits"] = IAX_B_RETENTION if inode.flags & fmt.INODE_FLAG_RETENTION else 0
    if mask & IAX_PROJECT_ID:
        out["project_id"] = inode.proj
    out["filled"] = max((end for bit, end in _IAX_END.items() if mask & bit), default=0)
    return out


async def get_attr_x(mctx, ino: int, mask: int) -> dict:
    """GET_ATTR_X (§5.7): anyone who opened the file may read every field."""
    if mask & ~IAX_MASK:
        raise FsError(errno.EINVAL, "unknown attr_x mask bits")
    async with mctx.locks.inodes([ino], fsdata.LOCK_READ) as locks:
        inode = await inode_mod.load_inode(mctx, ino, locks[ino])
    return attr_x_of(inode, mask)


async def set_attr_x(mctx, ino: int, *, mask: int, flags: int = 0, bits: int = 0,
                     data_version: int = 0, size: int = 0,
                     ctime: tuple[int, int] = (0, 0), crtime: tuple[int, int] = (0, 0),
                     project_id: int = 0, admin: bool) -> None:
    """SET_ATTR_X (§5.7) with its checks in the spec's order; all or nothing.

    Sets data_version (and data_seq), size (with F_SIZE_OFFLINE: offline extents over
    0..size), ctime, crtime, the retention bit and the project id; the read-only fields in
    the mask are ignored.  meta_seq becomes the transaction's."""
    if not admin:
        raise FsError(errno.EPERM)
    if mask & ~IAX_MASK or flags & ~IAX_FLAGS or bits & ~IAX_BITS:
        raise FsError(errno.EINVAL, "unknown attr_x mask, flag or bits")
    if mask & (IAX_RETENTION | IAX_PROJECT_ID) and mctx.fmt_vers < 2:
        raise FsError(errno.EOPNOTSUPP, "retention and project id need format version 2")
    set_dv = bool(mask & IAX_DATA_VERSION)
    set_size = bool(mask & IAX_SIZE)
    offline = bool(flags & IAX_F_SIZE_OFFLINE)
    if set_dv and data_version == 0:
        raise FsError(errno.EINVAL, "data_version 0")
    async with fsdata.inode_rwsem(mctx, ino, exclusive=True), \
            mctx.locks.inodes([ino], LOCK_WRITE) as locks:
        lock = locks[ino]
        async with inode_mod.index_lock(mctx) as ilock:
            inode = await inode_mod.load_inode(mctx, ino, lock)
            is_reg = stat.S_ISREG(inode.mode)
            if (set_dv or set_size) and (not is_reg or inode.data_version != 0):
                raise FsError(errno.EINVAL, "size or data_version of this file can't be set")
            if set_size and size > 0 and not set_dv:
                raise FsError(errno.EINVAL, "size without a data_version")
            if offline and not (set_size and size > 0):
                raise FsError(errno.EINVAL, "offline without a size")
            if mask & IAX_RETENTION and not is_reg:
                raise FsError(errno.EINVAL, "retention of a file not regular")
            clears = bool(mask & IAX_RETENTION and not bits & IAX_B_RETENTION)
            if inode.flags & fmt.INODE_FLAG_RETENTION and not clears:
                raise FsError(errno.EPERM, "file is under retention")
            if set_size and size > fmt.MAX_FILE_SIZE:
                raise FsError(errno.EFBIG)
            if (set_size or set_dv) and (inode.online_blocks or inode.offline_blocks or (
                    await fsdata.load_extents(mctx, ino, 0, U64_MAX, lock, limit=1))):
                raise FsError(errno.EINVAL, "the file already has blocks")
            async with mctx.trans.hold():
                inode = await inode_mod.load_inode(mctx, ino, lock)
                # atomic from here
                if offline:
                    new = _offline_pieces(0, _nblocks(size) - 1)
                    d_on, d_off = fsdata.apply_extents(mctx, ino, lock, [], new)
                    inode.online_blocks += d_on
                    inode.offline_blocks += d_off
                if set_size:
                    inode.size = size
                if set_dv:
                    inode.data_version = data_version
                    inode_mod.set_data_seq(inode, mctx, mctx.trans.seq)
                if mask & IAX_CTIME:
                    inode.ctime = tuple(ctime)
                if mask & IAX_CRTIME:
                    inode.crtime = tuple(crtime)
                if mask & IAX_RETENTION:
                    if bits & IAX_B_RETENTION:
                        inode.flags |= fmt.INODE_FLAG_RETENTION
                    else:
                        inode.flags &= ~fmt.INODE_FLAG_RETENTION
                if mask & IAX_PROJECT_ID:
                    inode.proj = project_id
                inode_mod.store_inode(mctx, inode, lock, ilock)


# --------------------------------------------------------------------------- setattr_more


async def setattr_more(mctx, ino: int, *, data_version: int, size: int, flags: int,
                       ctime: tuple[int, int], crtime: tuple[int, int], writable: bool,
                       admin: bool) -> None:
    """SETATTR_MORE (§5.7): set_attr_x with CTIME, CRTIME and SIZE, plus DATA_VERSION when
    it is non-zero; OFFLINE makes 0..size one run of offline extents."""
    if not writable:
        raise FsError(errno.EBADF)
    if flags & ~SETATTR_MORE_FLAGS:
        raise FsError(errno.EINVAL, "unknown setattr_more flags")
    mask = IAX_CTIME | IAX_CRTIME | IAX_SIZE | (IAX_DATA_VERSION if data_version else 0)
    await set_attr_x(mctx, ino, mask=mask,
                     flags=IAX_F_SIZE_OFFLINE if flags & SETATTR_MORE_OFFLINE else 0,
                     data_version=data_version, size=size, ctime=ctime, crtime=crtime,
                     admin=admin)
