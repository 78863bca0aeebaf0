"""An in-memory network for tests: servers and any number of Clients in one trio process.

`MemNet` is one server address: a listener the server accepts memory streams from
(trio.testing's memory_stream_pair); `connect()` gives a client its end, or raises
ConnectionRefusedError while nobody listens (after the server stopped and before
`reopen()` lets the next one listen on the same address, as a failover does).
`start_server()`/`connect_client()`/`start_cluster()` build the pieces in a nursery.
`check_space()` is the allocator oracle: it walks everything reachable from the on-disk
super and checks that every block of both devices is exactly one of used, free, pending or
lent.

Single-threaded (trio); `connect()` never blocks.
"""

from __future__ import annotations

import errno
import functools

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
        self.closed = False
        self.client_ends: list[trio.abc.Stream] = []  # every stream handed out (drop_all)

    async def accept(self) -> trio.abc.Stream:
        if self.closed:
            raise trio.ClosedResourceError("MemNet closed")
        return await self._recv.receive()

    async def connect(self) -> trio.abc.Stream:
        if self.closed:
            raise ConnectionRefusedError(errno.ECONNREFUSED, "nobody listens on this MemNet")
        client_end, server_end = trio.testing.memory_stream_pair()
        self._send.send_nowait(server_end)
        self.nr_connects += 1
        self.client_ends.append(client_end)
        return client_end

    async def aclose(self) -> None:
        """The server stopped listening: streams not yet accepted are refused (closed)."""
        if self.closed:
            return
        self.closed = True
        while True:
            try:
                stream = self._recv.receive_nowait()
            except (trio.WouldBlock, trio.ClosedResourceError, trio.EndOfChannel):
                break
            await stream.aclose()

    def reopen(self) -> None:
        """Listen again (the next server on the same address)."""
        self._send, self._recv = trio.open_memory_channel(100)
        self.closed = False

    async def drop_all(self) -> None:
        """Break every connection made so far from the client side (a network blip)."""
        ends, self.client_ends = self.client_ends, []
        for s in ends:
            await s.aclose()


async def start_server(nursery: trio.Nursery, meta_dev, data_dev, *,
                       counters: Counters | None = None, net: MemNet | None = None,
                       fence_targets=(), **kwargs) -> tuple[Server, MemNet]:
    """A running Server on a MemNet (kwargs go to Server: recovery_timeout, ...)."""
    net = net or MemNet()
    if net.closed:
        net.reopen()
    server = Server(meta_dev, data_dev, counters, **kwargs)
    await nursery.start(functools.partial(server.serve, net, fence_targets=fence_targets))
    return server, net


async def connect_client(nursery: trio.Nursery, net: MemNet, sb: fmt.Super, *,
                         rid: int | None = None, quorum: bool = False,
                         counters: Counters | None = None) -> Client:
    """A greeted Client of the server behind net (it reconnects to net after drops)."""
    client = Client(sb.fsid, sb.fmt_vers, rid, quorum, connect=net.connect, counters=counters)
    await client.start(nursery)
    return client


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
