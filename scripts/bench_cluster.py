#!/usr/bin/env python3
"""Worker processes for the cluster workloads of scripts/bench (one process per mount).

This module owns what a worker does on one mount and the line protocol it speaks with
scripts/bench over stdin/stdout; scripts/bench owns the mounts and the timing summary.

    bench_cluster.py create DIR N
        mkdir DIR (untimed), print ``ready``, wait for a ``go`` line on stdin, create DIR/f0000000
        .. N-1 (open O_CREAT|O_EXCL|O_WRONLY + close), print one JSON line
        ``{"start": s, "end": e, "files": N}`` (CLOCK_MONOTONIC seconds, comparable between
        the processes of one machine).

    bench_cluster.py pingpong {a|b} FILE ROUNDS --rfd R --wfd W
        Two workers take turns appending a 16-byte record to one FILE: side a appends A0, side b
        appends B0 once it has seen A0, side a appends A1 once it has seen B0, and so on.
        Side a creates FILE (O_EXCL) before printing ``ready``.  A turn is one open
        (O_RDWR|O_APPEND): pread the other side's last record at its known offset, write ours,
        close.  A byte on the pipe (fd W to the peer, fd R from it) says "my record is written";
        the pipe only wakes the peer, which must then *see* the record through the filesystem:
        if it is not there yet the peer reopens and rereads (1 ms apart) and counts a stale
        read, so the number measures the filesystem's handoff, not a poll interval.  Side a
        prints ``{"cycles": [...], "stale": n}``: the seconds between its successive sightings
        of B's records, i.e. A -> B -> A round trips; then it checks the whole file.  Side b
        prints ``{"stale": n}``.

    bench_cluster.py rmrf DIR N KEEP RUNDIR
        mkdir DIR and create DIR/f0000000 .. N-1 (untimed), print ``ready``, wait for ``go``,
        then ``rm -rf DIR`` (timed: ``rm``), then wait until this mount's ``inode_deleted``
        counter (read from the daemon's control socket under RUNDIR) has grown by N + 1 - KEEP
        (the files and DIR, less KEEP files held open elsewhere), timed from the same start
        (``deleted``).  Prints ``{"rm": s, "deleted": s, "files": N}``.

    bench_cluster.py hold DIR K
        Open DIR/f0000000 .. K-1 read-only, print ``ready``, wait for ``go``, close them and
        print ``{"held": K}``.

Errors are one JSON line ``{"error": "..."}`` and exit status 1.

Concurrency: each worker is single-threaded and blocking; the only ordering between the two
ping-pong sides is the pipe handoff (a waits for b's byte before reading, and vice versa), so
exactly one side writes FILE at any moment.  Nothing here times out by itself except waiting
to see a record (SEE_TIMEOUT): scripts/bench kills a worker that hangs in a filesystem call.
"""

from __future__ import annotations

import json
import os
import sys
import time

REC = 16  # bytes per record: b"A%014d\n"
SEE_TIMEOUT = 60.0  # seconds a record may stay invisible after the peer said it is written
POLL = 0.001


def record(side: str, i: int) -> bytes:
    return f"{side.upper()}{i:014d}\n".encode()


def offset(side: str, i: int) -> int:
    """A_i is at 32i, B_i right after it."""
    return 2 * REC * i + (REC if side.lower() == "b" else 0)


def emit(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def wait_go() -> None:
    emit({"ready": True})
    line = sys.stdin.readline()
    if line.strip() != "go":
        raise RuntimeError(f"expected 'go' on stdin, got {line!r}")


def do_create(dirpath: str, n: int) -> dict:
    os.mkdir(dirpath)
    paths = [os.path.join(dirpath, f"f{i:07d}") for i in range(n)]
    flags = os.O_CREAT | os.O_EXCL | os.O_WRONLY
    wait_go()
    start = time.monotonic()
    for p in paths:
        os.close(os.open(p, flags, 0o644))
    end = time.monotonic()
    return {"start": start, "end": end, "files": n}


def read_counter(mnt: str, rundir: str, name: str) -> int:
    """A counter of the mount at mnt, from its daemon's control socket (sysfs_read)."""
    import socket

    st = os.stat(mnt)
    path = os.path.join(rundir, "ctl", f"{os.major(st.st_dev)}:{os.minor(st.st_dev)}.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(path)
        s.sendall(json.dumps({"op": "sysfs_read", "tree": "sys",
                              "path": f"counters/{name}"}).encode() + b"\n")
        buf = b""
        while b"\n" not in buf:
            chunk = s.recv(65536)
            if not chunk:
                raise RuntimeError("control socket closed")
            buf += chunk
    reply = json.loads(buf.split(b"\n", 1)[0])
    if reply.get("errno"):
        raise OSError(reply["errno"], f"sysfs_read counters/{name}")
    return int(reply["text"])


def do_rmrf(dirpath: str, n: int, keep: int, rundir: str) -> dict:
    import subprocess

    os.mkdir(dirpath)
    for i in range(n):
        os.close(os.open(os.path.join(dirpath, f"f{i:07d}"), os.O_CREAT | os.O_WRONLY, 0o644))
    mnt = os.path.dirname(os.path.abspath(dirpath))
    before = read_counter(mnt, rundir, "inode_deleted")
    wait_go()
    start = time.monotonic()
    subprocess.run(["rm", "-rf", dirpath], check=True)
    rm = time.monotonic() - start
    want = before + n + 1 - keep
    while read_counter(mnt, rundir, "inode_deleted") < want:
        time.sleep(0.01)
    return {"rm": rm, "deleted": time.monotonic() - start, "files": n}


def do_hold(dirpath: str, k: int) -> dict:
    fds = [os.open(os.path.join(dirpath, f"f{i:07d}"), os.O_RDONLY) for i in range(k)]
    wait_go()
    for fd in fds:
        os.close(fd)
    return {"held": k}


def _wait_peer(rfd: int, what: str) -> None:
    if os.read(rfd, 1) != b"x":
        raise RuntimeError(f"peer went away while we waited for {what}")


def _signal_peer(wfd: int) -> None:
    os.write(wfd, b"x")


def _turn(path: str, see: tuple[str, int] | None, write: tuple[str, int] | None) -> int:
    """One turn: see the peer's record (reopening until it shows), then append ours.
    Returns how many reads found the record missing (stale)."""
    stale = 0
    deadline = time.monotonic() + SEE_TIMEOUT
    while True:
        fd = os.open(path, os.O_RDWR | os.O_APPEND)
        try:
            got = os.pread(fd, REC, offset(*see)) if see is not None else b""
            if see is None or got == record(*see):
                if write is not None:
                    rec = record(*write)
                    if os.write(fd, rec) != len(rec):
                        raise RuntimeError("short write")
                return stale
            size = os.fstat(fd).st_size
        finally:
            os.close(fd)
        # not there yet: reopen (an open drops the kernel's cached pages of the file)
        stale += 1
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"{see[0].upper()}{see[1]} still not visible {SEE_TIMEOUT:.0f}s after the "
                f"peer wrote it: read {got!r} at offset {offset(*see)}, size {size}")
        time.sleep(POLL)


def check_file(path: str, rounds: int) -> None:
    with open(path, "rb") as f:
        data = f.read()
    want = b"".join(record(s, i) for i in range(rounds) for s in "ab")
    if data != want:
        first = next((k for k in range(min(len(data), len(want))) if data[k] != want[k]),
                     min(len(data), len(want)))
        raise RuntimeError(
            f"final file is wrong: {len(data)} bytes, expected {len(want)}; first difference "
            f"at byte {first}: {data[first:first + REC]!r} instead of {want[first:first + REC]!r}")


def do_pingpong(side: str, path: str, rounds: int, rfd: int, wfd: int) -> dict:
    stale = 0
    if side == "a":
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
        wait_go()
        stamps = [time.monotonic()]
        stale += _turn(path, None, ("a", 0))
        _signal_peer(wfd)
        for i in range(rounds):
            _wait_peer(rfd, f"B{i}")
            last = i == rounds - 1
            stale += _turn(path, ("b", i), None if last else ("a", i + 1))
            # the sighting of B_i ends round trip i (the write of A_{i+1} starts the next one:
            # its cost is inside the next cycle)
            stamps.append(time.monotonic())
            if not last:
                _signal_peer(wfd)
        check_file(path, rounds)
        return {"cycles": [b - a for a, b in zip(stamps, stamps[1:], strict=False)],
                "stale": stale}
    wait_go()
    for i in range(rounds):
        _wait_peer(rfd, f"A{i}")
        stale += _turn(path, ("a", i), ("b", i))
        _signal_peer(wfd)
    return {"stale": stale}


def main(argv: list[str]) -> int:
    try:
        if len(argv) == 3 and argv[0] == "create":
            out = do_create(argv[1], int(argv[2]))
        elif len(argv) == 5 and argv[0] == "rmrf":
            out = do_rmrf(argv[1], int(argv[2]), int(argv[3]), argv[4])
        elif len(argv) == 3 and argv[0] == "hold":
            out = do_hold(argv[1], int(argv[2]))
        elif len(argv) == 8 and argv[0] == "pingpong" and argv[1] in ("a", "b") \
                and argv[4] == "--rfd" and argv[6] == "--wfd":
            out = do_pingpong(argv[1], argv[2], int(argv[3]), int(argv[5]), int(argv[7]))
        else:
            sys.stderr.write(__doc__.split("\n\n")[1] + "\n")
            return 2
    except (OSError, RuntimeError, ValueError) as e:
        emit({"error": f"{type(e).__name__}: {e}"})
        return 1
    emit(out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
