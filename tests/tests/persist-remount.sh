#
# A tree of files, directories, symlinks, hard links, special files and
# xattrs reads back identically after unmounting and mounting again.
#

t_require_commands find sort md5sum stat getfattr setfattr mkfifo

umask 022
cd "$T_D0"

record() {
	cd "$T_D0"
	find . | sort > "$1.find"
	find . -type f | sort | xargs md5sum > "$1.md5"
	find . | sort | xargs stat -c '%n %F %s %h %a %t %T' > "$1.stat"
	find . | sort | xargs stat -c '%n %i %u %g %Y %Z' > "$1.times"
	find . -type l | sort | xargs readlink > "$1.links"
	find . | sort | while read p; do
		getfattr -h -d -m - --absolute-names "$p" 2>/dev/null
	done > "$1.xattrs"
	for p in $(find . -type d | sort); do
		echo "$p $(stat -c %s $p)"
		getdents_offsets "$p" | sort
	done > "$1.dirs"
	cd /
}

echo "== make a tree"
mkdir -p a/b/c d empty
echo small > a/small
yes 'scoutfs persist remount' | head -c 1048576 > a/b/big
dd if=/dev/zero of=a/b/c/sparse bs=4096 seek=100 count=1 status=none
touch a/empty-file
printf '%s\n' one two three > d/lines
ln a/small d/small-link
ln a/small a/b/c/small-link2
ln -s ../a/small d/symlink
ln -s does/not/exist d/dangling
ln -s "$(printf 'x%.0s' $(seq 1 2000))" d/long-symlink
mkfifo d/fifo
mknod d/chr c 1 7
setfattr -n user.one -v 1 a/small
setfattr -n user.empty a/small
setfattr -n user.big -v "$(printf 'v%.0s' $(seq 1 3000))" a/b/big
setfattr -n user.dir -v "directory xattr" a/b
setfattr -n trusted.root -v trusted d/lines
touch -d '2001-02-03 04:05:06.123456789' a/b/c/sparse
chmod 0600 a/small
chmod 1777 empty

echo "== record it"
record "$T_TMP.before"
sed -e "s@^\./@@" "$T_TMP.before.stat"

echo "== remount"
t_umount_all
t_mount_all

echo "== compare after remount"
record "$T_TMP.after"
for f in find md5 stat times links xattrs dirs; do
	if cmp -s "$T_TMP.before.$f" "$T_TMP.after.$f"; then
		echo "$f identical"
	else
		echo "$f differs:"
		diff -u "$T_TMP.before.$f" "$T_TMP.after.$f"
	fi
done

echo "== listing after remount"
cat "$T_TMP.after.find"
cat "$T_TMP.after.md5"
cat "$T_TMP.after.links" | cut -c 1-40
cat "$T_TMP.after.xattrs" | sed -e 's/\(user.big="v\{10\}\)v*/\1.../'

echo "== modify after remount"
cd "$T_D0"
echo changed > a/small
rm -rf a/b/c
cat d/small-link
find . | sort

echo "== cleanup"
rm -rf a d empty
ls -A | wc -l

t_pass
