#
# Mounts with the wrong devices fail with a message and mount(8)'s
# "mount failure" status (32), leave nothing mounted and no daemon behind.
#
umask 022

t_require_commands mount findmnt pgrep truncate

EMPTY="$T_TMPDIR/empty.img"
MISSING="$T_TMPDIR/missing.img"

filter()
{
	t_filter_fs | sed -e "s@$T_MB0@META@g" -e "s@$T_DB0@DATA@g" \
		-e "s@$T_TMPDIR@TMPDIR@g"
}

# try_mount META DATA
try_mount()
{
	echo "-- meta $1 data $2" | filter
	mount -t scoutfs -o "metadev_path=$1,quorum_slot_nr=0" "$2" "$T_M0" 2>&1 | filter
	echo "rc: ${PIPESTATUS[0]}"
	t_mount_gone 0
}

truncate -s 1G "$EMPTY"

echo "== unmount mount 0"
t_umount 0
t_mount_gone 0

echo "== swapped devices"
try_mount "$T_DB0" "$T_MB0"

echo "== the same device twice"
try_mount "$T_MB0" "$T_MB0"
try_mount "$T_DB0" "$T_DB0"

echo "== a device without a filesystem"
try_mount "$EMPTY" "$T_DB0"
try_mount "$T_MB0" "$EMPTY"

echo "== missing paths"
try_mount "$MISSING" "$T_DB0"
try_mount "$T_MB0" "$MISSING"

echo "== not a block device or file"
try_mount /dev/null "$T_DB0"
try_mount "$T_MB0" /dev/null
try_mount "$T_TMPDIR" "$T_DB0"

echo "== the right devices mount"
t_mount 0
echo "mounted: $(findmnt -n "$T_M0" | wc -l)"
touch "$T_D0/file"
ls "$T_D0"

t_pass
