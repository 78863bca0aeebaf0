"""The names of scoutfs. xattrs: their tags and the numbers ``.totl.`` and ``.indx.`` names
end in (spec §5.10).  Pure functions of the name, shared by fs/xattr.py and fs/fsck.py."""

from __future__ import annotations

import errno
from dataclasses import dataclass

from fs import format as fmt
from fs.errors import FsError

SCOUTFS_PREFIX = b"scoutfs."
TAG_NAMES = (b"hide.", b"srch.", b"totl.", b"indx.")
TOTL_U64_MAX_LEN = 23  # longest u64 string a .totl. name or value may hold


@dataclass
class Tags:
    hide: bool = False
    srch: bool = False
    totl: bool = False
    indx: bool = False

    @property
    def any(self) -> bool:
        return self.hide or self.srch or self.totl or self.indx


def parse_tags(name: bytes) -> Tags:
    """The tags of a ``scoutfs.`` name (EINVAL: none, unknown first tag, or a repeat)."""
    tags = Tags()
    rest = name[len(SCOUTFS_PREFIX):]
    found = False
    while True:
        tag = rest[:5]
        if tag not in TAG_NAMES:
            if not found:
                raise FsError(errno.EINVAL, "scoutfs xattr without a tag")
            break
        attr = tag[:4].decode()
        if getattr(tags, attr):
            raise FsError(errno.EINVAL, f"repeated xattr tag {attr}")
        setattr(tags, attr, True)
        found = True
        rest = rest[5:]
    if tags.totl and tags.indx:
        raise FsError(errno.EINVAL, "totl. and indx. tags together")
    return tags


def parse_u64(s: bytes) -> int:
    """A u64 as the kernel's kstrtoull(base 0) reads it, without '+' or a newline.

    ``0x``/``0X`` hex, a leading ``0`` octal, else decimal; at most 23 characters; anything
    else (empty, sign, junk, overflow) is EINVAL.
    """
    if not s or len(s) > TOTL_U64_MAX_LEN or s[:1] == b"+" or b"\n" in s:
        raise FsError(errno.EINVAL, "bad u64")
    if len(s) > 2 and s[:2] in (b"0x", b"0X") and s[2:3] in b"0123456789abcdefABCDEF":
        digits, base, ok = s[2:], 16, b"0123456789abcdefABCDEF"
    elif s[:1] == b"0":
        digits, base, ok = s, 8, b"01234567"
    else:
        digits, base, ok = s, 10, b"0123456789"
    if not digits or any(c not in ok for c in digits):
        raise FsError(errno.EINVAL, "bad u64")
    v = int(digits, base)
    if v > fmt.U64_MAX:
        raise FsError(errno.EINVAL, "u64 overflow")
    return v


def _last_components(name: bytes, nr: int) -> list[bytes]:
    parts = name.split(b".")
    if len(parts) < nr + 1:
        raise FsError(errno.EINVAL, "xattr name lacks numeric components")
    return parts[-nr:]


def parse_totl_name(name: bytes) -> tuple[int, int, int]:
    """The (a, b, c) totals key of a ``.totl.`` name ending in ``.A.B.C`` (EINVAL)."""
    a, b, c = (parse_u64(p) for p in _last_components(name, 3))
    return a, b, c


def parse_indx_name(name: bytes) -> tuple[int, int]:
    """The (major, minor) of an ``.indx.`` name ending in ``.MAJOR.MINOR`` (EINVAL)."""
    major, minor = (parse_u64(p) for p in _last_components(name, 2))
    if major > 255:
        raise FsError(errno.EINVAL, "indx major above 255")
    return major, minor


def indx_pos(name: bytes) -> tuple[int, int] | None:
    """(major, minor) of an ``.indx.`` tagged name, None for any other or malformed name."""
    if not name.startswith(SCOUTFS_PREFIX):
        return None
    try:
        if not parse_tags(name).indx:
            return None
        return parse_indx_name(name)
    except FsError:
        return None
