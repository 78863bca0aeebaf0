"""The values FUSE handlers take and return: request context, attributes, open-file info,
statfs data, setattr fields, and `FUSEError`.

Names follow pyfuse3's so an `Operations` implementation reads the same on either binding.
"""

from __future__ import annotations

import errno as _errno


class FUSEError(Exception):
    """A handler's answer: fail the request with this errno."""

    __slots__ = ("errno",)

    def __init__(self, err: int):
        super().__init__(err)
        self.errno = err

    def __str__(self) -> str:
        return _errno.errorcode.get(self.errno, str(self.errno))


class RequestContext:
    """Who asked: the caller's uid, gid and pid from the request header, and the umask of a
    create (0 for other requests)."""

    __slots__ = ("uid", "gid", "pid", "umask")

    def __init__(self, uid: int = 0, gid: int = 0, pid: int = 0, umask: int = 0):
        self.uid, self.gid, self.pid, self.umask = uid, gid, pid, umask


class EntryAttributes:
    """An inode's attributes, and for an entry reply its lookup timeouts and generation."""

    __slots__ = ("st_ino", "generation", "entry_timeout", "attr_timeout", "st_mode",
                 "st_nlink", "st_uid", "st_gid", "st_rdev", "st_size", "st_blksize",
                 "st_blocks", "st_atime_ns", "st_mtime_ns", "st_ctime_ns")

    def __init__(self) -> None:
        self.st_ino = 0
        self.generation = 0
        self.entry_timeout = 0.0
        self.attr_timeout = 0.0
        self.st_mode = 0
        self.st_nlink = 0
        self.st_uid = 0
        self.st_gid = 0
        self.st_rdev = 0
        self.st_size = 0
        self.st_blksize = 4096
        self.st_blocks = 0
        self.st_atime_ns = 0
        self.st_mtime_ns = 0
        self.st_ctime_ns = 0


class FileInfo:
    """An open's answer: the handle and how the kernel should cache the file."""

    __slots__ = ("fh", "direct_io", "keep_cache", "nonseekable")

    def __init__(self, fh: int = 0, direct_io: bool = False, keep_cache: bool = False,
                 nonseekable: bool = False):
        self.fh, self.direct_io, self.keep_cache = fh, direct_io, keep_cache
        self.nonseekable = nonseekable


class StatvfsData:
    __slots__ = ("f_bsize", "f_frsize", "f_blocks", "f_bfree", "f_bavail", "f_files",
                 "f_ffree", "f_favail", "f_namemax")

    def __init__(self) -> None:
        self.f_bsize = self.f_frsize = 4096
        self.f_blocks = self.f_bfree = self.f_bavail = 0
        self.f_files = self.f_ffree = self.f_favail = 0
        self.f_namemax = 255


class SetattrFields:
    """Which attributes a SETATTR changes.  ``update_atime``/``update_mtime`` with
    ``atime_now``/``mtime_now`` mean "the current time" (utimensat UTIME_NOW)."""

    __slots__ = ("update_mode", "update_uid", "update_gid", "update_size", "update_atime",
                 "update_mtime", "update_ctime", "atime_now", "mtime_now", "kill_suidgid")

    def __init__(self, valid: int = 0) -> None:
        from fs.fuse import abi

        self.update_mode = bool(valid & abi.FATTR_MODE)
        self.update_uid = bool(valid & abi.FATTR_UID)
        self.update_gid = bool(valid & abi.FATTR_GID)
        self.update_size = bool(valid & abi.FATTR_SIZE)
        self.update_atime = bool(valid & (abi.FATTR_ATIME | abi.FATTR_ATIME_NOW))
        self.update_mtime = bool(valid & (abi.FATTR_MTIME | abi.FATTR_MTIME_NOW))
        self.update_ctime = bool(valid & abi.FATTR_CTIME)
        self.atime_now = bool(valid & abi.FATTR_ATIME_NOW)
        self.mtime_now = bool(valid & abi.FATTR_MTIME_NOW)
        self.kill_suidgid = bool(valid & abi.FATTR_KILL_SUIDGID)
