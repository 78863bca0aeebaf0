#
# A client that unmounts cleanly leaves nothing behind on the server:
# its farewell reclaims the rid, so no server_locks entry names it, its
# sysfs dir is gone and it's not a mounted rid.  That holds both for a
# plain unmount and for one right after a failover, while the new
# server is still recovering the client's locks.  The other mounts keep
# working with what it wrote, and it can mount again.
#
# Which mounts lead depends on the elections, so mount numbers are
# never printed.
#

t_require_commands md5sum grep findmnt umount setfattr getfattr
t_require_mounts 3

umask 022


# the client mount $1 holds locks of every kind it can: it reads what
# the others wrote and writes files of its own
use_locks()
{
	local nr="$1"
	local dir

	dir=$(t_mount_dir "$nr")
	cat "$dir"/file.* > /dev/null
	ls -l "$dir" > /dev/null
	echo "client round $2" > "$dir/client.$2"
	setfattr -n user.round -v "$2" "$dir/client.$2"
	mkdir "$dir/dir.$2"
	mv "$dir/client.$2" "$dir/dir.$2/"
}

# after mount $1 (rid $2, sysfs dir $3) unmounted: nothing names it
check_gone()
{
	local sv
	local n

	# the unmounted mount can't say whether it leads: asking it is noisy
	sv=$(t_server_nr 2>/dev/null)
	test -n "$sv" || t_fail "no server"
	test -d "$3" && echo "sysfs dir still present"
	t_rid_is_mounted "$2" && echo "rid is still mounted"
	n=$(grep -c "rid $2" "$(t_debugfs_path "$sv")/server_locks")
	echo "server_locks entries of the rid: $n"
}

echo "== every mount writes a file"
for i in $(t_fs_nrs); do
	echo "file from $i" > "$(t_mount_dir "$i")/file.$i"
done

echo "== a client holds locks and unmounts"
cl=$(t_first_client_nr)
test -n "$cl" || t_fail "no client"
rid=$(t_mount_rid "$cl")
sysdir=$(t_sysfs_path "$cl")
test -d "$sysdir" || t_fail "no sysfs dir for the client"
use_locks "$cl" 1
n=$(grep -c "rid $rid" "$(t_debugfs_path "$(t_server_nr)")/server_locks")
[ "$n" -gt 0 ] && echo "server_locks has entries of the client"
t_umount "$cl"
check_gone "$cl" "$rid" "$sysdir"

echo "== the others see what it wrote"
for i in $(t_fs_nrs); do
	[ "$i" == "$cl" ] && continue
	cat "$(t_mount_dir "$i")/dir.1/client.1"
	getfattr --absolute-names --only-values -n user.round "$(t_mount_dir "$i")/dir.1/client.1"
	echo
done

echo "== mount it again"
t_mount "$cl"
[ "$(t_mount_rid "$cl")" != "$rid" ] && echo "new rid"
cat "$(t_mount_dir "$cl")/dir.1/client.1"

echo "== a client unmounts while the new leader recovers its locks"
t_save_all_sysfs_mount_options quorum_heartbeat_timeout_ms
t_set_all_sysfs_mount_options quorum_heartbeat_timeout_ms 2000
sv=$(t_server_nr)
test -n "$sv" || t_fail "no server"
cl=$(t_first_client_nr)
rid=$(t_mount_rid "$cl")
sysdir=$(t_sysfs_path "$cl")
use_locks "$cl" 2
pid=$(t_daemon_pid "$sv")
test -n "$pid" || t_fail "couldn't find the leader's daemon"
kill -9 "$pid"
while kill -0 "$pid" 2>/dev/null; do
	sleep .1
done
umount -l "$(t_mount_path "$sv")" 2>/dev/null
# the client's farewell needs a majority of quorum members to remain, so
# with the leader dead it may only finish once the killed mount is back
t_umount "$cl" &
upid=$!
t_mount "$sv"
wait "$upid" || t_fail "unmount of the client failed"
t_wait_for_leader 2>/dev/null
check_gone "$cl" "$rid" "$sysdir"
t_mount "$cl"
cat "$(t_mount_dir "$cl")/dir.2/client.2"
for i in $(t_fs_nrs); do
	cat "$(t_mount_dir "$i")"/file.* | md5sum | cut -d ' ' -f 1 > "$T_TMP.files.$i"
	cmp -s "$T_TMP.files.0" "$T_TMP.files.$i" || echo "mount $i reads other files"
done
t_restore_all_sysfs_mount_options quorum_heartbeat_timeout_ms

rm -rf "$T_D0"/file.* "$T_D0"/dir.*

t_pass
