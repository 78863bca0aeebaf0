"""Results directory and reports: run.log, fail.log, skip.log, TAP, JUnit XML, summary.

Layout (spec cli-and-harness §1.11)::

    <results>/run.log fail.log skip.log scoutfs.tap junit.xml last-passed-test-stats
              results.json            machine-readable record of the run (merge, bless)
              output/<N>              captured stdout+stderr of the last run of N
              tmp/<N>/                wiped at the start of each run of N

``merge_results`` combines the results dirs of several shards into one report.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import subprocess
import threading
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tabulate import tabulate

PASSED = "passed"
SKIPPED = "skipped"
SKIPPED_PERMITTED = "skipped (permitted)"
FAILED = "failed"


@dataclass
class TestResult:
    """The outcome of one run of one test."""

    __test__ = False  # not a pytest test class

    name: str
    status: str  # PASSED, SKIPPED, SKIPPED_PERMITTED or FAILED
    message: str = ""
    duration: float = 0.0
    exit_status: int | None = None
    diff: str = ""  # golden diff (diff -u) when the output differs
    extra: str = ""  # other failure detail: daemon log lines, dead mounts
    output: str = ""  # path of the captured output

    def status_line(self) -> str:
        """The console/summary status text, e.g. ``failed: output differs``."""
        return f"{self.status}: {self.message}" if self.message else self.status


def now_stamp() -> str:
    """UTC timestamp used in run.log."""
    return _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Results:
    """Writer of one results directory."""

    def __init__(self, root: Path, junit_path: Path | None = None):
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "output").mkdir(exist_ok=True)
        (self.root / "tmp").mkdir(exist_ok=True)
        self.junit_path = junit_path or self.root / "junit.xml"
        self.results: list[TestResult] = []
        self.meta: dict[str, object] = {}
        self._lock = threading.Lock()
        self._tap_nr = 0

    # -- paths
    def output_path(self, name: str) -> Path:
        return self.root / "output" / name

    def tmp_dir(self, name: str) -> Path:
        return self.root / "tmp" / name

    # -- run.log
    def log(self, msg: str) -> None:
        """Append a timestamped line (or block) to run.log."""
        with self._lock, open(self.root / "run.log", "a") as f:
            for line in msg.rstrip("\n").splitlines() or [""]:
                f.write(f"[{now_stamp()}] {line}\n")

    # -- start of a run
    def start(self, names: list[str], meta: dict[str, object]) -> None:
        """Truncate fail.log/skip.log, write the TAP header and remember run metadata."""
        self.meta = dict(meta)
        self.meta.setdefault("start", now_stamp())
        self.meta["tests"] = list(names)
        for f in ("fail.log", "skip.log"):
            (self.root / f).write_text("")
        self.results = []
        self._tap_nr = 0
        (self.root / "scoutfs.tap").write_text(tap_header(names, self.meta))
        self._write_json()

    def record(self, r: TestResult) -> None:
        """Record a finished test in every report."""
        self.results.append(r)
        if r.status == FAILED:
            with open(self.root / "fail.log", "a") as f:
                if r.diff:
                    f.write(r.diff if r.diff.endswith("\n") else r.diff + "\n")
                if r.extra:
                    f.write(r.extra if r.extra.endswith("\n") else r.extra + "\n")
                f.write(f"{r.name} {r.message}\n")
        elif r.status == SKIPPED:
            with open(self.root / "skip.log", "a") as f:
                f.write(f"{r.name} {r.message}\n")
        elif r.status == SKIPPED_PERMITTED:
            with open(self.root / "skip.log", "a") as f:
                f.write(f"{r.name} skipped (permitted) {r.message} \n")
        if r.status == PASSED:
            self._update_stats(r.name, r.duration)
        self._tap_nr += 1
        with open(self.root / "scoutfs.tap", "a") as f:
            f.write(tap_record(self._tap_nr, r))
        self._write_json()
        write_junit(self.junit_path, self.results, self.meta)

    def _update_stats(self, name: str, secs: float) -> None:
        path = self.root / "last-passed-test-stats"
        stats = read_stats(path)
        stats[name] = secs
        write_stats(path, stats)

    def _write_json(self) -> None:
        data = {"meta": self.meta, "results": [asdict(r) for r in self.results]}
        tmp = self.root / "results.json.tmp"
        tmp.write_text(json.dumps(data, indent=1))
        os.replace(tmp, self.root / "results.json")

    def finish(self) -> None:
        """Write the final reports (JUnit, results.json)."""
        self.meta["end"] = now_stamp()
        self._write_json()
        write_junit(self.junit_path, self.results, self.meta)

    # -- summary
    def counts(self) -> dict[str, int]:
        return counts(self.results)

    def summary_table(self) -> str:
        return summary_table(self.results)


def read_stats(path: Path) -> dict[str, float]:
    """Read ``NAME <secs>s`` lines."""
    from harness.selection import parse_durations

    try:
        return parse_durations(path.read_text())
    except OSError:
        return {}


def write_stats(path: Path, stats: dict[str, float]) -> None:
    """Rewrite a stats file via ``.tmp`` + rename."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(f"{n} {s:.1f}s\n" for n, s in stats.items()))
    os.replace(tmp, path)


def counts(results: list[TestResult]) -> dict[str, int]:
    c = {PASSED: 0, SKIPPED: 0, SKIPPED_PERMITTED: 0, FAILED: 0}
    for r in results:
        c[r.status] += 1
    return c


def final_line(results: list[TestResult]) -> str:
    """``[== all tests run: P passed, S skipped, SP skipped (permitted), F failed ==]``."""
    c = counts(results)
    return (
        f"[== all tests run: {c[PASSED]} passed, {c[SKIPPED]} skipped, "
        f"{c[SKIPPED_PERMITTED]} skipped (permitted), {c[FAILED]} failed ==]"
    )


def exit_status(results: list[TestResult]) -> int:
    """0 only when nothing was skipped (non-permitted) or failed."""
    c = counts(results)
    return 0 if c[SKIPPED] == 0 and c[FAILED] == 0 else 1


def summary_table(results: list[TestResult]) -> str:
    rows = [(r.name, r.status, f"{r.duration:.1f}s", r.message) for r in results]
    return tabulate(rows, headers=["test", "status", "time", "message"], tablefmt="simple")


# -- TAP -------------------------------------------------------------------------------------


def _git_describe() -> str:
    try:
        out = subprocess.run(
            ["git", "describe", "--tags", "--always"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).resolve().parent,
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def tap_header(names: list[str], meta: dict[str, object]) -> str:
    """TAP v14 header: version, plan, then a comment block describing the run."""
    lines = ["TAP version 14", f"1..{len(names)}", "#"]
    lines.append(f"# run id: {meta.get('run_id', '')}")
    lines.append(f"# host: {platform.node()}")
    lines.append(f"# start: {meta.get('start', now_stamp())}")
    lines.append(f"# uname: {platform.release()}")
    lines.append(f"# git: {meta.get('git') or _git_describe()}")
    if meta.get("shard"):
        lines.append(f"# shard: {meta['shard']}")
    lines.append("#")
    lines.append("# sequence:")
    width = max((len(n) for n in names), default=0) + 6
    per_row = max(1, 96 // max(width, 1))
    for i in range(0, len(names), per_row):
        row = names[i : i + per_row]
        cells = [f"{i + j + 1:3d} {n}".ljust(width) for j, n in enumerate(row)]
        lines.append("#  " + "".join(cells).rstrip())
    lines.append("#")
    return "\n".join(lines) + "\n"


def tap_record(nr: int, r: TestResult) -> str:
    """One TAP record (spec §2.5)."""
    if r.status == PASSED:
        return f"ok {nr} - {r.name}\n"
    if r.status == SKIPPED_PERMITTED:
        out = [f"ok {nr} - {r.name}", f"# {r.name} ** skipped - permitted **"]
    else:
        kind = "skipped" if r.status == SKIPPED else "failed"
        out = [f"not ok {nr} - {r.name}", f"# {r.name} ** {kind} **"]
    if r.message:
        out.append("# status:")
        out.extend(f"# - {line}" for line in r.message.splitlines())
    if r.diff:
        out.append("# diff:")
        out.extend(f"#   {line}" for line in r.diff.rstrip("\n").splitlines())
    if r.extra:
        out.append("# daemon:")
        out.extend(f"#   {line}" for line in r.extra.rstrip("\n").splitlines())
    return "\n".join(out) + "\n"


# -- JUnit -----------------------------------------------------------------------------------


def _clean_xml(text: str) -> str:
    return "".join(c if c in "\t\n\r" or ord(c) >= 0x20 else f"\\x{ord(c):02x}" for c in text)


def junit_tree(results: list[TestResult], meta: dict[str, object]) -> ET.ElementTree:
    c = counts(results)
    total = sum(r.duration for r in results)
    suites = ET.Element("testsuites")
    suite = ET.SubElement(
        suites,
        "testsuite",
        name="scoutfs",
        tests=str(len(results)),
        failures=str(c[FAILED]),
        errors="0",
        skipped=str(c[SKIPPED] + c[SKIPPED_PERMITTED]),
        time=f"{total:.3f}",
        timestamp=str(meta.get("start", "")),
        hostname=platform.node(),
    )
    for r in results:
        tc = ET.SubElement(
            suite, "testcase", classname="scoutfs.golden", name=r.name, time=f"{r.duration:.3f}"
        )
        if r.status == FAILED:
            body = "\n".join(x for x in (r.diff, r.extra) if x)
            f = ET.SubElement(tc, "failure", message=_clean_xml(r.message or "failed"))
            f.text = _clean_xml(body)
        elif r.status in (SKIPPED, SKIPPED_PERMITTED):
            msg = r.message if r.status == SKIPPED else f"(permitted) {r.message}"
            ET.SubElement(tc, "skipped", message=_clean_xml(msg))
        if r.output:
            try:
                out = Path(r.output).read_bytes()[-65536:].decode("utf-8", "replace")
            except OSError:
                out = ""
            if out:
                ET.SubElement(tc, "system-out").text = _clean_xml(out)
    return ET.ElementTree(suites)


def write_junit(path: Path, results: list[TestResult], meta: dict[str, object]) -> None:
    tree = junit_tree(results, meta)
    ET.indent(tree)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tree.write(tmp, encoding="utf-8", xml_declaration=True)
    os.replace(tmp, path)


# -- loading and merging ---------------------------------------------------------------------


def load_results(root: Path) -> tuple[dict[str, object], list[TestResult]]:
    """Read ``results.json`` of a results dir."""
    data = json.loads((root / "results.json").read_text())
    return data.get("meta", {}), [TestResult(**r) for r in data.get("results", [])]


@dataclass
class Merged:
    meta: dict[str, object] = field(default_factory=dict)
    results: list[TestResult] = field(default_factory=list)


def merge_results(out: Path, dirs: list[Path], junit_path: Path | None = None) -> Merged:
    """Merge the results dirs of several shards into ``out``: outputs, TAP (renumbered),
    JUnit, fail.log, skip.log, last-passed-test-stats, results.json and summary.txt."""
    merged = Merged(meta={"merged_from": [str(d) for d in dirs], "start": now_stamp()})
    res = Results(out, junit_path)
    fail_parts: list[str] = []
    skip_parts: list[str] = []
    stats: dict[str, float] = read_stats(out / "last-passed-test-stats")
    for d in dirs:
        meta, results = load_results(d)
        merged.results.extend(results)
        for r in results:
            src = d / "output" / r.name
            if src.exists():
                dst = out / "output" / r.name
                dst.write_bytes(src.read_bytes())
                r.output = str(dst)
        for name, parts in (("fail.log", fail_parts), ("skip.log", skip_parts)):
            try:
                parts.append((d / name).read_text())
            except OSError:
                pass
        stats.update(read_stats(d / "last-passed-test-stats"))
    names = [r.name for r in merged.results]
    res.start(names, merged.meta)
    for r in merged.results:
        res.record(r)
    # the shard logs are complete; keep them verbatim rather than regenerated
    (out / "fail.log").write_text("".join(fail_parts))
    (out / "skip.log").write_text("".join(skip_parts))
    write_stats(out / "last-passed-test-stats", stats)
    res.finish()
    (out / "summary.txt").write_text(
        summary_table(merged.results) + "\n" + final_line(merged.results) + "\n"
    )
    return merged
