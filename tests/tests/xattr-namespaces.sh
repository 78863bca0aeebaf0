#
# The xattr namespaces: user., trusted., security. and the scoutfs.
# tags.  scoutfs.hide. names work but aren't listed, scoutfs.totl. names
# need u64 values, scoutfs. names need a known tag and CAP_SYS_ADMIN.
#
umask 022

t_require_commands touch getfattr setfattr dumb_setxattr setpriv ln mkfifo

FILE="$T_D0/file"
NONROOT="setpriv --reuid=22222 --regid=44444 --clear-groups"

list()
{
	getfattr --absolute-names -d -m - "$@" 2>&1 | t_filter_fs
}

touch "$FILE"

echo "== user, trusted and security set, get and list"
setfattr -n user.u -v user-val "$FILE"
setfattr -n trusted.t -v trusted-val "$FILE"
setfattr -n security.s -v security-val "$FILE"
getfattr --absolute-names --only-values -n user.u "$FILE"; echo
getfattr --absolute-names --only-values -n trusted.t "$FILE"; echo
getfattr --absolute-names --only-values -n security.s "$FILE"; echo
list "$FILE"

echo "== scoutfs.hide. set and get, not listed"
dumb_setxattr -p "$FILE" -n scoutfs.hide.h -v hidden-val
dumb_setxattr -p "$FILE" -n scoutfs.hide.srch.hs -v hidden-srch-val
getfattr --absolute-names --only-values -n scoutfs.hide.h "$FILE"; echo
getfattr --absolute-names --only-values -n scoutfs.hide.srch.hs "$FILE"; echo
list "$FILE"

echo "== scoutfs.srch. is listed"
dumb_setxattr -p "$FILE" -n scoutfs.srch.s -v srch-val
list "$FILE"
setfattr -x scoutfs.srch.s "$FILE"

echo "== scoutfs.totl. valid values"
for v in 10 0 18446744073709551615 0x10 010; do
	echo "'$v': $(dumb_setxattr -p "$FILE" -n scoutfs.totl.a.1.2.3 -v "$v")"
done
getfattr --absolute-names --only-values -n scoutfs.totl.a.1.2.3 "$FILE"; echo

echo "== scoutfs.totl. invalid values leave the old value"
dumb_setxattr -p "$FILE" -n scoutfs.totl.a.1.2.3 -v 10
for v in +1 10. - junk10 10junk -1 " 10" 18446744073709551616 ""; do
	echo "'$v': $(dumb_setxattr -p "$FILE" -n scoutfs.totl.a.1.2.3 -v "$v")"
done
getfattr --absolute-names --only-values -n scoutfs.totl.a.1.2.3 "$FILE"; echo

echo "== scoutfs.totl. names need three numbers"
for n in scoutfs.totl.a.1.2.x scoutfs.totl.a.x.2.3 scoutfs.totl.a.+1.2.3 scoutfs.totl.a.1.2.3x; do
	echo "'$n': $(dumb_setxattr -p "$FILE" -n "$n" -v 1)"
done
echo "'scoutfs.totl.b.0x1.02.3': $(dumb_setxattr -p "$FILE" -n scoutfs.totl.b.0x1.02.3 -v 1)"
list "$FILE"

echo "== scoutfs. needs a known tag"
for n in scoutfs. scoutfs.x scoutfs.foo.x scoutfs.hid.x scoutfs.HIDE.x scoutfs.user.x scoutfs.x.hide.y scoutfs.hide.hide.x scoutfs.totl.indx.a.1.2; do
	echo "'$n': $(dumb_setxattr -p "$FILE" -n "$n" -v 1)"
done

echo "== removing scoutfs. names"
setfattr -x scoutfs.hide.h "$FILE"
setfattr -x scoutfs.hide.h "$FILE" 2>&1 | t_filter_fs
getfattr --absolute-names -n scoutfs.hide.h "$FILE" 2>&1 | t_filter_fs
setfattr -x scoutfs.totl.b.0x1.02.3 "$FILE"
list "$FILE"

echo "== non-root: user. on own file works, scoutfs. and trusted. are EPERM"
$NONROOT touch "$T_D0/nonroot" 2>&1 | t_filter_fs
chmod 777 "$T_D0"
$NONROOT touch "$T_D0/nonroot"
$NONROOT dumb_setxattr -p "$T_D0/nonroot" -n user.x -v 1
$NONROOT dumb_setxattr -p "$T_D0/nonroot" -n trusted.x -v 1
for n in scoutfs.hide.x scoutfs.srch.x scoutfs.totl.a.1.2.3 scoutfs.hide.srch.x; do
	echo "$n: $($NONROOT dumb_setxattr -p "$T_D0/nonroot" -n $n -v 1)"
done
$NONROOT getfattr --absolute-names -d -m - "$T_D0/nonroot" 2>&1 | t_filter_fs

echo "== non-root: no user. xattrs on a root file without write permission"
$NONROOT dumb_setxattr -p "$FILE" -n user.y -v 1
$NONROOT getfattr --absolute-names --only-values -n user.u "$FILE"; echo

echo "== user. is EPERM on symlinks and fifos, trusted. works"
ln -s file "$T_D0/symlink"
mkfifo "$T_D0/fifo"
setfattr -h -n user.x -v 1 "$T_D0/symlink" 2>&1 | t_filter_fs
setfattr -n user.x -v 1 "$T_D0/fifo" 2>&1 | t_filter_fs
setfattr -h -n trusted.x -v 1 "$T_D0/symlink" 2>&1 | t_filter_fs
setfattr -n trusted.x -v 1 "$T_D0/fifo" 2>&1 | t_filter_fs
list -h "$T_D0/symlink" "$T_D0/fifo"

echo "== everything survives remount"
t_umount 0
t_mount 0
list "$FILE"
getfattr --absolute-names --only-values -n scoutfs.hide.srch.hs "$FILE"; echo

t_pass
