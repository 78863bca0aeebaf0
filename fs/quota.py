"""Quota rules and their checks (spec §5.11).

A rule has three names, each `(value, source, flags)` with source LITERAL, PROJ, UID or GID
and the SELECT flag, an op (INODE: inode creation, DATA: data allocation), a limit, a
priority and the TOTL_COUNT flag.  Rules are items in the QUOTA zone,
``(QUOTA, hash64(rule), RULE, collision nr)`` -> packed rule (`fmt.pack_quota_rule`), so an
identical rule is found by its hash (EEXIST) while the same names with another limit make a
second rule.  Adding and deleting take the zone's WRITE lock (every mount's READ lock is
invalidated: they read the new rules); listing takes READ.

A check (`check_inode` before an inode is created, `check_data` before blocks are
allocated for a write or fallocate) considers the rules of its op whose SELECT names all
equal the attribute of their source (the new inode's or the file's uid, gid or project);
the highest-sorting one (priority, then names, op, limit, flags: `Rule.sort_key`) wins.
Its names, with UID/GID/PROJ sources replaced by the attribute, name a `.totl.` total
(fs/totl.py, committed values through the weak cache); when that total (or its count, with
TOTL_COUNT) is at or above the limit the call fails with EDQUOT.  The rules and the check
results are kept for CHECK_CACHE_S (debugfs ``drop_quota_check_cache`` forgets them, and so
does a rule change on this mount): enforcement across mounts is eventually consistent.

Concurrency and lock order: `prepare` refreshes the cached rules under the zone's READ lock
and must be awaited with no other cluster lock held and outside any transaction hold (the
operations call it first).  `check_*` then use the cached rules and never take a cluster
lock; they may await the server for stable roots (totals), never inside a hold.
"""

from __future__ import annotations

import errno
import time
from dataclasses import dataclass

from fs import format as fmt
from fs import totl
from fs.errors import FsError

LOCK_READ, LOCK_WRITE = 1, 2  # fs.lock modes
CHECK_CACHE_S = 5.0

OP_INODE, OP_DATA = 0, 1
SRC_LITERAL, SRC_PROJ, SRC_UID, SRC_GID = 0, 1, 2, 3
NAME_SELECT = 1
RULE_TOTL_COUNT = 1
QUOTA_ZONE_KEY = (fmt.ZONE_QUOTA, 0, 0, 0, 0, 0)
QUOTA_FIRST: fmt.Key = (fmt.ZONE_QUOTA, 0, 0, 0, 0, 0)
QUOTA_LAST: fmt.Key = (fmt.ZONE_QUOTA, fmt.U64_MAX, 255, fmt.U64_MAX, fmt.U64_MAX, 255)


@dataclass(frozen=True)
class Rule:
    prio: int
    names: tuple[tuple[int, int, int], ...]  # three (value, source, flags)
    op: int
    limit: int
    flags: int

    def sort_key(self) -> tuple:
        return (self.prio, *self.names, self.op, self.limit, self.flags)

    def check(self) -> Rule:
        """EINVAL for a rule the ioctl refuses (fields out of range)."""
        ok = (0 <= self.prio <= 255 and self.op in (OP_INODE, OP_DATA)
              and 0 <= self.limit <= fmt.U64_MAX and self.flags & ~RULE_TOTL_COUNT == 0
              and len(self.names) == 3
              and all(0 <= v <= fmt.U64_MAX and SRC_LITERAL <= s <= SRC_GID
                      and f & ~NAME_SELECT == 0 for v, s, f in self.names))
        if not ok:
            raise FsError(errno.EINVAL, "bad quota rule")
        return self

    def pack(self) -> bytes:
        return fmt.pack_quota_rule(self.prio, self.names, self.op, self.limit, self.flags)

    @classmethod
    def unpack(cls, buf: bytes) -> Rule:
        prio, names, op, limit, flags = fmt.unpack_quota_rule(buf)
        return cls(prio, names, op, limit, flags)


# --------------------------------------------------------------------------- rule items


async def _find(mctx, rule: Rule, lock) -> tuple[fmt.Key | None, int]:
    """(key of the identical rule or None, next free collision nr) for rule's hash."""
    val = rule.pack()
    h = fmt.hash64(val)
    start, end = fmt.quota_rule_key(h, 0), fmt.quota_rule_key(h, fmt.U64_MAX)
    found, nxt = None, 0
    async for k, v in mctx.items.items(start, end, lock):
        if bytes(v) == val:
            found = k
        nxt = max(nxt, k[3] + 1)
    return found, nxt


async def add_rule(mctx, rule: Rule) -> None:
    """ADD_QUOTA_RULE: EEXIST for a rule identical in every field."""
    rule.check()
    async with mctx.locks.zone(QUOTA_ZONE_KEY, LOCK_WRITE) as lock, mctx.trans.hold():
        found, nr = await _find(mctx, rule, lock)
        if found is not None:
            raise FsError(errno.EEXIST)
        mctx.items.update(fmt.quota_rule_key(fmt.hash64(rule.pack()), nr), rule.pack(), lock)
    drop_check_cache(mctx)


async def del_rule(mctx, rule: Rule) -> None:
    """DEL_QUOTA_RULE: ENOENT when no rule is identical."""
    rule.check()
    async with mctx.locks.zone(QUOTA_ZONE_KEY, LOCK_WRITE) as lock, mctx.trans.hold():
        found, _nr = await _find(mctx, rule, lock)
        if found is None:
            raise FsError(errno.ENOENT)
        mctx.items.delete(found, lock)
    drop_check_cache(mctx)


async def list_rules(mctx) -> list[Rule]:
    """GET_QUOTA_RULES: every rule, in key order (hash, collision nr)."""
    out = []
    async with mctx.locks.zone(QUOTA_ZONE_KEY, LOCK_READ) as lock:
        async for _k, v in mctx.items.items(QUOTA_FIRST, QUOTA_LAST, lock):
            try:
                out.append(Rule.unpack(bytes(v)))
            except ValueError as e:
                raise FsError(errno.EIO, f"bad quota rule item: {e}") from e
    return out


# --------------------------------------------------------------------------- checks


class CheckCache:
    """The rules and check results as last read, for CHECK_CACHE_S."""

    def __init__(self, clock=time.monotonic) -> None:
        self.clock = clock
        self.rules: list[Rule] | None = None
        self.rules_at = 0.0
        self.results: dict[tuple, tuple[float, int]] = {}

    def fresh_rules(self) -> list[Rule] | None:
        if self.rules is not None and self.clock() - self.rules_at < CHECK_CACHE_S:
            return self.rules
        return None

    def drop(self) -> None:
        self.rules = None
        self.results.clear()


def check_cache(mctx) -> CheckCache:
    c = getattr(mctx, "quota", None)
    if c is None:
        c = CheckCache()
        mctx.quota = c
    return c


def drop_check_cache(mctx) -> None:
    """debugfs drop_quota_check_cache (and a rule change on this mount)."""
    c = getattr(mctx, "quota", None)
    if c is not None:
        c.drop()


async def prepare(mctx) -> None:
    """Make sure the rules are cached (READ lock of the zone: no other lock held, no
    transaction hold)."""
    c = check_cache(mctx)
    if c.fresh_rules() is None:
        rules = await list_rules(mctx)
        c.rules = sorted(rules, key=Rule.sort_key, reverse=True)
        c.rules_at = c.clock()


def _attr(src: int, uid: int, gid: int, proj: int) -> int:
    return {SRC_PROJ: proj, SRC_UID: uid, SRC_GID: gid}[src]


def winning_rule(rules: list[Rule], op: int, uid: int, gid: int, proj: int) -> Rule | None:
    """The highest-sorting rule of op whose SELECT names all match (rules sorted
    descending)."""
    for r in rules:
        if r.op != op:
            continue
        if all(not f & NAME_SELECT or s == SRC_LITERAL or v == _attr(s, uid, gid, proj)
               for v, s, f in r.names):
            return r
    return None


def total_name(rule: Rule, uid: int, gid: int, proj: int) -> tuple[int, int, int]:
    vals = [v if s == SRC_LITERAL else _attr(s, uid, gid, proj) for v, s, _f in rule.names]
    return vals[0], vals[1], vals[2]


async def check(mctx, op: int, uid: int, gid: int, proj: int) -> None:
    """EDQUOT when the winning rule's total is at its limit (cached rules only)."""
    c = check_cache(mctx)
    rules = c.rules
    if not rules:
        return
    key = (op, uid, gid, proj)
    now = c.clock()
    got = c.results.get(key)
    if got is not None and now - got[0] < CHECK_CACHE_S:
        err = got[1]
    else:
        err = 0
        rule = winning_rule(rules, op, uid, gid, proj)
        if rule is not None:
            total, count = await totl.read_total(mctx, total_name(rule, uid, gid, proj))
            used = count if rule.flags & RULE_TOTL_COUNT else total
            if used >= rule.limit:
                err = errno.EDQUOT
        c.results[key] = (now, err)
    if err:
        mctx.counters.inc("quota_check_edquot")
        raise FsError(err, "quota exceeded")


async def check_inode(mctx, parent: fmt.Inode, uid: int, gid: int) -> None:
    """Before creating an inode in directory `parent` owned by uid/gid (its project is the
    parent's)."""
    await check(mctx, OP_INODE, uid, gid, parent.proj)


async def check_data(mctx, inode: fmt.Inode) -> None:
    """Before allocating data blocks of `inode`."""
    await check(mctx, OP_DATA, inode.uid, inode.gid, inode.proj)


def has_rules(mctx, op: int) -> bool:
    c = getattr(mctx, "quota", None)
    return bool(c and c.rules and any(r.op == op for r in c.rules))
