"""Random sequences of namespace operations checked against a simple in-memory model."""

from __future__ import annotations

import errno
import stat

import trio
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from fs import format as fmt
from fs.errors import FsError
from fs.filesystem import RENAME_EXCHANGE, RENAME_NOREPLACE
from tests.unit.test_namespace import CTX, check_entries, check_seq_index, items_of, setup

ROOT = fmt.ROOT_INO
NAMES = [b"a", b"bb", b"a" * 255]


class Model:
    def __init__(self) -> None:
        self.kind = {ROOT: "d"}  # ino -> "d" | "f"
        self.entries: dict[int, dict[bytes, int]] = {ROOT: {}}  # dir -> name -> ino
        self.parent = {ROOT: ROOT}
        self.removed: set[int] = set()  # directories that were rmdir'ed / replaced
        self.deleted: set[int] = set()  # inodes deleted after forget

    def nlink(self, ino: int) -> int:
        if self.kind[ino] == "d":
            if ino in self.removed:
                return 0
            return 2 + sum(1 for i in self.entries[ino].values() if self.kind[i] == "d")
        return sum(1 for ents in self.entries.values() for i in ents.values() if i == ino)

    def is_ancestor(self, anc: int, ino: int) -> bool:
        while True:
            if ino == anc:
                return True
            if ino == ROOT:
                return False
            ino = self.parent[ino]

    def live_dir(self, d: int) -> bool:
        return d not in self.removed

    # each returns the expected errno (0: success) and applies the change on success
    def create(self, d: int, name: bytes, kind: str, ino_of) -> int:
        if not self.live_dir(d):
            return errno.ENOENT
        if name in self.entries[d]:
            return errno.EEXIST
        ino = ino_of()
        self.kind[ino] = kind
        self.entries[d][name] = ino
        if kind == "d":
            self.entries[ino] = {}
            self.parent[ino] = d
        return 0

    def unlink(self, d: int, name: bytes, rmdir: bool) -> int:
        ino = self.entries[d].get(name)
        if ino is None:
            return errno.ENOENT
        if rmdir:
            if self.kind[ino] != "d":
                return errno.ENOTDIR
            if self.entries[ino]:
                return errno.ENOTEMPTY
            self.removed.add(ino)
        elif self.kind[ino] == "d":
            return errno.EISDIR
        del self.entries[d][name]
        return 0

    def link(self, ino: int, d: int, name: bytes) -> int:
        if ino in self.deleted:
            return errno.ENOENT
        if self.kind[ino] == "d":
            return errno.EPERM
        if not self.live_dir(d):
            return errno.ENOENT
        if name in self.entries[d]:
            return errno.EEXIST
        self.entries[d][name] = ino
        return 0

    def rename(self, d1: int, n1: bytes, d2: int, n2: bytes, flags: int) -> int:
        src = self.entries[d1].get(n1)
        if src is None:
            return errno.ENOENT
        tgt = self.entries[d2].get(n2)
        exchange = bool(flags & RENAME_EXCHANGE)
        if tgt is None and exchange:
            return errno.ENOENT
        if tgt is not None and flags & RENAME_NOREPLACE:
            return errno.EEXIST
        if tgt == src:
            return 0
        sdir = self.kind[src] == "d"
        tdir = tgt is not None and self.kind[tgt] == "d"
        if tgt is not None and not exchange:
            if sdir and not tdir:
                return errno.ENOTDIR
            if tdir and not sdir:
                return errno.EISDIR
        if not self.live_dir(d2):
            return errno.ENOENT
        if d1 != d2:
            if sdir and self.is_ancestor(src, d2):
                return errno.EINVAL
            if exchange and tdir and self.is_ancestor(tgt, d1):
                return errno.EINVAL
        if tdir and not exchange and self.entries[tgt]:
            return errno.ENOTEMPTY
        del self.entries[d1][n1]
        if exchange:
            self.entries[d2][n2] = src
            self.entries[d1][n1] = tgt
            if tdir:
                self.parent[tgt] = d1
        else:
            if tdir:
                self.removed.add(tgt)
            self.entries[d2][n2] = src
        if sdir:
            self.parent[src] = d2
        return 0

    def unlinked(self) -> set[int]:
        return {i for i in self.kind if i not in self.deleted and self.nlink(i) == 0}


idx = st.integers(0, 50)
name = st.sampled_from(NAMES)
ops = st.one_of(
    st.tuples(st.just("create"), idx, name),
    st.tuples(st.just("mkdir"), idx, name),
    st.tuples(st.just("unlink"), idx, name),
    st.tuples(st.just("rmdir"), idx, name),
    st.tuples(st.just("link"), idx, idx, name),
    st.tuples(st.just("rename"), idx, name, idx, name,
              st.sampled_from([0, RENAME_NOREPLACE, RENAME_EXCHANGE])),
    st.tuples(st.just("forget")),
    st.tuples(st.just("sync")),
)


async def check(fs, mctx, model: Model) -> None:
    for ino, kind in model.kind.items():
        if ino in model.deleted:
            try:
                await fs.getattr(ino)
                raise AssertionError(f"{ino} should be deleted")
            except FsError as e:
                assert e.errno == errno.ENOENT
            continue
        a = await fs.getattr(ino)
        assert a.nlink == model.nlink(ino), (ino, a.nlink, model.nlink(ino))
        assert stat.S_ISDIR(a.mode) == (kind == "d")
        if kind == "d" and ino not in model.removed:
            ents = await fs.readdir(ino, 0)
            got = {n: at.ino for n, at, _ in ents[2:]}
            assert got == model.entries[ino]
            assert ents[1][1].ino == model.parent[ino]
            assert a.size == sum(len(n) for n in model.entries[ino])
            poss = [nx for _, _, nx in ents]
            assert poss == sorted(poss) and len(set(poss)) == len(poss)
            for n, i in model.entries[ino].items():
                assert (await fs.lookup(ino, n)).ino == i
    orphans = {k[3] for k in items_of(mctx, fmt.ZONE_ORPHAN)}
    assert orphans == model.unlinked()
    check_entries(mctx)
    check_seq_index(mctx)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(ops, min_size=10, max_size=60))
def test_random_namespace_ops(seq):
    mctx, fs = setup()
    model = Model()

    async def main():
        for op in seq:
            dirs = sorted(i for i, k in model.kind.items() if k == "d")
            allinos = sorted(model.kind)
            kind = op[0]
            got = 0
            if kind in ("create", "mkdir"):
                d = dirs[op[1] % len(dirs)]
                made = []
                try:
                    if kind == "create":
                        a = await fs.mknod(d, op[2], stat.S_IFREG | 0o644, 0, CTX)
                    else:
                        a = await fs.mkdir(d, op[2], 0o755, CTX)
                    made.append(a.ino)
                except FsError as e:
                    got = e.errno
                want = model.create(d, op[2], "f" if kind == "create" else "d",
                                    lambda made=made: made[0] if made else -1)
            elif kind in ("unlink", "rmdir"):
                d = dirs[op[1] % len(dirs)]
                try:
                    await (fs.rmdir if kind == "rmdir" else fs.unlink)(d, op[2])
                except FsError as e:
                    got = e.errno
                want = model.unlink(d, op[2], kind == "rmdir")
            elif kind == "link":
                ino = allinos[op[1] % len(allinos)]
                d = dirs[op[2] % len(dirs)]
                try:
                    await fs.link(ino, d, op[3], CTX)
                except FsError as e:
                    got = e.errno
                want = model.link(ino, d, op[3])
            elif kind == "rename":
                d1, d2 = dirs[op[1] % len(dirs)], dirs[op[3] % len(dirs)]
                try:
                    await fs.rename(d1, op[2], d2, op[4], op[5], CTX)
                except FsError as e:
                    got = e.errno
                want = model.rename(d1, op[2], d2, op[4], op[5])
            elif kind == "forget":
                for ino in sorted(model.unlinked()):
                    await fs.forget(ino)
                    model.deleted.add(ino)
                await fs.drain_deletions()
                want = 0
            else:
                await fs.sync()
                want = 0
            assert got == want, (op, got, want)
            event(f"{kind} -> {errno.errorcode.get(got, 'ok')}")
            await check(fs, mctx, model)
        # in the end every unlinked inode is deleted and nothing is left behind
        for ino in sorted(model.unlinked()):
            await fs.forget(ino)
            model.deleted.add(ino)
        await fs.drain_deletions()
        await check(fs, mctx, model)
        assert not items_of(mctx, fmt.ZONE_ORPHAN)
        live = {k[1] for k in items_of(mctx, fmt.ZONE_FS)}
        assert live == {i for i in model.kind if i not in model.deleted}

    trio.run(main)
