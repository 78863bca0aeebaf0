#
# quorum_heartbeat_timeout_ms is how long a follower waits without
# hearing the leader before standing for election (spec §2.1, §7: 2000
# to 60000).  Out of range values are refused by mount and by the sysfs
# write.  With the timeout set, killing the leader's daemon gets a new
# leader elected no sooner than the timeout and not much later.
#
# Elections decide which mount leads, so mount numbers are never
# printed.
#

t_require_commands date findmnt umount grep
t_require_mounts 3


now_ms()
{
	echo $(( $(date +%s%N) / 1000000 ))
}

#
# Set the timeout on every mount, kill -9 the leader and time the
# election among the others, then mount the killed one again.  The
# survivors' is_leader files are found before the kill: finding them
# asks the mounts, and asking the dead one fails.
#
test_timeout()
{
	local to="$1"
	local sv
	local pid
	local start
	local elapsed
	local files
	local i

	t_set_all_sysfs_mount_options quorum_heartbeat_timeout_ms "$to"
	for i in $(t_fs_nrs); do
		[ "$(t_get_sysfs_mount_option "$i" quorum_heartbeat_timeout_ms)" == "$to" ] || \
			echo "mount $i didn't take timeout $to"
	done
	sv=$(t_server_nr)
	test -n "$sv" || t_fail "no leader"
	pid=$(t_daemon_pid "$sv")
	test -n "$pid" || t_fail "couldn't find the leader's daemon"
	files=()
	for i in $(t_fs_nrs); do
		[ "$i" == "$sv" ] || files+=("$(t_sysfs_path "$i")/quorum/is_leader")
	done

	start=$(now_ms)
	kill -9 "$pid"
	elapsed=""
	while [ $(( $(now_ms) - start )) -lt $((to + 60000)) ]; do
		if cat "${files[@]}" 2>/dev/null | grep -q '^1$'; then
			elapsed=$(( $(now_ms) - start ))
			break
		fi
		sleep .05
	done
	echo "timeout $to: elected after $elapsed ms" >> "$T_TMP.log"

	if [ -z "$elapsed" ]; then
		echo "no leader elected after $((to + 60000)) ms"
	else
		# the followers heard the leader a heartbeat (100 ms) before the kill,
		# give or take a busy host
		if [ "$elapsed" -ge $((to - 1000)) ]; then
			echo "not elected before the timeout"
		else
			echo "elected after $elapsed ms, before the timeout of $to ms"
		fi
		# an election takes 250-350 ms; the rest is slack for a loaded host
		if [ "$elapsed" -lt $((to + 10000)) ]; then
			echo "elected in time"
		else
			echo "elected after $elapsed ms, more than $to ms + 10 s"
		fi
	fi

	while kill -0 "$pid" 2>/dev/null; do
		sleep .1
	done
	umount -l "$(t_mount_path "$sv")" 2>/dev/null
	t_mount "$sv"
	t_wait_for_leader
}

t_save_all_sysfs_mount_options quorum_heartbeat_timeout_ms

echo "== out of range values are refused by mount"
cl=$(t_first_client_nr)
test -n "$cl" || t_fail "no client"
t_umount "$cl"
for v in 1999 60001 abc; do
	t_mount_opt "$cl" "quorum_heartbeat_timeout_ms=$v" 2> "$T_TMP.mount.err"
	echo "mount with $v: rc $?"
	grep -q 'invalid quorum_heartbeat_timeout_ms' "$T_TMP.mount.err" || \
		echo "mount with $v didn't say why"
	t_mount_gone "$cl"
done

echo "== the bounds are accepted by mount"
for v in 60000 2000; do
	t_mount_opt "$cl" "quorum_heartbeat_timeout_ms=$v"
	echo "mount with $v: rc $?"
	echo "sysfs reads $(t_get_sysfs_mount_option "$cl" quorum_heartbeat_timeout_ms)"
	t_umount "$cl"
done
t_mount "$cl"

echo "== out of range values are refused by sysfs"
old=$(t_get_sysfs_mount_option 0 quorum_heartbeat_timeout_ms)
for v in 1999 60001 abc ""; do
	t_set_sysfs_mount_option 0 quorum_heartbeat_timeout_ms "$v"
	rc=$?
	if [ "$(t_get_sysfs_mount_option 0 quorum_heartbeat_timeout_ms)" == "$old" ]; then
		echo "write '$v': rc $rc, value unchanged"
	else
		echo "write '$v': rc $rc, value changed"
	fi
done

echo "== the bounds are accepted by sysfs"
for v in 60000 2000; do
	t_set_sysfs_mount_option 0 quorum_heartbeat_timeout_ms "$v"
	echo "write $v: rc $?, value $(t_get_sysfs_mount_option 0 quorum_heartbeat_timeout_ms)"
done

echo "== kill the leader with a 2 s timeout"
test_timeout 2000

echo "== kill the leader with a 5 s timeout"
test_timeout 5000

echo "== restore"
t_restore_all_sysfs_mount_options quorum_heartbeat_timeout_ms

t_pass
