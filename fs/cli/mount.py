"""`scoutfs mount -o OPTS DATA-DEVICE MOUNT-POINT` and the `mount.scoutfs` helper that
`mount -t scoutfs DATA MNT -o OPTS` runs (``mount.scoutfs DATA MNT [-sfnv] [-N ns] -o OPTS``).
Both parse the options (fs.options), then fs.mount.start checks, forks the daemon and waits
until the mount is ready."""

from __future__ import annotations

import logging
import os
import sys

from fs.cli.argp import POSITIONAL, Opt, UsageError
from fs.cli.util import GROUP_CORE, CleanStderr, Command, register
from fs.options import OptionError, parse_options


def _pass_checkout() -> None:
    """Name this source checkout in ``SCOUTFS_CHECKOUT`` for the daemon and what it starts, as
    the harness does: /sbin/mount.scoutfs and /sbin/umount.fuse.scoutfs (the bootstrap's
    wrappers, shared by the checkouts of a host) then run this checkout's helpers.  Nothing
    when the code isn't a bootstrapped checkout (an installed package)."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.realpath(__file__))))
    if os.access(os.path.join(root, ".venv", "bin", "mount.scoutfs"), os.X_OK) and \
            os.path.exists(os.path.join(root, "scripts", "bootstrap")):
        os.environ["SCOUTFS_CHECKOUT"] = root


def _mount(data: str, mnt: str, texts: list[str], prog: str) -> int:
    try:
        opts = parse_options(texts)
    except OptionError as e:
        # upstream's kernel parses the options and says why in the kernel log
        from fs import kmsg

        kmsg.write_once(data, logging.ERROR, e.message)
        sys.stderr.write(f"{prog}: {e.message}\n")
        return 1
    from fs.mount import start

    _pass_checkout()

    with CleanStderr():
        return start(data, mnt, opts)


def run_mount(cmd: str, events) -> int:
    texts: list[str] = []
    args: list[str] = []
    for k, v in events:
        if k == "options":
            texts.append(v)
        elif k == POSITIONAL:
            if len(args) == 2:
                raise UsageError("more than two arguments given")
            args.append(v)
    if not args:
        raise UsageError("must provide data device")
    if len(args) < 2:
        raise UsageError("must provide mount point")
    rc = _mount(args[0], args[1], texts, "scoutfs")
    if rc:
        sys.exit(rc)
    return 0


register(Command("mount", "DATA-DEVICE MOUNT-POINT",
                 "Mount a ScoutFS volume (starts its FUSE daemon)", GROUP_CORE,
                 [Opt("options", "o", "options", "OPTIONS",
                      "Mount options, metadev_path=PATH is required")], run_mount))


HELPER_USAGE = "usage: mount.scoutfs DATA-DEVICE MOUNT-POINT [-sfnvrw] [-N namespace] [-o options]\n"


def mount_helper_main(argv: list[str] | None = None) -> int:
    """Entry point of /sbin/mount.scoutfs, called by mount(8) as
    ``mount.scoutfs SPEC DIR [-sfnv] [-N ns] [-o OPTS] [-t scoutfs]``."""
    if argv is None:
        argv = sys.argv[1:]
    texts: list[str] = []
    args: list[str] = []
    fake = False
    i = 0
    while i < len(argv):
        a = argv[i]
        i += 1
        if a in ("-o", "-t", "-N"):
            if i >= len(argv):
                sys.stderr.write(f"mount.scoutfs: option requires an argument -- '{a[1]}'\n"
                                 + HELPER_USAGE)
                return 1
            if a == "-o":
                texts.append(argv[i])
            i += 1
        elif a.startswith("-o") and len(a) > 2:
            texts.append(a[2:])
        elif a.startswith("-") and len(a) > 1:
            for c in a[1:]:
                if c == "f":
                    fake = True  # -f: fake the mount (do everything but the mount call)
                elif c not in "snvrwi":
                    sys.stderr.write(f"mount.scoutfs: invalid option -- '{c}'\n"
                                     + HELPER_USAGE)
                    return 1
            if "r" in a[1:]:
                texts.append("ro")
        else:
            args.append(a)
    if len(args) != 2:
        sys.stderr.write(HELPER_USAGE)
        return 1
    if fake:
        try:
            parse_options(texts)
        except OptionError as e:
            sys.stderr.write(f"mount.scoutfs: {e.message}\n")
            return 1
        return 0
    # mount(8) reports its helper's status: 32 is "mount failure" (what a kernel mount
    # refusing bad options or devices gives), 1 is kept for bad invocations above
    return MOUNT_FAILURE if _mount(args[0], args[1], texts, "mount.scoutfs") else 0


MOUNT_FAILURE = 32


def _helper_entry() -> None:
    sys.exit(mount_helper_main())


if __name__ == "__main__":
    _helper_entry()


# --------------------------------------------------------------------------- umount helper

FORCE_NOTICE_TIMEOUT_S = 2.0
UMOUNT_WAIT_S = 120.0


def _daemon_pid(mountpoint: str) -> int | None:
    """The pid of the daemon serving `mountpoint`: its pid file, else its command line."""
    import psutil

    from fs.control import find_mount, run_dir

    mi = find_mount(mountpoint)
    if mi is not None:
        try:
            with open(os.path.join(run_dir(), "pid", f"{mi.major}:{mi.minor}.pid")) as f:
                return int(f.read().strip())
        except (OSError, ValueError):
            pass
    target = os.path.realpath(mountpoint)
    me = os.getpid()
    for p in psutil.process_iter(["pid", "cmdline"]):
        cmd = p.info["cmdline"] or []
        names = [os.path.basename(c) for c in cmd[:3]]
        daemon = "mount.scoutfs" in names or ("scoutfs" in names and "mount" in cmd[:4])
        if p.info["pid"] != me and daemon and \
                any(os.path.realpath(c) == target for c in cmd if c.startswith("/")):
            return p.info["pid"]
    return None


def _tell_forced(mountpoint: str) -> None:
    """Tell the daemon a forced unmount is coming (it then leaves without commit or
    farewell).  Best effort: a dead or hung daemon is unmounted all the same.  Never stats
    the mount point (a hung daemon would hang us)."""
    import json
    import socket

    from fs.control import find_mount, socket_path

    mi = find_mount(mountpoint)
    if mi is None:
        return
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(FORCE_NOTICE_TIMEOUT_S)
            s.connect(socket_path(mi.major, mi.minor))
            s.sendall(json.dumps({"op": "force_unmount"}).encode() + b"\n")
            s.recv(4096)
    except OSError:
        pass


def umount_helper_main(argv: list[str] | None = None) -> int:
    """Entry point of /sbin/umount.fuse.scoutfs, called by umount(8) as
    ``umount.fuse.scoutfs DIR [-flnrv] [-N ns] [-t type]``.

    scoutfs's unmount is synchronous: it returns once the mount has committed and left the
    cluster.  A FUSE unmount returns as soon as the kernel lets go, so this helper unmounts
    (``umount -i``, which does not call helpers again) and then waits for the daemon to finish
    its commit, farewell and exit; a lazy unmount (-l) does not wait.
    """
    import subprocess

    import psutil

    if argv is None:
        argv = sys.argv[1:]
    paths = [a for a in argv if not a.startswith("-")]
    flags = "".join(a[1:] for a in argv if a.startswith("-") and not a.startswith("--"))
    skip = {"t", "N"}
    opts = [a for a in argv if a.startswith("-") and a[1:2] not in skip]
    if not paths:
        sys.stderr.write("umount.scoutfs: no mount point given\n")
        return 1
    mnt = paths[0]
    pid = None if "l" in flags else _daemon_pid(mnt)
    if "f" in flags:
        _tell_forced(mnt)
    rc = subprocess.call(["umount", "-i", *[o for o in opts if o != "-i"], mnt])
    if rc != 0 or pid is None:
        return rc
    try:
        psutil.Process(pid).wait(timeout=UMOUNT_WAIT_S)
    except psutil.NoSuchProcess:
        pass
    except psutil.TimeoutExpired:
        sys.stderr.write(f"umount.scoutfs: daemon {pid} still running after "
                         f"{UMOUNT_WAIT_S:.0f}s\n")
        return 1
    return 0
