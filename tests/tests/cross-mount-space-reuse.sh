#
# Data space freed on one mount can be allocated by another.
#
# On the test volume, each mount in turn writes a file that the next
# mount deletes: every mount's statfs shows the same free count, lower
# by the file's blocks once the writer committed, and back where it
# started once the delete is committed (freed blocks are reusable only
# after a later commit is on disk, so the check commits until the count
# is back, a bounded number of times).
#
# The test volume is too large to fill quickly, so the filling is done on
# a 128 MiB scratch volume mounted twice (a quorum member that serves it
# and a second mount that connects to it): one mount writes until ENOSPC,
# the files are deleted, and then the other mount must be able to write
# as much again; then the other way round.
#

t_require_commands scoutfs dd stat rm cmp mount umount
t_require_mounts 2

MNT1="$T_TMPDIR/scratch1"

mnt_point()
{
	eval echo "\$T_M$1"
}

# free data blocks in mount point $1's statfs (the same count as the
# Free column of scoutfs df's Data row, checked below)
data_free()
{
	stat -f -c %f "$1"
}

# commit mount points $@ (the sync wrapper only knows the test mounts)
commit()
{
	local m

	for m in "$@"; do
		scoutfs sync -p "$m" || echo "scoutfs sync -p $m failed"
	done
}

# commit the mount points $2... until data free in the first one's
# statfs is $1, at most 20 times
wait_free()
{
	local want="$1"
	shift

	for _ in $(seq 1 20); do
		commit "$@"
		[ "$(data_free "$1")" == "$want" ] && return 0
	done
	return 1
}

filter()
{
	sed -e "s@$MNT1@SCRATCH1@g" -e "s@$T_MSCR@SCRATCH0@g"
}

echo "== test volume: a file written on one mount and deleted on another"
# shellcheck disable=SC2086 # every mount point
commit $T_MS
before=$(data_free "$T_M0")
[ "$(scoutfs df -p "$T_M0" | awk '($1 == "Data") { print $5 }')" == "$before" ] && \
	echo "statfs free is df's data free"
for w in $(t_fs_nrs); do
	d=$(( (w + 1) % T_NR_MOUNTS ))
	dd if=/dev/zero of="$(t_mount_dir "$w")/file" bs=1M count=16 status=none || \
		echo "dd on mount $w failed"
	commit "$(mnt_point "$w")"
	for m in $(t_fs_nrs); do
		used=$(( before - $(data_free "$(mnt_point "$m")") ))
		[ "$used" == 4096 ] || \
			echo "round $w: mount $m's statfs shows $used blocks used, not 4096"
	done
	rm "$(t_mount_dir "$d")/file"
	wait_free "$before" "$(mnt_point "$d")" || echo "round $w: data free not restored"
	for m in $(t_fs_nrs); do
		[ "$(data_free "$(mnt_point "$m")")" == "$before" ] || \
			echo "round $w: mount $m's statfs shows $(data_free "$(mnt_point "$m")") free, not $before"
	done
done
echo "every mount's statfs followed the writes and deletes"

echo "== scratch volume of 128 MiB on two mounts"
t_scratch_mkfs -A -d 128M
t_scratch_mount
mkdir -p "$MNT1"
t_quiet mount -t scoutfs -o "metadev_path=$T_EX_META_DEV" "$T_EX_DATA_DEV" "$MNT1"
commit "$T_MSCR" "$MNT1"
total=$(stat -f -c %b "$T_MSCR")
free=$(data_free "$T_MSCR")
echo "data total $total"
[ "$(data_free "$MNT1")" == "$free" ] && echo "both mounts show the same data free"

# fill from mount point $1 until ENOSPC, delete, then write as much from
# $2.  (Statfs still shows free space when the filling mount gets ENOSPC:
# the space lent to the other mount for its transactions counts as free,
# and the server lends a mount at most a quarter of what's free.)
fill_and_reuse()
{
	local from="$1"
	local to="$2"
	local size
	local mb
	local rest

	dd if=/dev/zero of="$from/fill" bs=1M 2>&1 | grep -v -e records -e copied | filter
	dd if=/dev/zero of="$from/fill2" bs=4k 2>&1 | grep -v -e records -e copied | filter
	commit "$from"
	size=$(( $(stat -c %s "$from/fill") + $(stat -c %s "$from/fill2") ))
	[ $(( size * 2 / 4096 )) -gt "$free" ] && echo "wrote more than half the free space"
	rm "$from/fill" "$from/fill2"
	wait_free "$free" "$to" "$from" && echo "data free restored"

	mb=$(( size / 1048576 ))
	rest=$(( (size % 1048576) / 4096 ))
	dd if=/dev/zero of="$to/again" bs=1M count=$mb status=none 2>&1 | filter
	dd if=/dev/zero of="$to/again" bs=4k seek=$(( mb * 256 )) count=$rest status=none \
		2>&1 | filter
	[ "$(stat -c %s "$from/again")" == "$size" ] && echo "the other mount wrote as much again"
	cmp -s -n "$size" /dev/zero "$from/again" && echo "the first mount reads it all"
	rm "$from/again"
	wait_free "$free" "$to" "$from" && echo "data free restored"
}

echo "== fill from the second mount, reuse from the serving mount"
fill_and_reuse "$MNT1" "$T_MSCR"

echo "== fill from the serving mount, reuse from the second mount"
fill_and_reuse "$T_MSCR" "$MNT1"

t_quiet umount "$MNT1"
rmdir "$MNT1"
t_scratch_umount

t_pass
