#
# xattr name validation: the 255 byte limit, known namespaces, empty
# names after a namespace, and removing names that don't exist.
#
umask 022

t_require_commands touch getfattr setfattr dumb_setxattr

FILE="$T_D0/file"

touch "$FILE"

# a name of exactly $2 bytes starting with prefix $1
name_of_len()
{
	local prefix="$1"
	local len="$2"

	printf '%s' "$prefix"
	printf 'n%.0s' $(seq 1 $((len - ${#prefix})))
}

echo "== names of 255 bytes work"
for p in user. trusted. security. scoutfs.hide. scoutfs.srch.; do
	n=$(name_of_len $p 255)
	echo "$p 255: $(dumb_setxattr -p "$FILE" -n "$n" -v val)"
	echo "$p 255 get: $(getfattr --absolute-names --only-values -n "$n" "$FILE")"
done

echo "== names of 256 bytes are ERANGE"
for p in user. trusted. security. scoutfs.hide.; do
	n=$(name_of_len $p 256)
	echo "$p 256: $(dumb_setxattr -p "$FILE" -n "$n" -v val)"
done
n=$(name_of_len user. 256)
getfattr --absolute-names -n "$n" "$FILE" 2>&1 | t_filter_fs | sed -e 's/user\.n*:/user.<256 bytes>:/'
setfattr -x "$n" "$FILE" 2>&1 | t_filter_fs

echo "== empty name is ERANGE"
dumb_setxattr -p "$FILE" -n "" -v val
getfattr --absolute-names -n "" "$FILE" 2>&1 | t_filter_fs

echo "== unknown namespaces are EOPNOTSUPP"
for n in foo.bar user user_x USER.a usr.a .user.a system.foo; do
	echo "'$n': $(dumb_setxattr -p "$FILE" -n "$n" -v val)"
done
getfattr --absolute-names -n foo.bar "$FILE" 2>&1 | t_filter_fs
setfattr -x foo.bar "$FILE" 2>&1 | t_filter_fs

echo "== a namespace with no name is EINVAL"
for n in user. trusted. security. scoutfs.; do
	echo "'$n': $(dumb_setxattr -p "$FILE" -n "$n" -v val)"
done

echo "== odd bytes in names"
for n in "user.with space" "user.with/slash" "user.a.b.c" "user..." "user.=" "user.caf$(printf '\303\251')"; do
	echo "'$n': $(dumb_setxattr -p "$FILE" -n "$n" -v "$n")"
done

echo "== getting and removing a missing name is ENODATA"
getfattr --absolute-names -n user.missing "$FILE" 2>&1 | t_filter_fs
setfattr -x user.missing "$FILE" 2>&1 | t_filter_fs
setfattr -x trusted.missing "$FILE" 2>&1 | t_filter_fs
setfattr -x scoutfs.hide.missing "$FILE" 2>&1 | t_filter_fs

echo "== removing an existing name, twice"
setfattr -n user.rm -v 1 "$FILE"
setfattr -x user.rm "$FILE" 2>&1 | t_filter_fs
echo "first rc: ${PIPESTATUS[0]}"
setfattr -x user.rm "$FILE" 2>&1 | t_filter_fs
echo "second rc: ${PIPESTATUS[0]}"

echo "== listing"
getfattr --absolute-names -d -m - "$FILE" 2>&1 | t_filter_fs | sed -e 's/nnnnnnnnnn*/n<...>/'

t_pass
