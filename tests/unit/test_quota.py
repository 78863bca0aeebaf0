"""Quota rules (fs/quota.py) and the rule text of the quota commands (fs/cli/quota.py)."""

from __future__ import annotations

import errno

import pytest
import trio

from fs import format as fmt
from fs import quota
from fs.cli import quota as cli
from fs.errors import FsError
from fs.quota import Rule


def rule(text: str) -> Rule:
    r = cli.parse_rule(text)
    assert r is not None, text
    return Rule(r["prio"], tuple(tuple(n) for n in r["names"]), r["op"], r["limit"],
                r["flags"]).check()


def test_rule_text_round_trips_and_scanf_quirks(capsys):
    for text in ("  7 13,L,- 15,L,- 17,L,- I 33 -", "200 1,U,S 2,G,- 3,P,S D 0 C",
                 "  0 18446744073709551615,L,- 0,L,- 0,L,- I 18446744073709551615 -"):
        r = cli.parse_rule(text)
        assert cli.format_rule(r) == text
    # %hhu wraps, %llu saturates, white space anywhere the format has a space
    assert cli.parse_rule("300 1,L,- 2,L,- 3,L,- I 99999999999999999999999 -")["prio"] == 44
    assert cli.parse_rule("1 1,L,- 2,L,- 3,L,- I 99999999999999999999999 -")["limit"] == \
        fmt.U64_MAX
    assert cli.parse_rule("  1   1,L,-   2,L,-\t3,L,- I 4 -") is not None
    capsys.readouterr()
    assert cli.parse_rule("1 1 ,L,- 2,L,- 3,L,- I 4 -") is None
    assert "missing fields" in capsys.readouterr().out
    assert cli.parse_rule("1 1,L,- 2,L,- 3,L,S I 4 x") is None
    assert capsys.readouterr().out.startswith("invalid rule flags 'x' in rule:")


def test_pack_and_check():
    r = rule("7 13,P,S 15,G,- 17,U,- D 33 C")
    assert Rule.unpack(r.pack()) == r
    with pytest.raises(FsError) as e:
        Rule(1, ((1, 4, 0), (0, 0, 0), (0, 0, 0)), 0, 1, 0).check()
    assert e.value.errno == errno.EINVAL
    with pytest.raises(FsError):
        Rule(1, ((1, 0, 2), (0, 0, 0), (0, 0, 0)), 0, 1, 0).check()
    with pytest.raises(FsError):
        Rule(1, ((1, 0, 0), (0, 0, 0), (0, 0, 0)), 2, 1, 0).check()


def test_winning_rule_and_total_name():
    rules = sorted([rule("20 77,L,- 22222,U,S 1,L,- I 2 C"),
                    rule("10 80,L,- 0,U,- 0,G,- I 5 -"),
                    rule("30 79,L,- 5,P,S 1,L,- I 1 C"),
                    rule("40 9,L,- 9,L,- 9,L,- D 1 -")], key=Rule.sort_key, reverse=True)
    # project 5 selects the prio 30 rule
    w = quota.winning_rule(rules, quota.OP_INODE, 22222, 44444, 5)
    assert w.prio == 30 and quota.total_name(w, 22222, 44444, 5) == (79, 5, 1)
    # uid 22222 elsewhere: the prio 20 rule
    w = quota.winning_rule(rules, quota.OP_INODE, 22222, 44444, 0)
    assert w.prio == 20 and quota.total_name(w, 22222, 44444, 0) == (77, 22222, 1)
    # anyone else: the default rule, names from the caller
    w = quota.winning_rule(rules, quota.OP_INODE, 1000, 2000, 0)
    assert w.prio == 10 and quota.total_name(w, 1000, 2000, 0) == (80, 1000, 2000)
    assert quota.winning_rule(rules, quota.OP_DATA, 1, 1, 1).prio == 40
    assert quota.winning_rule(rules[1:], quota.OP_DATA, 1, 1, 1) is None


def test_check_uses_the_total_or_count_and_caches(monkeypatch):
    class M:
        quota = None
        totl = None

        class counters:
            @staticmethod
            def inc(name):
                pass

    mctx = M()
    c = quota.check_cache(mctx)
    now = [0.0]
    c.clock = lambda: now[0]
    c.rules = [rule("20 77,L,- 0,U,- 1,L,- I 2 C"), rule("20 78,L,- 0,G,- 1,L,- D 100 -")]
    totals = {(77, 5, 1): (1000, 1), (78, 6, 1): (100, 1)}
    reads = []

    async def read_total(m, abc):
        reads.append(abc)
        return totals.get(abc, (0, 0))

    monkeypatch.setattr(quota.totl, "read_total", read_total)

    async def main():
        await quota.check(mctx, quota.OP_INODE, 5, 6, 0)  # count 1 < 2
        with pytest.raises(FsError) as e:
            await quota.check(mctx, quota.OP_DATA, 5, 6, 0)  # total 100 >= 100
        assert e.value.errno == errno.EDQUOT
        totals[(77, 5, 1)] = (0, 2)
        await quota.check(mctx, quota.OP_INODE, 5, 6, 0)  # cached: still allowed
        now[0] += quota.CHECK_CACHE_S
        with pytest.raises(FsError):
            await quota.check(mctx, quota.OP_INODE, 5, 6, 0)

    trio.run(main)
    assert reads == [(77, 5, 1), (78, 6, 1), (77, 5, 1)]
    quota.drop_check_cache(mctx)
    assert c.rules is None and not c.results
