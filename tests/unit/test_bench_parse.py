"""scripts/bench: argument parsing and result formatting only (benchmarks are not tests: nothing
here runs a workload or looks at a timing)."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "scripts" / "bench"


@pytest.fixture(scope="module")
def bench():
    loader = importlib.machinery.SourceFileLoader("scoutfs_bench_script", str(BENCH))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[loader.name] = mod  # dataclasses look their module up while it executes
    try:
        loader.exec_module(mod)
        yield mod
    finally:
        sys.modules.pop(loader.name, None)


def test_defaults(bench):
    c = bench.parse_args([])
    assert (c.files, c.size_mib, c.rand_reads, c.rss_files) == (10_000, 256, 20_000, 100_000)
    assert c.only == ("minimal", "ext4", "scoutfs")
    assert c.repeat == 1 and c.json_path is None


def test_quick_and_overrides(bench):
    c = bench.parse_args(["--quick"])
    assert (c.files, c.size_mib, c.rss_files) == (1_000, 32, 10_000)
    c = bench.parse_args(["--quick", "--rss-files", "500", "--files", "2,000"])
    assert (c.files, c.size_mib, c.rss_files) == (2_000, 32, 500)
    assert bench.parse_args(["--rss-files", "0"]).rss_files == 0


def test_only_and_repeat(bench):
    c = bench.parse_args(["--only", "scoutfs, minimal,scoutfs", "--repeat", "3", "--json", "x"])
    assert c.only == ("minimal", "scoutfs")  # canonical order, no duplicates
    assert c.repeat == 3 and c.json_path == "x"
    for bad in (["--only", "xfs"], ["--only", ","], ["--repeat", "0"], ["--files", "ten"]):
        with pytest.raises(SystemExit):
            bench.parse_args(bad)


def test_rows_ratios_and_checks(bench):
    cfg = bench.parse_args(["--quick"])
    results = {
        "create": {"minimal": [1000.0, 3000.0, 2000.0], "scoutfs": [900.0]},
        "seq_write": {"ext4": [200.0], "scoutfs": [80.0]},
        "rand_read": {"ext4": [5000.0], "scoutfs": [10000.0]},
    }
    rows = {r[0]: r for r in bench.build_rows(results, cfg)}
    create = rows["create 1,000 empty files"]
    assert create[1:5] == ["ops/s", "2,000", "—", "900"]  # median of the runs
    assert create[5] == "0.45" and create[6] == "—"
    assert create[7].endswith("BELOW")
    write = rows["seq write 32 MiB, bs=1M, fsync"]
    assert write[6] == "0.40" and write[7].endswith("BELOW")
    rand = rows["4 KiB random pread x2,000, cold"]
    assert rand[6] == "2.00" and rand[7] == "(no target)"
    assert rows["lstat them"][7].endswith("not measured")
    assert len(bench.HEADERS) == len(create)
    table = bench.format_table(results, cfg)
    assert "scoutfs/minimal" in table and "2,000" in table


def test_number_formats(bench):
    assert bench.fmt_rate(None) == "—"
    assert bench.fmt_rate(12345.6) == "12,346"
    assert bench.fmt_rate(12.34) == "12.3"
    assert bench.fmt_ratio(0.5) == "0.50"


def test_rss_check_line(bench):
    cfg = bench.parse_args(["--cache-blocks", "16", "--item-cache-items", "1024",
                            "--item-bytes", "1024", "--parsed-node-bytes", "131072"])
    MiB = 1 << 20
    ok, line = bench.rss_check_line(peak=11 * MiB, idle=8 * MiB, cfg=cfg)
    assert ok and "cache_blocks=16" in line and "item_cache_items=1024" in line
    # 2 x 1 MiB blocks + 2 x 4 x 128 KiB parsed + 1 MiB items + 8 MiB fixed = 12 MiB
    assert line.endswith("ok")
    ok, line = bench.rss_check_line(peak=12 * MiB + 1, idle=8 * MiB, cfg=cfg)
    assert not ok and line.endswith("OVER")


def test_protocol_target_and_table(bench):
    assert bench.parse_args([]).protocol  # all targets by default
    c = bench.parse_args(["--only", "protocol", "--quick"])
    assert c.protocol and c.only == () and c.cluster == ()
    assert bench.build_rows({}, c) == []  # no scoutfs/minimal/ext4 table
    assert not bench.parse_args(["--only", "minimal"]).protocol
    presults = {
        "create": {"pyfuse3": [1000.0, 3000.0, 2000.0], "fuse": [3000.0]},
        "seq_read": {"pyfuse3": [500.0]},
    }
    rows = {r[0]: r for r in bench.build_protocol_rows(presults, c)}
    assert list(rows) == ["create 1,000 empty files", "lstat them", "unlink them",
                          "seq write 32 MiB, bs=1M, fsync", "seq read 32 MiB after drop_caches"]
    assert rows["create 1,000 empty files"][1:] == ["ops/s", "2,000", "3,000", "1.50"]
    assert rows["seq read 32 MiB after drop_caches"][2:] == ["500", "—", "—"]
    assert len(bench.PROTOCOL_HEADERS) == 5
    assert "fuse/pyfuse3" in bench.format_protocol_table(presults, c)
