"""Control socket server: serving requests and stopping when its socket is removed."""

from __future__ import annotations

import json
import os
import socket
from types import SimpleNamespace

import trio

from fs.control import ControlServer, socket_identity


def test_remove_after_serving_stops_accepting_cleanly(tmp_path):
    # a starting mount's early socket is removed once the real one serves: the serve task
    # must end quietly even when remove() comes between two accepts
    mount = SimpleNamespace(fsid=0x1234, rid=0x5678)
    srv = ControlServer(mount, 0, 0, path=str(tmp_path / "ctl" / "early.sock"))

    async def ask() -> dict:
        s = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        with s:
            await s.connect(srv.path)
            await s.send(json.dumps({"op": "ping"}).encode() + b"\n")
            buf = b""
            while not buf.endswith(b"\n"):
                chunk = await s.recv(4096)
                assert chunk
                buf += chunk
        return json.loads(buf)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(srv.serve)
            for _ in range(2):
                reply = await ask()
                assert (reply["fsid"], reply["rid"]) == (0x1234, 0x5678)
            # the window that matters: remove() runs while accept() is returning a
            # connection (trio's accept checkpoints after its syscall)
            real = srv.sock

            class RemovedWhileAccepting:
                async def accept(self):
                    got = await real.accept()
                    srv.remove()
                    return got

                def close(self):
                    real.close()

            srv.sock = RemovedWhileAccepting()
            await ask()  # taken by the accept() already waiting on the real socket
            reply = await ask()  # the next accept removes: still answered
            assert reply["rid"] == 0x5678
            with trio.fail_after(5):
                while nursery.child_tasks:
                    await trio.sleep(0.01)
        assert not (tmp_path / "ctl" / "early.sock").exists()

    trio.run(main)


def test_remove_leaves_a_newer_mounts_socket_at_the_same_path(tmp_path):
    # sockets are named after the FUSE device number, which a later mount may get while
    # an earlier daemon still finishes its unmount: the earlier one must not unlink it
    path = str(tmp_path / "ctl" / "0:99.sock")
    mount = SimpleNamespace(fsid=1, rid=2)

    async def main() -> None:
        old = ControlServer(mount, 0, 99, path=path)
        old.bind()
        new = ControlServer(mount, 0, 99, path=path)
        new.bind()
        old.remove()
        assert os.path.exists(path)
        new.remove()
        assert not os.path.exists(path)

    trio.run(main)


def test_socket_identity_differs_for_a_new_socket_at_the_same_path(tmp_path):
    # ext4 (which holds the run dir here) gives a file created right after another's removal
    # the same inode number; the identity must still tell the two apart
    path = str(tmp_path / "0:98.sock")
    ids = []
    for _ in range(2):
        s = socket.socket(socket.AF_UNIX)
        s.bind(path)
        ids.append(socket_identity(os.stat(path)))
        os.unlink(path)
        s.close()
    assert ids[0] != ids[1]
