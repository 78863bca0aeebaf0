"""`scoutfs fsck META DATA`: offline check of a whole volume (fs/fsck.py does the work)."""

from __future__ import annotations

import argparse
import sys

from fs import fsck


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="fsck", description="Check an unmounted scoutfs volume.")
    p.add_argument("meta", metavar="META-DEVICE")
    p.add_argument("data", metavar="DATA-DEVICE")
    args = p.parse_args(argv)
    problems = fsck.check(args.meta, args.data)
    if not problems:
        print(f"{args.meta} {args.data}: clean")
        return 0
    print(f"{args.meta} {args.data}: {len(problems)} problem(s) found:")
    for line in problems:
        print(f"  {line}")
    return 1


if __name__ == "__main__":
    sys.exit(main())
