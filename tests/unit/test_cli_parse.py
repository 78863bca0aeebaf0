"""Mount option parsing and `scoutfs` CLI usage errors (no FUSE, no daemon)."""

from __future__ import annotations

import pytest

from fs.cli import argp
from fs.cli.main import main
from fs.cli.util import CmdFailed, parse_human, parse_u64
from fs.options import OptionError, parse_options


def test_defaults_and_values():
    o = parse_options("metadev_path=/dev/x,quorum_slot_nr=3,rw,relatime,noacl")
    assert o["metadev_path"] == "/dev/x"
    assert o["quorum_slot_nr"] == 3
    assert o["acl"] is False
    assert o["quorum_heartbeat_timeout_ms"] == 10000
    assert o["lock_idle_count"] == 10000
    assert o["orphan_scan_delay_ms"] == 10000
    assert o["attr_timeout_ms"] == 0
    assert "relatime" in o["fuse_flags"]
    o = parse_options(["metadev_path=/m", "ro,nosuid,defaults,attr_timeout_ms=100",
                       "cache_blocks=100,item_cache_items=5000,log_path=/tmp/l"])
    assert o["ro"] is True and o["attr_timeout_ms"] == 100 and o["cache_blocks"] == 100
    assert o["item_cache_items"] == 5000 and o["log_path"] == "/tmp/l"
    assert "defaults" not in o["fuse_flags"] and "nosuid" in o["fuse_flags"]


@pytest.mark.parametrize("text,msg", [
    ("quorum_slot_nr=0", 'Required mount option "metadev_path" not found'),
    ("", 'Required mount option "metadev_path" not found'),
    ("metadev_path=/m,bogus", 'Unknown or malformed option, "bogus"'),
    ("metadev_path=/m,bogus=1", 'Unknown or malformed option, "bogus=1"'),
    ("metadev_path=/m,quorum_slot_nr=15", "invalid quorum_slot_nr option, must be between 0 and 14"),
    ("metadev_path=/m,quorum_slot_nr=-1", "invalid quorum_slot_nr option, must be between 0 and 14"),
    ("metadev_path=/m,quorum_slot_nr=1,quorum_slot_nr=2",
     "multiple quorum_slot_nr options provided, only provide one."),
    ("metadev_path=/m,quorum_heartbeat_timeout_ms=1999",
     "invalid quorum_heartbeat_timeout_ms value 1999, must be between 2000 and 60000"),
    ("metadev_path=/m,quorum_heartbeat_timeout_ms=60001",
     "invalid quorum_heartbeat_timeout_ms value 60001, must be between 2000 and 60000"),
    ("metadev_path=/m,lock_idle_count=31", "invalid lock_idle_count option, must be between 32 and 100000"),
    ("metadev_path=/m,orphan_scan_delay_ms=99",
     "invalid orphan_scan_delay_ms option, must be between 100 and 60000"),
    ("metadev_path=/m,orphan_scan_delay_ms=100,orphan_scan_delay_ms=200",
     "multiple orphan_scan_delay_ms options provided, only provide one."),
    ("metadev_path=/m,ino_alloc_per_lock=0", "invalid ino_alloc_per_lock option, must be between 1 and 1024"),
    ("metadev_path=/m,ino_alloc_per_lock=1025",
     "invalid ino_alloc_per_lock option, must be between 1 and 1024"),
    ("metadev_path=/m,data_prealloc_contig_only=2",
     "invalid data_prealloc_contig_only option, bool must only be 0 or 1"),
    ("metadev_path=/m,tcp_keepalive_timeout_ms=3000",
     "invalid tcp_keepalive_timeout_ms option, must be at least 3001"),
    ("metadev_path=/m,log_merge_wait_timeout_ms=abc",
     "invalid log_merge_wait_timeout_ms option, must be between 100 and 60000"),
])
def test_bad_options(text, msg):
    with pytest.raises(OptionError) as ei:
        parse_options(text)
    assert ei.value.message == msg


def test_range_edges_accepted():
    o = parse_options("metadev_path=/m,quorum_heartbeat_timeout_ms=2000,lock_idle_count=100000,"
                      "orphan_scan_delay_ms=60000,ino_alloc_per_lock=1,quorum_slot_nr=14")
    assert o["quorum_heartbeat_timeout_ms"] == 2000 and o["quorum_slot_nr"] == 14


def test_argp_parse_and_errors():
    opts = [argp.Opt("force", "f", "force"), argp.Opt("q", "Q", "quorum-slot", "NR")]
    ev = argp.parse("mkfs", opts, ["a", "-fQ1", "--quorum=2", "-Q", "3", "--", "-x"])
    assert ev == [("force", True), ("q", "1"), ("q", "2"), ("q", "3"),
                  (argp.POSITIONAL, "a"), (argp.POSITIONAL, "-x")]
    for argv, msg in ((["-x"], "invalid option -- 'x'"),
                      (["--bogus"], "unrecognized option '--bogus'"),
                      (["-Q"], "option requires an argument -- 'Q'"),
                      (["--quorum-slot"], "option '--quorum-slot' requires an argument"),
                      (["--force=1"], "option '--force' doesn't allow an argument")):
        with pytest.raises(argp.UsageError) as ei:
            argp.parse("mkfs", opts, argv)
        assert ei.value.msg == msg


def test_numbers(capsys):
    assert parse_u64("0x10") == 16 and parse_u64("010") == 8 and parse_u64("-1") == (1 << 64) - 1
    assert parse_human("4K") == 4096 and parse_human("1G") == 1 << 30
    with pytest.raises(CmdFailed):
        parse_u64("12z")
    assert "invalid 64bit value: '12z'" in capsys.readouterr().err
    with pytest.raises(CmdFailed):
        parse_human("1Q")
    assert "unknown suffix: 'Q'" in capsys.readouterr().err


def test_dispatcher_usage(capsys):
    assert main([]) == 1
    err = capsys.readouterr().err
    assert err.startswith("usage: scoutfs <command> [<args>]\n\nSelected fs defaults to current "
                          "working directory.\nSee <command> --help for more details.\n\n"
                          "Supported format version: 1-2\n")
    assert "Core admin:" in err and "  mkfs" in err
    assert main(["nope"]) == 1
    assert capsys.readouterr().err.startswith("scoutfs: unrecognized command: 'nope'\nusage:")


@pytest.mark.parametrize("argv,msg", [
    (["stat"], "stat: missing operand"),
    (["stat", "a", "b"], "stat: more than one argument given"),
    (["stat", "-z", "a"], "stat: invalid option -- 'z'"),
    (["mkfs", "m", "d"], "mkfs: must have at least one quorum slot specified with --quorum-slot"),
    (["mkfs", "-Q", "0,127.0.0.1,1"], "mkfs: no metadata device argument given"),
    (["mkfs", "-Q", "0,127.0.0.1,1", "m"], "mkfs: no data device argument given"),
    (["mkfs", "-Q", "0,127.0.0.1,1", "-V", "3", "m", "d"],
     "mkfs: format-version 3 must be between 1 and 2"),
    (["counters"], "counters: no sysfs directory given"),
    (["mount", "-o", "metadev_path=/x"], "mount: must provide data device"),
])
def test_usage_errors(capsys, argv, msg):
    assert main(argv) == 64
    err = capsys.readouterr().err
    cmd = argv[0]
    assert err == f"{msg}\nTry `{cmd} --help' or `{cmd} --usage' for more information.\n"


def test_failed_line_and_quirks(capsys, tmp_path):
    assert main(["stat", str(tmp_path / "missing")]) == 1
    err = capsys.readouterr().err
    assert err == (f"failed to open '{tmp_path / 'missing'}': No such file or directory (2)\n"
                   "scoutfs: stat failed: No such file or directory (2)\n")
    # a file on another filesystem: the ioctl fails with ENOTTY and stat still exits 0
    f = tmp_path / "f"
    f.write_text("x")
    assert main(["stat", str(f)]) == 0
    assert capsys.readouterr().err == "ioctl failed: Inappropriate ioctl for device (25)\n"
    assert main(["stat", "-s", "nope", str(f)]) == 1
    assert capsys.readouterr().err == ("unknown field: 'nope'\n"
                                       "scoutfs: stat failed: Invalid argument (22)\n")


def test_mkfs_rounding_and_refusals(capsys, tmp_path):
    m, d = tmp_path / "m", tmp_path / "d"
    for p in (m, d):
        with open(p, "wb") as f:
            f.truncate(64 << 20)
    q = ["-Q", "0,127.0.0.1,19700"]
    assert main(["mkfs", *q, str(m), str(d)]) == 1
    assert "scoutfs: mkfs failed: Invalid argument (22)" in capsys.readouterr().err
    assert main(["mkfs", "-A", *q, "-Q", "1,127.0.0.1,19701", "-m", "40000000", str(m),
                 str(d)]) == 0
    out, err = capsys.readouterr()
    assert "Meta dev size 40000000 rounded down to 39976960 bytes" in err
    lines = out.splitlines()
    assert lines.pop(0) == "Limiting use of 64.00MB meta device to 38.12MB"
    assert lines[0] == "Created scoutfs filesystem:"
    assert lines[1] == f"  meta device path:       {m}"
    assert lines[5] == "  format version:         2"
    assert lines[6] == "  64KB metadata blocks:   610 (38.12 MB)"
    assert lines[7] == "  4KB data blocks:        16384 (64.00 MB)"
    assert lines[8] == "  quorum config version:  1"
    assert lines[9] == "  quorum slots:           0: 127.0.0.1:19700"
    assert lines[10] == "                          1: 127.0.0.1:19701"
    assert main(["mkfs", "-A", *q, str(m), str(d)]) == 1
    err = capsys.readouterr().err
    assert "already contains a scoutfs filesystem" in err
    assert err.endswith("scoutfs: mkfs failed: File exists (17)\n")
    assert main(["mkfs", "-A", "-f", "-V", "1", *q, str(m), str(d)]) == 0
    assert "  format version:         1" in capsys.readouterr().out
    assert main(["print", str(m)]) == 0
    out = capsys.readouterr().out
    assert "fs_root:" in out and "fs.1.inode.0.0.0" in out
