"""The open map (omap, spec §4.2 and §4.5): which inodes a mount has in use, per inode group.

scoutfs keeps one 1024-bit map per inode-lock group on each mount: a bit is set while the
inode is cached there (iget/create) and cleared at evict.  A mount that wants to delete an
orphaned inode asks the server (OPEN_INO_MAP) for the OR of every *other* mount's map of the
inode's group; a set bit means another mount still holds the inode and will try to delete
it itself at its last release.

Here "in use" is what has open handles on the mount (`fs.vfs.Operations.open_inos`, given to
the mount as `open_inodes`): opens, including a directory's, an mmap and the fd the CLI
passes over the control socket.  Not the kernel's lookup count: the kernel keeps unused
inodes cached, and one it still believes linked would never be released, so a file another
mount unlinked could never be deleted.  A name lookup that races with the deletion of its
inode fails as it would had it come after the unlink.  `hold`/`release` add references of
our own (tests that have no kernel).

Wire form: the map of one group is 16 little-endian u64 words (`to_wire`/`from_wire`, schema
in fs/net.py); in memory it is a Python int, bit i meaning inode group * 1024 + i.

Concurrency: everything here is synchronous (trio: atomic between awaits); answering the
server's request never waits for a lock or a transaction, so a mount holding locks can always
answer (a try_delete on another mount waits for it while holding its group WRITE lock).
"""

from __future__ import annotations

from collections.abc import Callable, Container

from fs import format as fmt

GROUP_SHIFT = fmt.LOCK_GROUP_SHIFT
GROUP_NR = fmt.LOCK_GROUP_NR
WORDS = GROUP_NR // 64
WORD_MASK = (1 << 64) - 1


def group_of(ino: int) -> int:
    return ino >> GROUP_SHIFT


def bit_of(ino: int) -> int:
    return ino & (GROUP_NR - 1)


def to_wire(bits: int) -> list[int]:
    return [(bits >> (64 * w)) & WORD_MASK for w in range(WORDS)]


def from_wire(words: list[int]) -> int:
    bits = 0
    for w, v in enumerate(words):
        bits |= int(v) << (64 * w)
    return bits


class Omap:
    """One mount's open map.  `kernel` returns the container of inodes the kernel holds
    (read at each call: the daemon sets it after the mount is assembled)."""

    def __init__(self, kernel: Callable[[], Container[int]] | None = None) -> None:
        self._kernel = kernel or (lambda: ())
        self._held: dict[int, int] = {}  # ino -> references of our own

    def hold(self, ino: int) -> None:
        self._held[ino] = self._held.get(ino, 0) + 1

    def release(self, ino: int) -> None:
        n = self._held.get(ino, 0) - 1
        if n > 0:
            self._held[ino] = n
        else:
            self._held.pop(ino, None)

    def test(self, ino: int) -> bool:
        return ino in self._held or ino in self._kernel()

    def group_bits(self, group: int) -> int:
        """The map of one group as an int (bit i: inode group * 1024 + i is in use here)."""
        first = group << GROUP_SHIFT
        kernel = self._kernel()
        bits = 0
        for ino in range(first, first + GROUP_NR):
            if ino in self._held or ino in kernel:
                bits |= 1 << (ino - first)
        return bits
