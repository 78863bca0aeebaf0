"""``scoutfs-fenced``: the fencing agent, as upstream's utils/fenced/scoutfs-fenced.

The leader's server publishes a dir ``fs/scoutfs/<ident>/fence/<rid>/`` in the sysfs view for
every mount it needs fenced (files ``rid``, ``ipv4_addr``, ``reason``, ``elapsed_secs``,
``fenced``, ``error``).  Every ``SCOUTFS_FENCED_DELAY`` seconds this agent looks for requests
with neither ``fenced`` nor ``error`` set, logs::

    server <ident> fencing rid <rid> at IP <ip> for <reason>

runs ``$SCOUTFS_FENCED_RUN $SCOUTFS_FENCED_RUN_ARGS`` with ``SCOUTFS_FENCED_REQ_RID`` and
``SCOUTFS_FENCED_REQ_IP`` exported, and writes 1 to ``fenced`` when it exits 0, else 1 to
``error`` (spec cli-and-harness.md §2.6 "Fence protocol", semantics.md §2.3).

The config file (``$SCOUTFS_FENCED_CONFIG_FILE``, default /etc/scoutfs/scoutfs-fenced.conf) is
sourced by bash, as upstream does, after ``SCOUTFS_FENCED_DELAY=2``; SCOUTFS_FENCED_RUN must
name an executable.  The sysfs root is ``$SCOUTFS_SYSFS_ROOT`` (default /run/scoutfs/sys).

Signals: SIGTERM and SIGINT end the agent (exit 0) once the fence action it may be running
has finished and its answer is written; SIGHUP re-reads the config.  Killing the fenced mount
is the configured action's job, never the agent's.

Concurrency: one thread.  Signal handlers only set flags and wake the delay wait (a self
pipe); the loop acts on them between requests.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

DEFAULT_CONFIG = "/etc/scoutfs/scoutfs-fenced.conf"
DEFAULT_DELAY = "2"

Log = Callable[[str], None]


def log_message(msg: str) -> None:
    """``[YYYY-mm-dd HH:MM:SS.nnnnnnnnn] msg`` on stdout (upstream's message_output)."""
    ns = time.time_ns()
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ns // 1_000_000_000))
    sys.stdout.write(f"[{stamp}.{ns % 1_000_000_000:09d}] {msg}\n")
    sys.stdout.flush()


class ConfigError(Exception):
    pass


@dataclass
class Config:
    delay: float
    run: str
    run_args: list[str] = field(default_factory=list)


def config_path() -> str:
    return os.environ.get("SCOUTFS_FENCED_CONFIG_FILE", DEFAULT_CONFIG)


def sysfs_root() -> str:
    return os.environ.get("SCOUTFS_SYSFS_ROOT") or "/run/scoutfs/sys"


_SOURCE = ('SCOUTFS_FENCED_DELAY=' + DEFAULT_DELAY + '; . "$1" || exit 1; '
           'printf "%s\\0" "$SCOUTFS_FENCED_DELAY" "$SCOUTFS_FENCED_RUN" '
           '"$SCOUTFS_FENCED_RUN_ARGS"')


def load_config(path: str) -> Config:
    """Source the config file with bash and check it; ConfigError(message) if it is bad."""
    if not path:
        raise ConfigError("SCOUTFS_FENCED_CONFIG_FILE isn't set")
    if not os.path.isfile(path) or not os.access(path, os.R_OK):
        raise ConfigError(f"SCOUTFS_FENCED_CONFIG_FILE '{path}' isn't readable file")
    p = subprocess.run(["bash", "-c", _SOURCE, "scoutfs-fenced", path], capture_output=True,
                       stdin=subprocess.DEVNULL, timeout=60)
    if p.returncode != 0:
        raise ConfigError(f"error sourcing {path} as bash script: "
                          + p.stderr.decode(errors="replace").strip())
    vals = p.stdout.decode(errors="replace").split("\0")
    if len(vals) < 3:
        raise ConfigError(f"error sourcing {path} as bash script")
    delay_text, run, run_args = vals[0], vals[1], vals[2]
    if not delay_text:
        raise ConfigError("SCOUTFS_FENCED_DELAY isn't set")
    if not run:
        raise ConfigError("SCOUTFS_FENCED_RUN isn't set")
    try:
        delay = float(delay_text)
    except ValueError:
        raise ConfigError(f"SCOUTFS_FENCED_DELAY '{delay_text}' isn't a number") from None
    if delay <= 0:
        raise ConfigError(f"SCOUTFS_FENCED_DELAY '{delay_text}' must be positive")
    if not os.path.isfile(run) or not os.access(run, os.X_OK):
        raise ConfigError(f"SCOUTFS_FENCED_RUN '{run}' isn't executable")
    # upstream expands $SCOUTFS_FENCED_RUN_ARGS unquoted: split on whitespace
    return Config(delay, run, run_args.split())


# --------------------------------------------------------------------------- requests


@dataclass
class FenceRequest:
    path: str  # .../fs/scoutfs/<ident>/fence/<rid>
    server: str  # <ident> of the server mount that asks
    rid: str
    ipv4_addr: str
    reason: str


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def pending_requests(root: str) -> list[FenceRequest]:
    """Fence requests under the sysfs root with neither fenced nor error set.  Requests
    whose files cannot be read (vanished meanwhile, daemon not answering) are skipped this
    round."""
    out: list[FenceRequest] = []
    base = os.path.join(root, "fs", "scoutfs")
    try:
        idents = sorted(os.listdir(base))
    except OSError:
        return out
    for ident in idents:
        fdir = os.path.join(base, ident, "fence")
        try:
            rids = sorted(os.listdir(fdir))
        except OSError:
            continue
        for name in rids:
            path = os.path.join(fdir, name)
            if not os.path.isdir(path):
                continue
            fenced, error = _read(os.path.join(path, "fenced")), _read(os.path.join(path, "error"))
            if fenced is None or error is None or fenced == "1" or error == "1":
                continue
            vals = [_read(os.path.join(path, f)) for f in ("rid", "ipv4_addr", "reason")]
            if any(v is None for v in vals):
                continue
            out.append(FenceRequest(path, ident, *vals))  # type: ignore[arg-type]
    return out


def _answer(path: str, log: Log) -> None:
    try:
        with open(path, "w") as f:
            f.write("1\n")
    except OSError as e:
        log(f"error writing 1 to {path}: {e.strerror}")


def fence(req: FenceRequest, cfg: Config, log: Log = log_message) -> int:
    """Run the fence action for one request and write its answer; returns its exit status."""
    log(f"server {req.server} fencing rid {req.rid} at IP {req.ipv4_addr} for {req.reason}")
    env = dict(os.environ, SCOUTFS_FENCED_REQ_RID=req.rid, SCOUTFS_FENCED_REQ_IP=req.ipv4_addr)
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        rc = subprocess.call([cfg.run, *cfg.run_args], env=env, stdin=subprocess.DEVNULL)
    except OSError as e:
        log(f"server {req.server} fencing rid {req.rid} could not run {cfg.run}: {e.strerror}")
        rc = 127
    if rc != 0:
        log(f"server {req.server} fencing rid {req.rid} saw error status {rc}")
        _answer(os.path.join(req.path, "error"), log)
    else:
        _answer(os.path.join(req.path, "fenced"), log)
    return rc


def scan_once(root: str, cfg: Config, log: Log = log_message,
              stop: Callable[[], bool] = lambda: False) -> int:
    """Handle every pending request once; returns how many were handled."""
    n = 0
    for req in pending_requests(root):
        if stop():
            break
        fence(req, cfg, log)
        n += 1
    return n


# --------------------------------------------------------------------------- the daemon


class Agent:
    def __init__(self, cfg_path: str, root: str, log: Log = log_message) -> None:
        self.cfg_path = cfg_path
        self.root = root
        self.log = log
        self.stopping = False
        self.reload = False
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)

    def _on_signal(self, signum: int, _frame) -> None:
        if signum == signal.SIGHUP:
            self.reload = True
        else:
            self.stopping = True
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")

    def _sleep(self, secs: float) -> None:
        """Wait `secs` or until a signal arrives."""
        if self.stopping or self.reload:
            return
        ready, _, _ = select.select([self._wake_r], [], [], secs)
        if ready:
            with contextlib.suppress(OSError):
                os.read(self._wake_r, 4096)

    def run(self) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, self._on_signal)
        self.log(f"reading config file {self.cfg_path}")
        try:
            cfg = load_config(self.cfg_path)
        except ConfigError as e:
            self.log(f"{e}, exiting")
            return 1
        self.log(f"server starting, polling {self.root} every {cfg.delay:g}s")
        while not self.stopping:
            self._sleep(cfg.delay)
            if self.reload:
                self.reload = False
                self.log(f"caught SIGHUP, re-reading config file {self.cfg_path}")
                try:
                    cfg = load_config(self.cfg_path)
                except ConfigError as e:
                    self.log(f"{e}, keeping the previous config")
                continue
            if self.stopping:
                break
            scan_once(self.root, cfg, self.log, lambda: self.stopping)
        self.log("server stopping")
        return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("-h", "--help"):
        print("usage: scoutfs-fenced\n\nPoll the scoutfs sysfs view ($SCOUTFS_SYSFS_ROOT, "
              "default /run/scoutfs/sys) for fence requests and run\nthe fence action of "
              "$SCOUTFS_FENCED_CONFIG_FILE (default " + DEFAULT_CONFIG + ").")
        return 0
    return Agent(config_path(), sysfs_root()).run()


if __name__ == "__main__":
    sys.exit(main())
