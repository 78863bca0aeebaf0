#
# setxattr XATTR_CREATE and XATTR_REPLACE: create fails on an existing
# name (EEXIST), replace fails on a missing one (ENODATA), a plain set
# creates or replaces, and both flags together are EINVAL whether the
# name exists or not.
#
umask 022

t_require_commands touch getfattr setfattr dumb_setxattr

FILE="$T_D0/file"

show()
{
	getfattr -d --absolute-names "$FILE" 2>&1 | t_filter_fs
}

touch "$FILE"

echo "== replace a missing name fails"
dumb_setxattr -p "$FILE" -n user.a -v one -r
show

echo "== create a missing name"
dumb_setxattr -p "$FILE" -n user.a -v one -c
show

echo "== create an existing name fails, value unchanged"
dumb_setxattr -p "$FILE" -n user.a -v two -c
show

echo "== replace an existing name"
dumb_setxattr -p "$FILE" -n user.a -v two -r
show

echo "== plain set replaces an existing name"
dumb_setxattr -p "$FILE" -n user.a -v three
show

echo "== plain set creates a missing name"
dumb_setxattr -p "$FILE" -n user.b -v four
show

echo "== replace with a longer and an empty value"
dumb_setxattr -p "$FILE" -n user.b -r -s 300 -v 0123456789
getfattr --absolute-names --only-values -n user.b "$FILE" | wc -c
dumb_setxattr -p "$FILE" -n user.b -r -s 0
getfattr --absolute-names --only-values -n user.b "$FILE" | wc -c
show

echo "== remove then replace fails, create works"
setfattr -x user.a "$FILE"
dumb_setxattr -p "$FILE" -n user.a -v five -r
dumb_setxattr -p "$FILE" -n user.a -v five -c
show

echo "== flags on other namespaces"
dumb_setxattr -p "$FILE" -n trusted.t -v 1 -r
dumb_setxattr -p "$FILE" -n trusted.t -v 1 -c
dumb_setxattr -p "$FILE" -n trusted.t -v 2 -c
dumb_setxattr -p "$FILE" -n scoutfs.hide.h -v 1 -r
dumb_setxattr -p "$FILE" -n scoutfs.hide.h -v 1 -c
dumb_setxattr -p "$FILE" -n scoutfs.hide.h -v 2 -c
dumb_setxattr -p "$FILE" -n scoutfs.hide.h -v 3 -r
getfattr --absolute-names --only-values -n scoutfs.hide.h "$FILE"; echo
getfattr --absolute-names --only-values -n trusted.t "$FILE"; echo

echo "== create and replace together are invalid"
dumb_setxattr -p "$FILE" -n user.a -v six -c -r
dumb_setxattr -p "$FILE" -n user.new -v six -c -r
getfattr --absolute-names --only-values -n user.a "$FILE"; echo

echo "== values seen after remount"
t_umount 0
t_mount 0
getfattr -d -m - --absolute-names "$FILE" 2>&1 | t_filter_fs

t_pass
