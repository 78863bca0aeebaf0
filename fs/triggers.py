"""Per-mount debugfs triggers (spec §6.3): named one-shot switches a test arms by writing 1.

A trigger reads 1 while armed and 0 once the code that watches it fired (`fire`).  The
names are scoutfs's; code that implements one calls `fire(name)` at the point where scoutfs
checks it.  Single-threaded (trio): no locking.
"""

from __future__ import annotations

NAMES = (
    "alloc_fill_freed_list",
    # ours, not scoutfs's: a stage or release that finds its trigger armed parks for good
    # in the middle of its transaction hold (fs.archive), so a crash test can kill -9 the
    # mount there (the trigger reading 0 says the operation got there)
    "archive_release_stall",
    "archive_stage_stall",
    "block_remove_stale",
    "log_merge_force_finalize_ours",
    "log_merge_force_partial",
    "reclaim_skip_finalize",
    "srch_compact_logs_pad_safe",
    "srch_force_log_rotate",
    "srch_merge_stop_safe",
    "statfs_lock_purge",
)


class Triggers:
    def __init__(self) -> None:
        self._armed = dict.fromkeys(NAMES, 0)

    def names(self) -> tuple[str, ...]:
        return NAMES

    def get(self, name: str) -> int:
        return self._armed[name]

    def set(self, name: str, value: int) -> None:
        """Arm (non-zero) or disarm (0); unknown names raise KeyError."""
        if name not in self._armed:
            raise KeyError(name)
        self._armed[name] = 1 if value else 0

    def fire(self, name: str) -> bool:
        """If armed: disarm and return True (the caller acts once)."""
        if self._armed.get(name):
            self._armed[name] = 0
            return True
        return False
