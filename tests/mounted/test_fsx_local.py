"""scripts/fsx on a plain local file (no mount needed): a fixed-seed run passes with every op
class on except punch, and a bad argument is a one-line usage error with exit 2."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

FSX = Path(__file__).resolve().parents[2] / "scripts" / "fsx"


def run_fsx(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(FSX), *args], capture_output=True, text=True,
                          timeout=300)


def test_fsx_local_file_passes(tmp_path):
    assert os.access(FSX, os.X_OK)
    target = tmp_path / "fsx.file"
    log = tmp_path / "fsx.log"
    p = run_fsx("-q", "-N", "2000", "-S", "12345", "-L", str(log), str(target))
    assert p.returncode == 0, p.stdout + p.stderr
    assert "seed 12345" in p.stdout.splitlines()[0]
    summary = p.stdout.strip().splitlines()[-1]
    assert re.match(r"fsx: 2000 ops passed, seed 12345: write \d+, read \d+", summary), summary
    assert "punch" not in summary  # off unless --punch
    assert len(log.read_text().splitlines()) == 2001  # every op, then the final full read
    assert p.stderr == ""


def test_fsx_usage_error_exits_2(tmp_path):
    for args in (["-N", "many", str(tmp_path / "f")], ["--bogus", str(tmp_path / "f")], []):
        p = run_fsx(*args)
        assert p.returncode == 2, (args, p.stdout, p.stderr)
        assert p.stdout == ""
        assert len(p.stderr.splitlines()) == 1 and p.stderr.startswith("fsx: "), p.stderr
        assert "Traceback" not in p.stderr
    assert not (tmp_path / "f").exists()
