#
# The leader's daemon dies (kill -9) while another mount is writing.
# The remaining quorum members elect a new leader, which fences the old
# leader's rid (quorum_block_leader) before serving; the writer carries
# on through the failover without errors, and every file synced before
# the kill reads back intact from every surviving mount and, once it is
# mounted again, from the killed mount.
#
# The leader and writer mounts depend on the elections, so their numbers
# are never printed.
#

t_require_commands dd md5sum cmp findmnt umount grep
t_require_mounts 3

umask 022
FILES=3
WRITER_FILES=40


# check every synced file from mount $1
check_synced()
{
	local dir

	dir=$(t_mount_dir "$1")
	(cd "$dir" && md5sum -c --quiet "$T_TMP.sums") || echo "mount $1 sees changed synced files"
}

# the background writer: copies of one source file, each checked after
# its write, then a sync of its mount
writer()
{
	local nr="$1"
	local dir
	local k

	dir="$(t_mount_dir "$nr")/writer"
	for k in $(seq 1 $WRITER_FILES); do
		cp "$T_TMP.src" "$dir/w$k" || echo "copy w$k failed"
		cmp -s "$T_TMP.src" "$dir/w$k" || echo "w$k differs after its write"
		# commits need the server: some happen during the failover
		if [ $((k % 5)) == 0 ]; then
			scoutfs sync -p "$(t_mount_path "$nr")" || echo "sync after w$k failed"
		fi
		echo "$k" > "$T_TMP.writer.progress"
	done
	scoutfs sync -p "$(t_mount_path "$nr")" || echo "sync of the writer's mount failed"
	echo "writer done"
}

echo "== write and sync files from every mount"
for i in $(t_fs_nrs); do
	for k in $(seq 1 $FILES); do
		dd if=/dev/urandom of="$(t_mount_dir "$i")/synced.$i.$k" bs=4096 \
			count=$((k * 4)) status=none
	done
done
sync
(cd "$T_D0" && md5sum synced.*) > "$T_TMP.sums"
sed -e 's/^[0-9a-f]* /<sum> /' "$T_TMP.sums"
for i in $(t_fs_nrs); do
	check_synced "$i"
done

echo "== find the leader"
t_save_all_sysfs_mount_options quorum_heartbeat_timeout_ms
t_set_all_sysfs_mount_options quorum_heartbeat_timeout_ms 2000
sv=$(t_server_nr)
test -n "$sv" || t_fail "no leader"
rid=$(t_mount_rid "$sv")
pid=$(t_daemon_pid "$sv")
test -n "$pid" || t_fail "couldn't find the daemon of the leader"
wr=$(t_first_client_nr)
test -n "$wr" || t_fail "no client"
survivors=()
for i in $(t_fs_nrs); do
	[ "$i" == "$sv" ] || survivors+=("$i")
done
echo "leader $sv rid $rid pid $pid writer $wr" >> "$T_TMP.log"

echo "== kill -9 the leader while another mount writes"
dd if=/dev/urandom of="$T_TMP.src" bs=4096 count=16 status=none
mkdir "$(t_mount_dir "$wr")/writer"
echo 0 > "$T_TMP.writer.progress"
writer "$wr" > "$T_TMP.writer.out" 2>&1 &
wpid=$!
# the writer is under way before the kill
for _ in $(seq 1 600); do
	[ "$(cat "$T_TMP.writer.progress")" -ge 3 ] && break
	sleep .1
done
kill -9 "$pid"
echo "killed at writer progress $(cat "$T_TMP.writer.progress")" >> "$T_TMP.log"
while kill -0 "$pid" 2>/dev/null; do
	sleep .1
done
echo "daemon gone"
umount -l "$(t_mount_path "$sv")" 2>/dev/null
t_mount_gone "$sv"

echo "== a new leader is elected"
# only the surviving mounts: asking the unmounted one fails noisily
survivor_leads()
{
	local i

	for i in "${survivors[@]}"; do
		[ "$(t_fs_is_leader "$i")" == "1" ] && return 0
	done
	return 1
}
t_wait_until_timeout 60 survivor_leads
echo "new leader elected"
new=""
for i in "${survivors[@]}"; do
	[ "$(t_fs_is_leader "$i")" == "1" ] && new=$i
done
test -n "$new" || t_fail "lost the new leader"

echo "== the writer completes"
wait "$wpid"
cat "$T_TMP.writer.out"

echo "== synced files are intact on the surviving mounts"
for i in "${survivors[@]}"; do
	check_synced "$i"
	for k in $(seq 1 $WRITER_FILES); do
		cmp -s "$T_TMP.src" "$(t_mount_dir "$i")/writer/w$k" || echo "mount $i: w$k differs"
	done
done
echo "checked"

echo "== the old leader's rid was fenced"
t_wait_until_timeout 60 "grep -q 'fencing rid $rid' '$T_FENCED_LOG'"
grep "fencing rid $rid" "$T_FENCED_LOG" | sed -e 's/^.*fencing rid [0-9a-f]*/fencing rid <rid>/' \
	-e 's/at IP [0-9.]*/at IP <ip>/' | head -1
grep -q "running rid '$rid'" "$T_FENCED_LOG" && echo "fence agent ran for the rid"
t_wait_until_timeout 60 "! t_rid_is_fencing $rid"
echo "server_locks entries of the old rid: $(grep -c "rid $rid" "$(t_debugfs_path "$new")/server_locks")"

echo "== remount the killed mount"
t_mount "$sv"
check_synced "$sv"
for k in $(seq 1 $WRITER_FILES); do
	cmp -s "$T_TMP.src" "$(t_mount_dir "$sv")/writer/w$k" || echo "remounted: w$k differs"
done
echo "checked"
t_wait_for_leader

echo "== every mount still works"
for i in $(t_fs_nrs); do
	echo "after from $i" > "$(t_mount_dir "$i")/after.$i"
done
for i in $(t_fs_nrs); do
	cat "$(t_mount_dir "$i")"/after.* | sort | md5sum | cut -d ' ' -f 1 > "$T_TMP.after.$i"
	cmp -s "$T_TMP.after.0" "$T_TMP.after.$i" || echo "mount $i reads other contents"
done
n=$(cat "$(t_mount_dir 0)"/after.* | wc -l)
if [ "$n" -eq "$T_NR_MOUNTS" ]; then
	echo "every mount reads the file of every mount"
else
	echo "mount 0 reads $n files, expected $T_NR_MOUNTS"
fi

t_restore_all_sysfs_mount_options quorum_heartbeat_timeout_ms
rm -rf "$T_D0"/synced.* "$T_D0/writer" "$T_D0"/after.*

t_pass
