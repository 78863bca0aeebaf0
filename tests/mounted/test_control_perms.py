"""What an unprivileged user can do to a real mount daemon through its control socket (0666)
and the sysfs view: not stop the mount, not read what the files would not show them.

Each test acts as uid 12345 in a child process that drops root after its imports (as
test_mount_cli's `_as_user`: the interpreter lives under /root, which the user cannot read).
"""

from __future__ import annotations

import errno
import os
import stat
import subprocess
from pathlib import Path

import pytest

from conftest import PY, Env, _fuse_usable, daemon_pid, is_mounted

pytestmark = pytest.mark.skipif(not _fuse_usable(), reason="/dev/fuse unusable (or not root)")

USER = 12345

# imported before dropping root; then `ask(path, request, fds=[])` is one control request
PRE = """
import errno, json, os, socket, array, sys, time
def ask(path, req, fds=()):
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(30)
    s.connect(path)
    anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds).tobytes())] if fds else []
    s.sendmsg([json.dumps(req).encode() + b"\\n"], anc)
    buf = b""
    while not buf.endswith(b"\\n"):
        chunk = s.recv(65536)
        if not chunk:
            return None
        buf += chunk
    s.close()
    return json.loads(buf)
"""


def _drop(uid: int = USER) -> str:
    return (f"os.setgroups([])\nos.setresgid({uid},{uid},{uid})\n"
            f"os.setresuid({uid},{uid},{uid})\n")


def _as_user(code: str, pre: str = "", **kw) -> subprocess.CompletedProcess:
    return subprocess.run([PY, "-c", PRE + pre + _drop() + code], capture_output=True,
                          text=True, timeout=kw.pop("timeout", 120), **kw)


def _sock(env: Env, mnt: Path) -> str:
    from fs.control import socket_path

    st = os.stat(mnt)
    return socket_path(os.major(st.st_dev), os.minor(st.st_dev), str(env.run))


def _ask(path: str, req: dict) -> dict | None:
    ns: dict = {}
    exec(PRE, ns)
    return ns["ask"](path, req)


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.fixture
def low_fd_mount(env):
    """A mount whose daemon was started with a 256 fd limit (as in the finding)."""
    meta, data = env.mkfs("vol")
    mnt = env.root / "mnt"
    mnt.mkdir()
    env.mounts.append(mnt)
    opts = f"metadev_path={meta},quorum_slot_nr=0"
    p = subprocess.run(["prlimit", "--nofile=256:256", "--", PY, "-m", "fs.cli.main", "mount",
                        "-o", opts, str(data), str(mnt)], env=env.env, capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    pid = daemon_pid(env, mnt)
    limits = Path(f"/proc/{pid}/limits").read_text()
    assert any(ln.startswith("Max open files") and ln.split()[3:5] == ["256", "256"]
               for ln in limits.splitlines()), limits
    return env, mnt, pid


# --------------------------------------------------------------------------- stopping a mount


def test_a_users_400_connections_do_not_drop_a_256_fd_mount(low_fd_mount):
    env, mnt, pid = low_fd_mount
    path = _sock(env, mnt)
    user = subprocess.Popen([PY, "-c", PRE + _drop() + f"""
held, refused = [], 0
for i in range(400):
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(30)
    deadline = time.monotonic() + 30
    try:
        while True:
            try:
                s.connect({path!r})
                break
            except BlockingIOError:  # the listen backlog is full: wait for accept
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.005)
    except OSError as e:
        print("connect", i, e, flush=True)
        break
    held.append(s)
time.sleep(1)
for s in held:
    s.setblocking(False)
    try:
        got = s.recv(4096)  # a refused connection reads EAGAIN, then its end
        refused += got == b"" or json.loads(got)["errno"] == errno.EAGAIN
    except BlockingIOError:
        pass
    except ConnectionResetError:
        refused += 1
print("held", len(held), "refused", refused, flush=True)
sys.stdin.readline()
"""], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = user.stdout.readline()
        assert line.startswith("held 400"), (line, f"mounted: {is_mounted(mnt)}",
                                             f"daemon alive: {os.path.exists(f'/proc/{pid}')}")
        refused = int(line.split()[3])
        assert refused >= 400 - 16, line  # the user's share of connections, no more
        # the mount and its control socket serve on while the user holds their connections
        assert is_mounted(mnt) and os.path.exists(f"/proc/{pid}")
        assert env.ping(mnt)["pid"] == pid
        (mnt / "f").write_bytes(b"still here")
        assert (mnt / "f").read_bytes() == b"still here"
        assert env.scoutfs("statfs", "-s", "rid", "-p", mnt).returncode == 0
    finally:
        user.communicate("\n", timeout=30)
    assert env.ping(mnt)["pid"] == pid
    log = next((env.run / "log").glob("*.log")).read_text()
    assert log.count("refus") < 20, log[-3000:]  # rate limited


def test_a_huge_request_without_newline_is_cut_off(mounted):
    env, mnt, _m, _d = mounted
    pid = daemon_pid(env, mnt)
    path = _sock(env, mnt)
    before = _rss_kb(pid)
    p = _as_user(f"""
s = socket.socket(socket.AF_UNIX)
s.settimeout(30)
s.connect({path!r})
chunk, sent = b"x" * (1 << 20), 0
try:
    while sent < 64 << 20:
        sent += s.send(chunk)
except (BrokenPipeError, ConnectionResetError):
    pass
print(sent)
""")
    assert p.returncode == 0, p.stderr
    sent = int(p.stdout)
    grown = _rss_kb(pid) - before
    assert grown < 16 << 10, f"the daemon grew by {grown} KiB"
    assert sent < 64 << 20, "the daemon took 64 MiB without a newline"
    assert env.ping(mnt)["pid"] == pid


# --------------------------------------------------------------------------- reading what one could not


def _secrets(mnt: Path) -> tuple[Path, Path]:
    (mnt / "secret").write_bytes(b"s" * 9000)
    os.chmod(mnt / "secret", 0o600)
    (mnt / "private").mkdir()
    os.chmod(mnt / "private", 0o700)
    (mnt / "private" / "inside").write_bytes(b"i" * 5000)
    os.chmod(mnt / "private" / "inside", 0o644)
    return mnt / "secret", mnt / "private" / "inside"


def test_stat_more_by_inode_number_is_refused_to_users(mounted):
    env, mnt, _m, _d = mounted
    secret, inside = _secrets(mnt)
    path = _sock(env, mnt)
    assert stat.S_IMODE(os.stat(mnt).st_mode) & 0o005 == 0o005  # the user reaches the mount
    inos = [secret.stat().st_ino, inside.stat().st_ino]
    p = _as_user(f"""
for ino in {inos!r}:
    r = ask({path!r}, {{"op": "stat_more", "ino": ino}})
    print(errno.errorcode.get(r["errno"], r["errno"]) if r["errno"] else "LEAK " + json.dumps(r))
# an O_PATH fd needs no read permission on the file: it is no way in either
fd = os.open({str(secret)!r}, os.O_PATH)
r = ask({path!r}, {{"op": "stat_more"}}, [fd])
print(errno.errorcode.get(r["errno"], r["errno"]) if r["errno"] else "LEAK " + json.dumps(r))
for what in ({str(secret)!r}, {str(inside)!r}):
    try:
        os.open(what, os.O_RDONLY)
        print("opened")
    except OSError as e:
        print(errno.errorcode[e.errno])
""")
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == ["EPERM", "EPERM", "EBADF", "EACCES", "EACCES"], p.stdout
    # `scoutfs stat` (which passes the fd it opened) refuses the user the same files ...
    cli = _as_user(f"""
from fs.cli.main import main
sys.exit(main(["stat", {str(secret)!r}]))
""", pre="import fs.cli.main\nfrom fs.cli.main import load_commands\nload_commands()\n"
        "import fs.control\n", env=env.env)
    assert cli.returncode != 0 and "Permission denied" in cli.stderr, (cli.stdout, cli.stderr)
    # ... and serves root
    out = env.scoutfs("stat", "-s", "data_version", secret, check=True).stdout
    assert out.strip() == "1"


def test_inode_numbers_out_of_range_are_einval_and_take_no_lock(mounted):
    env, mnt, _m, _d = mounted
    path = _sock(env, mnt)
    before = _ask(path, {"op": "sysfs_read", "tree": "debug", "path": "client_locks"})["text"]
    for ino in (2**64 + 1, 2**64, 0, -5, "1"):
        r = _ask(path, {"op": "stat_more", "ino": ino})
        after = _ask(path, {"op": "sysfs_read", "tree": "debug", "path": "client_locks"})
        assert after["text"].count("\n") == before.count("\n"), (ino, before, after["text"])
        assert r["errno"] == errno.EINVAL, (ino, r)
    (mnt / "f").write_bytes(b"x")
    assert env.scoutfs("stat", "-s", "data_version", mnt / "f", check=True).stdout == "1\n"


def test_debug_files_are_root_only(mounted):
    env, mnt, _m, _d = mounted
    dbg, sysd = env.debugfs_path(mnt), env.sysfs_path(mnt)
    path = _sock(env, mnt)
    (dbg / "client_locks").read_text()  # root reads it
    p = _as_user(f"""
def try_(what, fn):
    try:
        fn()
        print(what, "ok")
    except OSError as e:
        print(what, errno.errorcode[e.errno])
try_("client_locks", lambda: open({str(dbg / 'client_locks')!r}).read())
try_("server_locks", lambda: open({str(dbg / 'server_locks')!r}).read())
try_("trigger_list", lambda: os.listdir({str(dbg / 'trigger')!r}))
try_("trigger_write", lambda: open({str(dbg / 'trigger' / 'statfs_lock_purge')!r}, "w").write("1"))
try_("rid", lambda: open({str(sysd / 'rid')!r}).read())
for req in ({{"op": "sysfs_read", "tree": "debug", "path": "client_locks"}},
            {{"op": "sysfs_read", "tree": "debug", "path": "server_locks"}},
            {{"op": "sysfs_list", "tree": "debug", "path": "trigger"}},
            {{"op": "sysfs_read", "tree": "sys", "path": "rid"}}):
    r = ask({path!r}, req)
    print(req["path"], errno.errorcode.get(r["errno"], "ok"))
""")
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines() == [
        "client_locks EACCES", "server_locks EACCES", "trigger_list EACCES",
        "trigger_write EACCES", "rid ok",
        "client_locks EACCES", "server_locks EACCES", "trigger EACCES", "rid ok"], p.stdout
    assert stat.S_IMODE((dbg / "client_locks").stat().st_mode) == 0o400
    assert stat.S_IMODE((dbg / "trigger").stat().st_mode) == 0o700
    assert stat.S_IMODE((dbg / "trigger" / "statfs_lock_purge").stat().st_mode) == 0o600
    # root still reads and writes them
    (dbg / "trigger" / "statfs_lock_purge").write_text("0\n")
    (dbg / "server_locks").read_text()


def test_daemon_logs_are_not_world_readable(mounted):
    env, mnt, _m, _d = mounted
    logdir = env.run / "log"
    logs = list(logdir.glob("*.log"))
    assert logs
    assert stat.S_IMODE(logdir.stat().st_mode) == 0o700
    for f in logs:
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
    p = _as_user(f"print(open({str(logs[0])!r}).read()[:10])")
    assert p.returncode != 0 and "PermissionError" in p.stderr
