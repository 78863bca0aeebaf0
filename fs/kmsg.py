"""The kernel log: scoutfs's operator messages in ``dmesg``, as upstream's printk writes them.

Upstream scoutfs prints mounts, elections, fencing, reclaim, recovery and I/O or corruption
errors with ``scoutfs_err/warn/info`` (``kmod/src/msg.c``)::

    <3>scoutfs f.0a1b2c.r.3d4e5f error: fencing rid ... (KERN_ERR)
    <4>scoutfs f.0a1b2c.r.3d4e5f warning: ...          (KERN_WARNING)
    <6>scoutfs f.0a1b2c.r.3d4e5f: server starting at ... (KERN_INFO)

The ident is the sysfs dir's name (``t_ident``: first 6 hex digits of fsid and rid); before the
mount knows its fsid and rid, the device's name stands in (``scoutfs (loop3) error: ...``, as
upstream prints ``sb->s_id``).  Operators and the harness's dmesg check (spec cli-and-harness
§1.8) read these lines, so only messages upstream prints go here, not every daemon log line.

How a message gets here: a log call of the daemon carries ``extra=KMSG``; the daemon's
``KmsgHandler`` writes that record, at its logging level, to ``/dev/kmsg`` as well as to the
daemon log file.  Without the handler (unit tests, the CLI) nothing reaches the kernel log.

Writing must never block or fail a mount: the device is opened per message with O_NONBLOCK
(one open per message also keeps the kernel's per-open ``printk_devkmsg=ratelimit`` burst from
dropping our lines), and any failure (not root, no device, EAGAIN, ...) drops the message; the
first failure of each kind is noted once in the daemon log, and a permanent one (no device, no
permission) stops further attempts.  A burst limit of our own keeps a storm of I/O errors from
flooding the host's log.

Concurrency: ``emit`` runs in whichever thread logs (trio's, or a worker thread's); it takes
the handler's lock (logging.Handler) and makes a few short non-blocking syscalls.
"""

from __future__ import annotations

import errno
import logging
import os
import time
from collections.abc import Callable

KERN_ERR, KERN_WARNING, KERN_INFO = 3, 4, 6

KMSG = {"kmsg": True}
"""``log.info(..., extra=KMSG)``: this record also goes to the kernel log, at its own level."""

KMSG_ERR = {"kmsg": KERN_ERR}
"""The record goes to the kernel log at KERN_ERR whatever its daemon log level (upstream
says ``scoutfs_err`` where our log says less: fencing, orphan log trees)."""

KMSG_PATH = "/dev/kmsg"

LINE_MAX = 900
"""Bytes of message text kept (the kernel's record limit is about 1 KiB)."""

BURST, BURST_INTERVAL_S = 50, 5.0
"""At most BURST kernel log lines per BURST_INTERVAL_S; the rest are counted and dropped."""

PERMANENT = {errno.ENOENT, errno.ENXIO, errno.ENODEV, errno.EACCES, errno.EPERM, errno.EROFS}
"""Errors that will not go away: stop writing after the first."""


def ident(fsid: int, rid: int) -> str:
    """``f.<first 6 hex of fsid>.r.<first 6 hex of rid>``: the sysfs dir's name (t_ident)."""
    return f"f.{fsid:016x}"[:8] + f".r.{rid:016x}"[:9]


def device_ident(path: str) -> str:
    """``(name)`` for a mount not yet knowing its fsid/rid: the device's kernel name, as
    upstream's ``sb->s_id`` (``loop3`` for ``/dev/loop3``; an image file's base name)."""
    try:
        path = os.path.realpath(path)
    except (OSError, ValueError):
        pass
    return f"({os.path.basename(path) or path})"


def kern_level(levelno: int) -> int:
    """The printk level of a logging level: ERROR and above KERN_ERR, WARNING KERN_WARNING,
    the rest KERN_INFO."""
    if levelno >= logging.ERROR:
        return KERN_ERR
    if levelno >= logging.WARNING:
        return KERN_WARNING
    return KERN_INFO


_SUFFIX = {KERN_ERR: " error", KERN_WARNING: " warning", KERN_INFO: ""}


def format_record(level: int, who: str, message: str) -> bytes:
    """One /dev/kmsg record: ``<L>scoutfs WHO[ error| warning]: MESSAGE\\n``.  The message is
    kept on one line (a newline would start a record without our prefix) and cut to
    LINE_MAX bytes."""
    text = " ".join(message.split("\n")).rstrip()
    raw = text.encode("utf-8", "replace")
    if len(raw) > LINE_MAX:
        raw = raw[:LINE_MAX].decode("utf-8", "ignore").encode() + b"..."
    return f"<{level}>scoutfs {who}{_SUFFIX.get(level, '')}: ".encode() + raw + b"\n"


class KmsgWriter:
    """Writes records to the kernel log; never raises, never blocks.  ``note(text)`` is told
    once per kind of failure (the daemon logs it)."""

    def __init__(self, who: str, path: str = KMSG_PATH,
                 note: Callable[[str], None] | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.who = who
        self.path = path
        self.note = note or (lambda text: None)
        self.clock = clock
        self.disabled = False
        self.noted: set[int] = set()
        self.window_start = -BURST_INTERVAL_S
        self.in_window = 0
        self.suppressed = 0
        if os.geteuid() != 0:
            self._fail(errno.EPERM, "not root")

    def set_ident(self, fsid: int, rid: int) -> None:
        self.who = ident(fsid, rid)

    def write(self, level: int, message: str) -> bool:
        """Write one message; False if it was dropped."""
        if self.disabled:
            return False
        now = self.clock()
        if now - self.window_start >= BURST_INTERVAL_S:
            self.window_start, self.in_window = now, 0
            if self.suppressed:
                n, self.suppressed = self.suppressed, 0
                self._write(format_record(KERN_WARNING, self.who,
                                          f"{n} kernel log messages suppressed"))
        if self.in_window >= BURST:
            self.suppressed += 1
            return False
        self.in_window += 1
        return self._write(format_record(level, self.who, message))

    def _write(self, rec: bytes) -> bool:
        try:
            # O_APPEND: no meaning for the device, lets tests write to a plain file
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_NONBLOCK | os.O_CLOEXEC
                         | os.O_NOCTTY)
        except OSError as e:
            self._fail(e.errno or errno.EIO, e.strerror or str(e))
            return False
        try:
            os.write(fd, rec)
            return True
        except OSError as e:
            self._fail(e.errno or errno.EIO, e.strerror or str(e))
            return False
        finally:
            os.close(fd)

    def _fail(self, err: int, why: str) -> None:
        permanent = err in PERMANENT
        if permanent:
            self.disabled = True
        if err not in self.noted:
            self.noted.add(err)
            self.note(f"kernel log {self.path}: {why}: "
                      + ("messages go to this log only" if permanent
                         else "dropping messages that fail so"))


class KmsgHandler(logging.Handler):
    """Passes the records marked ``extra=KMSG`` to a KmsgWriter."""

    def __init__(self, writer: KmsgWriter):
        super().__init__(logging.DEBUG)
        self.writer = writer

    def emit(self, record: logging.LogRecord) -> None:
        how = getattr(record, "kmsg", False)
        if how is False or how is None:
            return
        level = how if type(how) is int else kern_level(record.levelno)
        try:
            self.writer.write(level, record.getMessage())
        except Exception:  # noqa: BLE001 - a message must never fail its caller
            pass


_log = logging.getLogger("scoutfs.kmsg")


def install(device_path: str, path: str = KMSG_PATH) -> KmsgHandler:
    """Add a handler to the root logger (the mount daemon, before it knows its fsid/rid:
    ``handler.writer.set_ident`` once it does)."""
    w = KmsgWriter(device_ident(device_path), path, note=_note)
    h = KmsgHandler(w)
    logging.getLogger().addHandler(h)
    return h


def _note(text: str) -> None:
    # INFO: a WARNING would also be shown on the waiting mount command's stderr
    _log.info("%s", text)


def write_once(device_path: str, levelno: int, message: str, path: str = KMSG_PATH) -> bool:
    """One message of a process without a handler (the mount command refusing a mount)."""
    return KmsgWriter(device_ident(device_path), path).write(kern_level(levelno), message)
