"""In-memory fakes of the items layer, for unit tests of the filesystem layer.

They implement the contracts of docs/design.md (ItemCache, LockClient, Trans, Device,
DataAlloc) with plain dicts, grant every lock at once and never touch a device, so the
filesystem modules can be tested without btrees, a server or FUSE.  `make_context()` builds
a `MountContext` over them holding a root directory inode, as mkfs leaves a volume.
"""

from __future__ import annotations

import errno
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from sortedcontainers import SortedDict

from fs import format as fmt
from fs.context import MountContext
from fs.errors import FsError

LOCK_NULL, LOCK_READ, LOCK_WRITE, LOCK_WRITE_ONLY = 0, 1, 2, 3


@dataclass
class FakeLock:
    start: fmt.Key
    end: fmt.Key
    mode: int
    write_seq: int = 0

    def covers(self, key: fmt.Key) -> bool:
        return self.start <= key <= self.end


class FakeLocks:
    """Grants every lock immediately; records the order of requests for lock-order tests."""

    def __init__(self) -> None:
        self.history: list[tuple[str, object, int]] = []

    @asynccontextmanager
    async def inodes(self, inos, mode):
        groups = sorted({fmt.lock_group_first(i) for i in inos})
        locks = {}
        for g in groups:
            start, end = fmt.inode_group_range(g)
            locks[g] = FakeLock(start, end, mode)
            self.history.append(("inode", g, mode))
        yield {i: locks[fmt.lock_group_first(i)] for i in inos}

    @asynccontextmanager
    async def rename(self):
        self.history.append(("rename", 0, LOCK_WRITE))
        key = fmt.rename_lock_key()
        yield FakeLock(key, key, LOCK_WRITE)

    @asynccontextmanager
    async def zone(self, start_key, mode):
        self.history.append(("zone", start_key[0], mode))
        yield FakeLock((start_key[0], 0, 0, 0, 0, 0), (start_key[0],) + fmt.KEY_MAX[1:], mode)


class FakeItems:
    """A dict of committed-or-dirty items; writes check the lock covers the key."""

    def __init__(self) -> None:
        self.data: SortedDict = SortedDict()

    def _check(self, key, lock, write: bool) -> None:
        assert lock.start <= key <= lock.end, f"key {key} not covered by lock"
        if write:
            assert lock.mode in (LOCK_WRITE, LOCK_WRITE_ONLY), "write without a write lock"

    async def lookup(self, key, lock) -> bytes | None:
        self._check(key, lock, False)
        return self.data.get(key)

    async def next(self, key, last, lock):
        for k in self.data.irange(key, last):
            return k, self.data[k]
        return None

    async def next_batch(self, key, last, lock, limit: int, *, fill: bool = True):
        out = []
        for k in self.data.irange(key, last):
            if len(out) >= limit:
                break
            out.append((k, self.data[k]))
        return out

    async def prev(self, key, first, lock):
        for k in self.data.irange(first, key, reverse=True):
            return k, self.data[k]
        return None

    async def items(self, start, end, lock) -> AsyncIterator[tuple[fmt.Key, bytes]]:
        for k in list(self.data.irange(start, end)):
            if k in self.data:
                yield k, self.data[k]

    def update(self, key, value: bytes, lock, primary=None) -> None:
        self._check(key, lock, True)
        self.data[key] = bytes(value)

    def delete(self, key, lock, primary=None) -> None:
        self._check(key, lock, True)
        self.data.pop(key, None)

    def add_delta(self, key, total: int, count: int, lock, primary=None) -> None:
        """A `.totl.` delta: kept summed (a zero sum vanishes), as the forest reads it."""
        self._check(key, lock, True)
        old = self.data.get(key)
        if old is not None:
            t, c = fmt.unpack_totl(old)
            total, count = t + total, c + count
        if (total & fmt.U64_MAX, count & fmt.U64_MAX) == (0, 0):
            self.data.pop(key, None)
        else:
            self.data[key] = fmt.pack_totl(total, count)


class FakeDataAlloc:
    def __init__(self, start: int, count: int) -> None:
        self.next = start
        self.end = start + count
        self.freed: list[tuple[int, int]] = []

    def alloc(self, count: int) -> tuple[int, int]:
        if self.next >= self.end:
            raise FsError(errno.ENOSPC)
        n = min(count, self.end - self.next)
        start = self.next
        self.next += n
        return start, n

    def free(self, start: int, length: int) -> None:
        self.freed.append((start, length))


class FakeTrans:
    def __init__(self, data_blocks: int = 1 << 20) -> None:
        self.seq = 10
        self.holders = 0
        self.commits = 0
        self.data_written = False
        self.data_alloc = FakeDataAlloc(fmt.DATA_DEV_START_BLKNO, data_blocks)
        from fs.srch import SrchLog

        self.srch_log = SrchLog()  # .srch. entries logged (what a commit would write)

    @asynccontextmanager
    async def hold(self, data_blocks: int = 0):
        if data_blocks and self.data_alloc.next + data_blocks > self.data_alloc.end:
            if self.data_alloc.next >= self.data_alloc.end:
                raise FsError(errno.ENOSPC)
        self.holders += 1
        try:
            yield
        finally:
            self.holders -= 1

    def note_data_written(self) -> None:
        self.data_written = True

    async def sync(self) -> None:
        assert self.holders == 0
        self.commits += 1
        self.seq += 1


class FakeDevice:
    """A sparse in-memory device of 4 KiB blocks with the Device interface."""

    def __init__(self, size: int = 1 << 34) -> None:
        self.size = size
        self.path = "<fake>"
        self.direct = False
        self.blocks: dict[int, bytes] = {}

    def read(self, offset: int, length: int) -> bytes:
        assert offset % 4096 == 0 and length % 4096 == 0
        out = bytearray()
        for b in range(offset // 4096, (offset + length) // 4096):
            out += self.blocks.get(b, bytes(4096))
        return bytes(out)

    def write(self, offset: int, data) -> None:
        data = bytes(data)
        assert offset % 4096 == 0 and len(data) % 4096 == 0
        for i in range(len(data) // 4096):
            self.blocks[offset // 4096 + i] = data[i * 4096 : (i + 1) * 4096]

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


def make_context(fmt_vers: int = 2) -> MountContext:
    """A context over fakes holding a root directory inode, as mkfs leaves a volume."""
    items = FakeItems()
    root = fmt.Inode(ino=fmt.ROOT_INO, mode=0o040755, nlink=2, meta_seq=1,
                     atime=(1, 0), ctime=(1, 0), mtime=(1, 0), crtime=(1, 0))
    items.data[fmt.inode_key(fmt.ROOT_INO)] = fmt.pack_inode(root)
    items.data[fmt.seq_index_key(fmt.INODE_INDEX_META_SEQ, 1, fmt.ROOT_INO)] = b""
    next_ino = [fmt.FIRST_ALLOC_INO]

    async def alloc_ino() -> int:
        ino = next_ino[0]
        next_ino[0] += 1
        return ino

    trans = FakeTrans()

    async def statfs() -> dict[str, int]:
        a = trans.data_alloc
        return {
            "total_meta_blocks": 1 << 16, "free_meta_blocks": 1 << 15,
            "total_data_blocks": a.end, "free_data_blocks": a.end - a.next,
            "inode_count": len([k for k in items.data if k[2] == fmt.FS_INODE]),
            "next_ino": next_ino[0],
        }

    return MountContext(items=items, locks=FakeLocks(), trans=trans, data_dev=FakeDevice(),
                        alloc_ino=alloc_ino, statfs=statfs, fmt_vers=fmt_vers)


async def errno_of(coro) -> int:
    """The errno an awaited filesystem call fails with (FsError), or 0 when it succeeds."""
    try:
        await coro
    except FsError as e:
        return e.errno
    return 0
