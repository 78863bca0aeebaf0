#
# Mounts with bad options fail with a message and mount(8)'s "mount
# failure" status (32, as when the kernel's mount(2) returns EINVAL),
# leave nothing mounted and no daemon behind, and the volume still mounts
# afterwards.
#
umask 022

t_require_commands mount findmnt pgrep

filter()
{
	t_filter_fs | sed -e "s@$T_MB0@META@g" -e "s@$T_DB0@DATA@g"
}

# mount with the options of mount 0 plus $1
try_opt()
{
	echo "-- added option: $1"
	t_mount_opt 0 "$1" 2>&1 | filter
	echo "rc: ${PIPESTATUS[0]}"
	t_mount_gone 0
}

# mount with only the given options
try_only()
{
	echo "-- only options: $1" | filter
	mount -t scoutfs -o "$1" "$T_DB0" "$T_M0" 2>&1 | filter
	echo "rc: ${PIPESTATUS[0]}"
	t_mount_gone 0
}

echo "== unmount mount 0"
t_umount 0
t_mount_gone 0

echo "== unknown options"
try_opt bogus
try_opt bogus=1
try_opt quorum_slot
try_opt metadev_path=

echo "== quorum_slot_nr given twice"
try_opt quorum_slot_nr=0

echo "== bad quorum_slot_nr values"
try_only "metadev_path=$T_MB0,quorum_slot_nr=abc"
try_only "metadev_path=$T_MB0,quorum_slot_nr=-1"
try_only "metadev_path=$T_MB0,quorum_slot_nr=15"
try_only "metadev_path=$T_MB0,quorum_slot_nr=99"

echo "== bad quorum_heartbeat_timeout_ms values"
try_opt quorum_heartbeat_timeout_ms=1
try_opt quorum_heartbeat_timeout_ms=1999
try_opt quorum_heartbeat_timeout_ms=60001
try_opt quorum_heartbeat_timeout_ms=abc

echo "== other options out of range"
try_opt lock_idle_count=1
try_opt orphan_scan_delay_ms=1
try_opt ino_alloc_per_lock=0

echo "== no metadev_path"
try_only "quorum_slot_nr=0"

echo "== good options still mount"
t_mount_opt 0 quorum_heartbeat_timeout_ms=2000 2>&1 | filter
echo "rc: ${PIPESTATUS[0]}"
echo "mounted: $(findmnt -n "$T_M0" | wc -l)"
touch "$T_D0/file"
ls "$T_D0"
t_umount 0

echo "== remount mount 0"
t_mount 0
ls "$T_D0"

t_pass
