#
# Retention (set-attr-x -t 1; spec semantics §5.11, cli-and-harness §3.5):
# while it is set, writes, truncates, any attribute change, unlink, rename of
# or over the file, user. xattr changes and punch-offline fail with EPERM, on
# every mount; reads and other xattrs (scoutfs.hide., trusted.) still work.
# Only root may set or clear it, and a call that clears it may change other
# fields.
#

t_require_commands scoutfs setpriv setfattr getfattr dd truncate touch chmod chown mv rm cat

FILE="$T_D0/file"

run()
{
	"$@" 2>&1 | t_filter_fs
	echo "rc ${PIPESTATUS[0]}"
}

echo "== a file with data and a user xattr"
echo hello > "$FILE"
setfattr -n user.a -v 1 "$FILE"
touch "$T_D0/other"
V=$(scoutfs get-attr-x -v "$FILE")
scoutfs get-attr-x -t "$FILE"

echo "== set retention"
run scoutfs set-attr-x -t 1 "$FILE"
scoutfs get-attr-x -t "$FILE"
scoutfs get-attr-x -t "$T_D1/file"

echo "== these fail with EPERM"
run dd if=/dev/zero of="$FILE" bs=1 count=1 conv=notrunc status=none
run truncate -s 0 "$FILE"
run touch "$FILE"
run chmod 600 "$FILE"
run chown 1:1 "$FILE"
run rm -f "$FILE"
run mv "$FILE" "$T_D0/moved"
run mv "$T_D0/other" "$FILE"
run setfattr -n user.b -v 2 "$FILE"
run setfattr -x user.a "$FILE"
run scoutfs punch-offline "$FILE" -o 0 -l 4096 -V "$V"
echo "== set-attr-x that doesn't clear it, even by root"
run scoutfs set-attr-x -p 5 "$FILE"
run scoutfs set-attr-x -t 1 "$FILE"
echo "== from another mount too"
run rm -f "$T_D1/file"
run truncate -s 0 "$T_D1/file"

echo "== reads and xattrs other than user. still work"
cat "$FILE"
getfattr --absolute-names -n user.a "$FILE" | t_filter_fs
run setfattr -n scoutfs.hide.x -v 1 "$FILE"
run setfattr -x scoutfs.hide.x "$FILE"
run setfattr -n trusted.t -v 1 "$FILE"
run setfattr -x trusted.t "$FILE"

echo "== non-root can't clear it"
run setpriv --reuid=12345 --regid=12345 --clear-groups scoutfs set-attr-x -t 0 "$FILE"
scoutfs get-attr-x -t "$FILE"

echo "== clearing it may set the project id in the same call"
run scoutfs set-attr-x -t 0 -p 7 "$FILE"
scoutfs get-attr-x -t -p "$FILE"
echo "== then everything works again"
run dd if=/dev/zero of="$FILE" bs=1 count=1 conv=notrunc status=none
run setfattr -n user.b -v 2 "$FILE"
run mv "$FILE" "$T_D0/moved"
run rm -f "$T_D0/moved"
ls "$T_D1"

t_pass
