#
# A mount killed (kill -9) while it holds 100 unlinked files open leaves
# their orphan items in its committed log tree.  The next server fences
# and reclaims it, the merge brings the orphan items into fs_root, and
# the orphan scanner deletes every one of those inodes: they are no
# longer allocated, their data blocks are free again, and fsck finds
# the volume clean (no block leaked, no orphan without its inode).
# (tests/unit/test_orphan.py checks the same for a forced unmount, with
# the survivors' scanners deleting them.)
#
# It runs on the scratch volume, mounted alone (fsck needs it unmounted).
#
umask 022

t_require_commands scoutfs python3 stat findmnt umount

D="$T_MSCR/dir"
NR=100

# hold_unlinked DIR N: a process creates DIR/f0..N-1 with 16 KiB each,
# keeps them open, unlinks them, writes their inode numbers to $T_TMP.inos
# and waits to be killed ($holder); returns once they are all unlinked
hold_unlinked()
{
	rm -f "$T_TMP.ready"
	python3 - "$1" "$2" "$T_TMP.inos" "$T_TMP.ready" > /dev/null 2>&1 <<-'PYEOF' &
	import os, sys, time
	d, nr, inos, ready = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
	fds = []
	with open(inos, "w") as f:
	    for i in range(nr):
	        p = os.path.join(d, f"f{i}")
	        fd = os.open(p, os.O_CREAT | os.O_RDWR, 0o644)
	        os.write(fd, b"o" * 16384)
	        print(os.fstat(fd).st_ino, file=f)
	        os.unlink(p)
	        fds.append(fd)
	open(ready, "w").close()
	while True:
	    time.sleep(1)
	PYEOF
	holder=$!
	t_wait_until_timeout 60 "test -e '$T_TMP.ready'"
}

# how many of the inodes in $T_TMP.inos are still allocated
still_allocated()
{
	local left=0
	local ino

	while read -r ino; do
		[ -n "$(scoutfs get-allocated-inos -i "$ino" -s -p "$T_MSCR")" ] && left=$((left + 1))
	done < "$T_TMP.inos"
	echo "$left"
}

t_scratch_mkfs -A
t_scratch_mount -o orphan_scan_delay_ms=500
mkdir "$D"
scoutfs sync -p "$T_MSCR"
free_before=$(stat -f -c '%f' "$T_MSCR")

echo "== $NR files open and unlinked, synced"
hold_unlinked "$D" "$NR"
scoutfs sync -p "$T_MSCR"
echo "names left: $(ls -A "$D" | wc -l)"
first=$(head -1 "$T_TMP.inos")
echo "first inode allocated: $(scoutfs get-allocated-inos -i "$first" -s -p "$T_MSCR" | wc -l)"
echo "blocks in use: $(( free_before - $(stat -f -c '%f' "$T_MSCR") >= NR * 4 ))"

echo "== kill -9 the mount daemon"
pid=$(t_daemon_pid SCR)
test -n "$pid" || t_fail "couldn't find the mount daemon of $T_MSCR"
kill -9 "$pid"
while kill -0 "$pid" 2>/dev/null; do
	sleep .1
done
kill -9 "$holder"
wait "$holder" 2>/dev/null
umount -l "$T_MSCR" 2>/dev/null
echo "mounted: $(findmnt -n "$T_MSCR" | wc -l)"

echo "== remounted: reclaim, merge and the scanner delete them"
t_scratch_mount -o orphan_scan_delay_ms=500
t_wait_until_timeout 90 "[ \$(t_counter inode_deleted SCR) -ge $NR ]"
echo "deleted: $(t_counter inode_deleted SCR)"
echo "reclaimed open logs: $(( $(t_counter reclaimed_open_logs SCR) > 0 ))"
echo "still allocated: $(still_allocated)"
scoutfs sync -p "$T_MSCR"
echo "blocks free again: $([ "$(stat -f -c '%f' "$T_MSCR")" == "$free_before" ] && echo yes || echo no)"

rmdir "$D"
t_scratch_umount

echo "== fsck is clean"
scoutfs fsck "$T_EX_META_DEV" "$T_EX_DATA_DEV" 2>&1 | \
	sed -e "s@$T_EX_META_DEV@META@g" -e "s@$T_EX_DATA_DEV@DATA@g"
echo "rc: ${PIPESTATUS[0]}"

t_pass
