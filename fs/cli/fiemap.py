"""`scoutfs get-fiemap` (upstream's fiemap.c): the file's extents, as FS_IOC_FIEMAP reports
them, asked of the mount's daemon over its control socket (the kernel answers FIEMAP of a
FUSE file itself; spec cli-and-harness §4.2).

One line per extent ``<n>: offset: <logical> <physical> length: <len> flags: <O><U><L>``
(``-L`` only the logical offset, ``-P`` only the physical), in st_blksize blocks unless
``-b``; then ``extents: <n>``.  O = FIEMAP_EXTENT_UNKNOWN (offline), U = UNWRITTEN,
L = LAST.
"""

from __future__ import annotations

import os

from fs.cli.argp import POSITIONAL, Opt, UsageError
from fs.cli.util import (
    GROUP_INFO,
    Command,
    daemon_call,
    err,
    errno_str,
    open_path,
    register,
)
from fs.control import ControlError

FIEMAP_EXTENT_LAST = 0x1
FIEMAP_EXTENT_UNKNOWN = 0x2
FIEMAP_EXTENT_UNWRITTEN = 0x800
FIEMAP_MAX_OFFSET = (1 << 64) - 1
EXTENTS_PER_CALL = 32  # upstream's fm_extent_count


def _flags(f: int) -> str:
    return ("O" if f & FIEMAP_EXTENT_UNKNOWN else ".") + \
        ("U" if f & FIEMAP_EXTENT_UNWRITTEN else ".") + \
        ("L" if f & FIEMAP_EXTENT_LAST else ".")


def run_get_fiemap(cmd: str, events) -> int:
    path = None
    phys = logical = byte = False
    for k, v in events:
        if k == "physical":
            phys = True
        elif k == "logical":
            logical = True
        elif k == "byte":
            byte = True
        elif k == POSITIONAL:
            if path is not None:
                raise UsageError("more than one argument given")
            path = v
    if phys and logical:
        raise UsageError("can only specify one of --physical and --logical")
    if path is None:
        raise UsageError("must provide file path")
    fd = open_path(path, os.O_RDONLY)
    nr = 0
    try:
        unit = 1 if byte else (os.fstat(fd).st_blksize or 1)
        start = 0
        while True:
            try:
                r = daemon_call(fd, {"op": "fiemap", "start": start,
                                     "length": FIEMAP_MAX_OFFSET - start + 1 if start else
                                     FIEMAP_MAX_OFFSET, "nr": EXTENTS_PER_CALL})
            except ControlError as e:
                err(f"fiemap ioctl failed: {errno_str(e.errno)}")
                return -e.errno
            exts = r.get("extents", [])
            for lg, ph, ln, fl in exts:
                line = f"{nr}: offset: "
                if not phys:
                    line += f"{lg // unit} "
                if not logical:
                    line += f"{ph // unit} "
                print(f"{line}length: {ln // unit} flags: {_flags(fl)}")
                nr += 1
            if not exts or exts[-1][3] & FIEMAP_EXTENT_LAST:
                break
            start = exts[-1][0] + exts[-1][2]
            if start > FIEMAP_MAX_OFFSET:
                break
    finally:
        os.close(fd)
    print(f"extents: {nr}")
    return 0


register(Command("get-fiemap", "FILE", "Print the extent mapping of a file", GROUP_INFO,
                 [Opt("physical", "P", "physical", None, "Output physical offsets only"),
                  Opt("logical", "L", "logical", None, "Output logical offsets only"),
                  Opt("byte", "b", "byte", None, "Output in bytes, not blocks")],
                 run_get_fiemap))
