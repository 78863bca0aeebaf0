"""`scoutfs list-hidden-xattrs`, `read-xattr-index` and `search-xattrs`: the tagged xattr
commands (upstream's listxattr_hidden.c, read_xattr_index.c and search_xattrs.c), over the
LISTXATTR_HIDDEN, READ_XATTR_INDEX and SEARCH_XATTRS control ops (spec cli-and-harness §4.2, semantics §5.10 and §6.1).

Each op returns a batch; the command loops from where the last batch ended, as upstream's
does around its ioctl.
"""

from __future__ import annotations

import errno
import os
import sys

from fs.cli.argp import POSITIONAL, Opt, UsageError
from fs.cli.util import (
    GROUP_INFO,
    GROUP_SEARCH,
    U64_MAX,
    Command,
    daemon_call,
    err,
    errno_str,
    open_path,
    register,
)
from fs.control_client import ControlError

INDX_BATCH = 8192  # entries asked per read_xattr_index request
MAJOR_MAX = 255
LLONG_MAX = (1 << 63) - 1
INT_MASK = (1 << 32) - 1


def _out(text: bytes) -> None:
    sys.stdout.flush()
    sys.stdout.buffer.write(text)


# --------------------------------------------------------------------------- list-hidden-xattrs


def printable(name: bytes) -> bytes:
    """The name with every byte isprint() rejects (C locale) shown as '?'."""
    return bytes(c if 0x20 <= c < 0x7F else 0x3F for c in name)


def run_list_hidden(cmd: str, events) -> int:
    filename = None
    for k, v in events:
        if k == POSITIONAL:
            if filename is not None:
                raise UsageError("more than one argument given")
            filename = v
    if filename is None:
        raise UsageError("no filename given")
    fd = open_path(filename, os.O_RDONLY)
    try:
        pos: list[int] | None = [0, 0]
        while pos is not None:
            try:
                r = daemon_call(fd, {"op": "list_hidden_xattrs", "pos": pos})
            except ControlError as e:
                err(f"listxattr_hidden ioctl failed: {errno_str(e.errno)}")
                return -e.errno
            names = r.get("names") or []
            _out(b"".join(printable(n.encode("latin-1")) + b"\n" for n in names))
            pos = r.get("next")
            if not names:
                break
    finally:
        os.close(fd)
    return 0


# --------------------------------------------------------------------------- read-xattr-index


def _scan_int(s: str, i: int) -> tuple[int, int] | None:
    """scanf's %i from s[i:]: (value, index after it) or None.  Leading white space, a sign,
    then 0x hex, 0 octal or decimal digits (as strtol: the longest valid prefix)."""
    n = len(s)
    while i < n and s[i] in " \t\n\v\f\r":
        i += 1
    neg = False
    if i < n and s[i] in "+-":
        neg = s[i] == "-"
        i += 1
    if s[i:i + 2] in ("0x", "0X") and i + 2 < n and s[i + 2] in "0123456789abcdefABCDEF":
        base, digits, i = 16, "0123456789abcdefABCDEF", i + 2
    elif s[i:i + 1] == "0":
        base, digits = 8, "01234567"
    else:
        base, digits = 10, "0123456789"
    j = i
    while j < n and s[j] in digits:
        j += 1
    if j == i:
        return None
    v = int(s[i:j], base)
    return (-v if neg else v), j


def _sat_ll(v: int) -> int:
    """A %lli value (strtoll saturates) stored in a u64 field."""
    v = max(min(v, LLONG_MAX), -LLONG_MAX - 1)
    return v & U64_MAX


def _c_int(v: int) -> int:
    """A %i value stored in an int (strtol saturates to a 64-bit long, then truncated)."""
    v = max(min(v, LLONG_MAX), -LLONG_MAX - 1) & INT_MASK
    return v - (1 << 32) if v >= 1 << 31 else v


def parse_entry(s: str, ent: list[int]) -> int:
    """Upstream's parse_entry: sscanf(s, "%i.%lli.%lli", &major, &minor, &ino) into ent
    [major, minor, ino] (minor and ino are stored as they are scanned, major only when all
    three were and it is in 0..255).  Prints the error and returns -EINVAL, else 0."""
    vals = []
    i = 0
    for n in range(3):
        if n:
            if s[i:i + 1] != ".":
                break
            i += 1
        got = _scan_int(s, i)
        if got is None:
            break
        v, i = got
        if n == 0:
            vals.append(_c_int(v))
        else:
            vals.append(_sat_ll(v))
            ent[n] = vals[-1]
    if len(vals) != 3:
        err(f"bad index position entry argument '{s}', it must be in the form \"a.b.ino\" "
            "where each value can be prefixed by '0' for octal or '0x' for hex")
        return -errno.EINVAL
    if not 0 <= vals[0] <= MAJOR_MAX:
        err(f"initial major index position '{vals[0]}' must be between 0 and 255, inclusive.")
        return -errno.EINVAL
    ent[0] = vals[0]
    return 0


def _next_pos(ent: list[int]) -> list[int] | None:
    """The position just after (major, minor, ino), None past the last one."""
    major, minor, ino = ent
    ino = (ino + 1) & U64_MAX
    if ino == 0:
        minor = (minor + 1) & U64_MAX
        if minor == 0:
            major += 1
            if major > MAJOR_MAX:
                return None
    return [major, minor, ino]


def run_read_xattr_index(cmd: str, events) -> int:
    path = None
    first = [0, 0, 0]
    last = [MAJOR_MAX, U64_MAX, U64_MAX]
    nargs = 0
    ret = 0
    for k, v in events:
        if k == "path":
            path = v
        elif k == POSITIONAL:
            nargs += 1
            if nargs == 1:
                ret = parse_entry(v, first)
            elif nargs == 2:
                ret = parse_entry(v, last)  # (upstream: overwrites FIRST's status)
            else:
                raise UsageError("more than two arguments given")
    if ret:
        return ret
    if first > last:
        f, la = ".".join(map(str, first)), ".".join(map(str, last))
        err(f"first index position {f} must be less than last index position {la}")
        return -errno.EINVAL
    fd = open_path(path or ".", os.O_RDONLY)
    try:
        cur: list[int] | None = first
        while cur is not None:
            try:
                r = daemon_call(fd, {"op": "read_xattr_index", "first": cur, "last": last,
                                     "nr": INDX_BATCH})
            except ControlError as e:
                err(f"read_xattr_index ioctl failed: {errno_str(e.errno)}")
                return -e.errno
            ents = r.get("entries") or []
            if not ents:
                break
            _out(b"".join(b"%d.%d = %d\n" % (major, minor, ino) for major, minor, ino in ents))
            cur = _next_pos(list(ents[-1]))
            if cur is not None and cur > last:
                break
    finally:
        os.close(fd)
    return 0


_PATH = Opt("path", "p", "path", "PATH", "Path to ScoutFS filesystem")
register(Command("list-hidden-xattrs", "FILE", "Print the names of hidden xattrs on the file",
                 GROUP_INFO, [], run_list_hidden))
register(Command("read-xattr-index", "FIRST-ENTRY LAST-ENTRY",
                 "Print entries in the .indx. xattr index", GROUP_SEARCH, [_PATH],
                 run_read_xattr_index))


# --------------------------------------------------------------------------- search-xattrs

SRCH_BATCH = 1 << 20  # inodes asked per search_xattrs request


def run_search_xattrs(cmd: str, events) -> int:
    """Upstream's search_xattrs.c: every candidate inode of a ``.srch.`` xattr name, one
    per line, ascending, paging with next_ino until the daemon says the end."""
    path = None
    name = None
    for k, v in events:
        if k == "path":
            path = v
        elif k == POSITIONAL:
            if name is not None:
                raise UsageError("more than one name argument given")
            name = v
    if name is None:
        raise UsageError("must provide xattr containing .srch. scoutfs tag")
    fd = open_path(path or ".", os.O_RDONLY)
    try:
        next_ino = 0
        while True:
            try:
                r = daemon_call(fd, {"op": "search_xattrs",
                                     "name": os.fsencode(name).decode("latin-1"),
                                     "next_ino": next_ino, "last_ino": U64_MAX,
                                     "nr": SRCH_BATCH})
            except ControlError as e:
                err(f"search_xattrs ioctl failed: {errno_str(e.errno)}")
                return -e.errno
            inos = r.get("inos") or []
            _out(b"".join(b"%d\n" % i for i in inos))
            if not inos or r.get("end"):
                break
            next_ino = (inos[-1] + 1) & U64_MAX
            if next_ino == 0:
                break
    finally:
        os.close(fd)
    return 0


register(Command("search-xattrs", "XATTR-NAME",
                 "Print inode numbers of inodes which may have given xattr", GROUP_SEARCH,
                 [_PATH], run_search_xattrs))
