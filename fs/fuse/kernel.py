"""Mounting and unmounting a FUSE filesystem: /dev/fuse, mount(2), umount2(2), abort.

`mount_fuse` opens `/dev/fuse` and mounts it on a directory with mount(2) (root only), with
the same options libfuse would pass, so `findmnt` shows ``fuse.SUBTYPE`` with the source given
as ``fsname=`` and umount(8) works.  `unmount` detaches the mount (MNT_DETACH: the daemon must
never wait on its own mount), `abort` ends a connection through the fusectl filesystem.
Nothing here reads or writes FUSE messages: that is `fs.fuse.session`.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import stat

DEV_FUSE = "/dev/fuse"
FUSECTL = "/sys/fs/fuse/connections"

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_SYNCHRONOUS = 16
MS_DIRSYNC = 128
MS_NOATIME = 1024
MS_NODIRATIME = 2048
MS_RELATIME = 1 << 21
MS_STRICTATIME = 1 << 24
MS_LAZYTIME = 1 << 25
MNT_DETACH = 2

# generic flag -> (bits set, bits cleared)
_FLAGS: dict[str, tuple[int, int]] = {
    "ro": (MS_RDONLY, 0), "rw": (0, MS_RDONLY),
    "nosuid": (MS_NOSUID, 0), "suid": (0, MS_NOSUID),
    "nodev": (MS_NODEV, 0), "dev": (0, MS_NODEV),
    "noexec": (MS_NOEXEC, 0), "exec": (0, MS_NOEXEC),
    "sync": (MS_SYNCHRONOUS, 0), "async": (0, MS_SYNCHRONOUS),
    "dirsync": (MS_DIRSYNC, 0),
    "noatime": (MS_NOATIME, 0), "atime": (0, MS_NOATIME),
    "nodiratime": (MS_NODIRATIME, 0), "diratime": (0, MS_NODIRATIME),
    "relatime": (MS_RELATIME, 0), "norelatime": (0, MS_RELATIME),
    "strictatime": (MS_STRICTATIME, 0), "nostrictatime": (0, MS_STRICTATIME),
    "lazytime": (MS_LAZYTIME, 0), "nolazytime": (0, MS_LAZYTIME),
}
# options the fuse kernel module takes in the data string
_KERNEL_OPTS = ("default_permissions", "allow_other")
_KERNEL_VALUE_OPTS = ("max_read", "blksize")

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong,
                        ctypes.c_char_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]


class MountFailed(Exception):
    """mount(2) or /dev/fuse refused; the message says which and why."""


def parse_options(options: set[str] | list[str]) -> tuple[str, str, int, list[str]]:
    """(fsname, subtype, mount flags, kernel data options) from libfuse-style options."""
    fsname, subtype = "fuse", ""
    flags = MS_NOSUID | MS_NODEV  # libfuse's defaults; "suid"/"dev" clear them
    data: list[str] = []
    for opt in sorted(options, key=lambda o: (o in ("suid", "dev", "rw"), o)):
        name, eq, val = opt.partition("=")
        if name == "fsname" and eq:
            fsname = val.replace("\\,", ",")
        elif name == "subtype" and eq:
            subtype = val
        elif name in _FLAGS and not eq:
            on, off = _FLAGS[name]
            flags = (flags | on) & ~off
        elif name in _KERNEL_OPTS and not eq:
            data.append(name)
        elif name in _KERNEL_VALUE_OPTS and eq and val.isdigit():
            data.append(opt)
        else:
            raise MountFailed(f"unknown FUSE mount option {opt!r}")
    return fsname, subtype, flags, data


def mount_fuse(mountpoint: str, options: set[str] | list[str]) -> int:
    """Open /dev/fuse and mount it on `mountpoint`; returns the open fd (non-blocking)."""
    fsname, subtype, flags, data = parse_options(options)
    try:
        st = os.stat(mountpoint)
    except OSError as e:
        raise MountFailed(f"mount point {mountpoint}: {os.strerror(e.errno)}") from None
    try:
        fd = os.open(DEV_FUSE, os.O_RDWR | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as e:
        raise MountFailed(f"cannot open {DEV_FUSE}: {os.strerror(e.errno)}") from None
    opts = [f"fd={fd}", f"rootmode={stat.S_IFMT(st.st_mode):o}", f"user_id={os.getuid()}",
            f"group_id={os.getgid()}"] + data
    fstype = f"fuse.{subtype}" if subtype else "fuse"
    rc = _libc.mount(fsname.encode(), mountpoint.encode(), fstype.encode(), flags,
                     ",".join(opts).encode())
    if rc != 0:
        err = ctypes.get_errno()
        os.close(fd)
        raise MountFailed(f"mount of {mountpoint} failed: {os.strerror(err)}")
    return fd


def unmount(mountpoint: str) -> None:
    """Detach the mount (lazily: the daemon must never block on its own mount point)."""
    if _libc.umount2(mountpoint.encode(), MNT_DETACH) != 0:
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOENT):  # not mounted (any more)
            raise OSError(err, os.strerror(err), mountpoint)


def abort(conn_id: int) -> bool:
    """Abort a FUSE connection (every request fails with ENOTCONN); False if gone."""
    try:
        with open(os.path.join(FUSECTL, str(conn_id), "abort"), "w") as f:
            f.write("1")
        return True
    except OSError:
        return False
