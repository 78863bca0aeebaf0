"""An in-memory block device with the exact `fs.block.Device` interface, for tests.

Owns the fake device storage and its crash model: writes land in a volatile layer until
flush(), and crash() drops (all, or a random subset of) the writes not yet flushed, as a
power cut would.  Several handles (reopen()) can share one store, as two mounts of one
volume share a disk.
"""

from __future__ import annotations

import errno
import random

from fs.errors import FsError
from fs.format import SMALL_BLOCK_SIZE

_PAGE = SMALL_BLOCK_SIZE
_ZERO_PAGE = bytes(_PAGE)


class _Store:
    """The bytes of one fake disk, sparse in 4 KiB pages (unwritten pages read as zeros):
    durable pages, and pages written since the last flush."""

    def __init__(self) -> None:
        self.durable: dict[int, bytes] = {}  # page nr -> contents
        self.pending: dict[int, bytes] = {}  # page nr -> contents, in write order

    def page(self, nr: int) -> bytes:
        p = self.pending.get(nr)
        if p is None:
            p = self.durable.get(nr, _ZERO_PAGE)
        return p


class MemDevice:
    """A fake device: same methods and attributes as fs.block.Device."""

    def __init__(self, size: int, path: str = "memdev", *, readonly: bool = False,
                 _store: _Store | None = None):
        if size % _PAGE:
            raise ValueError(f"size {size} is not a multiple of {_PAGE}")
        self.path = path
        self.size = size
        self.direct = False
        self.readonly = readonly
        self.closed = False
        self._store = _store if _store is not None else _Store()
        self.nr_reads = 0
        self.nr_writes = 0
        self.nr_flushes = 0
        # byte offsets (4 KiB aligned) whose reads fail with EIO: fault injection for tests
        self.fail_reads: set[int] = set()

    def reopen(self, *, readonly: bool = False) -> MemDevice:
        """Another handle on the same store (the disk survives the handle)."""
        return MemDevice(self.size, self.path, readonly=readonly, _store=self._store)

    def _check(self, offset: int, length: int) -> None:
        if self.closed:
            raise ValueError(f"{self.path}: I/O on a closed device")
        if offset % _PAGE or length % _PAGE or offset < 0:
            raise ValueError(f"unaligned I/O: offset {offset} length {length}")
        if offset + length > self.size:
            raise FsError(errno.EIO, f"{self.path}: I/O at {offset} past the end")

    def read(self, offset: int, length: int) -> bytes:
        self._check(offset, length)
        if self.fail_reads:
            for off in range(offset, offset + length, _PAGE):
                if off in self.fail_reads:
                    raise FsError(errno.EIO, f"{self.path}: injected read error at {off}")
        self.nr_reads += 1
        first = offset // _PAGE
        page = self._store.page
        return b"".join(page(nr) for nr in range(first, first + length // _PAGE))

    def write(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        length = len(data)
        self._check(offset, length)
        if self.readonly:
            raise FsError(errno.EROFS, f"{self.path} is open read-only")
        pending = self._store.pending
        mv = memoryview(data)
        first = offset // _PAGE
        # by page, so a crash can tear a large write as real disks can
        for i in range(length // _PAGE):
            pending.pop(first + i, None)  # keep write order: re-insert at the end
            pending[first + i] = bytes(mv[i * _PAGE : (i + 1) * _PAGE])
        self.nr_writes += 1

    def flush(self) -> None:
        if self.closed:
            raise ValueError(f"{self.path}: flush of a closed device")
        st = self._store
        st.durable.update(st.pending)
        st.pending.clear()
        self.nr_flushes += 1

    def close(self) -> None:
        self.closed = True

    # ------------------------------------------------------------------ test helpers

    def crash(self, rng: random.Random | None = None) -> None:
        """Lose the writes not yet flushed: all of them, or with rng a random subset of
        their 4 KiB pages (each survives with probability 1/2, as a disk cache might)."""
        st = self._store
        if rng is not None:
            for nr, piece in st.pending.items():
                if rng.random() < 0.5:
                    st.durable[nr] = piece
        st.pending.clear()

    def unflushed(self) -> int:
        """How many 4 KiB pages a crash would put at risk."""
        return len(self._store.pending)

    def poke(self, offset: int, data: bytes) -> None:
        """Change bytes durably behind everyone's back: corruption for tests."""
        st = self._store
        pos = offset
        end = offset + len(data)
        while pos < end:
            nr, within = divmod(pos, _PAGE)
            n = min(_PAGE - within, end - pos)
            page = bytearray(st.page(nr))
            page[within : within + n] = data[pos - offset : pos - offset + n]
            st.durable[nr] = bytes(page)
            if nr in st.pending:
                st.pending[nr] = bytes(page)
            pos += n

    def peek(self, offset: int, length: int) -> bytes:
        """Bytes as reads see them, at any offset (no alignment needed)."""
        first, last = offset // _PAGE, (offset + length - 1) // _PAGE
        raw = b"".join(self._store.page(nr) for nr in range(first, last + 1))
        return raw[offset - first * _PAGE : offset - first * _PAGE + length]

    def __repr__(self) -> str:
        return f"MemDevice({self.path!r}, size={self.size})"
