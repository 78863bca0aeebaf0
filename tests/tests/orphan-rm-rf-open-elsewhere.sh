#
# rm -rf of a tree on one mount while some of its files are open on
# another: the removal succeeds and the tree is gone from every mount;
# every inode not open elsewhere is deleted at once (one OPEN_INO_MAP
# answer serves a whole inode group), the open ones stay readable
# through their descriptors and are deleted when they are closed, and
# after a merge no orphan is left.
#

t_require_commands python3 stat
t_require_mounts 2

umask 022
D0="$T_D0/tree"
D1="$T_D1/tree"
DIRS=3
FILES=40
OPEN=5

deleted_total()
{
	local t=0
	local i

	for i in $(t_fs_nrs); do
		t=$((t + $(t_counter inode_deleted "$i")))
	done
	echo "$t"
}

free_blocks()
{
	t_sync_seq_index
	stat -f -c '%f' "$T_D0"
}

t_save_all_sysfs_mount_options orphan_scan_delay_ms
t_set_all_sysfs_mount_options orphan_scan_delay_ms 500
free_before=$(free_blocks)

echo "== a tree of $DIRS dirs of $FILES files made on mount 0"
python3 - "$D0" "$DIRS" "$FILES" <<'PYEOF'
import os, sys
top, dirs, files = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
os.mkdir(top)
for d in range(dirs):
    os.mkdir(f"{top}/d{d}")
    for f in range(files):
        with open(f"{top}/d{d}/f{f}", "wb") as fh:
            fh.write(f"d{d} f{f}\n".encode() * 512)
PYEOF
echo "files seen on mount 1: $(find "$D1" -type f | wc -l)"

echo "== $OPEN files opened on mount 1, rm -rf on mount 0"
for n in $(seq 0 $((OPEN - 1))); do
	eval "exec $((n + 3))< \"$D1/d$((n % DIRS))/f$n\""
done
deleted=$(deleted_total)
rm -rf "$D0"
echo "rm rc: $?"
echo "tree on mount 0: $(ls -d "$D0" 2>/dev/null | wc -l) on mount 1: $(ls -d "$D1" 2>/dev/null | wc -l)"
all=$((DIRS * FILES + DIRS + 1))
t_wait_until_timeout 60 "[ \$(( \$(deleted_total) - deleted )) -ge $((all - OPEN)) ]"
t_sync_seq_index
echo "deleted while $OPEN open: $(( $(deleted_total) - deleted )) of $all"

echo "== the open files read through their descriptors"
for n in $(seq 0 $((OPEN - 1))); do
	eval "head -1 <&$((n + 3))"
done

echo "== closed: deleted, blocks free, no orphans after a merge"
for n in $(seq 0 $((OPEN - 1))); do
	eval "exec $((n + 3))<&-"
done
t_wait_until_timeout 60 "[ \$(( \$(deleted_total) - deleted )) -ge $all ]"
echo "deleted: $(( $(deleted_total) - deleted )) of $all"
echo "blocks free again: $([ "$(free_blocks)" == "$free_before" ] && echo yes || echo no)"
t_force_log_merge
t_wait_for_no_orphans
echo "no orphans"

t_restore_all_sysfs_mount_options orphan_scan_delay_ms
t_pass
