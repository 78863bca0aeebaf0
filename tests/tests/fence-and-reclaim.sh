#
# A client that vanishes without saying farewell (force unmount) is
# fenced and reclaimed: the server, seeing no reconnect, publishes a
# fence request for its rid, the fencing agent answers it (fenced.log),
# the rid's cluster locks are dropped and its open log tree, which holds
# committed items, is reclaimed (counter reclaimed_open_logs on the
# server).  The other mounts keep working meanwhile (they may block on
# locks the fenced client held until it is reclaimed), and the client
# can mount again and sees what it had synced.
#
# Which mount leads depends on the elections, so mount numbers are
# never printed.
#

t_require_commands dd md5sum grep sed
t_require_mounts 2

umask 022
WORK_FILES=30

# create files in its own dir on mount $1 and read them back
worker()
{
	local nr="$1"
	local dir
	local k

	dir="$(t_mount_dir "$nr")/work.$nr"
	for k in $(seq 1 $WORK_FILES); do
		echo "work $nr $k" > "$dir/f$k" || echo "mount $nr: create f$k failed"
		[ "$(cat "$dir/f$k")" == "work $nr $k" ] || echo "mount $nr: f$k reads back wrong"
	done
	echo "done" > "$dir/done"
}

echo "== every mount sees every other"
for i in $(t_fs_nrs); do
	echo "seen from $i" > "$(t_mount_dir "$i")/seen.$i"
done
for i in $(t_fs_nrs); do
	n=$(find "$(t_mount_dir "$i")" -maxdepth 1 -name 'seen.*' | wc -l)
	[ "$n" -eq "$T_NR_MOUNTS" ] || echo "mount $i sees $n of $T_NR_MOUNTS files"
done

echo "== pick a client and make it write"
cl=$(t_first_client_nr)
sv=$(t_server_nr)
test -n "$cl" -a -n "$sv" || t_fail "no client or no server"
rid=$(t_mount_rid "$cl")
echo "client $cl rid $rid server $sv" >> "$T_TMP.log"
others=()
for i in $(t_fs_nrs); do
	if [ "$i" != "$cl" ]; then
		others+=("$i")
		mkdir "$(t_mount_dir "$i")/work.$i"
	fi
done
cldir="$(t_mount_dir "$cl")/client"
mkdir "$cldir"
for k in 1 2 3; do
	dd if=/dev/urandom of="$cldir/synced$k" bs=4096 count=$((k * 3)) status=none
done
# committed into its open log tree, which stays open
scoutfs sync -p "$(t_mount_path "$cl")" || t_fail "sync of the client failed"
(cd "$cldir" && md5sum synced*) > "$T_TMP.sums"
sed -e 's/^[0-9a-f]* /<sum> /' "$T_TMP.sums"
# and some writes that are never synced
echo "never synced" > "$cldir/unsynced"

echo "== force unmount the client"
reclaimed=$(t_counter reclaimed_open_logs "$sv")
t_force_umount "$cl"
t_mount_gone "$cl"

echo "== the other mounts keep working"
pids=()
for i in "${others[@]}"; do
	worker "$i" > "$T_TMP.worker.$i" 2>&1 &
	pids+=("$!")
done

echo "== the server fences the client's rid"
t_wait_until_timeout 90 "grep -q 'fencing rid $rid' '$T_FENCED_LOG'"
grep "fencing rid $rid" "$T_FENCED_LOG" | head -1 | \
	sed -e 's/^.*fencing rid [0-9a-f]*/fencing rid <rid>/' -e 's/at IP [0-9.]*/at IP <ip>/'
t_wait_until_timeout 60 "grep -q \"running rid '$rid'\" '$T_FENCED_LOG'"
echo "fence agent ran for the rid"
t_wait_until_timeout 60 "! t_rid_is_fencing $rid"
echo "fence request answered"

echo "== the rid is reclaimed"
t_wait_until_timeout 30 "! grep -q 'rid $rid' '$(t_debugfs_path "$sv")/server_locks'"
echo "no server_locks entries of the rid"
t_rid_is_mounted "$rid" && echo "rid still has a sysfs dir"
t_counter_diff_changed reclaimed_open_logs "$reclaimed" "$sv"

echo "== the other mounts finished their work"
for p in "${pids[@]}"; do
	wait "$p"
done
for i in "${others[@]}"; do
	cat "$T_TMP.worker.$i"
done
for i in "${others[@]}"; do
	for j in "${others[@]}"; do
		test -e "$(t_mount_dir "$i")/work.$j/done" || echo "mount $i doesn't see mount $j's work"
	done
done
echo "checked"

echo "== mount the client again"
t_mount "$cl"
(cd "$(t_mount_dir "$cl")/client" && md5sum -c --quiet "$T_TMP.sums") && echo "synced files intact"
for i in "${others[@]}"; do
	(cd "$(t_mount_dir "$i")/client" && md5sum -c --quiet "$T_TMP.sums") || \
		echo "mount $i sees other synced files"
	n=$(ls "$(t_mount_dir "$cl")/work.$i" | wc -l)
	[ "$n" -eq $((WORK_FILES + 1)) ] || echo "client sees $n files of mount $i's work"
done
echo "new rid differs: $([ "$(t_mount_rid "$cl")" != "$rid" ] && echo yes || echo no)"
echo "written again" > "$(t_mount_dir "$cl")/client/again"
cat "$(t_mount_dir "${others[0]}")/client/again"

rm -rf "$T_D0"/seen.* "$T_D0"/work.* "$T_D0/client"

t_pass
