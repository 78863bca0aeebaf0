"""harness.results: TAP records, JUnit XML, fail/skip logs, stats, final line, merging."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

from harness import results as hr
from harness.results import FAILED, PASSED, SKIPPED, SKIPPED_PERMITTED, Results, TestResult

DIFF = "--- golden/x\n+++ output/x\n@@ -1 +1 @@\n-expected\n+actual\n"


def sample() -> list[TestResult]:
    return [
        TestResult("p", PASSED, duration=1.25, exit_status=100),
        TestResult("s", SKIPPED, "need 3 mounts", 0.1, 101),
        TestResult("sp", SKIPPED_PERMITTED, "never works", 0.1, 103),
        TestResult("f", FAILED, "output differs", 2.0, 100, diff=DIFF),
        TestResult("u", FAILED, "unknown status: 1", 0.5, 1),
    ]


def test_tap_records() -> None:
    r = sample()
    assert hr.tap_record(1, r[0]) == "ok 1 - p\n"
    assert (
        hr.tap_record(2, r[1]) == "not ok 2 - s\n# s ** skipped **\n# status:\n# - need 3 mounts\n"
    )
    assert hr.tap_record(3, r[2]).startswith("ok 3 - sp\n# sp ** skipped - permitted **\n")
    f = hr.tap_record(4, r[3]).splitlines()
    assert f[:4] == ["not ok 4 - f", "# f ** failed **", "# status:", "# - output differs"]
    assert f[4] == "# diff:"
    assert f[5:] == ["#   " + line for line in DIFF.splitlines()]


def test_tap_header() -> None:
    h = hr.tap_header(["a", "b", "c"], {"run_id": "rid", "start": "now", "git": "g1"}).splitlines()
    assert h[0] == "TAP version 14"
    assert h[1] == "1..3"
    assert "# run id: rid" in h
    assert "# git: g1" in h
    assert all(line.startswith("#") for line in h[2:])


def test_results_dir_reports(tmp_path: Path) -> None:
    res = Results(tmp_path / "r")
    names = [r.name for r in sample()]
    res.start(names, {"run_id": "x"})
    for r in sample():
        res.record(r)
    res.finish()
    root = tmp_path / "r"
    tap = (root / "scoutfs.tap").read_text()
    assert tap.startswith("TAP version 14\n1..5\n")
    assert [line for line in tap.splitlines() if not line.startswith("#")] == [
        "TAP version 14",
        "1..5",
        "ok 1 - p",
        "not ok 2 - s",
        "ok 3 - sp",
        "not ok 4 - f",
        "not ok 5 - u",
    ]
    fail = (root / "fail.log").read_text()
    assert fail == DIFF + "f output differs\nu unknown status: 1\n"
    assert (
        root / "skip.log"
    ).read_text() == "s need 3 mounts\nsp skipped (permitted) never works \n"
    assert list(hr.read_stats(root / "last-passed-test-stats")) == ["p"]
    data = json.loads((root / "results.json").read_text())
    assert [r["name"] for r in data["results"]] == names
    assert hr.final_line(res.results) == (
        "[== all tests run: 1 passed, 1 skipped, 1 skipped (permitted), 2 failed ==]"
    )
    assert hr.exit_status(res.results) == 1
    assert hr.exit_status([sample()[0], sample()[2]]) == 0


def test_junit_parses_and_has_diff(tmp_path: Path) -> None:
    res = Results(tmp_path / "r", tmp_path / "j" / "junit.xml")
    res.start([], {})
    for r in sample():
        res.record(r)
    tree = ET.parse(tmp_path / "j" / "junit.xml")
    suite = tree.getroot().find("testsuite")
    assert suite is not None
    assert suite.get("tests") == "5"
    assert suite.get("failures") == "2"
    assert suite.get("skipped") == "2"
    cases = {c.get("name"): c for c in suite.findall("testcase")}
    f = cases["f"].find("failure")
    assert f is not None and f.get("message") == "output differs"
    assert "+actual" in (f.text or "")
    assert cases["s"].find("skipped") is not None
    assert cases["p"].find("failure") is None


def test_stats_keep_other_tests(tmp_path: Path) -> None:
    (tmp_path / "last-passed-test-stats").write_text("old 3.0s\n")
    res = Results(tmp_path)
    res.start(["new"], {})
    res.record(TestResult("new", PASSED, duration=2.0))
    assert hr.read_stats(tmp_path / "last-passed-test-stats") == {"old": 3.0, "new": 2.0}


def test_merge_results(tmp_path: Path) -> None:
    a, b = Results(tmp_path / "a"), Results(tmp_path / "b")
    rs = sample()
    a.start(["p", "s"], {})
    b.start(["sp", "f", "u"], {})
    for r in rs[:2]:
        a.record(r)
    for r in rs[2:]:
        b.record(r)
    (tmp_path / "b" / "output" / "f").write_text("actual\n")
    m = hr.merge_results(tmp_path / "m", [tmp_path / "a", tmp_path / "b"])
    assert [r.name for r in m.results] == ["p", "s", "sp", "f", "u"]
    out = tmp_path / "m"
    assert (out / "output" / "f").read_text() == "actual\n"
    assert "f output differs" in (out / "fail.log").read_text()
    tap = (out / "scoutfs.tap").read_text()
    assert "1..5" in tap and "not ok 5 - u" in tap
    ET.parse(out / "junit.xml")
    assert (
        "1 passed, 1 skipped, 1 skipped (permitted), 2 failed" in (out / "summary.txt").read_text()
    )
