"""harness.selection: sequence parsing, -I/-E regexes, shuffle, shard balance and determinism."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from harness import selection as sel


def write_seq(tmp_path: Path, lines: list[str]) -> Path:
    (tmp_path / "sequence").write_text("\n".join(lines) + "\n")
    return tmp_path


def test_read_sequence_skips_comments_and_blanks(tmp_path: Path) -> None:
    write_seq(tmp_path, ["# header", "", "a.sh", "  # indented comment", "b.sh", "c.sh"])
    assert sel.read_sequence(tmp_path / "sequence") == ["a.sh", "b.sh", "c.sh"]


def test_include_exclude_match_line_with_dot_sh(tmp_path: Path) -> None:
    entries = ["basic-posix.sh", "mount-unmount.sh", "srch-basic.sh", "xfstests.sh"]
    assert sel.filter_entries(entries) == entries
    assert sel.filter_entries(entries, ["basic"]) == ["basic-posix.sh", "srch-basic.sh"]
    assert sel.filter_entries(entries, ["^basic", "^mount"]) == [
        "basic-posix.sh",
        "mount-unmount.sh",
    ]
    assert sel.filter_entries(entries, [], ["basic", r"\.sh$"]) == []
    assert sel.filter_entries(entries, [r"unt\.sh$"]) == ["mount-unmount.sh"]
    assert sel.filter_entries(entries, [".*"], ["xfstests"]) == entries[:3]


def test_bad_regex_and_empty_selection(tmp_path: Path) -> None:
    with pytest.raises(sel.SelectionError):
        sel.filter_entries(["a.sh"], ["("])
    write_seq(tmp_path, ["a.sh"])
    with pytest.raises(sel.SelectionError):
        sel.select_tests(tmp_path, ["nomatch"])
    write_seq(tmp_path, ["# nothing yet"])
    assert sel.select_tests(tmp_path) == []


def test_names_drop_sh(tmp_path: Path) -> None:
    write_seq(tmp_path, ["a.sh", "b.sh"])
    assert sel.select_tests(tmp_path) == ["a", "b"]


def test_shuffle_deterministic_and_xfstests_last() -> None:
    entries = [f"t{i}.sh" for i in range(30)] + ["xfstests.sh"]
    entries.insert(5, entries.pop())
    a = sel.shuffle_entries(entries, 7)
    assert a == sel.shuffle_entries(entries, 7)
    assert a[-1] == "xfstests.sh"
    assert sorted(a) == sorted(entries)
    assert a != sel.shuffle_entries(entries, 8)


def test_parse_shard() -> None:
    assert sel.parse_shard("2/5") == (2, 5)
    for bad in ("0/3", "4/3", "x", "1/0", "1-3"):
        with pytest.raises(sel.SelectionError):
            sel.parse_shard(bad)


def test_durations_file_format(tmp_path: Path) -> None:
    (tmp_path / "a").write_text("x 1.5s\ny 2s\nbad line\n# c 9s\n")
    (tmp_path / "b").write_text("x 9.0s\nz 3s\n")
    d = sel.load_durations(tmp_path / "a", tmp_path / "b", tmp_path / "missing")
    assert d == {"x": 1.5, "y": 2.0, "z": 3.0}


@pytest.mark.parametrize("nr", [1, 2, 3, 4, 7, 100])
def test_every_test_in_exactly_one_shard(nr: int) -> None:
    rng = random.Random(nr)
    names = [f"test-{i}" for i in range(68)]
    durs = {n: rng.uniform(0.5, 120) for n in names[:60]}  # some unknown
    shards = [sel.shard(names, k, nr, durs) for k in range(1, nr + 1)]
    flat = [n for s in shards for n in s]
    assert sorted(flat) == sorted(names)
    assert len(flat) == len(set(flat))
    for s in shards:  # each shard keeps sequence order
        assert s == [n for n in names if n in s]


def test_shards_are_balanced_and_deterministic() -> None:
    rng = random.Random(1)
    names = [f"t{i}" for i in range(68)]
    durs = {n: rng.uniform(1, 60) for n in names}
    assign = sel.shard_assignment(names, 4, durs)
    assert assign == sel.shard_assignment(list(names), 4, dict(durs))
    totals = [sum(durs[n] for n in s) for s in assign]
    # LPT greedy: spread is at most the longest single test
    assert max(totals) - min(totals) <= max(durs.values())
    # the balance is by duration, not count: one huge test stands alone
    durs2 = {n: 1.0 for n in names} | {"t0": 1000.0}
    a2 = sel.shard_assignment(names, 2, durs2)
    assert ["t0"] in a2


def test_select_tests_with_shard(tmp_path: Path) -> None:
    write_seq(tmp_path, [f"n{i}.sh" for i in range(10)])
    parts = [sel.select_tests(tmp_path, shard_spec=f"{k}/3") for k in (1, 2, 3)]
    assert sorted(n for p in parts for n in p) == sorted(f"n{i}" for i in range(10))
