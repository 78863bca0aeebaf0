#
# Killing a mount's daemon with SIGKILL loses nothing that was synced:
# the devices check clean with fsck and a new mount sees the synced
# files intact.
#
# It runs on the scratch volume, mounted alone: fsck refuses a volume
# other mounts still use, and the test's own cluster would have to lose
# a quorum member to free its devices.
#
umask 022

t_require_commands scoutfs dd md5sum sync findmnt umount

D="$T_MSCR/dir"

t_scratch_mkfs -A
t_scratch_mount

echo "== write and sync files"
mkdir "$D"
for i in 1 2 3; do
	dd if=/dev/urandom of="$T_TMP.data$i" bs=4096 count=$((i * 5)) status=none
	cp "$T_TMP.data$i" "$D/file$i"
done
echo small > "$D/small"
setfattr -n user.x -v synced "$D/small"
ln -s small "$D/symlink"
sync
(cd "$D" && md5sum file1 file2 file3 small) > "$T_TMP.sums"
cat "$T_TMP.sums" | sed -e 's/^[0-9a-f]* /<sum> /'

echo "== kill -9 the mount daemon"
pid=$(t_daemon_pid SCR)
test -n "$pid" || t_fail "couldn't find the mount daemon of $T_MSCR"
kill -9 "$pid"
while kill -0 "$pid" 2>/dev/null; do
	sleep .1
done
echo "daemon gone"
ls "$D" > /dev/null 2>&1 || echo "mount is dead"
umount -l "$T_MSCR" 2>/dev/null
echo "mounted: $(findmnt -n "$T_MSCR" | wc -l)"

echo "== fsck is clean"
scoutfs fsck "$T_EX_META_DEV" "$T_EX_DATA_DEV" 2>&1 | \
	sed -e "s@$T_EX_META_DEV@META@g" -e "s@$T_EX_DATA_DEV@DATA@g"
echo "rc: ${PIPESTATUS[0]}"

echo "== remount sees synced files"
t_scratch_mount
(cd "$D" && md5sum -c --quiet "$T_TMP.sums") && echo "sums match"
for i in 1 2 3; do
	cmp "$T_TMP.data$i" "$D/file$i" && echo "file$i matches"
done
getfattr --absolute-names --only-values -n user.x "$D/small"; echo
readlink "$D/symlink"
ls "$D"

echo "== the remounted fs works"
echo new > "$D/new"
cat "$D/new"
rm "$D/file1"
sync
ls "$D"
t_scratch_umount

t_pass
