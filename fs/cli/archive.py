"""The archive agent commands: `release`, `stage`, `data-waiting`, `data-wait-err`,
`setattr`, `move-blocks` and `punch-offline` (upstream's release.c, stage.c, waiting.c,
setattr.c, move_blocks.c and punch_offline.c): argument parsing and upstream's messages
around the calls of the agent API (fs/agent.py), each one request (stage: one per chunk)
to the mount's daemon over its control socket, carrying the fds the command opened (spec
cli-and-harness §4.2).

Stage reads the archive in 1 MiB chunks as upstream does; `agent.stage` sends a chunk in
requests of at most `agent.STAGE_REQ` bytes (JSON lines are bounded), the whole chunk
counting as upstream's one ioctl in the messages.
"""

from __future__ import annotations

import errno
import os

from fs import agent
from fs.agent import ControlError
from fs.cli.argp import POSITIONAL, Opt, UsageError
from fs.cli.util import (
    GROUP_AGENT,
    CmdFailed,
    Command,
    err,
    errno_str,
    open_path,
    parse_human,
    parse_s64,
    parse_timespec,
    parse_u64,
    register,
)

BLOCK = 4096
STAGE_CHUNK = agent.STAGE_CHUNK  # archive bytes per upstream ioctl
WAITING_NR = 16
OPS = agent.OPS


# --------------------------------------------------------------------------- release


def run_release(cmd: str, events) -> int:
    path = None
    dv = offset = length = 0
    for k, v in events:
        if k == "data_version":
            dv = parse_u64(v)
        elif k == "offset":
            offset = parse_human(v)
        elif k == "length":
            length = parse_human(v)
        elif k == POSITIONAL:
            if path is not None:
                raise UsageError("more than one argument given")
            path = v
    if path is None:
        raise UsageError("must provide file path")
    if not dv:
        raise UsageError("must provide file version --data-version")
    fd = open_path(path, os.O_WRONLY)
    try:
        if length == 0:
            length = (os.fstat(fd).st_size + BLOCK - 1) // BLOCK * BLOCK
        try:
            agent.release(fd, dv, offset, length)
        except ControlError as e:
            err(f"release ioctl failed: {errno_str(e.errno)}")
            return -e.errno
    finally:
        os.close(fd)
    return 0


# --------------------------------------------------------------------------- stage


def run_stage(cmd: str, events) -> int:
    archive = path = None
    dv = offset = length = 0
    for k, v in events:
        if k == "data_version":
            dv = parse_u64(v)
        elif k == "offset":
            offset = parse_human(v)
        elif k == "length":
            length = parse_human(v)
        elif k == POSITIONAL:
            if archive is None:
                archive = v
            elif path is None:
                path = v
            else:
                raise UsageError("more than two arguments given")
    if archive is None:
        raise UsageError("must provide archive file path")
    if path is None:
        raise UsageError("must provide to-stage file path")
    if not dv:
        raise UsageError("must provide file version with --data-version")
    afd = open_path(archive, os.O_RDONLY)
    try:
        fd = open_path(path, os.O_WRONLY)
        try:
            if length == 0:
                length = os.fstat(afd).st_size
            while length:
                want = min(length, STAGE_CHUNK)
                try:
                    buf = os.read(afd, want)
                except OSError as e:
                    err(f"archive read returned -1: error {errno_str(e.errno)}")
                    return -errno.EIO
                if not buf:
                    err(f"archive read returned 0: error {errno_str(0)}")
                    return -errno.EIO
                try:
                    agent.stage(fd, offset, buf, dv)
                except ControlError as e:
                    err(f"stage returned -1, not {len(buf)}: error {errno_str(e.errno)}")
                    return -errno.EIO
                offset += len(buf)
                length -= len(buf)
        finally:
            os.close(fd)
    finally:
        os.close(afd)
    return 0


# --------------------------------------------------------------------------- waiters


def run_data_waiting(cmd: str, events) -> int:
    path = None
    ino = iblock = None
    for k, v in events:
        if k == "inode":
            ino = parse_u64(v)
        elif k == "block":
            iblock = parse_u64(v)
        elif k == "path":
            path = v
        elif k == POSITIONAL:
            raise UsageError(f"unexpected argument '{v}'")
    if ino is None:
        raise UsageError("no inode given")
    if iblock is None:
        raise UsageError("no blkno given")
    fd = open_path(path or ".", os.O_RDONLY)
    try:
        while True:
            try:
                ents = agent.data_waiting(fd, ino, iblock, WAITING_NR)
            except ControlError as e:
                err(f"waiting ioctl failed: {errno_str(e.errno)}")
                return -e.errno
            if not ents:
                break
            for w in ents:
                print(f"ino {w.ino} iblock {w.iblock} ops {','.join(w.ops)}")
            ino, iblock = ents[-1].ino, ents[-1].iblock
    finally:
        os.close(fd)
    return 0


def run_data_wait_err(cmd: str, events) -> int:
    path = None
    vals: dict[str, int] = {}
    for k, v in events:
        if k in ("inode", "version", "offset", "count"):
            vals[k] = parse_u64(v)
        elif k == "op":
            if v not in OPS:
                err(f"invalid data wait op: '{v}'")
                raise CmdFailed(errno.EINVAL)
            vals[k] = OPS[v]
        elif k == "err":
            e = parse_s64(v)
            if not -4095 <= e <= -1:
                err("errno out of range")
                raise CmdFailed(errno.EINVAL)
            vals[k] = e
        elif k == "path":
            path = v
        elif k == POSITIONAL:
            raise UsageError(f"unexpected argument '{v}'")
    for k, what in (("inode", "inode"), ("version", "version"), ("offset", "offset"),
                    ("count", "count"), ("op", "operation"), ("err", "error")):
        if k not in vals:
            raise UsageError(f"no {what} given")
    fd = open_path(path or ".", os.O_RDONLY)
    try:
        try:
            found = agent.data_wait_err(fd, vals["inode"], vals["version"],
                                        vals["offset"], vals["count"], vals["op"],
                                        vals["err"])
        except ControlError as e:
            err(f"data_wait_err returned -1: error {errno_str(e.errno)}")
            return -errno.EIO
    finally:
        os.close(fd)
    print(f"data_wait_err found {found} waiters.")
    return 0


# --------------------------------------------------------------------------- setattr


def run_setattr(cmd: str, events) -> int:
    path = None
    ctime = crtime = (0, 0)
    dv = size = 0
    offline = False
    for k, v in events:
        if k == "ctime":
            ctime = parse_timespec(v)
        elif k == "crtime":
            crtime = parse_timespec(v)
        elif k == "data_version":
            dv = parse_u64(v)
            if dv == 0:
                raise UsageError("data version must not be 0")
        elif k == "size":
            size = parse_human(v)
        elif k == "offline":
            offline = True
        elif k == POSITIONAL:
            if path is not None:
                raise UsageError("more than one argument given")
            path = v
    if path is None:
        raise UsageError("no filename given")
    if size and not dv:
        raise UsageError("must provide data-version if using --size option")
    if offline and not size:
        raise UsageError("must provide size if using --offline option")
    fd = open_path(path, os.O_WRONLY)
    try:
        try:
            agent.setattr_more(fd, dv, size, offline, ctime, crtime)
        except ControlError as e:
            err(f"setattr_more ioctl failed on '{path}': {errno_str(e.errno)}")
            return -e.errno
    finally:
        os.close(fd)
    return 0


# --------------------------------------------------------------------------- punch-offline


def run_punch_offline(cmd: str, events) -> int:
    path = None
    offset = length = dv = None
    for k, v in events:
        if k == "offset":
            offset = parse_human(v)
        elif k == "length":
            length = parse_human(v)
        elif k == "data_version":
            dv = parse_u64(v)
        elif k == POSITIONAL:
            if path is not None:
                raise UsageError("more than one argument given")
            path = v
    if offset is None:
        raise UsageError("must provide offset")
    if length is None:
        raise UsageError("must provide length")
    if dv is None:
        raise UsageError("must provide data_version")
    if path is None:
        raise UsageError("must provide path to file")
    fd = open_path(path, os.O_RDWR)
    try:
        try:
            agent.punch_offline(fd, offset, length, dv)
        except ControlError as e:
            err(f"punch_offline ioctl failed: {errno_str(e.errno)}")
            return -e.errno
    finally:
        os.close(fd)
    return 0


# --------------------------------------------------------------------------- move-blocks


def run_move_blocks(cmd: str, events) -> int:
    from_path = to_path = None
    from_off = length = to_off = None
    for k, v in events:
        if k == "from_off":
            from_off = parse_human(v)
        elif k == "length":
            length = parse_human(v)
        elif k == "to_off":
            to_off = parse_human(v)
        elif k == POSITIONAL:
            if from_path is None:
                from_path = v
            elif to_path is None:
                to_path = v
            else:
                raise UsageError("more than two arguments given")
    if from_path is None:
        raise UsageError("must provide from file path")
    if to_path is None:
        raise UsageError("must provide to file path")
    if from_off is None:
        raise UsageError("must provide from file offset --from-offset")
    if length is None:
        raise UsageError("must provide region length --length")
    if to_off is None:
        raise UsageError("must provide to file offset --to-offset")
    from_fd = open_path(from_path, os.O_RDWR)
    try:
        to_fd = open_path(to_path, os.O_RDWR)
        try:
            try:
                agent.move_blocks(from_fd, from_off, length, to_fd, to_off)
            except ControlError as e:
                err(f"ioctl failed on '{to_path}': {errno_str(e.errno)}")
                return -e.errno
        finally:
            os.close(to_fd)
    finally:
        os.close(from_fd)
    return 0


_DV = Opt("data_version", "V", "data-version", "VERSION", "Data version of the file")
_OFF = Opt("offset", "o", "offset", "OFFSET", "Offset (bytes or KMGTP units)")
_LEN = Opt("length", "l", "length", "LENGTH", "Length (bytes or KMGTP units)")
_PATH = Opt("path", "p", "path", "PATH", "Path to ScoutFS filesystem")

register(Command("release", "FILE", "Release file data and mark it offline", GROUP_AGENT,
                 [_DV, _OFF, _LEN], run_release))
register(Command("stage", "ARCHIVE-FILE STAGE-FILE",
                 "Write archive file contents to an offline file", GROUP_AGENT,
                 [_DV, _OFF, _LEN], run_stage))
register(Command("data-waiting", "", "Show tasks waiting for offline data", GROUP_AGENT,
                 [Opt("inode", "I", "inode", "INODE-NUM", "Inode number to start from"),
                  Opt("block", "B", "block", "BLOCK-NUM", "Block number to start from"),
                  _PATH], run_data_waiting))
register(Command("data-wait-err", "", "Return error from matching waiters", GROUP_AGENT,
                 [Opt("inode", "I", "inode", "INODE-NUM", "Inode number"),
                  Opt("version", "V", "version", "VER-NUM", "Data version"),
                  Opt("offset", "F", "offset", "OFF-NUM", "Offset of the range"),
                  Opt("count", "C", "count", "COUNT", "Bytes in the range"),
                  Opt("op", "O", "op", "OP", "Operation: read, write or change_size"),
                  Opt("err", "E", "err", "ERR", "Error to return (-4095..-1)"),
                  _PATH], run_data_wait_err))
register(Command("setattr", "FILE", "Set attributes on newly-created zero-length file",
                 GROUP_AGENT,
                 [Opt("ctime", "t", "ctime", "TIMESPEC", "Set ctime (SECS.NSECS)"),
                  Opt("crtime", "r", "crtime", "TIMESPEC", "Set creation time (SECS.NSECS)"),
                  Opt("data_version", "V", "data-version", "VERSION", "Set data version"),
                  Opt("size", "s", "size", "SIZE", "Set file size (bytes or KMGTP units)"),
                  Opt("offline", "o", "offline", None, "Set file contents as offline")],
                 run_setattr))
register(Command("move-blocks", "FROM-FILE TO-FILE",
                 "Move extents from one regular file to another", GROUP_AGENT,
                 [Opt("from_off", "f", "from-offset", "OFF",
                      "Byte offset to start moving from (bytes or KMGTP units)"),
                  Opt("length", "l", "length", "LEN",
                      "Length of region to move (bytes or KMGTP units)"),
                  Opt("to_off", "t", "to-offset", "OFF",
                      "Byte offset to start moving to (bytes or KMGTP units)")],
                 run_move_blocks))
register(Command("punch-offline", "FILE", "Punch holes in offline extents", GROUP_AGENT,
                 [_OFF, _LEN, _DV], run_punch_offline))
