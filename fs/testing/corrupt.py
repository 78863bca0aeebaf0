"""Corrupted-metadata fuzzing: a small populated volume, one corruption of its metadata, and
a probe that checks it with fsck and then mounts it in-process, reads everything, writes a
little and unmounts, all within a time bound.

The probe runs in a child process (`python -m fs.testing.corrupt probe META DATA`), so that a
hang is a timeout the parent sees and an escaping exception is a traceback on the child's
stderr, never a stuck test.  It prints one JSON line: fsck's problems, how the mount went
(`refused` with the reason, or the namespace it read), the errors of individual operations,
and every log record or exception that carried a traceback.

`classify` compares a probe of a corrupted copy with the probe of the clean template:

* ``traceback``: an exception escaped or was logged with a traceback (never acceptable);
* ``hang``: the probe did not end within the time bound (never acceptable);
* ``missed``: fsck called the volume clean, but a mount read or wrote something other than
  the clean volume gives (never acceptable: damage fsck cannot see);
* ``refused`` / ``eio`` / ``changed``: the mount was refused, operations failed, what it read
  differed in its names, or what it wrote did not read back after a remount — fsck saw the
  damage;
* ``altered``: the volume reads and writes consistently but some attribute or content
  differs (a changed uid, an xattr value byte with the crc fixed up), or a quorum slot's
  address became one this host does not have (the mount is refused saying so):
  indistinguishable from legitimate use or configuration, so no checker can report it;
* ``harmless``: the mount read exactly what the clean volume gives.

Used by tests/unit/test_corrupt_fuzz.py (hypothesis, a short run in CI) and scripts/fuzz
(a long soak that prints a summary table).
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import logging
import os
import random
import shutil
import socket
import stat
import subprocess
import sys
import traceback
from dataclasses import dataclass

from fs import format as fmt

PROBE_TIMEOUT_S = 60.0
META_SIZE = 32 << 20
DATA_SIZE = 32 << 20
NEW_DIR = b"fuzz-new"
FILES_PER_ROUND = 250  # enough for btrees of several levels

# what a corruption hits
TARGET_SUPER = "super"  # the meta device super block
TARGET_DATA_SUPER = "data-super"  # the data device super block
TARGET_QUORUM = "quorum"  # the quorum block of slot 0
TARGET_BLOCK = "block"  # a reachable 64 KiB meta block (btree or extent list)
TARGETS = (TARGET_SUPER, TARGET_DATA_SUPER, TARGET_QUORUM, TARGET_BLOCK)
# how
HOW_FLIP = "flip"  # flip 1-8 random bits in the used part of the block
HOW_ZERO = "zero"  # zero the whole block
HOW_FIELD = "field"  # change one decoded field (super field, item key/seq/flags/value byte)
HOWS = (HOW_FLIP, HOW_ZERO, HOW_FIELD)

FATAL = ("traceback", "hang", "missed")


@dataclass(frozen=True)
class Corruption:
    target: str
    how: str
    fix_crc: bool
    seed: int

    def __str__(self) -> str:
        crc = "crc fixed" if self.fix_crc else "crc kept"
        return f"{self.how} {self.target} ({crc}, seed {self.seed})"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------- the template


async def _populate(fs, round_nr: int) -> None:
    """Files, directories, a symlink, hard links, xattrs and holes: every item type."""
    from fs.inode import Ctx

    root = Ctx(0, 0, 1)
    top = await fs.mkdir(1, b"d%d" % round_nr, 0o755, root)
    sub = await fs.mkdir(top.ino, b"sub", 0o700, root)
    for i in range(FILES_PER_ROUND):
        parent = sub.ino if i % 3 else top.ino
        f = await fs.mknod(parent, b"file-%03d" % i, 0o100644, 0, Ctx(i % 4, i % 5, 1))
        data = hashlib.sha256(b"%d.%d" % (round_nr, i)).digest() * (1 + i % 50 * 37)
        await fs.write(f.ino, (i % 4) * 8192, data, root)
        if i % 7 == 0:
            await fs.setxattr(f.ino, b"user.k%d" % i, b"v" * (i + 1), 0, root)
        if i % 11 == 0:
            await fs.link(f.ino, top.ino, b"hard-%03d" % i, root)
    await fs.symlink(top.ino, b"link", b"sub/file-001", root)
    await fs.mknod(top.ino, b"fifo", 0o010644, 0, root)


def make_template(directory: str) -> tuple[str, str]:
    """A populated volume in `directory` (two mount sessions, so items are both merged
    into fs_root and in log trees); returns (meta, data) paths."""
    import trio

    from fs.mkfs import make_volume
    from fs.super import Mount

    meta, data = os.path.join(directory, "meta.img"), os.path.join(directory, "data.img")
    for path, size in ((meta, META_SIZE), (data, DATA_SIZE)):
        with open(path, "wb") as f:
            f.truncate(size)
    make_volume(meta, data, {0: ("127.0.0.1", free_port())})

    async def session(round_nr: int, merge: bool) -> None:
        async with trio.open_nursery() as n:
            m = await Mount.open(meta, data, {"quorum_slot_nr": 0}, n)
            await _populate(m.fs, round_nr)
            if merge:
                await m.trans.commit(force=True)
                await m.server.finalize_and_merge()
            await m.close()
            n.cancel_scope.cancel()

    trio.run(session, 0, True)
    trio.run(session, 1, False)
    return meta, data


def copy_volume(meta: str, data: str, directory: str) -> tuple[str, str]:
    out = os.path.join(directory, "meta.img"), os.path.join(directory, "data.img")
    for src, dst in zip((meta, data), out, strict=True):
        shutil.copyfile(src, dst)
    return out


def meta_blocks(meta: str) -> list[tuple[int, str]]:
    """Every reachable meta block of a volume as (blkno, what)."""
    from fs.alloc import read_extent_list
    from fs.block import Device, MetaBlocks, read_super
    from fs.btree import Btree

    dev = Device(meta, readonly=True)
    try:
        sb = read_super(dev)
        blocks = MetaBlocks(dev, sb.fsid, cache_blocks=64)
        out: list[tuple[int, str]] = []
        roots = [("fs_root", sb.fs_root), ("logs_root", sb.logs_root),
                 ("mounted_clients", sb.mounted_clients), ("srch_root", sb.srch_root)]
        for _key, item in Btree(blocks, sb.logs_root).items(fmt.KEY_MIN, fmt.KEY_MAX):
            if not item.deleted:
                lt = fmt.unpack_log_trees(item.value)
                roots.append((f"log tree {lt.rid:016x}.{lt.nr}", lt.item_root))
        for name, root in roots:
            for ref, level in Btree(blocks, root).block_refs():
                out.append((ref.blkno, f"{name} level {level}"))
        for name, ref in (("meta_free", sb.meta_free), ("meta_pending", sb.meta_pending),
                          ("data_free", sb.data_free), ("data_pending", sb.data_pending)):
            if ref.blkno:
                for b in read_extent_list(blocks, ref)[1]:
                    out.append((b, f"{name} list"))
        return sorted(out)
    finally:
        dev.close()


# --------------------------------------------------------------------------- corrupting


def _flip(buf: bytearray, rng: random.Random, start: int, end: int) -> None:
    for _ in range(rng.randint(1, 8)):
        off = rng.randrange(start, max(start + 1, end))
        buf[off] ^= 1 << rng.randrange(8)


def _used_end(buf: bytes | bytearray) -> int:
    return len(bytes(buf).rstrip(b"\0")) or len(buf)


def _mutate_int(value: int, rng: random.Random, bits: int = 64) -> int:
    choice = rng.randrange(5)
    if choice == 0:
        return 0
    if choice == 1:
        return max(0, value - rng.randint(1, 2000))
    if choice == 2:
        return min((1 << bits) - 1, value + rng.randint(1, 2000))
    if choice == 3:
        return value ^ (1 << rng.randrange(bits))
    return rng.getrandbits(bits)


def _super_field(buf: bytearray, rng: random.Random) -> None:
    sb = fmt.unpack_super(memoryview(buf)[fmt.HDR_SIZE:])
    name = rng.choice(["seq", "next_ino", "inode_count", "total_meta_blocks",
                       "total_data_blocks", "free_meta_blocks", "free_data_blocks",
                       "meta_free", "data_free", "meta_pending", "data_pending",
                       "fs_root", "logs_root", "mounted_clients"])
    cur = getattr(sb, name)
    if isinstance(cur, int):
        new = _mutate_int(cur, rng)
    elif isinstance(cur, fmt.BlockRef):
        new = fmt.BlockRef(_mutate_int(cur.blkno, rng), cur.seq) if rng.random() < 0.5 \
            else fmt.BlockRef(cur.blkno, _mutate_int(cur.seq, rng))
    else:  # a btree root
        what = rng.randrange(3)
        if what == 0:
            new = dataclasses.replace(cur, height=_mutate_int(cur.height, rng, 8)) \
                if dataclasses.is_dataclass(cur) else cur._replace(
                    height=_mutate_int(cur.height, rng, 8))
        else:
            ref = cur.ref
            ref = fmt.BlockRef(_mutate_int(ref.blkno, rng), ref.seq) if what == 1 \
                else fmt.BlockRef(ref.blkno, _mutate_int(ref.seq, rng))
            new = dataclasses.replace(cur, ref=ref) if dataclasses.is_dataclass(cur) \
                else cur._replace(ref=ref)
    setattr(sb, name, new)
    body = fmt.pack_super(sb)
    buf[fmt.HDR_SIZE:fmt.HDR_SIZE + len(body)] = body


def _item_field(buf: bytearray, rng: random.Random) -> None:
    """Change one entry of a btree block: a key field, the seq, the flags or a value byte."""
    try:
        level, keys, vals, _used = fmt.unpack_btree_block(buf)
    except (ValueError, Exception):  # noqa: BLE001 - an extent-list block: flip instead
        _flip(buf, rng, fmt.HDR_SIZE, _used_end(buf))
        return
    if not keys:
        _flip(buf, rng, fmt.HDR_SIZE, _used_end(buf))
        return
    i = rng.randrange(len(keys))
    what = rng.randrange(4)
    if what == 0:
        k = list(keys[i])
        field_nr = rng.randrange(6)
        k[field_nr] = _mutate_int(k[field_nr], rng, 8 if field_nr in (0, 2, 5) else 64)
        keys[i] = tuple(k)
    elif level:
        ref = vals[i]
        vals[i] = fmt.BlockRef(_mutate_int(ref.blkno, rng), ref.seq) if what == 1 \
            else fmt.BlockRef(ref.blkno, _mutate_int(ref.seq, rng))
    else:
        seq, flags, val = vals[i]
        if what == 1:
            seq = _mutate_int(seq, rng)
        elif what == 2:
            flags ^= 1 << rng.randrange(8)
        elif val:
            b = bytearray(val)
            _flip(b, rng, 0, len(b))
            val = bytes(b)
        vals[i] = (seq, flags, val)
    hdr = fmt.parse_header(buf)
    new = fmt.pack_btree_block(level, keys, vals)
    new[:fmt.HDR_SIZE] = buf[:fmt.HDR_SIZE]
    buf[:] = new
    del hdr


def _quorum_field(buf: bytearray, rng: random.Random) -> None:
    qb = fmt.unpack_quorum(memoryview(buf)[fmt.HDR_SIZE:])
    if rng.random() < 0.3:
        qb = dataclasses.replace(qb, write_nr=_mutate_int(qb.write_nr, rng))
    else:
        i = rng.randrange(len(qb.events))
        ev = qb.events[i]
        name = rng.choice(["write_nr", "rid", "term"])
        ev = ev._replace(**{name: _mutate_int(getattr(ev, name), rng)}) \
            if hasattr(ev, "_replace") else dataclasses.replace(
                ev, **{name: _mutate_int(getattr(ev, name), rng)})
        qb.events[i] = ev
    body = fmt.pack_quorum(qb)
    buf[fmt.HDR_SIZE:fmt.HDR_SIZE + len(body)] = body


def corrupt(meta: str, data: str, c: Corruption, blocks: list[tuple[int, str]]) -> str:
    """Apply `c` to the volume's files; returns what was hit (for the report)."""
    rng = random.Random(c.seed)
    if c.target == TARGET_BLOCK:
        blkno, what = rng.choice(blocks)
        path, off, size = meta, blkno * fmt.META_BLOCK_SIZE, fmt.META_BLOCK_SIZE
        desc = f"meta block {blkno} ({what})"
    elif c.target == TARGET_QUORUM:
        path, off, size = meta, fmt.QUORUM_BLKNO * fmt.SMALL_BLOCK_SIZE, fmt.SMALL_BLOCK_SIZE
        desc = f"quorum block {fmt.QUORUM_BLKNO}"
    else:
        path = meta if c.target == TARGET_SUPER else data
        off, size = fmt.SUPER_BLKNO * fmt.SMALL_BLOCK_SIZE, fmt.SMALL_BLOCK_SIZE
        desc = f"{'meta' if path == meta else 'data'} super block"
    with open(path, "r+b") as f:
        f.seek(off)
        buf = bytearray(f.read(size))
        was_sealed = fmt.block_crc_ok(buf)
        if c.how == HOW_ZERO:
            buf[:] = bytes(size)
        elif c.how == HOW_FLIP:
            # the crc field itself is not flipped: that is what "crc kept" tests
            _flip(buf, rng, 4, _used_end(buf))
        elif c.target == TARGET_BLOCK:
            _item_field(buf, rng)
        elif c.target == TARGET_QUORUM:
            _quorum_field(buf, rng)
        else:
            _super_field(buf, rng)
        if c.fix_crc and c.how != HOW_ZERO and was_sealed:
            struct_crc = fmt.crc32c(memoryview(buf)[4:])
            buf[0:4] = struct_crc.to_bytes(4, "little")
        f.seek(off)
        f.write(buf)
    return desc


# --------------------------------------------------------------------------- the probe


class _TracebackLog(logging.Handler):
    """Collects every log record that carries an exception (a logged traceback)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.tracebacks: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info and record.exc_info[0] is not None:
            self.tracebacks.append(record.getMessage() + "\n" + "".join(
                traceback.format_exception(*record.exc_info)))


async def _dump(fs, errors: list[str], skip_root_names: set[bytes] = frozenset()) -> dict:
    """Everything a reader sees below the root: path -> attributes, contents, xattrs."""
    from fs.errors import FsError

    out: dict[str, object] = {}
    stack: list[tuple[int, str]] = [(fmt.ROOT_INO, "")]
    seen_dirs: set[int] = set()

    async def attempt(path: str, what: str, coro):
        try:
            return await coro
        except FsError as e:
            errors.append(f"{path}: {what}: {errno.errorcode.get(e.errno, e.errno)}")
            return None

    while stack and len(out) < 10_000:
        ino, path = stack.pop()
        if ino in seen_dirs:
            errors.append(f"{path}: directory {ino} reached twice")
            continue
        seen_dirs.add(ino)
        pos = 0
        entries = []
        while len(entries) < 10_000:
            batch = await attempt(path or "/", "readdir", fs.readdir(ino, pos, 64))
            if not batch:
                break
            entries.extend(batch)
            pos = batch[-1][2]
        for name, _attr, _next in entries:
            if name in (b".", b"..") or (not path and name in skip_root_names):
                continue
            p = f"{path}/{name.decode(errors='backslashreplace')}"
            a = await attempt(p, "lookup", fs.lookup(ino, name))
            if a is None:
                out[p] = "error"
                continue
            rec: dict[str, object] = {
                "ino": a.ino, "mode": a.mode, "nlink": a.nlink, "uid": a.uid, "gid": a.gid,
                "size": a.size, "blocks": a.blocks, "mtime": list(a.mtime)}
            if stat.S_ISDIR(a.mode):
                stack.append((a.ino, p))
            elif stat.S_ISLNK(a.mode):
                rec["target"] = await attempt(p, "readlink", fs.readlink(a.ino))
                if isinstance(rec["target"], bytes):
                    rec["target"] = rec["target"].hex()
            elif stat.S_ISREG(a.mode):
                h = hashlib.sha256()
                off = 0
                while off < min(a.size, 64 << 20):
                    chunk = await attempt(p, "read", fs.read(a.ino, off, 1 << 20))
                    if not chunk:
                        break
                    h.update(chunk)
                    off += len(chunk)
                rec["data"] = h.hexdigest()
                more = await attempt(p, "stat_more", fs.stat_more(a.ino))
                if more is not None:
                    rec["data_version"] = more["data_version"]
            names = await attempt(p, "listxattr", fs.listxattr(a.ino))
            xattrs = {}
            for xname in names or []:
                v = await attempt(p, "getxattr", fs.getxattr(a.ino, xname))
                xattrs[xname.hex()] = v.hex() if isinstance(v, bytes) else None
            rec["xattrs"] = xattrs
            out[p] = rec
    return out


FUZZ_XATTR = b"user.fuzz"
CHANGED_MODE = 0o640


def _changed_inos(dump: dict) -> set[int]:
    """The existing inodes the write phase changes (chmod and an xattr)."""
    return {rec["ino"] for path, rec in dump.items()
            if isinstance(rec, dict) and not stat.S_ISLNK(rec["mode"])
            and int(hashlib.sha256(path.encode()).hexdigest(), 16) % 7 == 0}


async def _write_some(fs, dump: dict, errors: list[str]) -> None:
    """New files in a new directory (inode and block allocation on the damaged volume),
    and chmod + setxattr of some existing entries (items that exist in fs_root)."""
    from fs.errors import FsError
    from fs.inode import Ctx

    root = Ctx(0, 0, 1)
    try:
        d = await fs.mkdir(1, NEW_DIR, 0o755, root)
        for i in range(8):
            f = await fs.mknod(d.ino, b"n%d" % i, 0o100644, 0, root)
            await fs.write(f.ino, 0, b"new %d\n" % i * 100, root)
        changed = _changed_inos(dump)
        for _path, rec in sorted(dump.items()):
            if isinstance(rec, dict) and rec["ino"] in changed:
                changed.discard(rec["ino"])
                await fs.setattr(rec["ino"], mode=(rec["mode"] & ~0o7777) | CHANGED_MODE)
                await fs.setxattr(rec["ino"], FUZZ_XATTR, b"1", 0, root)
        await fs.sync()
    except FsError as e:
        errors.append(f"write phase: {errno.errorcode.get(e.errno, e.errno)}: {e.msg or ''}")


def expected_after(dump: dict) -> dict:
    """What a remount must read after `_write_some` on a volume that read as `dump`."""
    out = {}
    changed = _changed_inos(dump)
    for path, rec in dump.items():
        if isinstance(rec, dict) and rec["ino"] in changed:
            rec = dict(rec, mode=(rec["mode"] & ~0o7777) | CHANGED_MODE,
                       xattrs=dict(rec["xattrs"], **{FUZZ_XATTR.hex(): b"1".hex()}))
        out[path] = rec
    for i in range(8):
        out[f"/{NEW_DIR.decode()}/n{i}"] = hashlib.sha256(b"new %d\n" % i * 100).hexdigest()
    return out


def _comparable(after: dict) -> dict:
    """The remount's dump in expected_after's terms (new files by content alone)."""
    prefix = f"/{NEW_DIR.decode()}"
    out = {}
    for path, rec in after.items():
        if path == prefix:
            continue
        if path.startswith(prefix + "/") and isinstance(rec, dict):
            rec = rec.get("data")
        out[path] = rec
    return out


async def _mount(meta: str, data: str, result: dict, phase: str, work) -> None:
    import trio

    from fs.errors import FsError
    from fs.super import Mount

    async def fence_agent(mount) -> None:
        # what scoutfs-fenced does with a fence script that succeeds: a quorum block that
        # shows an unstopped leader reads as a crashed mount, and recovery fences it
        while True:
            server = mount.server
            if server is not None:
                for rid, req in list(server.fencing.requests.items()):
                    if not req.answered:
                        server.fencing.answer(rid, fenced=True)
            await trio.sleep(0.05)

    async with trio.open_nursery() as n:
        try:
            m = await Mount.open(meta, data, {"quorum_slot_nr": 0}, n,
                                 on_created=lambda mount: n.start_soon(fence_agent, mount))
        except FsError as e:
            result["mount"] = "refused"
            result["reason"] = f"{phase}: {errno.errorcode.get(e.errno, e.errno)}: " \
                               f"{e.msg or ''}"
            n.cancel_scope.cancel()
            return
        await work(m.fs)
        try:
            await m.close()
        except FsError as e:
            result["errors"].append(f"{phase}: unmount: "
                                    f"{errno.errorcode.get(e.errno, e.errno)}: {e.msg or ''}")
        n.cancel_scope.cancel()


async def _probe_mount(meta: str, data: str, result: dict) -> None:
    """Mount, read everything, write a little, unmount; remount and read it all again."""
    errors: list[str] = []
    result.update(mount="mounted", errors=errors, lost=[])

    async def first(fs) -> None:
        result["dump"] = await _dump(fs, errors)
        await _write_some(fs, result["dump"], errors)

    async def second(fs) -> None:
        after_errors: list[str] = []
        result["after"] = _comparable(await _dump(fs, after_errors))
        errors.extend(f"after remounting: {e}" for e in after_errors)

    await _mount(meta, data, result, "mount", first)
    if result["mount"] == "refused":
        return
    await _mount(meta, data, result, "remount", second)
    if result["mount"] == "refused":
        return
    want = expected_after(result["dump"])
    got = result.pop("after")
    result["lost"] = [f"{p}: read {got.get(p)} after remounting, wrote {want.get(p)}"
                      for p in sorted(set(want) | set(got)) if want.get(p) != got.get(p)]


def probe_here(meta: str, data: str) -> dict:
    """The probe itself (run in the child process)."""
    import trio

    from fs import fsck

    handler = _TracebackLog()
    logging.getLogger().addHandler(handler)
    logging.getLogger().setLevel(logging.WARNING)
    result: dict = {"tracebacks": handler.tracebacks}
    try:
        result["fsck"] = fsck.check(meta, data)
    except Exception:  # noqa: BLE001 - reported as the failure it is
        handler.tracebacks.append("fsck: " + traceback.format_exc())
        result["fsck"] = ["fsck failed"]
    try:
        trio.run(_probe_mount, meta, data, result)
    except Exception:  # noqa: BLE001
        handler.tracebacks.append("mount: " + traceback.format_exc())
    return result


def probe(meta: str, data: str, timeout: float = PROBE_TIMEOUT_S) -> dict:
    """Run the probe in a child process; {"hang": True} if it outlives `timeout`."""
    cmd = [sys.executable, "-m", "fs.testing.corrupt", "probe", meta, data]
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    try:
        cp = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=root,
                            stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return {"hang": True}
    lines = cp.stdout.strip().splitlines()
    try:
        result = json.loads(lines[-1]) if lines else None
    except json.JSONDecodeError:
        result = None
    if result is None or cp.returncode != 0:
        return {"tracebacks": [f"probe exited {cp.returncode}:\n{cp.stderr[-4000:]}"]}
    if "Traceback" in cp.stderr:
        result["tracebacks"].append(cp.stderr[-4000:])
    return result


def classify(result: dict, clean: dict) -> str:
    """traceback, hang, missed, refused, eio, changed, altered or harmless (see the module
    docstring; `altered` is a volume that reads consistently but differently, as if other
    legitimate operations had been made: damage no checker can tell from use)."""
    if result.get("hang"):
        return "hang"
    if result.get("tracebacks"):
        return "traceback"
    if result["mount"] == "refused":
        if not result["fsck"] and "EADDRNOTAVAIL" in result.get("reason", ""):
            # a quorum slot address this host does not have: a valid configuration (of
            # another host), refused with that reason by the mount that must bind it
            return "altered"
        outcome = "refused"
    elif any("EIO" in e for e in result["errors"]):
        outcome = "eio"
    elif (result["errors"] or result["lost"]
          or set(result["dump"]) != set(clean["dump"])):
        outcome = "changed"
    elif result["dump"] != clean["dump"]:
        return "altered"
    else:
        return "harmless"
    return "missed" if not result["fsck"] else outcome


def explain(result: dict, clean: dict) -> str:
    """A few lines saying what a probe saw that the clean volume does not give."""
    if result.get("hang"):
        return "the probe did not end within its time bound"
    lines = [t[-2000:] for t in result.get("tracebacks", [])[:2]]
    if result.get("mount") == "refused":
        lines.append(f"mount refused: {result.get('reason')}")
    lines += result.get("errors", [])[:5]
    lines += result.get("lost", [])[:3]
    got, want = result.get("dump", {}), clean.get("dump", {})
    diffs = sorted(p for p in set(got) | set(want) if got.get(p) != want.get(p))
    for p in diffs[:3]:
        lines.append(f"{p}: read {got.get(p)} clean {want.get(p)}")
    lines.append(f"fsck: {result.get('fsck', [])[:3]}")
    return "\n".join(lines)


def _main(argv: list[str]) -> int:
    if len(argv) == 3 and argv[0] == "probe":
        print(json.dumps(probe_here(argv[1], argv[2])), flush=True)
        return 0
    sys.stderr.write("usage: python -m fs.testing.corrupt probe META DATA\n")
    return 64


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
