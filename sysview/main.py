"""``scoutfs-sysfsd``: mount the sysfs/debugfs view and serve it until unmounted or signalled.

Usage: ``scoutfs-sysfsd [--root DIR] [--run-dir DIR] [--timeout SECS]``; runs in the
foreground (start it with ``scoutfs-sysfsd &``).  The root defaults to
``$SCOUTFS_SYSFS_ROOT`` or ``/run/scoutfs/sys`` and is created if missing; the run dir (whose
``ctl/`` holds the mount daemons' control sockets) to ``$SCOUTFS_RUN_DIR`` or
``/run/scoutfs``.  SIGTERM, SIGINT or SIGHUP unmount the view and exit 0; ``umount ROOT``
ends it too.  Exit status 1 when it cannot mount.

Concurrency: one trio loop runs the FUSE session (`fs.fuse.Session`: one task per request)
and the signal watcher; nothing here blocks the loop.
"""

from __future__ import annotations

import argparse
import logging
import os
import select
import signal
import sys

import trio

from fs import fuse
from sysview.backend import DEFAULT_TIMEOUT_S, Backend
from sysview.ops import SysfsOperations, fuse_options

log = logging.getLogger("scoutfs.sysfsd")

FSTYPE = "fuse.scoutfs-sysfs"


def default_root() -> str:
    return os.environ.get("SCOUTFS_SYSFS_ROOT") or "/run/scoutfs/sys"


def default_run_dir() -> str:
    return os.environ.get("SCOUTFS_RUN_DIR") or "/run/scoutfs"


def mounted_fstype(path: str) -> str | None:
    """The fstype of the topmost mount at `path` (from mountinfo, no access to the path)."""
    from fs.control import read_mountinfo

    found = None
    for m in read_mountinfo():
        if m.mountpoint == path:
            found = m.fstype
    return found


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def connected(fd: int) -> bool:
    """Whether the FUSE connection on `fd` still stands: /dev/fuse polls POLLERR once the
    kernel ended it (umount, abort)."""
    if fd < 0:
        return False
    p = select.poll()
    p.register(fd, 0)
    return not any(ev & (select.POLLERR | select.POLLNVAL) for _, ev in p.poll(0))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="scoutfs-sysfsd",
        description="Serve the sysfs/debugfs view of the live scoutfs mounts "
                    "(fs/scoutfs/<id>/..., kernel/debug/scoutfs/<id>/...) under ROOT.")
    p.add_argument("--root", default=None,
                   help="where to mount the view (default $SCOUTFS_SYSFS_ROOT or "
                        "/run/scoutfs/sys)")
    p.add_argument("--run-dir", default=None,
                   help="the mount daemons' run dir (default $SCOUTFS_RUN_DIR or "
                        "/run/scoutfs)")
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, metavar="SECS",
                   help=f"answer EIO when a mount daemon does not answer within SECS "
                        f"(default {DEFAULT_TIMEOUT_S:g})")
    p.add_argument("-v", "--verbose", action="store_true", help="log every warning and more")
    return p


async def _serve(ops: SysfsOperations, root: str, options: set[str]) -> int:
    """Mount, serve until unmounted or signalled, unmount.  The signal receiver is open
    before the mount exists and until it is gone, so a SIGTERM can never leave the view
    mounted with nobody serving it."""
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as sigs:
        session = fuse.Session(ops, root, options)
        try:
            session.mount()
        except fuse.MountFailed as e:
            sys.stderr.write(f"scoutfs-sysfsd: mounting the view on {root} failed: {e}\n")
            return 1
        log.info("serving %s (mounts from %s)", root, ops.backend.ctl_dir)

        async def watch() -> None:
            async for sig in sigs:
                log.info("signal %d: unmounting %s", sig, root)
                session.terminate()

        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(watch)
                await session.run()
                nursery.cancel_scope.cancel()
        finally:
            # unmounts unless the kernel already did (or the connection was aborted), as
            # libfuse does: the path may hold another mount by now
            session.close(unmount=connected(session.fd))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="scoutfs-sysfsd: %(levelname)s %(message)s")
    root = os.path.abspath(args.root or default_root())
    run_dir = os.path.abspath(args.run_dir or default_run_dir())
    ctl_dir = os.path.join(run_dir, "ctl")
    if _inside(ctl_dir, root):
        # the view would ask itself where the daemons' sockets are: a deadlock
        sys.stderr.write(f"scoutfs-sysfsd: the run dir's ctl/ ({ctl_dir}) must not be inside "
                         f"the view root {root}\n")
        return 1
    fstype = mounted_fstype(root)
    if fstype == FSTYPE:
        sys.stderr.write(f"scoutfs-sysfsd: a sysfs view is already mounted at {root}\n")
        return 1
    try:
        os.makedirs(root, exist_ok=True)
    except OSError as e:
        sys.stderr.write(f"scoutfs-sysfsd: cannot create {root}: {e}\n")
        return 1
    ops = SysfsOperations(Backend(run_dir, timeout=args.timeout))
    return trio.run(_serve, ops, root, fuse_options(allow_other=os.geteuid() == 0))


if __name__ == "__main__":
    sys.exit(main())
