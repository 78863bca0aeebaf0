"""`scoutfs` error paths: refusals of mkfs and fsck, usage errors, and upstream-style messages
(never Python exception text).  Runs the CLI in-process on small image files."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from fs.cli.main import main

MIB = 1 << 20
Q = ["-Q", "0,127.0.0.1,19700"]


def images(tmp_path, meta=64 * MIB, data=64 * MIB, names=("meta", "data")):
    paths = []
    for name, size in zip(names, (meta, data), strict=True):
        p = tmp_path / name
        with open(p, "wb") as f:
            f.truncate(size)
        paths.append(str(p))
    return paths


def comm(pid: int) -> str:
    with open(f"/proc/{pid}/comm") as f:
        return f.read().strip()


def poke(path: str, off: int, data: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek(off)
        f.write(data)


def try_line(cmd: str) -> str:
    return f"Try `{cmd} --help' or `{cmd} --usage' for more information.\n"


def no_python_text(text: str) -> None:
    assert "[Errno" not in text and "Traceback" not in text and "Error:" not in text, text


@pytest.fixture
def holder():
    """Start a process holding a file open (O_RDWR or O_RDONLY) until the test ends."""
    procs = []

    def start(path: str, flags: str = "O_RDWR") -> subprocess.Popen:
        code = textwrap.dedent(f"""
            import os, sys
            fd = os.open({path!r}, os.{flags})
            print("ready", flush=True)
            sys.stdin.read()
        """)
        p = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
        procs.append(p)
        assert p.stdout.readline().strip() == "ready"
        return p

    yield start
    for p in procs:
        p.stdin.close()
        p.wait(10)


# --------------------------------------------------------------------------- mkfs refusals


EXT4_SB = 1024  # the ext2/3/4 superblock; its magic 0xEF53 is at offset 56 in it


def make_ext(path: str, compat=0, incompat=0, ro_compat=0) -> None:
    poke(path, EXT4_SB + 56, b"\x53\xef")
    poke(path, EXT4_SB + 92, compat.to_bytes(4, "little") + incompat.to_bytes(4, "little")
         + ro_compat.to_bytes(4, "little"))


@pytest.mark.parametrize("kind,setup", [
    ("ext4", lambda p: make_ext(p, compat=0x4, incompat=0x2c0)),
    ("ext3", lambda p: make_ext(p, compat=0x4)),
    ("ext2", lambda p: make_ext(p)),
    ("xfs", lambda p: poke(p, 0, b"XFSB")),
    ("btrfs", lambda p: poke(p, 65600, b"_BHRfS_M")),
])
@pytest.mark.parametrize("which", ["meta", "data"])
def test_mkfs_refuses_other_filesystems_without_force(capsys, tmp_path, kind, setup, which):
    m, d = images(tmp_path)
    setup(m if which == "meta" else d)
    path = m if which == "meta" else d
    with open(path, "rb") as f:
        before = f.read(MIB)
    assert main(["mkfs", "-A", *Q, m, d]) == 1
    out, err = capsys.readouterr()
    article = "an" if kind[0] in "aeiox" else "a"
    assert err.endswith(f"{which} device '{path}' already contains {article} {kind} "
                        "filesystem, use --force to overwrite it\n"
                        "scoutfs: mkfs failed: File exists (17)\n"), err
    assert "Created" not in out
    with open(path, "rb") as f:  # untouched
        assert f.read(MIB) == before
    assert main(["mkfs", "-A", "-f", *Q, m, d]) == 0
    assert "Created scoutfs filesystem:" in capsys.readouterr().out


def test_mkfs_refuses_real_ext4(capsys, tmp_path):
    mke2fs = "/sbin/mkfs.ext4" if os.path.exists("/sbin/mkfs.ext4") else None
    if mke2fs is None:
        pytest.skip("no mkfs.ext4")
    m, d = images(tmp_path)
    subprocess.run([mke2fs, "-q", "-F", m], check=True, capture_output=True)
    assert main(["mkfs", "-A", *Q, m, d]) == 1
    assert f"meta device '{m}' already contains an ext4 filesystem" in capsys.readouterr().err


def test_mkfs_refuses_one_file_as_both_devices(capsys, tmp_path):
    m, _d = images(tmp_path)
    os.symlink(m, tmp_path / "alias")
    os.link(m, tmp_path / "hardlink")
    for other in (m, str(tmp_path / "alias"), str(tmp_path / "hardlink")):
        for force in ([], ["-f"]):
            assert main(["mkfs", "-A", *force, *Q, m, other]) == 1
            out, err = capsys.readouterr()
            assert err == (f"meta device '{m}' and data device '{other}' are the same "
                           "device\nscoutfs: mkfs failed: Invalid argument (22)\n"), err
            assert out == ""
    with open(m, "rb") as f:
        assert not any(f.read(MIB))


def test_mkfs_refuses_a_device_in_use(capsys, tmp_path, holder):
    m, d = images(tmp_path)
    p = holder(d)
    assert main(["mkfs", "-A", "-f", *Q, m, d]) == 1
    err = capsys.readouterr().err
    assert err == (f"data device '{d}' is in use: pid {p.pid} ({comm(p.pid)}) has "
                   f"'{os.path.realpath(d)}' open for writing\n"
                   "scoutfs: mkfs failed: Device or resource busy (16)\n"), err
    holder(m, "O_RDONLY")  # a reader is no writer
    p.stdin.close()
    p.wait(10)
    assert main(["mkfs", "-A", "-f", *Q, m, d]) == 0


# --------------------------------------------------------------------------- usage errors


@pytest.mark.parametrize("args,msg", [
    (["-m", "12QQ"], "unknown suffix: 'QQ'"),
    (["-d", "1X"], "unknown suffix: 'X'"),
    (["-m", "xyz"], "invalid 64bit value: 'xyz'"),
    (["-z", "xyz"], "invalid 64bit value: 'xyz'"),
    (["-V", "xyz"], "invalid 64bit value: 'xyz'"),
    (["-m", "99999999999P"], "size too big: '99999999999P'"),
    (["-Q", "abc"], "invalid quorum slot 'abc', must be NR,ADDR,PORT"),
    (["-Q", "0,1.2.3,1"], "invalid quorum slot address '1.2.3', must be an IPv4 address"),
    (["-Q", "15,127.0.0.1,1"], "invalid quorum slot number 15, must be less than 15"),
    (["-Q", "0,127.0.0.1,0"], "invalid quorum slot port 0, must be between 1 and 65535"),
    (["--bogus"], "unrecognized option '--bogus'"),
])
def test_mkfs_bad_option_values_are_usage_errors(capsys, tmp_path, args, msg):
    m, d = images(tmp_path)
    assert main(["mkfs", "-A", *Q, *args, m, d]) == 64
    out, err = capsys.readouterr()
    assert err == f"mkfs: {msg}\n" + try_line("mkfs"), err
    assert out == ""
    with open(m, "rb") as f:
        assert not any(f.read(MIB))


@pytest.mark.parametrize("argv", [["--help"], ["-h"], ["help"]])
def test_top_level_help_lists_commands_and_exits_0(capsys, argv):
    assert main(argv) == 0
    out, err = capsys.readouterr()
    assert out.startswith("usage: scoutfs <command> [<args>]\n")
    assert "Core admin:" in out and "  mkfs" in out and "  fsck" in out
    assert err == ""


def test_help_of_a_command(capsys):
    assert main(["help", "mkfs"]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("Usage: mkfs [OPTION...] META-DEVICE DATA-DEVICE\n") and err == ""
    assert main(["help", "nope"]) == 1
    assert capsys.readouterr().err.startswith("scoutfs: unrecognized command: 'nope'\nusage:")


# --------------------------------------------------------------------------- messages


def test_clean_msg_rewrites_python_errno_text():
    from fs.cli.util import clean_msg

    assert clean_msg("d: read at offset 65536: [Errno 21] Is a directory") == \
        "d: read at offset 65536: Is a directory (21)"
    assert clean_msg("[Errno 2] No such file or directory: 'nope'") == \
        "No such file or directory (2)"
    assert clean_msg("plain text") == "plain text"
    assert clean_msg("fs_root: unreadable: EIO: m: meta block 2: bad crc") == \
        "fs_root: unreadable: m: meta block 2: bad crc"
    assert clean_msg("EXAMPLE: kept") == "EXAMPLE: kept"


@pytest.mark.parametrize("cmd", ["print", "fsck", "mkfs"])
def test_directory_as_device(capsys, tmp_path, cmd):
    m, d = images(tmp_path)
    dev = str(tmp_path)
    argv = {"print": ["print", dev], "fsck": ["fsck", dev, d],
            "mkfs": ["mkfs", "-A", *Q, dev, d]}[cmd]
    assert main(argv) == 1
    out, err = capsys.readouterr()
    assert err == (f"failed to open '{dev}': Is a directory (21)\n"
                   f"scoutfs: {cmd} failed: Is a directory (21)\n"), err
    no_python_text(out + err)


@pytest.mark.parametrize("cmd", ["print", "fsck", "mkfs"])
def test_missing_device(capsys, tmp_path, cmd):
    m, d = images(tmp_path)
    nope = str(tmp_path / "nope")
    argv = {"print": ["print", nope], "fsck": ["fsck", nope, d],
            "mkfs": ["mkfs", "-A", *Q, nope, d]}[cmd]
    assert main(argv) == 1
    out, err = capsys.readouterr()
    assert err == (f"failed to open '{nope}': No such file or directory (2)\n"
                   f"scoutfs: {cmd} failed: No such file or directory (2)\n"), err
    assert out == ""


def test_fsck_of_a_missing_data_device(capsys, tmp_path):
    m, d = images(tmp_path)
    assert main(["mkfs", "-A", *Q, m, d]) == 0
    capsys.readouterr()
    nope = str(tmp_path / "nope")
    assert main(["fsck", m, nope]) == 1
    out, err = capsys.readouterr()
    assert err == (f"failed to open '{nope}': No such file or directory (2)\n"
                   "scoutfs: fsck failed: No such file or directory (2)\n")
    assert out == ""


def test_fsck_problems_exit_1_without_python_text(capsys, tmp_path):
    m, d = images(tmp_path)
    assert main(["fsck", m, d]) == 1
    out, err = capsys.readouterr()
    assert out == (f"{m} {d}: 1 problem(s) found:\n"
                   f"  meta device super: {m}: no scoutfs super block (all zeros)\n")
    assert err == ""


def test_unexpected_os_errors_become_failed_lines(capsys, tmp_path, monkeypatch):
    from fs.cli import util

    def boom(cmd, events):
        raise IsADirectoryError(21, "Is a directory")

    monkeypatch.setitem(util.COMMANDS, "boom", util.Command("boom", "", "", util.GROUP_DEBUG,
                                                             [], boom))
    assert main(["boom"]) == 1
    assert capsys.readouterr().err == "scoutfs: boom failed: Is a directory (21)\n"


# --------------------------------------------------------------------------- fsck refusals


def test_fsck_refuses_a_volume_in_use(capsys, tmp_path, holder):
    m, d = images(tmp_path)
    assert main(["mkfs", "-A", *Q, m, d]) == 0
    capsys.readouterr()
    p = holder(m)
    assert main(["fsck", m, d]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err == (f"scoutfs: fsck: meta device '{m}' is in use: pid {p.pid} "
                   f"({comm(p.pid)}) has '{os.path.realpath(m)}' open for writing; "
                   "a mounted volume can't be checked consistently\n"), err
    holder(d, "O_RDONLY")  # readers (another fsck, print) are no reason to refuse
    p.stdin.close()
    p.wait(10)
    assert main(["fsck", m, d]) == 0
    assert capsys.readouterr().out == f"{m} {d}: clean\n"


def fake_proc(tmp_path, pid: int, links: dict[int, tuple[str, int]], comm="scoutfs",
              mountinfo: str = ""):
    proc = tmp_path / "proc"
    (proc / "self").mkdir(parents=True, exist_ok=True)
    (proc / "self" / "mountinfo").write_text(mountinfo)
    pd = proc / str(pid)
    (pd / "fd").mkdir(parents=True)
    (pd / "fdinfo").mkdir()
    (pd / "comm").write_text(comm + "\n")
    for fd, (target, flags) in links.items():
        os.symlink(target, pd / "fd" / str(fd))
        (pd / "fdinfo" / str(fd)).write_text(f"pos:\t0\nflags:\t{flags:07o}\nmnt_id:\t1\n")
    return str(proc)


def fake_loop(sysfs, name: str, backing: str) -> None:
    d = sysfs / "class" / "block" / name / "loop"
    d.mkdir(parents=True)
    (d / "backing_file").write_text(backing + "\n")


def test_users_through_loop_aliases_and_mounts(tmp_path):
    from fs.cli import devuse

    m, d = images(tmp_path)
    sysfs = tmp_path / "sys"
    fake_loop(sysfs, "loop5", m)
    fake_loop(sysfs, "loop6", d)
    fake_loop(sysfs, "loop7", str(tmp_path / "other"))
    assert devuse.storage_aliases(m, sysfs=str(sysfs)) >= {m, "/dev/loop5"}
    assert "/dev/loop7" not in devuse.storage_aliases(m, sysfs=str(sysfs))
    proc = fake_proc(tmp_path, 4242, {3: ("/dev/loop5", os.O_RDWR | os.O_CLOEXEC),
                                      4: ("/dev/loop7", os.O_RDWR),
                                      5: ("/dev/loop6", os.O_RDONLY),
                                      6: ("socket:[123]", os.O_RDWR)})
    uses = devuse.find_users([m, d], proc=proc, sysfs=str(sysfs))
    assert [str(u) for u in uses] == ["pid 4242 (scoutfs) has '/dev/loop5' open for writing"]
    assert uses[0].path == m
    # a mount whose source is an alias of the data device
    mi = (f"40 30 0:51 / /mnt/test.0 rw,relatime shared:1 - fuse.scoutfs /dev/loop6 rw\n"
          f"41 30 0:52 / /mnt/other rw - fuse.scoutfs /dev/loop7 rw\n"
          f"42 30 0:53 / /mnt/x\\040y rw - fuse.scoutfs {d.replace(' ', chr(92) + '040')} rw\n")
    proc = fake_proc(tmp_path / "2", 1, {}, mountinfo=mi)
    uses = devuse.find_users([m, d], proc=proc, sysfs=str(sysfs))
    assert [str(u) for u in uses] == ["it is mounted at /mnt/test.0",
                                      "it is mounted at /mnt/x y"]
    assert all(u.path == d for u in uses)


def test_character_devices_are_never_in_use(tmp_path):
    from fs.cli import devuse

    assert devuse.find_users(["/dev/null", "/dev/zero"]) == []


def test_same_storage(tmp_path):
    from fs.cli import devuse

    m, d = images(tmp_path)
    sysfs = tmp_path / "sys"
    fake_loop(sysfs, "loop5", m)
    assert devuse.same_storage(m, m, sysfs=str(sysfs))
    assert not devuse.same_storage(m, d, sysfs=str(sysfs))


def test_mount_messages_lose_python_errno_text(capsys, monkeypatch):
    import fs.mount
    from fs.cli.mount import _mount

    def start(data, mnt, opts):
        try:
            open("/nonexistent/utab")
        except OSError as e:
            sys.stderr.write(f"scoutfs: warning: could not record the mount in utab: {e}\n")
        return 0

    monkeypatch.setattr(fs.mount, "start", start)
    monkeypatch.delenv("SCOUTFS_CHECKOUT", raising=False)  # _mount may set it: restored
    assert _mount("d", "m", ["metadev_path=/m"], "scoutfs") == 0
    assert capsys.readouterr().err == ("scoutfs: warning: could not record the mount in utab: "
                                       "No such file or directory (2)\n")
    assert sys.stderr.__class__.__name__ != "CleanStderr"
