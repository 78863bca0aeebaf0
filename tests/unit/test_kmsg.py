"""fs/kmsg.py: the kernel log records' format, the handler's choice of records, and the
fallbacks that keep a mount going when /dev/kmsg can't be written."""

from __future__ import annotations

import errno
import logging
import os

import pytest

from fs import kmsg
from fs.kmsg import KERN_ERR, KERN_INFO, KERN_WARNING, KMSG, KMSG_ERR, KmsgHandler, KmsgWriter


@pytest.fixture(autouse=True)
def _root(monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 0)


def test_ident_is_the_sysfs_name():
    assert kmsg.ident(0x0123456789ABCDEF, 0xFEDCBA9876543210) == "f.012345.r.fedcba"
    assert kmsg.ident(0x1, 0x2) == "f.000000.r.000000"


def test_device_ident(tmp_path):
    assert kmsg.device_ident("/dev/loop3") == "(loop3)"
    link = tmp_path / "data"
    link.symlink_to("/dev/loop7")
    assert kmsg.device_ident(str(link)) == "(loop7)"


def test_format_levels():
    who = "f.012345.r.fedcba"
    assert kmsg.format_record(KERN_ERR, who, "fencing rid 1") == \
        b"<3>scoutfs f.012345.r.fedcba error: fencing rid 1\n"
    assert kmsg.format_record(KERN_WARNING, who, "forcing unmount") == \
        b"<4>scoutfs f.012345.r.fedcba warning: forcing unmount\n"
    assert kmsg.format_record(KERN_INFO, who, "server ready at 127.0.0.1:19700") == \
        b"<6>scoutfs f.012345.r.fedcba: server ready at 127.0.0.1:19700\n"
    assert kmsg.kern_level(logging.CRITICAL) == KERN_ERR
    assert kmsg.kern_level(logging.ERROR) == KERN_ERR
    assert kmsg.kern_level(logging.WARNING) == KERN_WARNING
    assert kmsg.kern_level(logging.INFO) == KERN_INFO


def test_format_one_line_and_bounded():
    rec = kmsg.format_record(KERN_ERR, "(loop0)", "a\nb\n")
    assert rec == b"<3>scoutfs (loop0) error: a b\n"
    rec = kmsg.format_record(KERN_INFO, "x", "é" * 2000)
    assert rec.count(b"\n") == 1 and len(rec) < kmsg.LINE_MAX + 40
    rec.decode()  # not cut inside a character


def test_the_filter_patterns_match_our_lines(tmp_path):
    """t_filter_dmesg's upstream patterns drop what our daemons write for the same events."""
    import re

    who = "f.012345.r.fedcba"
    expected = [
        (KERN_ERR, "fencing rid 0123456789abcdef at 127.0.0.1: client_reconnect",
         r"scoutfs .* error: fencing "),
        (KERN_INFO, "waiting for 2 clients", r"scoutfs .*: waiting for .* clients"),
        (KERN_INFO, "all clients recovered", r"scoutfs .*: all clients recovered"),
        (KERN_ERR, "client rid 0123456789abcdef lock recovery timed out after 30 s",
         r"scoutfs .* error: client rid.*lock recovery timed out"),
        (KERN_ERR, "reclaiming orphan log trees for rid 0123456789abcdef nr 2",
         r"scoutfs .* reclaiming orphan log trees"),
        (KERN_WARNING, "forcing unmount, can return errors and lose unwritten data",
         r"scoutfs .* forcing unmount"),
        (KERN_INFO, "server starting at 127.0.0.1:19700", r"scoutfs.*server starting"),
        (KERN_INFO, "client connected 127.0.0.1:4 -> 127.0.0.1:19700",
         r"scoutfs.*client connected"),
    ]
    for level, msg, pattern in expected:
        line = kmsg.format_record(level, who, msg).decode()[3:].rstrip("\n")
        assert re.search(pattern, line), (line, pattern)


def writer(path, notes, **kw) -> KmsgWriter:
    return KmsgWriter("f.012345.r.fedcba", str(path), note=notes.append, **kw)


def test_writes_one_record_per_message(tmp_path):
    out = tmp_path / "kmsg"
    out.write_bytes(b"")
    notes: list[str] = []
    w = writer(out, notes)
    assert w.write(KERN_INFO, "server ready at 1.2.3.4:5")
    w.set_ident(0xAAAAAA0000000000, 0xBBBBBB0000000000)
    assert w.write(KERN_ERR, "boom")
    assert out.read_bytes() == (b"<6>scoutfs f.012345.r.fedcba: server ready at 1.2.3.4:5\n"
                                b"<3>scoutfs f.aaaaaa.r.bbbbbb error: boom\n")
    assert notes == []


def test_missing_device_is_noted_once_and_stops(tmp_path):
    notes: list[str] = []
    w = writer(tmp_path / "no-such-kmsg", notes)
    assert not w.write(KERN_ERR, "one")
    assert not w.write(KERN_ERR, "two")
    assert w.disabled
    assert len(notes) == 1 and "messages go to this log only" in notes[0]


def test_not_root_never_writes(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    out = tmp_path / "kmsg"
    out.write_bytes(b"")
    notes: list[str] = []
    w = writer(out, notes)
    assert not w.write(KERN_ERR, "x")
    assert out.read_bytes() == b"" and len(notes) == 1 and "not root" in notes[0]


def test_eagain_drops_the_message_but_keeps_writing(tmp_path, monkeypatch):
    out = tmp_path / "kmsg"
    out.write_bytes(b"")
    notes: list[str] = []
    w = writer(out, notes)
    real_write = os.write
    fail = [True]

    def write(fd, data):
        if fail[0]:
            raise BlockingIOError(errno.EAGAIN, "Resource temporarily unavailable")
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", write)
    assert not w.write(KERN_ERR, "lost")
    assert not w.write(KERN_ERR, "lost too")
    fail[0] = False
    assert w.write(KERN_ERR, "kept")
    assert out.read_bytes() == b"<3>scoutfs f.012345.r.fedcba error: kept\n"
    assert len(notes) == 1 and "dropping" in notes[0]
    assert not w.disabled


def test_burst_limit_counts_what_it_drops(tmp_path):
    out = tmp_path / "kmsg"
    out.write_bytes(b"")
    now = [100.0]
    w = writer(out, [], clock=lambda: now[0])
    sent = sum(w.write(KERN_ERR, f"io error {i}") for i in range(kmsg.BURST + 7))
    assert sent == kmsg.BURST
    now[0] += kmsg.BURST_INTERVAL_S
    assert w.write(KERN_ERR, "later")
    lines = out.read_bytes().decode().splitlines()
    assert lines[-2] == "<4>scoutfs f.012345.r.fedcba warning: 7 kernel log messages suppressed"
    assert lines[-1] == "<3>scoutfs f.012345.r.fedcba error: later"


def test_handler_passes_only_marked_records(tmp_path):
    out = tmp_path / "kmsg"
    out.write_bytes(b"")
    h = KmsgHandler(writer(out, []))
    lg = logging.getLogger("test_kmsg.handler")
    lg.propagate = False
    lg.setLevel(logging.DEBUG)
    lg.addHandler(h)
    try:
        lg.info("routine %d", 1)
        lg.info("server ready at %s", "1.2.3.4:5", extra=KMSG)
        lg.warning("fencing rid %016x", 7, extra=KMSG_ERR)
        lg.error("not for the kernel log")
    finally:
        lg.removeHandler(h)
    assert out.read_bytes().decode().splitlines() == [
        "<6>scoutfs f.012345.r.fedcba: server ready at 1.2.3.4:5",
        "<3>scoutfs f.012345.r.fedcba error: fencing rid 0000000000000007",
    ]


def test_handler_never_raises(tmp_path):
    class Boom(KmsgWriter):
        def write(self, level, message):
            raise RuntimeError("no")

    h = KmsgHandler(Boom("x", str(tmp_path / "k")))
    rec = logging.LogRecord("x", logging.ERROR, __file__, 1, "m", None, None)
    rec.kmsg = True
    h.emit(rec)  # nothing escapes


# --------------------------------------------------------------------------- what the cluster says


@pytest.fixture
def kernel_log(tmp_path):
    """The records the cluster code marks for the kernel log, as the daemon writes them."""
    out = tmp_path / "kmsg"
    out.write_bytes(b"")
    h = KmsgHandler(KmsgWriter("f.012345.r.fedcba", str(out)))
    root = logging.getLogger()
    old = root.level
    root.setLevel(logging.INFO)
    root.addHandler(h)
    yield lambda: out.read_bytes().decode().splitlines()
    root.removeHandler(h)
    root.setLevel(old)


def test_server_and_client_lifecycle_lines(kernel_log):
    import re

    import trio

    from fs import server as srv
    from fs.client import Client
    from tests.unit.test_server import volume

    meta, data, sb = volume()

    async def main():
        async with trio.open_nursery() as nursery:
            server = srv.Server(meta, data)
            await nursery.start(server.serve_tcp, "127.0.0.1", 0)
            addr, port = server.listen_addr
            c = await Client.connect_tcp(addr, port, fsid=sb.fsid, fmt_vers=sb.fmt_vers,
                                         nursery=nursery, quorum=True)
            await c.farewell()
            await c.close()
            await server.shutdown()

    trio.run(main)
    a = r"127\.0\.0\.1:\d+"
    want = [
        r"<6>scoutfs f\.012345\.r\.fedcba: server starting at 127\.0\.0\.1:0",
        r"<6>scoutfs f\.012345\.r\.fedcba: server ready at 127\.0\.0\.1:0",
        rf"<6>scoutfs f\.012345\.r\.fedcba: server accepted {a} -> {a}",
        rf"<6>scoutfs f\.012345\.r\.fedcba: client connected {a} -> {a}",
        r"<6>scoutfs f\.012345\.r\.fedcba: reclaimed resources of rid [0-9a-f]{16} \(farewell\)",
        rf"<6>scoutfs f\.012345\.r\.fedcba: client disconnected {a} -> {a}",
        r"<6>scoutfs f\.012345\.r\.fedcba: server shutting down at 127\.0\.0\.1:0",
        r"<6>scoutfs f\.012345\.r\.fedcba: server stopped at 127\.0\.0\.1:0",
    ]
    got = kernel_log()
    assert len(got) == len(want), got
    for line, pattern in zip(got, want, strict=True):
        assert re.fullmatch(pattern, line), (line, pattern)


def test_fencing_and_reclaim_lines(kernel_log):
    import trio
    import trio.testing

    from fs.testing.memnet import connect_client, start_server
    from tests.unit.test_server import volume

    meta, data, sb = volume()

    async def main():
        async with trio.open_nursery() as nursery:
            server, _net = await start_server(nursery, meta, data, reconnect_timeout=20.0)
            c = await connect_client(nursery, _net, sb)
            rid = c.rid
            await c.abandon()  # gone without a farewell
            await trio.sleep(21)
            server.answer_fence(rid, fenced=True)
            await trio.testing.wait_all_tasks_blocked()
            nursery.cancel_scope.cancel()
        return rid

    rid = trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    got = [x for x in kernel_log() if "rid" in x]
    who = "scoutfs f.012345.r.fedcba"
    assert got == [
        f"<4>{who} warning: client rid {rid:016x} did not reconnect within 20 s",
        f"<3>{who} error: fencing rid {rid:016x} at 0.0.0.0: client_reconnect",
        f"<6>{who}: reclaimed resources of rid {rid:016x} (fenced: client_reconnect)",
    ]
