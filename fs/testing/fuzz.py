"""scripts/fuzz: the corrupted-metadata soak over many images (see fs/testing/corrupt.py).

Jobs run in worker processes, each with its own template volume (its own quorum port), and
probe one corruption per seed.  The parent prints progress and, at the end, a table of
outcomes per kind of corruption; failing images are kept with a report for reproduction.
"""

from __future__ import annotations

import argparse
import collections
import multiprocessing
import os
import random
import shutil
import sys
import tempfile
import time

from tabulate import tabulate

from fs.testing import corrupt

OUTCOMES = ("harmless", "altered", "refused", "eio", "changed", "missed", "traceback", "hang")

_worker: dict = {}


def corruption_for(seed: int) -> corrupt.Corruption:
    rng = random.Random(seed)
    return corrupt.Corruption(rng.choice(corrupt.TARGETS), rng.choice(corrupt.HOWS),
                              rng.random() < 0.7, seed)


def _init(timeout: float, base: str) -> None:
    work = tempfile.mkdtemp(prefix="job-", dir=base)
    tmpl = os.path.join(work, "template")
    os.mkdir(tmpl)
    meta, data = corrupt.make_template(tmpl)
    copy = os.path.join(work, "copy")
    os.mkdir(copy)
    clean = corrupt.probe(*corrupt.copy_volume(meta, data, copy), timeout)
    if corrupt.classify(clean, clean) != "harmless" or clean["fsck"]:
        raise RuntimeError(f"the clean template does not probe clean: {clean}")
    _worker.update(work=work, meta=meta, data=data, copy=copy, clean=clean,
                   blocks=corrupt.meta_blocks(meta), timeout=timeout)


def _one(seed: int) -> tuple[int, str, str, str, float]:
    w = _worker
    c = corruption_for(seed)
    meta, data = corrupt.copy_volume(w["meta"], w["data"], w["copy"])
    hit = corrupt.corrupt(meta, data, c, w["blocks"])
    start = time.monotonic()
    result = corrupt.probe(meta, data, w["timeout"])
    outcome = corrupt.classify(result, w["clean"])
    report = ""
    if outcome in corrupt.FATAL:
        report = corrupt.explain(result, w["clean"])
        keep = os.path.join(w["out"], f"seed-{seed}")
        shutil.rmtree(keep, ignore_errors=True)
        os.makedirs(keep)
        for p in (meta, data):
            shutil.copyfile(p, os.path.join(keep, os.path.basename(p)))
        with open(os.path.join(keep, "report"), "w") as f:
            f.write(f"{c}: {hit}: {outcome}\n{report}\n")
    crc = "" if c.how == corrupt.HOW_ZERO else " crc fixed" if c.fix_crc else " crc kept"
    return seed, outcome, f"{c.how} {c.target}{crc}", hit, time.monotonic() - start


def _init_with_out(timeout: float, base: str, out: str) -> None:
    _init(timeout, base)
    _worker["out"] = out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="scripts/fuzz", description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=200, help="images to corrupt (default 200)")
    ap.add_argument("-j", type=int, default=2, help="parallel jobs (default 2)")
    ap.add_argument("-s", type=int, default=1, help="first seed (default 1)")
    ap.add_argument("-t", type=float, default=corrupt.PROBE_TIMEOUT_S,
                    help=f"time bound of one probe in seconds (default "
                         f"{corrupt.PROBE_TIMEOUT_S:g})")
    ap.add_argument("-o", default="/tmp/scoutfs-fuzz", help="where failing images are kept")
    a = ap.parse_args(argv)
    if a.n < 1 or a.j < 1 or a.t <= 0:
        ap.error("-n and -j must be at least 1 and -t positive")
    os.makedirs(a.o, exist_ok=True)
    table: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    fatal: list[str] = []
    start = time.monotonic()
    print(f"fuzz: {a.n} images, {a.j} jobs, seeds {a.s}..{a.s + a.n - 1}, "
          f"{a.t:g} s per probe; failing images go to {a.o}", flush=True)
    ctx = multiprocessing.get_context("spawn")
    base = tempfile.mkdtemp(prefix="scoutfs-fuzz-")
    try:
        with ctx.Pool(a.j, initializer=_init_with_out, initargs=(a.t, base, a.o)) as pool:
            _collect(pool, a, table, fatal, start)
    except KeyboardInterrupt:
        print("fuzz: interrupted", file=sys.stderr)
        return 130
    finally:
        shutil.rmtree(base, ignore_errors=True)
    rows = [[kind, *(table[kind][o] for o in OUTCOMES), sum(table[kind].values())]
            for kind in sorted(table)]
    totals: collections.Counter = collections.Counter()
    for c in table.values():
        totals.update(c)
    rows.append(["total", *(totals[o] for o in OUTCOMES), sum(totals.values())])
    print()
    print(tabulate(rows, headers=["corruption", *OUTCOMES, "images"], tablefmt="github"))
    print(f"\n{a.n} images in {time.monotonic() - start:.0f} s; {totals['traceback']} "
          f"tracebacks, {totals['hang']} hangs, {totals['missed']} damaged images fsck "
          f"called clean; {totals['altered']} consistent alterations (no checker can see "
          f"them)")
    for line in fatal:
        print(f"FAIL {line}")
    return 1 if fatal else 0


def _collect(pool, a, table, fatal: list[str], start: float) -> None:
    for done, (seed, outcome, kind, hit, _took) in enumerate(
            pool.imap_unordered(_one, range(a.s, a.s + a.n)), 1):
        table[kind][outcome] += 1
        if outcome in corrupt.FATAL:
            fatal.append(f"seed {seed}: {kind}: {hit}: {outcome}")
            print(f"  FAIL seed {seed}: {kind}: {hit}: {outcome}", flush=True)
        if done % 25 == 0 or done == a.n:
            print(f"  {done}/{a.n} images, {len(fatal)} failing, "
                  f"{time.monotonic() - start:.0f} s", flush=True)


if __name__ == "__main__":
    sys.exit(main())
