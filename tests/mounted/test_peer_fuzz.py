"""Hostile peers against a real mount: what anybody on the network can send to a quorum
slot's TCP port (the server) and UDP port (the quorum member) must never stop the server or
the mount (the hardening rule: a bad message closes that connection, or is dropped, with one
log line naming the peer and the reason).

The first case is the reported finding: a 36-byte frame with a valid header and the payload
``{bad`` used to stop the server ("our server of term 1 stopped, resigning"), and the FUSE
mount disappeared.  Each case then checks that the mount still works through the kernel,
which needs the server (a new file needs inode numbers and a commit).
"""

from __future__ import annotations

import os
import random
import socket
import struct
import time
from pathlib import Path

import pytest

from conftest import _fuse_usable, daemon_pid, is_mounted
from fs import format as fmt
from fs import net, quorum
from fs.block import Device, read_super

pytestmark = pytest.mark.skipif(not _fuse_usable(), reason="/dev/fuse unusable (or not root)")


def _volume(meta: Path) -> fmt.Super:
    dev = Device(str(meta), readonly=True)
    try:
        return read_super(dev)
    finally:
        dev.close()


def _send_tcp(port: int, data: bytes, *, linger: float = 1.0) -> tuple[bytes, bool]:
    """Connect, send, read what comes back: (the bytes, whether the server closed the
    connection within `linger` seconds)."""
    got = b""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        try:
            s.sendall(data)
        except OSError:
            return got, True  # the server already closed on us
        s.settimeout(linger)
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    return got, True
                got += chunk
        except TimeoutError:
            return got, False
        except OSError:
            return got, True


def _frame(cmd: int, payload: bytes, *, seq: int = 1, mid: int = 1, flags: int = 0,
           error: int = 0, dlen: int | None = None) -> bytes:
    n = len(payload) if dlen is None else dlen
    return net.HEADER.pack(seq, 0, mid, n, cmd, flags, error) + payload


class RawPeer:
    """A hand-driven peer on one TCP connection to the server."""

    def __init__(self, port: int):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.seq = 0
        self.buf = b""

    def send(self, cmd: int, payload=None) -> int:
        self.seq += 1
        self.sock.sendall(_frame(cmd, net.encode(payload), seq=self.seq, mid=self.seq))
        return self.seq

    def request(self, cmd: int, payload=None) -> tuple[int, object]:
        """(errno, payload) of the response."""
        mid = self.send(cmd, payload)
        while True:
            while len(self.buf) < net.HEADER_SIZE or \
                    len(self.buf) < net.HEADER_SIZE + net.HEADER.unpack_from(self.buf)[3]:
                chunk = self.sock.recv(65536)
                assert chunk, "the server closed the connection"
                self.buf += chunk
            hdr = net.HEADER.unpack_from(self.buf)
            data = self.buf[net.HEADER_SIZE:net.HEADER_SIZE + hdr[3]]
            self.buf = self.buf[net.HEADER_SIZE + hdr[3]:]
            if hdr[5] & net.FLAG_RESPONSE and hdr[2] == mid:
                return hdr[6], net.decode(data)

    def closed_by_server(self) -> bool:
        """Whether the server closes the connection (within the socket's timeout)."""
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return True
        except TimeoutError:
            return False
        except OSError:
            return True

    def close(self) -> None:
        self.sock.close()


def _check_mount_works(env, mnt: Path, pid: int, n: int) -> None:
    assert is_mounted(mnt), "the FUSE mount disappeared"
    assert os.path.exists(f"/proc/{pid}"), "the daemon died"
    f = mnt / f"after-{n}"
    with open(f, "wb") as fh:
        fh.write(b"x" * 5000)
        fh.flush()
        os.fsync(fh.fileno())  # a commit: the server must answer
    assert f.read_bytes() == b"x" * 5000
    assert env.ping(mnt)["pid"] == pid


def _daemon_log(env) -> str:
    return "".join(p.read_text(errors="replace") for p in (env.run / "log").glob("*.log"))


def test_hostile_tcp_and_udp_peers_do_not_stop_the_mount(mounted):
    env, mnt, meta, _data = mounted
    sb = _volume(meta)
    port = sb.quorum_slots[0].port
    pid = daemon_pid(env, mnt)
    _check_mount_works(env, mnt, pid, 0)

    # the finding: a valid header and a payload that is not JSON
    bad = _frame(net.Cmd.GREETING, b"{bad")
    assert len(bad) == 36
    _reply, closed = _send_tcp(port, bad)
    assert closed
    time.sleep(1.5)  # the mount used to disappear within a second
    _check_mount_works(env, mnt, pid, 1)
    log_text = _daemon_log(env)
    assert "stopped, resigning" not in log_text
    assert "127.0.0.1" in log_text and "not valid JSON" in log_text

    greet = {"fsid": sb.fsid, "fmt_vers": sb.fmt_vers, "rid": 0x1234, "flags": 0,
             "server_term": 0, "resume": False}
    rng = random.Random(1)
    cases = [  # (bytes, must the server close the connection)
        (rng.randbytes(200), True),  # random bytes (a header with a huge length field)
        (_frame(net.Cmd.GREETING, b"", dlen=64 << 20), True),  # a 64 MiB length field
        (_frame(net.Cmd.GREETING, b"", dlen=0xFFFFFFFF), True),
        (_frame(200, net.encode({})), True),  # an unknown command
        (_frame(net.Cmd.STATFS, b""), True),  # a request before the greeting
        (_frame(net.Cmd.COMMIT_LOG_TREES, net.encode({"rid": 1, "nr": [], "item_root": 7})),
         True),
        (_frame(net.Cmd.GREETING, net.encode({**greet, "fsid": sb.fsid ^ 1})), True),
        (_frame(net.Cmd.GREETING, net.encode({**greet, "rid": "x"})), True),
        (_frame(net.Cmd.GREETING, net.encode({**greet, "rid": 2**64})), True),
        (_frame(net.Cmd.GREETING, net.encode([1, 2, 3])), True),
        (_frame(net.Cmd.GREETING, b"[" * 100000), True),  # deep nesting, and too big
        (_frame(net.Cmd.GREETING, net.encode(greet), flags=0xFF), True),
        (_frame(net.Cmd.GREETING, net.encode(greet), flags=net.FLAG_RESPONSE), True),
        (_frame(net.Cmd.GREETING, b'{"__b__": "zz"}'), True),
        (bad[:20], False),  # a truncated header: the server waits for the rest
    ]
    for data, must_close in cases:
        _reply, closed = _send_tcp(port, data)
        assert closed == must_close, data[:64]
    # a well-formed (fake) peer greets, then sends a request with wrong field types: only
    # its connection is closed; then it comes back and leaves cleanly (a rid that greeted
    # is mounted until it says farewell or is fenced)
    peer = RawPeer(port)
    err, reply = peer.request(net.Cmd.GREETING, greet)
    assert err == 0 and reply["rid"] == 0x1234 and not reply["gone"], (err, reply)
    peer.send(net.Cmd.LOCK, {"key": "k", "old_mode": 0, "new_mode": 9})
    assert peer.closed_by_server()
    peer = RawPeer(port)
    assert peer.request(net.Cmd.GREETING, greet)[0] == 0
    assert peer.request(net.Cmd.FAREWELL, {"rid": 0x1234}) == (0, {})
    peer.close()
    _check_mount_works(env, mnt, pid, 2)

    # quorum UDP: random datagrams, and well-formed ones (valid crc) with bad fields
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
        for _ in range(200):
            u.sendto(rng.randbytes(rng.choice((0, 1, 23, 24, 25, 100, 1400))),
                     ("127.0.0.1", port))
        for fsid, term, type_, src in ((sb.fsid ^ 1, 5, 2, 1), (sb.fsid, 2**64 - 1, 2, 1),
                                       (sb.fsid, 2**64 - 1, 0, 0), (sb.fsid, 3, 9, 1),
                                       (sb.fsid, 3, 2, 200)):
            body = struct.pack("<QQBBxx", fsid, term, type_, src)
            u.sendto(body + struct.pack("<I", fmt.crc32c(body)), ("127.0.0.1", port))
        u.sendto(quorum.pack_msg(sb.fsid, 2**64 - 1, quorum.MSG_HEARTBEAT, 0),
                 ("127.0.0.1", port))
    time.sleep(1.5)
    _check_mount_works(env, mnt, pid, 3)
    log_text = _daemon_log(env)
    assert "stopped, resigning" not in log_text
    # what peers send is logged as warnings: the harness flags ERROR lines and tracebacks
    assert "Traceback" not in log_text and " ERROR " not in log_text
    # the server still answers a well-formed peer
    peer = RawPeer(port)
    err, reply = peer.request(net.Cmd.GREETING, {**greet, "rid": 0x5678})
    assert err == 0 and reply["rid"] == 0x5678
    assert peer.request(net.Cmd.STATFS)[1]["total_meta_blocks"] == sb.total_meta_blocks
    assert peer.request(net.Cmd.FAREWELL, {"rid": 0x5678}) == (0, {})
    peer.close()
