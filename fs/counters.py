"""Per-mount counters, as scoutfs publishes under sysfs counters/ (read live, may change).

`KNOWN` lists the counter names the sysfs view always shows (as 0 until first incremented):
the ones spec §6.2 says tests read, and every name our code increments.  scoutfs shows all
of its ~230 counters from the start; a test that snapshots a counter before anything
happened must find the file, so a name this code increments belongs here
(tests/unit/test_sysfs.py checks that every literal ``counters.inc("name")`` in fs/ is listed).
"""

from __future__ import annotations

from collections import Counter

# spec §6.2: the counters the upstream tests read
SPEC_NAMES = (
    "alloc_freed_fill",
    "block_cache_remove_stale",
    "inode_deleted",
    "log_merge_complete",
    "log_merge_no_finalized",
    "log_merge_start",
    "orphan_scan",
    "orphan_scan_attempts",
    "orphan_scan_empty",
    "reclaimed_open_logs",
    "srch_compact_error",
)

# scoutfs's names for the lock, message, quorum and commit counters (kmod/src/counters.h)
# that this implementation increments or is expected to, plus our own (client_*, lock_server_*,
# lock_invalidate_drop, quorum_* beyond scoutfs's, server_*, trans_commit)
OTHER_NAMES = (
    "client_connect_fail",
    "client_reconnect",
    "client_resend",
    "lock_alloc",
    "lock_free",
    "lock_free_idle",
    "lock_grant",
    "lock_grant_during_invalidation",
    "lock_grant_pre_invalidated",
    "lock_grant_request",
    "lock_grant_response",
    "lock_invalidate",
    "lock_invalidate_commit",
    "lock_invalidate_crossing",
    "lock_invalidate_drop",
    "lock_invalidate_notify_timeout",
    "lock_invalidate_pages_deferred",
    "lock_invalidate_early",
    "lock_invalidate_request",
    "lock_invalidate_response",
    "lock_invalidate_stale",
    "lock_invalidate_superseded",
    "lock_lock",
    "lock_lock_error",
    "lock_purge",
    "lock_recover_request",
    "lock_request",
    "lock_server_grant",
    "lock_server_implied_answer",
    "lock_server_invalidate",
    "lock_server_invalidate_failed",
    "lock_server_invalidate_resend",
    "lock_server_lowered",
    "lock_server_recovered",
    "lock_server_request",
    "lock_server_stale_answer",
    "lock_shrink_attempted",
    "lock_unlock",
    "lock_wait",
    "net_recv_bytes",
    "net_recv_dropped_duplicate",
    "net_recv_error",
    "net_recv_messages",
    "net_send_bytes",
    "net_send_error",
    "net_send_messages",
    "orphan_scan_cached",
    "orphan_scan_error",
    "orphan_scan_item",
    "orphan_scan_omap_set",
    "quorum_candidate",
    "quorum_candidate_deferred",
    "quorum_candidate_server_stopping",
    "quorum_candidate_timeout",
    "quorum_deposed_leader_stopped",
    "quorum_elected",
    "quorum_fence_error",
    "quorum_fence_leader",
    "quorum_heartbeat_timeout",
    "quorum_recv_dropped",
    "quorum_recv_heartbeat",
    "quorum_recv_invalid",
    "quorum_recv_resignation",
    "quorum_recv_stale",
    "quorum_recv_vote",
    "quorum_send_heartbeat",
    "quorum_send_request",
    "quorum_send_resignation",
    "quorum_send_vote",
    "quorum_server_died",
    "quorum_server_shutdown",
    "quorum_server_start_error",
    "quorum_split_brain",
    "quorum_term_demoted",
    "quorum_term_follower",
    "quorum_vote",
    "quota_check_edquot",
    "server_commit_hold",
    "srch_add_entry",
    "srch_compact_complete",
    "srch_compact_entry",
    "srch_compact_flush",
    "srch_compact_removed_entry",
    "srch_compact_start",
    "srch_read_stale",
    "srch_rotate_log",
    "srch_search_xattrs",
    "server_commit_resend",
    "server_fence_request",
    "server_lock_recover",
    "trans_commit",
    "trans_commit_fsync",
    "trans_commit_sync_fs",
    "trans_commit_timer",
    "trans_commit_written",
)

KNOWN: frozenset[str] = frozenset(SPEC_NAMES + OTHER_NAMES)


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
