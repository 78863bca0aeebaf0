"""Messaging: codec, framing, request/response matching, errors, ordering, closing."""

from __future__ import annotations

import errno

import pytest
import trio
import trio.testing

from fs import format as fmt
from fs import net
from fs.errors import FsError
from fs.net import Cmd, Connection


def test_codec_round_trip():
    obj = {"a": 1, "b": b"\x00\xffxyz", "c": [1, (2, 3), {"d": None, "e": True}],
           "f": "str", "g": 2**64 - 1}
    out = net.decode(net.encode(obj))
    assert out == {"a": 1, "b": b"\x00\xffxyz", "c": [1, [2, 3], {"d": None, "e": True}],
                   "f": "str", "g": 2**64 - 1}
    assert net.decode(net.encode(None)) is None
    with pytest.raises(TypeError):
        net.encode({1: 2})
    with pytest.raises(TypeError):
        net.encode({"x": object()})
    with pytest.raises(TypeError):
        net.encode({"__b__": "00"})  # the bytes tag is reserved


def test_typed_wire_helpers():
    root = fmt.BtreeRoot(fmt.BlockRef(12, 34), 2)
    assert net.root_from_wire(net.decode(net.encode(net.root_to_wire(root)))) == root
    lt = fmt.LogTrees(rid=5, nr=2, item_root=root, meta_avail=[(10, 3)], data_avail=[(100, 50)],
                      get_trans_seq=9, commit_trans_seq=8, max_item_seq=9, flags=1)
    assert net.log_trees_from_wire(net.decode(net.encode(net.log_trees_to_wire(lt)))) == lt
    assert net.key_from_wire([16, 1, 4, 0, 0, 0]) == (16, 1, 4, 0, 0, 0)
    with pytest.raises(FsError):
        net.key_from_wire([1, 2])


def test_frame_reader_split_and_joined():
    frames = [net.pack_frame(i + 1, i, 100 + i, Cmd.STATFS, 0, 0, net.encode({"i": i}))
              for i in range(5)]
    stream = b"".join(frames)
    r = net.FrameReader()
    got = []
    for i in range(0, len(stream), 7):  # dribble in odd pieces
        got += r.feed(stream[i:i + 7])
    assert [(h[0], h[1], h[2], h[4]) for h, _p in got] == \
        [(i + 1, i, 100 + i, Cmd.STATFS) for i in range(5)]
    assert [net.decode(p) for _h, p in got] == [{"i": i} for i in range(5)]
    assert net.HEADER_SIZE == 32
    bad = net.HEADER.pack(1, 0, 1, net.MAX_PAYLOAD + 1, 1, 0, 0)
    with pytest.raises(FsError):
        net.FrameReader().feed(bad)


async def _pair(nursery):
    a, b = trio.testing.memory_stream_pair()
    ca, cb = Connection(a, "a"), Connection(b, "b")
    await nursery.start(ca.run)
    await nursery.start(cb.run)
    return ca, cb


def test_concurrent_requests_matched_by_id():
    async def main():
        async with trio.open_nursery() as nursery:
            ca, cb = await _pair(nursery)

            async def echo(p):
                # later requests answer first: responses must still find their requests
                await trio.sleep(0.01 * (10 - p["i"]))
                return {"i": p["i"], "data": p["data"]}

            cb.register(Cmd.STATFS, echo)
            results = {}

            async def one(i):
                results[i] = await ca.request(Cmd.STATFS, {"i": i, "data": bytes([i]) * i})

            async with trio.open_nursery() as n2:
                for i in range(10):
                    n2.start_soon(one, i)
            assert results == {i: {"i": i, "data": bytes([i]) * i} for i in range(10)}
            assert ca.nr_sent == 10 and cb.nr_sent == 10
            nursery.cancel_scope.cancel()

    trio.run(main)


def test_both_directions_and_nested_requests():
    async def main():
        async with trio.open_nursery() as nursery:
            ca, cb = await _pair(nursery)

            async def b_handler(p):
                # a handler may request the other way on the same connection
                inner = await cb.request(Cmd.LOCK, {"x": p["x"] + 1})
                return {"x": inner["x"] * 10}

            async def a_handler(p):
                return {"x": p["x"] + 1}

            cb.register(Cmd.GET_ROOTS, b_handler)
            ca.register(Cmd.LOCK, a_handler)
            assert await ca.request(Cmd.GET_ROOTS, {"x": 1}) == {"x": 30}
            nursery.cancel_scope.cancel()

    trio.run(main)


def test_error_replies_and_unknown_commands():
    async def main():
        async with trio.open_nursery() as nursery:
            ca, cb = await _pair(nursery)

            async def fail(p):
                raise FsError(errno.ENOSPC, "full up")

            async def malformed(p):
                return p["missing"]

            cb.register(Cmd.ALLOC_INODES, fail)
            cb.register(Cmd.STATFS, malformed)
            with pytest.raises(FsError) as ei:
                await ca.request(Cmd.ALLOC_INODES, {})
            assert ei.value.errno == errno.ENOSPC and ei.value.msg == "full up"
            with pytest.raises(FsError) as ei:
                await ca.request(Cmd.STATFS, {})
            assert ei.value.errno == errno.EINVAL
            with pytest.raises(FsError) as ei:
                await ca.request(Cmd.FAREWELL, {})
            assert ei.value.errno == errno.EINVAL
            nursery.cancel_scope.cancel()

    trio.run(main)


def test_duplicate_seqs_dropped_and_acks_trim():
    async def main():
        async with trio.open_nursery() as nursery:
            a, b = trio.testing.memory_stream_pair()
            cb = Connection(b, "b")
            calls = []

            async def h(p):
                calls.append(p["n"])
                return {}

            cb.register(Cmd.STATFS, h)
            await nursery.start(cb.run)
            f1 = net.pack_frame(1, 0, 1, Cmd.STATFS, 0, 0, net.encode({"n": 1}))
            f2 = net.pack_frame(2, 0, 2, Cmd.STATFS, 0, 0, net.encode({"n": 2}))
            # a resend after reconnect repeats frames the receiver already has
            await a.send_all(f1 + f1 + f2 + f1)
            await trio.testing.wait_all_tasks_blocked()
            assert sorted(calls) == [1, 2]  # unordered handlers run concurrently
            assert cb.nr_duplicates == 2
            # b sent two responses; they stay unacked until a frame acks them
            assert len(cb._unacked) == 2
            await a.send_all(net.pack_frame(3, 2, 3, Cmd.STATFS, 0, 0, net.encode({"n": 3})))
            await trio.testing.wait_all_tasks_blocked()
            assert sorted(calls) == [1, 2, 3]
            assert [s for s, _f in cb._unacked] == [3]
            nursery.cancel_scope.cancel()

    trio.run(main)


def test_ordered_handlers_run_in_arrival_order_per_key():
    async def main():
        async with trio.open_nursery() as nursery:
            ca, cb = await _pair(nursery)
            log = []

            async def h(p):
                log.append(("start", p["k"], p["i"]))
                # the first request of each key is slow: later ones of the key must wait
                await trio.sleep(0.05 if p["i"] == 0 else 0)
                log.append(("end", p["k"], p["i"]))
                return {}

            cb.register(Cmd.LOCK, h, order=lambda p: p["k"])
            async with trio.open_nursery() as n2:
                for i in range(3):
                    for k in ("x", "y"):
                        n2.start_soon(ca.request, Cmd.LOCK, {"k": k, "i": i})
                        await trio.sleep(0)
            for k in ("x", "y"):
                mine = [(ev, i) for ev, kk, i in log if kk == k]
                assert mine == [("start", 0), ("end", 0), ("start", 1), ("end", 1),
                                ("start", 2), ("end", 2)]
            # the two keys ran concurrently: y started before x's first request ended
            assert log.index(("start", "y", 0)) < log.index(("end", "x", 0))
            assert not cb._ordered
            nursery.cancel_scope.cancel()

    trio.run(main)


def test_connection_loss_fails_pending_requests():
    async def main():
        async with trio.open_nursery() as nursery:
            ca, cb = await _pair(nursery)
            never = trio.Event()

            async def hang(p):
                await never.wait()

            cb.register(Cmd.GET_LOG_TREES, hang)
            closed = []
            ca.on_close = closed.append

            async def req():
                with pytest.raises(FsError) as ei:
                    await ca.request(Cmd.GET_LOG_TREES, {})
                assert ei.value.errno == errno.ENOTCONN

            async with trio.open_nursery() as n2:
                n2.start_soon(req)
                n2.start_soon(req)
                await trio.testing.wait_all_tasks_blocked()
                await cb.aclose()  # the peer goes away
            assert ca.closed.is_set() and closed == [ca]
            with pytest.raises(FsError) as ei:
                await ca.request(Cmd.STATFS, {})
            assert ei.value.errno == errno.ENOTCONN
            await ca.aclose()  # idempotent

    trio.run(main)


def test_clean_close_ends_run():
    async def main():
        async with trio.open_nursery() as nursery:
            ca, cb = await _pair(nursery)
            await ca.aclose()
            await cb.closed.wait()
            assert cb.error is None or isinstance(cb.error, Exception)
        # the nursery exits: both receive loops returned

    trio.run(main)


def test_tcp_listener_and_stream():
    async def main():
        listener = await net.open_listener("127.0.0.1", 0)
        port = listener.socket.getsockname()[1]
        async with trio.open_nursery() as nursery:
            async def serve():
                stream = await listener.accept()
                net.setup_accepted(stream)
                conn = Connection(stream, "srv")

                async def h(p):
                    return {"peer": list(conn.peer_addr), "v": p["v"]}

                conn.register(Cmd.STATFS, h)
                await conn.run()

            nursery.start_soon(serve)
            stream = await net.open_tcp("127.0.0.1", port)
            c = Connection(stream, "cli")
            await nursery.start(c.run)
            r = await c.request(Cmd.STATFS, {"v": b"\x01\x02"})
            assert r["v"] == b"\x01\x02" and r["peer"][0] == "127.0.0.1"
            await c.aclose()
            await listener.aclose()
        with pytest.raises(FsError) as ei:
            await net.open_tcp("127.0.0.1", port)
        assert ei.value.errno == errno.ENOTCONN

    trio.run(main)
