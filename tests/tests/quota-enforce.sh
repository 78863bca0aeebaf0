#
# Quota enforcement on two mounts: rules selecting a uid (inode count),
# a gid (data allocation: write and fallocate) and a project (inode
# count), against .totl. totals kept in xattrs as an agent would; the
# highest-sorting matching rule wins.  Rules added on mount 0 limit
# mount 1 once its caches are dropped (debugfs drop_quota_check_cache
# and drop_weak_item_cache stand in for waiting 5 s).
#

t_require_commands scoutfs touch mkdir setfattr setpriv dd fallocate
t_require_mounts 2

NONROOT="setpriv --reuid=22222 --regid=44444 --clear-groups"
D1=$(t_mount_dir 1)

# commit the totals and forget the cached totals and checks of the two
# mounts the test uses
settle()
{
	local m

	sync
	for m in 0 1; do
		echo 1 > "$(t_debugfs_path "$m")/drop_weak_item_cache"
		echo 1 > "$(t_debugfs_path "$m")/drop_quota_check_cache"
	done
}

filt()
{
	sed "s@$T_D0@D0@g; s@$D1@D1@g"
}

mkdir "$T_D0/q" "$T_D0/usage"
chmod 777 "$T_D0/q"
touch "$T_D0/usage/a" "$T_D0/usage/b" "$T_D0/usage/c"

echo "== uid 22222 may have 2 inodes (count of 77.22222.1)"
scoutfs quota-add -p "$T_M0" -r "20 77,L,- 22222,U,S 1,L,- I 2 C"
setfattr -n scoutfs.totl.u.77.22222.1 -v 1 "$T_D0/usage/a"
$NONROOT touch "$T_D0/q/u1"
settle
echo "one: created"
setfattr -n scoutfs.totl.u.77.22222.1 -v 1 "$T_D0/usage/b"
settle
$NONROOT touch "$T_D0/q/u2" 2>&1 | filt
$NONROOT touch "$D1/q/u2" 2>&1 | filt
$NONROOT mkdir "$D1/q/d2" 2>&1 | filt
echo "root is not selected:"
touch "$T_D0/q/root1" "$D1/q/root2" && echo created
echo "one fewer:"
setfattr -x scoutfs.totl.u.77.22222.1 "$T_D0/usage/b"
settle
$NONROOT touch "$D1/q/u2" && echo created

echo "== a rule added on mount 0 limits mount 1"
scoutfs quota-add -p "$T_M0" -r "20 78,L,- 44444,G,S 1,L,- D 100 -"
$NONROOT dd if=/dev/zero of="$D1/q/u2" bs=4096 count=1 status=none && echo "data written"
setfattr -n scoutfs.totl.g.78.44444.1 -v 100 "$T_D0/usage/a"
settle
echo "gid 44444's total 78.44444.1 is at 100:"
$NONROOT dd if=/dev/zero of="$D1/q/u2" bs=4096 count=1 seek=1 status=none 2>&1 | filt
$NONROOT dd if=/dev/zero of="$T_D0/q/u2" bs=4096 count=1 seek=2 status=none 2>&1 | filt
$NONROOT fallocate -l 65536 "$D1/q/u2" 2>&1 | filt
echo "rewriting allocated blocks allocates nothing:"
$NONROOT dd if=/dev/zero of="$D1/q/u2" bs=4096 count=1 conv=notrunc status=none && echo written
echo "another group's file:"
dd if=/dev/zero of="$D1/q/root2" bs=4096 count=2 status=none && echo written
echo "under the limit again:"
setfattr -n scoutfs.totl.g.78.44444.1 -v 99 "$T_D0/usage/a"
settle
$NONROOT fallocate -l 65536 "$D1/q/u2" && echo allocated

echo "== project 5 may have 1 inode (count of 79.5.1)"
scoutfs quota-add -p "$T_M0" -r "20 79,L,- 5,P,S 1,L,- I 1 C"
mkdir "$T_D0/proj"
scoutfs set-attr-x -p 5 "$T_D0/proj"
setfattr -n scoutfs.totl.p.79.5.1 -v 1 "$T_D0/usage/c"
settle
touch "$T_D0/proj/f" 2>&1 | filt
mkdir "$D1/proj/d" 2>&1 | filt
touch "$T_D0/q/not-in-project" && echo "created outside the project"

echo "== the highest-sorting matching rule wins"
scoutfs quota-add -p "$T_M0" -r "30 90,L,- 0,U,- 0,L,- I 1000 C"
settle
$NONROOT touch "$D1/q/u3" && echo "created: 90.22222.0 is below 1000"
touch "$D1/proj/f" && echo "created: 90.0.0 is below 1000"
scoutfs quota-del -p "$T_M0" -r "30 90,L,- 0,U,- 0,L,- I 1000 C"
settle
$NONROOT touch "$D1/q/u4" && echo "created: 77.22222.1 counts 1 of 2"
touch "$T_D0/proj/g" 2>&1 | filt

echo "== no rules, no limits"
scoutfs quota-wipe -p "$T_M0"
settle
$NONROOT touch "$D1/q/u5" && touch "$T_D0/proj/g" && echo created

t_pass
