"""`Operations`: the interface a FUSE filesystem implements for `fs.fuse.session.Session`.

Every request handler is an ``async`` method that returns its answer or raises `FUSEError`;
the defaults answer ENOSYS (the kernel then stops sending most of those requests).  `forget`
is synchronous: the session loop calls it inline and it must not block.

Handlers run as concurrent trio tasks, one per request.  Those named in `interruptible`
are cancelled when the kernel interrupts their request (the caller got a signal) and the
request is answered with EINTR; all others run to the end, so a handler that changes state
is never cut between two awaits by an interrupt.
"""

from __future__ import annotations

import errno
from collections.abc import Sequence
from typing import Any

from fs.fuse.types import EntryAttributes, FileInfo, FUSEError, RequestContext, StatvfsData


class ReaddirToken:
    """The reply buffer of one READDIR(PLUS): entries are added until it is full."""

    __slots__ = ("size", "used", "parts", "plus")

    def __init__(self, size: int, plus: bool):
        self.size, self.used, self.parts, self.plus = size, 0, [], plus


def readdir_reply(token: ReaddirToken, name: bytes, attr: EntryAttributes,
                  next_id: int) -> bool:
    """Add an entry to a readdir reply; False (and nothing added) when it is full.  With
    readdirplus (``token.plus``) the kernel takes a lookup of the entry's inode (but not of
    "." and "..")."""
    from fs.fuse import session

    return session.add_dirent(token, name, attr, next_id)


class Operations:
    """Base class: override the requests the filesystem serves."""

    interruptible: frozenset[str] = frozenset()

    def forget(self, inode_list: Sequence[tuple[int, int]]) -> None:
        return None

    async def lookup(self, parent_inode: int, name: bytes,
                     ctx: RequestContext) -> EntryAttributes:
        raise FUSEError(errno.ENOSYS)

    async def getattr(self, inode: int, ctx: RequestContext) -> EntryAttributes:
        raise FUSEError(errno.ENOSYS)

    async def setattr(self, inode: int, attr: EntryAttributes, fields: Any, fh: int | None,
                      ctx: RequestContext) -> EntryAttributes:
        raise FUSEError(errno.ENOSYS)

    async def readlink(self, inode: int, ctx: RequestContext) -> bytes:
        raise FUSEError(errno.ENOSYS)

    async def mknod(self, parent_inode: int, name: bytes, mode: int, rdev: int,
                    ctx: RequestContext) -> EntryAttributes:
        raise FUSEError(errno.ENOSYS)

    async def mkdir(self, parent_inode: int, name: bytes, mode: int,
                    ctx: RequestContext) -> EntryAttributes:
        raise FUSEError(errno.ENOSYS)

    async def symlink(self, parent_inode: int, name: bytes, target: bytes,
                      ctx: RequestContext) -> EntryAttributes:
        raise FUSEError(errno.ENOSYS)

    async def link(self, inode: int, new_parent_inode: int, new_name: bytes,
                   ctx: RequestContext) -> EntryAttributes:
        raise FUSEError(errno.ENOSYS)

    async def unlink(self, parent_inode: int, name: bytes, ctx: RequestContext) -> None:
        raise FUSEError(errno.ENOSYS)

    async def rmdir(self, parent_inode: int, name: bytes, ctx: RequestContext) -> None:
        raise FUSEError(errno.ENOSYS)

    async def rename(self, parent_inode_old: int, name_old: bytes, parent_inode_new: int,
                     name_new: bytes, flags: int, ctx: RequestContext) -> None:
        raise FUSEError(errno.ENOSYS)

    async def open(self, inode: int, flags: int, ctx: RequestContext) -> FileInfo:
        raise FUSEError(errno.ENOSYS)

    async def create(self, parent_inode: int, name: bytes, mode: int, flags: int,
                     ctx: RequestContext) -> tuple[FileInfo, EntryAttributes]:
        raise FUSEError(errno.ENOSYS)

    async def tmpfile(self, parent_inode: int, mode: int, flags: int,
                      ctx: RequestContext) -> tuple[FileInfo, EntryAttributes]:
        raise FUSEError(errno.EOPNOTSUPP)

    async def read(self, fh: int, off: int, size: int) -> bytes:
        raise FUSEError(errno.ENOSYS)

    async def write(self, fh: int, off: int, buf: memoryview) -> int:
        raise FUSEError(errno.ENOSYS)

    async def flush(self, fh: int) -> None:
        return None

    async def release(self, fh: int) -> None:
        return None

    async def fsync(self, fh: int, datasync: bool) -> None:
        return None

    async def opendir(self, inode: int, ctx: RequestContext) -> int:
        raise FUSEError(errno.ENOSYS)

    async def readdir(self, fh: int, start_id: int, token: ReaddirToken) -> None:
        raise FUSEError(errno.ENOSYS)

    async def releasedir(self, fh: int) -> None:
        return None

    async def fsyncdir(self, fh: int, datasync: bool) -> None:
        return None

    async def statfs(self, ctx: RequestContext) -> StatvfsData:
        return StatvfsData()

    async def setxattr(self, inode: int, name: bytes, value: bytes, flags: int,
                       ctx: RequestContext) -> None:
        raise FUSEError(errno.ENOSYS)

    async def getxattr(self, inode: int, name: bytes, ctx: RequestContext) -> bytes:
        raise FUSEError(errno.ENOSYS)

    async def listxattr(self, inode: int, ctx: RequestContext) -> Sequence[bytes]:
        raise FUSEError(errno.ENOSYS)

    async def removexattr(self, inode: int, name: bytes, ctx: RequestContext) -> None:
        raise FUSEError(errno.ENOSYS)

    async def access(self, inode: int, mode: int, ctx: RequestContext) -> None:
        raise FUSEError(errno.ENOSYS)

    async def fallocate(self, fh: int, mode: int, off: int, length: int,
                        ctx: RequestContext) -> None:
        raise FUSEError(errno.EOPNOTSUPP)

    async def lseek(self, fh: int, off: int, whence: int, ctx: RequestContext) -> int:
        raise FUSEError(errno.ENOSYS)

    async def copy_file_range(self, fh_in: int, off_in: int, fh_out: int, off_out: int,
                              length: int, flags: int, ctx: RequestContext) -> int:
        raise FUSEError(errno.ENOSYS)

    async def ioctl(self, fh: int, cmd: int, arg: int, in_data: bytes, out_size: int,
                    flags: int, ctx: RequestContext) -> tuple[int, bytes]:
        raise FUSEError(errno.ENOTTY)
