"""`scoutfs fsck META DATA`: offline check of a whole volume (fs/fsck.py does the work).

Exit 0 and one "clean" line when the volume checks clean; exit 1 with a readable list of
problems otherwise.  Tests use it as the oracle after crashes.

A mounted volume changes under the check, so fsck refuses (one line, exit 1) while any
process has either device open for writing or a scoutfs mount's source is the data device,
through whatever alias of the same storage (fs.cli.devuse): the harness gives every mount its
own loop device over the same images.  A crashed mount's daemon holds nothing, so checking
after a crash works once the dead mount is unmounted.
"""

from __future__ import annotations

import sys

from fs import fsck
from fs.cli.argp import POSITIONAL, UsageError
from fs.cli.util import (
    GROUP_CORE,
    CmdExit,
    Command,
    clean_msg,
    err,
    open_device,
    register,
)


def run_fsck(cmd: str, events) -> int:
    from fs.cli import devuse

    paths = [v for k, v in events if k == POSITIONAL]
    if len(paths) < 2:
        raise UsageError("must provide metadata and data device paths")
    if len(paths) > 2:
        raise UsageError("more than two arguments given")
    meta, data = paths
    meta_dev = open_device(meta)
    try:
        data_dev = open_device(data)
        try:
            for use in devuse.find_users([meta, data]):
                which = "meta" if use.path == meta else "data"
                err(f"scoutfs: fsck: {which} device '{use.path}' is in use: {use}; "
                    "a mounted volume can't be checked consistently")
                raise CmdExit(1)
            problems = fsck.check_devices(meta_dev, data_dev)["problems"]
        finally:
            data_dev.close()
    finally:
        meta_dev.close()
    if not problems:
        print(f"{meta} {data}: clean")
        return 0
    print(f"{meta} {data}: {len(problems)} problem(s) found:")
    for line in problems:
        print(f"  {clean_msg(line)}")
    raise CmdExit(1)


register(Command("fsck", "META-DEVICE DATA-DEVICE",
                 "Check an unmounted volume: blocks, allocators, namespace", GROUP_CORE,
                 [], run_fsck))


def main() -> int:
    from fs.cli.main import main as scoutfs_main

    return scoutfs_main(["fsck", *sys.argv[1:]])


if __name__ == "__main__":
    sys.exit(main())
