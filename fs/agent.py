"""The archive agent API: release, stage, data waiters, STAT_MORE, MOVE_BLOCKS and walks of
the seq indexes, as plain synchronous Python calls on files of a mounted scoutfs.

This is what the `scoutfs` archive commands (fs/cli/archive.py, `stat`) are built on, and
what an HSM agent written in Python imports.  Each call is one request (stage: one per
`STAGE_REQ` bytes) to the daemon of the mount holding the file, over its control socket
(fs/control_client.py), with the checks and errnos of the matching scoutfs ioctl
(spec semantics §5).  A refused call raises `ControlError` (an Exception with `.errno`),
never anything the daemon could be hurt by: the daemon validates every request.

Files are given as open fds or as paths.  A path is opened the way the ioctl needs it
(release, stage, move_blocks and punch_offline need the file opened for writing: the
daemon reads the open flags of the fd passed along) and closed again.  Mount-wide calls
(`data_waiting`, `data_wait_err`, `walk_inodes`) take any file or directory of the mount.
Nothing here uses trio; `stage_file` runs two requests at once from worker threads.  It is
safe to call from any thread of an agent, but never from a daemon's own trio thread.

Example: archive a file, release it, and stage it back when someone waits for it::

    import shutil
    from fs import agent

    path, copy = "/mnt/scoutfs/big", "/archive/big"
    shutil.copyfile(path, copy)
    dv = agent.stat_more(path).data_version      # what the copy holds
    agent.release(path, dv)                      # ESTALE if it was written meanwhile

    # a reader of /mnt/scoutfs/big now blocks; the agent sees it:
    for w in agent.data_waiting("/mnt/scoutfs", wait=5.0):
        print(w.ino, w.iblock, w.ops)            # e.g. 1025 0 ('read',)
    agent.stage_file(path, copy, dv)             # wakes the reader
    # or give up on it: the reader's read fails with EIO
    # agent.data_wait_err("/mnt/scoutfs", w.ino, 0, 1 << 20, "read", -errno.EIO)

    # files whose contents changed since seq 100 (after `scoutfs sync`):
    for major, _minor, ino in agent.walk_inodes("/mnt/scoutfs", "data_seq", (100, 0, 0)):
        print(ino, "changed in transaction", major)
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import NamedTuple

from fs.control_client import ControlError, call_fd
from fs.control_client import call as control_call

__all__ = [
    "ControlError", "StatMore", "Waiting", "OPS", "BLOCK_SIZE", "U64_MAX",
    "stat_more", "release", "stage", "stage_file", "data_waiting", "data_wait_err",
    "move_blocks", "punch_offline", "setattr_more", "walk_inodes", "call",
]

BLOCK_SIZE = 4096
U64_MAX = (1 << 64) - 1
STAGE_CHUNK = 1 << 20  # archive bytes per upstream STAGE ioctl (what `scoutfs stage` reads)
STAGE_REQ = 512 * 1024  # bytes per control request (base64 keeps it under the line limit)
STAGE_FROM_REQ = 8 << 20  # archive bytes per stage_from request (the daemon reads them)
STAGE_FROM_INFLIGHT = 2  # stage_from requests in flight at once
WAITING_NR = 128  # waiters asked per data_waiting request
WALK_NR = 16384  # entries asked per walk_inodes request
OPS = {"read": 1, "write": 2, "change_size": 4}  # data waiter ops (spec §5.5)
INDEXES = {"meta_seq": 0, "data_seq": 1}  # walk_inodes indexes
MB_STAGE = 1  # move_blocks flag: into the destination's offline extents


class StatMore(NamedTuple):
    """STAT_MORE of a file (spec §5.7)."""

    meta_seq: int
    data_seq: int
    data_version: int
    online_blocks: int
    offline_blocks: int
    crtime_sec: int
    crtime_nsec: int


class Waiting(NamedTuple):
    """A data waiter as DATA_WAITING lists it: an (ino, iblock) and the ops waiting there."""

    ino: int
    iblock: int
    ops: tuple[str, ...]

    @property
    def offset(self) -> int:
        return self.iblock * BLOCK_SIZE


def call(fd: int, request: dict, extra_fds: list[int] | None = None) -> dict:
    """One control request about the open fd (passed along, then any extra_fds: the
    ioctl's fd arguments); ControlError(errno) when it fails, as the ioctl would,
    including when the socket itself fails."""
    try:
        if extra_fds:
            return control_call(os.fstat(fd).st_dev, request, [fd, *extra_fds])
        return call_fd(fd, request)
    except ControlError:
        raise
    except OSError as e:
        raise ControlError(e.errno or errno.EIO) from None
    except ValueError:  # a reply that is no JSON
        raise ControlError(errno.EIO) from None


@contextmanager
def _opened(target: int | str | os.PathLike, flags: int) -> Iterator[int]:
    """An fd for target: the fd itself, or the path opened with flags (and closed after)."""
    if isinstance(target, int):
        yield target
        return
    fd = os.open(target, flags)
    try:
        yield fd
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- inode info


def stat_more(target: int | str) -> StatMore:
    """meta_seq, data_seq, data_version, online/offline block counts and crtime."""
    with _opened(target, os.O_RDONLY | os.O_NONBLOCK) as fd:
        r = call(fd, {"op": "stat_more"})
    return StatMore(r["meta_seq"], r["data_seq"], r["data_version"], r["online_blocks"],
                    r["offline_blocks"], r["crtime_sec"], r["crtime_nsec"])


def walk_inodes(target: int | str, index: str, first: tuple[int, int, int] = (0, 0, 0),
                last: tuple[int, int, int] = (U64_MAX, 0, U64_MAX),
                nr: int = WALK_NR) -> Iterator[tuple[int, int, int]]:
    """(major, minor, ino) of the meta_seq or data_seq index from first to last, in order:
    major is the seq of the transaction that last changed the inode's metadata (meta_seq)
    or contents (data_seq).  Only committed changes are listed (run `scoutfs sync` or
    `os.sync()` first); an agent remembers the last major it saw and walks from there."""
    idx = INDEXES.get(index)
    if idx is None:
        raise ValueError(f"unknown index {index!r}, try 'meta_seq' or 'data_seq'")
    cur = list(first)
    with _opened(target, os.O_RDONLY) as fd:
        while True:
            r = call(fd, {"op": "walk_inodes", "index": idx, "first": cur,
                          "last": list(last), "nr": nr})
            ents = r.get("entries", [])
            for major, minor, ino in ents:
                yield major, minor, ino
            if len(ents) < nr:
                return
            major, minor, ino = ents[-1]
            if ino < U64_MAX:
                cur = [major, minor, ino + 1]
            elif major < U64_MAX:
                cur = [major + 1, 0, 0]
            else:
                return


# --------------------------------------------------------------------------- release, stage


def release(target: int | str, data_version: int, offset: int = 0,
            length: int | None = None) -> None:
    """RELEASE [offset, offset+length) (default: the whole file, its size rounded up to
    4 KiB) if the file's data_version is still data_version (else ESTALE): its blocks are
    freed and become offline; size and data_version stay."""
    with _opened(target, os.O_WRONLY) as fd:
        if not length:
            length = (os.fstat(fd).st_size + BLOCK_SIZE - 1) // BLOCK_SIZE * BLOCK_SIZE
        call(fd, {"op": "release", "offset": offset, "length": length,
                  "data_version": data_version})


def stage(target: int | str, offset: int, data: bytes, data_version: int) -> int:
    """STAGE data at offset (4 KiB aligned; the end aligned or at i_size) into the file's
    offline blocks if its data_version is data_version (else ESTALE); returns the bytes
    staged.  Blocks that are online already are left as they are."""
    import base64

    with _opened(target, os.O_WRONLY) as fd:
        mv = memoryview(data)
        for i in range(0, len(mv), STAGE_REQ):
            call(fd, {"op": "stage", "offset": offset + i, "data_version": data_version,
                      "data": base64.b64encode(mv[i:i + STAGE_REQ]).decode()})
    return len(data)


def stage_file(target: int | str, archive: int | str, data_version: int, offset: int = 0,
               length: int | None = None, archive_offset: int | None = None) -> int:
    """Stage `length` bytes (default: the archive's size) of the archive file (from
    archive_offset; default 0, or an fd's own position) into the file at offset; returns
    the bytes staged.  The archive is passed to the daemon, which reads it, in pieces of
    `STAGE_FROM_REQ`.  A short archive raises ControlError(EIO)."""
    with _opened(archive, os.O_RDONLY) as afd, _opened(target, os.O_WRONLY) as fd:
        if length is None:
            length = os.fstat(afd).st_size
        if archive_offset is not None:
            apos = archive_offset
        elif isinstance(archive, int):
            apos = os.lseek(afd, 0, os.SEEK_CUR)
        else:
            apos = 0
        # the daemon reads the archive itself (the fd travels with each request): no
        # copy of the bytes through this process and the socket.  Two requests are in
        # flight, so the daemon reads the next piece of the archive while it stages one.
        def piece(start: int) -> int:
            want = min(length - start, STAGE_FROM_REQ)
            r = call(fd, {"op": "stage_from", "offset": offset + start,
                          "data_version": data_version, "archive_offset": apos + start,
                          "length": want}, extra_fds=[afd])
            if int(r.get("staged", 0)) != want:
                raise ControlError(errno.EIO)  # the archive ended early
            return want

        with ThreadPoolExecutor(STAGE_FROM_INFLIGHT) as pool:
            done = sum(pool.map(piece, range(0, length, STAGE_FROM_REQ)))
    return done


def move_blocks(from_target: int | str, from_off: int, length: int, to_target: int | str,
                to_off: int, data_version: int = 0, stage: bool = False) -> None:
    """MOVE_BLOCKS: the extents of from's [from_off, from_off+length) (up to its EOF) move
    to `to` at to_off, leaving holes.  With stage=True they go into `to`'s offline extents
    (whose data_version must be data_version) without changing its data_version: staging
    from a file the agent wrote on the same volume, with no copy."""
    with _opened(from_target, os.O_RDWR) as ffd, _opened(to_target, os.O_RDWR) as tfd:
        # the destination first (the ioctl is made on it), the source as its from_fd
        call(tfd, {"op": "move_blocks", "from_off": from_off, "len": length,
                   "to_off": to_off, "data_version": data_version,
                   "flags": MB_STAGE if stage else 0}, extra_fds=[ffd])


def punch_offline(target: int | str, offset: int, length: int, data_version: int) -> None:
    """PUNCH_OFFLINE: offline extents in the range become holes (data_version checked)."""
    with _opened(target, os.O_RDWR) as fd:
        call(fd, {"op": "punch_offline", "offset": offset, "length": length,
                  "data_version": data_version, "flags": 0})


def setattr_more(target: int | str, data_version: int = 0, size: int = 0,
                 offline: bool = False, ctime: tuple[int, int] = (0, 0),
                 crtime: tuple[int, int] = (0, 0)) -> None:
    """SETATTR_MORE of a new empty file (root): restore an archived file's size,
    data_version and times, with offline=True its whole contents offline (to be staged)."""
    with _opened(target, os.O_WRONLY) as fd:
        call(fd, {"op": "setattr_more", "data_version": data_version, "i_size": size,
                  "flags": 1 if offline else 0, "ctime_sec": ctime[0],
                  "ctime_nsec": ctime[1], "crtime_sec": crtime[0],
                  "crtime_nsec": crtime[1]})


# --------------------------------------------------------------------------- waiters


def ops_names(ops: int) -> tuple[str, ...]:
    return tuple(name for name, bit in OPS.items() if ops & bit)


def data_waiting(target: int | str, after_ino: int = 0, after_iblock: int = 0,
                 nr: int = WAITING_NR, wait: float = 0.0) -> list[Waiting]:
    """This mount's data waiters strictly after (after_ino, after_iblock), at most nr,
    ascending.  With wait > 0 and none waiting, the daemon holds the answer until a
    waiter registers or `wait` seconds pass (then the list may be empty)."""
    with _opened(target, os.O_RDONLY) as fd:
        req = {"op": "data_waiting", "flags": 0, "after_ino": after_ino,
               "after_iblock": after_iblock, "nr": nr}
        if wait > 0:
            req["wait_ms"] = int(wait * 1000)
        r = call(fd, req)
    return [Waiting(i, b, ops_names(o)) for i, b, o in r.get("entries", [])]


def data_wait_err(target: int | str, ino: int, data_version: int, offset: int, count: int,
                  op: str | int, err: int) -> int:
    """DATA_WAIT_ERR (root): fail the waiters of ino in [offset, offset+count) waiting for
    op ('read', 'write', 'change_size' or their bits) with err (a negative errno); returns
    how many were failed.  data_version is passed on and ignored, as upstream."""
    bits = OPS[op] if isinstance(op, str) else op
    with _opened(target, os.O_RDONLY) as fd:
        r = call(fd, {"op": "data_wait_err", "ino": ino, "data_version": data_version,
                      "offset": offset, "count": count, "wait_op": bits, "err": err})
    return int(r.get("found", 0))
