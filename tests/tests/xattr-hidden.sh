#
# scoutfs.hide. xattrs (the hide tag anywhere among the tags) are left
# out of listxattr and listed by scoutfs list-hidden-xattrs, one name a
# line with unprintable bytes as '?', on every mount.  Usage errors
# exit 64; a file that can't be opened or isn't on scoutfs fails.
#

t_require_commands scoutfs touch setfattr getfattr dumb_setxattr setpriv
t_require_mounts 2

umask 022

NONROOT="setpriv --reuid=22222 --regid=44444 --clear-groups"
FILE="$T_D0/file"
D1=$(t_mount_dir 1)

# hidden names of $1 as mount $2 lists them, sorted
hidden()
{
	local rc

	scoutfs list-hidden-xattrs "$(t_mount_dir "$2")/${1#"$T_D0"/}" > "$T_TMP.hidden" 2>&1
	rc=$?
	LC_ALL=C sort "$T_TMP.hidden"
	echo "rc $rc"
}

touch "$FILE"

echo "== no xattrs, no hidden xattrs"
hidden "$FILE" 0
setfattr -n user.visible -v 1 "$FILE"
setfattr -n scoutfs.srch.s -v 1 "$FILE"
hidden "$FILE" 0

echo "== hide. anywhere among the tags hides"
setfattr -n scoutfs.hide.a -v 1 "$FILE"
setfattr -n scoutfs.srch.hide.b -v 2 "$FILE"
setfattr -n scoutfs.totl.hide.c.1.2.3 -v 3 "$FILE"
setfattr -n scoutfs.hide.indx.d.1.2 "$FILE"
setfattr -n "$(printf 'scoutfs.hide.e\001\tf\177')" -v 4 "$FILE"
getfattr --absolute-names -d -m - "$FILE" 2>&1 | t_filter_fs
for m in $(t_fs_nrs); do
	echo "mount $m:"
	hidden "$FILE" "$m"
done

echo "== hidden values are read by name"
getfattr --absolute-names --only-values -n scoutfs.srch.hide.b "$D1/file"; echo

echo "== removed on mount 1, gone from the list on mount 0"
setfattr -x scoutfs.hide.a "$D1/file"
setfattr -x scoutfs.hide.indx.d.1.2 "$D1/file"
hidden "$FILE" 0

echo "== any user who can open the file may list them"
chmod 644 "$FILE"
$NONROOT scoutfs list-hidden-xattrs "$FILE" | LC_ALL=C sort; echo "rc ${PIPESTATUS[0]}"
chmod 600 "$FILE"
$NONROOT scoutfs list-hidden-xattrs "$FILE" 2>&1 | t_filter_fs; echo "rc ${PIPESTATUS[0]}"

echo "== directories and many names"
mkdir "$T_D0/dir"
for n in $(seq 1 300); do
	setfattr -n "scoutfs.hide.n$n" -v "$n" "$T_D0/dir"
done
scoutfs list-hidden-xattrs "$T_D0/dir" > "$T_TMP.many"; echo "rc $?"
echo "$(wc -l < "$T_TMP.many") names, $(LC_ALL=C sort -u "$T_TMP.many" | wc -l) distinct"
grep -c '^scoutfs\.hide\.n[0-9]*$' "$T_TMP.many"

echo "== usage errors and failures"
scoutfs list-hidden-xattrs; echo "rc $?"
scoutfs list-hidden-xattrs "$FILE" "$FILE"; echo "rc $?"
scoutfs list-hidden-xattrs "$T_D0/nope" 2>&1 | t_filter_fs; echo "rc ${PIPESTATUS[0]}"
scoutfs list-hidden-xattrs /proc/self/status; echo "rc $?"

echo "== cleanup"
rm -rf "${T_D0:?}"/*
ls -A "$T_D0" | wc -l

t_pass
