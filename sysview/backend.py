"""Finding live mounts and asking their daemons: the view's side of the control socket.

A mount daemon listens on ``<run dir>/ctl/<maj>:<min>.sock``.  `Backend.mounts()` lists the
sockets, skips dead ones (connect refused: the daemon died and left its socket file) and
learns each live mount's ident (``f.<fsid6>.r.<rid6>``) with one ``ping``, remembered per
socket file (a new daemon on the same maj:min binds a new socket file, whose identity
(`fs.control.socket_identity`) differs, so it is pinged again).  `Backend.call()` sends one
request on a new connection.

Concurrency (trio): every call is bounded by a timeout, so a hung daemon costs a caller at
most that long and then answers EIO; a daemon that does not answer a ping within the probe
timeout is left out of the listing until it answers one.  The ident cache is only changed
between awaits.  Nothing here touches a FUSE mount (neither ours nor a mount daemon's): only
the run dir, which must not lie inside the view (main.py refuses that).
"""

from __future__ import annotations

import errno
import json
import logging
import os
import socket
from dataclasses import dataclass

import trio

from fs.control import SocketIdentity, socket_identity
from fs.errors import FsError
from fs.sysfs import ident as make_ident

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 15.0  # a request to a daemon; then EIO
PROBE_TIMEOUT_S = 2.0  # a ping or liveness check while listing mounts


@dataclass
class _Known:
    key: SocketIdentity  # of the socket file
    ident: str


class Backend:
    def __init__(self, run_dir: str, timeout: float = DEFAULT_TIMEOUT_S,
                 probe_timeout: float = PROBE_TIMEOUT_S) -> None:
        self.ctl_dir = os.path.join(run_dir, "ctl")
        self.timeout = timeout
        self.probe_timeout = min(probe_timeout, timeout)
        self._known: dict[str, _Known] = {}  # socket path -> identity

    # ------------------------------------------------------------------ requests

    async def call(self, path: str, request: dict, timeout: float | None = None) -> dict:
        """Send one request to the daemon at socket `path` and return its reply.

        FsError(ENOENT) if no daemon listens there (the mount is gone), FsError(EIO) if it
        does not answer within the timeout or the connection breaks, FsError(errno) for an
        error reply."""
        limit = self.timeout if timeout is None else timeout
        reply: dict | None = None
        with trio.move_on_after(limit):
            reply = await self._exchange(path, request)
        if reply is None:
            log.warning("%s: no answer to %s within %.1fs", path, request.get("op"), limit)
            raise FsError(errno.EIO, "mount daemon did not answer")
        err = reply.get("errno")
        if err:
            raise FsError(int(err))
        return reply

    async def _exchange(self, path: str, request: dict) -> dict:
        sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        with sock:
            try:
                await sock.connect(path)
            except (FileNotFoundError, ConnectionRefusedError, NotADirectoryError):
                raise FsError(errno.ENOENT, "mount is gone") from None
            except OSError as e:
                raise FsError(errno.EIO, f"connect {path}: {e}") from None
            data = json.dumps(request).encode() + b"\n"
            buf = b""
            try:
                while data:
                    data = data[await sock.send(data):]
                while b"\n" not in buf:
                    chunk = await sock.recv(1 << 16)
                    if not chunk:
                        raise FsError(errno.EIO, "mount daemon closed the connection")
                    buf += chunk
            except OSError as e:
                raise FsError(errno.EIO, f"{path}: {e}") from None
        try:
            reply = json.loads(buf.split(b"\n", 1)[0])
        except ValueError:
            raise FsError(errno.EIO, "bad reply") from None
        if not isinstance(reply, dict):
            raise FsError(errno.EIO, "bad reply")
        return reply

    async def _alive(self, path: str) -> bool:
        """Whether a daemon listens at `path`.  A hung daemon whose connect does not
        complete counts as alive (its socket is not refused): it is still mounted."""
        sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        with sock:
            with trio.move_on_after(self.probe_timeout):
                try:
                    await sock.connect(path)
                except OSError:
                    return False
        return True

    # ------------------------------------------------------------------ discovery

    def _sockets(self) -> dict[str, SocketIdentity]:
        out: dict[str, SocketIdentity] = {}
        try:
            names = os.listdir(self.ctl_dir)
        except OSError:
            return out
        for name in names:
            if not name.endswith(".sock"):
                continue
            path = os.path.join(self.ctl_dir, name)
            try:
                st = os.stat(path)
            except OSError:
                continue
            out[path] = socket_identity(st)
        return out

    async def _probe(self, path: str, key: SocketIdentity, found: dict[str, str]) -> None:
        known = self._known.get(path)
        if known is not None and known.key == key:
            if await self._alive(path):
                found[known.ident] = path
            elif self._known.get(path) is known:
                del self._known[path]
            return
        try:
            reply = await self.call(path, {"op": "ping"}, timeout=self.probe_timeout)
            ident = make_ident(int(reply["fsid"]), int(reply["rid"]))
        except (FsError, KeyError, TypeError, ValueError):
            return
        self._known[path] = _Known(key, ident)
        found[ident] = path

    async def mounts(self) -> dict[str, str]:
        """ident -> socket path of every live mount."""
        socks = self._sockets()
        for path in list(self._known):
            if path not in socks:
                del self._known[path]
        found: dict[str, str] = {}
        async with trio.open_nursery() as nursery:
            for path, key in socks.items():
                nursery.start_soon(self._probe, path, key, found)
        return found

    async def find(self, ident: str) -> str | None:
        """The socket of the live mount with this ident, or None."""
        for path, known in list(self._known.items()):
            if known.ident != ident:
                continue
            try:
                st = os.stat(path)
            except OSError:
                continue
            if socket_identity(st) == known.key and await self._alive(path):
                return path
        return (await self.mounts()).get(ident)
