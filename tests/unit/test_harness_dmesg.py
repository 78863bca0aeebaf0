"""harness/dmesg.py and the engine's dmesg check (spec cli-and-harness §1.8) on a fake cluster:
an error-level kernel log line of our cluster fails a passing test, other clusters' lines and
lines t_filter_dmesg drops don't, and the kernel log's records parse as /dev/kmsg gives them."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from fs import kmsg
from harness import dmesg
from harness.cluster import ClusterConfig
from harness.results import FAILED, PASSED
from harness.runner import Engine, RunConfig
from tests.unit.test_harness_runner import make_tests_dir

REPO = Path(__file__).resolve().parents[2]
FSID, RID = "0a1b2c3d4e5f6071", "8192a3b4c5d6e7f8"
OURS = "f.0a1b2c.r.8192a3"


def rec(level: int, text: str, seq: int = 1) -> str:
    """A record as read from /dev/kmsg."""
    return f"{level},{seq},123456789,-;{text}"


@pytest.fixture
def engine_for(tmp_path: Path) -> Iterator:
    engines: list[Engine] = []
    kfile = tmp_path / "kmsg"
    kfile.write_text(rec(3, f"scoutfs {OURS} error: before the test") + "\n")

    def make(tests: dict[str, tuple[str, str | None]]) -> Engine:
        tdir = make_tests_dir(tmp_path / "t", tests)
        shutil.copy(REPO / "tests" / "funcs" / "filter.sh", tdir / "funcs" / "filter.sh")
        res = tmp_path / "res"
        e = Engine(RunConfig(tests_dir=tdir, results=res,
                             cluster=ClusterConfig(results=res, fake=True), timeout=30,
                             progress=False, kmsg_path=str(kfile)))
        e.setup()
        e.results.start(list(tests), {})
        # a mount of ours logs in the run dir under its fsid and rid
        (e.cluster.run_dir / "log" / f"{FSID}.{RID}.log").write_text("")
        engines.append(e)
        return e

    yield make
    for e in engines:
        assert e.teardown() == []


def writes(kfile: str, *records: str) -> str:
    return "".join(f"echo '{r}' >> {kfile}; " for r in records)


def test_unexpected_error_line_fails_a_pass(engine_for, tmp_path: Path) -> None:
    k = str(tmp_path / "kmsg")
    e = engine_for({
        "ours-error": (writes(k, rec(3, f"scoutfs {OURS} error: btrfs ate my block 7"))
                       + "t_pass", ""),
        "ours-info": (writes(k, rec(6, f"scoutfs {OURS}: server ready at 127.0.0.1:1"),
                             rec(4, f"scoutfs {OURS} warning: forcing unmount"))
                      + "t_pass", ""),
        "others-error": (writes(k, rec(3, "scoutfs f.ffffff.r.eeeeee error: their problem"),
                                rec(3, "scoutfs (loop99) error: not our device"),
                                rec(3, "EXT4-fs error: not scoutfs"))
                         + "t_pass", ""),
        "ours-expected": (writes(k, rec(3, f"scoutfs {OURS} error: fencing rid 0123 at x"),
                                 rec(3, f"scoutfs {OURS} error: reclaiming orphan log trees "
                                        "for rid 1 nr 2"))
                          + "t_pass", ""),
        "ours-error-but-failed": (writes(k, rec(3, f"scoutfs {OURS} error: io"))
                                  + "t_fail 'own reason'", ""),
    })
    r = e.run_test("ours-error")
    assert r.status == FAILED and r.message == "unexpected messages in dmesg"
    assert r.extra.endswith(f"] scoutfs {OURS} error: btrfs ate my block 7")
    assert "before the test" not in r.extra
    tmp = e.results.tmp_dir("ours-error")
    assert (tmp / "dmesg.new").read_text() == r.extra + "\n"
    fail_log = (e.results.root / "fail.log").read_text()
    assert "btrfs ate my block 7" in fail_log and "unexpected messages in dmesg" in fail_log

    assert e.run_test("ours-info").status == PASSED
    after = e.results.tmp_dir("ours-info") / "dmesg.after"
    assert "server ready" in after.read_text() and "forcing unmount" in after.read_text()

    assert e.run_test("others-error").status == PASSED
    assert (e.results.tmp_dir("others-error") / "dmesg.after").read_text() == ""

    assert e.run_test("ours-expected").status == PASSED
    r = e.run_test("ours-error-but-failed")
    assert r.status == FAILED and r.message == "own reason"


def test_ours_by_ident_and_device() -> None:
    recs = [dmesg.Record(3, 1, 0, f"scoutfs {OURS} error: a"),
            dmesg.Record(3, 2, 0, "scoutfs (loop7) error: Unknown or malformed option"),
            dmesg.Record(3, 3, 0, "scoutfs (loop8) error: b"),
            dmesg.Record(3, 4, 0, "scoutfs f.0a1b2c.r.000000 error: another rid"),
            dmesg.Record(3, 5, 0, "run scoutfs test x")]
    got = dmesg.ours(recs, {OURS}, dmesg.device_names(["/dev/loop7", ""]))
    assert [r.seq for r in got] == [1, 2]


def test_parse_record() -> None:
    r = dmesg.parse_record(b"11,5432,98765432,-;scoutfs f.a.r.b error: x\n SUBSYSTEM=foo\n")
    assert r is not None and (r.level, r.seq, r.usec) == (3, 5432, 98765432)
    assert r.text == "scoutfs f.a.r.b error: x"
    assert r.line() == "[   98.765432] scoutfs f.a.r.b error: x"
    assert dmesg.parse_record(b"garbage") is None
    assert dmesg.parse_record(b"x,y,z;text") is None


def test_unreadable_kernel_log_is_skipped(tmp_path: Path) -> None:
    kl = dmesg.KernelLog(str(tmp_path / "missing"))
    kl.mark()
    assert not kl.available and kl.new() == []


@pytest.mark.skipif(os.geteuid() != 0 or not os.access("/dev/kmsg", os.R_OK | os.W_OK),
                    reason="needs root and /dev/kmsg")
def test_real_kernel_log_round_trip() -> None:
    """What fs/kmsg.py writes, harness/dmesg.py reads back at its level."""
    who = f"f.{uuid.uuid4().hex[:6]}.r.{uuid.uuid4().hex[:6]}"
    kl = dmesg.KernelLog()
    kl.mark()
    w = kmsg.KmsgWriter(who)
    assert w.write(kmsg.KERN_ERR, "harness round trip test")
    assert w.write(kmsg.KERN_INFO, "harness round trip test, info")
    got = [(r.level, r.text) for r in dmesg.ours(kl.new(), {who}, set())]
    assert got == [(3, f"scoutfs {who} error: harness round trip test"),
                   (6, f"scoutfs {who}: harness round trip test, info")]
