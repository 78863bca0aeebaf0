"""`scoutfs read-xattr-totals` and the quota rule commands (upstream's read_xattr_totals.c
and quota.c) over the control ops of fs/control.py (spec cli-and-harness §4.2, semantics
§5.10-§5.11).
"""

from __future__ import annotations

import errno
import os
import sys

from fs.cli.argp import POSITIONAL, Opt, UsageError
from fs.cli.util import (
    GROUP_CORE,
    GROUP_INFO,
    U64_MAX,
    Command,
    daemon_call,
    err,
    errno_str,
    open_path,
    register,
)
from fs.control_client import ControlError

TOTALS_BATCH = 8192  # totals asked per read_xattr_totals request


def _s64(v: int) -> int:
    """A u64 as C's %lld prints it."""
    return v - (1 << 64) if v >= 1 << 63 else v


# --------------------------------------------------------------------------- read-xattr-totals


def run_read_xattr_totals(cmd: str, events) -> int:
    path = None
    for k, v in events:
        if k == "path":
            path = v
        elif k == POSITIONAL:
            raise UsageError("too many arguments")
    fd = open_path(path or ".", os.O_RDONLY)
    try:
        pos: list[int] | None = [0, 0, 0]
        while pos is not None:
            try:
                r = daemon_call(fd, {"op": "read_xattr_totals", "pos": pos,
                                     "nr": TOTALS_BATCH})
            except ControlError as e:
                err(f"read_xattr_totals ioctl failed: {errno_str(e.errno)}")
                return -e.errno
            tots = r.get("totals") or []
            if not tots:
                break
            sys.stdout.write("".join(f"{a}.{b}.{c} = {_s64(t)}, {_s64(n)}\n"
                                     for a, b, c, t, n in tots))
            a, b, c = tots[-1][:3]
            # the name after the last one printed
            if c < U64_MAX:
                pos = [a, b, c + 1]
            elif b < U64_MAX:
                pos = [a, b + 1, 0]
            elif a < U64_MAX:
                pos = [a + 1, 0, 0]
            else:
                pos = None
    finally:
        os.close(fd)
    sys.stdout.flush()
    return 0


# --------------------------------------------------------------------------- quota rules

RULE_FMT = " %hhu %llu,%c,%c %llu,%c,%c %llu,%c,%c %c %llu %c"
SOURCES = {"L": 0, "P": 1, "U": 2, "G": 3}
SOURCE_CHARS = {v: k for k, v in SOURCES.items()}
OPS = {"I": 0, "D": 1}
OP_CHARS = {v: k for k, v in OPS.items()}


def _scan_u(s: str, i: int, bits: int) -> tuple[int, int] | None:
    """scanf's %hhu / %llu (strtoull: white space, a sign, decimal digits; saturates on
    overflow, a minus negates modulo 2**64) stored in `bits` bits."""
    n = len(s)
    while i < n and s[i].isspace():
        i += 1
    neg = False
    if i < n and s[i] in "+-":
        neg = s[i] == "-"
        i += 1
    j = i
    while j < n and s[j] in "0123456789":
        j += 1
    if j == i:
        return None
    v = min(int(s[i:j]), U64_MAX)
    if neg:
        v = (-v) & U64_MAX
    return v & ((1 << bits) - 1), j


def scan_rule(s: str) -> list:
    """sscanf(s, RULE_FMT): the values converted, up to the first failure."""
    out: list = []
    i, f = 0, 0
    fmt_s = RULE_FMT
    while f < len(fmt_s):
        c = fmt_s[f]
        if c.isspace():
            while i < len(s) and s[i].isspace():
                i += 1
            f += 1
        elif c == "%":
            spec = fmt_s[f + 1:f + 4]
            if spec.startswith("hhu"):
                got, f = _scan_u(s, i, 8), f + 4
            elif spec.startswith("llu"):
                got, f = _scan_u(s, i, 64), f + 4
            else:  # %c
                got = (s[i], i + 1) if i < len(s) else None
                f += 2
            if got is None:
                break
            out.append(got[0])
            i = got[1]
        else:
            if i >= len(s) or s[i] != c:
                break
            i += 1
            f += 1
    return out


def parse_rule(s: str) -> dict | None:
    """Upstream's rule parsing: the rule, or None after printing why (on stdout)."""
    v = scan_rule(s)
    if len(v) != 13:
        print(f"invalid rule, missing fields: {s}")
        return None
    names = []
    for n in range(3):
        val, src, flag = v[1 + n * 3:4 + n * 3]
        if src not in SOURCES:
            print(f"invalid name source '{src}' in name #{n} in rule: {s}")
            return None
        if flag not in ("S", "-"):
            print(f"invalid name flags '{flag}' in name #{n} in rule: {s}")
            return None
        names.append([val, SOURCES[src], 1 if flag == "S" else 0])
    op, limit, rf = v[10], v[11], v[12]
    if op not in OPS:
        print(f"invalid op '{op}' in rule: {s}")
        return None
    if rf not in ("C", "-"):
        print(f"invalid rule flags '{rf}' in rule: {s}")
        return None
    return {"prio": v[0], "names": names, "op": OPS[op], "limit": limit,
            "flags": 1 if rf == "C" else 0}


def format_rule(r: dict) -> str:
    names = " ".join(f"{v},{SOURCE_CHARS.get(s, '?')},{'S' if f & 1 else '-'}"
                     for v, s, f in r["names"])
    return (f"{r['prio']:3d} {names} {OP_CHARS.get(r['op'], '?')} {r['limit']} "
            f"{'C' if r['flags'] & 1 else '-'}")


def sort_key(r: dict) -> tuple:
    return (r["prio"], *(tuple(n) for n in r["names"]), r["op"], r["limit"], r["flags"])


def _path_rule(events, want_rule: bool) -> tuple[str, str | None, bool]:
    path = rule = None
    unsorted = False
    for k, v in events:
        if k == "path":
            path = v
        elif k == "rule":
            rule = v
        elif k == "unsorted":
            unsorted = True
        elif k == POSITIONAL:
            raise UsageError("too many arguments")
    if path is None:
        raise UsageError("must provide file path")
    if want_rule and rule is None:
        raise UsageError("must provide rule string")
    return path, rule, unsorted


def _mod(fd: int, rule: dict, add: bool) -> int:
    try:
        daemon_call(fd, {"op": "quota_mod", "rule": rule, "add": add})
    except ControlError as e:
        err(f"MOD_QUOTA_RULE ioctl failed: {errno_str(e.errno)}")
        return -e.errno
    return 0


def _list(fd: int) -> list[dict] | int:
    try:
        return daemon_call(fd, {"op": "quota_list"}).get("rules") or []
    except ControlError as e:
        err(f"GET_QUOTA_RULES ioctl failed: {errno_str(e.errno)}")
        return -e.errno


def _run_mod(events, add: bool) -> int:
    path, text, _u = _path_rule(events, True)
    rule = parse_rule(text or "")
    if rule is None:
        return -errno.EINVAL
    fd = open_path(path, os.O_RDONLY)
    try:
        return _mod(fd, rule, add)
    finally:
        os.close(fd)


def run_quota_add(cmd: str, events) -> int:
    return _run_mod(events, True)


def run_quota_del(cmd: str, events) -> int:
    return _run_mod(events, False)


def run_quota_list(cmd: str, events) -> int:
    path, _r, unsorted = _path_rule(events, False)
    fd = open_path(path, os.O_RDONLY)
    try:
        rules = _list(fd)
    finally:
        os.close(fd)
    if isinstance(rules, int):
        return rules
    if not unsorted:
        rules = sorted(rules, key=sort_key, reverse=True)
    sys.stdout.write("".join(format_rule(r) + "\n" for r in rules))
    sys.stdout.flush()
    return 0


def run_quota_wipe(cmd: str, events) -> int:
    path, _r, _u = _path_rule(events, False)
    fd = open_path(path, os.O_RDONLY)
    try:
        rules = _list(fd)
        if isinstance(rules, int):
            return rules
        for r in rules:
            ret = _mod(fd, r, False)
            if ret:
                return ret
    finally:
        os.close(fd)
    return 0


def run_quota_restore(cmd: str, events) -> int:
    path, _r, _u = _path_rule(events, False)
    fd = open_path(path, os.O_RDONLY)
    ret = 0
    try:
        for line in sys.stdin:
            line = line.rstrip("\n")
            if not line.strip():
                continue
            rule = parse_rule(line)
            e = -errno.EINVAL
            if rule is not None:
                try:
                    daemon_call(fd, {"op": "quota_mod", "rule": rule, "add": True})
                    continue
                except ControlError as ce:
                    e = -ce.errno
            sys.stdout.write(f"Failed to add following rule:\n{line}\n")
            sys.stdout.flush()
            err(f"Error: {errno_str(-e)}")
            ret = e
    finally:
        os.close(fd)
    return ret


_PATH = Opt("path", "p", "path", "PATH", "Path to ScoutFS filesystem")
_RULE = Opt("rule", "r", "rule", "RULE", "Quota rule string")
register(Command("read-xattr-totals", "", "Print totals of .totl. xattrs", GROUP_INFO,
                 [_PATH], run_read_xattr_totals))
register(Command("quota-add", "", "Add a quota rule", GROUP_CORE, [_PATH, _RULE],
                 run_quota_add))
register(Command("quota-del", "", "Delete a quota rule", GROUP_CORE, [_PATH, _RULE],
                 run_quota_del))
register(Command("quota-list", "", "List quota rules", GROUP_CORE,
                 [_PATH, Opt("unsorted", "U", "unsorted", None, "Do not sort the rules")],
                 run_quota_list))
register(Command("quota-wipe", "", "Delete every quota rule", GROUP_CORE, [_PATH],
                 run_quota_wipe))
register(Command("quota-restore", "", "Add quota rules read from stdin (quota-list lines)",
                 GROUP_CORE, [_PATH], run_quota_restore))
