"""The fencing agent scoutfs-fenced (fs/cli/fenced.py) against a tree of plain files laid out
as the sysfs view's fence dirs, with small fence scripts."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fs.cli import fenced

REPO = Path(__file__).resolve().parents[2]
IDENT = "f.fc4986.r.f5419b"


def make_request(root: Path, rid: int, *, ip="127.0.0.1", reason="client_reconnect",
                 fenced_val="0", error_val="0", ident=IDENT) -> Path:
    d = root / "fs" / "scoutfs" / ident / "fence" / f"{rid:016x}"
    d.mkdir(parents=True)
    for name, val in (("rid", f"{rid:016x}"), ("ipv4_addr", ip), ("reason", reason),
                      ("elapsed_secs", "1"), ("fenced", fenced_val), ("error", error_val)):
        (d / name).write_text(val + "\n")
    return d


def write_script(path: Path, body: str) -> Path:
    path.write_text("#!/bin/bash\n" + body)
    path.chmod(0o755)
    return path


def write_conf(tmp: Path, run: Path, extra: str = "") -> Path:
    conf = tmp / "scoutfs-fenced.conf"
    conf.write_text(f'SCOUTFS_FENCED_DELAY=1\nSCOUTFS_FENCED_RUN={run}\n'
                    f'SCOUTFS_FENCED_RUN_ARGS="ignored run args"\n{extra}')
    return conf


# --------------------------------------------------------------------------- config


def test_config_is_sourced_by_bash(tmp_path):
    run = write_script(tmp_path / "act", "exit 0\n")
    cfg = fenced.load_config(str(write_conf(tmp_path, run)))
    assert cfg == fenced.Config(1.0, str(run), ["ignored", "run", "args"])
    conf = tmp_path / "c2"
    conf.write_text(f"# a comment\nd=$((1 + 2))\nexport SCOUTFS_FENCED_RUN={run}\n"
                    "SCOUTFS_FENCED_DELAY=$d\n")
    assert fenced.load_config(str(conf)) == fenced.Config(3.0, str(run), [])


def test_config_delay_defaults_to_two(tmp_path):
    run = write_script(tmp_path / "act", "exit 0\n")
    conf = tmp_path / "c"
    conf.write_text(f"SCOUTFS_FENCED_RUN={run}\n")
    assert fenced.load_config(str(conf)).delay == 2.0


@pytest.mark.parametrize("text,msg", [
    ("SCOUTFS_FENCED_DELAY=1\n", "SCOUTFS_FENCED_RUN isn't set"),
    ("SCOUTFS_FENCED_RUN=/nonexistent\n", "isn't executable"),
    ("SCOUTFS_FENCED_RUN={run}\nSCOUTFS_FENCED_DELAY=soon\n", "isn't a number"),
    ("SCOUTFS_FENCED_RUN={run}\nSCOUTFS_FENCED_DELAY=0\n", "must be positive"),
    ("if then\n", "error sourcing"),
])
def test_bad_configs(tmp_path, text, msg):
    run = write_script(tmp_path / "act", "exit 0\n")
    conf = tmp_path / "c"
    conf.write_text(text.format(run=run))
    with pytest.raises(fenced.ConfigError, match=msg):
        fenced.load_config(str(conf))


def test_missing_config(tmp_path):
    with pytest.raises(fenced.ConfigError, match="isn't readable file"):
        fenced.load_config(str(tmp_path / "none"))


# --------------------------------------------------------------------------- requests


def test_pending_requests_skip_answered_and_unreadable(tmp_path):
    make_request(tmp_path, 0xA, ip="10.0.0.1", reason="quorum_block_leader")
    make_request(tmp_path, 0xB, fenced_val="1")
    make_request(tmp_path, 0xC, error_val="1")
    (make_request(tmp_path, 0xD) / "reason").unlink()  # vanished mid-read
    make_request(tmp_path, 0xE, ident="f.000001.r.000002")
    got = fenced.pending_requests(str(tmp_path))
    assert [(r.server, r.rid, r.ipv4_addr, r.reason) for r in got] == [
        ("f.000001.r.000002", f"{0xE:016x}", "127.0.0.1", "client_reconnect"),
        (IDENT, f"{0xA:016x}", "10.0.0.1", "quorum_block_leader"),
    ]
    assert fenced.pending_requests(str(tmp_path / "nothing")) == []


ACTION = """echo "rid=$SCOUTFS_FENCED_REQ_RID ip=$SCOUTFS_FENCED_REQ_IP args=$*" >> "{out}"
exit ${{ACTION_RC:-0}}
"""


@pytest.mark.parametrize("rc", [0, 3])
def test_fence_runs_the_action_and_answers(tmp_path, monkeypatch, rc):
    out = tmp_path / "action.out"
    run = write_script(tmp_path / "act", ACTION.format(out=out))
    cfg = fenced.load_config(str(write_conf(tmp_path, run)))
    d = make_request(tmp_path / "sys", 0x1234, ip="10.1.2.3")
    monkeypatch.setenv("ACTION_RC", str(rc))
    logged: list[str] = []
    assert fenced.scan_once(str(tmp_path / "sys"), cfg, logged.append) == 1
    assert out.read_text() == (f"rid={0x1234:016x} ip=10.1.2.3 "
                               "args=ignored run args\n")
    assert logged[0] == (f"server {IDENT} fencing rid {0x1234:016x} at IP 10.1.2.3 for "
                         "client_reconnect")
    if rc == 0:
        assert (d / "fenced").read_text() == "1\n" and (d / "error").read_text() == "0\n"
        assert len(logged) == 1
    else:
        assert (d / "error").read_text() == "1\n" and (d / "fenced").read_text() == "0\n"
        assert logged[1] == f"server {IDENT} fencing rid {0x1234:016x} saw error status 3"
    # answered: the next scan leaves it alone
    assert fenced.scan_once(str(tmp_path / "sys"), cfg, logged.append) == 0


def test_log_message_format(capsys):
    fenced.log_message("hello")
    out = capsys.readouterr().out
    assert re.fullmatch(r"\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{9}\] hello\n", out)


# --------------------------------------------------------------------------- the daemon


def wait_for(cond, timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def start_agent(tmp_path: Path, conf: Path, root: Path) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO), SCOUTFS_FENCED_CONFIG_FILE=str(conf),
               SCOUTFS_SYSFS_ROOT=str(root))
    return subprocess.Popen([sys.executable, "-m", "fs.cli.fenced"], env=env,
                            stdout=open(tmp_path / "fenced.log", "w"),  # noqa: SIM115
                            stderr=subprocess.STDOUT)


def test_agent_polls_fences_and_exits_cleanly_on_sigterm(tmp_path):
    out = tmp_path / "action.out"
    run = write_script(tmp_path / "act", ACTION.format(out=out))
    conf = write_conf(tmp_path, run).read_text().replace("DELAY=1", "DELAY=0.05")
    (tmp_path / "c").write_text(conf)
    root = tmp_path / "sys"
    (root / "fs" / "scoutfs").mkdir(parents=True)
    p = start_agent(tmp_path, tmp_path / "c", root)
    try:
        d = make_request(root, 0x77)
        wait_for(lambda: (d / "fenced").read_text() == "1\n", what="the fence answer")
        p.send_signal(signal.SIGTERM)
        assert p.wait(20) == 0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    log = (tmp_path / "fenced.log").read_text()
    assert f"fencing rid {0x77:016x} at IP 127.0.0.1 for client_reconnect" in log
    assert out.read_text().count("rid=") == 1


def test_sigterm_waits_for_the_running_action(tmp_path):
    started, go = tmp_path / "started", tmp_path / "go"
    run = write_script(tmp_path / "act", f'touch "{started}"\n'
                       f'while [ ! -e "{go}" ]; do sleep 0.02; done\nexit 0\n')
    conf = write_conf(tmp_path, run).read_text().replace("DELAY=1", "DELAY=0.05")
    (tmp_path / "c").write_text(conf)
    root = tmp_path / "sys"
    d = make_request(root, 0x99)
    p = start_agent(tmp_path, tmp_path / "c", root)
    try:
        wait_for(started.exists, what="the action to start")
        p.send_signal(signal.SIGTERM)
        with pytest.raises(subprocess.TimeoutExpired):
            p.wait(0.3)  # still waiting for its action
        go.touch()
        assert p.wait(20) == 0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert (d / "fenced").read_text() == "1\n"


def test_agent_with_a_bad_config_exits_1(tmp_path):
    p = start_agent(tmp_path, tmp_path / "missing.conf", tmp_path)
    assert p.wait(20) == 1
    assert "isn't readable file, exiting" in (tmp_path / "fenced.log").read_text()
