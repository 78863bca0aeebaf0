#
# .srch. xattrs and scoutfs search-xattrs: set and removed on every
# mount, a replace, a file deletion; search from every mount finds
# exactly the inodes holding the name once their mounts synced; the
# same after the logs were rotated (srch_force_log_rotate) and compacted
# into sorted files (srch_compact_logs_pad_safe lets a batch of fewer
# than four log files go, srch/compact_delay_ms paces the mounts); after
# a remount; and after a client is killed and reclaimed (its synced
# entries stay, its unsynced ones go with it).  Then the command's
# usage errors and errnos.
#
# Inode numbers are printed as the names of their files, sorted by
# name; each search also checks that its output is ascending and
# without duplicates.  Mount numbers are never printed.
#

t_require_commands scoutfs touch rm stat setfattr sort awk
t_require_mounts 2

umask 022
NAME=scoutfs.srch.golden
OTHER=scoutfs.hide.srch.other
NONROOT="setpriv --reuid=22222 --regid=44444 --clear-groups"

# remember the inode number of file $1 under name $2
named()
{
	echo "$(stat -c %i "$1") $2" >> "$T_TMP.names"
}

# the files mount $1 finds for xattr $2, by name; "unsorted" if the
# inode numbers are not strictly ascending
found()
{
	scoutfs search-xattrs -p "$(t_mount_path "$1")" "$2" > "$T_TMP.found" 2>&1 ||
		echo "search-xattrs failed: $(cat "$T_TMP.found")"
	sort -n -u -c "$T_TMP.found" 2> /dev/null || echo "unsorted"
	awk -v names="$T_TMP.names" '
		BEGIN {
			while ((getline l < names) > 0) {
				split(l, p, " ")
				name[p[1]] = p[2]
			}
		}
		($1 in name) { print name[$1] }' "$T_TMP.found" | sort | tr '\n' ' '
	echo
}

# every mount finds the same files for xattr $1: print them once
on_all()
{
	local m
	local first
	local out
	local shown=""

	for m in $(t_fs_nrs); do
		out=$(found "$m" "$1")
		if [ -z "$shown" ]; then
			first="$out"
			shown=1
			echo "$1: $out"
		elif [ "$out" != "$first" ]; then
			echo "a mount finds $1: $out"
		fi
	done
}

: > "$T_TMP.names"

echo "== set .srch. xattrs from every mount"
for m in $(t_fs_nrs); do
	d="$(t_mount_dir "$m")"
	for k in 1 2 3; do
		touch "$d/m$m.f$k"
		named "$d/m$m.f$k" "m$m.f$k"
		setfattr -n "$NAME" -v "$k" "$d/m$m.f$k"
	done
	setfattr -n "$OTHER" -v x "$d/m$m.f1"
	setfattr -n user.plain -v x "$d/m$m.f2"
done
sync
on_all "$NAME"
on_all "$OTHER"
on_all scoutfs.srch.nothing

echo "== remove, replace, delete a file"
setfattr -x "$NAME" "$(t_mount_dir 0)/m0.f1"
setfattr -n "$NAME" -v replaced "$(t_mount_dir 1)/m1.f2"
rm -f "$(t_mount_dir 1)/m1.f3"
sync
# the inode is deleted (and its xattrs with it) once the kernel forgets it:
# queued work, maybe after that sync
t_wait_until_timeout 30 "sync; ! found 0 $NAME | grep -q m1.f3"
on_all "$NAME"
on_all "$OTHER"

echo "== rotate every mount's log, compact"
sv=$(t_server_nr)
before=$(t_counter srch_compact_complete "$sv")
for m in $(t_fs_nrs); do
	t_trigger_arm_silent srch_force_log_rotate "$sv"
	# the trigger acts at the next commit of a non-empty log: make one
	setfattr -n scoutfs.srch.rotate -v "$m" "$(t_mount_dir "$m")/m$m.f2"
	scoutfs sync -p "$(t_mount_path "$m")"
	[ "$(t_trigger_get srch_force_log_rotate "$sv")" == "0" ] || echo "mount $m's log did not rotate"
done
t_trigger_arm_silent srch_compact_logs_pad_safe "$sv"
for m in $(t_fs_nrs); do
	echo 100 > "$(t_sysfs_path "$m")/srch/compact_delay_ms"
done
t_wait_until_timeout 30 "[ \$(t_counter srch_compact_complete $sv) -gt $before ]"
echo "compacted"
on_all "$NAME"
on_all "$OTHER"

echo "== after remount"
t_umount_all
t_mount_all
on_all "$NAME"
on_all "$OTHER"
echo "compact_delay_ms after remount: $(cat "$(t_sysfs_path 0)/srch/compact_delay_ms")"

echo "== a killed client's synced entries survive its reclaim"
cl=$(t_first_client_nr)
sv=$(t_server_nr)
rid=$(t_mount_rid "$cl")
d="$(t_mount_dir "$cl")"
touch "$d/killed.synced" "$d/killed.unsynced"
named "$d/killed.synced" killed.synced
named "$d/killed.unsynced" killed.unsynced
setfattr -n "$NAME" -v 1 "$d/killed.synced"
scoutfs sync -p "$(t_mount_path "$cl")"
setfattr -n "$NAME" -v 1 "$d/killed.unsynced"
t_force_umount "$cl"
t_mount_gone "$cl"
t_wait_until_timeout 90 "grep -q 'fencing rid $rid' '$T_FENCED_LOG'"
t_wait_until_timeout 60 "! t_rid_is_fencing $rid"
t_wait_until_timeout 30 "! grep -q 'rid $rid' '$(t_debugfs_path "$sv")/server_locks'"
echo "reclaimed"
found "$sv" "$NAME"
t_mount "$cl"
on_all "$NAME"

echo "== usage and errors"
scoutfs search-xattrs -p "$T_M0" 2>&1 | head -1
echo "rc ${PIPESTATUS[0]}"
scoutfs search-xattrs -p "$T_M0" a b 2>&1 | head -1
scoutfs search-xattrs -p "$T_M0" user.nosrch; echo "rc $?"
scoutfs search-xattrs -p "$T_M0" scoutfs.hide.nosrch; echo "rc $?"
scoutfs search-xattrs -p "$T_M0" scoutfs.; echo "rc $?"
$NONROOT scoutfs search-xattrs -p "$T_M0" "$NAME"; echo "rc $?"
scoutfs search-xattrs -p /proc "$NAME" 2>&1 | sed -e 's/(.*)/(...)/'

rm -f "$T_D0"/m*.f* "$T_D0"/killed.*

t_pass
