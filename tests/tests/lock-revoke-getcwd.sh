#
# A process whose cwd is deep in the fs keeps working after its mount
# drops its cluster locks: getcwd, pwd and file operations in the cwd
# revalidate against new grants.  The locks are dropped twice: by the
# statfs_lock_purge trigger (every idle lock goes, spec §3.5) and by
# another mount writing in the cwd (the server revokes the grant).
#
# The debugfs path is computed once up front: t_debugfs_path asks the
# mount for its identity, which takes locks of its own, so it must not
# run between the purge and the count of client_locks.
#

t_require_commands strace stat pwd mkdir touch cat wc ls rm python3
t_require_mounts 2

umask 022

DBG=$(t_debugfs_path 0)
t_require_sysfs_dir "$DBG"

nr_locks()
{
	wc -l < "$DBG/client_locks"
}

# every way of asking for the cwd, with the per-run mount path replaced
show_cwd()
{
	echo "pwd: $(pwd | sed -e "s@^$T_D0@D0@")"
	echo "pwd -P: $(pwd -P | sed -e "s@^$T_D0@D0@")"
	echo "/bin/pwd: $(/bin/pwd | sed -e "s@^$T_D0@D0@")"
	echo "os.getcwd: $(python3 -c 'import os; print(os.getcwd())' | sed -e "s@^$T_D0@D0@")"
	# the getcwd syscall itself must succeed (a positive length, not an error)
	strace -q -e trace=getcwd /bin/pwd 2>&1 >/dev/null | \
		sed -e "s@\"$T_D0@\"D0@" -e 's/= [1-9][0-9]*$/= <len>/'
}

# what's in the cwd, read through the cwd
show_dir()
{
	ls
	cat file
}

echo "== make a deep dir and use it from its cwd"
DEEP="a/b/c/d/e/f/g/h"
mkdir -p "$T_D0/$DEEP"
echo "first line" > "$T_D0/$DEEP/file"
# files created by the other mounts come from their own inode ranges,
# so mount 0 reading them holds more lock groups
for i in $(t_fs_nrs); do
	eval d="\$T_D$i"
	echo "from mount $i" > "$d/other.$i"
done
cd "$T_D0/$DEEP" || t_fail "cd into the deep dir failed"
show_cwd
show_dir
cat "$T_D0"/other.* > /dev/null

echo "== purge idle locks with statfs"
before=$(nr_locks)
t_trigger_arm statfs_lock_purge 0
stat -f . > /dev/null
after=$(nr_locks)
t_trigger_show statfs_lock_purge "after statfs" 0
if [ "$after" -lt "$before" ]; then
	echo "client_locks shrank"
else
	echo "client_locks didn't shrink: before $before after $after"
fi

echo "== getcwd and file ops in the cwd after the purge"
show_cwd
show_dir
echo "second line" >> file
touch new
mkdir sub
cd sub && cd .. || echo "cd into and out of a subdir failed"
show_cwd
ls
cat file
rm new
rmdir sub
ls

echo "== another mount writes in the cwd"
echo "written by mount 1" >> "$T_D1/$DEEP/file"
touch "$T_D1/$DEEP/from-mount-1"
show_cwd
show_dir

echo "== purge again and remove from the other mount"
t_trigger_arm statfs_lock_purge 0
stat -f . > /dev/null
t_trigger_show statfs_lock_purge "after statfs" 0
rm "$T_D1/$DEEP/from-mount-1"
show_cwd
show_dir

cd / || t_fail "cd / failed"
rm -rf "$T_D0/a" "$T_D0"/other.*

t_pass
