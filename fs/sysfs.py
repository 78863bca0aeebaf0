"""The sysfs and debugfs trees of one mount (spec §6.2, §6.3; cli-and-harness.md §2.6).

scoutfs publishes ``/sys/fs/scoutfs/f.<fsid6>.r.<rid6>/...`` and
``/sys/kernel/debug/scoutfs/f.<fsid6>.r.<rid6>/...``.  This module builds those two trees
from a mount object and answers list/read/write of paths inside them; the control socket
(fs/control.py ops ``sysfs_list``, ``sysfs_read``, ``sysfs_write``) forwards the requests of
the FUSE view (sysview/), which serves the files under ``$SCOUTFS_SYSFS_ROOT``.

The tree is rebuilt from the mount on every request, so content is always live (fence
requests come and go, counters move) and nothing here holds state of its own.

It reads only these attributes of the mount (``fs.super.Mount``, or a unit test's stand-in),
each through ``getattr`` with a default so that a missing one simply leaves its files out:
``rid``, ``fsid``, ``sb.fmt_vers``, ``data_dev.path``, ``options``, ``counters``,
``set_option(name, text)``, ``quorum`` (``is_leader``, ``status_text()``), ``server``
(``fence_requests``, ``answer_fence(rid, fenced=, error=)``, ``lock_server.dump_text()``,
``lock_server.stats_text()``), ``triggers`` and ``locks.dump_text()``.

Modes: the sys tree has sysfs's (dirs 0755, files 0444, or 0644 with a store); the debug
tree is root's alone, as debugfs is (``/sys/kernel/debug`` is 0700): its dirs list as 0700
and its files 0400 (0600 with a store).  The view serves these modes with
default_permissions, so the kernel keeps other users out; the control ops refuse the debug
tree to any uid but root as well (fs/control.py).

Concurrency: runs on the daemon's trio thread.  Building, listing and reading are
synchronous and touch only memory and ``os.stat`` of the data device (never a path on our
own FUSE mount: that would be a request to ourselves, a deadlock); they are atomic with
respect to other tasks.  Only `write` awaits (a fence answer may be async); it resolves the
path and applies the write with no await in between, so the file it checked is the one it
writes.
"""

from __future__ import annotations

import errno
import inspect
import os
import stat
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from fs.counters import KNOWN
from fs.errors import FsError

TREE_SYS = "sys"
TREE_DEBUG = "debug"
TREES = (TREE_SYS, TREE_DEBUG)

SYS_PREFIX = ("fs", "scoutfs")  # relative to the sysfs root: the ident dirs live here
DEBUG_PREFIX = ("kernel", "debug", "scoutfs")

DIR_MODE = 0o755
RO_MODE = 0o444
RW_MODE = 0o644
DEBUG_MODE_MASK = 0o700  # the debug tree's modes: the owner's (root's) bits only

# mount_options/ (cli-and-harness.md §2.6): these may be written ...
OPTIONS_RW = (
    "data_prealloc_blocks",
    "data_prealloc_contig_only",
    "ino_alloc_per_lock",
    "lock_idle_count",
    "log_merge_wait_timeout_ms",
    "orphan_scan_delay_ms",
    "quorum_heartbeat_timeout_ms",
)
# ... and these are read-only
OPTIONS_RO = ("metadev_path", "quorum_slot_nr")

FENCE_FILES = ("elapsed_secs", "error", "fenced", "ipv4_addr", "reason", "rid")


def ident(fsid: int, rid: int) -> str:
    """``f.<first 6 hex of fsid>.r.<first 6 hex of rid>`` (t_ident)."""
    return f"f.{fsid:016x}"[:8] + f".r.{rid:016x}"[:9]


# --------------------------------------------------------------------------- nodes

Reader = Callable[[], str]
Writer = Callable[[str], "Awaitable[None] | None"]


@dataclass
class File:
    read: Reader
    write: Writer | None = None

    @property
    def mode(self) -> int:
        return RW_MODE if self.write is not None else RO_MODE


@dataclass
class Dir:
    children: Callable[[], dict[str, Node]]
    mode: int = DIR_MODE


Node = File | Dir


@dataclass(frozen=True)
class Entry:
    """One directory entry of a listing: name, directory or not, permission bits."""

    name: str
    is_dir: bool
    mode: int


# --------------------------------------------------------------------------- formatting


def _line(value: Any) -> str:
    text = str(value)
    return text if text.endswith("\n") else text + "\n"


def _text(value: Any) -> str:
    """Multi-line dump text as given ("" stays empty, a missing final newline is added)."""
    if value is None:
        return ""
    text = str(value)
    return text if not text or text.endswith("\n") else text + "\n"


def parse_bool(text: str) -> bool:
    """The kernel's kstrtobool: 1/y/t (yes, true) and 0/n/f, on/off; else EINVAL."""
    t = text.strip().lower()
    if t in ("on", "off"):
        return t == "on"
    if t[:1] in ("1", "y", "t"):
        return True
    if t[:1] in ("0", "n", "f"):
        return False
    raise FsError(errno.EINVAL, f"not a boolean: {text!r}")


def parse_int(text: str) -> int:
    """kstrtoint: an optional sign and decimal digits, then at most one newline."""
    t = text[:-1] if text.endswith("\n") else text
    body = t[1:] if t[:1] in "+-" else t
    if not (body.isascii() and body.isdigit()):  # str.isdigit alone takes "¹" and "٣"
        raise FsError(errno.EINVAL, f"not an integer: {text!r}")
    return int(t, 10)


def _ipv4(addr: Any) -> str:
    if isinstance(addr, int):
        return ".".join(str((addr >> s) & 0xFF) for s in (24, 16, 8, 0))
    if isinstance(addr, (tuple, list)):  # (host, port)
        return str(addr[0])
    return str(addr)


def device_maj_min(path: str) -> str:
    """``M:m`` of a block device's st_rdev, else (an image file) of its st_dev."""
    st = os.stat(path)
    dev = st.st_rdev if stat.S_ISBLK(st.st_mode) else st.st_dev
    return f"{os.major(dev)}:{os.minor(dev)}"


def _option_text(name: str, value: Any) -> str:
    if value is None:
        # scoutfs keeps -1 for "no quorum slot"; other unset options read empty
        return "-1\n" if name == "quorum_slot_nr" else "\n"
    if isinstance(value, bool):
        return f"{int(value)}\n"
    return f"{value}\n"


async def _maybe_await(result: Any) -> None:
    if inspect.isawaitable(result):
        await result


# --------------------------------------------------------------------------- the trees


def _sys_tree(mount: Any) -> Dir:
    def children() -> dict[str, Node]:
        out: dict[str, Node] = {}
        rid = getattr(mount, "rid", None)
        if rid is not None:
            out["rid"] = File(lambda: f"{rid:016x}\n")
        fsid = getattr(mount, "fsid", None)
        if fsid is not None:
            out["fsid"] = File(lambda: f"{fsid:016x}\n")
        fmt_vers = getattr(getattr(mount, "sb", None), "fmt_vers", None)
        if fmt_vers is not None:
            out["format_version"] = File(lambda: f"{fmt_vers}\n")
        data_path = getattr(getattr(mount, "data_dev", None), "path", None)
        if isinstance(data_path, str) and data_path:
            out["data_device_maj_min"] = File(lambda: device_maj_min(data_path) + "\n")
        counters = getattr(mount, "counters", None)
        if counters is not None:
            out["counters"] = Dir(lambda: _counters(counters))
        if isinstance(getattr(mount, "options", None), dict):
            out["mount_options"] = Dir(lambda: _mount_options(mount))
        srch = getattr(mount, "srch", None)
        if srch is not None:  # fs/srch.py
            out["srch"] = Dir(lambda: {"compact_delay_ms": File(
                lambda: f"{srch.compact_delay_ms}\n", srch.set_compact_delay_ms)})
        quorum = getattr(mount, "quorum", None)
        if quorum is not None:
            out["quorum"] = Dir(lambda: _quorum(quorum))
        server = getattr(mount, "server", None)
        if server is not None and isinstance(getattr(server, "fence_requests", None), dict):
            out["fence"] = Dir(lambda: _fences(server))
        return out

    return Dir(children)


def _counters(counters: Any) -> dict[str, Node]:
    snap = counters.snapshot()
    # each file reads the live value when it is read, not the value at listing time
    return {name: File(lambda name=name: f"{int(counters.snapshot().get(name, 0))}\n")
            for name in sorted(KNOWN | set(snap))}


def _mount_options(mount: Any) -> dict[str, Node]:
    opts = mount.options
    set_option = getattr(mount, "set_option", None)
    out: dict[str, Node] = {}
    for name in OPTIONS_RW + OPTIONS_RO:
        if name not in opts and name not in OPTIONS_RO:
            continue
        writer: Writer | None = None
        if name in OPTIONS_RW and set_option is not None:
            def writer(text: str, name: str = name) -> None:
                # sysfs stores get the bytes written; kstrto* accept one trailing newline
                set_option(name, text[:-1] if text.endswith("\n") else text)
        out[name] = File(lambda name=name: _option_text(name, opts.get(name)), writer)
    return out


def _quorum(quorum: Any) -> dict[str, Node]:
    return {
        "is_leader": File(lambda: f"{int(bool(getattr(quorum, 'is_leader', False)))}\n"),
        "status": File(lambda: _text(quorum.status_text()
                                     if hasattr(quorum, "status_text") else "")),
    }


def _fences(server: Any) -> dict[str, Node]:
    out: dict[str, Node] = {}
    for rid in sorted(server.fence_requests):
        out[f"{rid:016x}"] = Dir(lambda rid=rid: _fence(server, rid))
    return out


def _fence(server: Any, rid: int) -> dict[str, Node]:
    def req() -> Any:
        r = server.fence_requests.get(rid)
        if r is None:  # answered and reclaimed between the lookup and the read
            raise FsError(errno.ENOENT)
        return r

    def answer(kind: str) -> Writer:
        def write(text: str) -> Awaitable[None] | None:
            req()
            if not parse_bool(text):
                return None  # writing 0 changes nothing, as in scoutfs
            return server.answer_fence(rid, **{kind: True})
        return write

    return {
        "elapsed_secs": File(lambda: f"{int(req().elapsed_secs())}\n"),
        "error": File(lambda: f"{int(bool(req().error))}\n", answer("error")),
        "fenced": File(lambda: f"{int(bool(req().fenced))}\n", answer("fenced")),
        "ipv4_addr": File(lambda: _line(_ipv4(req().ipv4_addr))),
        "reason": File(lambda: _line(req().reason)),
        "rid": File(lambda: f"{int(req().rid):016x}\n"),
    }


def _debug_tree(mount: Any) -> Dir:
    def children() -> dict[str, Node]:
        out: dict[str, Node] = {}
        triggers = getattr(mount, "triggers", None)
        if triggers is not None:
            out["trigger"] = Dir(lambda: _triggers(triggers))
        locks = getattr(mount, "locks", None)
        if hasattr(locks, "dump_text"):
            out["client_locks"] = File(lambda: _text(locks.dump_text()))

        def lock_server() -> Any:
            return getattr(getattr(mount, "server", None), "lock_server", None)

        # present on every mount (as in scoutfs), empty unless this mount leads
        out["server_locks"] = File(lambda: _text(_call(lock_server(), "dump_text")))
        out["server_lock_stats"] = File(lambda: _text(_call(lock_server(), "stats_text")))
        out.update(_drop_caches(mount))
        return out

    return Dir(children)


def _drop_caches(mount: Any) -> dict[str, Node]:
    """drop_weak_item_cache (`.totl.` totals, fs/totl.py) and drop_quota_check_cache
    (fs/quota.py): any write empties the cache."""
    mctx = getattr(mount, "mctx", None)
    if mctx is None:
        return {}

    def drop_totals(text: str) -> None:
        from fs import totl

        totl.drop_weak_cache(mctx)

    def drop_quota(text: str) -> None:
        from fs import quota

        quota.drop_check_cache(mctx)

    return {"drop_weak_item_cache": File(lambda: "", drop_totals),
            "drop_quota_check_cache": File(lambda: "", drop_quota)}


def _call(obj: Any, name: str) -> Any:
    fn = getattr(obj, name, None)
    return fn() if fn is not None else ""


def _triggers(triggers: Any) -> dict[str, Node]:
    def writer(name: str) -> Writer:
        def write(text: str) -> None:
            triggers.set(name, parse_int(text))
        return write

    return {name: File(lambda name=name: f"{int(triggers.get(name))}\n", writer(name))
            for name in sorted(triggers.names())}


def root(mount: Any, tree: str) -> Dir:
    """The ident dir of `mount` in `tree` ("sys" or "debug")."""
    if tree == TREE_SYS:
        return _sys_tree(mount)
    if tree == TREE_DEBUG:
        return _debug_tree(mount)
    raise FsError(errno.EINVAL, f"no sysfs tree {tree!r}")


# --------------------------------------------------------------------------- requests


def split_path(path: str) -> list[str]:
    """Components of a path relative to the ident dir ("" is the ident dir itself)."""
    if not isinstance(path, str):
        raise FsError(errno.EINVAL)
    parts = [p for p in path.split("/") if p]
    if any(p in (".", "..") for p in parts):
        raise FsError(errno.EINVAL, f"bad sysfs path {path!r}")
    return parts


def resolve(mount: Any, tree: str, path: str) -> Node:
    node: Node = root(mount, tree)
    for part in split_path(path):
        if not isinstance(node, Dir):
            raise FsError(errno.ENOTDIR)
        child = node.children().get(part)
        if child is None:
            raise FsError(errno.ENOENT)
        node = child
    return node


def _entry(tree: str, name: str, node: Node) -> Entry:
    mode = node.mode & DEBUG_MODE_MASK if tree == TREE_DEBUG else node.mode
    return Entry(name, isinstance(node, Dir), mode)


def list_dir(mount: Any, tree: str, path: str, name: str | None = None) -> list[Entry]:
    """The entries of the dir at `path`, sorted by name; with `name`, only that entry
    (FsError(ENOENT) if there is none): the view's lookup."""
    node = resolve(mount, tree, path)
    if not isinstance(node, Dir):
        raise FsError(errno.ENOTDIR)
    kids = node.children()
    if name is not None:
        if name not in kids:
            raise FsError(errno.ENOENT)
        return [_entry(tree, name, kids[name])]
    return [_entry(tree, n, kids[n]) for n in sorted(kids)]


def read(mount: Any, tree: str, path: str) -> str:
    node = resolve(mount, tree, path)
    if isinstance(node, Dir):
        raise FsError(errno.EISDIR)
    return node.read()


async def write(mount: Any, tree: str, path: str, value: str) -> None:
    """Store `value` (the bytes written, as text) into the file at `path`: EACCES for a
    read-only file (kernfs refuses the open), the store's FsError (EINVAL, ...) otherwise."""
    node = resolve(mount, tree, path)
    if isinstance(node, Dir):
        raise FsError(errno.EISDIR)
    if node.write is None:
        raise FsError(errno.EACCES)
    await _maybe_await(node.write(value))
