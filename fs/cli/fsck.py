"""`scoutfs fsck META DATA`: offline check of a whole volume (fs/fsck.py does the work).

Exit 0 and one "clean" line when the volume checks clean; exit 1 with a readable list of
problems otherwise.  Tests use it as the oracle after crashes.
"""

from __future__ import annotations

import sys

from fs import fsck
from fs.cli.argp import POSITIONAL, UsageError
from fs.cli.util import GROUP_CORE, Command, register


def run_fsck(cmd: str, events) -> int:
    paths = [v for k, v in events if k == POSITIONAL]
    if len(paths) < 2:
        raise UsageError("must provide metadata and data device paths")
    if len(paths) > 2:
        raise UsageError("more than two arguments given")
    meta, data = paths
    problems = fsck.check(meta, data)
    if not problems:
        print(f"{meta} {data}: clean")
        return 0
    print(f"{meta} {data}: {len(problems)} problem(s) found:")
    for line in problems:
        print(f"  {line}")
    sys.stdout.flush()
    sys.exit(1)


register(Command("fsck", "META-DEVICE DATA-DEVICE",
                 "Check an unmounted volume: blocks, allocators, namespace", GROUP_CORE,
                 [], run_fsck))


def main() -> int:
    from fs.cli.main import main as scoutfs_main

    return scoutfs_main(["fsck", *sys.argv[1:]])


if __name__ == "__main__":
    sys.exit(main())
