# shellcheck shell=bash
#
# Helpers of the multi-mount tests: finding a mount's daemon, comparing
# what every mount sees, and running one round per writer mount with a
# golden that holds a single round whatever the number of mounts.
#

# the pid of the daemon serving mount $1: its pid file (named after the
# mount's device number), checked to really serve that mount since other
# clusters may be running, else found by its command line
t_daemon_pid()
{
	local mnt
	local majmin
	local pid

	eval mnt="\$T_M$1"
	majmin=$(findmnt -n -o MAJ:MIN "$mnt" | tr -d ' ')
	pid=$(cat "${T_RUN_DIR:-${SCOUTFS_RUN_DIR:-/run/scoutfs}}/pid/$majmin.pid" 2>/dev/null)
	if [ -z "$pid" ] || ! tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -q -- " $mnt "; then
		pid=$(pgrep -f "mount.scoutfs .* $mnt( |$)" | head -1)
	fi
	echo "$pid"
}

# t_check_mounts WRITER STEP FN ARGS...: run the view function FN (called
# as FN MOUNT ARGS...) on every mount after STEP; print the writer's view
# and the view of any mount that differs
t_check_mounts()
{
	local writer="$1"
	local step="$2"
	local fn="$3"
	local wv
	local v
	local m
	shift 3

	wv=$("$fn" "$writer" "$@")
	echo "-- $step"
	echo "$wv"
	for m in $(t_fs_nrs); do
		v=$("$fn" "$m" "$@")
		if [ "$v" != "$wv" ]; then
			echo "-- $step: mount $m differs:"
			echo "$v"
		fi
	done
}

# t_rounds_per_writer FN: run FN once per mount with $w set to that mount
# (the writer), each round's output to a file; print the first round and,
# as a diff, any other round that differs from it
t_rounds_per_writer()
{
	local fn="$1"

	for w in $(t_fs_nrs); do
		"$fn" > "$T_TMP.round.$w" 2>&1
	done
	cat "$T_TMP.round.0"
	for w in $(t_fs_nrs); do
		if ! diff -u "$T_TMP.round.0" "$T_TMP.round.$w" > "$T_TMP.diff.$w"; then
			echo "== round with mount $w writing differs from mount 0's"
			cat "$T_TMP.diff.$w"
		fi
	done
}

# the test dir ($T_Dn) and the mount point ($T_Mn) of mount $1
t_mount_dir()
{
	_t_mount_var D "$1"
}

t_mount_path()
{
	_t_mount_var M "$1"
}
