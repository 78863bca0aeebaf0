"""`scoutfs walk-inodes`, `ino-path`, `get-referring-entries` and `get-allocated-inos`: the
inode index commands (upstream's walk.c, ino_path.c, get_referring_entries.c and
get_allocated_inos.c), over the WALK_INODES, INO_PATH, GET_REFERRING_ENTRIES and
GET_ALLOCATED_INOS control ops (spec cli-and-harness §4.2, semantics §5.6 and §6.1).

Each op returns a batch; the command loops from the last entry it got, as upstream's does
around its ioctl.  Output is built per batch and written at once (walking 100,000 inodes
prints 104,000 lines).
"""

from __future__ import annotations

import errno
import os
import sys

from fs.cli.argp import POSITIONAL, Opt, UsageError
from fs.cli.util import (
    GROUP_DEBUG,
    GROUP_SEARCH,
    U64_MAX,
    CmdFailed,
    Command,
    _BadNumber,
    _strtoull,
    daemon_call,
    err,
    errno_str,
    open_path,
    opt_u64,
    register,
)
from fs.control_client import ControlError

U32_MAX = (1 << 32) - 1
WALK_BATCH = 8192  # entries asked per walk_inodes request
HEADER_EVERY = 25
WALK_INDEXES = {"meta_seq": 0, "data_seq": 1}


def _out(text: str | bytes) -> None:
    sys.stdout.flush()
    if isinstance(text, str):
        text = text.encode("utf-8", "surrogateescape")
    sys.stdout.buffer.write(text)


# --------------------------------------------------------------------------- walk-inodes


def parse_walk_pos(s: str) -> tuple[int, int, int]:
    """A position ``MAJOR[.MINOR[.INO]]`` (each value strtoull base 0; missing ones are 0;
    minor must fit 32 bits); a lone ``-1`` is the last possible position.  A bad value
    prints ``bad index pos at '<value>'`` and raises _BadNumber."""
    if s.strip() == "-1":
        return U64_MAX, U32_MAX, U64_MAX
    vals = [0, 0, 0]
    parts = s.split(".")
    for i, c in enumerate(parts):
        v = _strtoull(c) if c.strip() else None
        if i > 2 or v is None or (i == 1 and v > U32_MAX):
            if i == 1 and c.strip() == "-1":
                v = U32_MAX
            else:
                err(f"bad index pos at '{c if i <= 2 else '.'.join(parts[i:])}'")
                raise _BadNumber(s, errno.EINVAL)
        vals[i] = v
    return vals[0], vals[1], vals[2]


WALK_ROW = "%-20d %-20d %-10d %-20d\n"


def _walk_header() -> str:
    return f"{'#':<20} {'major':<20} {'minor':<10} {'ino':<20}\n"


_BLOCK_FMT = _walk_header().replace("%", "%%") + WALK_ROW * HEADER_EVERY


def format_walk_rows(n: int, flat: list[int]) -> str:
    """The output rows numbered from n of entries [major, ino, major, ino, ...], a header
    before every row whose number is a multiple of HEADER_EVERY.  Whole blocks are
    formatted with one ``%`` each (the walk prints 100,000 rows: per-row formatting was a
    third of the command's time)."""
    out: list[str] = []
    add = out.append
    header = _walk_header()
    count = len(flat) // 2
    i = 0
    # rows before the first block boundary
    while i < count and (n + i) % HEADER_EVERY:
        add(WALK_ROW % (n + i, flat[2 * i], 0, flat[2 * i + 1]))
        i += 1
    args: list[int] = [0] * (4 * HEADER_EVERY)
    while count - i >= HEADER_EVERY:
        j = 2 * i
        args[0::4] = range(n + i, n + i + HEADER_EVERY)
        args[1::4] = flat[j:j + 2 * HEADER_EVERY:2]
        args[3::4] = flat[j + 1:j + 2 * HEADER_EVERY:2]
        add(_BLOCK_FMT % tuple(args))  # (minors, args[2::4], stay 0)
        i += HEADER_EVERY
    for k in range(i, count):
        if not (n + k) % HEADER_EVERY:
            add(header)
        add(WALK_ROW % (n + k, flat[2 * k], 0, flat[2 * k + 1]))
    return "".join(out)


def run_walk(cmd: str, events) -> int:
    path = index = None
    first = last = None
    nargs = 0
    for k, v in events:
        if k == "path":
            path = v
        elif k == POSITIONAL:
            nargs += 1
            if nargs == 1:
                index = v
            elif nargs in (2, 3):
                what = "first" if nargs == 2 else "last"
                try:
                    pos = parse_walk_pos(v)
                except _BadNumber:
                    raise UsageError(f"invalid {what} position '{v}', "
                                     "try '1.2.3' or '-1'") from None
                if nargs == 2:
                    first = pos
                else:
                    last = pos
            else:
                raise UsageError("more than three arguments given")
    if index is None:
        raise UsageError("no index given")
    if first is None:
        raise UsageError("no first entry given")
    if last is None:
        raise UsageError("no last entry given")

    idx = WALK_INDEXES.get(index.lower())
    if idx is None:
        err(f"unknown index '{index}', try 'meta_seq' or 'data_seq'")
        return -errno.EINVAL
    fd = open_path(path or ".", os.O_RDONLY)
    try:
        total = 0
        cur = list(first)
        while True:
            try:
                r = daemon_call(fd, {"op": "walk_inodes", "index": idx, "first": cur,
                                     "last": list(last), "nr": WALK_BATCH})
            except ControlError as e:
                err(f"walk_inodes ioctl failed: {errno_str(e.errno)}")
                return -e.errno
            flat = r.get("seq_ino") or []  # [major, ino, major, ino, ...]
            if len(flat) < 2:
                break
            nents = len(flat) // 2
            _out(format_walk_rows(total, flat))
            total += nents
            major, ino = flat[2 * nents - 2], flat[2 * nents - 1]
            # continue after the last entry (minor is not part of the index key: an ino
            # wrapping carries into major)
            ino = (ino + 1) & U64_MAX
            if ino == 0:
                major = (major + 1) & U64_MAX
                if major == 0:
                    break
            cur = [major, 0, ino]
    finally:
        os.close(fd)
    return 0


# --------------------------------------------------------------------------- ino-path and get-referring-entries


def _ino_arg(events) -> tuple[str | None, int]:
    """(path, ino) of `[-p PATH] INO`: ino-path's and get-referring-entries' arguments."""
    path = None
    ino = None
    for k, v in events:
        if k == "path":
            path = v
        elif k == POSITIONAL:
            if ino is not None:
                raise UsageError("more than one argument given")
            ino = opt_u64(v)
    if not ino:
        raise UsageError("must provide inode number")
    return path, ino


def _next_cursor(dir_ino: int, dir_pos: int) -> tuple[int, int] | None:
    dir_pos = (dir_pos + 1) & U64_MAX
    if dir_pos == 0:
        dir_ino = (dir_ino + 1) & U64_MAX
        if dir_ino == 0:
            return None
    return dir_ino, dir_pos


def run_ino_path(cmd: str, events) -> int:
    path, ino = _ino_arg(events)
    fd = open_path(path or ".", os.O_RDONLY)
    try:
        cursor: tuple[int, int] | None = (0, 0)
        while cursor is not None:
            try:
                r = daemon_call(fd, {"op": "ino_path", "ino": ino, "dir_ino": cursor[0],
                                     "dir_pos": cursor[1]})
            except ControlError as e:
                if e.errno == errno.ENOENT:
                    break  # no more entries
                err(f"ioctl failed: {errno_str(e.errno)}")
                return -e.errno
            _out(r["path"].encode("latin-1") + b"\n")
            cursor = _next_cursor(int(r["dir_ino"]), int(r["dir_pos"]))
    finally:
        os.close(fd)
    return 0


def run_get_referring_entries(cmd: str, events) -> int:
    path, ino = _ino_arg(events)
    fd = open_path(path or ".", os.O_RDONLY)
    try:
        cursor: tuple[int, int] | None = (0, 0)
        while cursor is not None:
            try:
                r = daemon_call(fd, {"op": "get_referring_entries", "ino": ino,
                                     "dir_ino": cursor[0], "dir_pos": cursor[1]})
            except ControlError as e:
                err(f"ioctl failed: {errno_str(e.errno)}")
                return -e.errno
            ents = r.get("entries") or []
            out = []
            for dir_ino, dir_pos, dtype, name in ents:
                out.append(b"dir %d pos %d type %d name %s\n"
                           % (dir_ino, dir_pos, dtype, name.encode("latin-1")))
            _out(b"".join(out))
            if not ents or r.get("last"):
                break
            cursor = _next_cursor(ents[-1][0], ents[-1][1])
    finally:
        os.close(fd)
    return 0


# --------------------------------------------------------------------------- get-allocated-inos


def run_get_allocated_inos(cmd: str, events) -> int:
    path = None
    ino = None
    single = False
    for k, v in events:
        if k == "ino":
            ino = opt_u64(v)
            path = v  # upstream's option parsing falls through from -i to -p
        elif k == "path":
            path = v
        elif k == "single":
            single = True
        elif k == POSITIONAL:
            raise UsageError(f"unexpected argument '{v}'")
    if ino is None:
        raise UsageError("must provide --ino")
    fd = open_path(path or ".", os.O_RDONLY)
    try:
        start = ino
        while True:
            try:
                r = daemon_call(fd, {"op": "get_allocated_inos", "start_ino": start})
            except ControlError as e:
                err(f"get_allocated_inos ioctl failed: {errno_str(e.errno)}")
                raise CmdFailed(e.errno) from None
            inos = r.get("inos") or []
            if single:
                if inos and inos[0] == ino:
                    _out(f"{ino}\n")
                break
            if not inos:
                break
            _out("".join(f"{i}\n" for i in inos))
            if inos[-1] == U64_MAX:
                break
            start = inos[-1] + 1
    finally:
        os.close(fd)
    return 0


_PATH = Opt("path", "p", "path", "PATH", "Path to ScoutFS filesystem")
register(Command("walk-inodes", "<index> <first> <last>",
                 "Print range of indexed inodes", GROUP_SEARCH, [_PATH], run_walk))
register(Command("ino-path", "INODE-NUM", "Print paths that refer to inode number",
                 GROUP_SEARCH, [_PATH], run_ino_path))
register(Command("get-referring-entries", "INODE-NUM",
                 "Print directory entries that refer to inode number", GROUP_SEARCH, [_PATH],
                 run_get_referring_entries))
register(Command("get-allocated-inos", "",
                 "Print allocated inode numbers from the inode number's group", GROUP_DEBUG,
                 [Opt("ino", "i", "ino", "INO", "Inode number to start from"),
                  Opt("single", "s", "single", None, "Only print INO if it is allocated"),
                  _PATH], run_get_allocated_inos))
