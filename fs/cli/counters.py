"""`scoutfs counters [-t|--table] SYSFS-DIR`: print the counters of a mount's sysfs dir
(``<dir>/counters/<name>`` files), sorted by name, name left- and value right-aligned."""

from __future__ import annotations

import errno
import fcntl
import os
import struct
import sys
import termios

from fs.cli.argp import POSITIONAL, Opt, UsageError
from fs.cli.util import GROUP_INFO, Command, err, errno_str, register


def _term_width() -> int | None:
    for f in (sys.stdout, sys.stdin):
        try:
            if f.isatty():
                rows_cols = fcntl.ioctl(f.fileno(), termios.TIOCGWINSZ, b"\0" * 8)
                cols = struct.unpack("HHHH", rows_cols)[1]
                if cols:
                    return cols
        except (OSError, ValueError):
            continue
    return None


def run_counters(cmd: str, events) -> int:
    table = False
    sysfs = None
    for k, v in events:
        if k == "table":
            table = True
        elif k == POSITIONAL:
            if sysfs is not None:
                raise UsageError("more than one argument given")
            sysfs = v
    if sysfs is None:
        raise UsageError("no sysfs directory given")
    cdir = os.path.join(sysfs, "counters")
    try:
        names = sorted(os.listdir(cdir))
    except OSError as e:
        err(f"error opening {cdir}: {errno_str(e.errno)}")
        return -e.errno
    vals = []
    for n in names:
        try:
            with open(os.path.join(cdir, n)) as f:
                vals.append(f.read().strip())
        except OSError as e:
            err(f"error reading {os.path.join(cdir, n)}: {errno_str(e.errno)}")
            return -(e.errno or errno.EIO)
    if not names:
        return 0
    nw = max(len(n) for n in names)
    vw = max(len(v) for v in vals)
    width = _term_width() if table else None
    if not width:
        for n, v in zip(names, vals, strict=True):
            print(f"{n:<{nw}} {v:>{vw}}")
        return 0
    colw = nw + 1 + vw
    cols = max(1, (width + 2) // (colw + 2))
    rows = (len(names) + cols - 1) // cols
    for r in range(rows):
        cells = []
        for c in range(cols):
            i = c * rows + r
            if i < len(names):
                cells.append(f"{names[i]:<{nw}} {vals[i]:>{vw}}")
        print("  ".join(cells))
    return 0


register(Command("counters", "SYSFS-DIR", "Show counters for a mounted volume", GROUP_INFO,
                 [Opt("table", "t", "table", None, "Output in table format")], run_counters))
