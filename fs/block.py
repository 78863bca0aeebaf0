"""Device I/O and verified meta blocks: the bottom of the storage layer.

Owns:
* `Device`: one open block device or image file, read and written in 4 KiB-aligned
  pieces.  O_DIRECT (page-aligned mmap buffers, os.preadv/os.pwritev) when the device or
  the filesystem holding the image supports it, else buffered I/O made durable by
  fdatasync in flush().
* `MetaBlocks`: the meta device in 64 KiB blocks.  Every read is verified (crc32c, magic,
  fsid, and blkno/seq against the ref that led to it) and kept in a bounded LRU cache,
  along with a second bounded cache of parsed forms (the btree's nodes) so hot blocks
  are neither re-read nor re-parsed.
* The super block and quorum block images at their fixed 4 KiB offsets.

Corruption is never a crash: it is `FsError(EIO)` with the device, block number and reason
logged.  A header that does not match its ref is `StaleBlock` (the reader followed a stale
root to a freed and reused block; it retries with fresh roots).
"""

from __future__ import annotations

import errno
import logging
import mmap
import os
import stat
import struct
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from fs import format as fmt
from fs.errors import FsError, StaleBlock
from fs.format import (
    HDR_SIZE,
    META_BLOCK_SIZE,
    QUORUM_BLKNO,
    QUORUM_MAX_SLOTS,
    SMALL_BLOCK_SIZE,
    SUPER_BLKNO,
    BlockRef,
    QuorumBlock,
    Super,
)
from fs.kmsg import KMSG

log = logging.getLogger(__name__)

ALIGN = SMALL_BLOCK_SIZE  # every offset and length we do I/O with is 4 KiB aligned

T = TypeVar("T")


class DeviceLike(Protocol):
    """What the storage layer needs of a device (Device, or testing.memdev.MemDevice)."""

    path: str
    size: int
    direct: bool

    def read(self, offset: int, length: int) -> bytes: ...
    def write(self, offset: int, data: bytes | bytearray | memoryview) -> None: ...
    def flush(self) -> None: ...
    def close(self) -> None: ...


def _check_aligned(offset: int, length: int) -> None:
    # misaligned I/O is a bug in our caller, not a device error: a traceback, not an errno
    if offset % ALIGN or length % ALIGN or offset < 0:
        raise ValueError(f"unaligned I/O: offset {offset} length {length}")


class Device:
    """One open block device or image file."""

    def __init__(self, path: str, *, readonly: bool = False):
        self.path = path
        self.readonly = readonly
        flags = (os.O_RDONLY if readonly else os.O_RDWR) | os.O_CLOEXEC
        self.direct = False
        fd = -1
        odirect = getattr(os, "O_DIRECT", 0)
        if odirect:
            try:
                fd = os.open(path, flags | odirect)
                self.direct = True
            except OSError as e:
                # tmpfs and some other filesystems refuse O_DIRECT with EINVAL: fall back
                # to the page cache and make writes durable with fdatasync in flush()
                if e.errno != errno.EINVAL:
                    raise
        if fd < 0:
            fd = os.open(path, flags)
        self.fd = fd
        try:
            self.size = os.lseek(fd, 0, os.SEEK_END)
            self.is_blockdev = stat.S_ISBLK(os.fstat(fd).st_mode)
        except OSError:
            os.close(fd)
            raise
        # O_DIRECT needs page-aligned buffers; a per-thread scratch mmap avoids mapping one
        # per I/O (data I/O may run in worker threads, so the scratch cannot be shared)
        self._local = threading.local()
        self.closed = False

    def _scratch(self, length: int) -> mmap.mmap:
        buf: mmap.mmap | None = getattr(self._local, "buf", None)
        if buf is None or len(buf) < length:
            if buf is not None:
                buf.close()
            buf = mmap.mmap(-1, max(length, META_BLOCK_SIZE))
            self._local.buf = buf
        return buf

    def _check_open(self, what: str) -> None:
        # a task that outlives its mount's close must not touch the closed fd's number,
        # which a later open may have been given
        if self.closed:
            raise FsError(errno.EIO, f"{self.path}: {what} after the device was closed")

    def _io_error(self, what: str, offset: int, length: int, e: OSError | str) -> FsError:
        log.error("%s: %s of %d bytes at offset %d failed: %s", self.path, what, length,
                  offset, e, extra=KMSG)
        err = e.errno if isinstance(e, OSError) and e.errno else errno.EIO
        return FsError(err, f"{self.path}: {what} at offset {offset}: {e}")

    def read(self, offset: int, length: int) -> bytes:
        _check_aligned(offset, length)
        self._check_open("read")
        if offset + length > self.size:
            raise self._io_error("read", offset, length, "past the end of the device")
        try:
            if not self.direct:
                out = bytearray()
                while len(out) < length:
                    chunk = os.pread(self.fd, length - len(out), offset + len(out))
                    if not chunk:
                        raise self._io_error("read", offset, length, "short read")
                    out += chunk
                return bytes(out)
            buf = self._scratch(length)
            mv = memoryview(buf)
            done = 0
            try:
                while done < length:
                    n = os.preadv(self.fd, [mv[done:length]], offset + done)
                    if n <= 0:
                        raise self._io_error("read", offset, length, "short read")
                    done += n
                return bytes(mv[:length])
            finally:
                mv.release()
        except OSError as e:
            raise self._io_error("read", offset, length, e) from e

    def write(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        length = len(data)
        _check_aligned(offset, length)
        if self.readonly:
            raise FsError(errno.EROFS, f"{self.path} is open read-only")
        self._check_open("write")
        if offset + length > self.size:
            raise self._io_error("write", offset, length, "past the end of the device")
        try:
            if not self.direct:
                mv = memoryview(data)
                done = 0
                while done < length:
                    done += os.pwrite(self.fd, mv[done:], offset + done)
                return
            buf = self._scratch(length)
            mv = memoryview(buf)
            try:
                mv[:length] = data
                done = 0
                while done < length:
                    n = os.pwritev(self.fd, [mv[done:length]], offset + done)
                    if n <= 0:
                        raise self._io_error("write", offset, length, "short write")
                    done += n
            finally:
                mv.release()
        except OSError as e:
            raise self._io_error("write", offset, length, e) from e

    def flush(self) -> None:
        # O_DIRECT bypasses the page cache but not the device's volatile write cache, so
        # both modes need the fdatasync to make completed writes durable
        if self.readonly:
            return
        self._check_open("fdatasync")
        try:
            os.fdatasync(self.fd)
        except OSError as e:
            raise self._io_error("fdatasync", 0, 0, e) from e

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        buf = getattr(self._local, "buf", None)
        if buf is not None:
            buf.close()
            self._local.buf = None
        os.close(self.fd)

    def __enter__(self) -> Device:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Device({self.path!r}, size={self.size}, direct={self.direct})"


class _Lru:
    """A bounded mapping that forgets its least recently used entries."""

    def __init__(self, limit: int):
        self.limit = max(0, limit)
        self.d: OrderedDict[int, Any] = OrderedDict()

    def get(self, k: int) -> Any:
        v = self.d.get(k)
        if v is not None:
            self.d.move_to_end(k)
        return v

    def put(self, k: int, v: Any) -> None:
        if self.limit == 0:
            return
        self.d[k] = v
        self.d.move_to_end(k)
        while len(self.d) > self.limit:
            self.d.popitem(last=False)

    def pop(self, k: int) -> None:
        self.d.pop(k, None)

    def clear(self) -> None:
        self.d.clear()

    def __len__(self) -> int:
        return len(self.d)


class MetaBlocks:
    """The meta device in verified, cached 64 KiB blocks."""

    def __init__(self, dev: DeviceLike, fsid: int, cache_blocks: int = 4096,
                 parsed_blocks: int = 512):
        self.dev = dev
        self.fsid = fsid
        self.nr_blocks = dev.size // META_BLOCK_SIZE
        # blkno -> (seq, magic, verified block bytes)
        self._cache = _Lru(cache_blocks)
        # blkno -> (seq, magic, parsed object): parsed forms are larger than the bytes, so
        # they get their own, smaller bound
        self._parsed = _Lru(parsed_blocks)
        # statistics, for tests and counters
        self.reads = 0  # blocks read from the device
        self.writes = 0  # blocks written to the device
        self.hits = 0  # reads served by a cache

    def corrupt(self, blkno: int, reason: str) -> FsError:
        """Log a corrupt block and return the EIO for the caller to raise."""
        log.error("%s: meta block %d: %s", self.dev.path, blkno, reason, extra=KMSG)
        return FsError(errno.EIO, f"{self.dev.path}: meta block {blkno}: {reason}")

    def _read_verified(self, ref: BlockRef, magic: int) -> bytes:
        blkno = ref.blkno
        if blkno < fmt.META_DEV_START_BLKNO or blkno >= self.nr_blocks:
            raise self.corrupt(blkno, f"block number out of range (device has "
                                      f"{self.nr_blocks} blocks)")
        buf = self.dev.read(blkno * META_BLOCK_SIZE, META_BLOCK_SIZE)
        self.reads += 1
        if not fmt.block_crc_ok(buf):
            if not any(buf[:HDR_SIZE]) and buf.count(0) == len(buf):
                raise self.corrupt(blkno, "block is all zeros (never written)")
            raise self.corrupt(blkno, "bad crc")
        hdr = fmt.parse_header(buf)
        if hdr.fsid != self.fsid:
            raise self.corrupt(blkno, f"fsid {hdr.fsid:016x} is not the volume's "
                                      f"{self.fsid:016x}")
        if hdr.blkno != blkno or hdr.seq != ref.seq:
            # a well-formed block that is not the one the ref wrote: freed and reused
            raise StaleBlock(f"{self.dev.path}: meta block {blkno}: ref seq {ref.seq}, "
                             f"header blkno {hdr.blkno} seq {hdr.seq}")
        if hdr.magic != magic:
            raise self.corrupt(blkno, f"magic {hdr.magic:#x} is not the expected {magic:#x}")
        self._cache.put(blkno, (ref.seq, magic, buf))
        return buf

    def read(self, ref: BlockRef, magic: int) -> bytes:
        """The whole verified block a ref names (EIO if corrupt, StaleBlock if reused)."""
        ent = self._cache.get(ref.blkno)
        if ent is not None and ent[0] == ref.seq:
            if ent[1] != magic:
                raise self.corrupt(ref.blkno, f"magic {ent[1]:#x} is not the expected "
                                              f"{magic:#x}")
            self.hits += 1
            return ent[2]
        # a cached block of another seq may have been rewritten since: ask the device
        return self._read_verified(ref, magic)

    def read_parsed(self, ref: BlockRef, magic: int,
                    parse: Callable[[int, bytes], T]) -> T:
        """The parsed form of a verified block, from the parsed cache when it holds it.

        parse(blkno, buf) must not mutate buf and its result must never be mutated by
        anyone: it is shared by every reader of this MetaBlocks.
        """
        ent = self._parsed.get(ref.blkno)
        if ent is not None and ent[0] == ref.seq and ent[1] == magic:
            self.hits += 1
            return ent[2]  # type: ignore[no-any-return]
        obj = parse(ref.blkno, self.read(ref, magic))
        self._parsed.put(ref.blkno, (ref.seq, magic, obj))
        return obj

    def put_parsed(self, ref: BlockRef, magic: int, obj: object) -> None:
        """Cache the parsed form of a block just written (it must match the block)."""
        self._parsed.put(ref.blkno, (ref.seq, magic, obj))

    def write(self, blkno: int, seq: int, magic: int, buf: bytearray) -> None:
        """Seal a whole block image with its header and write it."""
        if len(buf) != META_BLOCK_SIZE:
            raise ValueError(f"meta block image of {len(buf)} bytes")
        if blkno < fmt.META_DEV_START_BLKNO:
            # the reserved blocks hold the supers and quorum blocks: a bug, not an errno
            raise ValueError(f"meta block write to reserved block {blkno}")
        if blkno >= self.nr_blocks:
            raise self.corrupt(blkno, f"write past the end of the device "
                                      f"({self.nr_blocks} blocks)")
        fmt.seal_block(buf, magic, self.fsid, seq, blkno)
        data = bytes(buf)
        self._parsed.pop(blkno)
        self._cache.pop(blkno)
        self.dev.write(blkno * META_BLOCK_SIZE, data)
        self.writes += 1
        self._cache.put(blkno, (seq, magic, data))

    def forget(self, blkno: int) -> None:
        """Drop a block from the caches (it was freed, or may have changed under us)."""
        self._cache.pop(blkno)
        self._parsed.pop(blkno)

    def forget_all(self) -> None:
        self._cache.clear()
        self._parsed.clear()

    def flush(self) -> None:
        self.dev.flush()


# --------------------------------------------------------------------------- super


def _read_small(dev: DeviceLike, blkno: int, what: str) -> bytes:
    off = blkno * SMALL_BLOCK_SIZE
    if dev.size < off + SMALL_BLOCK_SIZE:
        raise FsError(errno.EINVAL, f"{dev.path}: device of {dev.size} bytes is too small "
                                    f"to hold a scoutfs {what}")
    return dev.read(off, SMALL_BLOCK_SIZE)


def super_magic_present(dev: DeviceLike) -> bool:
    """Whether the super block location holds the scoutfs super magic (crc not checked)."""
    try:
        buf = _read_small(dev, SUPER_BLKNO, "super block")
    except FsError:
        return False
    return fmt.parse_header(buf).magic == fmt.MAGIC_SUPER


def read_super(dev: DeviceLike) -> Super:
    """The verified super block of a device; FsError(EINVAL, reason) if there is none."""
    buf = _read_small(dev, SUPER_BLKNO, "super block")
    hdr = fmt.parse_header(buf)
    if hdr.magic != fmt.MAGIC_SUPER:
        if not any(buf):
            raise FsError(errno.EINVAL, f"{dev.path}: no scoutfs super block (all zeros)")
        raise FsError(errno.EINVAL, f"{dev.path}: no scoutfs super block (magic "
                                    f"{hdr.magic:#010x}, expected {fmt.MAGIC_SUPER:#010x})")
    if not fmt.block_crc_ok(buf):
        raise FsError(errno.EINVAL, f"{dev.path}: scoutfs super block has a bad crc")
    if hdr.blkno != SUPER_BLKNO:
        raise FsError(errno.EINVAL, f"{dev.path}: scoutfs super block header has blkno "
                                    f"{hdr.blkno}, expected {SUPER_BLKNO}")
    try:
        sb = fmt.unpack_super(memoryview(buf)[HDR_SIZE:])
    except (struct.error, ValueError) as e:
        raise FsError(errno.EINVAL, f"{dev.path}: malformed scoutfs super block: {e}") from e
    if sb.fsid != hdr.fsid:
        raise FsError(errno.EINVAL, f"{dev.path}: super block fsid {sb.fsid:016x} differs "
                                    f"from its header's {hdr.fsid:016x}")
    if not fmt.FORMAT_VERSION_MIN <= sb.fmt_vers <= fmt.FORMAT_VERSION_MAX:
        raise FsError(errno.EINVAL, f"{dev.path}: unsupported scoutfs format version "
                                    f"{sb.fmt_vers} (supported {fmt.FORMAT_VERSION_MIN}-"
                                    f"{fmt.FORMAT_VERSION_MAX})")
    why = _super_range_problem(dev, sb)
    if why:
        raise FsError(errno.EINVAL, f"{dev.path}: malformed scoutfs super block: {why}")
    return sb


SANE_MAX = (1 << 63) - 1  # counters that cross the network (fs/net.py caps integers here)


def _super_range_problem(dev: DeviceLike, sb: Super) -> str | None:
    """What in a super (whose crc matched) no volume could hold, or None."""
    if not 0 < sb.seq <= SANE_MAX:
        return f"seq {sb.seq} out of range"
    if not fmt.ROOT_INO < sb.next_ino <= SANE_MAX:
        return f"next_ino {sb.next_ino} out of range"
    if sb.free_meta_blocks > sb.total_meta_blocks or sb.free_data_blocks > sb.total_data_blocks:
        return "more free blocks than blocks"
    for name in ("fs_root", "logs_root", "mounted_clients", "srch_root"):
        root = getattr(sb, name)
        if root.height > fmt.BTREE_MAX_HEIGHT or (root.height and not
                                                  fmt.META_DEV_START_BLKNO <= root.ref.blkno
                                                  < sb.total_meta_blocks):
            return f"{name} (height {root.height}, block {root.ref.blkno}) out of range"
    for name in ("meta_free", "data_free", "meta_pending", "data_pending"):
        ref = getattr(sb, name)
        if ref.blkno and not fmt.META_DEV_START_BLKNO <= ref.blkno < sb.total_meta_blocks:
            return f"{name} block {ref.blkno} out of range"
    # what mkfs accepts for -Q (its address is any IPv4 address: one this host does not
    # have is a valid configuration for another host, refused by the mount that binds it)
    for nr, slot in sb.quorum_slots.items():
        if not 0 <= nr < QUORUM_MAX_SLOTS:
            return f"quorum slot {nr} out of range 0..{QUORUM_MAX_SLOTS - 1}"
        if not 0 < slot.port <= 65535:
            return f"quorum slot {nr} port {slot.port} out of range"
    return None


def write_super(dev: DeviceLike, sb: Super) -> None:
    """Write (not flush) the super block copy of a device."""
    dev.write(SUPER_BLKNO * SMALL_BLOCK_SIZE, fmt.pack_super_block(sb))


# --------------------------------------------------------------------------- quorum


def _check_slot(slot: int) -> None:
    if not 0 <= slot < QUORUM_MAX_SLOTS:
        raise ValueError(f"quorum slot {slot} out of range 0..{QUORUM_MAX_SLOTS - 1}")


def read_quorum_block(dev: DeviceLike, slot: int, fsid: int | None = None) -> QuorumBlock:
    """A slot's quorum block; an all-zero block is an empty (never written) one.

    FsError(EIO) if the block is corrupt or (when fsid is given) of another volume.
    """
    _check_slot(slot)
    blkno = QUORUM_BLKNO + slot
    buf = _read_small(dev, blkno, "quorum block")
    if not any(buf):
        return QuorumBlock()

    def bad(reason: str) -> FsError:
        log.error("%s: quorum block %d (slot %d): %s", dev.path, blkno, slot, reason, extra=KMSG)
        return FsError(errno.EIO, f"{dev.path}: quorum block {blkno} (slot {slot}): {reason}")

    if not fmt.block_crc_ok(buf):
        raise bad("bad crc")
    hdr = fmt.parse_header(buf)
    if hdr.magic != fmt.MAGIC_QUORUM:
        raise bad(f"magic {hdr.magic:#x} is not {fmt.MAGIC_QUORUM:#x}")
    if hdr.blkno != blkno:
        raise bad(f"header blkno {hdr.blkno}")
    if fsid is not None and hdr.fsid != fsid:
        raise bad(f"fsid {hdr.fsid:016x} is not the volume's {fsid:016x}")
    return fmt.unpack_quorum(memoryview(buf)[HDR_SIZE:])


def write_quorum_block(dev: DeviceLike, slot: int, qb: QuorumBlock, fsid: int) -> None:
    """Write (not flush) a slot's quorum block."""
    _check_slot(slot)
    dev.write((QUORUM_BLKNO + slot) * SMALL_BLOCK_SIZE, fmt.pack_quorum_block(qb, fsid, slot))
