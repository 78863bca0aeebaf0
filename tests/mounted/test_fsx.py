"""scripts/fsx against a real scoutfs mount, in three configurations: small files with
sub-block operations, the default mix, and large files with 1 MiB requests.  Every op class is
on (write, read, truncate, fallocate mode 0 and KEEP_SIZE, mmap reads and writes, O_DIRECT,
close/reopen) and each read is checked against fsx's model; fsck is clean afterwards.

The number of operations per configuration is ``SCOUTFS_FSX_OPS`` (default 1500, a short run
for CI; the soak is 100000: ``SCOUTFS_FSX_OPS=100000 .venv/bin/pytest tests/mounted/test_fsx.py``).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import _fuse_usable

pytestmark = pytest.mark.skipif(not _fuse_usable(), reason="/dev/fuse unusable (or not root)")

FSX = Path(__file__).resolve().parents[2] / "scripts" / "fsx"
OPS = int(os.environ.get("SCOUTFS_FSX_OPS", "1500"))

CONFIGS = {
    "small": ["-l", "16k", "-o", "5000"],
    "default": [],
    "large": ["-l", "4m", "-o", "1m"],
}


@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_fsx_on_scoutfs(mounted, config):
    env, mnt, meta, data = mounted
    seed = 1000 + sorted(CONFIGS).index(config)
    p = subprocess.run([sys.executable, str(FSX), "-q", "-N", str(OPS), "-S", str(seed),
                        *CONFIGS[config], str(mnt / f"fsx.{config}")],
                       capture_output=True, text=True, timeout=max(600, OPS // 20))
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-2000:]
    summary = p.stdout.strip().splitlines()[-1]
    assert re.match(rf"fsx: {OPS} ops passed, seed {seed}: ", summary), summary
    # every op class ran: nothing was disabled for EOPNOTSUPP or EINVAL
    assert "disabled" not in p.stdout, p.stdout
    for op in ("write", "read", "truncate", "fallocate", "keepsize", "mapread", "mapwrite",
               "dread", "dwrite", "reopen"):
        assert re.search(rf"\b{op} [1-9]", summary), (op, summary)
    subprocess.run(["umount", str(mnt)], check=True, timeout=60)
    fsck = env.scoutfs("fsck", meta, data)
    assert fsck.returncode == 0, fsck.stdout + fsck.stderr
