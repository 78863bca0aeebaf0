"""Hostile peers: frames thrown at the server and at the client, datagrams at quorum members.

The rule (hardening issue): nothing a peer sends can stop a server or a client.  Every
message is checked before it is acted on; a bad one closes that connection (quorum: drops
that datagram) with one log line naming the peer and the reason; a connection must greet
with the volume's fsid and a rid before anything else is accepted.

The first test is the reported finding (a valid header and the payload ``{bad`` stopped the
server).  The fuzzers are hypothesis tests bounded to a few seconds: their payloads come
from the message schemas of fs/net.py (valid values, and values with one field of a wrong
type or out of range, a field missing or unknown), plus random bytes, truncated frames,
huge length fields, unknown commands, bad header fields, requests before the greeting and
wrong fsids.  After each example a well-behaved client must still be served, and no task
may have raised (trio.run would re-raise it) or logged a traceback.
"""

from __future__ import annotations

import errno
import logging
import os
import random

import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fs import format as fmt
from fs import net
from fs import quorum as q
from fs import server as srv
from fs.alloc import ExtentSet
from fs.client import Client
from fs.mkfs import make_volume
from fs.net import Cmd
from fs.testing.memdev import MemDevice
from fs.testing.memnet import check_space, connect_client, start_server
from fs.testing.memudp import MemUdpNet

META_SIZE = 32 * 1024 * 1024
DATA_SIZE = 64 * 1024 * 1024
U64_MAX = fmt.U64_MAX
# a lock key no fuzz example uses (the good client must not wait for a fuzz rid's lock)
GOOD_KEY = (fmt.ZONE_FS, 0x5EED_0000_0000_0001, fmt.FS_XATTR, 77, 88, 3)

# bounded for CI: each fuzz test takes a second or two; NET_FUZZ_SCALE=20 runs 20x more
SCALE = float(os.environ.get("NET_FUZZ_SCALE", "1"))


def examples(n: int) -> int:
    return max(1, int(n * SCALE))


FUZZ = settings(max_examples=examples(100), deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def volume():
    meta, data = MemDevice(META_SIZE, "meta"), MemDevice(DATA_SIZE, "data")
    sb = make_volume(meta, data, {0: ("127.0.0.1", 7000)})
    return meta, data, sb


def greeting(sb, rid: int = 0xF00D, **kw) -> dict:
    return {"fsid": sb.fsid, "fmt_vers": sb.fmt_vers, "rid": rid, "flags": 0,
            "server_term": 0, "resume": False, **kw}


def frame(cmd: int, payload=None, *, seq: int = 1, mid: int = 1, flags: int = 0,
          error: int = 0, raw: bytes | None = None, dlen: int | None = None) -> bytes:
    data = net.encode(payload) if raw is None else raw
    return net.HEADER.pack(seq, 0, mid, len(data) if dlen is None else dlen, cmd, flags,
                           error) + data


class Records(logging.Handler):
    """Collects the log records of fs.* while installed."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def __enter__(self) -> Records:
        lg = logging.getLogger("fs")
        self._level = lg.level
        lg.setLevel(logging.INFO)
        lg.addHandler(self)
        return self

    def __exit__(self, *exc) -> None:
        lg = logging.getLogger("fs")
        lg.removeHandler(self)
        lg.setLevel(self._level)

    def messages(self, level: int = logging.WARNING) -> list[str]:
        return [r.getMessage() for r in self.records if r.levelno >= level]

    def tracebacks(self) -> list[str]:
        return [r.getMessage() for r in self.records if r.exc_info]

    def closings(self) -> list[str]:
        return [m for m in self.messages() if "closing the connection" in m]


@pytest.fixture(autouse=True)
def fresh_log_limiter(monkeypatch):
    """Every bad connection logs its line (the limiter is per process)."""
    monkeypatch.setattr(net, "_reject_log", net.LogLimiter(net.log, rate=1e6, burst=10**9))


class Peer:
    """A hand-driven peer on one stream."""

    def __init__(self, stream: trio.abc.Stream):
        self.stream = stream
        self.seq = 0
        self.reader = net.FrameReader()
        self.frames: list[tuple[tuple[int, ...], bytes]] = []
        self.eof = False

    async def send_raw(self, data: bytes) -> None:
        try:
            await self.stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the other end closed on us already

    async def send(self, cmd: int, payload=None, **kw) -> int:
        self.seq += 1
        await self.send_raw(frame(cmd, payload, seq=self.seq, mid=self.seq, **kw))
        return self.seq

    async def _more(self) -> None:
        try:
            data = await self.stream.receive_some(65536)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            data = b""
        if not data:
            self.eof = True
            return
        self.frames += self.reader.feed(data, 1 << 40)

    async def response(self, mid: int) -> tuple[int, object]:
        """(errno, payload) of the response to request mid; AssertionError at EOF."""
        with trio.fail_after(5):
            while True:
                for i, (hdr, data) in enumerate(self.frames):
                    if hdr[5] & net.FLAG_RESPONSE and hdr[2] == mid:
                        del self.frames[i]
                        return hdr[6], net.decode(data)
                assert not self.eof, "closed before the response"
                await self._more()

    async def request(self, cmd: int, payload=None) -> tuple[int, object]:
        return await self.response(await self.send(cmd, payload))

    async def closed_by_peer(self) -> bool:
        """Read until the other end closes (True), or until nothing more happens."""
        await trio.testing.wait_all_tasks_blocked()
        with trio.move_on_after(1):
            while not self.eof:
                await self._more()
        return self.eof

    async def aclose(self) -> None:
        await self.stream.aclose()


async def check_good_client(nursery, mnet, sb, server) -> None:
    """A well-behaved mount is served: every request it makes, then a clean farewell."""
    c = await connect_client(nursery, mnet, sb)
    with trio.fail_after(10):
        assert (await c.statfs())["total_meta_blocks"] == sb.total_meta_blocks
        first, nr = await c.alloc_inodes(16)
        assert nr == 16 and first >= fmt.FIRST_ALLOC_INO
        lt = await c.get_log_trees()
        await c.commit_log_trees(lt, [], [])
        grant = await c.lock_request(GOOD_KEY, 0, 2, 0)
        assert grant["mode"] == 2 and grant["key"] == GOOD_KEY
        await c.get_roots()
        await c.get_last_seq()
        await c.farewell()
    await c.close()
    assert not server.failed.is_set(), server.fail_reason


# --------------------------------------------------------------------------- the finding


def test_bad_json_frame_closes_only_that_connection():
    """The reported reproduction: 36 bytes, a valid header and the payload `{bad`."""
    meta, data, sb = volume()

    async def main():
        async with trio.open_nursery() as nursery:
            server, mnet = await start_server(nursery, meta, data)
            good = await connect_client(nursery, mnet, sb)
            bad = frame(Cmd.GREETING, raw=b"{bad")
            assert len(bad) == 36
            with Records() as rec:
                peer = Peer(await mnet.connect())
                await peer.send_raw(bad)
                assert await peer.closed_by_peer()
            assert not server.failed.is_set()
            [line] = rec.closings()
            assert "0.0.0.0:0" in line and "not valid JSON" in line  # peer and reason
            # the mount already connected and a new one are both still served
            assert (await good.statfs())["total_meta_blocks"] == sb.total_meta_blocks
            await check_good_client(nursery, mnet, sb, server)
            await good.close()
            await server.shutdown()

    trio.run(main)


# --------------------------------------------------------------------------- targeted


def test_greeting_is_required_and_checked():
    meta, data, sb = volume()

    async def main():
        async with trio.open_nursery() as nursery:
            server, mnet = await start_server(nursery, meta, data)
            with Records() as rec:
                # a request before the greeting: EINVAL, then the connection is closed
                p = Peer(await mnet.connect())
                err, reply = await p.request(Cmd.STATFS)
                assert err == errno.EINVAL and "before greeting" in reply["msg"]
                assert await p.closed_by_peer()
                # another volume's fsid, rid 0, another format version: refused and closed
                for bad in (greeting(sb, fsid=sb.fsid ^ 1), greeting(sb, rid=0),
                            greeting(sb, fmt_vers=sb.fmt_vers + 1)):
                    p = Peer(await mnet.connect())
                    err, _reply = await p.request(Cmd.GREETING, bad)
                    assert err == errno.EINVAL
                    assert await p.closed_by_peer()
                # frames are small until the greeting: a big one is refused at its header
                p = Peer(await mnet.connect())
                await p.send_raw(frame(Cmd.GREETING, raw=b"", dlen=net.MAX_GREETING_PAYLOAD + 1))
                assert await p.closed_by_peer()
                # a greeting while the first is being answered, or a second one, is refused
                p = Peer(await mnet.connect())
                await p.send(Cmd.GREETING, greeting(sb, rid=5))
                await p.send(Cmd.GREETING, greeting(sb, rid=6))
                assert await p.closed_by_peer()
                p = Peer(await mnet.connect())
                assert (await p.request(Cmd.GREETING, greeting(sb, rid=7)))[0] == 0
                err, _reply = await p.request(Cmd.GREETING, greeting(sb, rid=8))
                assert err == errno.EINVAL and await p.closed_by_peer()
                # after the greeting: full-size frames and every request
                p = Peer(await mnet.connect())
                assert (await p.request(Cmd.GREETING, greeting(sb, rid=9)))[0] == 0
                err, st_ = await p.request(Cmd.STATFS)
                assert err == 0 and st_["total_data_blocks"] == sb.total_data_blocks
                big = {"count": 1, "pad": "x" * (2 * net.MAX_GREETING_PAYLOAD)}
                err, reply = await p.request(Cmd.ALLOC_INODES, big)  # unknown field: refused
                assert err == errno.EINVAL and "unknown field" in reply["msg"]
                assert await p.closed_by_peer()
            # one line per closed connection, naming the peer and the reason
            closings = rec.closings()
            assert len(closings) == 8, closings
            assert all("peer 0.0.0.0:0" in m for m in closings)
            assert any("fsid" in m and "is not the volume's" in m for m in closings)
            assert not rec.tracebacks()
            # rids 5, 7 and 9 greeted (5 before the second greeting was refused): they
            # leave like any mount, then a well-behaved client is served
            for rid in (5, 7, 9):
                p = Peer(await mnet.connect())
                assert (await p.request(Cmd.GREETING, greeting(sb, rid=rid)))[0] == 0
                assert await p.request(Cmd.FAREWELL, {"rid": rid}) == (0, {})
            await check_good_client(nursery, mnet, sb, server)
            await server.shutdown()

    trio.run(main)


def test_silent_connections_are_closed():
    """A connection that never greets is closed after GREETING_TIMEOUT_S; a greeted one
    that goes quiet is not."""
    meta, data, sb = volume()

    async def main():
        async with trio.open_nursery() as nursery:
            server, mnet = await start_server(nursery, meta, data, reconnect_timeout=1e6)
            with Records() as rec:
                silent = Peer(await mnet.connect())
                partial = Peer(await mnet.connect())
                await partial.send_raw(frame(Cmd.GREETING, greeting(sb))[:40])
                quiet = Peer(await mnet.connect())
                assert (await quiet.request(Cmd.GREETING, greeting(sb, rid=3)))[0] == 0
                await trio.sleep(net.GREETING_TIMEOUT_S + 1)
                assert silent.eof is False
                assert await silent.closed_by_peer() and await partial.closed_by_peer()
                err, _r = await quiet.request(Cmd.GET_LAST_SEQ)
                assert err == 0
            assert len([m for m in rec.closings() if "no greeting within" in m]) == 2
            await server.shutdown()

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


def test_commit_claims_are_range_checked():
    """Freed extents outside the device used to be accepted: the server would later hand
    them out and its own commit would fail, stopping it.  Record-size and u64 overflows
    are refused too."""
    meta, data, sb = volume()

    async def main():
        async with trio.open_nursery() as nursery:
            server, mnet = await start_server(nursery, meta, data)
            p = Peer(await mnet.connect())
            assert (await p.request(Cmd.GREETING, greeting(sb)))[0] == 0
            err, lt = await p.request(Cmd.GET_LOG_TREES, {"rid": 1})
            assert err == 0
            base = {"nr": lt["nr"], "trans_seq": lt["get_trans_seq"],
                    "item_root": lt["item_root"], "meta_avail": lt["meta_avail"],
                    "data_avail": lt["data_avail"]}
            fragmented = [[b, 1] for start, n in lt["data_avail"]
                          for b in range(start, start + n, 2)]
            for bad in ({"meta_freed": [[sb.total_meta_blocks, 1]]},
                        {"meta_freed": [[0, 1]]},
                        {"data_freed": [[10**12, 5]]},
                        {"data_freed": [[1, 1]]},
                        {"data_avail": fragmented}):  # a record bigger than an item
                err, reply = await p.request(Cmd.COMMIT_LOG_TREES, {**base, **bad})
                assert err == errno.EINVAL, (bad, reply)
            assert len(fragmented) > 1100
            # a fragmented avail that just fits is accepted, and the next refill stays small
            # enough for the record to fit (it used to fail, leaking what it had taken)
            rest = ExtentSet(tuple(e) for e in base["data_avail"])
            # (1013 + the meta extent: what fits next to the record's srch log file)
            for b, n in fragmented[:1013]:
                rest.remove(b, n)
            assert await p.request(Cmd.COMMIT_LOG_TREES, {
                **base, "data_avail": fragmented[:1013],
                "data_freed": [list(e) for e in rest.extents()]}) == (0, {})
            err, lt = await p.request(Cmd.GET_LOG_TREES, {})
            assert err == 0 and len(lt["data_avail"]) + len(lt["meta_avail"]) <= 1014
            # the inode count stays a u64 whatever the deltas
            for _ in range(3):
                err, lt = await p.request(Cmd.GET_LOG_TREES, {})
                assert err == 0
                commit = {"nr": lt["nr"], "trans_seq": lt["get_trans_seq"],
                          "item_root": lt["item_root"], "meta_avail": lt["meta_avail"],
                          "data_avail": lt["data_avail"], "inode_count_delta": 2**63 - 1}
                assert await p.request(Cmd.COMMIT_LOG_TREES, commit) == (0, {})
            assert server.sb.inode_count == U64_MAX
            assert await p.request(Cmd.FAREWELL, {}) == (0, {})
            await check_good_client(nursery, mnet, sb, server)
            assert server.nr_commits > 0 and not server.failed.is_set()
            await server.shutdown()
        # every block is still exactly one of used, free, pending or lent
        assert check_space(meta, data)["problems"] == []

    trio.run(main)


def test_lock_recover_pages_must_ascend():
    """A client answering LOCK_RECOVER with a page that does not move forward would be
    asked forever: its connection is closed instead."""
    meta, data, sb = volume()

    async def main():
        async with trio.open_nursery() as nursery:
            server, mnet = await start_server(nursery, meta, data)
            c = await connect_client(nursery, mnet, sb)
            await c.close()  # gone without farewell: still mounted
            await server.shutdown()
            server, mnet = await start_server(nursery, meta, data, net=mnet,
                                              recovery_timeout=1e6)
            assert c.rid in server.recovering
            p = Peer(await mnet.connect())
            err, _r = await p.request(Cmd.GREETING, greeting(sb, rid=c.rid, resume=True))
            assert err == 0
            with trio.fail_after(5):
                while not (reqs := [f for f in p.frames if not f[0][5] & net.FLAG_RESPONSE]):
                    await p._more()
            hdr, _data = reqs[0]
            assert hdr[4] == Cmd.LOCK_RECOVER
            page = [{"key": [1, 1, 1, 1, 1, 1], "mode": 1}] * srv.RECOVER_PAGE
            await p.send_raw(frame(Cmd.LOCK_RECOVER, {"locks": page}, seq=p.seq + 1,
                                   mid=hdr[2], flags=net.FLAG_RESPONSE))
            assert await p.closed_by_peer()
            assert c.rid in server.recovering and not server.failed.is_set()
            await server.shutdown()

    trio.run(main)


def test_client_survives_a_hostile_server():
    """A server (or anything listening where the client connects) sending garbage: the
    client drops that connection and reconnects; its requests are resent."""
    meta, data, sb = volume()

    async def main():
        async with trio.open_nursery() as nursery:
            server, mnet = await start_server(nursery, meta, data)
            hostile: list[bytes] = [
                frame(Cmd.GREETING, raw=b"{bad", flags=net.FLAG_RESPONSE),
                frame(Cmd.GREETING, {"server_term": "x", "fmt_vers": sb.fmt_vers,
                                     "rid": 1}, flags=net.FLAG_RESPONSE),
                frame(Cmd.LOCK, {"key": [1] * 7, "old_mode": 0, "new_mode": 1}),
                frame(99, {}),
                frame(Cmd.GREETING, raw=b"", dlen=0xFFFFFFFF),
            ]
            nr_connects = 0

            async def connect():
                nonlocal nr_connects
                nr_connects += 1
                if hostile:
                    a, b = trio.testing.memory_stream_pair()
                    nursery.start_soon(hostile_server, b, hostile.pop(0))
                    return a
                return await mnet.connect()

            with Records() as rec:
                c = Client(sb.fsid, sb.fmt_vers, connect=connect)
                await c.start(nursery)
                assert nr_connects == 6 and c.conn is not None
                assert (await c.statfs())["total_data_blocks"] == sb.total_data_blocks
            assert len(rec.closings()) == 5 and not rec.tracebacks()
            await c.farewell()
            await c.close()
            await server.shutdown()

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0.01))


async def hostile_server(stream: trio.abc.Stream, data: bytes) -> None:
    """Wait for the client's greeting, answer with data, hang up half a second later."""
    reader = net.FrameReader()
    try:
        with trio.move_on_after(5):
            while True:
                chunk = await stream.receive_some(65536)
                if not chunk or reader.feed(chunk):
                    break
        await stream.send_all(data)
        with trio.move_on_after(0.5):
            while await stream.receive_some(65536):
                pass
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    await stream.aclose()


# --------------------------------------------------------------------------- strategies

_SCALARS = st.one_of(st.none(), st.booleans(), st.floats(), st.text(max_size=8),
                     st.integers(-(2**70), 2**70), st.just(b"\x00"))  # bytes: {"__b__": ..}
_NOT_LIST = st.one_of(_SCALARS, st.dictionaries(st.text(max_size=3), _SCALARS, max_size=2))
_NOT_DICT = st.one_of(_SCALARS, st.lists(_SCALARS, max_size=3))


def valid(schema: net.Schema) -> st.SearchStrategy:
    """Values the schema accepts."""
    if isinstance(schema, net.ExtentSchema):
        return st.integers(0, U64_MAX).flatmap(
            lambda s: st.integers(1, U64_MAX + 1 - s).map(lambda n: [s, n]))
    if isinstance(schema, net.Int):
        return st.integers(schema.lo, schema.hi)
    if isinstance(schema, net.Bool):
        return st.booleans()
    if isinstance(schema, net.Str):
        return st.text(max_size=16)
    if isinstance(schema, net.Nullable):
        return st.one_of(st.none(), valid(schema.inner))
    if isinstance(schema, net.Fixed):
        return st.tuples(*[valid(s) for s in schema.items]).map(list)
    if isinstance(schema, net.List):
        return st.lists(valid(schema.item), max_size=min(schema.max_len, 3))
    if isinstance(schema, net.Dict):
        return st.fixed_dictionaries({k: valid(s) for k, s in schema.required.items()},
                                     optional={k: valid(s) for k, s in schema.optional.items()})
    if isinstance(schema, net.Empty):
        return st.sampled_from([None, {}])
    raise AssertionError(f"no strategy for {schema!r}")


@st.composite
def invalid(draw, schema: net.Schema):
    """A value the schema refuses: the wrong type, out of range, or (inside) one field
    missing, unknown or itself invalid."""
    if isinstance(schema, net.Int):
        return draw(st.one_of(
            st.integers(max_value=schema.lo - 1) if schema.lo > -(2**80) else st.nothing(),
            st.integers(min_value=schema.hi + 1),
            st.booleans(), st.floats(), st.text(max_size=4), st.none(), st.just([1]),
            st.just(b"\x00")))
    if isinstance(schema, net.Bool):
        return draw(st.one_of(st.integers(), st.text(max_size=4), st.none(), st.just([])))
    if isinstance(schema, net.Str):
        return draw(st.one_of(st.integers(), st.none(), st.just(["s"]),
                              st.just("x" * (schema.max_len + 1))))
    if isinstance(schema, net.Nullable):
        return draw(invalid(schema.inner).filter(lambda v: v is not None))
    if isinstance(schema, net.ExtentSchema) and draw(st.booleans()):
        return draw(st.sampled_from([[0, 0], [U64_MAX, 2], [5, -1], [1, 2, 3], [7]]))
    if isinstance(schema, net.Fixed):
        items = draw(valid(schema))
        how = draw(st.sampled_from(["type", "short", "long", "item"]))
        if how == "type":
            return draw(_NOT_LIST)
        if how == "short":
            return items[:-1]
        if how == "long":
            return items + [0]
        i = draw(st.integers(0, len(items) - 1))
        items[i] = draw(invalid(schema.items[i]))
        return items
    if isinstance(schema, net.List):
        if draw(st.booleans()):
            return draw(_NOT_LIST)
        items = draw(st.lists(valid(schema.item), max_size=2))
        items.insert(draw(st.integers(0, len(items))), draw(invalid(schema.item)))
        return items
    if isinstance(schema, net.Dict):
        value = draw(valid(schema))
        hows = ["type", "unknown"] + (["missing"] if schema.required else []) + \
            (["field"] if value else [])
        how = draw(st.sampled_from(hows))
        if how == "type":
            return draw(_NOT_DICT)
        if how == "unknown":
            return {**value, draw(st.text(min_size=1, max_size=6).filter(
                lambda k: k not in schema.required and k not in schema.optional)): 1}
        if how == "missing":
            del value[draw(st.sampled_from(sorted(schema.required)))]
            return value
        k = draw(st.sampled_from(sorted(value)))
        value[k] = draw(invalid({**schema.required, **schema.optional}[k]))
        return value
    if isinstance(schema, net.Empty):
        return draw(st.one_of(st.just([]), st.just(0), st.just({"x": 1}), st.text(max_size=3)))
    raise AssertionError(f"no strategy for {schema!r}")


def _refused(schema: net.Schema, value) -> bool:
    try:
        schema.check(value, "v")
    except net.ProtocolError:
        return True
    return False


@given(st.sampled_from(sorted(net.REQUEST_SCHEMAS)), st.data())
@settings(max_examples=examples(60), deadline=None, database=None)
def test_schema_strategies_agree_with_the_schemas(cmd, data):
    """The generators below are only as good as this: valid() values pass, invalid() fail."""
    for table in (net.REQUEST_SCHEMAS, net.RESPONSE_SCHEMAS):
        schema = table[cmd]
        assert not _refused(schema, data.draw(valid(schema)))
        assert _refused(schema, data.draw(invalid(schema)))


def test_what_well_formed_peers_send_passes():
    """The payloads our own client and server build pass the schemas (wire compatible)."""
    root = net.root_to_wire(fmt.BtreeRoot(fmt.BlockRef(12, 34), 2))
    lt = fmt.LogTrees(rid=5, nr=2, item_root=fmt.BtreeRoot(fmt.BlockRef(12, 34), 2),
                      meta_avail=[(10, 3)], data_avail=[(100, 50)], get_trans_seq=9,
                      commit_trans_seq=8, max_item_seq=9, flags=1)
    ok = [
        (net.REQUEST_SCHEMAS, Cmd.GREETING, {"fsid": U64_MAX, "fmt_vers": 1, "rid": 1,
                                             "flags": 3, "server_term": 7, "resume": True}),
        (net.REQUEST_SCHEMAS, Cmd.COMMIT_LOG_TREES, {
            "rid": 5, "nr": 2, "trans_seq": 9, "item_root": root, "meta_avail": [[10, 3]],
            "data_avail": [], "meta_freed": [[U64_MAX, 1]], "data_freed": [],
            "max_item_seq": 9, "inode_count_delta": -3}),
        (net.REQUEST_SCHEMAS, Cmd.LOCK, {"key": list(GOOD_KEY), "old_mode": 0,
                                         "new_mode": 3, "write_seq": 0}),
        (net.REQUEST_SCHEMAS, Cmd.LOCK, {"key": list(GOOD_KEY), "old_mode": 2,
                                         "new_mode": 1}),
        (net.REQUEST_SCHEMAS, Cmd.LOCK_RECOVER, {"start": None, "nr": 512}),
        (net.REQUEST_SCHEMAS, Cmd.SYNC_LOG_TREES, {}),
        (net.REQUEST_SCHEMAS, Cmd.STATFS, None),
        (net.RESPONSE_SCHEMAS, Cmd.GET_LOG_TREES, net.log_trees_to_wire(lt)),
        (net.RESPONSE_SCHEMAS, Cmd.LOCK_RECOVER, {"locks": [
            {"key": list(GOOD_KEY), "mode": 1, "write_seq": 5}]}),
        (net.RESPONSE_SCHEMAS, Cmd.GREETING, {"server_term": 0, "fmt_vers": 1, "rid": 9,
                                              "gone": False}),
    ]
    for table, cmd, payload in ok:
        table[cmd].check(net.decode(net.encode(payload)), cmd.name)


# --------------------------------------------------------------------------- server fuzz

ALL_CMDS = sorted(net.REQUEST_SCHEMAS)
# a greeted peer is trusted with the allocator claims of a commit it makes (item roots and
# freed blocks are range-checked, not checked against what it owns, as scoutfs trusts its
# mounts): well-typed commits are left out, badly typed ones are refused before the handler
SEMANTIC_CMDS = [c for c in ALL_CMDS if c not in (Cmd.COMMIT_LOG_TREES, Cmd.GREETING)]


def _not_json(b: bytes) -> bool:
    try:
        net.decode(b)
    except Exception:
        return bool(b)
    return False


@st.composite
def bad_message(draw, sb, greeted: bool):
    """(bytes, must the server close the connection for them, are they whole frames)."""
    kind = draw(st.sampled_from([
        "random", "huge_len", "truncated", "not_json", "unknown_cmd", "bad_flags",
        "error_in_request", "response", "wrong_type", "wrong_fsid", "deep",
        "before_greeting", "second_greeting", "not_served", "valid"]))
    seq = 1  # each whole frame gets the conversation's next seq when it is sent
    cmd = draw(st.sampled_from(ALL_CMDS))
    if kind == "random":
        return draw(st.binary(max_size=200)), False, False
    if kind == "huge_len":
        limit = net.MAX_PAYLOAD if greeted else net.MAX_GREETING_PAYLOAD
        dlen = draw(st.integers(limit + 1, 2**32 - 1))
        return frame(cmd, raw=b"", seq=seq, dlen=dlen), True, True
    if kind == "truncated":
        full = frame(cmd, draw(valid(net.REQUEST_SCHEMAS[cmd])), seq=seq)
        return full[:draw(st.integers(0, len(full) - 1))], False, False
    if kind == "not_json":
        raw = draw(st.binary(min_size=1, max_size=64).filter(_not_json))
        return frame(cmd if greeted else Cmd.GREETING, raw=raw, seq=seq), True, True
    if kind == "unknown_cmd":
        bad = draw(st.integers(0, 255).filter(lambda c: c not in set(Cmd)))
        return frame(bad, {}, seq=seq), True, True
    if kind == "bad_flags":
        return frame(cmd, None, seq=seq, flags=draw(st.integers(2, 255))), True, True
    if kind == "error_in_request":
        return frame(cmd, None, seq=seq, error=draw(st.integers(1, 0xFFFF))), True, True
    if kind == "response":
        # a response to nothing: dropped once greeted (unless its errno is out of
        # range); before the greeting, refused
        error = draw(st.integers(0, 0xFFFF))
        return (frame(cmd, {}, seq=seq, mid=draw(st.integers(0, U64_MAX)),
                      flags=net.FLAG_RESPONSE, error=error),
                not greeted or error > net.MAX_ERRNO, True)
    if kind == "wrong_fsid":
        fsid = draw(st.integers(0, U64_MAX).filter(lambda f: f != sb.fsid))
        return frame(Cmd.GREETING, greeting(sb, fsid=fsid), seq=seq), True, True
    if kind == "deep":
        n = draw(st.integers(1000, 100000))
        raw = b"[" * n + b"]" * n
        return frame(cmd if greeted else Cmd.GREETING, raw=raw, seq=seq), True, True
    if kind == "before_greeting" and not greeted:
        c = draw(st.sampled_from([c for c in ALL_CMDS if c != Cmd.GREETING]))
        return frame(c, draw(valid(net.REQUEST_SCHEMAS[c])), seq=seq), True, True
    if kind == "second_greeting" and greeted:
        rid = draw(st.integers(1, U64_MAX))
        return frame(Cmd.GREETING, greeting(sb, rid=rid), seq=seq), True, True
    if kind == "not_served" and greeted:
        c = draw(st.sampled_from([Cmd.SYNC_LOG_TREES, Cmd.LOCK_RECOVER]))
        return frame(c, draw(valid(net.REQUEST_SCHEMAS[c])), seq=seq), True, True
    if kind == "valid" and greeted:
        c = draw(st.sampled_from(SEMANTIC_CMDS))
        return frame(c, draw(valid(net.REQUEST_SCHEMAS[c])), seq=seq), False, True
    # wrong types: one field of a command's payload (before the greeting: of GREETING)
    c = cmd if greeted and cmd != Cmd.GREETING else Cmd.GREETING
    return frame(c, draw(invalid(net.REQUEST_SCHEMAS[c])), seq=seq), True, True


@st.composite
def conversation(draw, sb):
    """(greet first?, greeting flags, [(bytes, must close, whole frames)]) of one
    connection."""
    greeted = draw(st.booleans())
    msgs = draw(st.lists(bad_message(sb, greeted), min_size=1, max_size=3))
    return greeted, draw(st.sampled_from([0, net.GREETING_FLAG_QUORUM])), msgs


def must_close(msgs) -> bool:
    """Whether a frame that must close the connection arrives while frames are still
    aligned (after random bytes or a partial frame, the next header is anybody's guess)."""
    for _raw, close, aligned in msgs:
        if close:
            return True
        if not aligned:
            return False
    return False


@FUZZ
@given(st.data())
def test_fuzz_server(data):
    meta, mdata, sb = volume()
    convs = data.draw(st.lists(conversation(sb), min_size=1, max_size=3))

    async def main():
        async with trio.open_nursery() as nursery:
            # fuzz rids that greet and vanish are never fenced during the example
            server, mnet = await start_server(nursery, meta, mdata, reconnect_timeout=1e6)
            with Records() as rec:
                for i, (greet, flags, msgs) in enumerate(convs):
                    p = Peer(await mnet.connect())
                    if greet:
                        err, _r = await p.request(
                            Cmd.GREETING, greeting(sb, rid=0xF0000 + i, flags=flags))
                        assert err == 0
                    for raw, _close, aligned in msgs:
                        if aligned and len(raw) >= 8:
                            # seqs ascend (a repeated seq is a resend: dropped unread)
                            p.seq += 1
                            raw = p.seq.to_bytes(8, "little") + raw[8:]
                        await p.send_raw(raw)
                        await trio.testing.wait_all_tasks_blocked()
                    if must_close(msgs):
                        assert await p.closed_by_peer(), msgs
                    await p.aclose()
                await trio.testing.wait_all_tasks_blocked()
                assert not server.failed.is_set(), server.fail_reason
                await check_good_client(nursery, mnet, sb, server)
            assert not rec.tracebacks(), rec.tracebacks()
            assert len(rec.closings()) <= len(convs)
            await server.shutdown()

    trio.run(main)


# --------------------------------------------------------------------------- client fuzz


@st.composite
def hostile_frames(draw, sb):
    """What a hostile server sends a client: bad responses to its greeting (id 1) and bad
    requests of its own."""
    out = []
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["random", "bad_response", "bad_request", "huge_len",
                                     "not_json", "wrong_cmd_response", "unknown_cmd"]))
        seq = len(out) + 1
        cmd = draw(st.sampled_from(ALL_CMDS))
        if kind == "random":
            out.append(draw(st.binary(max_size=100)))
        elif kind == "bad_response":
            out.append(frame(Cmd.GREETING, draw(invalid(net.RESPONSE_SCHEMAS[Cmd.GREETING])),
                             seq=seq, mid=1, flags=net.FLAG_RESPONSE))
        elif kind == "bad_request":
            c = draw(st.sampled_from([Cmd.LOCK, Cmd.LOCK_RECOVER, Cmd.SYNC_LOG_TREES]))
            out.append(frame(c, draw(invalid(net.REQUEST_SCHEMAS[c])), seq=seq,
                             mid=draw(st.integers(0, U64_MAX))))
        elif kind == "huge_len":
            out.append(frame(cmd, raw=b"", seq=seq, dlen=net.MAX_PAYLOAD + 1))
        elif kind == "not_json":
            out.append(frame(Cmd.GREETING, raw=draw(st.binary(min_size=1).filter(_not_json)),
                             seq=seq, mid=1, flags=net.FLAG_RESPONSE))
        elif kind == "wrong_cmd_response":
            out.append(frame(Cmd.STATFS, {}, seq=seq, mid=1, flags=net.FLAG_RESPONSE))
        else:
            out.append(frame(draw(st.integers(21, 255)), {}, seq=seq))
    return b"".join(out)


@settings(FUZZ, max_examples=examples(50))
@given(st.data())
def test_fuzz_client(data):
    meta, mdata, sb = volume()
    rounds = data.draw(st.lists(hostile_frames(sb), min_size=1, max_size=3))

    async def main():
        async with trio.open_nursery() as nursery:
            server, mnet = await start_server(nursery, meta, mdata)
            todo = list(rounds)

            async def connect():
                if todo:
                    a, b = trio.testing.memory_stream_pair()
                    nursery.start_soon(hostile_server, b, todo.pop(0))
                    return a
                return await mnet.connect()

            with Records() as rec:
                c = Client(sb.fsid, sb.fmt_vers, connect=connect)
                with trio.fail_after(60):
                    await c.start(nursery)
                    # the client works once it reaches the real server
                    assert (await c.statfs())["total_meta_blocks"] == sb.total_meta_blocks
                    await c.farewell()
                await c.close()
            assert not rec.tracebacks(), rec.tracebacks()
            await server.shutdown()

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


# --------------------------------------------------------------------------- quorum


class _Member:
    def __init__(self, slot: int):
        self.slot = slot
        self.up = False
        self.m: q.QuorumMember | None = None

    async def start_server(self, term, targets) -> None:
        await trio.sleep(0.05)
        self.up = True

    async def stop_server(self) -> None:
        self.up = False


async def _quorum(nursery, nr_slots: int, seed: int):
    meta = MemDevice(4 * 1024 * 1024, "meta")
    sb = make_volume(meta, MemDevice(1024 * 1024, "data"),
                     {i: ("127.0.0.1", 7000 + i) for i in range(nr_slots)})
    udp = MemUdpNet(random.Random(seed))
    members = []
    for slot in range(nr_slots):
        mb = _Member(slot)
        mb.m = q.QuorumMember(
            meta_dev=meta.reopen(), fsid=sb.fsid, slots=sb.quorum_slots, slot=slot,
            rid=1000 + slot, heartbeat_timeout_ms=2000, transport=udp.transport(slot),
            start_server=mb.start_server, stop_server=mb.stop_server,
            rng=random.Random(seed * 10 + slot))
        await nursery.start(mb.m.run)
        members.append(mb)
    return sb, udp, members


async def _one_leader(members, timeout: float) -> _Member:
    with trio.fail_after(timeout):
        while True:
            serving = [mb for mb in members if mb.m.is_leader]
            if len(serving) == 1 and sum(mb.m.role == q.ROLE_LEADER for mb in members) == 1:
                return serving[0]
            await trio.sleep(0.05)


def test_bad_datagrams_are_dropped_with_rate_limited_log_lines():
    async def main():
        async with trio.open_nursery() as nursery:
            sb, udp, members = await _quorum(nursery, 3, 1)
            leader = await _one_leader(members, 10)
            term = leader.m.term
            with Records() as rec:
                for i in range(500):
                    udp.inject(leader.slot, bytes([i % 256]) * (i % 40))
                udp.inject(leader.slot, q.pack_msg(sb.fsid, 2**64 - 1, q.MSG_HEARTBEAT,
                                                   (leader.slot + 1) % 3))
                udp.inject(leader.slot, q.pack_msg(sb.fsid ^ 1, term + 1, q.MSG_HEARTBEAT,
                                                   (leader.slot + 1) % 3))
                await trio.sleep(1)
            lines = [m for m in rec.messages() if "dropping a datagram" in m]
            assert 1 <= len(lines) <= 11, lines  # a burst of 10, then 1 per (real) second
            assert leader.m.is_leader and leader.m.term == term  # nothing was acted on
            assert q.check_msg(q.unpack_msg(q.pack_msg(sb.fsid, 2**64 - 1, 0, 1)),
                               sb.fsid, sb.quorum_slots, 0) == f"term {2**64 - 1} out of range"
            nursery.cancel_scope.cancel()

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


@st.composite
def datagrams(draw, fsid: int):
    out = []
    for _ in range(draw(st.integers(1, 20))):
        kind = draw(st.sampled_from(["random", "forged", "sized"]))
        if kind == "random":
            out.append(draw(st.binary(max_size=120)))
        elif kind == "sized":
            out.append(draw(st.binary(min_size=q.MSG_SIZE, max_size=q.MSG_SIZE)))
        else:
            # well-formed (valid crc) with any fields: the crc is no authentication
            out.append(q.pack_msg(
                draw(st.sampled_from([fsid, fsid ^ 1, 0, U64_MAX])),
                draw(st.one_of(st.integers(0, 10), st.integers(0, U64_MAX))),
                draw(st.integers(0, 255)), draw(st.integers(0, 255))))
    return out


@settings(FUZZ, max_examples=examples(40))
@given(st.data())
def test_fuzz_quorum(data):
    seed = data.draw(st.integers(0, 1000))

    async def main():
        async with trio.open_nursery() as nursery:
            sb, udp, members = await _quorum(nursery, 3, seed)
            await _one_leader(members, 10)
            for _ in range(data.draw(st.integers(1, 4))):
                for d in data.draw(datagrams(sb.fsid)):
                    udp.inject(data.draw(st.integers(0, 2)), d)
                await trio.sleep(data.draw(st.floats(0, 1)))
            # forged messages may demote leaders; once they stop, one leader serves again
            leader = await _one_leader(members, 60)
            assert leader.m.term <= q.MAX_TERM + 10
            nursery.cancel_scope.cancel()

    with Records() as rec:
        trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert not rec.tracebacks()
