"""Shared pieces of the `scoutfs` subcommands: the command registry, number parsing as
upstream's parse.c does it, opening the target path, and reaching the daemon.

A subcommand module defines its options and a function, and registers them::

    register(Command("stat", "FILE", "Show ScoutFS extra inode information", GROUP_INFO,
                     OPTS, run_stat))

`run(cmd, events)` gets the argp events (fs.cli.argp.parse) and returns 0 or a negative
errno (the dispatcher prints ``scoutfs: <cmd> failed: <strerror> (<errno>)``); it raises
`UsageError` for argp_error()s.
"""

from __future__ import annotations

import errno
import os
import re
import struct
import sys
from collections.abc import Callable
from dataclasses import dataclass, field

from fs.cli.argp import Opt, UsageError  # noqa: F401  (re-exported for subcommands)

GROUP_CORE = "Core admin"
GROUP_INFO = "Additional Information"
GROUP_SEARCH = "Search Acceleration"
GROUP_AGENT = "Archival Agent Support"
GROUP_DEBUG = "Debugging commands"
GROUPS = [GROUP_CORE, GROUP_INFO, GROUP_SEARCH, GROUP_AGENT, GROUP_DEBUG]


@dataclass
class Command:
    name: str
    args_doc: str
    doc: str
    group: str
    opts: list[Opt] = field(default_factory=list)
    run: Callable[..., int] | None = None


COMMANDS: dict[str, Command] = {}


def register(cmd: Command) -> Command:
    COMMANDS[cmd.name] = cmd
    return cmd


def err(msg: str) -> None:
    sys.stderr.write(msg + "\n")
    sys.stderr.flush()


def errno_str(e: int) -> str:
    return f"{os.strerror(e)} ({e})"


class CmdFailed(Exception):
    """A subcommand failed with -errno after printing its own message."""

    def __init__(self, err_: int):
        super().__init__(err_)
        self.errno = err_


# --------------------------------------------------------------------------- numbers

U64_MAX = (1 << 64) - 1


def _strtoull(s: str) -> int | None:
    """strtoull(s, &end, 0) accepting the whole string (leading '-' wraps, as C does)."""
    t = s.strip()
    neg = False
    if t[:1] in ("+", "-"):
        neg = t[0] == "-"
        t = t[1:]
    if re.fullmatch(r"0[xX][0-9a-fA-F]+", t):
        v = int(t[2:], 16)
    elif re.fullmatch(r"0[0-7]*", t):
        v = int(t, 8)
    elif re.fullmatch(r"[1-9][0-9]*", t):
        v = int(t, 10)
    else:
        return None
    if v > U64_MAX:
        return None
    return (-v) & U64_MAX if neg else v


def parse_u64(s: str) -> int:
    v = _strtoull(s)
    if v is None:
        err(f"invalid 64bit value: '{s}'")
        raise CmdFailed(errno.EINVAL)
    return v


def parse_s64(s: str) -> int:
    v = parse_u64(s)
    return v - (1 << 64) if v >= 1 << 63 else v


def parse_human(s: str) -> int:
    """A size with an optional binary K/M/G/T/P suffix (parse.c parse_human)."""
    m = re.match(r"\s*(0[xX][0-9a-fA-F]+|[0-9]+)", s)
    if not m:
        err(f"invalid 64bit value: '{s}'")
        raise CmdFailed(errno.EINVAL)
    v = int(m.group(1), 0) if m.group(1).lower().startswith("0x") else int(m.group(1), 10)
    rest = s[m.end():]
    shifts = {"": 0, "K": 10, "M": 20, "G": 30, "T": 40, "P": 50}
    if rest not in shifts:
        err(f"unknown suffix: '{rest}'")
        raise CmdFailed(errno.ERANGE)
    v <<= shifts[rest]
    if v > U64_MAX:
        err(f"size too big: '{s}'")
        raise CmdFailed(errno.EOVERFLOW)
    return v


def parse_timespec(s: str) -> tuple[int, int]:
    m = re.fullmatch(r"(\d+)\.(\d+)", s)
    if not m:
        err(f"invalid timespec string: '{s}'")
        raise CmdFailed(errno.EINVAL)
    return int(m.group(1)), int(m.group(2))


# --------------------------------------------------------------------------- sizes


def _f32(x: float) -> float:
    return struct.unpack("f", struct.pack("f", x))[0]


_SUFFIXES = ["B", "KB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB"]


def size_human(nr: int, size: int) -> tuple[float, str]:
    """util.h size_flt/size_str: float math with KB/MB/... suffixes (1024 based)."""
    x = _f32(float(nr) * float(size))
    i = 0
    while x >= 1024 and i < len(_SUFFIXES) - 1:
        x = _f32(x / 1024)
        i += 1
    return x, _SUFFIXES[i]


# --------------------------------------------------------------------------- targets


def open_path(path: str, flags: int = os.O_RDONLY) -> int:
    """open() the target like upstream: failure prints `failed to open ...` and fails."""
    try:
        return os.open(path, flags)
    except OSError as e:
        err(f"failed to open '{path}': {errno_str(e.errno)}")
        raise CmdFailed(e.errno) from None


def daemon_call(fd: int, request: dict) -> dict:
    """Ask the daemon of the mount holding the open fd (passed along with SCM_RIGHTS);
    raises fs.control.ControlError(errno) like a failed ioctl."""
    from fs.control import call_fd

    return call_fd(fd, request)
