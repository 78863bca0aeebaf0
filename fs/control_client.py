"""The client side of the control socket (fs/control.py): what the `scoutfs` CLI uses to ask a
mount's daemon.  Kept apart from the server side, and free of trio, so a command starts in a
few tens of milliseconds (walk-inodes of 100,000 inodes must take under a second, start
included); `fs.control` re-exports everything here.
"""

from __future__ import annotations

import array
import errno
import json
import os
import socket

MAX_MSG = 1 << 20  # the client's receive size


def run_dir() -> str:
    return os.environ.get("SCOUTFS_RUN_DIR", "/run/scoutfs")


def socket_path(major: int, minor: int, rundir: str | None = None) -> str:
    return os.path.join(rundir or run_dir(), "ctl", f"{major}:{minor}.sock")


def socket_path_for_dev(st_dev: int) -> str:
    return socket_path(os.major(st_dev), os.minor(st_dev))


class ControlError(Exception):
    def __init__(self, err: int):
        super().__init__(err, os.strerror(err))
        self.errno = err


def call(st_dev: int, request: dict, fds: list[int] | None = None,
         timeout: float | None = None) -> dict:
    """Send one request to the daemon of the mount whose st_dev is given; return its reply.
    Raises ControlError(ENOTTY) when no scoutfs daemon serves that device (as an ioctl on
    another filesystem would), ControlError(errno) when the daemon answers an error."""
    path = socket_path_for_dev(st_dev)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.settimeout(timeout)
        try:
            s.connect(path)
        except (FileNotFoundError, ConnectionRefusedError, NotADirectoryError):
            raise ControlError(errno.ENOTTY) from None
        data = json.dumps(request).encode() + b"\n"
        anc = []
        if fds:
            anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds).tobytes())]
        try:
            s.sendmsg([data], anc)
        except (BrokenPipeError, ConnectionResetError):
            pass  # a refused connection: its EAGAIN answer may still be there to read
        buf = b""
        while b"\n" not in buf:
            try:
                chunk = s.recv(MAX_MSG)
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                raise ControlError(errno.EIO)
            buf += chunk
        reply = json.loads(buf.split(b"\n", 1)[0])
    finally:
        s.close()
    if reply.get("errno"):
        raise ControlError(int(reply["errno"]))
    return reply


def call_fd(fd: int, request: dict) -> dict:
    """Like `call` for an open file: the request is about (and carries) that fd."""
    return call(os.fstat(fd).st_dev, request, [fd])
