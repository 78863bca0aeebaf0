#
# lock_idle_count bounds the idle cluster locks a mount keeps (spec §3.5:
# each lock call frees the oldest idle lock while more than
# lock_idle_count locks are held).  Out of range values (32..100000) are
# refused by the sysfs write and leave the option unchanged.
#
# A lock covers one group of 1024 inode numbers, so to touch many locks
# cheaply mount 1 creates files with ino_alloc_per_lock=1: each new
# inode comes from a new group (spec §7).  Mount 0, limited to 32 idle
# locks, then stats every file; mount 2, with the default limit, does
# the same and keeps a lock per group, which shows the count measures
# what the limit bounds.
#

t_require_commands stat touch wc sort uniq mkdir
t_require_mounts 3

NR_FILES=100
# the limit, plus the locks in use or being freed at any moment (the
# oldest idle lock is freed in the background after each lock call)
SLACK=8

DBG0=$(t_debugfs_path 0)
DBG2=$(t_debugfs_path 2)
t_require_sysfs_dir "$DBG0"
t_require_sysfs_dir "$DBG2"

t_save_all_sysfs_mount_options lock_idle_count
t_save_all_sysfs_mount_options ino_alloc_per_lock

echo "== out of range values are refused"
old=$(t_get_sysfs_mount_option 0 lock_idle_count)
for v in 31 100001 x -1 ""; do
	t_set_sysfs_mount_option 0 lock_idle_count "$v"
	rc=$?
	if [ "$(t_get_sysfs_mount_option 0 lock_idle_count)" == "$old" ]; then
		echo "write '$v': rc $rc, value unchanged"
	else
		echo "write '$v': rc $rc, value changed to $(t_get_sysfs_mount_option 0 lock_idle_count)"
	fi
done

echo "== the bounds are accepted"
for v in 100000 32; do
	t_set_sysfs_mount_option 0 lock_idle_count "$v"
	echo "write $v: rc $?, value $(t_get_sysfs_mount_option 0 lock_idle_count)"
done

echo "== mount 1 creates files in many inode groups"
per_lock=$(t_get_sysfs_mount_option 1 ino_alloc_per_lock)
t_set_sysfs_mount_option 1 ino_alloc_per_lock 1
echo "ino_alloc_per_lock $(t_get_sysfs_mount_option 1 ino_alloc_per_lock)"
mkdir "$T_D1/dir"
for i in $(seq 1 $NR_FILES); do
	touch "$T_D1/dir/f$i"
done
t_set_sysfs_mount_option 1 ino_alloc_per_lock "$per_lock"
groups=$(stat -c '%i' "$T_D1"/dir/f* | while read -r ino; do
	echo $((ino >> 10))
done | sort -u | wc -l)
if [ "$groups" -gt 64 ]; then
	echo "files span more than 64 inode groups"
else
	echo "files span only $groups inode groups"
fi

echo "== mount 0 stats them with lock_idle_count 32"
limit=$(t_get_sysfs_mount_option 0 lock_idle_count)
max=0
for i in $(seq 1 $NR_FILES); do
	stat -c '%s' "$T_D0/dir/f$i" > /dev/null || echo "stat f$i failed"
	n=$(wc -l < "$DBG0/client_locks")
	[ "$n" -gt "$max" ] && max=$n
done
if [ "$max" -le $((limit + SLACK)) ]; then
	echo "client_locks stayed within the limit"
else
	echo "client_locks reached $max lines, limit $limit"
fi

echo "== mount 2 stats them with the default limit"
for i in $(seq 1 $NR_FILES); do
	stat -c '%s' "$T_D2/dir/f$i" > /dev/null || echo "stat f$i failed"
done
n=$(wc -l < "$DBG2/client_locks")
if [ "$n" -gt 64 ]; then
	echo "client_locks holds more than 64 locks"
else
	echo "client_locks holds only $n locks"
fi

echo "== lowering the limit on a mount with many locks"
t_set_sysfs_mount_option 2 lock_idle_count 32
echo "write 32: rc $?"
# each lock call frees one idle lock: stat a few more times
for _ in 1 2 3; do
	for i in $(seq 1 $NR_FILES); do
		stat -c '%s' "$T_D2/dir/f$i" > /dev/null
	done
done
n=$(wc -l < "$DBG2/client_locks")
if [ "$n" -le $((32 + SLACK)) ]; then
	echo "client_locks shrank to the limit"
else
	echo "client_locks still holds $n locks"
fi

echo "== restore"
t_restore_all_sysfs_mount_options lock_idle_count
t_restore_all_sysfs_mount_options ino_alloc_per_lock
if [ "$(t_get_sysfs_mount_option 0 lock_idle_count)" == "$old" ]; then
	echo "lock_idle_count restored"
else
	echo "lock_idle_count not restored"
fi
rm -rf "$T_D0/dir"

t_pass
