"""`scoutfs read-xattr-totals` and the quota rule commands (upstream's read_xattr_totals.c
and quota.c) over the control ops of fs/control.py (spec cli-and-harness §4.2, semantics
§5.10-§5.11).
"""

from __future__ import annotations

import os
import sys

from fs.cli.argp import POSITIONAL, Opt, UsageError
from fs.cli.util import (
    GROUP_INFO,
    U64_MAX,
    Command,
    daemon_call,
    err,
    errno_str,
    open_path,
    register,
)
from fs.control_client import ControlError

TOTALS_BATCH = 8192  # totals asked per read_xattr_totals request


def _s64(v: int) -> int:
    """A u64 as C's %lld prints it."""
    return v - (1 << 64) if v >= 1 << 63 else v


# --------------------------------------------------------------------------- read-xattr-totals


def run_read_xattr_totals(cmd: str, events) -> int:
    path = None
    for k, v in events:
        if k == "path":
            path = v
        elif k == POSITIONAL:
            raise UsageError("too many arguments")
    fd = open_path(path or ".", os.O_RDONLY)
    try:
        pos: list[int] | None = [0, 0, 0]
        while pos is not None:
            try:
                r = daemon_call(fd, {"op": "read_xattr_totals", "pos": pos,
                                     "nr": TOTALS_BATCH})
            except ControlError as e:
                err(f"read_xattr_totals ioctl failed: {errno_str(e.errno)}")
                return -e.errno
            tots = r.get("totals") or []
            if not tots:
                break
            sys.stdout.write("".join(f"{a}.{b}.{c} = {_s64(t)}, {_s64(n)}\n"
                                     for a, b, c, t, n in tots))
            a, b, c = tots[-1][:3]
            # the name after the last one printed
            if c < U64_MAX:
                pos = [a, b, c + 1]
            elif b < U64_MAX:
                pos = [a, b + 1, 0]
            elif a < U64_MAX:
                pos = [a + 1, 0, 0]
            else:
                pos = None
    finally:
        os.close(fd)
    sys.stdout.flush()
    return 0


_PATH = Opt("path", "p", "path", "PATH", "Path to ScoutFS filesystem")
register(Command("read-xattr-totals", "", "Print totals of .totl. xattrs", GROUP_INFO,
                 [_PATH], run_read_xattr_totals))
