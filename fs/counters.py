"""Per-mount counters, as scoutfs publishes under sysfs counters/ (read live, may change)."""

from __future__ import annotations

from collections import Counter


class Counters:
    """Named monotonically increasing counters of one mount.

    Single-threaded (trio): increments need no locking.  Names follow scoutfs's counter names
    where one exists (orphan_scan, log_merge_start, ...).
    """

    def __init__(self) -> None:
        self._c: Counter[str] = Counter()

    def inc(self, name: str, n: int = 1) -> None:
        self._c[name] += n

    def get(self, name: str) -> int:
        return self._c[name]

    def snapshot(self) -> dict[str, int]:
        return dict(self._c)
