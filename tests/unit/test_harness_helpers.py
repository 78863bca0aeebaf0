"""/sbin/mount.scoutfs and /sbin/umount.fuse.scoutfs: the bootstrap's wrappers, shared by the
checkouts of a host, run the helper of the checkout that asked (``$SCOUTFS_CHECKOUT``, set by
the harness and by ``scoutfs mount``; else a checkout's .venv/bin in ``$PATH``; else the
installing checkout, with a note), so parallel jobs on one machine stay independent.

The wrappers are installed into a temporary directory (``scripts/bootstrap --install-helpers
DIR CHECKOUT``, the code the bootstrap runs for /sbin) and run against two fake checkouts."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from harness.cluster import REPO, Cluster, ClusterConfig

BOOTSTRAP = REPO / "scripts" / "bootstrap"
HELPERS = {"mount.scoutfs": "mount.scoutfs", "umount.fuse.scoutfs": "umount.scoutfs"}
BASE_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"


def checkout(root: Path, name: str) -> Path:
    """A fake bootstrapped checkout whose helpers print which checkout ran them."""
    c = root / name
    b = c / ".venv" / "bin"
    b.mkdir(parents=True)
    for prog in HELPERS.values():
        (b / prog).write_text(f'#!/bin/sh\nfor a in "$@"; do echo "{name} {prog} [$a]"; done\n')
        (b / prog).chmod(0o755)
    return c


def install(dest: Path, owner: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "SCOUTFS_CHECKOUT"}
    return subprocess.run([str(BOOTSTRAP), "--install-helpers", str(dest), str(owner)],
                          env=env, capture_output=True, text=True, timeout=60)


def run(helper: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(helper), *args], env={"PATH": BASE_PATH, **env},
                          capture_output=True, text=True, timeout=30)


@pytest.fixture
def two(tmp_path: Path):
    a, b = checkout(tmp_path, "A"), checkout(tmp_path, "B")
    sbin = tmp_path / "sbin"
    sbin.mkdir()
    p = install(sbin, a)
    assert p.returncode == 0, p.stderr
    return a, b, sbin


ARGS = ("/dev/loop1", "/mnt/test 0", "-o", "metadev_path=/dev/loop0,quorum_slot_nr=0")


@pytest.mark.parametrize("name", list(HELPERS))
def test_runs_the_checkout_that_asked(two, name) -> None:
    a, b, sbin = two
    prog = HELPERS[name]
    want = [f"B {prog} [{x}]" for x in ARGS]
    # the harness (and `scoutfs mount`) name their checkout
    p = run(sbin / name, {"SCOUTFS_CHECKOUT": str(b)}, *ARGS)
    assert (p.returncode, p.stdout.splitlines(), p.stderr) == (0, want, "")
    p = run(sbin / name, {"SCOUTFS_CHECKOUT": f"{b}/"}, *ARGS)
    assert p.stdout.splitlines() == want
    # by hand, with a checkout's .venv/bin in PATH (as the README says)
    p = run(sbin / name, {"PATH": f"/usr/bin:{b}/.venv/bin:{a}/.venv/bin:/bin"}, *ARGS)
    assert (p.returncode, p.stdout.splitlines(), p.stderr) == (0, want, "")


@pytest.mark.parametrize("name", list(HELPERS))
def test_falls_back_to_the_installer_with_a_note(two, name) -> None:
    a, _b, sbin = two
    prog = HELPERS[name]
    p = run(sbin / name, {}, *ARGS)
    assert p.returncode == 0
    assert p.stdout.splitlines() == [f"A {prog} [{x}]" for x in ARGS]
    assert p.stderr == (f"{name}: note: SCOUTFS_CHECKOUT is not set: running {a}'s {prog} "
                        "(set SCOUTFS_CHECKOUT=<checkout> to choose)\n")


@pytest.mark.parametrize("name", list(HELPERS))
def test_refuses_when_it_cannot_tell(two, tmp_path, name) -> None:
    a, _b, sbin = two
    prog = HELPERS[name]
    p = run(sbin / name, {"SCOUTFS_CHECKOUT": str(tmp_path / "nowhere")}, *ARGS)
    assert p.returncode == 1 and p.stdout == ""
    assert p.stderr == (f"{name}: SCOUTFS_CHECKOUT={tmp_path}/nowhere is not a bootstrapped "
                        f"scoutfs checkout (no {tmp_path}/nowhere/.venv/bin/{prog}): run its "
                        "scripts/bootstrap\n")
    (a / ".venv" / "bin" / prog).unlink()
    p = run(sbin / name, {}, *ARGS)
    assert p.returncode == 1 and p.stdout == ""
    assert "SCOUTFS_CHECKOUT is not set" in p.stderr and "set SCOUTFS_CHECKOUT to a" in p.stderr


def test_a_live_checkouts_wrappers_are_kept(two, tmp_path) -> None:
    """A second checkout's bootstrap keeps the first's wrappers while that one lives (they run
    the second's helpers when asked); it replaces wrappers of a checkout gone, or old ones."""
    a, b, sbin = two
    before = {n: (sbin / n).read_text() for n in HELPERS}
    p = install(sbin, b)
    assert p.returncode == 0 and p.stdout == "", p.stdout + p.stderr
    assert {n: (sbin / n).read_text() for n in HELPERS} == before
    assert f"fallback='{a}'" in before["mount.scoutfs"]
    # A's checkout is gone: B's bootstrap takes over
    for prog in HELPERS.values():
        (a / ".venv" / "bin" / prog).unlink()
    p = install(sbin, b)
    assert p.returncode == 0
    assert p.stdout.count("installing") == 2
    for n in HELPERS:
        assert f"fallback='{b}'" in (sbin / n).read_text()
    assert run(sbin / "mount.scoutfs", {}, "x").stdout == "B mount.scoutfs [x]\n"
    # an older bootstrap's wrapper (always runs its own checkout) is replaced
    (sbin / "mount.scoutfs").write_text(f'#!/bin/sh\nexec {a}/.venv/bin/mount.scoutfs "$@"\n')
    p = install(sbin, b)
    assert p.stdout.count("installing") == 1
    assert run(sbin / "mount.scoutfs", {"SCOUTFS_CHECKOUT": str(b)}, "y").stdout \
        == "B mount.scoutfs [y]\n"
    # all in place: nothing to say
    p = install(sbin, b)
    assert (p.returncode, p.stdout, p.stderr) == (0, "", "")


def test_harness_names_its_checkout(tmp_path) -> None:
    c = Cluster(ClusterConfig(results=tmp_path), lambda m: None)
    assert c.process_env()["SCOUTFS_CHECKOUT"] == str(REPO)


def test_scoutfs_mount_names_its_checkout(monkeypatch) -> None:
    """`scoutfs mount` and mount.scoutfs pass their checkout on to the daemon."""
    import fs.mount
    from fs.cli.mount import mount_helper_main

    if not os.access(REPO / ".venv" / "bin" / "mount.scoutfs", os.X_OK):
        pytest.skip("not a bootstrapped checkout")
    seen: list[str | None] = []

    def start(data, mnt, opts):
        seen.append(os.environ.get("SCOUTFS_CHECKOUT"))
        return 0

    monkeypatch.setattr(fs.mount, "start", start)
    monkeypatch.setenv("SCOUTFS_CHECKOUT", "/somewhere/else")
    assert mount_helper_main(["/dev/d", "/mnt/x", "-o", "metadev_path=/dev/m"]) == 0
    assert seen == [str(REPO)]
