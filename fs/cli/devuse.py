"""Who uses a volume's devices: processes holding one open for writing (a mount daemon, a
running mkfs) and mounts whose source is the device, through any alias of the same storage.

Aliases matter: the harness gives every mount its own loop device over the same image file
(upstream's gives each a dm linear device over the same disk), so the device a command is
given is rarely the one a daemon has open.  Storage is identified by resolving loop devices
to their backing file and single-slave stacked devices (dm) to their slave, through
``/sys/class/block``.

Only /proc (fd links, fdinfo flags, mountinfo) and sysfs are read: nothing another process
has open is ever stat()ed, since a file on a hung FUSE mount would hang us.  Used by `mkfs`
(refuse a device in use even with -f, as upstream's O_EXCL open does) and `fsck` (a mounted
volume cannot be checked consistently).
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass

MOUNT_TYPES = ("fuse.scoutfs", "scoutfs")


@dataclass
class Use:
    path: str  # the device argument it concerns
    opened: str  # the alias the process has open, or the mount's source
    pid: int | None = None
    comm: str = ""
    mountpoint: str | None = None

    def __str__(self) -> str:
        if self.mountpoint is not None:
            return f"it is mounted at {self.mountpoint}"
        return f"pid {self.pid} ({self.comm}) has '{self.opened}' open for writing"


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def _strip_deleted(p: str) -> str:
    return p[:-len(" (deleted)")] if p.endswith(" (deleted)") else p


def _file_key(st: os.stat_result) -> tuple:
    return ("file", st.st_dev, st.st_ino)


def _backing_file(name: str, sysfs: str) -> str | None:
    b = _read(f"{sysfs}/class/block/{name}/loop/backing_file")
    return _strip_deleted(b) if b else None


def _name_key(name: str, sysfs: str, depth: int = 0) -> tuple:
    """The storage under block device `name` (its /sys/class/block entry)."""
    backing = _backing_file(name, sysfs)
    if backing:
        try:
            return _file_key(os.stat(backing))
        except OSError:
            return ("loopfile", backing)
    try:
        slaves = os.listdir(f"{sysfs}/class/block/{name}/slaves")
    except OSError:
        slaves = []
    if len(slaves) == 1 and depth < 8:
        return _name_key(slaves[0], sysfs, depth + 1)
    return ("blk", name)


def _block_name(rdev: int, sysfs: str) -> str | None:
    link = f"{sysfs}/dev/block/{os.major(rdev)}:{os.minor(rdev)}"
    return os.path.basename(os.path.realpath(link)) if os.path.exists(link) else None


def storage_key(path: str, sysfs: str = "/sys") -> tuple:
    """What identifies the storage under path (OSError if it cannot be stat()ed)."""
    st = os.stat(path)
    if stat.S_ISBLK(st.st_mode):
        name = _block_name(st.st_rdev, sysfs)
        return _name_key(name, sysfs) if name else ("rdev", st.st_rdev)
    return _file_key(st)


def same_storage(a: str, b: str, sysfs: str = "/sys") -> bool:
    return storage_key(a, sysfs) == storage_key(b, sysfs)


def storage_aliases(path: str, sysfs: str = "/sys") -> set[str]:
    """Every path naming the storage under path: itself, the block devices over the same
    storage (/dev/NAME and, for dm, /dev/mapper/NAME) and loop devices' backing files."""
    out = {os.path.abspath(path), os.path.realpath(path)}
    try:
        key = storage_key(path, sysfs)
    except OSError:
        return out
    try:
        names = os.listdir(f"{sysfs}/class/block")
    except OSError:
        names = []
    for name in names:
        if _name_key(name, sysfs) != key:
            continue
        out.add(f"/dev/{name}")
        dm = _read(f"{sysfs}/class/block/{name}/dm/name")
        if dm:
            out.add(f"/dev/mapper/{dm}")
        backing = _backing_file(name, sysfs)
        if backing:
            out.add(backing)
    return out


def _writable(fdinfo: str) -> bool:
    text = _read(fdinfo) or ""
    m = re.search(r"^flags:\s*([0-7]+)", text, re.M)
    return bool(m) and int(m.group(1), 8) & (os.O_WRONLY | os.O_RDWR) != 0


def _unescape(s: str) -> str:
    """mountinfo's octal escapes (space, tab, newline, backslash)."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), s)


def comm(pid: int, proc: str = "/proc") -> str:
    return _read(f"{proc}/{pid}/comm") or "?"


def find_users(paths: list[str], proc: str = "/proc", sysfs: str = "/sys") -> list[Use]:
    """Processes (but us) with the storage of any of paths (block devices and image files)
    open for writing, one Use per process and path, then scoutfs mounts whose source names
    it."""
    alias_of: dict[str, str] = {}
    for p in paths:
        try:
            mode = os.stat(p).st_mode
        except OSError:
            continue
        if not (stat.S_ISREG(mode) or stat.S_ISBLK(mode)):
            continue  # /dev/null and friends: no storage, and everyone has them open
        for a in sorted(storage_aliases(p, sysfs)):
            alias_of.setdefault(a, p)
    uses: list[Use] = []
    me = os.getpid()
    try:
        pids = sorted(int(e) for e in os.listdir(proc) if e.isdigit())
    except OSError:
        pids = []
    for pid in pids:
        if pid == me:
            continue
        fddir = f"{proc}/{pid}/fd"
        try:
            fds = sorted(int(fd) for fd in os.listdir(fddir) if fd.isdigit())
        except OSError:
            continue  # gone, or not ours to look at
        seen: set[str] = set()
        for fd in fds:
            try:
                target = _strip_deleted(os.readlink(f"{fddir}/{fd}"))
            except OSError:
                continue
            p = alias_of.get(target)
            if p is None or p in seen or not _writable(f"{proc}/{pid}/fdinfo/{fd}"):
                continue
            seen.add(p)
            uses.append(Use(p, target, pid=pid, comm=comm(pid, proc)))
    for line in (_read(f"{proc}/self/mountinfo") or "").splitlines():
        pre, sep, post = line.partition(" - ")
        fields, tail = pre.split(), post.split()
        if not sep or len(fields) < 5 or len(tail) < 2 or tail[0] not in MOUNT_TYPES:
            continue
        source = _unescape(tail[1])
        p = alias_of.get(source)
        if p is None and source.startswith("/dev/"):
            p = alias_of.get(os.path.realpath(source))
        if p is not None:
            uses.append(Use(p, source, mountpoint=_unescape(fields[4])))
    return uses
