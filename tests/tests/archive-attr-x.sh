#
# get-attr-x and set-attr-x (GET_ATTR_X / SET_ATTR_X): every field, the
# output forms, usage errors, the errno rules of set (spec semantics §5.7,
# §5.11; cli-and-harness §4.2), and project ids: a u64 anyone may read,
# only root may set, inherited by new files, directories and O_TMPFILE
# files of the directory.  Retention has its own test.
#

t_require_commands scoutfs setpriv mkdir touch stat mknod o_tmpfile_linkat

FILE="$T_D0/file"

run()
{
	"$@" 2>&1 | t_filter_fs
	echo "rc ${PIPESTATUS[0]}"
}

echo "== a new empty file: every field's label, in order"
touch "$FILE"
scoutfs get-attr-x "$FILE" | cut -d: -f1
echo "== fields of an empty file"
scoutfs get-attr-x -v -n -f -s -t -p "$FILE"
echo "== one field prints just its value"
scoutfs get-attr-x -t "$FILE"
scoutfs get-attr-x --data_version "$FILE"
echo "== the seqs and crtime are stat's"
t_compare meta_seq "$(scoutfs stat -s meta_seq "$FILE")" "$(scoutfs get-attr-x -m "$FILE")"
t_compare data_seq "$(scoutfs stat -s data_seq "$FILE")" "$(scoutfs get-attr-x -d "$FILE")"
# (get-attr-x prints nsecs without stat's zero padding)
[ "$(scoutfs stat -s crtime "$FILE" | sed 's/\.0*\([0-9]\)/.\1/')" = \
	"$(scoutfs get-attr-x -r "$FILE")" ] && echo "crtime same"
t_compare ctime "$(stat -c %Z "$FILE")" "$(scoutfs get-attr-x -c "$FILE" | cut -d. -f1)"

echo "== set data_version, an offline size, ctime and crtime"
run scoutfs set-attr-x -v 5 -s 10000 -o -c 1234.5 -r 1500000000.999999999 "$FILE"
scoutfs get-attr-x -v -n -f -c -r -s "$FILE"
stat -c 'size %s ctime %Z' "$FILE"
t_compare data_seq "$(scoutfs get-attr-x -m "$FILE")" "$(scoutfs get-attr-x -d "$FILE")"
echo "== data_version and size can't be set again"
run scoutfs set-attr-x -v 6 "$FILE"
run scoutfs set-attr-x -s 0 "$FILE"
echo "== times alone can"
run scoutfs set-attr-x -c 77.0 "$FILE"
scoutfs get-attr-x -c "$FILE"

echo "== usage and argument errors"
run scoutfs set-attr-x -v 0 "$FILE"
run scoutfs set-attr-x -p 12x "$FILE"
run scoutfs set-attr-x -c 12 "$FILE"
run scoutfs set-attr-x -p 1
run scoutfs get-attr-x
run scoutfs get-attr-x "$FILE" "$FILE"
run scoutfs get-attr-x "$T_D0/nothing"

echo "== EINVAL: size without data_version, offline without size"
touch "$T_D0/f2"
run scoutfs set-attr-x -s 4096 "$T_D0/f2"
run scoutfs set-attr-x -v 2 -o "$T_D0/f2"
echo "== EINVAL: data_version and retention of a directory"
mkdir "$T_D0/dir"
run scoutfs set-attr-x -v 3 "$T_D0/dir"
run scoutfs set-attr-x -t 1 "$T_D0/dir"
run scoutfs set-attr-x -t 0 "$T_D0/dir"
echo "== EINVAL: data_version of a written file"
echo data > "$T_D0/f3"
run scoutfs set-attr-x -v 9 "$T_D0/f3"
echo "== no flags is a no-op"
run scoutfs set-attr-x "$T_D0/f3"
echo "== a device node: the ioctl never reaches the fs"
mknod "$T_D0/chr" c 1 3
run scoutfs get-attr-x -p "$T_D0/chr"

echo "== project id of a directory is inherited by new files, dirs and tmpfiles"
run scoutfs set-attr-x -p 8675309 "$T_D0/dir"
touch "$T_D0/dir/a"
mkdir "$T_D0/dir/sub"
touch "$T_D0/dir/sub/b"
o_tmpfile_linkat "$T_D0/dir" "$T_D0/dir/tmp" 0
for f in dir dir/a dir/sub dir/sub/b dir/tmp f3; do
	echo "$f $(scoutfs get-attr-x -p "$T_D0/$f")"
done
echo "== seen from another mount"
scoutfs get-attr-x -p "$T_D1/dir/sub/b"
echo "== it is a u64"
run scoutfs set-attr-x -p -1 "$T_D0/dir/a"
scoutfs get-attr-x -p "$T_D0/dir/a"
run scoutfs set-attr-x -p 0x10 "$T_D0/dir/a"
scoutfs get-attr-x -p "$T_D0/dir/a"
echo "== clearing it stops the inheritance"
run scoutfs set-attr-x -p 0 "$T_D0/dir"
touch "$T_D0/dir/c"
scoutfs get-attr-x -p "$T_D0/dir/c"

echo "== anyone may read, only root may set"
chmod 644 "$T_D0/dir/a"
run setpriv --reuid=12345 --regid=12345 --clear-groups scoutfs get-attr-x -p "$T_D0/dir/a"
run setpriv --reuid=12345 --regid=12345 --clear-groups scoutfs get-attr-x -t "$T_D0/dir/a"
run setpriv --reuid=12345 --regid=12345 --clear-groups scoutfs set-attr-x -p 1 "$T_D0/dir/a"
run setpriv --reuid=12345 --regid=12345 --clear-groups scoutfs set-attr-x -t 0 "$T_D0/dir/a"
scoutfs get-attr-x -p "$T_D0/dir/a"

t_pass
