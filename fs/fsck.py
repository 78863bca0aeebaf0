"""Offline check of a whole volume: the oracle tests use after crashes.

It reads the devices only through the on-disk format (fs/format.py) and the storage layer,
never through a daemon.  Checks, in order:

1. both supers: magic, crc, the META flag only on the meta copy, the same fsid; the quorum
   block of every configured slot (crc, magic, blkno, fsid);
2. every reachable meta block (fs_root, logs_root, mounted_clients, every log tree, every
   extent-list chain, every srch file): checksum and header, and keys strictly ascending
   within each tree; srch files' counts, sizes and (sorted files) order, their srch_root
   keys, and that a compaction's inputs are srch_root files;
   every item key has the shape of its zone and type (unused fields zero), and no item seq
   is above the super's seq (nor, in a log tree, above the tree's max_item_seq);
3. metadata and data allocator accounting: every block of each device is exactly one of
   used (reachable), free, pending reuse, or lent to a mount; none twice, none missing; the
   super's free counts match its free lists;
4. the merged items (fs_root and every log tree, newest seq wins, tombstones hide):
   directory entries have their READDIR and LINK_BACKREF twins and name an existing inode;
   link counts equal the entries naming an inode (directories: 2 + subdirectories);
   directory sizes equal the sum of their entries' name lengths; readdir positions are below
   next_readdir_pos; an inode without links has an orphan item; online and offline
   block counts match the extents (offline extents are unmapped or flagged, inside i_size,
   with known flags); seq index items match each inode's meta_seq/data_seq; READDIR and
   LINK_BACKREF values agree with their keys; every inode number in use is below the
   super's next_ino (else new files would reuse live numbers); every ``.indx.`` xattr has
   its XATTR_INDX item and every XATTR_INDX item (no value) an ``.indx.`` xattr of its
   inode and id whose name ends in its major and minor; every ``.totl.`` total (fs_root's
   and the log trees' deltas summed as fs/totl.py does, honouring a merge in flight) equals
   the sum and count of the ``.totl.`` xattrs naming it.

`check(meta_path, data_path)` returns the list of problems found (empty when clean);
`check_devices()` does the work on open devices and also returns the block counts (the
allocator oracle of the server's unit tests).
"""

from __future__ import annotations

import heapq
import stat
from collections import defaultdict
from collections.abc import Iterator

from fs import format as fmt
from fs import srch, totl
from fs.alloc import read_extent_list
from fs.block import Device, MetaBlocks, read_quorum_block, read_super
from fs.btree import Btree
from fs.errors import FsError, StaleBlock
from fs.xattr_names import indx_pos, parse_totl_name, parse_u64


class Problems(list):
    def add(self, msg: str) -> None:
        self.append(msg)


# the fields of each item key that are not zero: (zone, type) -> which of the 6 may be set
_FS_KEY_FIELDS = {
    fmt.FS_INODE: (0, 1, 2),
    fmt.FS_XATTR: (0, 1, 2, 3, 4, 5),
    fmt.FS_DIRENT: (0, 1, 2, 3, 4),
    fmt.FS_READDIR: (0, 1, 2, 3),
    fmt.FS_LINK_BACKREF: (0, 1, 2, 3, 4),
    fmt.FS_SYMLINK: (0, 1, 2, 3),
    fmt.FS_DATA_EXTENT: (0, 1, 2, 3, 4),
}
_ITEM_KEY_FIELDS = {(fmt.ZONE_FS, t): f for t, f in _FS_KEY_FIELDS.items()}
_ITEM_KEY_FIELDS[(fmt.ZONE_ORPHAN, fmt.ORPHAN_TYPE)] = (0, 2, 3)
_ITEM_KEY_FIELDS[(fmt.ZONE_INODE_INDEX, fmt.INODE_INDEX_META_SEQ)] = (0, 2, 3, 4)
_ITEM_KEY_FIELDS[(fmt.ZONE_INODE_INDEX, fmt.INODE_INDEX_DATA_SEQ)] = (0, 2, 3, 4)
# zones whose items this version does not interpret yet: any key shape
_OPAQUE_ZONES = (fmt.ZONE_QUOTA,)


def _item_key_problem(key: fmt.Key) -> str | None:
    """Why an fs_root/log tree item key is malformed, or None."""
    if key[0] in _OPAQUE_ZONES:
        return None
    if key[0] == fmt.ZONE_XATTR_TOTL:  # (a, 0, b, c, 0) -> {total, count}
        return "a field that must be zero is set" if key[2] or key[5] else None
    if key[0] == fmt.ZONE_XATTR_INDX:  # (major << 56 | minor >> 8, minor & 255, ino, id)
        return "a field that must be zero is set" if key[5] else None
    fields = _ITEM_KEY_FIELDS.get((key[0], key[2]))
    if fields is None:
        return "unknown zone or type"
    if any(v for i, v in enumerate(key) if i not in fields):
        return "a field that must be zero is set"
    if key[0] == fmt.ZONE_FS and key[2] == fmt.FS_DATA_EXTENT and \
            (key[4] == 0 or key[4] > key[3] + 1):
        return "extent length 0 or starting before block 0"
    return None


def _tree_items(tree: Btree, name: str, problems: Problems, *, max_seq: int | None = None,
                items: bool = False) -> list[tuple[fmt.Key, fmt.Item]]:
    """The items of a tree in order; with `items`, each key and seq is checked as an
    fs_root/log tree item (shape, seq at most `max_seq`)."""
    out: list[tuple[fmt.Key, fmt.Item]] = []
    prev = None
    try:
        for key, item in tree.items(fmt.KEY_MIN, fmt.KEY_MAX):
            if prev is not None and key <= prev:
                problems.add(f"{name}: key {fmt.format_key(key)} not after "
                             f"{fmt.format_key(prev)}")
            prev = key
            if items:
                why = _item_key_problem(key)
                if why is not None:
                    problems.add(f"{name}: item key {fmt.format_key(key)}: {why}")
                if max_seq is not None and item.seq > max_seq:
                    problems.add(f"{name}: item {fmt.format_key(key)} has seq {item.seq}, "
                                 f"above {max_seq}")
            out.append((key, item))
    except (FsError, StaleBlock) as e:
        problems.add(f"{name}: unreadable: {e}")
    return out


def _tree_blocks(tree: Btree, name: str, problems: Problems) -> list[int]:
    try:
        return [ref.blkno for ref, _level in tree.block_refs()]
    except (FsError, StaleBlock) as e:
        problems.add(f"{name}: unreadable block: {e}")
        return []


def _check_accounting(dev_name: str, first: int, total: int,
                      claims: list[tuple[int, int, str, str]], problems: Problems) -> dict:
    """Every block in [first, total) claimed exactly once by (start, len, owner, kind)
    extents; returns the blocks per kind (used, free, pending, lent) and the total."""
    counts = dict.fromkeys(("used", "free", "pending", "lent"), 0)
    counts["total"] = total - first
    pos = first
    prev_end, prev_owner = first, None
    for start, length, owner, kind in sorted(c for c in claims if c[1] > 0):
        counts[kind] += length
        end = start + length
        if start < first or end > total:
            problems.add(f"{dev_name}: {owner} extent {start}+{length} outside the device "
                         f"[{first}, {total})")
        if start < prev_end and prev_owner is not None:
            problems.add(f"{dev_name}: blocks {start}..{min(end, prev_end) - 1} are both "
                         f"{prev_owner} and {owner}")
        if start > pos:
            problems.add(f"{dev_name}: blocks {pos}..{start - 1} leaked (neither used nor free)")
        if end > prev_end:
            prev_end, prev_owner = end, owner
        pos = max(pos, end)
    if pos < total:
        problems.add(f"{dev_name}: blocks {pos}..{total - 1} leaked (neither used nor free)")
    return counts


def _merge(sources: list[list[tuple[fmt.Key, fmt.Item]]]) -> Iterator[tuple[fmt.Key, bytes]]:
    """Newest seq wins per key; tombstones hide."""
    merged = heapq.merge(*[[(k, -it.seq, i, it) for k, it in src]
                           for i, src in enumerate(sources)])
    last = None
    for key, _negseq, _i, item in merged:
        if key == last:
            continue
        last = key
        if not item.deleted:
            yield key, item.value


def check(meta_path: str, data_path: str) -> list[str]:
    """Check an unmounted volume; the problems found (empty when clean)."""
    try:
        meta_dev = Device(meta_path, readonly=True)
        data_dev = Device(data_path, readonly=True)
    except OSError as e:
        return [f"cannot open devices: {e}"]
    try:
        return check_devices(meta_dev, data_dev)["problems"]
    finally:
        meta_dev.close()
        data_dev.close()


def check_devices(meta_dev, data_dev=None, *, namespace: bool = True) -> dict:
    """Check open devices (a Device or an in-memory MemDevice).

    Returns {"problems": [...], "meta": counts, "data": counts} where counts are the blocks
    used, free, pending, lent and the total of each device.  Without a data device the data
    super is not checked; `namespace=False` skips the item checks (step 4), for tests that
    put arbitrary items in the trees.
    """
    problems = Problems()
    result: dict = {"problems": problems, "meta": {}, "data": {}}
    try:
        sb = read_super(meta_dev)
    except FsError as e:
        problems.add(f"meta device super: {e.msg or e}")
        return result
    if not sb.flags & fmt.SUPER_FLAG_META:
        problems.add("meta device super is not flagged META")
    if data_dev is not None:
        try:
            dsb = read_super(data_dev)
        except FsError as e:
            problems.add(f"data device super: {e.msg or e}")
            return result
        if dsb.flags & fmt.SUPER_FLAG_META:
            problems.add("data device super is flagged META")
        if sb.fsid != dsb.fsid:
            problems.add(f"fsid differs: meta {sb.fsid:016x} data {dsb.fsid:016x}")

    for slot in sorted(sb.quorum_slots):
        try:
            read_quorum_block(meta_dev, slot, sb.fsid)
        except FsError as e:
            problems.add(f"quorum slot {slot}: {e.msg or e}")

    blocks = MetaBlocks(meta_dev, sb.fsid, cache_blocks=64)
    meta_claims: list[tuple[int, int, str, str]] = []
    data_claims: list[tuple[int, int, str, str]] = []

    # server trees
    logs = Btree(blocks, sb.logs_root)
    log_records: list[fmt.LogTrees] = []
    merge_status: tuple[fmt.Key, list[tuple[int, int]]] | None = None
    for key, item in _tree_items(logs, "logs_root", problems):
        if item.deleted:
            continue
        if key == fmt.log_merge_status_key():
            try:
                merge_status = fmt.unpack_log_merge_status(item.value)
            except Exception as e:  # noqa: BLE001 - a bad record is a problem to report
                problems.add(f"logs_root: bad log merge status: {e}")
            continue
        try:
            log_records.append(fmt.unpack_log_trees(item.value))
        except Exception as e:  # noqa: BLE001 - a bad record is a problem to report
            problems.add(f"logs_root: bad log_trees record at {fmt.format_key(key)}: {e}")
    _tree_items(Btree(blocks, sb.mounted_clients), "mounted_clients", problems)
    for name, root in (("fs_root", sb.fs_root), ("logs_root", sb.logs_root),
                       ("mounted_clients", sb.mounted_clients), ("srch_root", sb.srch_root)):
        for b in _tree_blocks(Btree(blocks, root), name, problems):
            meta_claims.append((b, 1, f"used by {name}", "used"))

    # the item trees
    sources = [_tree_items(Btree(blocks, sb.fs_root), "fs_root", problems, max_seq=sb.seq,
                           items=True)]
    for lt in log_records:
        name = f"log tree rid {lt.rid:016x} nr {lt.nr}"
        tree = Btree(blocks, lt.item_root)
        sources.append(_tree_items(tree, name, problems, items=True,
                                   max_seq=min(sb.seq, lt.max_item_seq or sb.seq)))
        for b in _tree_blocks(tree, name, problems):
            meta_claims.append((b, 1, f"used by {name}", "used"))
        for st, n in lt.meta_avail:
            meta_claims.append((st, n, f"lent to rid {lt.rid:016x}", "lent"))
        for st, n in lt.data_avail:
            data_claims.append((st, n, f"lent to rid {lt.rid:016x}", "lent"))

    # srch files (srch_root's and each log tree's) and compactions' lent blocks
    meta_claims += srch.fsck_claims(blocks, sb, log_records, problems)

    # free and pending extent lists
    for name, ref, claims, kind in (("meta_free", sb.meta_free, meta_claims, "free"),
                                    ("meta_pending", sb.meta_pending, meta_claims, "pending"),
                                    ("data_free", sb.data_free, data_claims, "free"),
                                    ("data_pending", sb.data_pending, data_claims, "pending")):
        if ref.blkno == 0:
            continue
        try:
            extents, chain = read_extent_list(blocks, ref)
        except (FsError, StaleBlock) as e:
            problems.add(f"{name}: unreadable extent list: {e}")
            continue
        for b in chain:
            meta_claims.append((b, 1, f"{name} list block", "used"))
        for st, n in extents:
            claims.append((st, n, f"{kind} ({name})", kind))

    # .totl. deltas add up (fs/totl.py): fs_root's sums plus each tree's items past what
    # a merge in flight already put in fs_root; every other zone is newest-wins
    merged_upto = {tuple(t): merge_status[0] for t in merge_status[1]} if merge_status else {}
    for src in sources:
        for k, it in src:
            if k[0] == fmt.ZONE_XATTR_TOTL and len(it.value) != fmt.TOTL_VAL.size:
                problems.add(f"totl item {fmt.format_key(k)}: value of {len(it.value)} bytes")
    sources = [[(k, it) for k, it in src if k[0] != fmt.ZONE_XATTR_TOTL
                or len(it.value) == fmt.TOTL_VAL.size] for src in sources]
    totals = totl.sum_trees(
        [(k, it) for k, it in sources[0] if k[0] == fmt.ZONE_XATTR_TOTL],
        [([(k, it) for k, it in src if k[0] == fmt.ZONE_XATTR_TOTL],
          merged_upto.get((lt.rid, lt.nr)))
         for lt, src in zip(log_records, sources[1:], strict=True)])
    sources = [[(k, it) for k, it in src if k[0] != fmt.ZONE_XATTR_TOTL] for src in sources]
    items = dict(_merge(sources))
    _data_claims(items, data_claims)
    if namespace:
        _check_items(items, problems)
        _check_totals(items, totals, problems)
        _check_next_ino(sb, items, problems)

    result["meta"] = _check_accounting("meta device", fmt.META_DEV_START_BLKNO,
                                       sb.total_meta_blocks, meta_claims, problems)
    result["data"] = _check_accounting("data device", fmt.DATA_DEV_START_BLKNO,
                                       sb.total_data_blocks, data_claims, problems)
    for dev, recorded in (("meta", sb.free_meta_blocks), ("data", sb.free_data_blocks)):
        if recorded != result[dev]["free"]:
            problems.add(f"super free_{dev}_blocks {recorded} but the free list holds "
                         f"{result[dev]['free']}")
    return result


def _data_claims(items: dict[fmt.Key, bytes], data_claims: list) -> None:
    """The data blocks mapped by the merged extent items are used."""
    for key, val in items.items():
        if key[0] == fmt.ZONE_FS and key[2] == fmt.FS_DATA_EXTENT:
            try:
                blkno, _flags = fmt.unpack_extent_val(val)
            except Exception:  # noqa: BLE001 - reported by the item checks
                continue
            if blkno:
                data_claims.append((blkno, key[4], f"data of inode {key[1]}", "used"))


def _key_ino(key: fmt.Key) -> int | None:
    """The inode number an item belongs to (None for items of no inode)."""
    if key[0] == fmt.ZONE_FS:
        return key[1]
    if key[0] == fmt.ZONE_ORPHAN:
        return key[3]
    if key[0] == fmt.ZONE_INODE_INDEX:
        return key[4]
    return None


def _check_totals(items: dict[fmt.Key, bytes],
                  totals: dict[tuple[int, int, int], tuple[int, int]],
                  problems: Problems) -> None:
    """Every (a, b, c) total and count equal the sum of the values and the number of the
    ``.totl.`` xattrs naming them (values are in part 0: fs/totl.py)."""
    want: dict[tuple[int, int, int], list[int]] = defaultdict(lambda: [0, 0])
    hdr = fmt.XATTR_HDR
    for key, val in items.items():
        if key[0] != fmt.ZONE_FS or key[2] != fmt.FS_XATTR or key[5] != 0 or \
                len(val) < hdr.size:
            continue
        nlen, vlen = hdr.unpack_from(val, 0)
        name = bytes(val[hdr.size:hdr.size + nlen])
        if not totl.is_totl_name(name):
            continue
        try:
            abc = parse_totl_name(name)
            v = parse_u64(bytes(val[hdr.size + nlen:hdr.size + nlen + vlen]))
        except FsError:
            problems.add(f"xattr {name!r} of inode {key[1]}: malformed .totl. name or value")
            continue
        w = want[abc]
        w[0] = (w[0] + v) & fmt.U64_MAX
        w[1] += 1
    for abc in sorted(set(want) | set(totals)):
        w = want.get(abc, [0, 0])
        got = totals.get(abc, (0, 0))
        if (w[0], w[1] & fmt.U64_MAX) != got:
            problems.add(f"xattr total {abc[0]}.{abc[1]}.{abc[2]} is {got[0]}, {got[1]}; "
                         f"its .totl. xattrs sum to {w[0]}, {w[1]}")


def _check_next_ino(sb: fmt.Super, items: dict[fmt.Key, bytes], problems: Problems) -> None:
    inos = [i for i in map(_key_ino, items) if i is not None]
    if inos and max(inos) >= sb.next_ino:
        problems.add(f"super next_ino {sb.next_ino} is not above inode {max(inos)}, which is "
                     f"in use: new inodes would reuse live numbers")


def _check_xattrs(xattrs: dict[tuple[int, int, int], dict[int, bytes]],
                  inodes: dict[int, fmt.Inode], problems: Problems,
                  indx_names: dict[tuple[int, int], tuple[tuple[int, int], bytes]]) -> None:
    """Each xattr's parts (fs/xattr.py): an existing inode, an id below its next_xattr_id,
    parts 0..n-1 exactly as many as the header's lengths need, and the key's hash the
    name's (getxattr finds a name by its hash: listxattr would show a name getxattr misses).
    Collects the ``.indx.`` ones into indx_names: (ino, id) -> ((major, minor), name).
    """
    hdr = fmt.XATTR_HDR
    for (ino, name_hash, xid), parts in xattrs.items():
        where = f"xattr (hash {name_hash:016x}, id {xid}) of inode {ino}"
        inode = inodes.get(ino)
        if inode is None:
            problems.add(f"{where}: the inode does not exist")
        elif xid >= inode.next_xattr_id:
            problems.add(f"{where}: id not below the inode's next_xattr_id "
                         f"{inode.next_xattr_id}")
        first = parts.get(0)
        if first is None or len(first) < hdr.size:
            problems.add(f"{where}: no first part")
            continue
        nlen, vlen = hdr.unpack_from(first, 0)
        need = (hdr.size + nlen + vlen + fmt.XATTR_PART_SIZE - 1) // fmt.XATTR_PART_SIZE
        data = b"".join(bytes(parts[i]) for i in sorted(parts))
        if sorted(parts) != list(range(need)) or len(data) != hdr.size + nlen + vlen:
            problems.add(f"{where}: parts {sorted(parts)} hold {len(data)} bytes, the header "
                         f"says {hdr.size + nlen + vlen} in {need} parts")
            continue
        name = data[hdr.size:hdr.size + nlen]
        if not name or fmt.hash64(name) != name_hash:
            problems.add(f"{where}: the key's hash is not the hash of its name {name!r}")
        pos = indx_pos(bytes(name))
        if pos is not None:
            indx_names[(ino, xid)] = (pos, bytes(name))


def _check_indx(indx: dict[tuple[int, int], list[tuple[int, int]]],
                indx_names: dict[tuple[int, int], tuple[tuple[int, int], bytes]],
                problems: Problems) -> None:
    """Every .indx. xattr (ino, id) -> ((major, minor), name) has exactly its index item;
    every index item (ino, id) -> [(major, minor)] an .indx. xattr naming its position."""
    for (ino, xid), (pos, name) in indx_names.items():
        if indx.get((ino, xid)) != [pos]:
            problems.add(f"xattr {name!r} (id {xid}) of inode {ino}: index items "
                         f"{indx.get((ino, xid), [])}, not [{pos}]")
    for (ino, xid), poss in indx.items():
        if (ino, xid) not in indx_names:
            problems.add(f"xattr index items {poss} of inode {ino} id {xid}: no .indx. "
                         f"xattr of that id")


def _check_items(items: dict[fmt.Key, bytes], problems: Problems) -> None:
    inodes: dict[int, fmt.Inode] = {}
    dirents: dict[tuple[int, int], fmt.Dirent] = {}  # (dir, pos) -> dirent from DIRENT items
    readdirs: dict[tuple[int, int], fmt.Dirent] = {}
    backrefs: dict[tuple[int, int, int], fmt.Dirent] = {}  # (target, dir, pos)
    orphans: set[int] = set()
    meta_index: dict[int, list[int]] = defaultdict(list)
    data_index: dict[int, list[int]] = defaultdict(list)
    online: dict[int, int] = defaultdict(int)
    offline: dict[int, int] = defaultdict(int)
    extents_by_ino: dict[int, list[tuple[int, int]]] = defaultdict(list)
    xattrs: dict[tuple[int, int, int], dict[int, bytes]] = defaultdict(dict)  # parts
    offline_ends: dict[int, int] = {}  # ino -> block after its last offline block
    indx: dict[tuple[int, int], list[tuple[int, int]]] = defaultdict(list)  # (ino, id)

    for key, val in items.items():
        zone, first, typ, second, third, _fourth = key
        try:
            if zone == fmt.ZONE_FS and typ == fmt.FS_INODE:
                inodes[first] = fmt.unpack_inode(first, val)
            elif zone == fmt.ZONE_FS and typ == fmt.FS_DIRENT:
                d = fmt.unpack_dirent(val)
                if d.hash != second or d.pos != third:
                    problems.add(f"dirent {fmt.format_key(key)} value disagrees with its key")
                if fmt.hash64(d.name) != d.hash:
                    problems.add(f"dirent {d.name!r} in dir {first} has a wrong name hash")
                dirents[(first, d.pos)] = d
            elif zone == fmt.ZONE_FS and typ == fmt.FS_READDIR:
                d = fmt.unpack_dirent(val)
                if d.pos != second:
                    problems.add(f"readdir {fmt.format_key(key)} value has pos {d.pos}")
                readdirs[(first, second)] = d
            elif zone == fmt.ZONE_FS and typ == fmt.FS_LINK_BACKREF:
                d = fmt.unpack_dirent(val)
                if d.ino != first or d.pos != third:
                    problems.add(f"link backref {fmt.format_key(key)} value names inode "
                                 f"{d.ino} pos {d.pos}")
                backrefs[(first, second, third)] = d
            elif zone == fmt.ZONE_FS and typ == fmt.FS_DATA_EXTENT:
                blkno, flags = fmt.unpack_extent_val(val)
                length = third
                start_iblock = second - length + 1
                extents_by_ino[first].append((start_iblock, length))
                if flags & ~(fmt.EXTENT_FLAG_OFFLINE | fmt.EXTENT_FLAG_UNWRITTEN):
                    problems.add(f"extent {fmt.format_key(key)}: unknown flags {flags:#x}")
                if not blkno and not flags & fmt.EXTENT_FLAG_OFFLINE:
                    problems.add(f"extent {fmt.format_key(key)}: unmapped but not offline")
                if blkno and not flags & (fmt.EXTENT_FLAG_UNWRITTEN | fmt.EXTENT_FLAG_OFFLINE):
                    online[first] += length
                if flags & fmt.EXTENT_FLAG_OFFLINE:
                    offline[first] += length
                    offline_ends[first] = max(offline_ends.get(first, 0), second + 1)
            elif zone == fmt.ZONE_FS and typ == fmt.FS_XATTR:
                xattrs[(first, second, third)][_fourth] = val
            elif zone == fmt.ZONE_ORPHAN:
                orphans.add(second)
            elif zone == fmt.ZONE_XATTR_INDX:
                major, minor, ino, xid = fmt.unpack_xattr_indx_key(key)
                indx[(ino, xid)].append((major, minor))
                if val:
                    problems.add(f"xattr index item {fmt.format_key(key)} has a value")
            elif zone == fmt.ZONE_INODE_INDEX and typ == fmt.INODE_INDEX_META_SEQ:
                meta_index[third].append(second)
            elif zone == fmt.ZONE_INODE_INDEX and typ == fmt.INODE_INDEX_DATA_SEQ:
                data_index[third].append(second)
        except Exception as e:  # noqa: BLE001 - undecodable values are problems to report
            problems.add(f"item {fmt.format_key(key)}: undecodable value: {e}")

    if fmt.ROOT_INO not in inodes:
        problems.add("the root inode (1) is missing")
    indx_names: dict[tuple[int, int], tuple[tuple[int, int], bytes]] = {}
    _check_xattrs(xattrs, inodes, problems, indx_names)
    _check_indx(indx, indx_names, problems)

    links: dict[int, int] = defaultdict(int)
    subdirs: dict[int, int] = defaultdict(int)
    dir_size: dict[int, int] = defaultdict(int)
    for (dir_ino, pos), d in dirents.items():
        where = f"entry {d.name!r} (pos {pos}) of dir {dir_ino}"
        parent = inodes.get(dir_ino)
        if parent is None:
            problems.add(f"{where}: the directory inode does not exist")
        elif not stat.S_ISDIR(parent.mode):
            problems.add(f"{where}: the parent is not a directory")
        elif pos >= parent.next_readdir_pos:
            problems.add(f"{where}: position not below next_readdir_pos "
                         f"{parent.next_readdir_pos}")
        if readdirs.get((dir_ino, pos)) != d:
            problems.add(f"{where}: missing or different READDIR item")
        if backrefs.get((d.ino, dir_ino, pos)) != d:
            problems.add(f"{where}: missing or different LINK_BACKREF item")
        target = inodes.get(d.ino)
        if target is None:
            problems.add(f"{where}: names inode {d.ino}, which does not exist")
        else:
            links[d.ino] += 1
            if fmt.mode_to_dtype(target.mode) != d.dtype:
                problems.add(f"{where}: type {d.dtype} differs from inode {d.ino}'s mode")
            if stat.S_ISDIR(target.mode):
                subdirs[dir_ino] += 1
        dir_size[dir_ino] += len(d.name)
    for (dir_ino, pos), d in readdirs.items():
        if (dir_ino, pos) not in dirents:
            problems.add(f"READDIR item {d.name!r} (pos {pos}) of dir {dir_ino} has no DIRENT")
    for target, dir_ino, pos in backrefs:
        if (dir_ino, pos) not in dirents:
            problems.add(f"LINK_BACKREF of inode {target} from dir {dir_ino} pos {pos} has no "
                         f"DIRENT")

    for ino, inode in inodes.items():
        expect = links[ino]
        if stat.S_ISDIR(inode.mode):
            expect = (2 if ino == fmt.ROOT_INO or links[ino] else 0) + subdirs[ino]
            if links[ino] > 1:
                problems.add(f"dir {ino}: named by {links[ino]} entries")
            if inode.size != dir_size[ino]:
                problems.add(f"dir {ino}: size {inode.size} but its names total {dir_size[ino]}")
        if inode.nlink != expect:
            problems.add(f"inode {ino}: nlink {inode.nlink} but {expect} expected from its "
                         f"entries")
        if inode.nlink == 0 and ino not in orphans:
            problems.add(f"inode {ino}: no links and no orphan item")
        if stat.S_ISREG(inode.mode):
            if inode.online_blocks != online[ino]:
                problems.add(f"inode {ino}: online_blocks {inode.online_blocks} but extents "
                             f"map {online[ino]}")
            if inode.offline_blocks != offline[ino]:
                problems.add(f"inode {ino}: offline_blocks {inode.offline_blocks} but extents "
                             f"hold {offline[ino]}")
            if data_index.get(ino, []) != ([inode.data_seq] if inode.data_seq else []):
                problems.add(f"inode {ino}: data_seq index items {data_index.get(ino, [])} "
                             f"but data_seq {inode.data_seq}")
        if meta_index.get(ino, []) != [inode.meta_seq]:
            problems.add(f"inode {ino}: meta_seq index items {meta_index.get(ino, [])} but "
                         f"meta_seq {inode.meta_seq}")
        if ino in offline_ends and not inode.flags & fmt.INODE_FLAG_TRUNCATE:
            nblk = (inode.size + fmt.DATA_BLOCK_SIZE - 1) // fmt.DATA_BLOCK_SIZE
            if offline_ends[ino] > nblk:
                problems.add(f"inode {ino}: offline extents reach block "
                             f"{offline_ends[ino] - 1} past its size {inode.size}")
        exts = sorted(extents_by_ino.get(ino, []))
        for (s1, n1), (s2, _n2) in zip(exts, exts[1:], strict=False):
            if s1 + n1 > s2:
                problems.add(f"inode {ino}: extents at blocks {s1} and {s2} overlap")
    for ino in orphans:
        if ino in inodes and inodes[ino].nlink:
            problems.add(f"inode {ino}: orphan item but {inodes[ino].nlink} links")
    for ino, seqs in meta_index.items():
        if ino not in inodes:
            problems.add(f"meta_seq index items {seqs} for missing inode {ino}")
    for ino, seqs in data_index.items():
        if ino not in inodes:
            problems.add(f"data_seq index items {seqs} for missing inode {ino}")
    for ino in extents_by_ino:
        if ino not in inodes:
            problems.add(f"data extents of missing inode {ino}")
