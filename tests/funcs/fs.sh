# shellcheck shell=bash
#
# Filesystem helpers: mount identity, the sysfs/debugfs views, mounting,
# triggers and counters.
#
# Our mounts are FUSE mounts (type fuse.scoutfs).  The kernel's
# /sys/fs/scoutfs and /sys/kernel/debug/scoutfs are emulated by a tree of
# the same relative paths under $T_SYSFS_ROOT (default /run/scoutfs/sys).
# Functions that read that tree fail the test with "sysfs view not
# available: <path>" when it's missing, rather than waiting forever.
#
# Waits that upstream leaves unbounded give up after $T_WAIT_TIMEOUT
# seconds (default 600) and fail the test.
#

t_sysfs_root()
{
	echo "${T_SYSFS_ROOT:-/run/scoutfs/sys}"
}

#
# Fail the test (or the calling subshell: the message is also printed on
# stderr so it shows in the output) when a sysfs view dir is missing.
#
t_require_sysfs_dir()
{
	local path="$1"
	local who="${2:-${FUNCNAME[1]}}"

	if [ ! -d "$path" ]; then
		echo "$who: sysfs view not available: $path" >&2
		t_fail "$who: sysfs view not available: $path"
	fi
}

_t_wait_timeout()
{
	echo "${T_WAIT_TIMEOUT:-600}"
}

#
# Print the value of the T_<prefix><nr> variable, e.g. T_M0.
#
_t_mount_var()
{
	local name="T_$1$2"

	echo "${!name}"
}

_t_check_nr()
{
	local nr="$1"

	if ! [[ "$nr" =~ ^[0-9]+$ ]] || [ "$nr" -ge "${T_NR_MOUNTS:-0}" ]; then
		t_fail "fs nr $nr invalid"
	fi
}

#
# Identity and paths.  All come from `scoutfs statfs -s fsid|rid`.
#

t_mount_rid()
{
	local nr="${1:-0}"
	local mnt
	local rid

	mnt=$(_t_mount_var M "$nr")
	rid=$(scoutfs statfs -s rid -p "$mnt")

	echo "$rid"
}

t_ident_from_mnt()
{
	local mnt="$1"
	local fsid
	local rid

	fsid=$(scoutfs statfs -s fsid -p "$mnt")
	rid=$(scoutfs statfs -s rid -p "$mnt")

	echo "f.${fsid:0:6}.r.${rid:0:6}"
}

t_ident()
{
	local nr="${1:-0}"
	local mnt

	mnt=$(_t_mount_var M "$nr")
	t_ident_from_mnt "$mnt"
}

t_sysfs_path_from_ident()
{
	local ident="$1"

	echo "$(t_sysfs_root)/fs/scoutfs/$ident"
}

t_sysfs_path_from_mnt()
{
	local mnt="$1"

	t_sysfs_path_from_ident "$(t_ident_from_mnt "$mnt")"
}

t_sysfs_path()
{
	local nr="${1:-0}"

	t_sysfs_path_from_ident "$(t_ident "$nr")"
}

t_debugfs_path()
{
	local nr="${1:-0}"

	echo "$(t_sysfs_root)/kernel/debug/scoutfs/$(t_ident "$nr")"
}

t_trigger_path()
{
	local nr="${1:-0}"

	echo "$(t_debugfs_path "$nr")/trigger"
}

#
# Mount topology.
#

t_fs_nrs()
{
	seq 0 $((T_NR_MOUNTS - 1))
}

t_quorum_nrs()
{
	seq 0 $((T_QUORUM - 1))
}

#
# Print 1 if the mount is the quorum leader, else 0 (clients have no
# quorum dir; an unmounted mount has no sysfs dir).  Upstream reads the
# caller's $i; we take the mount nr as $1 and fall back to $i.
#
t_fs_is_leader()
{
	local nr="${1:-$i}"
	local root

	root="$(t_sysfs_root)/fs/scoutfs"
	t_require_sysfs_dir "$root"

	if [ "$(cat "$(t_sysfs_path "$nr")/quorum/is_leader" 2>/dev/null)" == "1" ]; then
		echo "1"
	else
		echo "0"
	fi
}

t_server_nr()
{
	local i

	for i in $(t_fs_nrs); do
		if [ "$(t_fs_is_leader "$i")" == "1" ]; then
			echo "$i"
			return
		fi
	done

	t_fail "t_server_nr didn't find a server"
}

t_first_client_nr()
{
	local i

	for i in $(t_fs_nrs); do
		if [ "$(t_fs_is_leader "$i")" == "0" ]; then
			echo "$i"
			return
		fi
	done

	t_fail "t_first_client_nr didn't find any clients"
}

t_majority_count()
{
	if [ "$T_QUORUM" -lt 3 ]; then
		echo 1
	else
		echo $(((T_QUORUM / 2) + 1))
	fi
}

#
# Wait until any mount is the quorum leader, polling every 0.25 s.  Mounts
# still coming up aren't mounted yet, so finding their identity fails
# (`scoutfs statfs` on the bare mount point: "ioctl failed: Inappropriate
# ioctl for device (25)"); as upstream, that stderr is discarded.
#
t_wait_for_leader()
{
	local timeout
	local start="$SECONDS"
	local i

	timeout=$(_t_wait_timeout)
	t_require_sysfs_dir "$(t_sysfs_root)/fs/scoutfs"

	while :; do
		for i in $(t_fs_nrs); do
			if [ "$(t_fs_is_leader "$i" 2>/dev/null)" == "1" ]; then
				return 0
			fi
		done
		if [ $((SECONDS - start)) -ge "$timeout" ]; then
			t_fail "t_wait_for_leader: no leader after $timeout sec"
		fi
		sleep .25
	done
}

#
# Mounting and unmounting.  All but t_mount_opt are t_quiet: a failure
# fails the test.
#

t_mount()
{
	local nr="$1"
	local opts
	local db
	local mnt

	_t_check_nr "$nr"
	opts=$(_t_mount_var O "$nr")
	db=$(_t_mount_var DB "$nr")
	mnt=$(_t_mount_var M "$nr")

	# shellcheck disable=SC2086 # T_On is "-o opts", split on purpose
	t_quiet mount -t scoutfs $opts "$db" "$mnt"
}

#
# Mount with an extra option appended; not quiet: returns mount's status
# so tests can check mounts that must fail.
#
t_mount_opt()
{
	local nr="$1"
	local opt="$2"
	local opts
	local db
	local mnt

	_t_check_nr "$nr"
	opts=$(_t_mount_var O "$nr")
	db=$(_t_mount_var DB "$nr")
	mnt=$(_t_mount_var M "$nr")

	# shellcheck disable=SC2086 # T_On is "-o opts", split on purpose
	mount -t scoutfs ${opts},$opt "$db" "$mnt"
}

t_umount()
{
	local nr="$1"

	_t_check_nr "$nr"
	t_quiet umount "$(_t_mount_var M "$nr")"
}

t_force_umount()
{
	local nr="$1"

	_t_check_nr "$nr"
	t_quiet umount -f "$(_t_mount_var M "$nr")"
}

t_mount_all()
{
	local pids=()
	local p
	local i

	for i in $(t_fs_nrs); do
		t_mount "$i" &
		pids+=("$!")
	done

	for p in "${pids[@]}"; do
		t_quiet wait "$p"
	done
}

t_umount_all()
{
	local pids=()
	local p
	local i

	for i in $(t_fs_nrs); do
		t_umount "$i" &
		pids+=("$!")
	done

	for p in "${pids[@]}"; do
		t_quiet wait "$p"
	done
}

t_remount_all()
{
	t_umount_all
	t_mount_all
}

#
# Upstream also reloads the kernel module between the unmounts and the
# mounts.  There is no module here: every mount daemon is started anew,
# which is what reloading achieves (nothing cached survives).
#
t_reinsert_remount_all()
{
	t_umount_all
	t_mount_all
}

t_scratch_mkfs()
{
	scoutfs mkfs -f -Q "0,127.0.0.1,$T_SCRATCH_PORT" "$T_EX_META_DEV" \
		"$T_EX_DATA_DEV" "$@" > "$T_TMP.mkfs.out" 2>&1 || \
		t_fail "scratch mkfs failed"
}

t_scratch_mount()
{
	mkdir -p "$T_MSCR"
	t_quiet mount -t scoutfs \
		-o "metadev_path=$T_EX_META_DEV,quorum_slot_nr=0" "$@" \
		"$T_EX_DATA_DEV" "$T_MSCR"
}

t_scratch_umount()
{
	t_quiet umount "$T_MSCR"
	rmdir "$T_MSCR"
}

#
# Triggers (debugfs) and counters (sysfs).
#

_t_debugfs_dir()
{
	local nr="${1:-0}"
	local path

	path=$(t_debugfs_path "$nr")
	t_require_sysfs_dir "$path" "${FUNCNAME[1]}"
	echo "$path"
}

_t_sysfs_dir()
{
	local nr="${1:-0}"
	local path

	path=$(t_sysfs_path "$nr")
	t_require_sysfs_dir "$path" "${FUNCNAME[1]}"
	echo "$path"
}

t_trigger_get()
{
	local which="$1"
	local nr="$2"
	local dir

	dir=$(_t_debugfs_dir "$nr") || t_fail "$(cat "$T_TMPDIR/status.msg" 2>/dev/null)"
	cat "$dir/trigger/$which"
}

t_trigger_set()
{
	local which="$1"
	local nr="$2"
	local val="$3"
	local dir

	dir=$(_t_debugfs_dir "$nr") || t_fail "$(cat "$T_TMPDIR/status.msg" 2>/dev/null)"
	echo "$val" > "$dir/trigger/$which"
}

t_trigger_show()
{
	local which="$1"
	local string="$2"
	local nr="$3"

	echo "trigger $which $string: $(t_trigger_get "$which" "$nr")"
}

t_trigger_arm_silent()
{
	local which="$1"
	local nr="$2"

	t_trigger_set "$which" "$nr" 1
}

t_trigger_arm()
{
	local which="$1"
	local nr="$2"

	t_trigger_arm_silent "$which" "$nr"
	t_trigger_show "$which" armed "$nr"
}

t_counter()
{
	local which="$1"
	local nr="$2"
	local dir

	dir=$(_t_sysfs_dir "$nr") || t_fail "$(cat "$T_TMPDIR/status.msg" 2>/dev/null)"
	cat "$dir/counters/$which"
}

#
# Print the difference between a counter's current value and an earlier
# value.
#
t_counter_diff_value()
{
	local which="$1"
	local old="$2"
	local nr="$3"
	local new

	new=$(t_counter "$which" "$nr") || exit "$T_FAIL_STATUS"
	echo "$((new - old))"
}

t_counter_diff()
{
	local which="$1"
	local old="$2"
	local nr="$3"
	local diff

	diff=$(t_counter_diff_value "$which" "$old" "$nr") || exit "$T_FAIL_STATUS"
	echo "counter $which diff $diff"
}

t_counter_diff_changed()
{
	local which="$1"
	local old="$2"
	local nr="$3"
	local diff

	diff=$(t_counter_diff_value "$which" "$old" "$nr") || exit "$T_FAIL_STATUS"
	if [ "$diff" -eq 0 ]; then
		echo "counter $which didn't change"
	else
		echo "counter $which changed"
	fi
}

#
# Make the server finalize and merge every mount's log tree: arm the
# finalize trigger, commit every mount, wait for the trigger to fire and
# for a merge that started to complete.  Repeat until a merge started.
#
t_force_log_merge()
{
	local sv
	local timeout
	local start="$SECONDS"
	local merges_started
	local last_merges_started
	local merges_done
	local last_merges_done

	timeout=$(_t_wait_timeout)
	t_require_sysfs_dir "$(t_sysfs_root)/fs/scoutfs"
	sv=$(t_server_nr)
	test -n "$sv" || t_fail "t_force_log_merge didn't find a server"
	t_require_sysfs_dir "$(t_sysfs_path "$sv")"
	t_require_sysfs_dir "$(t_debugfs_path "$sv")"

	while :; do
		last_merges_started=$(t_counter log_merge_start "$sv")
		last_merges_done=$(t_counter log_merge_complete "$sv")

		t_trigger_arm_silent log_merge_force_finalize_ours "$sv"

		t_sync_seq_index

		while [ "$(t_trigger_get log_merge_force_finalize_ours "$sv")" == "1" ]; do
			[ $((SECONDS - start)) -lt "$timeout" ] || \
				t_fail "t_force_log_merge: finalize trigger didn't fire in $timeout sec"
			sleep .5
		done

		merges_started=$(t_counter log_merge_start "$sv")

		if (( merges_started > last_merges_started )); then
			merges_done=$(t_counter log_merge_complete "$sv")

			while (( merges_done == last_merges_done )); do
				[ $((SECONDS - start)) -lt "$timeout" ] || \
					t_fail "t_force_log_merge: merge didn't complete in $timeout sec"
				sleep 1
				merges_done=$(t_counter log_merge_complete "$sv")
			done

			break
		fi

		[ $((SECONDS - start)) -lt "$timeout" ] || \
			t_fail "t_force_log_merge: no merge started in $timeout sec"
	done
}

#
# Orphan scans.
#

t_get_orphan_scan_runs()
{
	local i

	for i in $(t_fs_nrs); do
		t_counter orphan_scan "$i"
	done
}

#
# Wait until every mount has run another orphan scan.
#
t_wait_for_orphan_scan_runs()
{
	local timeout
	local start="$SECONDS"
	local before
	local i

	timeout=$(_t_wait_timeout)
	for i in $(t_fs_nrs); do
		t_require_sysfs_dir "$(t_sysfs_path "$i")"
	done

	read -r -a before <<< "$(t_get_orphan_scan_runs | tr '\n' ' ')"

	for i in $(t_fs_nrs); do
		while [ "$(t_counter orphan_scan "$i")" == "${before[$i]}" ]; do
			[ $((SECONDS - start)) -lt "$timeout" ] || \
				t_fail "t_wait_for_orphan_scan_runs: mount $i didn't scan in $timeout sec"
			sleep .1
		done
	done
}

t_get_orphan_scan_empty()
{
	local i

	for i in $(t_fs_nrs); do
		t_counter orphan_scan_empty "$i"
	done
}

#
# Wait for a round of orphan scans in which every mount found no
# orphans.
#
t_wait_for_no_orphans()
{
	local timeout
	local start="$SECONDS"
	local before
	local after
	local found
	local i

	timeout=$(_t_wait_timeout)

	while :; do
		read -r -a before <<< "$(t_get_orphan_scan_empty | tr '\n' ' ')"
		t_wait_for_orphan_scan_runs
		read -r -a after <<< "$(t_get_orphan_scan_empty | tr '\n' ' ')"

		found=0
		for i in $(t_fs_nrs); do
			if [ "${before[$i]}" == "${after[$i]}" ]; then
				found=1
				break
			fi
		done

		[ "$found" == 0 ] && break

		[ $((SECONDS - start)) -lt "$timeout" ] || \
			t_fail "t_wait_for_no_orphans: orphans remain after $timeout sec"
	done
}

#
# Mount options in sysfs.
#

t_get_sysfs_mount_option()
{
	local nr="$1"
	local name="$2"
	local dir

	dir=$(_t_sysfs_dir "$nr") || t_fail "$(cat "$T_TMPDIR/status.msg" 2>/dev/null)"
	cat "$dir/mount_options/$name"
}

#
# Returns the write's status: a rejected value fails the write.
#
t_set_sysfs_mount_option()
{
	local nr="$1"
	local name="$2"
	local val="$3"
	local dir

	dir=$(_t_sysfs_dir "$nr") || t_fail "$(cat "$T_TMPDIR/status.msg" 2>/dev/null)"
	{ echo "$val" > "$dir/mount_options/$name"; } 2>/dev/null
}

t_set_all_sysfs_mount_options()
{
	local name="$1"
	local val="$2"
	local i

	for i in $(t_fs_nrs); do
		t_set_sysfs_mount_option "$i" "$name" "$val"
	done
}

declare -g -A _saved_opts

t_save_all_sysfs_mount_options()
{
	local name="$1"
	local i

	for i in $(t_fs_nrs); do
		_saved_opts["${name}_$i"]="$(t_get_sysfs_mount_option "$i" "$name")"
	done
}

t_restore_all_sysfs_mount_options()
{
	local name="$1"
	local i

	for i in $(t_fs_nrs); do
		t_set_sysfs_mount_option "$i" "$name" "${_saved_opts["${name}_$i"]}"
	done
}

#
# Fencing.
#

t_rid_is_mounted()
{
	local rid="$1"
	local root
	local fr

	root="$(t_sysfs_root)/fs/scoutfs"
	t_require_sysfs_dir "$root"

	for fr in "$root"/*/rid; do
		[ -e "$fr" ] || continue
		if [ "$(cat "$fr" 2>/dev/null)" == "$rid" ]; then
			return 0
		fi
	done

	return 1
}

t_rid_is_fencing()
{
	local rid="$1"
	local root
	local fr

	root="$(t_sysfs_root)/fs/scoutfs"
	t_require_sysfs_dir "$root"

	for fr in "$root"/*; do
		if [ -d "$fr/fence/$rid" ]; then
			return 0
		fi
	done

	return 1
}

#
# Wait while the rid is in any of the given states (mounted, fencing).
#
t_wait_if_rid_is()
{
	local rid="$1"
	local timeout
	local start="$SECONDS"
	local st
	shift

	timeout=$(_t_wait_timeout)

	while :; do
		for st in "$@"; do
			if "t_rid_is_$st" "$rid"; then
				[ $((SECONDS - start)) -lt "$timeout" ] || \
					t_fail "t_wait_if_rid_is: rid $rid still $st after $timeout sec"
				sleep .5
				continue 2
			fi
		done
		break
	done
}

#
# Make every mount commit so that the seq indexes advance: dirty each
# mount's root inode, then sync (tests/funcs/bin/sync, first in PATH,
# syncs every mount through its daemon).
#
t_sync_seq_index()
{
	local m

	for m in $T_MS; do
		t_quiet touch "$m"
	done

	t_quiet sync
}

#
# Retry a command every second until it succeeds; fail the test if it
# hasn't after secs.  A single command argument is a shell command line.
#
t_wait_until_timeout()
{
	local secs="$1"
	local start="$SECONDS"
	shift

	while :; do
		if [ "$#" -eq 1 ]; then
			eval "$1" && return 0
		else
			"$@" && return 0
		fi
		if [ $((SECONDS - start)) -ge "$secs" ]; then
			t_fail "command failed for $secs sec: $*"
		fi
		sleep 1
	done
}

#
# Ours: print whether anything is still mounted at mount nr's mount point and
# how many daemons still serve it, once any daemon had up to 30 s to exit
# (negative mount tests check that a refused mount leaves nothing behind).
#
t_mount_gone()
{
	local mnt
	local n
	local i

	eval mnt="\$T_M$1"
	for i in $(seq 1 300); do
		n=$(pgrep -f "mount.scoutfs .* $mnt( |$)" | wc -l)
		[ "$n" -eq 0 ] && break
		sleep .1
	done
	echo "mounted: $(findmnt -n "$mnt" | wc -l) daemons: $n"
}
