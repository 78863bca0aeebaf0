"""pytest plugin: the golden tests of ``tests/sequence`` as pytest items.

Each sequence entry becomes an item ``tests/sequence::NAME`` run through the same ``Engine`` as
``run-tests.sh``.  Collected when ``tests/sequence`` is named on the command line (or with
``--golden``); ``-k`` selects as usual.  Every process (each pytest-xdist worker) builds its own
isolated cluster lazily at its first golden item and tears it down at session end, even after
failures or Ctrl-C.  Results of a process go to ``<--golden-results>/<worker id>``.

Options: ``--golden``, ``--golden-tests-dir``, ``--golden-results``, ``--golden-mounts``,
``--golden-quorum``, ``--golden-timeout``, ``--golden-shard K/N``.
"""

from __future__ import annotations

import atexit
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness import selection
from harness.cluster import DEFAULT_NR_MOUNTS, REPO, ClusterConfig
from harness.results import FAILED, SKIPPED, SKIPPED_PERMITTED, TestResult
from harness.runner import Engine, RunConfig, default_tests_dir


def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("scoutfs-golden", "scoutfs golden-output tests")
    g.addoption("--golden", action="store_true", help="collect the golden tests of tests/sequence")
    g.addoption(
        "--golden-tests-dir", metavar="DIR", help="tests dir (default tests/ or $HARNESS_TESTS_DIR)"
    )
    g.addoption("--golden-results", metavar="DIR", help="results root (default results/pytest)")
    g.addoption("--golden-mounts", type=int, default=DEFAULT_NR_MOUNTS, help="mounts per cluster")
    g.addoption("--golden-quorum", type=int, help="quorum members (default min(mounts,3))")
    g.addoption("--golden-timeout", type=float, default=1800.0, help="per-test timeout (s)")
    g.addoption("--golden-shard", metavar="K/N", help="only shard K of N of the golden tests")


def _tests_dir(config: pytest.Config) -> Path:
    d = config.getoption("golden_tests_dir")
    return Path(d).resolve() if d else default_tests_dir()


class GoldenState:
    """The per-process engine, created at the first golden item."""

    fake_cluster = False
    """Plain-directory mounts (``ClusterConfig(fake=True)``): set from Python only, by the
    harness's unit tests; no option or environment variable selects it."""

    def __init__(self, config: pytest.Config):
        self.config = config
        self.engine: Engine | None = None
        self.error: str | None = None
        worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
        root = config.getoption("golden_results")
        self.results = (Path(root) if root else REPO / "results" / "pytest").resolve() / worker

    def get(self) -> Engine:
        if self.error:
            pytest.fail(f"golden cluster setup failed earlier: {self.error}", pytrace=False)
        if self.engine is None:
            c = self.config
            ccfg = ClusterConfig(
                results=self.results,
                nr_mounts=c.getoption("golden_mounts"),
                quorum=c.getoption("golden_quorum"),
                fake=self.fake_cluster,
            )
            engine = Engine(
                RunConfig(
                    tests_dir=_tests_dir(c),
                    results=self.results,
                    cluster=ccfg,
                    timeout=c.getoption("golden_timeout") or None,
                    progress=False,
                )
            )
            self.engine = engine
            if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
                signal.signal(signal.SIGTERM, _sigterm)
            atexit.register(self.teardown)
            try:
                engine.setup()
            except Exception as e:  # noqa: BLE001 - reported on every item
                self.error = str(e)
                pytest.fail(f"golden cluster setup failed: {e}", pytrace=False)
            engine.results.start([], {"run_id": os.urandom(8).hex(), "pytest": True})
        return self.engine

    def teardown(self) -> None:
        e, self.engine = self.engine, None
        if e is None:
            return
        e.results.finish()
        for pr in e.teardown():
            print(f"[== teardown: {pr} ==]")


def _sigterm(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt("SIGTERM")


_STATE_KEY = pytest.StashKey[GoldenState]()


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_STATE_KEY] = GoldenState(config)
    if config.getoption("golden"):
        seq = str(_tests_dir(config) / "sequence")
        if seq not in config.args:
            config.args.append(seq)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    state = session.config.stash.get(_STATE_KEY, None)
    if state is not None:
        state.teardown()


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    if file_path.resolve() == (_tests_dir(parent.config) / "sequence").resolve():
        return SequenceFile.from_parent(parent, path=file_path)
    return None


class SequenceFile(pytest.File):
    """``tests/sequence``: one item per selected entry."""

    def collect(self) -> Iterator[GoldenItem]:
        names = selection.select_tests(
            Path(self.path).parent,
            shard_spec=self.config.getoption("golden_shard"),
            durations=selection.load_durations(Path(self.path).parent / "durations"),
        )
        for name in names:
            yield GoldenItem.from_parent(self, name=name)


class GoldenFailure(Exception):
    """A golden test failed; carries its result."""

    def __init__(self, result: TestResult):
        super().__init__(result.message)
        self.result = result


class GoldenItem(pytest.Item):
    """One golden test."""

    def runtest(self) -> None:
        state = self.config.stash[_STATE_KEY]
        r = state.get().run_test(self.name)
        self.user_properties.append(("output", r.output))
        if r.status == SKIPPED:
            pytest.skip(r.message or "skipped")
        if r.status == SKIPPED_PERMITTED:
            pytest.skip(f"(permitted) {r.message}")
        if r.status == FAILED:
            raise GoldenFailure(r)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str:
        if isinstance(excinfo.value, GoldenFailure):
            r = excinfo.value.result
            parts = [f"{r.name}: failed: {r.message}"]
            if r.diff:
                parts.append(r.diff.rstrip("\n"))
            if r.extra:
                parts.append(r.extra.rstrip("\n"))
            parts.append(f"output: {r.output}")
            return "\n".join(parts)
        return str(super().repr_failure(excinfo))

    def reportinfo(self) -> tuple[Path, int | None, str]:
        return Path(self.path), None, f"golden: {self.name}"
