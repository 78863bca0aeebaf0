"""Crash consistency: `kill -9` the mount daemon in the middle of a stream of writes and
fsyncs, then fsck, remount and check that everything that was made durable is there.

A writer subprocess (this file run as a script, so the test process never blocks in a dead
FUSE mount) performs a deterministic random stream of operations on the mount: create,
write/overwrite/append (1 byte .. 4 MiB), O_TRUNC rewrites, truncate, mkdir, rename,
unlink, link, setxattr/removexattr, interleaved with fsync of files, fsync of directories
and `scoutfs sync`.  It keeps a model of the namespace and, outside the mount, a journal of
JSON lines, one per path whose *durable* state changes:

- before an operation touches a path it writes ``{"p": path, "s": null}`` (unknown from now
  on: the crash may leave either state);
- after a durability point it writes the path's state ``{"t": "f", size, sha, x}`` (a file:
  size, sha256 of the contents, sha256 of each user.* xattr), ``{"t": "d"}`` or
  ``{"t": "a"}`` (absent) once the path is durable again.

A path is durable when its name is (its directory was fsync'd since the name last
changed, or `scoutfs sync` ran; directories are never renamed or removed) and, for a file,
its inode is (the file was fsync'd, through any of its names, since its data or xattrs last
changed).  After the crash only paths whose last journal record is a state are checked.

The test: mkfs on sparse image files, mount, start the writer, sleep a seeded random time
(0.1-3 s), `kill -9` the daemon, abort its FUSE connection, `umount -l`, kill the writer,
`scoutfs fsck` (must be clean), remount, compare with the journal, unmount, fsck again.

Knobs: ``SCOUTFS_CRASH_ITERATIONS`` (default 8) random crash points, seeds
``SCOUTFS_CRASH_SEED`` (default 1) .. +N-1, and N/4 (at least 2) crashes during 64 MiB
writes, seeds SEED+1000 ...  Reproduce one with
``SCOUTFS_CRASH_SEED=S SCOUTFS_CRASH_ITERATIONS=1`` (the stream and the delay are seeded; the
point in the stream the kill lands on still depends on the machine's speed: the writer's
op log is printed on failure).  ``SCOUTFS_CRASH_KEEP=DIR`` copies the images of a failed
iteration there.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import random
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

if __name__ != "__main__":  # the writer subprocess needs none of the test machinery
    import pytest

    from conftest import Env, _free_port, _fuse_usable, is_mounted, mountinfo_line, wait_gone

    pytestmark = pytest.mark.skipif(not _fuse_usable(),
                                    reason="/dev/fuse unusable (or not root)")

REPO = Path(__file__).resolve().parents[2]
PY = sys.executable

META_SIZE = 1 << 30
DATA_SIZE = 4 << 30
MiB = 1 << 20


def _sha(b: bytes | bytearray | memoryview) -> str:
    return hashlib.sha256(b).hexdigest()


# =========================================================================== the writer


class _Ino:
    def __init__(self) -> None:
        self.data = bytearray()
        self.xattrs: dict[str, bytes] = {}
        self.names: set[str] = set()
        self.durable = False  # fsync'd since the last change of data or xattrs
        self._state: dict | None = None

    def changed(self) -> None:
        self.durable = False
        self._state = None

    def state(self) -> dict:
        if self._state is None:
            self._state = {"t": "f", "size": len(self.data), "sha": _sha(self.data),
                           "x": {k: _sha(v) for k, v in sorted(self.xattrs.items())}}
        return self._state


class Writer:
    """The random operation stream, its model of the namespace and the durability journal."""

    DIRS = ["", "d0", "d1", "d2", "d0/e0"]
    NAMES = [f"f{i:02d}" for i in range(10)]
    MAX_LIVE = 48 * MiB  # bytes of file data the model may hold at once

    def __init__(self, mnt: str, journal: str, oplog: str, seed: int) -> None:
        self.mnt = mnt
        self.rng = random.Random(seed)
        self.jfd = os.open(journal, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self.ofd = os.open(oplog, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self.files: dict[str, _Ino] = {}  # path -> inode
        self.dirs: set[str] = {""}
        self.pending: dict[str, set[str]] = {"": set()}  # dir -> names changed, not fsync'd
        self.universe: set[str] = set()
        self.emitted: dict[str, dict | None] = {}
        self.opno = 0

    # --------------------------------------------------------------- journal

    def _journal(self, rec: dict) -> None:
        os.write(self.jfd, (json.dumps(rec, sort_keys=True) + "\n").encode())

    def log(self, msg: str) -> None:
        os.write(self.ofd, f"{self.opno} {msg}\n".encode())

    def real(self, path: str) -> str:
        return os.path.join(self.mnt, path)

    @staticmethod
    def parent(path: str) -> str:
        return os.path.dirname(path)

    def _dir_durable(self, d: str) -> bool:
        while d:
            if os.path.basename(d) in self.pending[self.parent(d)]:
                return False
            d = self.parent(d)
        return True

    def durable_state(self, path: str) -> dict | None:
        d = self.parent(path)
        if not self._dir_durable(d) or os.path.basename(path) in self.pending[d]:
            return None
        ino = self.files.get(path)
        if ino is not None:
            return ino.state() if ino.durable else None
        if path in self.dirs:
            return {"t": "d"}
        return {"t": "a"}

    def unknown(self, *paths: str) -> None:
        """Before an operation that changes these paths: their durable state is unknown."""
        for p in paths:
            self.universe.add(p)
            if self.emitted.get(p) is not None:
                self.emitted[p] = None
                self._journal({"n": self.opno, "p": p, "s": None})

    def publish(self) -> None:
        """After a durability point: journal every path whose durable state changed."""
        for p in sorted(self.universe):
            s = self.durable_state(p)
            if s is not None and s != self.emitted.get(p):
                self.emitted[p] = s
                self._journal({"n": self.opno, "p": p, "s": s})

    # --------------------------------------------------------------- durability

    def fsync_fd(self, fd: int, ino: _Ino) -> None:
        os.fsync(fd)
        ino.durable = True
        self.publish()

    def fsync_dir(self, d: str) -> None:
        self.log(f"fsync dir {d or '/'}")
        fd = os.open(self.real(d), os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        self.pending[d].clear()
        self.publish()

    def sync_all(self) -> None:
        self.log("scoutfs sync")
        subprocess.run([PY, "-m", "fs.cli.main", "sync", "-p", self.mnt], check=True,
                       capture_output=True, timeout=300)
        for names in self.pending.values():
            names.clear()
        for ino in self.files.values():
            ino.durable = True
        self.publish()

    # --------------------------------------------------------------- operations

    def _size(self) -> int:
        r = self.rng.random()
        live = sum(len(i.data) for i in set(self.files.values()))
        if r < 0.5 or live > self.MAX_LIVE:
            return self.rng.randint(1, 4096)
        if r < 0.8:
            return self.rng.randint(4096, 256 * 1024)
        if r < 0.95:
            return self.rng.randint(256 * 1024, MiB)
        return self.rng.randint(MiB, 4 * MiB)

    def _bytes(self, n: int) -> bytes:
        return self.rng.randbytes(n)

    def _free_path(self) -> str | None:
        cands = [os.path.join(d, n) for d in sorted(self.dirs) for n in self.NAMES
                 if os.path.join(d, n) not in self.files and os.path.join(d, n) not in self.dirs]
        return self.rng.choice(cands) if cands else None

    def _file(self) -> str | None:
        return self.rng.choice(sorted(self.files)) if self.files else None

    def _maybe_fsync(self, fd: int, ino: _Ino, p: float = 0.3) -> None:
        if self.rng.random() < p:
            self.log("  + fsync")
            self.fsync_fd(fd, ino)

    def op_create(self) -> None:
        path = self._free_path()
        if path is None:
            return self.op_unlink()
        data = self._bytes(self._size()) if self.rng.random() < 0.8 else b""
        self.log(f"create {path} len={len(data)}")
        self.unknown(path)
        ino = _Ino()
        fd = os.open(self.real(path), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            self.files[path] = ino
            ino.names.add(path)
            self.pending[self.parent(path)].add(os.path.basename(path))
            if data:
                os.pwrite(fd, data, 0)
                ino.data[:] = data
            self._maybe_fsync(fd, ino)
        finally:
            os.close(fd)

    def op_write(self) -> None:
        path = self._file()
        if path is None:
            return self.op_create()
        ino = self.files[path]
        size = len(ino.data)
        r = self.rng.random()
        if r < 0.4 and size:
            off = self.rng.randrange(size)
        elif r < 0.85:
            off = size
        else:
            off = size + self.rng.randint(1, 64 * 1024)  # leaves a hole
        data = self._bytes(self._size())
        self.log(f"write {path} off={off} len={len(data)}")
        self.unknown(*ino.names)
        ino.changed()
        fd = os.open(self.real(path), os.O_WRONLY)
        try:
            os.pwrite(fd, data, off)
            if off > size:
                ino.data.extend(bytes(off - size))
            ino.data[off:off + len(data)] = data
            self._maybe_fsync(fd, ino)
        finally:
            os.close(fd)

    def op_rewrite(self) -> None:
        path = self._file()
        if path is None:
            return self.op_create()
        ino = self.files[path]
        data = self._bytes(self._size())
        self.log(f"rewrite (O_TRUNC) {path} len={len(data)}")
        self.unknown(*ino.names)
        ino.changed()
        fd = os.open(self.real(path), os.O_WRONLY | os.O_TRUNC)
        try:
            ino.data.clear()
            os.write(fd, data)
            ino.data[:] = data
            self._maybe_fsync(fd, ino)
        finally:
            os.close(fd)

    def op_truncate(self) -> None:
        path = self._file()
        if path is None:
            return self.op_create()
        ino = self.files[path]
        size = len(ino.data)
        new = self.rng.randint(0, size + size // 2 + 8192)
        self.log(f"truncate {path} {size} -> {new}")
        self.unknown(*ino.names)
        ino.changed()
        fd = os.open(self.real(path), os.O_WRONLY)
        try:
            os.ftruncate(fd, new)
            if new < size:
                del ino.data[new:]
            else:
                ino.data.extend(bytes(new - size))
            self._maybe_fsync(fd, ino)
        finally:
            os.close(fd)

    def op_setxattr(self) -> None:
        path = self._file()
        if path is None:
            return self.op_create()
        ino = self.files[path]
        name = f"user.k{self.rng.randrange(6)}"
        value = self._bytes(self.rng.choice([0, 1, 17, 200, 3000]))
        self.log(f"setxattr {path} {name} len={len(value)}")
        self.unknown(*ino.names)
        ino.changed()
        os.setxattr(self.real(path), name, value)
        ino.xattrs[name] = value

    def op_removexattr(self) -> None:
        path = self._file()
        if path is None or not self.files[path].xattrs:
            return self.op_setxattr()
        ino = self.files[path]
        name = self.rng.choice(sorted(ino.xattrs))
        self.log(f"removexattr {path} {name}")
        self.unknown(*ino.names)
        ino.changed()
        os.removexattr(self.real(path), name)
        del ino.xattrs[name]

    def op_mkdir(self) -> None:
        todo = [d for d in self.DIRS if d not in self.dirs and self.parent(d) in self.dirs
                and d not in self.files]
        if not todo:
            return self.op_write()
        d = self.rng.choice(todo)
        self.log(f"mkdir {d}")
        self.unknown(d)
        os.mkdir(self.real(d))
        self.dirs.add(d)
        self.pending[d] = set()
        self.pending[self.parent(d)].add(os.path.basename(d))
        if self.rng.random() < 0.7:
            self.fsync_dir(self.parent(d))

    def _name_changed(self, path: str) -> None:
        self.pending[self.parent(path)].add(os.path.basename(path))

    def op_rename(self) -> None:
        src = self._file()
        if src is None:
            return self.op_create()
        if self.rng.random() < 0.5 and len(self.files) > 1:
            dst = self.rng.choice(sorted(self.files))  # replace an existing file
        else:
            dst = self._free_path()
        if dst is None or dst == src or self.files.get(dst) is self.files[src]:
            return self.op_write()
        ino = self.files[src]
        self.log(f"rename {src} -> {dst}" + (" (replacing)" if dst in self.files else ""))
        self.unknown(src, dst)
        os.rename(self.real(src), self.real(dst))
        old = self.files.pop(dst, None)
        if old is not None:
            old.names.discard(dst)
        del self.files[src]
        ino.names.discard(src)
        ino.names.add(dst)
        self.files[dst] = ino
        self._name_changed(src)
        self._name_changed(dst)
        self._maybe_fsync_dirs(src, dst)

    def _maybe_fsync_dirs(self, *paths: str) -> None:
        if self.rng.random() < 0.4:
            for d in sorted({self.parent(p) for p in paths}):
                self.fsync_dir(d)

    def op_unlink(self) -> None:
        path = self._file()
        if path is None:
            return self.op_create()
        self.log(f"unlink {path}")
        self.unknown(path)
        os.unlink(self.real(path))
        ino = self.files.pop(path)
        ino.names.discard(path)
        self._name_changed(path)
        self._maybe_fsync_dirs(path)

    def op_link(self) -> None:
        src = self._file()
        dst = self._free_path()
        if src is None or dst is None:
            return self.op_create()
        self.log(f"link {src} -> {dst}")
        self.unknown(dst)
        os.link(self.real(src), self.real(dst))
        ino = self.files[src]
        ino.names.add(dst)
        self.files[dst] = ino
        self._name_changed(dst)
        self._maybe_fsync_dirs(dst)

    def op_fsync_file(self) -> None:
        path = self._file()
        if path is None:
            return self.op_create()
        self.log(f"fsync {path}")
        fd = os.open(self.real(path), os.O_RDONLY)
        try:
            self.fsync_fd(fd, self.files[path])
        finally:
            os.close(fd)

    def op_fsync_dir(self) -> None:
        dirty = sorted(d for d, names in self.pending.items() if names)
        self.fsync_dir(self.rng.choice(dirty) if dirty else self.rng.choice(sorted(self.dirs)))

    def op_sync(self) -> None:
        self.sync_all()

    OPS = [("create", 10), ("write", 28), ("rewrite", 4), ("truncate", 6), ("setxattr", 6),
           ("removexattr", 2), ("mkdir", 2), ("rename", 7), ("unlink", 5), ("link", 4),
           ("fsync_file", 12), ("fsync_dir", 9), ("sync", 2)]

    def step(self) -> None:
        self.opno += 1
        names, weights = zip(*self.OPS, strict=True)
        getattr(self, "op_" + self.rng.choices(names, weights)[0])()

    def run(self, nr_ops: int, final_sync: bool) -> None:
        self._journal({"ready": True})
        for _ in range(nr_ops):
            self.step()
        if final_sync:
            self.opno += 1
            self.sync_all()
            self._journal({"final": sorted([*self.files, *(d for d in self.dirs if d)])})


def big_writer(mnt: str, journal: str, oplog: str, seed: int, rounds: int) -> None:
    """Small durable files, then rounds of a 64 MiB overwrite + fsync, alternating between
    two files (so a crash in one round still has the other file's last round to check)."""
    w = Writer(mnt, journal, oplog, seed)
    for _ in range(20):
        w.opno += 1
        w.op_create()
    w.opno += 1
    w.op_mkdir()
    w.opno += 1
    w.sync_all()
    fds, inos = [], []
    try:
        for path in ("big0", "big1"):
            w.universe.add(path)
            fds.append(os.open(w.real(path), os.O_WRONLY | os.O_CREAT, 0o644))
            ino = _Ino()
            ino.names.add(path)
            w.files[path] = ino
            inos.append(ino)
            w._name_changed(path)
            w.fsync_fd(fds[-1], ino)
        w.fsync_dir("")
        rng = random.Random(seed)
        for r in range(rounds):
            path, fd, ino = f"big{r % 2}", fds[r % 2], inos[r % 2]
            w.opno += 1
            w.log(f"big round {r}: 64 MiB overwrite of {path} + fsync")
            w.unknown(path)
            ino.changed()
            w._journal({"big": r})
            h = hashlib.sha256()
            for i in range(64):
                b = rng.randbytes(MiB)
                os.pwrite(fd, b, i * MiB)
                h.update(b)
            os.fsync(fd)
            ino.durable = True
            ino._state = {"t": "f", "size": 64 * MiB, "sha": h.hexdigest(), "x": {}}
            w.publish()
    finally:
        for fd in fds:
            os.close(fd)


def writer_main(argv: list[str]) -> int:
    mode, mnt, journal, oplog, seed, count = argv
    if mode == "big":
        big_writer(mnt, journal, oplog, int(seed), int(count))
    else:
        Writer(mnt, journal, oplog, int(seed)).run(int(count), final_sync=(mode == "finite"))
    return 0


# =========================================================================== the tests

if __name__ != "__main__":

    def _journal(path: Path) -> tuple[dict[str, dict | None], list | None, list[dict]]:
        """Last state per path, the final namespace listing (if any), and every record."""
        last: dict[str, dict | None] = {}
        final = None
        recs = []
        if path.exists():
            for line in path.read_text().splitlines(keepends=True):
                if not line.endswith("\n"):
                    break  # a record cut short by the kill
                rec = json.loads(line)
                recs.append(rec)
                if "p" in rec:
                    last[rec["p"]] = rec["s"]
                elif "final" in rec:
                    final = rec["final"]
        return last, final, recs

    def _actual(mnt: Path, path: str) -> dict:
        full = mnt / path
        try:
            st = os.lstat(full)
        except FileNotFoundError:
            return {"t": "a"}
        if stat.S_ISDIR(st.st_mode):
            return {"t": "d"}
        if not stat.S_ISREG(st.st_mode):
            return {"t": f"mode {st.st_mode:o}"}
        h = hashlib.sha256()
        with open(full, "rb") as f:
            while b := f.read(4 * MiB):
                h.update(b)
        xs = {n: _sha(os.getxattr(full, n)) for n in sorted(os.listxattr(full))
              if n.startswith("user.")}
        return {"t": "f", "size": st.st_size, "sha": h.hexdigest(), "x": xs}

    def _check_durable(mnt: Path, journal: Path) -> tuple[int, list[str]]:
        last, final, _recs = _journal(journal)
        bad = []
        checked = 0
        for p, want in sorted(last.items()):
            if want is None:
                continue
            checked += 1
            got = _actual(mnt, p)
            if got != want:
                bad.append(f"{p}: journaled {want} but found {got}")
        if final is not None:
            found = []
            for dirpath, dirnames, filenames in os.walk(mnt):
                rel = os.path.relpath(dirpath, mnt)
                for n in dirnames + filenames:
                    found.append(n if rel == "." else os.path.join(rel, n))
            if sorted(found) != sorted(final):
                bad.append(f"namespace after the final sync {sorted(final)} but found "
                           f"{sorted(found)}")
        return checked, bad

    class CrashEnv:
        """One volume, its mount and the writer; `crash()` and a cleanup that always works."""

        def __init__(self, env: Env):
            self.env = env
            self.meta, self.data = env.root / "vol.meta", env.root / "vol.data"
            for path, size in ((self.meta, META_SIZE), (self.data, DATA_SIZE)):
                with open(path, "wb") as f:
                    f.truncate(size)  # sparse
            env.scoutfs("mkfs", "-A", "-f", "-Q", f"0,127.0.0.1,{_free_port()}", self.meta,
                        self.data, check=True)
            self.mnt = env.root / "mnt"
            self.journal = env.root / "journal"
            self.oplog = env.root / "ops.log"
            self.writer: subprocess.Popen | None = None
            self.writer_err = env.root / "writer.err"

        # ------------------------------------------------------------ mount / unmount

        def mount(self) -> None:
            # after a kill -9 the quorum blocks show our dead incarnation leading: the
            # shortest heartbeat timeout bounds the wait before the new election
            p = self.env.mount(self.meta, self.data, self.mnt,
                               extra="quorum_heartbeat_timeout_ms=2000")
            assert p.returncode == 0, f"mount failed: {p.stderr}\n{self.daemon_log()}"
            assert is_mounted(self.mnt)

        def majmin(self) -> str | None:
            mi = mountinfo_line(self.mnt)
            return mi[2] if mi else None

        def daemon_pid(self) -> int:
            pid = int((self.env.run / "pid" / f"{self.majmin()}.pid").read_text())
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
            assert str(self.env.root).encode() in cmd, "pid file names a process not ours"
            return pid

        def umount_clean(self) -> None:
            pid = self.daemon_pid()
            p = subprocess.run(["umount", str(self.mnt)], capture_output=True, text=True,
                               timeout=60)
            assert p.returncode == 0, p.stderr
            assert wait_gone(pid, 60), "daemon still running after umount"

        def abort_fuse(self, majmin: str | None) -> None:
            """Abort our mount's FUSE connection, only while it still is our mount."""
            if majmin is None or self.majmin() != majmin or not majmin.startswith("0:"):
                return
            abort = Path(f"/sys/fs/fuse/connections/{majmin[2:]}/abort")
            try:
                abort.write_text("1")
            except OSError:
                pass

        def crash(self) -> None:
            """kill -9 the daemon, make the kernel side go away, kill the writer."""
            majmin = self.majmin()
            pid = self.daemon_pid()
            os.kill(pid, signal.SIGKILL)
            assert wait_gone(pid, 30), f"daemon {pid} survived SIGKILL"
            self.abort_fuse(majmin)
            subprocess.run(["umount", "-l", str(self.mnt)], capture_output=True, timeout=30)
            self.kill_writer()
            deadline = time.monotonic() + 10
            while is_mounted(self.mnt) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert not is_mounted(self.mnt)

        # ------------------------------------------------------------ writer

        def start_writer(self, mode: str, seed: int, count: int) -> None:
            err = open(self.writer_err, "wb")
            try:
                self.writer = subprocess.Popen(
                    [PY, __file__, mode, str(self.mnt), str(self.journal), str(self.oplog),
                     str(seed), str(count)], env=self.env.env, cwd=str(REPO),
                    stdin=subprocess.DEVNULL, stdout=err, stderr=err, start_new_session=True)
            finally:
                err.close()

        def wait_journal(self, pred, what: str, timeout: float = 60) -> None:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if any(pred(r) for r in _journal(self.journal)[2]):
                    return
                self.assert_writer_ok()
                time.sleep(0.02)
            pytest.fail(f"writer never reached {what}\n{self.writer_output()}")

        def assert_writer_ok(self) -> None:
            """The writer must not have failed on its own (before any crash)."""
            if self.writer is not None and self.writer.poll() not in (None, 0):
                pytest.fail(f"writer failed (rc {self.writer.returncode}) before the crash\n"
                            f"{self.writer_output()}")

        def wait_writer(self, timeout: float = 300) -> None:
            try:
                self.writer.wait(timeout)
            except subprocess.TimeoutExpired:
                pytest.fail(f"writer still running after {timeout}s\n{self.writer_output()}")
            assert self.writer.returncode == 0, self.writer_output()

        def kill_writer(self) -> None:
            w = self.writer
            if w is None:
                return
            if w.returncode is None:
                try:
                    os.killpg(w.pid, signal.SIGKILL)  # its own session: it and its children
                except ProcessLookupError:
                    pass
                try:
                    w.wait(30)
                except subprocess.TimeoutExpired:
                    pass

        # ------------------------------------------------------------ checks

        def fsck(self, when: str) -> None:
            p = self.env.scoutfs("fsck", self.meta, self.data, timeout=300)
            if p.returncode != 0:
                self.keep(when)
                pytest.fail(f"fsck {when} exited {p.returncode}:\n{p.stdout}{p.stderr}\n"
                            f"{self.writer_output()}\ndaemon logs:\n{self.daemon_log()}")

        def check(self) -> int:
            checked, bad = _check_durable(self.mnt, self.journal)
            if bad:
                self.keep("durable check")
                pytest.fail("fsync'd state lost after the crash:\n  " + "\n  ".join(bad[:40])
                            + f"\n{self.writer_output()}\ndaemon logs:\n{self.daemon_log()}")
            return checked

        def writer_output(self) -> str:
            out = []
            if self.oplog.exists():
                lines = self.oplog.read_text().splitlines()
                out.append(f"writer op log (last 40 of {len(lines)}):\n  "
                           + "\n  ".join(lines[-40:]))
            if self.writer_err.exists() and self.writer_err.stat().st_size:
                out.append("writer stderr:\n" + self.writer_err.read_text()[-4000:])
            return "\n".join(out)

        def daemon_log(self) -> str:
            logs = sorted((self.env.run / "log").glob("*.log")) if (
                self.env.run / "log").exists() else []
            return "\n".join(f"{p.name}:\n{p.read_text()[-3000:]}" for p in logs)

        def keep(self, when: str) -> None:
            dest = os.environ.get("SCOUTFS_CRASH_KEEP")
            if not dest:
                return
            d = Path(dest) / f"{self.env.root.name}-{when.replace(' ', '-')}"
            d.mkdir(parents=True, exist_ok=True)
            for p in (self.meta, self.data, self.journal, self.oplog):
                if p.exists():
                    subprocess.run(["cp", "--sparse=always", str(p), str(d)], check=False)
            print(f"kept images and journal in {d}")

        # ------------------------------------------------------------ cleanup

        def cleanup(self) -> None:
            self.kill_writer()
            if is_mounted(self.mnt):
                majmin = self.majmin()
                try:
                    pid = self.daemon_pid()
                except (OSError, ValueError, AssertionError):
                    pid = None
                if pid is not None:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                    wait_gone(pid, 30)
                self.abort_fuse(majmin)
                subprocess.run(["umount", "-l", str(self.mnt)], capture_output=True,
                               timeout=30)

    @pytest.fixture
    def crash_env(env):
        c = CrashEnv(env)
        try:
            yield c
        finally:
            c.cleanup()  # then env's cleanup: umount, kill our daemons; root_dir removes files

    def _seeds(big: bool = False) -> list[int]:
        base = int(os.environ.get("SCOUTFS_CRASH_SEED", "1"))
        n = int(os.environ.get("SCOUTFS_CRASH_ITERATIONS", "8"))
        if big:  # the 64 MiB writes: a quarter as many (at least 2)
            return [base + 1000 + i for i in range(max(2, n // 4))]
        return [base + i for i in range(n)]

    @pytest.mark.parametrize("seed", _seeds())
    def test_crash_random_point(crash_env, seed):
        c = crash_env
        delay = random.Random(seed).uniform(0.1, 3.0)
        print(f"seed {seed}: kill -9 {delay:.3f}s into the stream")
        c.mount()
        c.start_writer("random", seed, 1_000_000)
        c.wait_journal(lambda r: "ready" in r, "ready")
        time.sleep(delay)  # the one intended sleep: the random crash point
        c.assert_writer_ok()
        c.crash()
        ops = len(c.oplog.read_text().splitlines()) if c.oplog.exists() else 0
        c.fsck("after the crash")
        c.mount()
        checked = c.check()
        print(f"seed {seed}: {ops} ops logged, {checked} durable paths checked")
        c.umount_clean()
        c.fsck("after the clean unmount")

    def test_crash_after_sync_loses_nothing(crash_env):
        c = crash_env
        c.mount()
        c.start_writer("finite", 4242, 300)
        c.wait_writer()
        last, final, _ = _journal(c.journal)
        assert final is not None and all(s is not None for s in last.values())
        c.crash()
        c.fsck("after the crash")
        c.mount()
        checked = c.check()
        assert checked == len(last) and checked > 10
        c.umount_clean()
        c.fsck("after the clean unmount")

    @pytest.mark.parametrize("seed", _seeds(big=True))
    def test_crash_during_large_write(crash_env, seed):
        c = crash_env
        delay = random.Random(seed).uniform(0.0, 1.5)
        print(f"seed {seed}: kill -9 {delay:.3f}s into the 64 MiB overwrites")
        c.mount()
        c.start_writer("big", seed, 40)
        c.wait_journal(lambda r: r.get("big") == 0, "the first 64 MiB write")
        time.sleep(delay)
        c.assert_writer_ok()
        c.crash()
        last, _final, recs = _journal(c.journal)
        rounds = sum(1 for r in recs if "big" in r)
        small = [p for p in last if not p.startswith("big")]
        assert len(small) >= 10 and all(last[p] is not None for p in small)
        big_done = [p for p in ("big0", "big1") if (last.get(p) or {}).get("size") == 64 * MiB]
        c.fsck("after the crash")
        c.mount()
        checked = c.check()
        print(f"seed {seed}: crashed in round {rounds - 1}, {checked} durable paths checked "
              f"(fsync'd 64 MiB files: {big_done})")
        assert checked >= len(small) + len(big_done)
        c.umount_clean()
        c.fsck("after the clean unmount")


if __name__ == "__main__":
    try:
        sys.exit(writer_main(sys.argv[1:]))
    except OSError as e:
        # after the kill every call on the mount fails: ENOTCONN and friends are expected
        sys.stderr.write(f"writer: {e} ({errno.errorcode.get(e.errno, e.errno)})\n")
        raise
