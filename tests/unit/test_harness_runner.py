"""harness.runner and harness.cli on a fake cluster (mounts are plain directories): statuses,
golden comparison, capture order, the T_* environment, daemon-log checks, timeouts, exit codes,
bless, and the pytest plugin's golden items.

The fake cluster is a Python-only test double (``ClusterConfig(fake=True)``, reached through
``harness.cli.main(argv, fake_cluster=True)`` and ``GoldenState.fake_cluster``); no command-line
option or environment variable selects it, which the last test checks."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import cli
from harness.cluster import Cluster, ClusterConfig
from harness.results import FAILED, PASSED, SKIPPED, SKIPPED_PERMITTED
from harness.runner import Engine, RunConfig

REPO = Path(__file__).resolve().parents[2]

EXEC_SH = """
t_status_msg() { echo "$*" > "$T_TMPDIR/status.msg"; }
t_pass() { exit 100; }
t_skip() { t_status_msg "$@"; exit 101; }
t_fail() { t_status_msg "$@"; exit 102; }
t_skip_permitted() { t_status_msg "$@"; exit 103; }
"""


def make_tests_dir(root: Path, tests: dict[str, tuple[str, str | None]]) -> Path:
    """A throwaway tests dir: {name: (script body, golden or None)}."""
    for d in ("funcs/bin", "src", "tests", "golden"):
        (root / d).mkdir(parents=True, exist_ok=True)
    (root / "funcs" / "exec.sh").write_text(EXEC_SH)
    (root / "funcs" / "other.sh").write_text("t_other() { echo other-func; }\n")
    (root / "funcs" / "bin" / "mytool").write_text("#!/bin/sh\necho funcs-bin-tool\n")
    (root / "funcs" / "bin" / "mytool").chmod(0o755)
    seq = ["# header comment"]
    for name, (body, golden) in tests.items():
        (root / "tests" / f"{name}.sh").write_text(body)
        if golden is not None:
            (root / "golden" / name).write_text(golden)
        seq.append(f"{name}.sh")
    (root / "sequence").write_text("\n".join(seq) + "\n")
    return root


@pytest.fixture
def engine_for(tmp_path: Path) -> Iterator:
    engines: list[Engine] = []

    def make(tests: dict[str, tuple[str, str | None]], timeout: float | None = 30) -> Engine:
        tdir = make_tests_dir(tmp_path / "t", tests)
        res = tmp_path / "res"
        e = Engine(
            RunConfig(
                tests_dir=tdir,
                results=res,
                cluster=ClusterConfig(results=res, fake=True),
                timeout=timeout,
                progress=False,
            )
        )
        e.setup()
        e.results.start(list(tests), {})
        engines.append(e)
        return e

    yield make
    for e in engines:
        assert e.teardown() == []


def test_statuses(engine_for) -> None:
    e = engine_for(
        {
            "pass": ("echo hi; t_pass", "hi\n"),
            "skip": ('t_skip "needs 3 mounts"', None),
            "fail": ('echo partial; t_fail "went wrong"', None),
            "permitted": ('t_skip_permitted "never works"', None),
            "falloff": ("true", None),
            "exit1": ("echo x; exit 1", "x\n"),
            "nogolden": ("t_pass", None),
        }
    )
    got = {
        n: e.run_test(n)
        for n in ["pass", "skip", "fail", "permitted", "falloff", "exit1", "nogolden"]
    }
    assert got["pass"].status == PASSED
    assert (got["skip"].status, got["skip"].message) == (SKIPPED, "needs 3 mounts")
    assert (got["fail"].status, got["fail"].message) == (FAILED, "went wrong")
    assert (got["permitted"].status, got["permitted"].message) == (SKIPPED_PERMITTED, "never works")
    assert (got["falloff"].status, got["falloff"].message) == (FAILED, "unknown status: 0")
    assert (got["exit1"].status, got["exit1"].message) == (FAILED, "unknown status: 1")
    assert (got["nogolden"].status, got["nogolden"].message) == (FAILED, "no golden output")
    root = e.results.root
    assert (root / "output" / "fail").read_text() == "partial\n"
    assert "fail went wrong\n" in (root / "fail.log").read_text()
    assert (root / "skip.log").read_text() == (
        "skip needs 3 mounts\npermitted skipped (permitted) never works \n"
    )
    assert "test tests/exit1.sh exited with status 1" in (root / "run.log").read_text()


def test_golden_diff_on_mismatch_only_for_pass(engine_for) -> None:
    e = engine_for(
        {
            "differs": ("echo actual; echo same; t_pass", "expected\nsame\n"),
            "trailing": ("echo 'a '; t_pass", "a\n"),
            "failed": ('echo actual; t_fail "boom"', "expected\n"),
        }
    )
    r = e.run_test("differs")
    assert (r.status, r.message) == (FAILED, "output differs")
    assert "-expected\n+actual\n same\n" in r.diff
    assert r.diff in (e.results.root / "fail.log").read_text()
    r = e.run_test("trailing")  # byte exact: a trailing space differs
    assert r.message == "output differs"
    r = e.run_test("failed")  # no comparison unless passed
    assert (r.message, r.diff) == ("boom", "")


def test_capture_order_and_funcs(engine_for) -> None:
    body = (
        "echo one; echo two >&2; echo three; ls /nonexistent-x 2>&1 | sed 's/.*/err-line/'; "
        "echo four >&2; t_other; mytool; echo to-console >&6; echo to-out >&7; t_pass"
    )
    e = engine_for({"order": (body, None)})
    e.run_test("order")
    out = (e.results.root / "output" / "order").read_text()
    assert out == "one\ntwo\nthree\nerr-line\nfour\nother-func\nfuncs-bin-tool\nto-out\n"
    console = (e.results.root / "tmp" / "order" / "console.log").read_text()
    assert console == "to-console\n"


def test_environment(engine_for) -> None:
    body = (
        'echo "cwd=$(basename $PWD) lc=$LC_ALL n=$T_NR_MOUNTS q=$T_QUORUM"\n'
        "for v in T_M0 T_D0 T_O0 T_MB0 T_DB0 T_MS T_DS T_OS T_MBS T_DBS T_META_DEVICE "
        "T_DATA_DEVICE T_EX_META_DEV T_EX_DATA_DEV T_TMPDIR T_TMP T_MSCR T_EXTRA T_RESULTS "
        "T_TESTS T_TEST_PORT T_SCRATCH_PORT T_DEV_PORT T_FENCED_LOG T_MNT_ROOT T_SYSFS_ROOT "
        'T_RUN_DIR SCOUTFS_RUN_DIR; do [ -n "${!v}" ] || echo "missing $v"; done\n'
        '[ "$T_D0" = "$T_M0/test/env" ] && echo d0-ok\n'
        '[ -d "$T_D0" ] && echo d0-exists\n'
        '[ -e "$T_D0/old" ] && echo stale-test-dir\n'
        '[ -d "$T_TMPDIR" ] && [ ! -e "$T_TMPDIR/leftover" ] && echo tmp-clean\n'
        'touch "$T_TMPDIR/leftover" "$T_D0/old"\n'
        '[ "$T_TMP" = "$T_TMPDIR/tmp" ] && echo tmp-prefix\n'
        '[ "$T_INHERITED" = "" ] && echo no-inherited\n'
        'echo "$T_O0" | grep -q "^-o metadev_path=.*,quorum_slot_nr=0$" && echo opts-ok\n'
        "t_pass\n"
    )
    want = "cwd=t lc=C n=3 q=3\nd0-ok\nd0-exists\ntmp-clean\ntmp-prefix\nno-inherited\nopts-ok\n"
    os.environ["T_INHERITED"] = "leak"
    try:
        e = engine_for({"env": (body, want)})
        r1 = e.run_test("env")
        r2 = e.run_test("env")  # T_TMPDIR wiped and the test dir recreated between runs
    finally:
        del os.environ["T_INHERITED"]
    assert (r1.status, r1.diff) == (PASSED, "")
    assert (r2.status, r2.diff) == (PASSED, "")


def test_daemon_log_errors_fail_a_pass(engine_for) -> None:
    e = engine_for(
        {
            "logs-error": (
                'echo "12:00 ERROR something broke" >> "$T_RUN_DIR/log/d.log"; t_pass',
                "",
            ),
            "logs-expected": (
                'echo "ERROR forced unmount of x" >> "$T_RUN_DIR/log/d.log"; t_pass',
                "",
            ),
            "logs-info": ('echo "INFO all fine" >> "$T_RUN_DIR/log/d.log"; t_pass', ""),
            "logs-tb": (
                'printf "Traceback (most recent call last):\\n  File x\\nValueError\\n" '
                '>> "$T_RUN_DIR/log/e.log"; t_pass',
                "",
            ),
        }
    )
    r = e.run_test("logs-error")
    assert r.status == FAILED and r.message.startswith("daemon check")
    assert "ERROR something broke" in r.extra
    assert e.run_test("logs-expected").status == PASSED  # filtered, and old lines not rechecked
    assert e.run_test("logs-info").status == PASSED
    r = e.run_test("logs-tb")
    assert r.status == FAILED and "File x" in r.extra


def test_timeout_kills_test_and_children(engine_for) -> None:
    e = engine_for({"hang": ("sleep 300 & sleep 301; t_pass", "")}, timeout=1)
    r = e.run_test("hang")
    assert r.status == FAILED and r.message == "timed out after 1s"
    assert r.duration < 20
    # the killed children may take a moment to go: wait for them, boundedly
    deadline = time.monotonic() + 10
    while True:
        ps = subprocess.run(["pgrep", "-f", "sleep 30[01]"], capture_output=True, text=True)
        if ps.stdout.strip() == "" or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert ps.stdout.strip() == ""


def test_cli_end_to_end_exit_codes(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    tdir = make_tests_dir(
        tmp_path / "t",
        {
            "good": ("echo good; t_pass", "good\n"),
            "permitted": ('t_skip_permitted "ok"', None),
            "bad": ("echo bad; t_pass", "expected\n"),
        },
    )

    def run(*args: str) -> subprocess.CompletedProcess:
        # in-process, on a fake cluster; capfd also catches fd-level output (diff, tests' fd 6)
        capfd.readouterr()
        argv = ["--tests-dir", str(tdir), "-r", str(tmp_path / "r"), *args]
        rc = cli.main(argv, fake_cluster=True)
        out, err = capfd.readouterr()
        return subprocess.CompletedProcess(argv, rc, out, err)

    p = run("-I", "good|permitted")
    assert p.returncode == 0, p.stdout + p.stderr
    assert p.stdout.splitlines()[-2] == (
        "[== all tests run: 1 passed, 0 skipped, 1 skipped (permitted), 0 failed ==]"
    )
    assert "  good" in p.stdout and "[passed:" in p.stdout
    assert "(fake cluster)" in p.stdout
    p = run()
    assert p.returncode == 1
    assert "[== all tests run: 1 passed, 0 skipped, 1 skipped (permitted), 1 failed ==]" in p.stdout
    assert (tmp_path / "r" / "junit.xml").exists()
    p = run("-E", ".*")
    assert p.returncode == 1 and "no tests selected, exiting" in p.stderr
    p = run("-h")
    assert p.returncode == 1 and "--bless" in p.stdout
    # bless the differing output, then it passes
    p = run("--bless", "bad")
    assert p.returncode == 0 and "+bad" in p.stdout
    assert (tdir / "golden" / "bad").read_text() == "bad\n"
    assert run("-I", "bad").returncode == 0
    assert not (tmp_path / "r" / "cleanup.json").exists()


FAKE_GOLDEN_PLUGIN = """\
from harness.pytest_plugin import GoldenState

GoldenState.fake_cluster = True
"""


def test_pytest_plugin_golden_items(tmp_path: Path) -> None:
    tdir = make_tests_dir(
        tmp_path / "tests",
        {
            "alpha": ("echo alpha; t_pass", "alpha\n"),
            "beta": ("echo beta; t_pass", "not beta\n"),
            "gamma": ('t_skip "no"', None),
        },
    )
    # the fake cluster comes from a test-only plugin module, loaded with -p
    plugdir = tmp_path / "plugins"
    plugdir.mkdir()
    (plugdir / "golden_fake_cluster.py").write_text(FAKE_GOLDEN_PLUGIN)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(plugdir)])}
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "harness.pytest_plugin",
            "-p",
            "golden_fake_cluster",
            "--golden-tests-dir",
            str(tdir),
            "--golden-results",
            str(tmp_path / "res"),
            "-p",
            "no:cacheprovider",
            "-rA",
            "tests/sequence",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    out = p.stdout
    assert p.returncode == 1, out
    (log,) = (tmp_path / "res").glob("*/run.log")  # <results>/<worker id>/run.log
    assert "fake cluster: mounts are plain directories" in log.read_text()
    assert "PASSED tests/sequence::alpha" in out
    assert "FAILED tests/sequence::beta" in out
    assert "SKIPPED [1] tests/sequence: no" in out or "SKIPPED" in out
    assert "-not beta" in out and "+beta" in out
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "harness.pytest_plugin",
            "-p",
            "golden_fake_cluster",
            "--golden-tests-dir",
            str(tdir),
            "--golden-results",
            str(tmp_path / "res"),
            "-p",
            "no:cacheprovider",
            "-q",
            "tests/sequence",
            "-k",
            "alpha",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert p.returncode == 0 and "1 passed, 2 deselected" in p.stdout, p.stdout


def test_no_fake_cluster_from_cli_or_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HARNESS_FAKE_CLUSTER", "1")
    assert Cluster(ClusterConfig(results=tmp_path), lambda m: None).fake is False
    with pytest.raises(SystemExit) as e:
        cli.main(["--fake-cluster", "--list"])
    assert e.value.code == 2
    assert "unrecognized arguments: --fake-cluster" in capfd.readouterr().err
    # the front end and the pytest plugin refuse their old switches too (no cluster is built:
    # --list and --collect-only exit before any setup)
    env = {**os.environ, "HARNESS_NO_BOOTSTRAP": "1"}
    p = subprocess.run(
        [str(REPO / "run-tests.sh"), "--fake-cluster", "--list"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert p.returncode == 2 and "unrecognized arguments: --fake-cluster" in p.stderr, p.stderr
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "harness.pytest_plugin",
            "-p",
            "no:cacheprovider",
            "--golden-fake",
            "--collect-only",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={**env, "PYTHONPATH": str(REPO)},
    )
    assert p.returncode == 4 and "unrecognized arguments: --golden-fake" in p.stderr, p.stderr
