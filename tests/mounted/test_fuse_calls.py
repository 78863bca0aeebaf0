"""System calls the FUSE protocol layer brought to a scoutfs mount, through the kernel:
fallocate (mode 0, KEEP_SIZE, EOPNOTSUPP for the rest), SEEK_DATA/SEEK_HOLE,
copy_file_range, O_TMPFILE with linkat, setxattr flags, FS_IOC_GETFLAGS, 1 MiB requests.
The golden tests fallocate-modes, o-tmpfile, xattr-flags and xattr-create-race print the same
behaviour for the harness; these check the return values and errnos directly."""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import struct

import pytest

from conftest import _fuse_usable

pytestmark = pytest.mark.skipif(not _fuse_usable(), reason="/dev/fuse unusable (or not root)")

libc = ctypes.CDLL(None, use_errno=True)
libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_long, ctypes.c_long]
libc.setxattr.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_size_t,
                          ctypes.c_int]
FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE, FALLOC_FL_COLLAPSE_RANGE = 1, 2, 8
FALLOC_FL_ZERO_RANGE, FALLOC_FL_INSERT_RANGE = 16, 32
AT_EMPTY_PATH = 0x1000
FS_IOC_GETFLAGS = 0x80086601


def fallocate(fd: int, mode: int, off: int, length: int) -> int:
    if libc.fallocate(fd, mode, off, length) == 0:
        return 0
    return ctypes.get_errno()


def test_fallocate_modes(mounted):
    _env, mnt, _m, _d = mounted
    fd = os.open(mnt / "f", os.O_CREAT | os.O_RDWR, 0o644)
    try:
        assert fallocate(fd, 0, 0, 1 << 20) == 0
        st = os.fstat(fd)
        assert st.st_size == 1 << 20 and st.st_blocks == 0  # unwritten: not online
        assert os.pread(fd, 1 << 20, 0) == bytes(1 << 20)
        assert fallocate(fd, FALLOC_FL_KEEP_SIZE, 1 << 20, 1 << 20) == 0
        assert os.fstat(fd).st_size == 1 << 20
        for mode in (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, FALLOC_FL_ZERO_RANGE,
                     FALLOC_FL_COLLAPSE_RANGE, FALLOC_FL_INSERT_RANGE):
            assert fallocate(fd, mode, 0, 4096) == errno.EOPNOTSUPP, mode
        os.pwrite(fd, b"x" * 4096, 8192)
        assert os.fstat(fd).st_blocks == 8
        assert os.pread(fd, 3 * 4096, 4096) == bytes(4096) + b"x" * 4096 + bytes(4096)
    finally:
        os.close(fd)
    dfd = os.open(mnt, os.O_RDONLY | os.O_DIRECTORY)
    try:
        # the kernel refuses a directory before asking us (EBADF: not open for writing)
        assert fallocate(dfd, 0, 0, 4096) in (errno.EBADF, errno.EISDIR)
    finally:
        os.close(dfd)


def test_seek_data_and_hole(mounted):
    _env, mnt, _m, _d = mounted
    fd = os.open(mnt / "sparse", os.O_CREAT | os.O_RDWR, 0o644)
    try:
        os.pwrite(fd, b"d" * 4096, 1 << 20)
        os.ftruncate(fd, 4 << 20)
        assert os.lseek(fd, 0, os.SEEK_DATA) == 1 << 20
        assert os.lseek(fd, 0, os.SEEK_HOLE) == 0
        assert os.lseek(fd, 1 << 20, os.SEEK_HOLE) == (1 << 20) + 4096
        with pytest.raises(OSError) as e:
            os.lseek(fd, (1 << 20) + 4096, os.SEEK_DATA)
        assert e.value.errno == errno.ENXIO
        with pytest.raises(OSError) as e:
            os.lseek(fd, 4 << 20, os.SEEK_HOLE)
        assert e.value.errno == errno.ENXIO
        assert os.lseek(fd, 10, os.SEEK_SET) == 10  # the kernel's own whences still work
        assert os.lseek(fd, 0, os.SEEK_END) == 4 << 20
    finally:
        os.close(fd)


def test_copy_file_range(mounted):
    _env, mnt, _m, _d = mounted
    data = os.urandom(3 << 20)
    (mnt / "src").write_bytes(data)
    src = os.open(mnt / "src", os.O_RDONLY)
    dst = os.open(mnt / "dst", os.O_CREAT | os.O_RDWR, 0o644)
    try:
        n = os.copy_file_range(src, dst, len(data) + 100, 5, 7)
        assert n == len(data) - 5  # short at the source's EOF
        assert os.pread(dst, len(data) + 10, 0) == bytes(7) + data[5:]
        # flags must be 0 (os.copy_file_range takes none: call libc)
        assert libc.copy_file_range(src, None, dst, None, ctypes.c_size_t(10), 1) == -1
        assert ctypes.get_errno() == errno.EINVAL
    finally:
        os.close(src)
        os.close(dst)


def test_tmpfile_linkat(mounted):
    _env, mnt, _m, _d = mounted
    old = os.umask(0o022)
    try:
        fd = os.open(mnt, os.O_TMPFILE | os.O_RDWR, 0o777)
    finally:
        os.umask(old)
    try:
        st = os.fstat(fd)
        assert st.st_nlink == 0 and st.st_mode == 0o100755
        os.write(fd, b"tmp contents")
        assert os.listdir(mnt) == []
        assert libc.linkat(fd, b"", -100, str(mnt / "named").encode(), AT_EMPTY_PATH) == 0
        assert os.fstat(fd).st_nlink == 1
        assert (mnt / "named").read_bytes() == b"tmp contents"
    finally:
        os.close(fd)
    # O_TMPFILE needs a directory and write access
    with pytest.raises(OSError) as e:
        os.open(mnt / "named", os.O_TMPFILE | os.O_RDWR, 0o600)
    assert e.value.errno == errno.ENOTDIR


def test_setxattr_flags(mounted):
    _env, mnt, _m, _d = mounted
    p = mnt / "x"
    p.write_bytes(b"")
    path = str(p).encode()

    def setx(name: bytes, flags: int) -> int:
        if libc.setxattr(path, name, b"v", 1, flags) == 0:
            return 0
        return ctypes.get_errno()

    assert setx(b"user.a", os.XATTR_REPLACE) == errno.ENODATA
    assert setx(b"user.a", os.XATTR_CREATE | os.XATTR_REPLACE) == errno.EINVAL
    assert setx(b"user.a", os.XATTR_CREATE) == 0
    assert setx(b"user.a", os.XATTR_CREATE) == errno.EEXIST
    assert setx(b"user.a", os.XATTR_CREATE | os.XATTR_REPLACE) == errno.EINVAL
    assert setx(b"user.a", os.XATTR_REPLACE) == 0


def test_getflags_ioctl(mounted):
    _env, mnt, _m, _d = mounted
    (mnt / "g").write_bytes(b"")
    fd = os.open(mnt / "g", os.O_RDONLY)
    try:
        buf = fcntl.ioctl(fd, FS_IOC_GETFLAGS, struct.pack("=l", -1))
        assert struct.unpack("=l", buf)[0] == 0
    finally:
        os.close(fd)


def test_megabyte_requests(mounted):
    """1 MiB writes and reads go through whole, and the contents survive."""
    _env, mnt, _m, _d = mounted
    data = os.urandom(8 << 20)
    fd = os.open(mnt / "big", os.O_CREAT | os.O_RDWR, 0o644)
    try:
        for off in range(0, len(data), 1 << 20):
            assert os.pwrite(fd, data[off:off + (1 << 20)], off) == 1 << 20
        os.fsync(fd)
        assert os.pread(fd, len(data), 0) == data
    finally:
        os.close(fd)


def test_fiemap_is_answered_by_the_kernel(mounted):
    """FS_IOC_FIEMAP never reaches a FUSE daemon: the VFS handles it (ioctl_fiemap needs
    i_op->fiemap, which FUSE lacks) and fails it with EOPNOTSUPP (spec §3.4).  The extent
    map is served by the filesystem layer (`Filesystem.fiemap`) for the control socket."""
    _env, mnt, _m, _d = mounted
    (mnt / "m").write_bytes(b"x" * 8192)
    fd = os.open(mnt / "m", os.O_RDONLY)
    try:
        # struct fiemap: start, length, flags, mapped_extents, extent_count, reserved
        req = struct.pack("=QQIIII", 0, 1 << 62, 0, 0, 0, 0)
        with pytest.raises(OSError) as e:
            fcntl.ioctl(fd, 0xC020660B, req)  # FS_IOC_FIEMAP
        assert e.value.errno == errno.EOPNOTSUPP
    finally:
        os.close(fd)
