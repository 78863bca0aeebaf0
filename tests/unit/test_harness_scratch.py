"""The harness's scratch images: sparse, and big enough that ``t_scratch_mkfs`` works without
``-A`` (mkfs refuses devices under 64 GiB unless allowed), as on upstream's real devices."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from fs.format import MIN_DEVICE_BYTES_UNFORCED
from harness import devices as dv
from harness.cluster import Cluster, ClusterConfig, scoutfs_cmd

REPO = Path(__file__).resolve().parents[2]
FUNCS = REPO / "tests" / "funcs"
MiB = 1 << 20


def test_scratch_images_are_sparse_and_big_enough(tmp_path: Path) -> None:
    cfg = ClusterConfig(results=tmp_path / "results", nr_mounts=2, use_loops=False)
    cfg.results.mkdir()
    c = Cluster(cfg, lambda msg: None)
    c._make_devices()  # images only: no loop devices, mkfs or mounts

    images = [Path(c.ex_meta_dev), Path(c.ex_data_dev)]
    assert dv.SCRATCH_IMAGE_SIZE >= MIN_DEVICE_BYTES_UNFORCED
    for img in images:
        st = img.stat()
        assert st.st_size >= MIN_DEVICE_BYTES_UNFORCED, img
        assert st.st_blocks * 512 < MiB, f"{img} is not sparse"
        assert str(img) in c.record.images  # removed by teardown / --cleanup

    # the t_ function itself, without -A, as the tests call it
    tmpdir = tmp_path / "t"
    tmpdir.mkdir()
    scoutfs = Path(scoutfs_cmd())
    env = {k: v for k, v in os.environ.items() if not k.startswith("T_")}
    env.update(
        PATH=f"{scoutfs.parent}:{env.get('PATH', '/usr/bin:/bin')}",
        T_TMPDIR=str(tmpdir),
        T_TMP=str(tmpdir / "tmp"),
        T_EX_META_DEV=c.ex_meta_dev,
        T_EX_DATA_DEV=c.ex_data_dev,
        T_SCRATCH_PORT="19999",
    )
    prog = f'for f in "{FUNCS}"/*.sh; do . "$f"; done\nt_scratch_mkfs\necho ok\n'
    p = subprocess.run(["bash", "-c", prog], env=env, capture_output=True, text=True,
                       timeout=120)
    out = (tmpdir / "tmp.mkfs.out").read_text()
    status = tmpdir / "status.msg"
    assert p.returncode == 0 and p.stdout == "ok\n", (
        p.stdout, p.stderr, out, status.read_text() if status.exists() else "")
    assert "too small" not in out
    assert "64KB metadata blocks:   1048576 (64.00 GB)" in out
    for img in images:  # mkfs wrote only its metadata
        assert img.stat().st_blocks * 512 < 64 * MiB, f"{img} filled by mkfs"


def test_image_too_big_for_its_filesystem_is_named(tmp_path: Path, monkeypatch) -> None:
    import errno

    real_open = open

    class Small:
        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *a):
            self.f.close()

        def truncate(self, size):
            raise OSError(errno.EFBIG, "File too large")

    # open() as harness.devices sees it: a filesystem that can't hold 64 GiB files
    monkeypatch.setattr(dv, "open", lambda p, m="r", *a, **k: Small(real_open(p, m, *a, **k)),
                        raising=False)
    img = tmp_path / "ex-meta.img"
    try:
        dv.make_sparse(img, dv.SCRATCH_IMAGE_SIZE)
    except OSError as e:
        assert e.errno == errno.EFBIG
        assert str(img) in str(e) and "64 GiB" in str(e)
    else:
        raise AssertionError("make_sparse did not fail")
