"""`scoutfs mkfs META DATA -Q NR,ADDR,PORT ... [-f] [-A] [-m SIZE] [-d SIZE] [-z BLOCKS]
[-V VERS]`: refusal rules and output as upstream's mkfs.c; the writing is fs.mkfs.

Refusals, in order: a bad option value is a usage error (exit 64); a missing device or a
directory fails to open; one device (or the same storage under two names) given as both
devices; a device some process has open for writing or that is mounted, even with -f (as
upstream's O_EXCL open refuses); a device already holding a filesystem (scoutfs's super on
either device, another filesystem's magic, or whatever `blkid -p` finds) unless -f; devices
smaller than the minimum unless -A.
"""

from __future__ import annotations

import errno
import ipaddress
import re
import uuid as uuidlib

from fs import format as fmt
from fs.cli.argp import POSITIONAL, Opt, UsageError
from fs.cli.util import (
    GROUP_CORE,
    CmdFailed,
    Command,
    check_device,
    err,
    error_errno,
    error_text,
    opt_human,
    opt_u64,
    register,
    size_human,
)
from fs.errors import FsError


def _base_size(nr: int) -> str:
    x, unit = size_human(nr, 1)
    return f"{x:.2f}{unit}"


def _size_fmt(nr: int, size: int) -> str:
    x, unit = size_human(nr, size)
    return f"{nr} ({x:.2f} {unit})"


def parse_quorum_slot(arg: str) -> tuple[int, str, int]:
    """A -Q argument; a bad one is a usage error."""
    m = re.fullmatch(r"\s*(\d+),([^,]+),(\d+)\s*", arg)
    if not m:
        raise UsageError(f"invalid quorum slot '{arg}', must be NR,ADDR,PORT")
    nr, addr, port = int(m.group(1)), m.group(2), int(m.group(3))
    if nr >= fmt.QUORUM_MAX_SLOTS:
        raise UsageError(f"invalid quorum slot number {nr}, must be less than "
                         f"{fmt.QUORUM_MAX_SLOTS}")
    try:
        addr = str(ipaddress.IPv4Address(addr))
    except ValueError:
        raise UsageError(f"invalid quorum slot address '{addr}', must be an IPv4 "
                         "address") from None
    if not 0 < port <= 65535:
        raise UsageError(f"invalid quorum slot port {port}, must be between 1 and 65535")
    return nr, addr, port


def _device_size(path: str, max_size: int, allow_small: bool, use: str) -> int:
    from fs.mkfs import device_size

    try:
        size = device_size(path)
    except OSError as e:
        err(f"failed to open '{path}': {error_text(e)}")
        raise CmdFailed(error_errno(e)) from None
    if max_size:
        if size > max_size:
            print(f"Limiting use of {_base_size(size)} {use} device to {_base_size(max_size)}")
            size = max_size
        elif size < max_size:
            print(f"Device size limit of {_base_size(max_size)} for {use} device is greater "
                  f"than {_base_size(size)} device size, using full device")
    min_size = fmt.MIN_DEVICE_BYTES_UNFORCED
    if size < min_size:
        err(f"{_base_size(size)} {use} device too small, min {_base_size(min_size)}")
        if not allow_small:
            raise CmdFailed(errno.EINVAL)
        err(f"Allowing small size {use} device due to --allow-small-size")
    return size


def run_mkfs(cmd: str, events) -> int:
    slots: dict[int, tuple[str, int]] = {}
    force = allow_small = False
    max_meta = max_data = 0
    fmt_vers = fmt.FORMAT_VERSION_DEFAULT
    devs: list[str] = []
    for k, v in events:
        if k == "quorum":
            nr, addr, port = parse_quorum_slot(v)
            if nr in slots:
                raise UsageError(f"Quorum slot {nr} already specified before slot '{v}'")
            slots[nr] = (addr, port)
        elif k == "force":
            force = True
        elif k == "small":
            allow_small = True
        elif k == "meta":
            prev = opt_human(v)
            max_meta = prev - prev % fmt.META_BLOCK_SIZE
            if max_meta != prev:
                err(f"Meta dev size {prev} rounded down to {max_meta} bytes")
        elif k == "data":
            prev = opt_human(v)
            max_data = prev - prev % fmt.DATA_BLOCK_SIZE
            if max_data != prev:
                err(f"Data dev size {prev} rounded down to {max_data} bytes")
        elif k == "zone":
            opt_u64(v)  # accepted; allocation zones are not modelled (spec §8)
        elif k == "vers":
            fmt_vers = opt_u64(v)
            if not fmt.FORMAT_VERSION_MIN <= fmt_vers <= fmt.FORMAT_VERSION_MAX:
                raise UsageError(f"format-version {fmt_vers} must be between "
                                 f"{fmt.FORMAT_VERSION_MIN} and {fmt.FORMAT_VERSION_MAX}")
        elif k == POSITIONAL:
            if len(devs) == 2:
                raise UsageError("more than two arguments given")
            devs.append(v)
    if not slots:
        raise UsageError("must have at least one quorum slot specified with --quorum-slot")
    if not devs:
        raise UsageError("no metadata device argument given")
    if len(devs) < 2:
        raise UsageError("no data device argument given")
    meta_path, data_path = devs

    from fs.cli import devuse
    from fs.mkfs import make_volume, probe_signature

    for path in (meta_path, data_path):
        check_device(path)
    if devuse.same_storage(meta_path, data_path):
        err(f"meta device '{meta_path}' and data device '{data_path}' are the same device")
        return -errno.EINVAL
    for use in devuse.find_users([meta_path, data_path]):
        which = "meta" if use.path == meta_path else "data"
        err(f"{which} device '{use.path}' is in use: {use}")
        return -errno.EBUSY
    for path, which in () if force else ((meta_path, "meta"), (data_path, "data")):
        try:
            found = probe_signature(path)
        except (OSError, FsError) as e:
            err(f"failed to open '{path}': {error_text(e)}")
            return -error_errno(e)
        if found is not None:
            article = "an" if found[0] in "aeiox" else "a"
            err(f"{which} device '{path}' already contains {article} {found}, "
                "use --force to overwrite it")
            return -errno.EEXIST
    meta_size = _device_size(meta_path, max_meta, allow_small, "meta")
    data_size = _device_size(data_path, max_data, allow_small, "data")
    try:
        sb = make_volume(meta_path, data_path, slots, fmt_vers=fmt_vers,
                         meta_size=meta_size, data_size=data_size)
    except (FsError, OSError) as e:
        err(f"mkfs: {error_text(e)}")
        return -error_errno(e)

    lines = [
        "Created scoutfs filesystem:",
        f"  {'meta device path:':<24}{meta_path}",
        f"  {'data device path:':<24}{data_path}",
        f"  {'fsid:':<24}{sb.fsid:x}",
        f"  {'uuid:':<24}{uuidlib.UUID(bytes=bytes(sb.uuid))}",
        f"  {'format version:':<24}{sb.fmt_vers}",
        f"  {'64KB metadata blocks:':<24}{_size_fmt(sb.total_meta_blocks, fmt.META_BLOCK_SIZE)}",
        f"  {'4KB data blocks:':<24}{_size_fmt(sb.total_data_blocks, fmt.DATA_BLOCK_SIZE)}",
        f"  {'quorum config version:':<24}1",
    ]
    first = True
    for nr in sorted(slots):
        q = sb.quorum_slots.get(nr)
        addr, port = (q.addr, q.port) if q is not None else slots[nr]
        label = "quorum slots:" if first else ""
        lines.append(f"  {label:<24}{nr}: {addr}:{port}")
        first = False
    print("\n".join(lines))
    return 0


register(Command("mkfs", "META-DEVICE DATA-DEVICE", "Initialize a new ScoutFS filesystem",
                 GROUP_CORE, [
                     Opt("quorum", "Q", "quorum-slot", "NR,ADDR,PORT",
                         "Specify quorum slot addresses [Required]"),
                     Opt("force", "f", "force", None,
                         "Overwrite existing data on block devices"),
                     Opt("small", "A", "allow-small-size", None,
                         "Allow specified meta/data devices less than minimum, still warns"),
                     Opt("meta", "m", "max-meta-size", "SIZE",
                         "Use a size less than the base metadata device size (bytes or "
                         "KMGTP units)"),
                     Opt("data", "d", "max-data-size", "SIZE",
                         "Use a size less than the base data device size (bytes or KMGTP "
                         "units)"),
                     Opt("zone", "z", "data-alloc-zone-blocks", "BLOCKS",
                         "Divide data device into block zones so each mounts writes to a "
                         "zone (4KB blocks)"),
                     Opt("vers", "V", "format-version", "VERS",
                         "Specify a format version within supported range, (default "
                         "version)"),
                 ], run_mkfs))
