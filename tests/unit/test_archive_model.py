"""A model test of file contents under the archive operations: random sequences of write,
truncate, fallocate, release, stage, punch-offline and move-blocks (plain and STAGE) on two
files, against a model of each file's bytes, per-block state (hole, online, unwritten,
offline) and data_version.  After every step the sizes, online and offline counts,
data_versions, extent invariants and every readable byte agree; fsck's item checks are
clean at the end.  On the fakes (fs/testing), in-process; a fixed sequence runs on the
real stack too, with a full fsck of the volume.

An access that would wait for offline data (spec §5.5) is not tried (the waiters have
their own tests); neither is a plain move-blocks onto mapped destination blocks, whose
partial progress depends on extent boundaries (tests/unit/test_move_blocks.py)."""

from __future__ import annotations

import errno
from dataclasses import dataclass, field

import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fs import archive, data, fsck
from fs import format as fmt
from fs.errors import FsError
from fs.testing.fakes import errno_of
from tests.unit import test_trans
from tests.unit.test_data import BS, CTX, raw_inode
from tests.unit.test_fallocate import fsck_problems, real_fs
from tests.unit.test_move_blocks import check_invariants

A, B = 0, 1  # the two files, by index
ONLINE, UNWRITTEN, OFFLINE = "O", "U", "X"  # a block absent from `st` is a hole


@dataclass
class MFile:
    ino: int
    data: bytearray = field(default_factory=bytearray)  # len == i_size
    st: dict[int, str] = field(default_factory=dict)
    dv: int = 0

    @property
    def nblk(self) -> int:
        return (len(self.data) + BS - 1) // BS

    def offline(self) -> set[int]:
        return {b for b, s in self.st.items() if s == OFFLINE}

    def block(self, b: int) -> bytes:
        chunk = bytes(self.data[b * BS:(b + 1) * BS])
        return chunk + bytes(BS - len(chunk))

    def set_block(self, b: int, chunk: bytes) -> None:
        """The bytes of block b inside i_size become chunk's."""
        lo, hi = b * BS, min((b + 1) * BS, len(self.data))
        if lo < hi:
            self.data[lo:hi] = chunk[:hi - lo]

    def resize(self, size: int) -> None:
        if size < len(self.data):
            del self.data[size:]
        else:
            self.data.extend(bytes(size - len(self.data)))


def _fill(i: int, n: int) -> bytes:
    return bytes((i * 31 + k * 7 + 1) & 0xFF for k in range(n))


# --------------------------------------------------------------------------- steps


async def write(mctx, f: MFile, off: int, n: int, i: int) -> None:
    if f.offline():
        return  # would wait
    d = _fill(i, n)
    await data.write(mctx, f.ino, off, d, CTX)
    if len(f.data) < off + n:
        f.resize(off + n)
    f.data[off:off + n] = d
    for b in range(off // BS, (off + n - 1) // BS + 1):
        f.st[b] = ONLINE
    f.dv += 1


async def truncate(mctx, f: MFile, size: int) -> None:
    if f.offline() and size not in (0, len(f.data)):
        return  # would wait
    await data.truncate(mctx, f.ino, size, CTX)
    if size == len(f.data):
        return  # only the times change: a preallocation past EOF stays
    f.dv += 1
    grow = size > len(f.data)
    f.resize(size)
    if not grow:  # shrinking frees every block past the new EOF, preallocations too
        keep = f.nblk
        f.st = {b: s for b, s in f.st.items() if b < keep}


async def fallocate(mctx, f: MFile, off: int, n: int, keep_size: bool) -> None:
    blocks = range(off // BS, (off + n - 1) // BS + 1)
    if any(f.st.get(b) == OFFLINE for b in blocks):
        return  # would wait
    await data.fallocate(mctx, f.ino, data.FALLOC_FL_KEEP_SIZE if keep_size else 0,
                         off, n, CTX)
    new = [b for b in blocks if b not in f.st]
    for b in new:
        f.st[b] = UNWRITTEN
    grew = not keep_size and off + n > len(f.data)
    if grew:
        f.resize(off + n)
    if new or grew:
        f.dv += 1


async def release(mctx, f: MFile, off: int, n: int) -> None:
    await archive.release(mctx, f.ino, off, n, f.dv, writable=True)
    if n == 0:
        return  # nothing is checked or done
    nblk = f.nblk
    for b in range(off // BS, (off + n) // BS):
        if b in f.st:
            if b < nblk:
                f.st[b] = OFFLINE
            else:
                del f.st[b]  # a preallocation past EOF is just freed
    if ONLINE not in f.st.values():
        f.st = {b: s for b, s in f.st.items() if b < nblk}


async def stage(mctx, f: MFile, off: int, n: int) -> None:
    end = min(off + n, len(f.data))
    if off >= end:
        return
    if end % BS and end != len(f.data):
        end -= end % BS
        if off >= end:
            return
    await archive.stage(mctx, f.ino, off, bytes(f.data[off:end]), f.dv, writable=True)
    for b in range(off // BS, (end - 1) // BS + 1):
        if f.st.get(b, OFFLINE) == OFFLINE:  # offline and holes get blocks
            f.st[b] = ONLINE


async def punch(mctx, f: MFile, off: int, n: int) -> None:
    e = await errno_of(archive.punch_offline(mctx, f.ino, off, n, f.dv, 0, writable=True))
    expect = 0
    for b in range(off // BS, (off + n) // BS):
        s = f.st.get(b)
        if s == OFFLINE:
            del f.st[b]
            f.set_block(b, bytes(BS))
        elif s is not None:
            expect = errno.EINVAL  # a mapped block: the offline ones before it are punched
            break
    assert e == expect


async def move(mctx, src: MFile, dst: MFile, from_off: int, n: int, to_off: int,
               stage: bool) -> None:
    """move_blocks src -> dst, only when the model knows how it ends (see the module doc)."""
    if from_off >= len(src.data):
        return
    if n % BS and from_off + n != len(src.data):
        n -= n % BS
        if not n:
            return
    count = (min(n, len(src.data) - from_off) + BS - 1) // BS
    fb, tb = from_off // BS, to_off // BS
    moving = [b for b in range(fb, fb + count) if b in src.st]
    flags = archive.MB_STAGE if stage else 0
    if src.offline() or (dst.offline() and not stage):
        e = await errno_of(archive.move_blocks(mctx, src.ino, from_off, n, dst.ino, to_off,
                                               dst.dv, flags))
        assert e == errno.ENODATA
        return
    if any((dst.st.get(tb + b - fb) != OFFLINE) if stage else (tb + b - fb in dst.st)
           for b in moving):
        return  # partial progress: not modelled
    await archive.move_blocks(mctx, src.ino, from_off, n, dst.ino, to_off, dst.dv, flags)
    if not moving:
        return
    src_eof = src.nblk
    for b in moving:
        t = tb + b - fb
        chunk = src.block(b)
        if not stage:
            end = (t + 1) * BS
            if b == src_eof - 1 and len(src.data) % BS:
                end -= BS - len(src.data) % BS
            if end > len(dst.data):
                dst.resize(end)
        dst.set_block(t, chunk)
        dst.st[t] = src.st.pop(b)
        src.set_block(b, bytes(BS))
    src.dv += 1
    if not stage:
        dst.dv += 1


# --------------------------------------------------------------------------- checks


async def check(mctx, f: MFile) -> None:
    inode = raw_inode(mctx, f.ino)
    assert inode.size == len(f.data)
    assert inode.data_version == f.dv
    assert inode.online_blocks == sum(1 for s in f.st.values() if s == ONLINE)
    assert inode.offline_blocks == len(f.offline())
    # every readable run of blocks reads as the model says
    off = f.offline()
    b = 0
    while b < f.nblk:
        if b in off:
            b += 1
            continue
        e = b
        while e < f.nblk and e not in off:
            e += 1
        lo, hi = b * BS, min(e * BS, len(f.data))
        assert await data.read(mctx, f.ino, lo, hi - lo) == bytes(f.data[lo:hi]), (b, e)
        b = e


BLOCKS = st.integers(0, 10).map(lambda k: k * BS)
ANY_OFF = st.one_of(st.integers(0, 10 * BS), BLOCKS)
FILES = st.sampled_from([(A, B), (B, A)])
OPS = st.lists(st.one_of(
    st.tuples(st.just("w"), FILES, ANY_OFF, st.integers(1, 3 * BS)),
    st.tuples(st.just("t"), FILES, ANY_OFF),
    st.tuples(st.just("f"), FILES, ANY_OFF, st.integers(1, 3 * BS), st.booleans()),
    st.tuples(st.just("rel"), FILES, BLOCKS, st.integers(0, 6).map(lambda k: k * BS)),
    st.tuples(st.just("stage"), FILES, BLOCKS, st.integers(1, 6 * BS)),
    st.tuples(st.just("punch"), FILES, BLOCKS, st.integers(1, 6).map(lambda k: k * BS)),
    st.tuples(st.just("mb"), FILES, BLOCKS, st.integers(1, 6 * BS), BLOCKS, st.booleans()),
), min_size=1, max_size=16)


async def apply(mctx, files: list[MFile], i: int, step: tuple) -> None:
    op, (x, y) = step[0], step[1]
    f, g = files[x], files[y]
    if op == "w":
        await write(mctx, f, step[2], step[3], i)
    elif op == "t":
        await truncate(mctx, f, step[2])
    elif op == "f":
        await fallocate(mctx, f, step[2], step[3], step[4])
    elif op == "rel":
        await release(mctx, f, step[2], step[3])
    elif op == "stage":
        await stage(mctx, f, step[2], step[3])
    elif op == "punch":
        await punch(mctx, f, step[2], step[3])
    elif op == "mb":
        await move(mctx, f, g, step[2], step[3], step[4], step[5])


async def two_files():
    """Two empty files in the root directory of a fake volume, and their models."""
    mctx, fs = real_fs()
    files = []
    for name in (b"a", b"b"):
        a = await fs.mknod(fmt.ROOT_INO, name, 0o100644, 0, CTX)
        files.append(MFile(a.ino, dv=raw_inode(mctx, a.ino).data_version))
    return mctx, files


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(OPS)
def test_model(ops):
    async def main():
        mctx, files = await two_files()
        for i, step in enumerate(ops):
            await apply(mctx, files, i, step)
            for f in files:
                await check(mctx, f)
            check_invariants(mctx, *(f.ino for f in files))
        assert fsck_problems(mctx) == []

    trio.run(main)


# a sequence through every operation, with a STAGE move of a partial last block
FIXED = [
    ("w", (A, B), 0, 3 * BS + 100), ("w", (B, A), 0, 5 * BS + 17),
    ("f", (A, B), 6 * BS, 2 * BS, True), ("rel", (A, B), 0, 8 * BS),
    ("stage", (A, B), 0, 2 * BS), ("punch", (A, B), 3 * BS, BS),
    ("stage", (A, B), 2 * BS, BS), ("t", (B, A), 5 * BS),
    ("mb", (B, A), 0, 2 * BS, 8 * BS, False), ("w", (B, A), 0, 2 * BS + 5),
    ("rel", (B, A), 0, BS), ("stage", (B, A), 0, BS), ("f", (B, A), 6 * BS, BS, False),
    ("t", (A, B), 9 * BS + 100), ("rel", (B, A), 0, 8 * BS),
    ("mb", (A, B), 9 * BS, 100, 4 * BS, True), ("t", (A, B), 20),
]


def test_fixed_sequence_on_the_real_stack_and_fsck(tmp_path):
    """The same steps through a real mount (btrees, allocator, commits), then a full fsck."""
    volume = test_trans.volume.__wrapped__(tmp_path)

    async def main():
        async with trio.open_nursery() as n:
            m = await test_trans.mounted(volume, n)
            files = []
            for name in (b"a", b"b"):
                a = await m.fs.mknod(fmt.ROOT_INO, name, 0o100644, 0, CTX)
                sm = await m.fs.stat_more(a.ino)
                files.append(MFile(a.ino, dv=sm["data_version"]))
            for i, step in enumerate(FIXED):
                await apply(m.fs.mctx, files, i, step)
                for f in files:
                    sm = await m.fs.stat_more(f.ino)
                    attr = await m.fs.getattr(f.ino)
                    assert (attr.size, sm["data_version"]) == (len(f.data), f.dv)
                    assert sm["online_blocks"] == sum(1 for s in f.st.values() if s == ONLINE)
                    assert sm["offline_blocks"] == len(f.offline())
            await m.sync()
            await m.close()
            n.cancel_scope.cancel()

    trio.run(main)
    assert fsck.check(*volume) == []


def test_model_expectations_are_not_vacuous():
    """The fixed sequence really moves, stages and punches (the model ran every op)."""
    async def main():
        mctx, files = await two_files()
        seen = []
        for i, step in enumerate(FIXED):
            before = [(bytes(f.data), dict(f.st), f.dv) for f in files]
            await apply(mctx, files, i, step)
            seen.append(before != [(bytes(f.data), dict(f.st), f.dv) for f in files])
            for f in files:
                await check(mctx, f)
        assert all(seen), seen
        try:
            await archive.stage(mctx, files[A].ino, 0, b"x", files[A].dv + 1,
                                writable=True)
        except FsError as e:
            assert e.errno in (errno.ESTALE, errno.EINVAL)

    trio.run(main)
