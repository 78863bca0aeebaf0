"""scripts/bench's cluster workloads without a cluster: option parsing, the table rows, the
percentile, and the worker protocol of scripts/bench_cluster.py run for real on a plain
directory (real processes and pipes; no mount, no timing asserted)."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


def _load(name: str, path: Path):
    loader = importlib.machinery.SourceFileLoader(name, str(path))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[loader.name] = mod  # dataclasses look their module up while it executes
    loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def bench():
    try:
        yield _load("scoutfs_bench_script_cluster", SCRIPTS / "bench")
    finally:
        sys.modules.pop("scoutfs_bench_script_cluster", None)


@pytest.fixture(scope="module")
def worker():
    try:
        yield _load("scoutfs_bench_cluster_worker", SCRIPTS / "bench_cluster.py")
    finally:
        sys.modules.pop("scoutfs_bench_cluster_worker", None)


def test_only_selects_cluster_workloads(bench):
    c = bench.parse_args([])
    assert c.only == ("minimal", "ext4", "scoutfs")
    assert c.cluster == ("multi-create", "ping-pong", "archive", "rm-rf")
    assert (c.cluster_files, c.rounds, c.archive_mib) == (3_000, 200, 1024)
    assert (c.rmrf_files, c.rmrf_open) == (20_000, 100)
    c = bench.parse_args(["--only", "rm-rf", "--rmrf-files", "500", "--rmrf-open", "7"])
    assert (c.cluster, c.rmrf_files, c.rmrf_open) == (("rm-rf",), 500, 7)
    c = bench.parse_args(["--only", "ping-pong,multi-create,ping-pong"])
    assert c.only == () and c.cluster == ("multi-create", "ping-pong")
    c = bench.parse_args(["--only", "scoutfs"])
    assert c.only == ("scoutfs",) and c.cluster == ()
    c = bench.parse_args(["--quick", "--only", "ping-pong"])
    assert (c.cluster_files, c.rounds, c.cluster) == (1_000, 50, ("ping-pong",))
    c = bench.parse_args(["--quick", "--only", "archive"])
    assert (c.only, c.cluster, c.archive_mib) == ((), ("archive",), 64)
    c = bench.parse_args(["--quick", "--rounds", "7", "--cluster-files", "1,000"])
    assert (c.cluster_files, c.rounds) == (1_000, 7)
    for bad in (["--only", "pingpong"], ["--rounds", "0"], ["--cluster-files", "x"]):
        with pytest.raises(SystemExit):
            bench.parse_args(bad)


def test_cluster_rows(bench):
    cfg = bench.parse_args(["--quick", "--only", "multi-create,ping-pong", "--cluster-files",
                            "300"])
    results = {
        "mc_create": {"scoutfs": [900.0, 1100.0, 1000.0]},
        "mc_create_1": {"scoutfs": [800.0]},
        "pp_median": {"scoutfs": [30.0]},
        "pp1_median": {"scoutfs": [2.0]},
    }
    rows = {r[0]: r for r in bench.build_rows(results, cfg)}
    assert not any("lstat" in k for k in rows)  # no target picked: no target rows
    mc = rows["create 3 x 300 files, 3 mounts at once (aggregate)"]
    assert mc[1:5] == ["ops/s", "—", "—", "1,000"]
    assert mc[7] == "(no target) 1.25x the 1-mount baseline"
    assert rows["create 900 files, 1 mount (baseline)"][4] == "800"
    pp = rows["append ping-pong x50, 2 mounts: round trip median"]
    assert pp[1] == "ms" and pp[4] == "30.0" and pp[7] == "(no target) 15.00x the 1-mount baseline"
    assert rows["append ping-pong x50, 2 mounts: round trip p90"][7] == "(no target) not measured"
    assert rows["same on 1 mount (baseline): median"][4] == "2.00"
    assert all(len(r) == len(bench.HEADERS) for r in rows.values())

    cfg = bench.parse_args(["--only", "scoutfs"])
    labels = [r[0] for r in bench.build_rows(results, cfg)]
    assert len(labels) == 6 and not any("ping-pong" in x or "mounts" in x for x in labels)


@given(values=st.lists(st.floats(-1e6, 1e6), min_size=1, max_size=50),
       pct=st.integers(1, 100))
def test_percentile_is_nearest_rank(bench, values, pct):
    p = bench.percentile(values, pct)
    rank = max(1, -(-pct * len(values) // 100))  # exact integer ceil
    assert p in values
    assert sum(v <= p for v in values) >= rank > sum(v < p for v in values)


def test_percentile_examples(bench):
    assert bench.percentile([float(i) for i in range(1, 11)], 90) == 9.0
    assert bench.percentile([5.0, 1.0], 50) == 1.0
    assert bench.percentile([float(i) for i in range(1, 101)], 7) == 7.0
    with pytest.raises(ValueError):
        bench.percentile([], 90)


def test_pingpong_protocol_on_a_directory(bench, worker, tmp_path):
    ws = bench.Workers(tmp_path)
    f = tmp_path / "pp"
    r = bench.wl_pingpong(ws, f, f, rounds=12, warmup=3)
    assert r["rounds"] == 12 and r["warmup"] == 3 and r["stale_reads"] == 0
    assert r["min"] <= r["median"] <= r["p90"] <= r["max"]
    assert f.read_bytes() == b"".join(worker.record(s, i) for i in range(15) for s in "ab")
    assert not ws.alive() and not ws.live
    # side a creates the file O_EXCL: a second run on it fails, and both workers are gone
    with pytest.raises(bench.WorkloadError, match="FileExistsError"):
        bench.wl_pingpong(ws, f, f, rounds=2, warmup=0)
    assert not ws.alive()


def test_multi_create_on_directories(bench, tmp_path):
    ws = bench.Workers(tmp_path)
    dirs = [tmp_path / f"d{i}" for i in range(3)]
    r = bench.wl_multi_create(ws, dirs, 40)
    assert r["files"] == 120 and len(r["per_worker"]) == 3 and r["rate"] > 0
    for d in dirs:
        assert sorted(p.name for p in d.iterdir()) == [f"f{i:07d}" for i in range(40)]
    with pytest.raises(bench.WorkloadError, match="FileExistsError"):
        bench.wl_multi_create(ws, dirs[:1], 1)  # its directory exists already
    assert not ws.alive()


def test_kill_all_stops_waiting_workers(bench, tmp_path):
    ws = bench.Workers(tmp_path)
    w = ws.spawn(["create", str(tmp_path / "d"), "5"])
    assert w.reply("ready") == {"ready": True}
    assert ws.alive() == [w]
    assert ws.kill_all(wait=10)
    with pytest.raises(bench.WorkloadError, match="ended without answering"):
        w.reply("start")
    ws.reap([w])
    assert not ws.live


def test_unseen_record_times_out(worker, tmp_path, monkeypatch):
    f = tmp_path / "f"
    f.write_bytes(worker.record("a", 0))
    monkeypatch.setattr(worker, "SEE_TIMEOUT", 0.0)
    with pytest.raises(RuntimeError, match="B0 still not visible"):
        worker._turn(str(f), ("b", 0), ("a", 1))
    assert f.read_bytes() == worker.record("a", 0)  # nothing appended without seeing B0
    assert worker._turn(str(f), ("a", 0), ("b", 0)) == 0
    assert f.read_bytes() == worker.record("a", 0) + worker.record("b", 0)


def test_check_file_finds_a_lost_append(worker, tmp_path):
    f = tmp_path / "f"
    f.write_bytes(b"".join(worker.record(s, i) for i in range(3) for s in "ab"))
    worker.check_file(str(f), 3)
    f.write_bytes(b"".join(worker.record(s, i) for i in range(3) for s in "ab" if (s, i) != ("b", 1)))
    with pytest.raises(RuntimeError, match="first difference at byte 48"):
        worker.check_file(str(f), 3)
