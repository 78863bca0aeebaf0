"""Test selection: ``tests/sequence``, ``-I``/``-E`` regexes, shuffle and CI sharding.

The sequence file lists one test script per line (``name.sh``); blank lines and lines starting
with ``#`` are ignored.  As upstream, the include/exclude regexes match the sequence line (the
file name *with* ``.sh``) and a test name is that line without ``.sh``.

Sharding splits the selected tests into N parts balanced by the last known durations
(``<results>/last-passed-test-stats`` or the checked-in ``tests/durations``, both ``NAME <secs>s``
per line).  The split is deterministic: every shard computes the same assignment from the same
inputs, so each test runs in exactly one shard.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

DEFAULT_DURATION = 5.0
"""Seconds assumed for a test whose duration is unknown (before median substitution)."""


class SelectionError(Exception):
    """The selection could not be made (bad regex, empty list, bad shard spec)."""


def read_sequence(path: Path) -> list[str]:
    """Return the sequence lines (``name.sh``) of ``path`` in order, without comments."""
    entries: list[str] = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        entries.append(line)
    return entries


def test_name(entry: str) -> str:
    """The test name of a sequence line: its basename without ``.sh``."""
    base = entry.rsplit("/", 1)[-1]
    return base[:-3] if base.endswith(".sh") else base


def filter_entries(
    entries: Sequence[str], includes: Iterable[str] = (), excludes: Iterable[str] = ()
) -> list[str]:
    """Keep entries matching any include regex (default all) and no exclude regex."""
    try:
        inc = [re.compile(r) for r in includes] or [re.compile(".*")]
        exc = [re.compile(r) for r in excludes]
    except re.error as e:
        raise SelectionError(f"bad regex: {e}") from e
    return [
        e for e in entries if any(r.search(e) for r in inc) and not any(r.search(e) for r in exc)
    ]


def shuffle_entries(entries: Sequence[str], seed: int) -> list[str]:
    """Shuffle deterministically by ``seed``, keeping ``xfstests.sh`` last as upstream does."""
    rest = [e for e in entries if test_name(e) != "xfstests"]
    last = [e for e in entries if test_name(e) == "xfstests"]
    random.Random(seed).shuffle(rest)
    return rest + last


def parse_durations(text: str) -> dict[str, float]:
    """Parse ``NAME <secs>s`` lines (``last-passed-test-stats`` format)."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 2 or line.lstrip().startswith("#"):
            continue
        try:
            out[parts[0]] = float(parts[1].rstrip("s"))
        except ValueError:
            continue
    return out


def load_durations(*paths: Path) -> dict[str, float]:
    """Durations from the given files; earlier files take precedence over later ones."""
    merged: dict[str, float] = {}
    for p in reversed(paths):
        try:
            merged.update(parse_durations(p.read_text()))
        except OSError:
            continue
    return merged


def parse_shard(spec: str) -> tuple[int, int]:
    """Parse ``K/N`` (1-based K, 1 <= K <= N)."""
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", spec)
    if not m:
        raise SelectionError(f"bad shard '{spec}', expected K/N")
    k, n = int(m.group(1)), int(m.group(2))
    if n < 1 or not 1 <= k <= n:
        raise SelectionError(f"bad shard '{spec}', need 1 <= K <= N")
    return k, n


def shard_assignment(
    names: Sequence[str], nr_shards: int, durations: dict[str, float] | None = None
) -> list[list[str]]:
    """Split ``names`` into ``nr_shards`` lists of about equal total duration.

    Longest-processing-time-first greedy: tests sorted by descending duration (name breaks
    ties) go to the shard with the smallest total so far (lowest index breaks ties).  Unknown
    durations count as the median of the known ones.  Each shard keeps the input order.
    """
    durations = durations or {}
    known = sorted(durations[n] for n in names if n in durations)
    default = known[len(known) // 2] if known else DEFAULT_DURATION
    cost = {n: durations.get(n, default) for n in names}
    totals = [0.0] * nr_shards
    owner: dict[str, int] = {}
    for n in sorted(set(names), key=lambda n: (-cost[n], n)):
        i = min(range(nr_shards), key=lambda i: (totals[i], i))
        owner[n] = i
        totals[i] += cost[n]
    return [[n for n in names if owner[n] == i] for i in range(nr_shards)]


def shard(
    names: Sequence[str], k: int, nr_shards: int, durations: dict[str, float] | None = None
) -> list[str]:
    """The names of shard ``k`` (1-based) of ``nr_shards``."""
    return shard_assignment(names, nr_shards, durations)[k - 1]


def select_tests(
    tests_dir: Path,
    includes: Iterable[str] = (),
    excludes: Iterable[str] = (),
    *,
    shuffle_seed: int | None = None,
    shard_spec: str | None = None,
    durations: dict[str, float] | None = None,
) -> list[str]:
    """The test names to run, in order.  An empty sequence yields []; an empty result from a
    non-empty sequence is an error (upstream dies on an empty list)."""
    entries = read_sequence(tests_dir / "sequence")
    includes, excludes = list(includes), list(excludes)
    selected = filter_entries(entries, includes, excludes)
    if entries and not selected:
        raise SelectionError("no tests selected")
    if shuffle_seed is not None:
        selected = shuffle_entries(selected, shuffle_seed)
    names = [test_name(e) for e in selected]
    if shard_spec:
        k, n = parse_shard(shard_spec)
        names = shard(names, k, n, durations)
    return names
