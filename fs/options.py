"""Mount options: parsing and validation, as scoutfs's kmod/src/options.c does (spec §7).

`parse_options(["a=1,b", "c"])` returns a dict of every option with its default filled in, or
raises `OptionError(message)`; the message is what `scoutfs mount` prints.  The sysfs
`mount_options/` files reuse `validate(name, text)` for their writes.

Our own options (not upstream):

* ``cache_blocks=N``       meta block cache size limit, in 64 KiB blocks (default 1024: 64 MiB)
* ``item_cache_items=N``   item cache size limit, in items (default 100000)
* ``attr_timeout_ms=N``    FUSE entry/attr cache timeout (default 0).  Any value above 0 is
  **weaker across mounts**: a change on another mount may stay invisible here for that
  long (the kernel answers lookups and stats from its cache).
* ``log_path=PATH``        daemon log file (default ``<run dir>/log/<fsid16>.<rid16>.log``)

Generic mount flags that mount(8) passes (rw, ro, nosuid, nodev, noexec, relatime, ...) are
accepted; those FUSE understands are handed to the kernel (`fuse_flags`).
"""

from __future__ import annotations

import errno
from collections.abc import Iterable
from typing import Any


class OptionError(Exception):
    """A bad mount option: `message` is printed, `errno` is what the mount fails with."""

    def __init__(self, message: str, err: int = errno.EINVAL):
        super().__init__(message)
        self.message = message
        self.errno = err


QUORUM_MAX_SLOTS = 15

# name -> (default, min, max, at_most_once); None max means unbounded
_INT_OPTS: dict[str, tuple[int, int, int | None, bool]] = {
    "quorum_heartbeat_timeout_ms": (10000, 2000, 60000, False),
    "tcp_keepalive_timeout_ms": (24000, 3001, None, False),
    "lock_idle_count": (10000, 32, 100000, False),
    "orphan_scan_delay_ms": (10000, 100, 60000, True),
    "log_merge_wait_timeout_ms": (500, 100, 60000, False),
    "data_prealloc_blocks": (2048, 1, (1 << 64) - 1, False),
    "data_prealloc_contig_only": (1, 0, 1, False),
    "ino_alloc_per_lock": (1024, 1, 1024, False),
    # ours
    "cache_blocks": (1024, 16, None, False),
    "item_cache_items": (100000, 1024, None, False),
    "attr_timeout_ms": (0, 0, 3600 * 1000, False),
}

# options sysfs mount_options/ may change on a live mount (spec §6.2)
RUNTIME_WRITABLE = frozenset({
    "quorum_heartbeat_timeout_ms", "tcp_keepalive_timeout_ms", "lock_idle_count",
    "orphan_scan_delay_ms", "log_merge_wait_timeout_ms", "data_prealloc_blocks",
    "data_prealloc_contig_only", "ino_alloc_per_lock",
})

# generic flags mount(8) may pass; value = the flag FUSE should get, or None to drop it
_GENERIC: dict[str, str | None] = {
    "rw": "rw", "ro": "ro", "suid": "suid", "nosuid": "nosuid", "dev": "dev",
    "nodev": "nodev", "exec": "exec", "noexec": "noexec", "async": "async", "sync": "sync",
    "dirsync": "dirsync", "atime": "atime", "noatime": "noatime", "diratime": "diratime",
    "nodiratime": "nodiratime", "relatime": "relatime", "norelatime": "norelatime",
    "strictatime": "strictatime", "nostrictatime": "nostrictatime", "lazytime": "lazytime",
    "nolazytime": "nolazytime", "defaults": None, "auto": None, "noauto": None,
    "user": None, "nouser": None, "users": None, "owner": None, "group": None,
    "_netdev": None, "nofail": None, "silent": None, "loud": None,
}


def defaults() -> dict[str, Any]:
    opts: dict[str, Any] = {name: d[0] for name, d in _INT_OPTS.items()}
    opts.update(metadev_path=None, quorum_slot_nr=None, acl=True, log_path=None, ro=False,
                fuse_flags=[])
    return opts


def _range_msg(name: str, lo: int, hi: int | None) -> str:
    if name == "data_prealloc_contig_only":
        return f"invalid {name} option, bool must only be 0 or 1"
    if hi is None:
        return f"invalid {name} option, must be at least {lo}"
    return f"invalid {name} option, must be between {lo} and {hi}"


def _parse_int(text: str) -> int | None:
    """match_int/match_u64: decimal (the kernel's match_* use base 10 for these)."""
    t = text.strip()
    if not t or not (t.isdigit() or (t[0] in "+-" and t[1:].isdigit())):
        return None
    return int(t, 10)


def validate(name: str, text: str) -> Any:
    """Parse one valued option's text; OptionError with scoutfs's message if it is bad."""
    if name == "metadev_path":
        if not text:
            raise OptionError(f'Unknown or malformed option, "{name}={text}"')
        return text
    if name == "log_path":
        if not text:
            raise OptionError(f'Unknown or malformed option, "{name}={text}"')
        return text
    if name == "quorum_slot_nr":
        nr = _parse_int(text)
        if nr is None or not 0 <= nr < QUORUM_MAX_SLOTS:
            raise OptionError("invalid quorum_slot_nr option, must be between 0 and "
                              f"{QUORUM_MAX_SLOTS - 1}")
        return nr
    if name in _INT_OPTS:
        _d, lo, hi, _once = _INT_OPTS[name]
        nr = _parse_int(text)
        if name == "quorum_heartbeat_timeout_ms":
            if nr is None or not lo <= nr <= hi:  # type: ignore[operator]
                raise OptionError(f"invalid quorum_heartbeat_timeout_ms value {text}, must be "
                                  f"between {lo} and {hi}")
            return nr
        if nr is None or nr < lo or (hi is not None and nr > hi):
            raise OptionError(_range_msg(name, lo, hi))
        return nr
    raise OptionError(f'Unknown or malformed option, "{name}={text}"')


def parse_options(texts: str | Iterable[str]) -> dict[str, Any]:
    """Parse comma-separated option strings (one per -o) into a complete options dict."""
    if isinstance(texts, str):
        texts = [texts]
    opts = defaults()
    seen: set[str] = set()
    fuse_flags: list[str] = []
    for text in texts:
        for p in text.split(","):
            if not p:
                continue
            name, eq, val = p.partition("=")
            if not eq:
                if name in ("acl", "noacl"):
                    opts["acl"] = name == "acl"
                    continue
                if name in _GENERIC:
                    if name in ("ro", "rw"):
                        opts["ro"] = name == "ro"
                    flag = _GENERIC[name]
                    if flag is not None:
                        fuse_flags.append(flag)
                    continue
                if name.startswith("x-"):  # userspace comments (x-systemd..., x-mount...)
                    continue
                raise OptionError(f'Unknown or malformed option, "{p}"')
            if name.startswith("x-") or name == "comment":
                continue
            if name == "quorum_slot_nr" and name in seen:
                raise OptionError("multiple quorum_slot_nr options provided, only provide one.")
            if name == "orphan_scan_delay_ms" and name in seen:
                raise OptionError("multiple orphan_scan_delay_ms options provided, only "
                                  "provide one.")
            opts[name] = validate(name, val)
            seen.add(name)
    if not opts["metadev_path"]:
        raise OptionError('Required mount option "metadev_path" not found')
    opts["fuse_flags"] = fuse_flags
    return opts


def format_options(opts: dict[str, Any]) -> str:
    """The options as a mount option string (for logs and /proc-like views)."""
    out = [f"metadev_path={opts['metadev_path']}"]
    if opts.get("quorum_slot_nr") is not None:
        out.append(f"quorum_slot_nr={opts['quorum_slot_nr']}")
    for name in _INT_OPTS:
        if name in opts:
            out.append(f"{name}={opts[name]}")
    out.append("acl" if opts.get("acl", True) else "noacl")
    return ",".join(out)
