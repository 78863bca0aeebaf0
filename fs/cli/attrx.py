"""`scoutfs get-attr-x` and `set-attr-x` (upstream's attr_x.c): the GET_ATTR_X and
SET_ATTR_X ioctls (spec semantics §5.7, §5.11; cli-and-harness §4.2) as one request to the
mount's daemon carrying the fd the command opened (read-only: the calls work on directories).

get: each flag selects a field (no flags: all of them); one field prints just its value,
several print ``label: value`` lines in the struct's order.  set: each flag gives a field's
value; nothing is printed on success, and no flags is a no-op call.
"""

from __future__ import annotations

import os

from fs.cli.argp import POSITIONAL, Opt, UsageError
from fs.cli.util import (
    GROUP_AGENT,
    Command,
    daemon_call,
    err,
    errno_str,
    open_path,
    parse_human,
    parse_timespec,
    parse_u64,
    register,
)
from fs.control import ControlError

# upstream's SCOUTFS_IOC_IAX_* bits (fs/archive.py has them too; not imported: the CLI
# must not load the filesystem layers)
IAX = {"meta_seq": 1 << 0, "data_seq": 1 << 1, "data_version": 1 << 2,
       "online_blocks": 1 << 3, "offline_blocks": 1 << 4, "ctime": 1 << 5, "crtime": 1 << 6,
       "size": 1 << 7, "retention": 1 << 8, "project_id": 1 << 9}
IAX_ALL = (1 << 10) - 1
IAX_B_RETENTION = 1
IAX_F_SIZE_OFFLINE = 1


def _value(name: str, r: dict) -> str:
    if name in ("ctime", "crtime"):
        return f"{r[name + '_sec']}.{r[name + '_nsec']}"
    if name == "retention":
        return "1" if r.get("bits", 0) & IAX_B_RETENTION else "0"
    return str(r[name])


def _call(path: str, req: dict) -> tuple[int, dict]:
    fd = open_path(path, os.O_RDONLY)
    try:
        try:
            return 0, daemon_call(fd, req)
        except ControlError as e:
            err(f"attr_x ioctl failed on '{path}': {errno_str(e.errno)}")
            return -e.errno, {}
    finally:
        os.close(fd)


def _path_arg(path: str | None, v: str) -> str:
    if path is not None:
        raise UsageError("more than one argument given")
    return v


def run_get_attr_x(cmd: str, events) -> int:
    path = None
    mask = 0
    for k, v in events:
        if k in IAX:
            mask |= IAX[k]
        elif k == POSITIONAL:
            path = _path_arg(path, v)
    if path is None:
        raise UsageError("must provide file path")
    if mask == 0:
        mask = IAX_ALL
    ret, r = _call(path, {"op": "get_attr_x", "x_mask": mask})
    if ret:
        return ret
    names = [n for n, bit in IAX.items() if mask & bit]
    if len(names) == 1:
        print(_value(names[0], r))
    else:
        for n in names:
            print(f"{n}: {_value(n, r)}")
    return 0


def run_set_attr_x(cmd: str, events) -> int:
    path = None
    req: dict = {"op": "set_attr_x", "x_mask": 0, "x_flags": 0, "bits": 0}
    for k, v in events:
        if k == "data_version":
            req["data_version"] = parse_u64(v)
            if req["data_version"] == 0:
                raise UsageError("data version must not be 0")
        elif k in ("ctime", "crtime"):
            req[k + "_sec"], req[k + "_nsec"] = parse_timespec(v)
        elif k == "size":
            req["size"] = parse_human(v)
        elif k == "project_id":
            req["project_id"] = parse_u64(v)
        elif k == "retention":
            t = parse_u64(v)
            if t > 1:
                raise UsageError(f"retention must be 0 or 1: '{v}'")
            req["bits"] = IAX_B_RETENTION if t else 0
        elif k == "offline":
            req["x_flags"] |= IAX_F_SIZE_OFFLINE
            continue
        elif k == POSITIONAL:
            path = _path_arg(path, v)
            continue
        req["x_mask"] |= IAX[k]
    if path is None:
        raise UsageError("must provide file path")
    ret, _ = _call(path, req)
    return ret


_FIELD_DOCS = [("meta_seq", "m", "Metadata change sequence number"),
               ("data_seq", "d", "Data change sequence number"),
               ("data_version", "v", "Data version of file contents"),
               ("online_blocks", "n", "Online data blocks"),
               ("offline_blocks", "f", "Offline data blocks"),
               ("ctime", "c", "Inode change time (posix ctime)"),
               ("crtime", "r", "ScoutFS inode creation time"),
               ("size", "s", "Size of file contents"),
               ("retention", "t", "Retention flag"),
               ("project_id", "p", "Project ID")]
_SET_ARGS = {"data_version": "VERSION", "ctime": "SECS.NSECS", "crtime": "SECS.NSECS",
             "size": "SIZE", "retention": "0|1", "project_id": "ID"}

register(Command("get-attr-x", "FILE", "Get extended attributes of a file", GROUP_AGENT,
                 [Opt(n, s, n, None, d) for n, s, d in _FIELD_DOCS], run_get_attr_x))
register(Command("set-attr-x", "FILE", "Set extended attributes of a file", GROUP_AGENT,
                 [Opt(n, s, n, _SET_ARGS[n], d) for n, s, d in _FIELD_DOCS if n in _SET_ARGS]
                 + [Opt("offline", "o", "offline", None,
                        "Set file contents as offline, not sparse (requires --size)")],
                 run_set_attr_x))
