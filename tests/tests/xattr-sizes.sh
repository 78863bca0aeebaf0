#
# xattr values from 0 to 65535 bytes round-trip, across the boundaries
# where a value spills into more item parts; larger values are E2BIG.
#
umask 022

t_require_commands touch getfattr setfattr dumb_setxattr md5sum wc

FILE="$T_D0/file"

touch "$FILE"

# value of N bytes cycling through the -v pattern, as dumb_setxattr -s makes
pattern()
{
	local size="$1"

	yes 0123456789abcdef | tr -d '\n' | head -c "$size"
}

check()
{
	local size="$1"
	local name="user.size-$size"
	local got

	got=$(getfattr --absolute-names --only-values -n "$name" "$FILE" | md5sum)
	if [ "$got" == "$(pattern "$size" | md5sum)" ]; then
		echo "$name: $(getfattr --absolute-names --only-values -n "$name" "$FILE" | wc -c) bytes match"
	else
		echo "$name: value mismatch"
	fi
}

SIZES="0 1 255 256 896 897 4096 4097 65534 65535"

echo "== set values of each size"
for s in $SIZES; do
	echo "size $s: $(dumb_setxattr -p "$FILE" -n user.size-$s -v 0123456789abcdef -s $s)"
done

echo "== values round-trip"
for s in $SIZES; do
	check $s
done

echo "== values too large"
dumb_setxattr -p "$FILE" -n user.big -v x -s 65536
dumb_setxattr -p "$FILE" -n user.big -v x -s 100000
getfattr --absolute-names -n user.big "$FILE" 2>&1 | t_filter_fs

echo "== replacing a large value with a small one and back"
dumb_setxattr -p "$FILE" -n user.size-65535 -v 0123456789abcdef -s 1
check 65535 | sed -e 's/^user.size-65535: value mismatch/user.size-65535: shrunk/'
getfattr --absolute-names --only-values -n user.size-65535 "$FILE" | wc -c
dumb_setxattr -p "$FILE" -n user.size-65535 -v 0123456789abcdef -s 65535
check 65535

echo "== a too large replacement leaves the old value"
dumb_setxattr -p "$FILE" -n user.size-4096 -v x -s 65536
check 4096

echo "== names listed"
getfattr --absolute-names -m - "$FILE" 2>&1 | t_filter_fs

echo "== values round-trip after remount"
t_umount 0
t_mount 0
for s in $SIZES; do
	check $s
done

echo "== remove all"
for s in $SIZES; do
	setfattr -x user.size-$s "$FILE"
done
getfattr --absolute-names -d -m - "$FILE" 2>&1 | t_filter_fs
echo "listed: $(getfattr --absolute-names -m - "$FILE" | wc -l)"

t_pass
