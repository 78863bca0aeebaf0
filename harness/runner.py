"""Running tests: the engine shared by ``run-tests.sh`` and the pytest plugin.

``Engine`` owns one results dir and one ``Cluster``; ``Engine.run_test(name)`` runs one test the
way upstream's run-tests.sh does (spec cli-and-harness §1.6-§1.9):

* a fresh ``bash -c 'for f in funcs/*.sh; do . $f; done; . tests/N.sh'`` in ``tests/`` with
  ``tests/funcs/bin`` and ``tests/src`` first in PATH, ``LC_ALL=C`` and the T_* environment;
* stdout and stderr into the same file ``output/N`` (fd 7), fd 6 = the console;
* status 100 pass, 101 skip, 102 fail, 103 permitted skip, anything else "unknown status: N";
* only a pass is compared byte for byte with ``golden/N`` (``diff -u`` into fail.log);
* then the post-test checks: every mount still mounted and answering, its daemon alive, no
  unexpected ERROR/CRITICAL/Traceback in the daemon logs; unmounted mounts are remounted;
* and upstream's dmesg check (harness/dmesg.py): a passing test that made error-level kernel
  log lines of this cluster's mounts, not dropped by ``t_filter_dmesg``, fails with
  "unexpected messages in dmesg".
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from harness import dmesg
from harness.cluster import EXPECTED_LOG_MESSAGES, REPO, Cluster, ClusterConfig, ClusterError
from harness.results import (
    FAILED,
    PASSED,
    SKIPPED,
    SKIPPED_PERMITTED,
    Results,
    TestResult,
    read_stats,
)

T_PASS, T_SKIP, T_FAIL, T_SKIP_PERMITTED = 100, 101, 102, 103


def default_tests_dir() -> Path:
    """``HARNESS_TESTS_DIR`` if set, else the repository's ``tests/``."""
    env = os.environ.get("HARNESS_TESTS_DIR")
    return Path(env).resolve() if env else REPO / "tests"


@dataclass
class RunConfig:
    """Everything one run needs besides the test list."""

    tests_dir: Path
    results: Path
    cluster: ClusterConfig
    timeout: float | None = None  # per test, seconds
    junit: Path | None = None
    console_fd: int | None = None  # fd 6 of tests; None: tmp/N/console.log
    progress: bool = True  # print one line per test
    log_filter: list[str] = field(default_factory=list)
    kmsg_path: str = dmesg.KMSG_PATH  # the kernel log read by the dmesg check


def read_log_filter(tests_dir: Path) -> list[str]:
    """Expected daemon log messages: built-ins plus ``tests/expected-log-messages`` regexes."""
    out = list(EXPECTED_LOG_MESSAGES)
    with contextlib.suppress(OSError):
        for line in (tests_dir / "expected-log-messages").read_text().splitlines():
            if line.strip() and not line.startswith("#"):
                out.append(line.strip())
    return out


def golden_diff(golden: Path, output: Path) -> str:
    """``diff -u golden output`` (empty when identical)."""
    p = subprocess.run(["diff", "-u", str(golden), str(output)], capture_output=True)
    return p.stdout.decode("utf-8", "replace")


def base_env() -> dict[str, str]:
    """The inherited environment minus every T_* variable (upstream unsets them)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("T_")}


class Engine:
    """One run: a results dir and a cluster; runs tests one at a time."""

    def __init__(self, cfg: RunConfig):
        self.cfg = cfg
        self.tests_dir = cfg.tests_dir.resolve()
        self.results = Results(cfg.results.resolve(), cfg.junit)
        self.cluster = Cluster(cfg.cluster, self.results.log)
        self.stats = read_stats(self.results.root / "last-passed-test-stats")
        self.log_filter = cfg.log_filter or read_log_filter(self.tests_dir)
        self.current: subprocess.Popen | None = None
        self.kernel_log = dmesg.KernelLog(cfg.kmsg_path)

    # -- lifecycle
    def setup(self, mount: bool = True) -> None:
        self.results.log(
            f"[== setting up cluster: {self.cluster.n} mounts, quorum {self.cluster.q} ==]"
        )
        self.cluster.setup(mount=mount)

    def teardown(self) -> list[str]:
        self.kill_current()
        return self.cluster.teardown()

    def kill_current(self) -> None:
        p = self.current
        if p is not None and p.poll() is None:
            with contextlib.suppress(OSError):
                os.killpg(p.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(10)

    # -- environment
    def test_env(self, name: str) -> dict[str, str]:
        c = self.cluster
        tmpdir = self.results.tmp_dir(name)
        env = base_env()
        env.update(c.env())
        d = [f"{m}/test/{name}" for m in c.mount_points]
        for i, p in enumerate(d):
            env[f"T_D{i}"] = p
        repo_bin = REPO / ".venv" / "bin"
        path = [str(self.tests_dir / "funcs" / "bin"), str(self.tests_dir / "src")]
        if repo_bin.is_dir():
            path.append(str(repo_bin))
        env.update(
            {
                "LC_ALL": "C",
                "PATH": ":".join(path + [os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")]),
                "T_DS": " ".join(d),
                "T_TESTS": str(self.tests_dir),
                "T_RESULTS": str(self.results.root),
                "T_EXTRA": str(self.tests_dir / "extra" / name),
                "T_TMPDIR": str(tmpdir),
                "T_TMP": str(tmpdir / "tmp"),
                "T_MSCR": str(tmpdir / "scratch"),
                "T_TRACE_DUMP": "0",
                "T_LOOP_ITER": "1",
                "T_NAME": name,
            }
        )
        return env

    # -- one test
    def run_test(self, name: str) -> TestResult:
        """Run test ``name`` and record it in every report."""
        script = self.tests_dir / "tests" / f"{name}.sh"
        out_path = self.results.output_path(name)
        tmpdir = self.results.tmp_dir(name)
        shutil.rmtree(tmpdir, ignore_errors=True)
        tmpdir.mkdir(parents=True)
        (tmpdir / "status.msg").write_text("")
        last = self.stats.get(name)
        if self.cfg.progress:
            progress(f"  {name:<30} ", end="")
        self.results.log(f"run scoutfs test {name}")

        problems: list[str] = []
        # per-test dir on mount 0
        if self.cluster.n and self.cluster.is_mounted(0):
            d0 = Path(self.cluster.mount_points[0]) / "test" / name
            try:
                shutil.rmtree(d0, ignore_errors=True)
                d0.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                problems.append(f"could not create {d0}: {e}")
        offsets = self.cluster.log_offsets()
        self.kernel_log.mark()
        if not self.cluster.fake:
            # upstream's marker in dmesg (other runs' tests may interleave theirs)
            with contextlib.suppress(OSError):
                with open(self.cfg.kmsg_path, "w") as k:
                    k.write(f"run scoutfs test {name}\n")

        start = time.monotonic()
        sts, timed_out = self._exec(name, script, out_path, tmpdir)
        duration = time.monotonic() - start
        unexpected = dmesg.check(self.kernel_log.new(), dmesg.our_idents(self.cluster.run_dir),
                                 dmesg.device_names(self.cluster.devices()), self.tests_dir,
                                 tmpdir)
        self.results.log(f"test tests/{name}.sh exited with status {sts}")

        msg = ""
        with contextlib.suppress(OSError):
            msg = (tmpdir / "status.msg").read_text().strip()
        r = TestResult(
            name=name, status=FAILED, duration=duration, exit_status=sts, output=str(out_path)
        )
        if timed_out:
            r.message = f"timed out after {self.cfg.timeout:.0f}s"
        elif not script.exists():
            r.message = f"no test script {script}"
        elif sts == T_PASS:
            golden = self.tests_dir / "golden" / name
            if not golden.exists():
                r.message = "no golden output"
            elif golden.read_bytes() != out_path.read_bytes():
                r.message = "output differs"
                r.diff = golden_diff(golden, out_path)
            elif unexpected:
                # upstream checks dmesg only for a test that passed so far
                r.message = "unexpected messages in dmesg"
                r.extra = "\n".join(unexpected)
            else:
                r.status = PASSED
        elif sts == T_SKIP:
            r.status, r.message = SKIPPED, msg
        elif sts == T_SKIP_PERMITTED:
            r.status, r.message = SKIPPED_PERMITTED, msg
        elif sts == T_FAIL:
            r.message = msg
        else:
            r.message = f"unknown status: {sts}"

        problems += self.post_checks(offsets)
        if problems:
            r.extra = "\n".join(([r.extra] if r.extra else []) + problems)
            if r.status == PASSED:
                r.status = FAILED
                r.message = "daemon check: " + problems[0].splitlines()[0]
        self.results.record(r)
        if r.status == PASSED:
            self.stats[name] = duration
        if self.cfg.progress:
            line = f"[{r.status}: {duration:.1f}s]"
            if last is not None:
                line += f" (last: {last:.1f}s)"
            if r.message:
                line += f" {r.message}"
            progress(line)
        return r

    def _exec(self, name: str, script: Path, out_path: Path, tmpdir: Path) -> tuple[int, bool]:
        env = self.test_env(name)
        console_fd = self.cfg.console_fd
        console_file = None
        if console_fd is None:
            console_file = open(tmpdir / "console.log", "wb")  # noqa: SIM115
            console_fd = console_file.fileno()
        # fd 6 = console, fd 7 = the compared output (as upstream); the console fd is passed
        # under a free number and moved to 6 by the shell itself
        cmd = f"exec 6>&{console_fd} 7>&1; for f in funcs/*.sh; do . $f; done; . tests/{name}.sh"
        timed_out = False
        with open(out_path, "wb") as out:
            try:
                self.current = subprocess.Popen(
                    ["bash", "-c", cmd],
                    cwd=self.tests_dir,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    pass_fds=(console_fd,),
                    start_new_session=True,
                )
                self.cluster.record.test_pgid = self.current.pid
                self.cluster.record.save()
                try:
                    sts = self.current.wait(self.cfg.timeout)
                except subprocess.TimeoutExpired:
                    timed_out = True
                    self.kill_current()
                    sts = -signal.SIGKILL
            finally:
                # stray background jobs of the test die with it
                if self.current is not None:
                    with contextlib.suppress(OSError):
                        os.killpg(self.current.pid, signal.SIGKILL)
                    self.cluster.record.test_pgid = 0
                    self.cluster.record.save()
                self.current = None
                if console_file:
                    console_file.close()
        return sts, timed_out

    # -- after each test
    def post_checks(self, offsets: dict[str, int]) -> list[str]:
        """Daemon/mount health and new log errors; restores unmounted mounts."""
        c = self.cluster
        problems: list[str] = []
        for i in range(c.n):
            if not c.is_mounted(i):
                self.results.log(f"mount {i} was left unmounted, remounting")
                try:
                    c.mount(i)
                except ClusterError as e:
                    problems.append(f"mount {i} could not be remounted: {e}")
                continue
            ok, why = c.answering(i)
            if not ok:
                problems.append(f"mount {i} ({c.mount_points[i]}) not answering: {why}")
                self.results.log(
                    f"mount {i} not answering ({why}), force unmounting and remounting"
                )
                c.force_umount(i)
                try:
                    c.mount(i)
                except ClusterError as e:
                    problems.append(f"mount {i} could not be remounted: {e}")
                continue
            if not c.fake and not c.daemon_pids(i):
                # it answered, so something serves it; we just could not identify the pid
                self.results.log(f"mount {i}: daemon pid not found (mount answers)")
        errors = c.new_log_errors(offsets, self.log_filter)
        if errors:
            problems.append("unexpected messages in daemon logs:\n" + "\n".join(errors))
        return problems


def progress(text: str, end: str = "\n") -> None:
    """Console progress; a closed console (``| head``) must not stop the run."""
    with contextlib.suppress(OSError, ValueError):
        print(text, end=end, flush=True)


def console_fd() -> int:
    """A duplicate of our stdout for tests' fd 6."""
    sys.stdout.flush()
    return os.dup(sys.stdout.fileno())
