# shellcheck shell=bash
#
# Output filters used by tests and the harness.
#

#
# Filter out device ids and mount paths so output is the same for every
# mount and every run.
#
# Mounts live at $T_MNT_ROOT/test.N (T_MNT_ROOT defaults to /mnt; an
# isolated run uses its own root): any "<root>/test.N" becomes
# "/mnt/test", and any remaining "mnt/test.N" becomes "mnt/test", as
# upstream.  stat's Device field is zeroed in both the old format
# (Device: <hex>h/<dec>d) and the coreutils >= 9 one (Device: <maj>,<min>).
#
t_filter_fs()
{
	local root="${T_MNT_ROOT:-/mnt}"
	local re_abs
	local re_rel

	# strip trailing slashes (but keep "/"), escape for a sed BRE
	while [ "${#root}" -gt 1 ] && [ "${root%/}" != "$root" ]; do
		root="${root%/}"
	done
	[ "$root" = "/" ] && root=""
	re_abs=$(printf '%s' "$root" | sed -e 's/[][\.*^$@]/\\&/g')
	re_rel=$(printf '%s' "${root#/}" | sed -e 's/[][\.*^$@]/\\&/g')

	if [ -n "$re_rel" ]; then
		sed -e "s@${re_abs}/test\.[0-9][0-9]*@/mnt/test@g" \
		    -e "s@${re_rel}/test\.[0-9][0-9]*@mnt/test@g" \
		    -e 's@mnt/test\.[0-9]*@mnt/test@g' \
		    -e 's@Device: [a-fA-F0-9]*h/[0-9]*d@Device: 0h/0d@g' \
		    -e 's@Device: [0-9][0-9]*,[0-9][0-9]*@Device: 0h/0d@g'
	else
		sed -e 's@/test\.[0-9][0-9]*@/mnt/test@g' \
		    -e 's@mnt/test\.[0-9]*@mnt/test@g' \
		    -e 's@Device: [a-fA-F0-9]*h/[0-9]*d@Device: 0h/0d@g' \
		    -e 's@Device: [0-9][0-9]*,[0-9][0-9]*@Device: 0h/0d@g'
	fi
}

#
# Filter out expected messages from a kernel log (dmesg) or mount daemon
# log stream, leaving the ones that indicate a problem.  Reads stdin,
# writes stdout.
#
t_filter_dmesg()
{
	local re

	# the kernel can just be noisy
	re=" used greatest stack depth: "
	re="$re|sched: RT throttling activated"

	# mkfs/mount checks partition tables
	re="$re|unknown partition table"

	# dm swizzling
	re="$re|device doesn't appear to be in the dev hash table"
	re="$re|device-mapper:.*uevent:.*version"
	re="$re|device-mapper:.*ioctl:.*initialised"

	# some tests try invalid devices
	re="$re|scoutfs .* error reading super block"
	re="$re| EXT4-fs \(.*\): get root inode failed"
	re="$re| EXT4-fs \(.*\): mount failed"
	re="$re| EXT4-fs \(.*\): no journal found"
	re="$re| EXT4-fs \(.*\): VFS: Can't find ext4 filesystem"

	# dropping caches is fine
	re="$re| drop_caches: "

	# mount and unmount spew a bunch
	re="$re|scoutfs.*client connected"
	re="$re|scoutfs.*client disconnected"
	re="$re|scoutfs.*server starting"
	re="$re|scoutfs.*server ready"
	re="$re|scoutfs.*server accepted"
	re="$re|scoutfs.*server closing"
	re="$re|scoutfs.*server shutting down"
	re="$re|scoutfs.*server stopped"

	# xfstests records test execution in dmesg
	re="$re| run fstests "

	# tests that drop unmount io trigger fencing
	re="$re|scoutfs .* error: fencing "
	re="$re|scoutfs .*: waiting for .* clients"
	re="$re|scoutfs .*: all clients recovered"
	re="$re|scoutfs .* error: client rid.*lock recovery timed out"

	# we test bad devices and options
	re="$re|scoutfs .* error: Required mount option \"metadev_path\" not found"
	re="$re|scoutfs .* error: meta_super META flag not set"
	re="$re|scoutfs .* error: could not open metadev:.*"
	re="$re|scoutfs .* error: Unknown or malformed option,.*"
	re="$re|scoutfs .* error: invalid quorum_heartbeat_timeout_ms value"
	# ... and the same refusals in our mount's words (fs/mount.py, fs/options.py)
	re="$re|scoutfs .* error: invalid [a-z_]* option, must be between"
	re="$re|scoutfs .* error: metadev_path and the data device are the same device"
	re="$re|scoutfs .* error: error reading (metadev|data device) super block"
	re="$re|scoutfs .* error: could not open data device"
	re="$re|scoutfs .* error: (metadev|data device) must be a block device or an image file"
	re="$re|scoutfs .* error: data_super META flag set"
	re="$re|scoutfs .* error: superblock UUID mismatch"

	# in debugging kernels we can slow things down a bit
	re="$re|hrtimer: interrupt took .*"
	re="$re|clocksource: Long readout interval"

	# orphan log trees are reclaimed after forced unmounts
	re="$re|scoutfs .* reclaiming orphan log trees"

	# nfs
	re="$re|NFSD: "
	re="$re|Installing knfsd "
	re="$re|RPC: Registered "
	re="$re|FS-Cache: "
	re="$re|nfsd: last server has exited"

	# forced unmounts, reconnection, recovery and fencing
	re="$re|scoutfs .* forcing unmount"
	re="$re|scoutfs .* reconnect"
	re="$re|scoutfs .* recovery timeout"
	re="$re|scoutfs .* recovery timed out"
	re="$re|scoutfs .* fencing previous leader"
	re="$re|scoutfs .* reclaimed resources"
	re="$re|scoutfs .* error.*quorum"
	re="$re|scoutfs .* quorum .*error"
	re="$re|scoutfs .* error.*btree"
	re="$re|scoutfs .* error.*writing super"
	re="$re|scoutfs .* error.*super block write"
	re="$re|scoutfs .* error freeing merged btree blocks"
	re="$re|scoutfs .* critical transaction commit failure"
	re="$re|scoutfs .* error -67"

	# loop and dm devices resized by tests
	re="$re|loop[0-9]*: detected capacity change"
	re="$re|dm-[0-9]*: detected capacity change"

	# system services
	re="$re|systemd-journald"
	re="$re|process accounting"
	re="$re|Process accounting"

	# format version and super checks
	re="$re|scoutfs .* outside of supported version"
	re="$re|scoutfs .* could not get .*super"

	# misc kernel warnings
	re="$re|core_pattern"
	re="$re|perf: interrupt took too long.*lowering kernel.perf_event_max_sample_rate"
	re="$re|scoutfs .* longest quorum heartbeat .* delay"
	re="$re|block device autoloading is deprecated"
	re="$re|debug_locks_off|turning off the locking correctness validator"
	re="$re|Page cache invalidation failure on direct I/O"
	re="$re|File: .* PID: .* Comm: "

	#
	# The FUSE mount daemons' logs (<run dir>/log/<fsid>.<rid>.log)
	# stand in for dmesg: routine INFO and DEBUG lines and mount,
	# unmount and server lifecycle lines are expected; WARNING and
	# ERROR lines and tracebacks are not.
	#
	re="$re|(^|[][ :])(INFO|DEBUG)([][ :]|$)"
	re="$re|(^|[] :])(un)?mounted( |,|:|$)"
	re="$re|server (starting|ready|stopping|stopped)"

	grep -E -a -v "($re)" | \
		ignore_harmless_unwind_kasan_stack_oob | \
		ignore_harmless_xfs_lockdep_warning
}

#
# Drop KASAN "stack-out-of-bounds in get_reg" reports: the unwinder's
# harmless stack reads.  A report runs from its ===== banner line to the
# next ===== banner line.
#
ignore_harmless_unwind_kasan_stack_oob()
{
	awk '
		BEGIN { in_block = 0; in_bug = 0; lines = 0; }
		( !in_block && $0 ~ /=====/ ) {
			in_block = 1; in_bug = 0; lines = 0;
			saved[lines++] = $0;
			next;
		}
		( in_block && lines == 1 && $0 ~ /KASAN: stack-out-of-bounds in get_reg/ ) {
			in_bug = 1; saved[lines++] = $0; next;
		}
		( in_block && in_bug ) {
			if ($0 ~ /=====/) { in_block = 0; in_bug = 0; lines = 0; }
			next;
		}
		( in_block ) {
			for (i = 0; i < lines; i++) print saved[i];
			in_block = 0; lines = 0;
			if ($0 ~ /=====/) { in_block = 1; saved[lines++] = $0; next; }
		}
		{ print $0; }
		END { for (i = 0; i < lines; i++) print saved[i]; }
	'
}

#
# Drop lockdep "possible circular locking dependency" reports that
# involve xfs's inode lock and fs_reclaim: a known false positive when
# the images live on xfs.  A report runs from its "WARNING: possible
# circular locking dependency" line to its "stack backtrace:" line.
#
ignore_harmless_xfs_lockdep_warning()
{
	awk '
		BEGIN { in_block = 0; n = 0; xfs = 0; reclaim = 0; }
		function flush() {
			if (!(xfs && reclaim))
				for (i = 0; i < n; i++) print block[i];
			in_block = 0; n = 0; xfs = 0; reclaim = 0;
		}
		( !in_block && $0 ~ /WARNING: possible circular locking dependency detected/ ) {
			in_block = 1;
		}
		( in_block ) {
			block[n++] = $0;
			if ($0 ~ /xfs_ilock|xfs_nondir_ilock_class|&xfs_nondir_ilock_class|xfs_dir_ilock_class/)
				xfs = 1;
			if ($0 ~ /fs_reclaim/)
				reclaim = 1;
			if ($0 ~ /stack backtrace:/ || n > 1000)
				flush();
			next;
		}
		{ print $0; }
		END { if (in_block) flush(); }
	'
}
