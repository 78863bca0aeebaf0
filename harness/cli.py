"""``run-tests.sh`` command line: upstream's options plus --bless, --shard, --merge-results,
--junit and --cleanup; builds a cluster, runs the selected tests, reports and tears down.

Run ``./run-tests.sh -h`` for the options.  With no arguments it makes sparse images, loop
devices, the filesystem and ``DEFAULT_NR_MOUNTS`` mounts, runs every test in tests/sequence,
prints a summary and tears everything down.  Exit status 0 only when nothing failed or was
skipped (permitted skips are fine).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from harness import selection
from harness.cluster import (
    DEFAULT_NR_MOUNTS,
    ClusterConfig,
    ClusterError,
    scoutfs_cmd,
    teardown_instructions,
)
from harness.devices import CleanupRecord, cleanup_from_record, run_cmd
from harness.results import (
    FAILED,
    final_line,
    load_results,
    merge_results,
    summary_table,
)
from harness.results import exit_status as results_exit_status
from harness.runner import Engine, RunConfig, console_fd, default_tests_dir

IGNORED_FLAGS = ["-i", "-F", "-P", "-s"]
IGNORED_WITH_ARG = ["-t", "-T", "-X", "-x", "-y", "-z"]


class Interrupted(Exception):
    """SIGINT or SIGTERM arrived."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def out(text: str = "") -> None:
    """Print to the console; a closed console (``| head``) must not stop the run."""
    with contextlib.suppress(OSError, ValueError):
        print(text, flush=True)


def say(msg: str) -> None:
    out(f"[== {msg} ==]")


def die(msg: str) -> int:
    print(f"[== {msg}, exiting ==]", file=sys.stderr, flush=True)
    return 1


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="run-tests.sh",
        add_help=False,
        description="Run the scoutfs golden-output tests on a local cluster of FUSE mounts.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=(
            "With no arguments: sparse images + loop devices under the results dir, mkfs,\n"
            f"{DEFAULT_NR_MOUNTS} mount(s), every test of tests/sequence, summary, teardown.\n"
            "Ignored (accepted for compatibility): -i -F -P -s -t -T -X -x -y -z."
        ),
    )
    a = p.add_argument
    a(
        "-a",
        dest="abort",
        action="store_true",
        help="abort after the first failure, leave the cluster up",
    )
    a("-D", dest="data_dev", metavar="DEV", help="main data device (default: a sparse image)")
    a("-M", dest="meta_dev", metavar="DEV", help="main metadata device (default: a sparse image)")
    a("-e", dest="ex_data_dev", metavar="DEV", help="scratch data device (default: a sparse image)")
    a(
        "-f",
        dest="ex_meta_dev",
        metavar="DEV",
        help="scratch metadata device (default: a sparse image)",
    )
    a(
        "-E",
        dest="excludes",
        metavar="RE",
        action="append",
        default=[],
        help="exclude tests matching (repeatable)",
    )
    a(
        "-I",
        dest="includes",
        metavar="RE",
        action="append",
        default=[],
        help="only tests matching (repeatable)",
    )
    a(
        "-l",
        dest="loops",
        metavar="N",
        type=int,
        default=1,
        help="run the selected list N times (forces -a)",
    )
    a(
        "-m",
        dest="mkfs",
        action="store_true",
        help="mkfs before mounting (always with created images)",
    )
    a(
        "-n",
        dest="nr_mounts",
        metavar="N",
        type=int,
        default=DEFAULT_NR_MOUNTS,
        help=f"number of mounts, 1..8 (default {DEFAULT_NR_MOUNTS})",
    )
    a(
        "-o",
        dest="mount_opts",
        metavar="OPTS",
        action="append",
        default=[],
        help="append to every mount's options (repeatable)",
    )
    a(
        "-p",
        dest="prepare",
        action="store_true",
        help="prepare the mounts, print them and exit leaving them up",
    )
    a(
        "-q",
        dest="quorum",
        metavar="N",
        type=int,
        help="first N mounts are quorum members (default min(n,3))",
    )
    a(
        "-r",
        dest="results",
        metavar="DIR",
        default="results",
        help="results dir (default ./results)",
    )
    a("-R", dest="shuffle", action="store_true", help="shuffle the test order (xfstests last)")
    a("-V", dest="format_version", metavar="N", type=int, help="mkfs format version")
    a("-h", dest="help", action="store_true", help="show this help and exit 1")
    for f in IGNORED_FLAGS:
        a(f, dest="ignored_" + f[1], action="store_true", help=argparse.SUPPRESS)
    for f in IGNORED_WITH_ARG:
        a(f, dest="ignored_" + f[1] + "_arg", action="append", help=argparse.SUPPRESS)
    a(
        "--bless",
        nargs="+",
        metavar="NAME",
        help="write NAME's output of the last run as its golden, after showing the diff",
    )
    a("--shard", metavar="K/N", help="run shard K (1-based) of N, balanced by last known durations")
    a(
        "--merge-results",
        nargs="+",
        metavar="DIR",
        help="OUT DIR1 DIR2...: merge shards' results dirs into OUT",
    )
    a("--junit", metavar="FILE", help="JUnit XML report (default RESULTS/junit.xml)")
    a("--cleanup", metavar="RESULTS", help="tear down the cluster recorded in RESULTS/cleanup.json")
    a("--tests-dir", metavar="DIR", help="tests directory (default tests/, or $HARNESS_TESTS_DIR)")
    a(
        "--timeout",
        metavar="SECS",
        type=float,
        default=1800.0,
        help="kill a test after SECS (default 1800, 0: never)",
    )
    a("--seed", metavar="N", type=int, help="seed for -R")
    a(
        "--mnt-root",
        metavar="DIR",
        help="mount root (default /mnt, or a unique dir when /mnt is taken)",
    )
    a("--no-loop", action="store_true", help="use the image files directly, without loop devices")
    a("--list", action="store_true", help="print the selected tests and exit")
    return p


def do_cleanup(results: Path) -> int:
    path = results / "cleanup.json"
    if not path.exists():
        return die(f"no cleanup record {path}")
    rec = CleanupRecord.load(path)
    problems = cleanup_from_record(rec, lambda m: print("  " + m))
    if problems:
        for pr in problems:
            print(f"  {pr}")
        return die("cleanup incomplete")
    path.unlink(missing_ok=True)
    say(f"cleaned up {results}")
    return 0


def do_merge(paths: list[str], junit: str | None) -> int:
    if len(paths) < 2:
        return die("--merge-results needs OUT and at least one results dir")
    out, dirs = Path(paths[0]), [Path(d) for d in paths[1:]]
    for d in dirs:
        if not (d / "results.json").exists():
            return die(f"{d} has no results.json")
    m = merge_results(out, dirs, Path(junit) if junit else None)
    print(summary_table(m.results))
    print(final_line(m.results), flush=True)
    return results_exit_status(m.results)


def do_bless(names: list[str], results: Path, tests_dir: Path) -> int:
    try:
        _, recs = load_results(results)
    except (OSError, ValueError):
        recs = []
    last = {r.name: r for r in recs}
    rc = 0
    for name in names:
        out = results / "output" / name
        golden = tests_dir / "golden" / name
        if not out.exists():
            print(f"[== {name}: no output in {results}/output, run it first ==]")
            rc = 1
            continue
        r = last.get(name)
        if r is not None and r.exit_status != 100:
            print(
                f"[== {name}: last run ended with status {r.exit_status} ({r.message}), not blessing ==]"
            )
            rc = 1
            continue
        if golden.exists():
            if golden.read_bytes() == out.read_bytes():
                print(f"[== {name}: golden already matches ==]")
                continue
            sys.stdout.flush()
            subprocess.run(["diff", "-u", str(golden), str(out)])
        else:
            print(f"[== {name}: new golden ==]")
            sys.stdout.flush()
            sys.stdout.buffer.write(out.read_bytes())
        golden.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(out, golden)
        print(f"[== blessed {golden} ==]", flush=True)
    return rc


def final_fsck(engine: Engine) -> str | None:
    """fsck the idle volume after unmounting; returns a problem or None."""
    c = engine.cluster
    if c.fake:
        return None
    cmd = scoutfs_cmd()
    if run_cmd([cmd, "fsck", "--help"], engine.results.log, timeout=30).returncode != 0:
        engine.results.log("scoutfs fsck not available, skipping the final fsck")
        return None
    c.umount_all()  # together: quorum members wait for each other to leave
    p = run_cmd([cmd, "fsck", c.meta_device, c.data_device], engine.results.log, timeout=1800)
    if p.returncode != 0:
        (engine.results.root / "fsck.log").write_text(p.stdout + p.stderr)
        return f"fsck exited {p.returncode}, see fsck.log"
    return None


def main(argv: list[str] | None = None, *, fake_cluster: bool = False) -> int:
    """Run the command line ``argv``; returns the exit status.

    ``fake_cluster`` (Python only, for the harness's unit tests) runs on a
    ``ClusterConfig(fake=True)`` cluster of plain directories; no option or environment
    variable selects it.
    """
    args = build_parser().parse_args(argv)
    if args.help:
        build_parser().print_help()
        return 1
    if args.cleanup:
        return do_cleanup(Path(args.cleanup).resolve())
    if args.merge_results:
        return do_merge(args.merge_results, args.junit)
    tests_dir = Path(args.tests_dir).resolve() if args.tests_dir else default_tests_dir()
    results = Path(args.results).resolve()
    if args.bless:
        return do_bless(args.bless, results, tests_dir)

    ignored = [f for f in IGNORED_FLAGS if getattr(args, "ignored_" + f[1])]
    ignored += [f for f in IGNORED_WITH_ARG if getattr(args, "ignored_" + f[1] + "_arg")]
    if ignored:
        say(f"ignoring {' '.join(ignored)} (no kernel module, tracing or xfstests here)")

    if not 1 <= args.nr_mounts <= 8:
        return die("-n must be between 1 and 8")
    quorum = args.quorum if args.quorum is not None else min(args.nr_mounts, 3)
    if not 1 <= quorum <= args.nr_mounts:
        return die(f"-q must be between 1 and -n ({args.nr_mounts})")
    for opt, dev in (
        ("-M", args.meta_dev),
        ("-D", args.data_dev),
        ("-f", args.ex_meta_dev),
        ("-e", args.ex_data_dev),
    ):
        if dev and not Path(dev).exists():
            return die(f"{opt} device {dev} doesn't exist")
    if bool(args.meta_dev) != bool(args.data_dev):
        return die("-M and -D must be given together")
    if bool(args.ex_meta_dev) != bool(args.ex_data_dev):
        return die("-f and -e must be given together")
    if not (tests_dir / "sequence").exists():
        return die(f"no sequence file in {tests_dir}")

    seed = None
    if args.shuffle:
        seed = args.seed if args.seed is not None else random.randrange(1 << 31)
    durations = selection.load_durations(
        results / "last-passed-test-stats", tests_dir / "durations"
    )
    try:
        names = selection.select_tests(
            tests_dir,
            args.includes,
            args.excludes,
            shuffle_seed=seed,
            shard_spec=args.shard,
            durations=durations,
        )
    except selection.SelectionError as e:
        return die(str(e))
    if args.list:
        print("\n".join(names))
        return 0

    abort = args.abort or args.loops > 1
    if os.geteuid() != 0 and not fake_cluster:
        return die("must run as root (loop devices, mount)")
    ccfg = ClusterConfig(
        results=results,
        nr_mounts=args.nr_mounts,
        quorum=quorum,
        mount_opts=list(args.mount_opts),
        format_version=args.format_version,
        meta_dev=Path(args.meta_dev) if args.meta_dev else None,
        data_dev=Path(args.data_dev) if args.data_dev else None,
        ex_meta_dev=Path(args.ex_meta_dev) if args.ex_meta_dev else None,
        ex_data_dev=Path(args.ex_data_dev) if args.ex_data_dev else None,
        mkfs=args.mkfs or not args.meta_dev,
        mnt_root=Path(args.mnt_root) if args.mnt_root else None,
        fake=fake_cluster,
        use_loops=not args.no_loop,
    )
    console = console_fd()  # closed after the run (main may be called in-process)
    cfg = RunConfig(
        tests_dir=tests_dir,
        results=results,
        cluster=ccfg,
        timeout=args.timeout or None,
        junit=Path(args.junit).resolve() if args.junit else None,
        console_fd=console,
    )
    try:
        return run(
            cfg,
            names,
            abort=abort,
            prepare=args.prepare,
            loops=max(1, args.loops),
            seed=seed,
            shard=args.shard,
        )
    finally:
        os.close(console)


def run(
    cfg: RunConfig,
    names: list[str],
    *,
    abort: bool = False,
    prepare: bool = False,
    loops: int = 1,
    seed: int | None = None,
    shard: str | None = None,
) -> int:
    """Set up, run ``names`` (``loops`` times), report, tear down; returns the exit status."""
    cfg.results.mkdir(parents=True, exist_ok=True)
    (cfg.results / "run.log").write_text("")
    engine = Engine(cfg)
    res = engine.results

    def on_signal(signum: int, frame: object) -> None:
        raise Interrupted(signum)

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    keep_up = False
    status = 1
    try:
        res.log(f"run-tests: {len(names)} tests, seed {seed}, shard {shard}")
        if seed is not None:
            say(f"shuffled with seed {seed}")
        try:
            engine.setup()
        except (ClusterError, RuntimeError, OSError) as e:
            say(f"cluster setup failed: {e}")
            res.log(f"cluster setup failed: {e}")
            return 1
        c = engine.cluster
        say(
            f"{c.n} mount(s) under {c.mnt_root}, quorum {c.q}, ports {c.test_port}.., "
            f"run dir {c.run_dir}" + (" (fake cluster)" if c.fake else "")
        )
        if prepare:
            if not c.fake:
                subprocess.run(["findmnt", "-t", "fuse.scoutfs"])
            keep_up = True
            say("mounts prepared, not running tests")
            return 0
        if not names:
            say("no tests in the sequence")
        res.start(names, {"run_id": os.urandom(8).hex(), "seed": seed, "shard": shard})
        for it in range(loops):
            if loops > 1:
                say(f"iteration {it + 1} of {loops}")
                res.start(
                    names,
                    {
                        "run_id": os.urandom(8).hex(),
                        "seed": seed,
                        "shard": shard,
                        "iteration": it + 1,
                    },
                )
            stop = False
            for name in names:
                r = engine.run_test(name)
                if r.status == FAILED and abort:
                    say(f"aborting after {name} failed")
                    keep_up = True
                    stop = True
                    break
            if stop:
                break
        res.finish()
        if res.results:
            out(summary_table(res.results))
        out(final_line(res.results))
        status = results_exit_status(res.results)
        if status == 0:
            say("all tests passed")
        else:
            say(f"check {res.root}/skip.log and {res.root}/fail.log")
        if not keep_up:
            problem = final_fsck(engine)
            if problem:
                say(problem)
                status = 1
        return status
    except Interrupted as e:
        out()
        say(f"interrupted by {e}, cleaning up")
        engine.kill_current()
        keep_up = False
        status = 128 + e.signum
        return status
    finally:
        for s in old:
            signal.signal(s, signal.SIG_IGN)
        if keep_up and engine.cluster.up:
            engine.cluster.release_claims()
            out(teardown_instructions(res.root))
        else:
            problems = engine.teardown()
            for pr in problems:
                say(f"teardown: {pr}")
            if problems:
                out(teardown_instructions(res.root))
        for s, h in old.items():
            signal.signal(s, h)


if __name__ == "__main__":
    sys.exit(main())
