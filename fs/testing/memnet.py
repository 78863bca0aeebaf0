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
from fs import fsck
from fs.client import Client
from fs.counters import Counters
from fs.server import Server


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


def check_space(meta_dev, data_dev=None) -> dict:
    """The allocator oracle: fsck's accounting of every block of both devices.

    Returns {"problems": [...], "meta": {used, free, pending, lent, total}, "data": {...}}.
    With the server stopped (or idle) each block must be exactly one of used, free, pending
    or lent.  The namespace checks are skipped: server tests store arbitrary items.
    """
    return fsck.check_devices(meta_dev, data_dev, namespace=False)
