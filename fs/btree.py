"""The copy-on-write btree of items: lookups, ranges, and transactional changes.

Owns the tree algorithms over btree blocks (whose byte layout fs.format owns): descending
by key, splitting full blocks, joining or rebalancing blocks under a quarter full,
growing and shrinking the height, and copy-on-write.

Copy-on-write: a block written by an earlier transaction is never changed.  The first
change to it in a transaction copies it to a block from alloc() and passes its old blkno
to free(); the copy (and every block allocated in the transaction) is "dirty" and changes
in place in memory until flush() writes every dirty block with the transaction's seq and
returns the new root.  Readers of older roots keep seeing the old blocks until the
allocator lets the freed ones be reused.

Parents key each child by the largest key in its subtree, so a key routes to the first
child whose key is >= it (the last child for keys beyond every key).

Parsed clean nodes are shared by every Btree on the same MetaBlocks (its parsed cache)
and are never mutated; dirty nodes belong to one Btree until its flush.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterator

from fs import format as fmt
from fs.format import (
    BTREE_BLOCK_PAYLOAD,
    BTREE_ENTRY_OVERHEAD,
    BTREE_MAX_HEIGHT,
    BTREE_PARENT_ENTRY_SIZE,
    EMPTY_ROOT,
    KEY,
    KEY_MAX,
    KEY_MIN,
    MAGIC_BTREE,
    MAX_VAL_SIZE,
    BlockRef,
    BtreeRoot,
    Item,
    Key,
)

# leaf values are (seq, flags, value) tuples: cheaper than Items, and immutable so a
# parsed node can be shared safely; Items are built only when handed to callers
Val = tuple[int, int, bytes]


class Node:
    """One btree block in memory."""

    __slots__ = ("blkno", "seq", "level", "keys", "vals", "size", "dirty")

    def __init__(self, blkno: int, seq: int, level: int, keys: list[Key], vals: list,
                 size: int, dirty: bool):
        self.blkno = blkno
        self.seq = seq
        self.level = level
        self.keys = keys  # sorted
        self.vals = vals  # leaves: Val tuples; parents: child BlockRefs
        self.size = size  # payload bytes the entries take packed
        self.dirty = dirty  # changed in the open transaction, not yet written

    @property
    def ref(self) -> BlockRef:
        return BlockRef(self.blkno, self.seq)

    def entry_size(self, i: int) -> int:
        if self.level:
            return BTREE_PARENT_ENTRY_SIZE
        return BTREE_ENTRY_OVERHEAD + len(self.vals[i][2])


def _parse_node(blocks, blkno: int, buf: bytes, seq: int) -> Node:
    try:
        level, keys, vals, used = fmt.unpack_btree_block(buf)
    except ValueError as e:
        raise blocks.corrupt(blkno, f"malformed btree block: {e}") from e
    return Node(blkno, seq, level, keys, vals, used, False)


class Btree:
    """A copy-on-write btree of items rooted at a BtreeRoot on a MetaBlocks."""

    def __init__(self, blocks, root: BtreeRoot, *, capacity: int | None = None):
        # capacity: payload bytes per block; smaller values are a testing knob to get tall
        # trees from few items (the blocks stay valid format)
        self.blocks = blocks
        self.root = root  # as of the last flush (or construction)
        self._cur = root  # the root including this transaction's changes
        self._cap = capacity or BTREE_BLOCK_PAYLOAD
        self._low = self._cap // 4
        self._max_val = min(MAX_VAL_SIZE, (self._cap - 2 * BTREE_ENTRY_OVERHEAD) // 3)
        self._seq: int | None = None
        self._alloc: Callable[[], int] | None = None
        self._free: Callable[[int], None] | None = None
        self._dirty: dict[int, Node] = {}  # blkno -> dirty node

    # ------------------------------------------------------------------ node access

    def _node(self, ref: BlockRef, level: int) -> Node:
        n = self._dirty.get(ref.blkno)
        if n is None or n.seq != ref.seq:
            seq = ref.seq
            blocks = self.blocks
            n = blocks.read_parsed(ref, MAGIC_BTREE,
                                   lambda blkno, buf: _parse_node(blocks, blkno, buf, seq))
        if n.level != level:
            raise self.blocks.corrupt(ref.blkno, f"btree block at level {n.level}, its "
                                                 f"parent expects level {level}")
        return n

    def _root_node(self) -> Node | None:
        root = self._cur
        if root.height == 0:
            return None
        if root.height > BTREE_MAX_HEIGHT:
            raise self.blocks.corrupt(root.ref.blkno, f"btree root height {root.height}")
        return self._node(root.ref, root.height - 1)

    @property
    def current_root(self) -> BtreeRoot:
        """The root including unflushed changes (refs to dirty blocks are not on disk)."""
        return self._cur

    @property
    def dirty(self) -> bool:
        return bool(self._dirty)

    def nr_dirty(self) -> int:
        """Blocks the next flush() will write."""
        return len(self._dirty)

    # ------------------------------------------------------------------ reads

    def lookup(self, key: Key) -> Item | None:
        node = self._root_node()
        if node is None:
            return None
        while node.level:
            i = bisect_left(node.keys, key)
            if i == len(node.keys):
                return None  # beyond the largest key in the tree
            node = self._node(node.vals[i], node.level - 1)
        i = bisect_left(node.keys, key)
        if i < len(node.keys) and node.keys[i] == key:
            return Item(*node.vals[i])
        return None

    def _find_leaf(self, key: Key) -> tuple[Node | None, Key, Key]:
        """The leaf that holds or would hold key, and its inclusive key range."""
        lo, hi = KEY_MIN, KEY_MAX
        node = self._root_node()
        if node is None:
            return None, lo, hi
        while node.level:
            keys = node.keys
            i = bisect_left(keys, key)
            if i >= len(keys) - 1:
                i = len(keys) - 1  # the last child also takes keys beyond its own
            else:
                hi = keys[i]
            if i > 0:
                lo = fmt.key_next(keys[i - 1])
            node = self._node(node.vals[i], node.level - 1)
        return node, lo, hi

    def leaf_range(self, key: Key) -> tuple[Key, Key]:
        _, lo, hi = self._find_leaf(key)
        return lo, hi

    def items(self, start: Key, end: Key) -> Iterator[tuple[Key, Item]]:
        """Items with start <= key <= end, ascending.

        Each leaf is re-found from the root, so changes made while iterating are safe (the
        iteration continues after the last key it returned)."""
        cursor = start
        while cursor <= end:
            leaf, _lo, hi = self._find_leaf(cursor)
            if leaf is None:
                return
            keys = leaf.keys
            i = bisect_left(keys, cursor)
            j = bisect_right(keys, end)
            batch = [(keys[x], Item(*leaf.vals[x])) for x in range(i, j)]
            yield from batch
            if hi >= end or hi == KEY_MAX:
                return
            cursor = fmt.key_next(hi)

    def block_refs(self) -> Iterator[tuple[BlockRef, int]]:
        """Every block reachable from the current root and its level, parents first."""
        root = self._cur
        if root.height == 0:
            return
        stack = [(root.ref, root.height - 1)]
        while stack:
            ref, level = stack.pop()
            yield ref, level
            if level:
                node = self._node(ref, level)
                stack.extend((r, level - 1) for r in reversed(node.vals))

    # ------------------------------------------------------------------ transactions

    def begin(self, seq: int, alloc: Callable[[], int], free: Callable[[int], None]) -> None:
        if self._dirty:
            raise RuntimeError("btree begin() with unflushed changes")
        self._seq = seq
        self._alloc = alloc
        self._free = free

    def _check_txn(self) -> int:
        if self._seq is None:
            raise RuntimeError("btree change outside a transaction: call begin() first")
        return self._seq

    def _new_node(self, level: int) -> Node:
        seq = self._check_txn()
        blkno = self._alloc()  # type: ignore[misc]
        n = Node(blkno, seq, level, [], [], 0, True)
        self._dirty[blkno] = n
        return n

    def _cow(self, node: Node) -> Node:
        """A dirty node to change in place of node (itself if already dirty)."""
        if node.dirty:
            return node
        seq = self._check_txn()
        blkno = self._alloc()  # type: ignore[misc]
        # the old block stays intact on disk for readers of older roots
        self._free(node.blkno)  # type: ignore[misc]
        n = Node(blkno, seq, node.level, list(node.keys), list(node.vals), node.size, True)
        self._dirty[blkno] = n
        return n

    def _drop(self, ref: BlockRef) -> None:
        """Free a block that leaves the tree."""
        n = self._dirty.get(ref.blkno)
        if n is not None and n.seq == ref.seq:
            del self._dirty[ref.blkno]
            n.dirty = False
            n.keys, n.vals = [], []  # catch any use of a dropped node
        self._free(ref.blkno)  # type: ignore[misc]

    def _cow_child(self, parent: Node, i: int) -> Node:
        child = self._node(parent.vals[i], parent.level - 1)
        if not child.dirty:
            child = self._cow(child)
            parent.vals[i] = child.ref
        return child

    def _write_path(self, key: Key) -> list[tuple[Node, int]]:
        """COW the path to key's leaf: [(node, child index)..., (leaf, -1)]."""
        root = self._root_node()
        assert root is not None
        if not root.dirty:
            root = self._cow(root)
            self._cur = BtreeRoot(root.ref, self._cur.height)
        path = []
        node = root
        while node.level:
            i = bisect_left(node.keys, key)
            if i == len(node.keys):
                i -= 1
            path.append((node, i))
            node = self._cow_child(node, i)
        path.append((node, -1))
        return path

    def insert(self, key: Key, item: Item) -> None:
        """Insert or replace the item at key."""
        self._check_txn()
        value = bytes(item.value)
        if len(value) > self._max_val:
            raise ValueError(f"item value of {len(value)} bytes > {self._max_val}")
        try:
            KEY.pack(*key)
        except Exception as e:  # a malformed key is a caller bug: fail now, not at flush
            raise ValueError(f"bad key {key!r}: {e}") from e
        key = tuple(key)  # type: ignore[assignment]
        val: Val = (item.seq, item.flags, value)
        esize = BTREE_ENTRY_OVERHEAD + len(value)
        if self._cur.height == 0:
            leaf = self._new_node(0)
            leaf.keys.append(key)
            leaf.vals.append(val)
            leaf.size = esize
            self._cur = BtreeRoot(leaf.ref, 1)
            return
        path = self._write_path(key)
        leaf = path[-1][0]
        i = bisect_left(leaf.keys, key)
        if i < len(leaf.keys) and leaf.keys[i] == key:
            leaf.size += len(value) - len(leaf.vals[i][2])
            leaf.vals[i] = val
        else:
            leaf.keys.insert(i, key)
            leaf.vals.insert(i, val)
            leaf.size += esize
        self._fixup(path)

    def delete(self, key: Key) -> bool:
        """Remove the item at key entirely; False if there was none."""
        self._check_txn()
        if self.lookup(key) is None:
            return False  # don't dirty anything for a no-op
        path = self._write_path(key)
        leaf = path[-1][0]
        i = bisect_left(leaf.keys, key)
        leaf.size -= leaf.entry_size(i)
        del leaf.keys[i]
        del leaf.vals[i]
        self._fixup(path)
        return True

    # ------------------------------------------------------------------ balancing

    def _split(self, node: Node) -> Node:
        """Move the upper half (by bytes) of an overfull node into a new right sibling."""
        half = node.size // 2
        acc = 0
        i = 0
        n = len(node.keys)
        while i < n - 1:
            acc += node.entry_size(i)
            i += 1
            if acc >= half:
                break
        right = self._new_node(node.level)
        right.keys = node.keys[i:]
        right.vals = node.vals[i:]
        right.size = node.size - acc
        del node.keys[i:]
        del node.vals[i:]
        node.size = acc
        return right

    def _rebalance(self, parent: Node, pi: int, node: Node) -> None:
        """Join an underfull node with a sibling, or even them out if both can't fit."""
        si = pi - 1 if pi > 0 else pi + 1
        sib_ref = parent.vals[si]
        sib = self._node(sib_ref, node.level)
        if node.size + sib.size <= self._cap:
            # join into node (already dirty) so the sibling needs no copy, just freeing
            if si < pi:
                node.keys[:0] = sib.keys
                node.vals[:0] = sib.vals
            else:
                node.keys.extend(sib.keys)
                node.vals.extend(sib.vals)
            node.size += sib.size
            self._drop(sib_ref)
            del parent.keys[si]
            del parent.vals[si]
            parent.size -= BTREE_PARENT_ENTRY_SIZE
            pi = pi - 1 if si < pi else pi
            if node.keys:
                parent.keys[pi] = node.keys[-1]
            else:
                self._drop(node.ref)
                del parent.keys[pi]
                del parent.vals[pi]
                parent.size -= BTREE_PARENT_ENTRY_SIZE
            return
        # together they overflow a block: redistribute evenly instead
        sib = self._cow_child(parent, si)
        left, right = (sib, node) if si < pi else (node, sib)
        li = min(si, pi)
        keys = left.keys + right.keys
        vals = left.vals + right.vals
        total = left.size + right.size
        tmp = Node(0, 0, node.level, keys, vals, total, False)
        half = total // 2
        acc = 0
        i = 0
        while i < len(keys) - 1:
            acc += tmp.entry_size(i)
            i += 1
            if acc >= half:
                break
        left.keys, left.vals, left.size = keys[:i], vals[:i], acc
        right.keys, right.vals, right.size = keys[i:], vals[i:], total - acc
        parent.keys[li] = left.keys[-1]
        parent.keys[li + 1] = right.keys[-1]

    def _fixup(self, path: list[tuple[Node, int]]) -> None:
        """Restore the invariants bottom-up after a change in path's leaf."""
        for d in range(len(path) - 1, 0, -1):
            node = path[d][0]
            parent, pi = path[d - 1]
            if node.size > self._cap:
                right = self._split(node)
                parent.keys[pi] = node.keys[-1]
                parent.keys.insert(pi + 1, right.keys[-1])
                parent.vals.insert(pi + 1, right.ref)
                parent.size += BTREE_PARENT_ENTRY_SIZE
            elif node.size < self._low and len(parent.keys) > 1:
                self._rebalance(parent, pi, node)
            elif not node.keys:
                # an empty only child: drop it, its parent empties and is handled above
                self._drop(node.ref)
                del parent.keys[pi]
                del parent.vals[pi]
                parent.size -= BTREE_PARENT_ENTRY_SIZE
            else:
                parent.keys[pi] = node.keys[-1]
        root = path[0][0]
        height = self._cur.height
        if root.size > self._cap:
            right = self._split(root)
            if height + 1 > BTREE_MAX_HEIGHT:
                raise RuntimeError("btree height limit reached")
            top = self._new_node(root.level + 1)
            top.keys = [root.keys[-1], right.keys[-1]]
            top.vals = [root.ref, right.ref]
            top.size = 2 * BTREE_PARENT_ENTRY_SIZE
            self._cur = BtreeRoot(top.ref, height + 1)
            return
        # shrink: an empty root empties the tree, a parent root with one child yields to it
        ref = self._cur.ref
        while True:
            if not root.keys:
                self._drop(ref)
                self._cur = EMPTY_ROOT
                return
            if root.level and len(root.keys) == 1:
                child_ref = root.vals[0]
                self._drop(ref)
                height -= 1
                ref = child_ref
                root = self._node(child_ref, height - 1)
                self._cur = BtreeRoot(child_ref, height)
                continue
            return

    # ------------------------------------------------------------------ flush

    def flush(self) -> BtreeRoot:
        """Write every dirty block with the transaction's seq; returns the new root.

        The transaction ends: changes need a new begin()."""
        # every write first: if one fails the changes stay dirty and flush can be retried
        for node in self._dirty.values():
            buf = fmt.pack_btree_block(node.level, node.keys, node.vals)
            self.blocks.write(node.blkno, node.seq, MAGIC_BTREE, buf)
        for node in self._dirty.values():
            node.dirty = False
            # the parsed node is exactly what was written: save the reparse
            self.blocks.put_parsed(node.ref, MAGIC_BTREE, node)
        self._dirty.clear()
        self._seq = None
        self._alloc = self._free = None
        self.root = self._cur
        return self.root
