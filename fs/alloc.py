"""Free-space sets and allocators: which blocks are free, lent, allocated or freed.

Owns:
* `ExtentSet`: a set of blocks as sorted, merged, disjoint (start, len) extents, indexed by
  start (to merge neighbours and find containing extents) and by length (to find the
  largest), like scoutfs's free-extent trees indexed by blkno and by order.
* Extent lists on the meta device: chains of extent-list blocks storing an extent set.
* `MetaAlloc` / `DataAlloc`: a mount's lent blocks for its open transaction.  Blocks freed
  that were allocated in the same transaction go straight back to avail (nobody outside
  the transaction has seen them); other frees wait in `freed` until the server returns
  them to the free set after the commit (delayed reuse keeps stable-root readers safe).
"""

from __future__ import annotations

import errno
from collections.abc import Callable, Iterable, Iterator

from sortedcontainers import SortedDict, SortedList

from fs import format as fmt
from fs.errors import FsError
from fs.format import EXTLIST_MAX, MAGIC_EXTENT_LIST, NULL_REF, BlockRef

Extent = tuple[int, int]


class ExtentSet:
    """Sorted, merged, disjoint (start, len) extents of blocks."""

    def __init__(self, extents: Iterable[Extent] = ()):
        self._by_start: SortedDict = SortedDict()  # start -> len
        self._by_len: SortedList = SortedList()  # (len, start)
        self.total = 0
        for s, n in extents:
            self.add(s, n)

    # internal index maintenance: every extent is in both indexes
    def _put(self, start: int, length: int) -> None:
        self._by_start[start] = length
        self._by_len.add((length, start))

    def _del(self, start: int, length: int) -> None:
        del self._by_start[start]
        self._by_len.remove((length, start))

    def _containing(self, blkno: int) -> Extent | None:
        """The extent holding blkno, if any."""
        i = self._by_start.bisect_right(blkno) - 1
        if i < 0:
            return None
        s, n = self._by_start.peekitem(i)
        return (s, n) if blkno < s + n else None

    def add(self, start: int, length: int) -> None:
        """Add blocks; ValueError if any is already in the set (a double free)."""
        if length <= 0 or start < 0:
            raise ValueError(f"bad extent ({start}, {length})")
        end = start + length
        bs = self._by_start
        i = bs.bisect_right(start) - 1
        prev = bs.peekitem(i) if i >= 0 else None
        if prev is not None and prev[0] + prev[1] > start:
            raise ValueError(f"extent ({start}, {length}) overlaps ({prev[0]}, {prev[1]})")
        nxt = bs.peekitem(i + 1) if i + 1 < len(bs) else None
        if nxt is not None and nxt[0] < end:
            raise ValueError(f"extent ({start}, {length}) overlaps ({nxt[0]}, {nxt[1]})")
        self.total += length
        # merge with touching neighbours so extents stay maximal
        if prev is not None and prev[0] + prev[1] == start:
            self._del(*prev)
            start = prev[0]
        if nxt is not None and nxt[0] == end:
            self._del(*nxt)
            end += nxt[1]
        self._put(start, end - start)

    def remove(self, start: int, length: int) -> None:
        """Remove blocks; ValueError unless they are all in one extent of the set."""
        if length <= 0:
            raise ValueError(f"bad extent ({start}, {length})")
        ext = self._containing(start)
        if ext is None or start + length > ext[0] + ext[1]:
            raise ValueError(f"extent ({start}, {length}) is not wholly in the set")
        s, n = ext
        self._del(s, n)
        if start > s:
            self._put(s, start - s)
        tail = s + n - (start + length)
        if tail:
            self._put(start + length, tail)
        self.total -= length

    def contains(self, start: int, length: int = 1) -> bool:
        ext = self._containing(start)
        return ext is not None and start + length <= ext[0] + ext[1]

    def overlaps(self, start: int, length: int = 1) -> bool:
        """Whether any of the blocks [start, start + length) is in the set."""
        if self._containing(start) is not None:
            return True
        i = self._by_start.bisect_right(start)
        return i < len(self._by_start) and self._by_start.peekitem(i)[0] < start + length

    def __contains__(self, blkno: int) -> bool:
        return self._containing(blkno) is not None

    def alloc(self, length: int, *, min_length: int = 1) -> Extent | None:
        """Take the lowest extent holding `length` blocks (just `length` of them), else the
        whole largest extent of at least min_length blocks; None if there is none."""
        if length <= 0:
            raise ValueError(f"alloc of {length} blocks")
        if not self._by_len:
            return None
        largest = self._by_len[-1][0]
        if largest >= length:
            # lowest first keeps allocation compact; the common case (meta, length 1)
            # stops at the first extent
            for s, n in self._by_start.items():
                if n >= length:
                    self.remove(s, length)
                    return (s, length)
        if largest < min_length:
            return None
        # the lowest of the largest extents
        i = self._by_len.bisect_left((largest, -1))
        n, s = self._by_len[i]
        self.remove(s, n)
        return (s, n)

    def take(self, count: int) -> list[Extent]:
        """Remove `count` blocks, lowest first (fewer if the set holds fewer)."""
        out: list[Extent] = []
        while count > 0 and self._by_start:
            s, n = self._by_start.peekitem(0)
            k = min(n, count)
            self.remove(s, k)
            out.append((s, k))
            count -= k
        return out

    def intersect(self, start: int, length: int) -> list[Extent]:
        """The parts of [start, start+length) that are in the set."""
        end = start + length
        out: list[Extent] = []
        bs = self._by_start
        i = max(bs.bisect_right(start) - 1, 0)
        while i < len(bs):
            s, n = bs.peekitem(i)
            if s >= end:
                break
            lo, hi = max(s, start), min(s + n, end)
            if lo < hi:
                out.append((lo, hi - lo))
            i += 1
        return out

    def extents(self) -> list[Extent]:
        return list(self._by_start.items())

    def copy(self) -> ExtentSet:
        return ExtentSet(self.extents())

    def __iter__(self) -> Iterator[Extent]:
        return iter(self.extents())

    def __len__(self) -> int:
        """The number of extents (see `total` for blocks)."""
        return len(self._by_start)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ExtentSet) and self.extents() == other.extents()

    def __repr__(self) -> str:
        exts = self.extents()
        shown = ", ".join(f"({s}, {n})" for s, n in exts[:8])
        more = f", ... {len(exts) - 8} more" if len(exts) > 8 else ""
        return f"ExtentSet(total={self.total}: {shown}{more})"


# --------------------------------------------------------------------------- extent lists


def extent_list_nr_blocks(nr_extents: int) -> int:
    """Blocks a chain needs to store nr_extents extents (an empty list needs none)."""
    return -(-nr_extents // EXTLIST_MAX)


def write_extent_list(blocks, extents: list[Extent], seq: int,
                      alloc_blkno: Callable[[], int]) -> BlockRef:
    """Write extents as a chain of extent-list blocks and return the ref of its head.

    The blocks come from alloc_blkno (extent_list_nr_blocks() of them), which is called
    for every block before any is written, so the caller can take them out of the very set
    being written before it snapshots `extents`.  An empty list is NULL_REF.
    """
    extents = list(extents)
    if not extents:
        return NULL_REF
    chunks = [extents[i : i + EXTLIST_MAX] for i in range(0, len(extents), EXTLIST_MAX)]
    blknos = [alloc_blkno() for _ in chunks]
    next_ref = NULL_REF
    # write from the tail so each block knows the ref of the one after it
    for blkno, chunk in zip(reversed(blknos), reversed(chunks), strict=True):
        buf = fmt.pack_extent_list_block(next_ref, chunk)
        blocks.write(blkno, seq, MAGIC_EXTENT_LIST, buf)
        next_ref = BlockRef(blkno, seq)
    return next_ref


def read_extent_list(blocks, ref: BlockRef) -> tuple[list[Extent], list[int]]:
    """The extents of a chain and the blknos of its blocks (to free them later)."""
    extents: list[Extent] = []
    chain: list[int] = []
    seen: set[int] = set()
    while ref.blkno != 0:
        if ref.blkno in seen:
            # a cycle would loop forever: it can only come from corruption
            raise blocks.corrupt(ref.blkno, "extent list chain loops back on itself")
        seen.add(ref.blkno)
        buf = blocks.read(ref, MAGIC_EXTENT_LIST)
        try:
            ref_next, exts = fmt.unpack_extent_list_block(buf)
        except ValueError as e:
            raise blocks.corrupt(ref.blkno, f"malformed extent list block: {e}") from e
        chain.append(ref.blkno)
        extents.extend(exts)
        ref = ref_next
    return extents, chain


# --------------------------------------------------------------------------- allocators


class MetaAlloc:
    """A mount's lent meta blocks for its open transaction, one block at a time."""

    def __init__(self, avail: Iterable[Extent] = ()):
        self.avail = avail if isinstance(avail, ExtentSet) else ExtentSet(avail)
        self.freed = ExtentSet()  # freed blocks written before this transaction
        self.allocated = ExtentSet()  # blocks allocated in this transaction

    def alloc(self) -> int:
        got = self.avail.alloc(1)
        if got is None:
            raise FsError(errno.ENOSPC, "no lent meta blocks left")
        self.allocated.add(got[0], 1)
        return got[0]

    def free(self, blkno: int) -> None:
        if self.allocated.contains(blkno, 1):
            # never committed, nobody can be reading it: reuse at once
            self.allocated.remove(blkno, 1)
            self.avail.add(blkno, 1)
        else:
            self.freed.add(blkno, 1)

    def end_transaction(self) -> list[Extent]:
        """After a commit: hand back the freed extents and start a new transaction."""
        out = self.freed.extents()
        self.freed = ExtentSet()
        self.allocated = ExtentSet()
        return out


class DataAlloc:
    """A mount's lent data blocks for its open transaction, by extents."""

    def __init__(self, avail: Iterable[Extent] = ()):
        self.avail = avail if isinstance(avail, ExtentSet) else ExtentSet(avail)
        self.freed = ExtentSet()
        self.allocated = ExtentSet()

    def alloc(self, count: int) -> Extent:
        """Up to count contiguous blocks (the lowest run of count, else the largest)."""
        got = self.avail.alloc(count)
        if got is None:
            raise FsError(errno.ENOSPC, "no lent data blocks left")
        self.allocated.add(*got)
        return got

    def free(self, start: int, length: int) -> None:
        # split the range into the parts allocated in this transaction (reusable now) and
        # the rest (reusable after the commit)
        pos = start
        for s, n in self.allocated.intersect(start, length):
            if s > pos:
                self.freed.add(pos, s - pos)
            self.allocated.remove(s, n)
            self.avail.add(s, n)
            pos = s + n
        if pos < start + length:
            self.freed.add(pos, start + length - pos)

    def end_transaction(self) -> list[Extent]:
        out = self.freed.extents()
        self.freed = ExtentSet()
        self.allocated = ExtentSet()
        return out
