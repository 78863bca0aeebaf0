"""POSIX ACLs: the xattr format and how an ACL and the file mode are kept in step.

With FUSE_POSIX_ACL the kernel enforces ACLs (it reads them with getxattr and caches them)
but leaves the rest to the filesystem, as the kernel's generic ``fs/posix_acl.c`` does it
for local filesystems.  This module is that code, as plain functions over parsed ACLs:

* `equiv_mode` (posix_acl_equiv_mode): the permission bits an access ACL implies (USER_OBJ,
  MASK if there is one else GROUP_OBJ, OTHER) and whether the ACL says more than the mode;
  an ACL equivalent to the mode is not stored (`fs.xattr` only changes the mode).
* `chmod` (posix_acl_chmod): a chmod rewrites USER_OBJ, MASK (or GROUP_OBJ) and OTHER.
* `create` (posix_acl_create): a new inode in a directory with a default ACL gets that ACL
  as its access ACL, with USER_OBJ/MASK-or-GROUP_OBJ/OTHER ANDed with the requested mode
  (and the mode with them), and no umask; directories also inherit the default ACL.
  Without a default ACL the umask is applied.

The xattr value (``system.posix_acl_access``/``system.posix_acl_default``) is
``{u32 version 2}`` then ``{u16 tag, u16 perm, u32 id}`` entries, little endian.  Entries are
``(tag, perm, id)`` tuples; ids of the USER_OBJ, GROUP_OBJ, MASK and OTHER entries are
written as ACL_UNDEFINED_ID, as the kernel writes them.
"""

from __future__ import annotations

import errno
import stat
import struct

from fs.errors import FsError

ACCESS = b"system.posix_acl_access"
DEFAULT = b"system.posix_acl_default"
NAMES = (ACCESS, DEFAULT)

XATTR_VERSION = 2
HDR = struct.Struct("<I")
ENTRY = struct.Struct("<HHI")

USER_OBJ = 0x01
USER = 0x02
GROUP_OBJ = 0x04
GROUP = 0x08
MASK = 0x10
OTHER = 0x20

READ, WRITE, EXECUTE = 4, 2, 1
UNDEFINED_ID = 0xFFFFFFFF

S_IRWXUGO = 0o777

Entry = tuple[int, int, int]  # (tag, perm, id)


def parse(value: bytes) -> list[Entry] | None:
    """The entries of an ACL xattr value; None for an empty ACL (a removal, as the kernel's
    posix_acl_from_xattr reads an empty value or a lone header).

    EINVAL for a value that is not a header and whole entries or has an unknown tag,
    EOPNOTSUPP for another version (as the kernel).  The order rules are `check`'s.
    """
    value = bytes(value)
    if not value:
        return None
    if len(value) < HDR.size or (len(value) - HDR.size) % ENTRY.size:
        raise FsError(errno.EINVAL, "bad POSIX ACL xattr size")
    (version,) = HDR.unpack_from(value, 0)
    if version != XATTR_VERSION:
        raise FsError(errno.EOPNOTSUPP, f"POSIX ACL xattr version {version}")
    out = []
    for off in range(HDR.size, len(value), ENTRY.size):
        tag, perm, eid = ENTRY.unpack_from(value, off)
        if tag in (USER, GROUP):
            pass
        elif tag in (USER_OBJ, GROUP_OBJ, MASK, OTHER):
            eid = UNDEFINED_ID
        else:
            raise FsError(errno.EINVAL, f"bad POSIX ACL tag {tag:#x}")
        out.append((tag, perm, eid))
    return out or None


def format_acl(entries: list[Entry]) -> bytes:
    """The xattr value of an ACL (the inverse of `parse`)."""
    return HDR.pack(XATTR_VERSION) + b"".join(
        ENTRY.pack(tag, perm, eid if tag in (USER, GROUP) else UNDEFINED_ID)
        for tag, perm, eid in entries)


def check(entries: list[Entry]) -> None:
    """posix_acl_valid: EINVAL unless the entries are USER_OBJ, USERs, GROUP_OBJ, GROUPs,
    a MASK (required when there are USERs or GROUPs), OTHER, in that order, with rwx
    permissions only."""
    state = USER_OBJ
    needs_mask = False
    for tag, perm, _ in entries:
        if perm & ~(READ | WRITE | EXECUTE):
            raise FsError(errno.EINVAL, "bad POSIX ACL permission")
        if tag == USER_OBJ and state == USER_OBJ:
            state = USER
        elif tag == USER and state == USER:
            needs_mask = True
        elif tag == GROUP_OBJ and state == USER:
            state = GROUP
        elif tag == GROUP and state == GROUP:
            needs_mask = True
        elif tag == MASK and state == GROUP:
            state = OTHER
        elif tag == OTHER and (state == OTHER or state == GROUP and not needs_mask):
            state = 0
        else:
            raise FsError(errno.EINVAL, "malformed POSIX ACL")
    if state != 0:
        raise FsError(errno.EINVAL, "incomplete POSIX ACL")


def parse_valid(value: bytes) -> list[Entry] | None:
    """`parse` then `check` (None: an empty ACL)."""
    entries = parse(value)
    if entries is not None:
        check(entries)
    return entries


def equiv_mode(entries: list[Entry], mode: int) -> tuple[bool, int]:
    """posix_acl_equiv_mode: (whether the ACL says more than a mode can, the mode with its
    permission bits taken from USER_OBJ, MASK or else GROUP_OBJ, and OTHER)."""
    bits = 0
    not_equiv = False
    for tag, perm, _ in entries:
        perm &= 7
        if tag == USER_OBJ:
            bits |= perm << 6
        elif tag == GROUP_OBJ:
            bits |= perm << 3
        elif tag == OTHER:
            bits |= perm
        elif tag == MASK:
            bits = (bits & ~stat.S_IRWXG) | perm << 3
            not_equiv = True
        elif tag in (USER, GROUP):
            not_equiv = True
        else:
            raise FsError(errno.EINVAL, f"bad POSIX ACL tag {tag:#x}")
    return not_equiv, (mode & ~S_IRWXUGO) | bits


def from_mode(mode: int) -> list[Entry]:
    """The three-entry ACL equivalent to a mode."""
    return [(USER_OBJ, (mode >> 6) & 7, UNDEFINED_ID), (GROUP_OBJ, (mode >> 3) & 7, UNDEFINED_ID),
            (OTHER, mode & 7, UNDEFINED_ID)]


def chmod(entries: list[Entry], mode: int) -> list[Entry]:
    """posix_acl_chmod: USER_OBJ, MASK (GROUP_OBJ without a mask) and OTHER take the
    permission bits of the new mode; named entries keep theirs."""
    has_mask = any(tag == MASK for tag, _, _ in entries)
    if not has_mask and not any(tag == GROUP_OBJ for tag, _, _ in entries):
        raise FsError(errno.EIO, "POSIX ACL without a group entry")
    group_tag = MASK if has_mask else GROUP_OBJ
    out = []
    for tag, perm, eid in entries:
        if tag == USER_OBJ:
            perm = (mode >> 6) & 7
        elif tag == group_tag:
            perm = (mode >> 3) & 7
        elif tag == OTHER:
            perm = mode & 7
        out.append((tag, perm, eid))
    return out


def create_masq(entries: list[Entry], mode: int) -> tuple[bool, list[Entry], int]:
    """posix_acl_create_masq: an inherited default ACL limited by the requested mode.

    Returns (whether the ACL says more than the mode, the new access ACL, the new mode):
    USER_OBJ, OTHER and MASK (GROUP_OBJ without a mask) are ANDed with the mode's bits and
    the mode's bits with them.  Bits outside 0o777 of the mode are kept.
    """
    bits = mode & S_IRWXUGO
    out = list(entries)
    not_equiv = False
    group_i = mask_i = None
    for i, (tag, perm, eid) in enumerate(out):
        if tag == USER_OBJ:
            perm &= (bits >> 6) & 7
            bits &= (perm << 6) | ~stat.S_IRWXU
            out[i] = (tag, perm, eid)
        elif tag in (USER, GROUP):
            not_equiv = True
        elif tag == GROUP_OBJ:
            group_i = i
        elif tag == OTHER:
            perm &= bits & 7
            bits &= perm | ~stat.S_IRWXO
            out[i] = (tag, perm, eid)
        elif tag == MASK:
            mask_i = i
            not_equiv = True
        else:
            raise FsError(errno.EIO, f"bad POSIX ACL tag {tag:#x}")
    gi = mask_i if mask_i is not None else group_i
    if gi is None:
        raise FsError(errno.EIO, "POSIX ACL without a group entry")
    tag, perm, eid = out[gi]
    perm &= (bits >> 3) & 7
    bits &= (perm << 3) | ~stat.S_IRWXG
    out[gi] = (tag, perm, eid)
    return not_equiv, out, (mode & ~S_IRWXUGO) | (bits & S_IRWXUGO)


def create(default_value: bytes | None, mode: int, umask: int,
           ) -> tuple[int, bytes | None, bytes | None]:
    """posix_acl_create for a new inode of `mode` (type bits included) in a directory whose
    default ACL xattr value is `default_value` (None: it has none).

    Returns (mode, access ACL value or None, default ACL value or None).  Without a
    default ACL the umask is applied and there are no ACLs.  Symlinks get neither.
    """
    if stat.S_ISLNK(mode):
        return mode, None, None
    entries = parse(default_value) if default_value is not None else None
    if entries is None:
        return mode & ~(umask & S_IRWXUGO), None, None
    not_equiv, access, mode = create_masq(entries, mode)
    access_value = format_acl(access) if not_equiv else None
    default_out = format_acl(entries) if stat.S_ISDIR(mode) else None
    return mode, access_value, default_out


def caller_in_group(ctx, gid: int) -> bool:
    """Whether the caller is in group gid (in_group_p): its primary group, or one of the
    supplementary groups of its process as /proc shows them (False when that is gone)."""
    if ctx.gid == gid:
        return True
    pid = getattr(ctx, "pid", 0)
    if not pid:
        return False
    try:
        with open(f"/proc/{int(pid)}/status", "rb") as f:
            for line in f:
                if line.startswith(b"Groups:"):
                    return str(gid).encode() in line.split()[1:]
    except OSError:
        pass
    return False
