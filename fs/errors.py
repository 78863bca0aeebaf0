"""Errors the filesystem layers raise: FsError carries the errno a caller sees."""

from __future__ import annotations

import errno as _errno
import os


class FsError(Exception):
    """An operation failed with an errno, as a syscall would.

    The filesystem layer raises it; the adapters (FUSE, control socket) turn it into the
    errno reply.  Never raise it for a bug: a bug should be a traceback in the log.
    """

    def __init__(self, err: int, msg: str = ""):
        super().__init__(err, msg or os.strerror(err))
        self.errno = err
        self.msg = msg

    def __str__(self) -> str:
        name = _errno.errorcode.get(self.errno, str(self.errno))
        return f"{name}: {self.msg or os.strerror(self.errno)}"


class StaleBlock(Exception):
    """A block read through a ref did not match it: the root was stale, retry with fresh roots."""
