#
# Forcing a log merge (t_force_log_merge: the server finalizes the log
# trees and merges them into the fs root) loses and changes nothing:
# files, directories, xattrs, renames and unlinks made from every mount
# before the merge read back the same from every mount after it, and
# after every mount is mounted again.  The server counts the merge.
#

t_require_commands dd md5sum find sort getfattr setfattr diff
t_require_mounts 2

umask 022

# what mount $1 sees: names, sizes, modes, link counts, contents, xattrs
record()
{
	local dir

	dir=$(t_mount_dir "$1")
	(cd "$dir" && find . | sort | xargs stat -c '%n %s %a %h %F') > "$2.stat"
	(cd "$dir" && find . -type f | sort | xargs md5sum) > "$2.md5"
	(cd "$dir" && find . | sort | while read -r p; do
		getfattr -h -d -m - --absolute-names "$p" 2>/dev/null
	done) > "$2.xattrs"
}

# every mount sees what mount 0 sees; print mount 0's view once
compare()
{
	local i
	local f

	record 0 "$T_TMP.$1.0"
	for i in $(t_fs_nrs); do
		record "$i" "$T_TMP.$1.$i"
		for f in stat md5 xattrs; do
			cmp -s "$T_TMP.$1.0.$f" "$T_TMP.$1.$i.$f" || \
				echo "mount $i $f differs from mount 0"
		done
	done
}

echo "== every mount writes, renames and removes"
for i in $(t_fs_nrs); do
	d="$(t_mount_dir "$i")/m$i"
	mkdir -p "$d/sub"
	for k in 1 2 3 4; do
		dd if=/dev/urandom of="$d/f$k" bs=4096 count=$((k * 2)) status=none
	done
	echo "mount $i" > "$d/sub/small"
	setfattr -n user.from -v "mount $i" "$d/sub/small"
	ln "$d/f1" "$d/sub/f1-link"
	mv "$d/f2" "$d/sub/f2-renamed"
	rm "$d/f3"
	truncate -s 100 "$d/f4"
done
# a file every mount appends to
for i in $(t_fs_nrs); do
	echo "line from mount $i" >> "$(t_mount_dir "$i")/shared"
done
compare before
(cd "$T_D0" && find . | sort | xargs stat -c '%n %s %a %h')
cat "$T_D0/shared"

echo "== force a log merge"
sv=$(t_server_nr)
test -n "$sv" || t_fail "no server"
start=$(t_counter log_merge_start "$sv")
complete=$(t_counter log_merge_complete "$sv")
t_force_log_merge
t_counter_diff_changed log_merge_start "$start" "$sv"
t_counter_diff_changed log_merge_complete "$complete" "$sv"

echo "== everything reads the same after the merge"
compare after
for f in stat md5 xattrs; do
	diff -u "$T_TMP.before.0.$f" "$T_TMP.after.0.$f" || echo "$f changed by the merge"
done
echo "compared"

echo "== and after mounting again"
t_umount_all
t_mount_all
compare remount
for f in stat md5 xattrs; do
	diff -u "$T_TMP.before.0.$f" "$T_TMP.remount.0.$f" || echo "$f changed by the remount"
done
echo "compared"

echo "== writes after the merge"
for i in $(t_fs_nrs); do
	echo "after merge from $i" >> "$(t_mount_dir "$i")/shared"
done
cat "$T_D0/shared"

rm -rf "$T_D0"/m* "$T_D0/shared"

t_pass
