"""`scoutfs stat`, `statfs`, `df` and `sync`: ask the mount's daemon over its control socket
(the STAT_MORE, STATFS_MORE and ALLOC_DETAIL ioctls of upstream's stat.c and df.c)."""

from __future__ import annotations

import errno
import os

from fs import agent
from fs.cli.argp import POSITIONAL, Opt, UsageError
from fs.cli.util import (
    GROUP_CORE,
    GROUP_INFO,
    CmdFailed,
    Command,
    daemon_call,
    err,
    errno_str,
    open_path,
    register,
    size_human,
)
from fs.control import ControlError

STAT_FIELDS = ["meta_seq", "data_seq", "data_version", "online_blocks", "offline_blocks",
               "crtime"]
STATFS_FIELDS = ["fsid", "rid", "committed_seq", "total_meta_blocks", "total_data_blocks"]


def _fmt_stat(name: str, r: dict) -> str:
    if name == "crtime":
        return f"{r['crtime_sec']}.{r['crtime_nsec']:09d}"
    return str(r[name])


def _fmt_statfs(name: str, r: dict) -> str:
    if name in ("fsid", "rid"):
        return f"{r[name]:016x}"
    return str(r[name])


def _do_stat(path: str, single: str | None, op: str, fields: list[str], fmt_fn) -> int:
    if single is not None and single not in fields:
        err(f"unknown field: '{single}'")
        return -errno.EINVAL
    fd = open_path(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        try:
            if op == "stat_more":  # the agent API's call (fs/agent.py)
                r = agent.stat_more(fd)._asdict()
            else:
                r = daemon_call(fd, {"op": op})
        except ControlError as e:
            err(f"ioctl failed: {errno_str(e.errno)}")
            return 0  # upstream quirk: the ioctl failure does not fail the command
    finally:
        os.close(fd)
    if single is not None:
        print(fmt_fn(single, r))
    else:
        for f in fields:
            print(f"{f:<17} {fmt_fn(f, r)}")
    return 0


def run_stat(cmd: str, events) -> int:
    single = path = None
    for k, v in events:
        if k == "single":
            single = v
        elif k == POSITIONAL:
            if path is not None:
                raise UsageError("more than one argument given")
            path = v
    if path is None:
        raise UsageError("missing operand")
    return _do_stat(path, single, "stat_more", STAT_FIELDS, _fmt_stat)


def run_statfs(cmd: str, events) -> int:
    single = path = None
    for k, v in events:
        if k == "single":
            single = v
        elif k == "path":
            path = v
        elif k == POSITIONAL:
            raise UsageError("more than one argument given" if path else
                             f"unexpected argument '{v}'")
    return _do_stat(path or ".", single, "statfs_more", STATFS_FIELDS, _fmt_statfs)


def run_df(cmd: str, events) -> int:
    path = None
    human = False
    for k, v in events:
        if k == "path":
            path = v
        elif k == "human":
            human = True
        elif k == POSITIONAL:
            raise UsageError(f"unexpected argument '{v}'")
    fd = open_path(path or ".")
    try:
        try:
            sfm = daemon_call(fd, {"op": "statfs_more"})
        except ControlError as e:
            err(f"statfs_more returned -1: error {errno_str(e.errno)}")
            return -errno.EIO
        try:
            ad = daemon_call(fd, {"op": "alloc_detail"})
        except ControlError as e:
            err(f"alloc_detail returned -1: error {errno_str(e.errno)}")
            return -errno.EIO
    finally:
        os.close(fd)
    meta_free = sum(a["blocks"] for a in ad["allocators"] if a["meta"])
    data_free = sum(a["blocks"] for a in ad["allocators"] if not a["meta"])
    reserved = sfm.get("reserved_meta_blocks", 0)
    meta_free = meta_free - reserved if meta_free > reserved else 0

    def cell(nr: int, size: int) -> str:
        if human:
            x, unit = size_human(nr, size)
            return f"{x:.2f}{unit}"
        return str(nr)

    rows = [["Type", "Size", "Total", "Used", "Free", "Use%"]]
    for name, bsz, total, free in (("MetaData", 64 * 1024, sfm["total_meta_blocks"], meta_free),
                                   ("Data", 4096, sfm["total_data_blocks"], data_free)):
        used = total - free if total > free else 0
        pct = used * 100 // total if total else 0
        rows.append([name, "64KB" if bsz == 65536 else "4KB", cell(total, bsz),
                     cell(used, bsz), cell(free, bsz), str(pct)])
    widths = [max(len(r[j]) for r in rows) for j in range(6)]
    for r in rows:
        print("".join(f"{c:>{w}}  " for c, w in zip(r, widths, strict=True)))
    return 0


def run_sync(cmd: str, events) -> int:
    path = None
    for k, v in events:
        if k == "path":
            path = v
        elif k == POSITIONAL:
            raise UsageError(f"unexpected argument '{v}'")
    fd = open_path(path or ".")
    try:
        daemon_call(fd, {"op": "sync"})
    except ControlError as e:
        err(f"sync ioctl failed: {errno_str(e.errno)}")
        raise CmdFailed(e.errno) from None
    finally:
        os.close(fd)
    return 0


_PATH = Opt("path", "p", "path", "PATH", "Path to ScoutFS filesystem")
register(Command("stat", "FILE", "Show ScoutFS extra inode information", GROUP_INFO,
                 [Opt("single", "s", "single-field", "FIELD-NAME",
                      "Specify single field to print")], run_stat))
register(Command("statfs", "", "Show ScoutFS file system information", GROUP_INFO,
                 [_PATH, Opt("single", "s", "single-field", "FIELD-NAME",
                             "Specify single field to print")], run_statfs))
register(Command("df", "", "Show metadata and data block usage", GROUP_INFO,
                 [_PATH, Opt("human", "h", "human-readable", None,
                             "Print sizes in human readable format")], run_df))
register(Command("sync", "", "Commit the mount's open transaction now", GROUP_CORE,
                 [_PATH], run_sync))
