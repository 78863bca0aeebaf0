"""The mount daemon's lifecycle: checks, fork, FUSE session, control socket, shutdown.

`start(data_path, mountpoint, opts)` runs in the `scoutfs mount` / `mount.scoutfs` process:
it checks the devices and the mount point, forks the daemon (double fork, setsid, stdin
/dev/null) and waits on a pipe for ``ready`` (the FUSE mount exists and the control socket
listens) or ``error <message>``.  The daemon watches a second pipe whose write end only the
waiting parent holds: if the parent dies before readiness, the daemon gives up (unmounting if
it had mounted) so no orphan is left.

The daemon (`_daemon_main`, under trio): `Mount.open` (fs.super), the FUSE mount
(`fs.vfs.init`: an `fs.fuse.Session`), the control server, the pid file
``<run dir>/pid/<maj>:<min>.pid``, then the session runs until the kernel unmounts
(``umount MNT``) or SIGTERM/SIGINT (the session stops reading, then we unmount).  It then
removes its socket and pid file, commits and says farewell (`Mount.close`) and exits 0.  Logs
go to ``<run dir>/log/<fsid16>.<rid16>.log`` (or ``log_path=``); stdout/stderr point there too.

POSIX ACLs: with the ``acl`` option (the default) INIT asks for FUSE_POSIX_ACL and
FUSE_DONT_MASK; the kernel then enforces ACLs kept in the ``system.posix_acl_*`` xattrs the
filesystem layer stores, and create modes reach us unmasked with the caller's umask.
"""

from __future__ import annotations

import errno
import logging
import logging.handlers
import os
import signal
import stat
import sys
import traceback
from typing import Any

from fs import kmsg
from fs.errors import FsError
from fs.kmsg import KMSG

log = logging.getLogger("scoutfs.mount")


class MountError(Exception):
    """A refused mount.  ``kernel``: upstream's kernel refuses it in fill_super and says so
    in the kernel log (a missing mount point is mount(8)'s to report)."""

    def __init__(self, message: str, err: int = errno.EINVAL, kernel: bool = True):
        super().__init__(message)
        self.message = message
        self.errno = err
        self.kernel = kernel


def run_dir() -> str:
    return os.environ.get("SCOUTFS_RUN_DIR", "/run/scoutfs")


# --------------------------------------------------------------------------- checks


# FUSE mounts start with 128 KiB of read-ahead; whole-MiB read-ahead lets sequential reads
# arrive as 1 MiB requests (shared/perf/anchors.md measured x1.4-2.7 on cold reads)
READ_AHEAD_KB = 1024


UTAB_DIR = "/run/mount"


def _register_utab(data_path: str, mountpoint: str) -> None:
    """Record the mount in libmount's utab so that umount(8) runs our umount helper.

    umount(8) only runs /sbin/umount.fuse.scoutfs for mounts it finds in utab; the helper
    waits for the daemon to commit and exit, which makes unmounting synchronous as it is in
    scoutfs (a remount or fsck right after umount must find the volume idle).  umount(8)
    removes the entry again when it unmounts.
    """
    import fcntl

    line = f"SRC={os.path.abspath(data_path)} TARGET={os.path.abspath(mountpoint)} ROOT=/\n"
    try:
        os.makedirs(UTAB_DIR, exist_ok=True)
        with open(os.path.join(UTAB_DIR, "utab.lock"), "a") as lockf:
            fcntl.flock(lockf, fcntl.LOCK_EX)
            utab = os.path.join(UTAB_DIR, "utab")
            # drop entries of mounts that vanished without umount(8) (a killed daemon whose
            # connection was aborted), so the file does not grow without bound
            with open("/proc/self/mountinfo") as mi:
                mounted = {fields.split()[4] for fields in mi}
            try:
                with open(utab) as f:
                    keep = [ln for ln in f if _utab_target(ln) in mounted]
            except FileNotFoundError:
                keep = []
            tmp = utab + ".tmp"
            with open(tmp, "w") as f:
                f.writelines(keep + [line])
            os.replace(tmp, utab)
    except OSError as e:
        sys.stderr.write(f"scoutfs: warning: could not record the mount in utab: {e}\n")


def _utab_target(line: str) -> str | None:
    for field in line.split():
        if field.startswith("TARGET="):
            return field[len("TARGET="):]
    return None


def _raise_read_ahead(major: int, minor: int) -> None:
    """Raise our FUSE mount's backing-device read-ahead (a sysfs write, never a request to our
    own mount).  Called once the INIT reply is written: the kernel lowers read-ahead to the
    reply's max_readahead when it takes the reply, so an earlier write would be undone."""
    path = f"/sys/class/bdi/{major}:{minor}/read_ahead_kb"
    try:
        with open(path, "w") as f:
            f.write(f"{READ_AHEAD_KB}\n")
    except OSError as e:
        log.warning("could not raise read-ahead (%s): %s", path, e.strerror)


def _dev_id(st: os.stat_result) -> tuple:
    if stat.S_ISBLK(st.st_mode):
        return ("blk", st.st_rdev)
    return ("file", st.st_dev, st.st_ino)


def _read_super(path: str, what: str):
    from fs.block import Device, read_super

    try:
        dev = Device(path, readonly=True)
    except OSError as e:
        raise MountError(f"could not open {what}: {os.strerror(e.errno)} ({e.errno})",
                         e.errno) from None
    except FsError as e:
        raise MountError(f"could not open {what}: {e.msg or os.strerror(e.errno)}",
                         e.errno) from None
    try:
        return read_super(dev)
    except FsError as e:
        raise MountError(f"error reading {what} super block: {e.msg or os.strerror(e.errno)}",
                         e.errno) from None
    finally:
        dev.close()


def check_devices(meta_path: str, data_path: str):
    """The checks scoutfs's fill_super makes before mounting; returns the meta super."""
    from fs import format as fmt

    try:
        mst = os.stat(meta_path)
    except OSError as e:
        raise MountError(f"could not open metadev: {os.strerror(e.errno)} ({e.errno})",
                         e.errno) from None
    try:
        dst = os.stat(data_path)
    except OSError as e:
        raise MountError(f"could not open data device '{data_path}': "
                         f"{os.strerror(e.errno)} ({e.errno})", e.errno) from None
    for st, what in ((mst, "metadev"), (dst, "data device")):
        if not (stat.S_ISBLK(st.st_mode) or stat.S_ISREG(st.st_mode)):
            raise MountError(f"{what} must be a block device or an image file",
                             errno.ENOTBLK)
    if _dev_id(mst) == _dev_id(dst):
        raise MountError("metadev_path and the data device are the same device", errno.EINVAL)
    msb = _read_super(meta_path, "metadev")
    dsb = _read_super(data_path, "data device")
    if not msb.flags & fmt.SUPER_FLAG_META:
        raise MountError("meta_super META flag not set")
    if dsb.flags & fmt.SUPER_FLAG_META:
        raise MountError("data_super META flag set")
    if msb.fsid != dsb.fsid or bytes(msb.uuid) != bytes(dsb.uuid):
        raise MountError(f"superblock UUID mismatch: meta device fsid {msb.fsid:016x}, data "
                         f"device fsid {dsb.fsid:016x}")
    return msb


def check_mountpoint(mnt: str) -> None:
    try:
        st = os.stat(mnt)
    except OSError as e:
        raise MountError(f"mount point {mnt} does not exist", e.errno, kernel=False) from None
    if not stat.S_ISDIR(st.st_mode):
        raise MountError(f"mount point {mnt} is not a directory", errno.ENOTDIR,
                         kernel=False)


# --------------------------------------------------------------------------- parent side


def start(data_path: str, mountpoint: str, opts: dict[str, Any]) -> int:
    """Check, fork the daemon and wait for it; print errors; return the exit status."""
    try:
        sb = check_devices(opts["metadev_path"], data_path)
        check_mountpoint(mountpoint)
    except MountError as e:
        if e.kernel:
            kmsg.write_once(data_path, logging.ERROR, e.message)
        sys.stderr.write(f"scoutfs: {e.message}\n")
        return 1
    data_path = os.path.abspath(data_path)
    mountpoint = os.path.abspath(mountpoint)
    opts = dict(opts, metadev_path=os.path.abspath(opts["metadev_path"]))
    sys.stdout.flush()
    sys.stderr.flush()
    st_r, st_w = os.pipe()
    alive_r, alive_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # first child
        try:
            os.close(st_r)
            os.close(alive_w)
            os.setsid()
            if os.fork() != 0:
                os._exit(0)
            code = _daemon(data_path, mountpoint, opts, sb, st_w, alive_r)
        except BaseException:
            try:
                os.write(st_w, b"error daemon failed: "
                         + traceback.format_exc().replace("\n", " | ").encode() + b"\n")
            except OSError:
                pass
            code = 1
        os._exit(code)
    os.close(st_w)
    os.close(alive_r)
    os.waitpid(pid, 0)
    try:
        line = _wait_for_daemon(st_r)
    except KeyboardInterrupt:
        # Ctrl-C while the mount waits: closing our pipe makes the daemon give up
        sys.stderr.write("scoutfs: mount interrupted, giving up\n")
        return 1
    finally:
        os.close(st_r)
        os.close(alive_w)
    if line.startswith("ready"):
        # nothing here touches the new mount point: its first request could wait for a
        # server that is still recovering, and this command would hang in it
        _register_utab(data_path, mountpoint)
        return 0
    if line.startswith("error "):
        sys.stderr.write(f"scoutfs: {line[6:]}\n")
    else:
        sys.stderr.write("scoutfs: mount daemon exited before the mount was ready\n")
    return 1


def _wait_for_daemon(st_r: int) -> str:
    """The daemon's last word on the status pipe ("ready ..." or "error ..."; "" if it died
    first).  Its "note ..." lines, why a mount still waits, go to stderr as they come."""
    buf = b""
    while True:
        while b"\n" in buf:
            raw, buf = buf.split(b"\n", 1)
            line = raw.decode(errors="replace")
            if not line.startswith("note "):
                return line
            sys.stderr.write(f"scoutfs: {line[5:]}\n")
            sys.stderr.flush()
        chunk = os.read(st_r, 4096)
        if not chunk:
            return ""
        buf += chunk


# --------------------------------------------------------------------------- daemon side


class _Status:
    """The status pipe to the waiting mount command: notes while the mount waits, then one
    last line ("ready ..." or "error ...") that closes it."""

    def __init__(self, fd: int):
        self.fd = fd

    def note(self, text: str) -> None:
        if self.fd >= 0:
            try:
                os.write(self.fd, b"note " + text.replace("\n", " ").encode() + b"\n")
            except OSError:
                pass

    def send(self, line: str) -> None:
        if self.fd < 0:
            return
        try:
            os.write(self.fd, line.replace("\n", " ").encode() + b"\n")
        except OSError:
            pass
        os.close(self.fd)
        self.fd = -1


class _NoteHandler(logging.Handler):
    """Until the mount is ready, the daemon's warnings (why it waits: no quorum yet, ...)
    are also shown on the mount command's stderr.  Errors are not: a failed mount's reason
    comes as its "error" line."""

    def __init__(self, status: _Status):
        super().__init__(logging.WARNING)
        self.status = status

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno == logging.WARNING:
            self.status.note(record.getMessage())


def _redirect_std(path: str | None) -> None:
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    if path is None:
        os.dup2(null, 1)
        os.dup2(null, 2)
    else:
        fd = _open_log(path)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
    os.close(null)


def _log_path(opts: dict, fsid: int, rid: int) -> str:
    return opts.get("log_path") or os.path.join(run_dir(), "log", f"{fsid:016x}.{rid:016x}.log")


def _daemon(data_path: str, mnt: str, opts: dict, sb, st_w: int, alive_r: int) -> int:
    import trio

    # until the rid is known, log records wait in memory (or go to log_path)
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    for h in list(root.handlers):
        root.removeHandler(h)
    early = None
    if opts.get("log_path"):
        _redirect_std(opts["log_path"])
        _add_file_handler(opts["log_path"])
    else:
        _redirect_std(None)
        early = logging.handlers.MemoryHandler(100000, flushLevel=logging.CRITICAL + 1)
        root.addHandler(early)
    status = _Status(st_w)
    root.addHandler(_NoteHandler(status))  # a no-op once the status pipe is closed
    # the kernel log gets the records marked extra=KMSG; named after the data device until
    # the mount knows its fsid and rid
    kh = kmsg.install(data_path)
    d = _Daemon(data_path, mnt, opts, sb, status, alive_r, early, kh)
    try:
        trio.run(d.main)
    except BaseException as e:  # noqa: BLE001
        # a refusal (FsError, MountError) is the mount's answer; anything else is a bug
        refusal = _is_refusal(e)
        log.error("daemon failed: %s", _describe(e), exc_info=not refusal,
                  extra=None if refusal else KMSG)
        status.send(f"error {_describe(e)}")
        d.finish_logging()
        return 1
    d.finish_logging()
    return d.exit_code


def _is_refusal(e: BaseException) -> bool:
    if isinstance(e, BaseExceptionGroup) and len(e.exceptions) == 1:
        return _is_refusal(e.exceptions[0])
    return isinstance(e, (FsError, MountError))


def _describe(e: BaseException) -> str:
    if isinstance(e, FsError):
        return e.msg or os.strerror(e.errno)
    if isinstance(e, MountError):
        return e.message
    if isinstance(e, BaseExceptionGroup) and len(e.exceptions) == 1:
        return _describe(e.exceptions[0])
    return f"{type(e).__name__}: {e}"


def _open_log(path: str) -> int:
    """Open (append) a log file, private to root: the log tells what other users did and
    what the mount holds.  The file is made 0600 (also one an older daemon left 0644); a
    dir we create for it is 0700, and so is made the run dir's own log dir."""
    d = os.path.dirname(path)
    if d and not os.path.isdir(d):
        os.makedirs(d, mode=0o700, exist_ok=True)
    elif d and os.path.realpath(d) == os.path.realpath(os.path.join(run_dir(), "log")):
        os.chmod(d, 0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
    os.fchmod(fd, 0o600)
    return fd


def _add_file_handler(path: str) -> logging.Handler:
    os.close(_open_log(path))  # FileHandler would create it 0666 & ~umask
    h = logging.FileHandler(path)
    h.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(h)
    return h


def _register_force_unmount_op() -> None:
    """Control op `force_unmount`: the umount helper's -f says so before the kernel drops
    the FUSE connection, so the daemon leaves as a crashed mount would (no commit, no
    farewell) and the server fences it (spec §2.3)."""
    from fs.control import op

    @op("force_unmount")
    async def _force_unmount(srv, req) -> dict:
        if req.uid != 0:
            raise FsError(errno.EPERM, "force unmount needs root")
        srv.mount.forced = True
        log.warning("forced unmount requested by pid %d", req.pid)
        return {}


class _Daemon:
    def __init__(self, data_path, mnt, opts, sb, status, alive_r, early, kh):
        self.data_path, self.mnt, self.opts, self.sb = data_path, mnt, opts, sb
        self.status, self.alive_r, self.early = status, alive_r, early
        self.kmsg = kh  # fs.kmsg.KmsgHandler
        self.exit_code = 0
        self.ready = False
        self.fuse_running = False
        self.fuse_inited = False
        self.terminated = False
        self.session = None  # fs.fuse.Session once mounted
        self.files: list[str] = []  # ours alone (named after our pid): removed at exit
        self.pidfile: str | None = None  # named after the device number: see _shutdown

    def finish_logging(self) -> None:
        if self.early is not None:
            # never learned the rid: keep the records under rid 0
            fsid = self.sb.fsid if self.sb is not None else 0
            path = _log_path(self.opts, fsid, 0)
            h = _add_file_handler(path)
            self.early.setTarget(h)
            self.early.flush()
            logging.getLogger().removeHandler(self.early)
            self.early = None

    def _start_logging(self, fsid: int, rid: int) -> None:
        self.kmsg.writer.set_ident(fsid, rid)
        if self.early is None:
            return
        path = _log_path(self.opts, fsid, rid)
        _redirect_std(path)
        h = _add_file_handler(path)
        self.early.setTarget(h)
        self.early.flush()
        logging.getLogger().removeHandler(self.early)
        self.early = None

    async def _watch_parent(self, cancel_scope) -> None:
        import trio

        await trio.lowlevel.wait_readable(self.alive_r)
        if not self.ready:
            log.warning("mount command went away before the mount was ready: giving up")
            self.exit_code = 1
            cancel_scope.cancel()

    async def _signals(self, cancel_scope) -> None:
        import trio

        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as sigs:
            async for sig in sigs:
                log.info("signal %d: unmounting", sig)
                if self.fuse_running:
                    self.terminated = True
                    self.session.terminate()
                else:
                    cancel_scope.cancel()

    async def main(self) -> None:
        import trio

        from fs import vfs
        from fs.control import ControlServer, find_mount

        _register_force_unmount_op()

        from fs.super import Mount as MountCls

        async with trio.open_nursery() as nursery:
            outer = nursery.cancel_scope
            nursery.start_soon(self._watch_parent, outer)
            nursery.start_soon(self._signals, outer)
            mount = None
            ctl = None
            notifier = vfs.Notifier()
            # the mount's own background tasks (server, commit timer, ...) live in their own
            # nursery so that after Mount.close they get a moment to finish on their own
            async with trio.open_nursery() as mnursery:
                try:
                    # test hook: a slow mount, to kill the waiting mount command meanwhile
                    await trio.sleep(float(os.environ.get("SCOUTFS_TEST_OPEN_DELAY_S", "0")))
                    early_ctl = None

                    def serve_early(m) -> None:
                        # a control socket before the FUSE mount exists: a server we start
                        # may need the fencing agent to see its requests through the view
                        nonlocal early_ctl
                        self.kmsg.writer.set_ident(m.fsid, m.rid)
                        early_ctl = ControlServer(m, 0, 0, path=os.path.join(
                            run_dir(), "ctl", f"opening.{os.getpid()}.sock"))
                        early_ctl.bind()
                        self.files.append(early_ctl.path)
                        nursery.start_soon(early_ctl.serve)

                    mount = await MountCls.open(self.opts["metadev_path"], self.data_path,
                                                self.opts, mnursery, on_created=serve_early)
                    self._start_logging(mount.fsid, mount.rid)
                    log.info("mounting %s on %s (meta %s) fsid %016x rid %016x pid %d",
                             self.data_path, self.mnt, self.opts["metadev_path"], mount.fsid,
                             mount.rid, os.getpid())
                    ops = vfs.ScoutfsOperations(mount.fs, timeout_ms=self.opts["attr_timeout_ms"],
                                                acl=self.opts["acl"], readonly=self.opts["ro"],
                                                notifier=notifier)
                    mount.notifier = notifier  # for lock invalidation's kernel notifications
                    mount.kernel_inodes = ops.lookups  # the inodes the kernel holds
                    mount.open_inodes = ops.open_inos  # the open map (fs/omap.py)
                    try:
                        self.session = vfs.init(ops, self.mnt,
                                                vfs.fuse_options(self.data_path, self.opts))
                    except RuntimeError as e:
                        raise MountError(f"FUSE mount on {self.mnt} failed: {e}") from None
                    self.fuse_inited = True
                    mi = find_mount(self.mnt)
                    if mi is None:
                        raise MountError(f"{self.mnt} not found in /proc/self/mountinfo after "
                                         "mounting")
                    self.session.on_init = lambda: _raise_read_ahead(mi.major, mi.minor)
                    ctl = ControlServer(mount, mi.major, mi.minor, mi.mnt_id)
                    ctl.bind()
                    await nursery.start(ctl.serve)
                    if early_ctl is not None:
                        early_ctl.remove()
                    piddir = os.path.join(run_dir(), "pid")
                    os.makedirs(piddir, exist_ok=True)
                    pidfile = os.path.join(piddir, f"{mi.major}:{mi.minor}.pid")
                    with open(pidfile, "w") as f:
                        f.write(f"{os.getpid()}\n")
                    self.pidfile = pidfile
                    notifier.start(self.session)
                    nursery.start_soon(ops.run_workers)
                    if outer.cancel_called:
                        return
                    self.ready = True
                    self.status.send(f"ready {os.getpid()}")
                    self.fuse_running = True
                    await self.session.run()
                    self.fuse_running = False
                    log.info("FUSE session ended%s", " (signal)" if self.terminated else "")
                finally:
                    with trio.CancelScope(shield=True):
                        await self._shutdown(mount, ctl, notifier)
                        with trio.move_on_after(0.5):
                            while mnursery.child_tasks:
                                await trio.sleep(0.02)
                    mnursery.cancel_scope.cancel()
                    nursery.cancel_scope.cancel()

    async def _shutdown(self, mount, ctl, notifier) -> None:
        notifier.stop(timeout=1.0)
        if self.fuse_inited:
            # still mounted after a signal, a failure or a vanished parent: detach it
            unmount = self.terminated or not self.ready or self.fuse_running
            try:
                self.session.close(unmount=unmount)
            except Exception:
                log.exception("closing the FUSE session failed")
            self.fuse_inited = False
        if mount is not None:
            try:
                await mount.close()
            except Exception:
                log.exception("closing the mount failed")
                self.exit_code = 1
            log.info("unmounted %s", self.mnt)
        # the control socket (and with it our sysfs dir) lives until the mount closed: a
        # member still leaving may win an election, and its fence requests must be seen
        if ctl is not None:
            ctl.remove()
        for p in self.files:
            try:
                os.unlink(p)
            except FileNotFoundError:
                pass
        # the pid file and control socket are named after the FUSE device number, which a
        # mount made since our FUSE mount went away may have been given: remove only ours
        if self.pidfile is not None:
            try:
                with open(self.pidfile) as f:
                    if f.read().strip() == str(os.getpid()):
                        os.unlink(self.pidfile)
            except FileNotFoundError:
                pass
