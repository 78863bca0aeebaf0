"""`scoutfs print [-S] META-DEVICE`: an offline dump of the meta device: the super block's
fields, its btree roots, and the items of fs_root and of every mount's log tree.  With -S
only the super is printed.  Reads only through fs.block / fs.btree / fs.format."""

from __future__ import annotations

import dataclasses
import errno

from fs import format as fmt
from fs.cli.argp import POSITIONAL, Opt, UsageError
from fs.cli.util import GROUP_DEBUG, Command, clean_msg, err, error_text, open_device, register
from fs.errors import FsError, StaleBlock


def _ref(r) -> str:
    return f"blkno {r.blkno} seq {r.seq}"


def _root(r) -> str:
    return f"{_ref(r.ref)} height {r.height}"


def _value(key, item) -> str:
    if item.deleted:
        return "(deletion)"
    v = item.value
    try:
        if key[0] == fmt.ZONE_FS and key[2] == fmt.FS_INODE:
            i = fmt.unpack_inode(key[1], v)
            return (f"size {i.size} nlink {i.nlink} mode 0{i.mode:o} uid {i.uid} gid {i.gid} "
                    f"meta_seq {i.meta_seq} data_seq {i.data_seq} data_version "
                    f"{i.data_version} online {i.online_blocks} offline {i.offline_blocks}")
        if key[0] == fmt.ZONE_FS and key[2] in (fmt.FS_DIRENT, fmt.FS_READDIR,
                                                 fmt.FS_LINK_BACKREF):
            d = fmt.unpack_dirent(v)
            return f"ino {d.ino} pos {d.pos} type {d.dtype} name {d.name!r}"
        if key[0] == fmt.ZONE_FS and key[2] == fmt.FS_DATA_EXTENT:
            blkno, flags = fmt.unpack_extent_val(v)
            return f"blkno {blkno} flags {flags}"
    except Exception:  # noqa: BLE001 - a dump shows what it cannot parse as bytes
        pass
    return f"len {len(v)} {v[:32].hex()}{'...' if len(v) > 32 else ''}"


def _print_items(tree, indent: str = "    ") -> None:
    for key, item in tree.items(fmt.KEY_MIN, fmt.KEY_MAX):
        print(f"{indent}{fmt.format_key(key)} seq {item.seq} flags {item.flags}: "
              f"{_value(key, item)}")


def run_print(cmd: str, events) -> int:
    super_only = False
    path = None
    for k, v in events:
        if k == "super":
            super_only = True
        elif k == POSITIONAL:
            if path is not None:
                raise UsageError("more than one argument given")
            path = v
    if path is None:
        raise UsageError("must specify metadata device path")
    from fs.block import MetaBlocks, read_super
    from fs.btree import Btree

    dev = open_device(path)
    try:
        sb = read_super(dev)
        print(f"super blkno {fmt.SUPER_BLKNO}:")
        for f in dataclasses.fields(sb):
            val = getattr(sb, f.name)
            if f.name in ("fsid",):
                s = f"{val:016x}"
            elif f.name == "uuid":
                s = bytes(val).hex()
            elif f.name == "flags":
                s = f"0x{val:x}"
            elif isinstance(val, fmt.BtreeRoot):
                s = _root(val)
            elif isinstance(val, fmt.BlockRef):
                s = _ref(val)
            elif f.name == "quorum_slots":
                s = " ".join(f"{nr}:{q.addr}:{q.port}" for nr, q in sorted(val.items()))
            else:
                s = str(val)
            print(f"  {f.name}: {s}")
        if super_only:
            return 0
        blocks = MetaBlocks(dev, sb.fsid)
        print(f"fs_root: {_root(sb.fs_root)}")
        _print_items(Btree(blocks, sb.fs_root))
        print(f"logs_root: {_root(sb.logs_root)}")
        for key, item in Btree(blocks, sb.logs_root).items(fmt.KEY_MIN, fmt.KEY_MAX):
            if item.deleted:
                continue
            if key == fmt.log_merge_status_key():  # a merge partly committed (fs/totl.py)
                upto, trees = fmt.unpack_log_merge_status(item.value)
                print(f"  log_merge_status merged_upto {fmt.format_key(upto)} trees "
                      + " ".join(f"{r:016x}.{n}" for r, n in trees))
                continue
            lt = fmt.unpack_log_trees(item.value)
            print(f"  log_trees rid {lt.rid:016x} nr {lt.nr} item_root {_root(lt.item_root)} "
                  f"get_trans_seq {lt.get_trans_seq} commit_trans_seq {lt.commit_trans_seq} "
                  f"max_item_seq {lt.max_item_seq} finalize_seq {lt.finalize_seq} "
                  f"flags 0x{lt.flags:x} meta_avail {len(lt.meta_avail)} data_avail "
                  f"{len(lt.data_avail)}")
            _print_items(Btree(blocks, lt.item_root), "      ")
        print(f"mounted_clients: {_root(sb.mounted_clients)}")
        for key, item in Btree(blocks, sb.mounted_clients).items(fmt.KEY_MIN, fmt.KEY_MAX):
            if not item.deleted:
                addr, port, flags = fmt.unpack_mounted_client(item.value)
                print(f"  rid {key[1]:016x} addr {addr}:{port} flags 0x{flags:x}")
    except FsError as e:
        err(f"print failed: {error_text(e)}")
        return -e.errno
    except StaleBlock as e:
        err(f"print failed: stale block: {clean_msg(str(e))}")
        return -errno.EIO
    finally:
        dev.close()
    return 0


register(Command("print", "META-DEVICE", "Print metadata structures", GROUP_DEBUG,
                 [Opt("super", "S", "skip-likely-huge", None,
                      "Print only the super block")], run_print))
