"""Shared pieces of the `scoutfs` subcommands: the command registry, number parsing as
upstream's parse.c does it, opening the target path, and reaching the daemon.

A subcommand module defines its options and a function, and registers them::

    register(Command("stat", "FILE", "Show ScoutFS extra inode information", GROUP_INFO,
                     OPTS, run_stat))

`run(cmd, events)` gets the argp events (fs.cli.argp.parse) and returns 0 or a negative
errno (the dispatcher prints ``scoutfs: <cmd> failed: <strerror> (<errno>)``); it raises
`UsageError` for argp_error()s, `CmdFailed` after printing its own message, and `CmdExit` to
exit with a status and no further line.

Messages are upstream's: ``<what>: <strerror> (<errno>)``, never Python's ``[Errno N] ...``
text: `error_text` formats any OSError/FsError that way and `clean_msg` rewrites texts that
lower layers built with Python's formatting.
"""

from __future__ import annotations

import errno
import os
import re
import stat
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


# "[Errno 2] No such file or directory: 'f'" (and "...: 'a' -> 'b'"), up to the next separator
_PY_ERRNO = re.compile(r"\[Errno (\d+)\] ([^:\n]*?)"
                       r"(?:: '[^'\n]*'(?: -> '[^'\n]*')?)?(?=$|[:;,\n])")
_ERRNO_NAME = re.compile(r"(?<![\w])(E[A-Z0-9]+): ")


def clean_msg(msg: str) -> str:
    """A message with Python's ``[Errno N] Text: 'file'`` pieces as ``Text (N)`` and without
    the ``EIO: `` prefixes str(FsError) puts before its message."""
    msg = _PY_ERRNO.sub(lambda m: f"{m.group(2)} ({m.group(1)})", msg)
    return _ERRNO_NAME.sub(
        lambda m: "" if m.group(1) in errno.errorcode.values() else m.group(0), msg)


def error_errno(e: BaseException) -> int:
    n = getattr(e, "errno", None)
    return n if isinstance(n, int) and n > 0 else errno.EIO


def error_text(e: BaseException) -> str:
    """An OSError as ``<strerror> (<errno>)``; an FsError as its message (Python errno text
    rewritten), else the same strerror form."""
    from fs.errors import FsError

    if isinstance(e, FsError) and e.msg:
        return clean_msg(e.msg)
    return errno_str(error_errno(e))


class CleanStderr:
    """A sys.stderr stand-in (``with CleanStderr():``) for code outside the CLI that writes
    messages built from OSErrors: in this process they lose Python's ``[Errno N]`` text; a
    process forked meanwhile (the mount daemon, whose stderr is its log) writes unchanged."""

    def __init__(self):
        self.pid = os.getpid()
        self.inner = None

    def __enter__(self):
        self.inner = sys.stderr
        sys.stderr = self
        return self

    def __exit__(self, *exc):
        if sys.stderr is self:
            sys.stderr = self.inner
        return False

    def write(self, s: str) -> int:
        return self.inner.write(clean_msg(s) if os.getpid() == self.pid else s)

    def __getattr__(self, name):
        return getattr(self.inner, name)


class CmdFailed(Exception):
    """A subcommand failed with -errno after printing its own message."""

    def __init__(self, err_: int):
        super().__init__(err_)
        self.errno = err_


class CmdExit(Exception):
    """A subcommand ends with this exit status, having printed all it has to say."""

    def __init__(self, status: int):
        super().__init__(status)
        self.status = status


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


class _BadNumber(Exception):
    def __init__(self, msg: str, err_: int):
        super().__init__(msg)
        self.msg = msg
        self.errno = err_


def _u64(s: str) -> int:
    v = _strtoull(s)
    if v is None:
        raise _BadNumber(f"invalid 64bit value: '{s}'", errno.EINVAL)
    return v


def _human(s: str) -> int:
    m = re.match(r"\s*(0[xX][0-9a-fA-F]+|[0-9]+)", s)
    if not m:
        raise _BadNumber(f"invalid 64bit value: '{s}'", errno.EINVAL)
    v = int(m.group(1), 0) if m.group(1).lower().startswith("0x") else int(m.group(1), 10)
    rest = s[m.end():]
    shifts = {"": 0, "K": 10, "M": 20, "G": 30, "T": 40, "P": 50}
    if rest not in shifts:
        raise _BadNumber(f"unknown suffix: '{rest}'", errno.ERANGE)
    v <<= shifts[rest]
    if v > U64_MAX:
        raise _BadNumber(f"size too big: '{s}'", errno.EOVERFLOW)
    return v


def _failing(parse: Callable[[str], int], s: str) -> int:
    try:
        return parse(s)
    except _BadNumber as e:
        err(e.msg)
        raise CmdFailed(e.errno) from None


def _usage(parse: Callable[[str], int], s: str) -> int:
    try:
        return parse(s)
    except _BadNumber as e:
        raise UsageError(e.msg) from None


def parse_u64(s: str) -> int:
    """A u64 argument (base 0): a bad one prints upstream's message and fails the command."""
    return _failing(_u64, s)


def parse_s64(s: str) -> int:
    v = parse_u64(s)
    return v - (1 << 64) if v >= 1 << 63 else v


def parse_human(s: str) -> int:
    """A size with an optional binary K/M/G/T/P suffix (parse.c parse_human)."""
    return _failing(_human, s)


def opt_u64(s: str) -> int:
    """parse_u64 of an option's argument: a bad value is a usage error (exit 64)."""
    return _usage(_u64, s)


def opt_human(s: str) -> int:
    """parse_human of an option's argument: a bad value or suffix is a usage error."""
    return _usage(_human, s)


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


def open_failed(path: str, e: BaseException) -> CmdFailed:
    """Print ``failed to open '<path>': <strerror> (<errno>)``; the CmdFailed to raise."""
    n = error_errno(e)
    err(f"failed to open '{path}': {errno_str(n)}")
    return CmdFailed(n)


def check_device(path: str) -> None:
    """A device argument must exist and must not be a directory (opening one read-only would
    work and then fail every read with EISDIR); prints the failed-to-open line if not."""
    try:
        st = os.stat(path)
    except OSError as e:
        raise open_failed(path, e) from None
    if stat.S_ISDIR(st.st_mode):
        raise open_failed(path, IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR)))


def open_device(path: str, *, readonly: bool = True):
    """A fs.block.Device for a device argument, or the failed-to-open line and CmdFailed."""
    from fs.block import Device
    from fs.errors import FsError

    check_device(path)
    try:
        return Device(path, readonly=readonly)
    except (OSError, FsError) as e:
        raise open_failed(path, e) from None


def daemon_call(fd: int, request: dict) -> dict:
    """Ask the daemon of the mount holding the open fd (passed along with SCM_RIGHTS);
    raises fs.control.ControlError(errno) like a failed ioctl."""
    from fs.control_client import ControlError, call_fd

    try:
        return call_fd(fd, request)
    except ControlError:
        raise
    except OSError as e:  # the socket failed: as an ioctl that failed with that errno
        raise ControlError(error_errno(e)) from None
    except ValueError:  # a reply that is no JSON
        raise ControlError(errno.EIO) from None
