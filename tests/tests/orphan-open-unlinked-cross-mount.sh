#
# A file unlinked on one mount while it is open on another stays
# readable, writable and fstat-able there (nlink 0), and is deleted once
# the last mount holding it closes it, whichever mount that is: its
# blocks are free again (statfs) and inode_deleted counts it once.
# Neither the unlinking mount's release nor the orphan scanners delete
# it while it is open elsewhere (OPEN_INO_MAP, spec §4.4-§4.6).
#

t_require_commands python3 stat dd
t_require_mounts 2

umask 022
D0="$T_D0/dir"
D1="$T_D1/dir"

deleted_total()
{
	local t=0
	local i

	for i in $(t_fs_nrs); do
		t=$((t + $(t_counter inode_deleted "$i")))
	done
	echo "$t"
}

# the data blocks free, after every mount committed what it freed
free_blocks()
{
	t_sync_seq_index
	stat -f -c '%f' "$T_D0"
}

t_save_all_sysfs_mount_options orphan_scan_delay_ms
t_set_all_sysfs_mount_options orphan_scan_delay_ms 500
mkdir "$D0"
free_before=$(free_blocks)

echo "== open on mount 1, unlinked on mount 0"
dd if=/dev/zero of="$D0/file" bs=4096 count=256 status=none
exec 3<> "$D1/file"
deleted=$(deleted_total)
rm "$D0/file"
echo "names left: $(ls -A "$D0" | wc -l) $(ls -A "$D1" | wc -l)"
echo "fstat: $(stat -L -c 'links %h size %s' /proc/self/fd/3)"

echo "== still readable and writable through the held fd"
python3 - <<'PYEOF'
import os
os.lseek(3, 0, os.SEEK_SET)
print("read", len(os.read(3, 1 << 20)), "bytes")
os.lseek(3, 1 << 20, os.SEEK_SET)
os.write(3, b"written after unlink\n")
os.fsync(3)
st = os.fstat(3)
print("nlink", st.st_nlink, "size", st.st_size)
os.lseek(3, 1 << 20, os.SEEK_SET)
print(os.read(3, 100).decode(), end="")
PYEOF

echo "== the scanners leave it while it is open"
t_force_log_merge
t_wait_for_orphan_scan_runs
echo "deleted while open: $(( $(deleted_total) - deleted ))"
echo "fstat: $(stat -L -c 'links %h size %s' /proc/self/fd/3)"

echo "== deleted at the last close"
exec 3<&-
t_wait_until_timeout 30 "[ \$(deleted_total) -gt $deleted ]"
echo "deleted: $(( $(deleted_total) - deleted ))"
echo "blocks free again: $([ "$(free_blocks)" == "$free_before" ] && echo yes || echo no)"

echo "== open on both mounts, unlinked on mount 1, last closed on mount 0"
dd if=/dev/zero of="$D0/file2" bs=4096 count=128 status=none
exec 4< "$D0/file2"
exec 5< "$D1/file2"
deleted=$(deleted_total)
rm "$D1/file2"
echo "fstat 0: $(stat -L -c 'links %h size %s' /proc/self/fd/4)"
echo "fstat 1: $(stat -L -c 'links %h size %s' /proc/self/fd/5)"
exec 5<&-
echo "read on mount 0 after mount 1 closed: $(wc -c <&4) bytes"
t_wait_for_orphan_scan_runs
echo "deleted while open: $(( $(deleted_total) - deleted ))"
exec 4<&-
t_wait_until_timeout 30 "[ \$(deleted_total) -gt $deleted ]"
echo "deleted: $(( $(deleted_total) - deleted ))"
echo "blocks free again: $([ "$(free_blocks)" == "$free_before" ] && echo yes || echo no)"

rmdir "$D0"
t_restore_all_sysfs_mount_options orphan_scan_delay_ms
t_pass
