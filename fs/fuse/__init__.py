"""The kernel FUSE protocol, owned by the project: the only package that touches /dev/fuse.

Modules: `abi` (the binary layout of `linux/fuse.h`), `kernel` (mount(2), unmount, abort),
`types` (what handlers take and return), `ops` (`Operations`, the interface a filesystem
implements), `session` (one connection: requests, replies, interrupts, notifications).

Use::

    session = Session(MyOps(), "/mnt/x", {"fsname=x", "subtype=x", "allow_other"})
    session.mount()
    try:
        await session.run()        # until umount, abort or session.terminate()
    finally:
        session.close(unmount=True)
"""

from fs.fuse.abi import ROOT_ID
from fs.fuse.kernel import MountFailed
from fs.fuse.ops import Operations, ReaddirToken, readdir_reply
from fs.fuse.session import Session
from fs.fuse.types import (
                           EntryAttributes,
                           FileInfo,
                           FUSEError,
                           RequestContext,
                           SetattrFields,
                           StatvfsData,
)

ROOT_INODE = ROOT_ID
RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2
RENAME_WHITEOUT = 4

__all__ = ["ROOT_INODE", "RENAME_EXCHANGE", "RENAME_NOREPLACE", "RENAME_WHITEOUT",
           "EntryAttributes", "FUSEError", "FileInfo", "MountFailed", "Operations",
           "ReaddirToken", "RequestContext", "Session", "SetattrFields", "StatvfsData",
           "readdir_reply"]
