"""Quota rules and their checks (spec §5.11): placeholder until the rules land.

`drop_check_cache` empties a mount's 5 s cache of check results (debugfs
``drop_quota_check_cache``).
"""

from __future__ import annotations


def drop_check_cache(mctx) -> None:
    """debugfs drop_quota_check_cache."""
    c = getattr(mctx, "quota", None)
    if c is not None:
        c.drop()
