"""The dmesg check (spec cli-and-harness §1.8): the kernel log lines a test made.

Upstream snapshots ``dmesg | t_filter_dmesg`` before and after each passing test and fails it
("unexpected messages in dmesg") when new lines are left.  Our mount daemons write scoutfs's
messages to the kernel log (fs/kmsg.py), but one host runs several clusters at once (pytest-xdist
workers, other checkouts), and the kernel log is the host's.  So:

* ``KernelLog.mark()`` before a test opens ``/dev/kmsg`` and seeks to its end; ``new()`` after
  it reads just the records written since (an overrun of the ring is noted, not fatal);
* only **our** scoutfs lines count: ``scoutfs f.<fsid6>.r.<rid6>...`` of a mount whose daemon
  logs in this cluster's run dir (``<run dir>/log/<fsid>.<rid>.log``: the main volume's mounts
  and the test's scratch mounts alike), or ``scoutfs (<dev>)`` naming one of our devices (a
  refused mount);
* only lines at KERN_ERR or more urgent fail a test (info lines are the mount lifecycle);
* the survivors go through the tests' own ``t_filter_dmesg`` (tests/funcs/filter.sh), which is
  how upstream tests declare messages they expect.

The files of upstream's layout are written in ``tmp/<test>/``: ``dmesg.after`` (every new line
of ours, any level, as ``dmesg`` prints it) and ``dmesg.new`` (the unexpected ones).
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

KMSG_PATH = "/dev/kmsg"
KERN_ERR = 3

LOG_NAME_RE = re.compile(r"^([0-9a-f]{16})\.([0-9a-f]{16})\.log$")
SCOUTFS_RE = re.compile(r"^scoutfs (f\.[0-9a-f]{6}\.r\.[0-9a-f]{6}|\([^)\s]*\))[ :]")


@dataclass
class Record:
    level: int  # printk level, 0 (emerg) .. 7 (debug)
    seq: int
    usec: int
    text: str

    def line(self) -> str:
        """As ``dmesg`` prints it."""
        return f"[{self.usec // 1000000:5d}.{self.usec % 1000000:06d}] {self.text}"


def parse_record(raw: bytes) -> Record | None:
    """One /dev/kmsg record: ``prio,seq,usec,flags[,...];text`` then `` KEY=value`` lines."""
    head, sep, rest = raw.partition(b";")
    if not sep:
        return None
    fields = head.split(b",")
    try:
        prio, seq, usec = int(fields[0]), int(fields[1]), int(fields[2])
    except (ValueError, IndexError):
        return None
    text = rest.split(b"\n", 1)[0].decode("utf-8", "replace")
    return Record(prio & 7, seq, usec, text)


class KernelLog:
    """Reads the kernel log records written between ``mark()`` and ``new()``.  Without
    access to the device (not root, no /dev/kmsg) both are no-ops and ``available`` is
    False.  ``path`` may be a plain file of records (the harness's unit tests)."""

    def __init__(self, path: str = KMSG_PATH):
        self.path = path
        self.fd = -1
        self.available = True
        self.overrun = False

    def mark(self) -> None:
        self.close()
        if not self.available:
            return
        try:
            self.fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            os.lseek(self.fd, 0, os.SEEK_END)
        except OSError:
            self.close()
            self.available = False

    def new(self) -> list[Record]:
        """Records since mark() (then closed)."""
        if self.fd < 0:
            return []
        out: list[Record] = []
        self.overrun = False
        try:
            if os.path.isfile(self.path):
                data = os.read(self.fd, 1 << 24)
                out = [r for r in map(parse_record, data.splitlines()) if r is not None]
            else:
                while True:
                    try:
                        raw = os.read(self.fd, 16384)
                    except BlockingIOError:
                        break
                    except OSError as e:
                        if e.errno == errno.EPIPE:  # the ring overwrote records we missed
                            self.overrun = True
                            continue
                        raise
                    if not raw:
                        break
                    r = parse_record(raw)
                    if r is not None:
                        out.append(r)
        except OSError:
            pass
        finally:
            self.close()
        return out

    def close(self) -> None:
        if self.fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = -1


def our_idents(run_dir: Path) -> set[str]:
    """``f.<fsid6>.r.<rid6>`` of every mount that logged in our run dir."""
    out: set[str] = set()
    with contextlib.suppress(OSError):
        for f in (run_dir / "log").iterdir():
            m = LOG_NAME_RE.match(f.name)
            if m:
                out.add(f"f.{m.group(1)[:6]}.r.{m.group(2)[:6]}")
    return out


def device_names(paths: list[str]) -> set[str]:
    """``(name)`` as fs/kmsg.device_ident writes it, for each of our devices."""
    out: set[str] = set()
    for p in paths:
        if p:
            with contextlib.suppress(OSError, ValueError):
                p = os.path.realpath(p)
            out.add(f"({os.path.basename(p)})")
    return out


def ours(records: list[Record], idents: set[str], devices: set[str]) -> list[Record]:
    """The scoutfs records of our mounts and devices."""
    out = []
    for r in records:
        m = SCOUTFS_RE.match(r.text)
        if m and (m.group(1) in idents or m.group(1) in devices):
            out.append(r)
    return out


def filter_dmesg(lines: list[str], tests_dir: Path) -> list[str]:
    """``t_filter_dmesg`` of the tests' funcs (what upstream tests expect)."""
    if not lines:
        return []
    p = subprocess.run(
        ["bash", "-c", ". funcs/filter.sh; t_filter_dmesg"],
        cwd=tests_dir, input="".join(x + "\n" for x in lines), capture_output=True,
        text=True, env={**os.environ, "LC_ALL": "C"},
    )
    if p.returncode not in (0, 1):  # grep -v exits 1 when it drops everything
        return lines  # a broken filter must not hide messages
    return [x for x in p.stdout.splitlines() if x.strip()]


def check(records: list[Record], idents: set[str], devices: set[str], tests_dir: Path,
          tmpdir: Path) -> list[str]:
    """The unexpected error lines of ours among records; writes dmesg.after and dmesg.new."""
    mine = ours(records, idents, devices)
    with contextlib.suppress(OSError):
        (tmpdir / "dmesg.after").write_text("".join(r.line() + "\n" for r in mine))
    errors = [r.line() for r in mine if r.level <= KERN_ERR]
    new = filter_dmesg(errors, tests_dir)
    with contextlib.suppress(OSError):
        (tmpdir / "dmesg.new").write_text("".join(x + "\n" for x in new))
    return new
