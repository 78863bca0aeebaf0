"""An in-memory network for tests: a Server and any number of Clients in one trio process.

`MemNet` is a listener the server accepts memory streams from (trio.testing's
memory_stream_pair); `connect()` gives a client its end.  `start_cluster()` makes the whole
thing in a nursery.  `check_space()` is the allocator oracle: it walks everything reachable
from the on-disk super and checks that every block of both devices is exactly one of used,
free, pending or lent.
"""

from __future__ import annotations

import trio
import trio.testing

from fs import format as fmt
from fs.alloc import ExtentSet, read_extent_list
from fs.block import MetaBlocks, read_super
from fs.btree import Btree
from fs.client import Client
from fs.counters import Counters
from fs.server import LOG_TREES_FIRST, LOG_TREES_LAST, Server


class MemNet(trio.abc.Listener):
    """A listener of memory streams: `await connect()` returns the client's end."""

    def __init__(self) -> None:
        self._send, self._recv = trio.open_memory_channel(100)
        self.nr_connects = 0

    async def accept(self) -> trio.abc.Stream:
        return await self._recv.receive()

    async def connect(self) -> trio.abc.Stream:
        client_end, server_end = trio.testing.memory_stream_pair()
        await self._send.send(server_end)
        self.nr_connects += 1
        return client_end

    async def aclose(self) -> None:
        await self._recv.aclose()


async def start_server(nursery: trio.Nursery, meta_dev, data_dev, *,
                       counters: Counters | None = None, net: MemNet | None = None,
                       **kwargs) -> tuple[Server, MemNet]:
    """A running Server on a MemNet (kwargs go to Server: recovery_timeout, ...)."""
    net = net or MemNet()
    server = Server(meta_dev, data_dev, counters, **kwargs)
    await nursery.start(server.serve, net)
    return server, net


async def connect_client(nursery: trio.Nursery, net: MemNet, sb: fmt.Super, *,
                         rid: int | None = None, quorum: bool = False) -> Client:
    """A greeted Client of the server behind net."""
    stream = await net.connect()
    return await Client.connect_stream(stream, fsid=sb.fsid, fmt_vers=sb.fmt_vers,
                                       nursery=nursery, rid=rid, quorum=quorum)


async def start_cluster(nursery: trio.Nursery, meta_dev, data_dev, nr_clients: int, **kwargs
                        ) -> tuple[Server, MemNet, list[Client]]:
    server, net = await start_server(nursery, meta_dev, data_dev, **kwargs)
    clients = [await connect_client(nursery, net, server.sb) for _ in range(nr_clients)]
    return server, net, clients


# --------------------------------------------------------------------------- oracle


def _claim(claims: ExtentSet, s: int, n: int, what: str, problems: list[str]) -> None:
    try:
        claims.add(s, n)
    except ValueError:
        problems.append(f"({s}, {n}) {what} is also claimed elsewhere")


def check_space(meta_dev, data_dev=None) -> dict:
    """Walk the on-disk state and account every block of both devices.

    Returns {"problems": [...], "meta": {used, free, pending, lent, total},
    "data": {...}}: each device's blocks from its first dynamic block to its end must be
    exactly one of used (reachable btree and extent-list blocks; mapped data extents of the
    merged items), free, pending or lent.  With the server stopped (or idle) it is the fsck
    allocator check.
    """
    sb = read_super(meta_dev)
    blocks = MetaBlocks(meta_dev, sb.fsid)
    problems: list[str] = []
    meta = ExtentSet()
    data = ExtentSet()
    counts = {"meta": dict.fromkeys(("used", "free", "pending", "lent"), 0),
              "data": dict.fromkeys(("used", "free", "pending", "lent"), 0)}

    def tree_blocks(root: fmt.BtreeRoot, name: str) -> None:
        for ref, _level in Btree(blocks, root).block_refs():
            _claim(meta, ref.blkno, 1, f"{name} block", problems)
            counts["meta"]["used"] += 1

    sources = []
    for name, root in (("fs_root", sb.fs_root), ("logs_root", sb.logs_root),
                       ("mounted_clients", sb.mounted_clients)):
        tree_blocks(root, name)
    sources.append(list(Btree(blocks, sb.fs_root).items(fmt.KEY_MIN, fmt.KEY_MAX)))
    for _k, it in Btree(blocks, sb.logs_root).items(LOG_TREES_FIRST, LOG_TREES_LAST):
        lt = fmt.unpack_log_trees(it.value)
        tree_blocks(lt.item_root, f"log tree {lt.rid:016x}.{lt.nr}")
        sources.append(list(Btree(blocks, lt.item_root).items(fmt.KEY_MIN, fmt.KEY_MAX)))
        for s, n in lt.meta_avail:
            _claim(meta, s, n, "lent meta", problems)
            counts["meta"]["lent"] += n
        for s, n in lt.data_avail:
            _claim(data, s, n, "lent data", problems)
            counts["data"]["lent"] += n
    for name, ref, claims, dev, kind in (
        ("meta_free", sb.meta_free, meta, "meta", "free"),
        ("meta_pending", sb.meta_pending, meta, "meta", "pending"),
        ("data_free", sb.data_free, data, "data", "free"),
        ("data_pending", sb.data_pending, data, "data", "pending"),
    ):
        if ref.blkno == 0:
            continue
        exts, chain = read_extent_list(blocks, ref)
        for b in chain:
            _claim(meta, b, 1, f"{name} list block", problems)
            counts["meta"]["used"] += 1
        for s, n in exts:
            _claim(claims, s, n, name, problems)
            counts[dev][kind] += n
    # mapped data extents of the merged items (newest seq wins, tombstones hide)
    best: dict[fmt.Key, fmt.Item] = {}
    for src in sources:
        for k, it in src:
            if k[0] == fmt.ZONE_FS and k[2] == fmt.FS_DATA_EXTENT:
                cur = best.get(k)
                if cur is None or it.seq > cur.seq:
                    best[k] = it
    for k, it in best.items():
        if it.deleted:
            continue
        blkno, _flags = fmt.unpack_extent_val(it.value)
        if blkno:
            _claim(data, blkno, k[4], f"extent of ino {k[1]}", problems)
            counts["data"]["used"] += k[4]
    meta_all = (fmt.META_DEV_START_BLKNO, sb.total_meta_blocks - fmt.META_DEV_START_BLKNO)
    data_all = (fmt.DATA_DEV_START_BLKNO, sb.total_data_blocks - fmt.DATA_DEV_START_BLKNO)
    for name, claims, (s, n) in (("meta", meta, meta_all), ("data", data, data_all)):
        if claims.extents() != [(s, n)]:
            missing = ExtentSet([(s, n)])
            for e in claims.extents():
                for part in missing.intersect(*e):
                    missing.remove(*part)
            outside = claims.total - (n - missing.total)
            problems.append(f"{name}: blocks not accounted for: {missing!r}; "
                            f"{outside} claimed outside the device")
        counts[name]["total"] = n
    if sb.free_meta_blocks != counts["meta"]["free"]:
        problems.append(f"super free_meta_blocks {sb.free_meta_blocks} != free list "
                        f"{counts['meta']['free']}")
    if sb.free_data_blocks != counts["data"]["free"]:
        problems.append(f"super free_data_blocks {sb.free_data_blocks} != free list "
                        f"{counts['data']['free']}")
    return {"problems": problems, **counts}
