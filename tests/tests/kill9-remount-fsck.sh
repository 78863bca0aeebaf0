#
# Killing a mount's daemon with SIGKILL loses nothing that was synced:
# the devices check clean with fsck and a new mount sees the synced
# files intact.
#
umask 022

t_require_commands scoutfs dd md5sum sync findmnt umount

echo "== write and sync files"
mkdir "$T_D0/dir"
for i in 1 2 3; do
	dd if=/dev/urandom of="$T_TMP.data$i" bs=4096 count=$((i * 5)) status=none
	cp "$T_TMP.data$i" "$T_D0/dir/file$i"
done
echo small > "$T_D0/dir/small"
setfattr -n user.x -v synced "$T_D0/dir/small"
ln -s small "$T_D0/dir/symlink"
sync
(cd "$T_D0/dir" && md5sum file1 file2 file3 small) > "$T_TMP.sums"
cat "$T_TMP.sums" | sed -e 's/^[0-9a-f]* /<sum> /'

echo "== kill -9 the mount daemon"
pid=$(t_daemon_pid 0)
test -n "$pid" || t_fail "couldn't find the mount daemon of $T_M0"
kill -9 "$pid"
while kill -0 "$pid" 2>/dev/null; do
	sleep .1
done
echo "daemon gone"
ls "$T_D0" > /dev/null 2>&1 || echo "mount is dead"
umount -l "$T_M0" 2>/dev/null
echo "mounted: $(findmnt -n "$T_M0" | wc -l)"

echo "== fsck is clean"
scoutfs fsck "$T_MB0" "$T_DB0" 2>&1 | sed -e "s@$T_MB0@META@g" -e "s@$T_DB0@DATA@g"
echo "rc: ${PIPESTATUS[0]}"

echo "== remount sees synced files"
t_mount 0
(cd "$T_D0/dir" && md5sum -c --quiet "$T_TMP.sums") && echo "sums match"
for i in 1 2 3; do
	cmp "$T_TMP.data$i" "$T_D0/dir/file$i" && echo "file$i matches"
done
getfattr --absolute-names --only-values -n user.x "$T_D0/dir/small"; echo
readlink "$T_D0/dir/symlink"
ls "$T_D0/dir"

echo "== the remounted fs works"
echo new > "$T_D0/dir/new"
cat "$T_D0/dir/new"
rm "$T_D0/dir/file1"
sync
ls "$T_D0/dir"

t_pass
