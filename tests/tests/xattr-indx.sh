#
# .indx. xattrs (scoutfs.[hide.]indx.NAME.MAJOR.MINOR, empty value, root
# only) and scoutfs read-xattr-index: the parsing rules and errnos of
# the names and values, then the (major, minor, ino) index as seen from
# every mount: entries appear when an xattr is set on any mount, one
# per (major, minor, ino) however many xattrs map to it, in order, and
# go when the last xattr mapping to them is removed or the file is
# deleted.  Then read-xattr-index's position parsing, ranges and errors.
#
# Inode numbers are printed as the names of their files; entries of
# other files are left out.
#

t_require_commands scoutfs touch rm stat awk setfattr getfattr dumb_setxattr setpriv
t_require_mounts 2

umask 022

NONROOT="setpriv --reuid=22222 --regid=44444 --clear-groups"
D1=$(t_mount_dir 1)
FILE="$T_D0/file"

ino()
{
	stat -c %i "$1"
}

# the index as mount $1 reads it (further args: FIRST [LAST]), inode
# numbers named from $T_TMP.names, other inodes dropped
index()
{
	local m="$1"
	shift
	scoutfs read-xattr-index -p "$(t_mount_path "$m")" "$@" > "$T_TMP.index" 2>&1
	echo "rc $?" >> "$T_TMP.index"
	awk -v names="$T_TMP.names" '
		BEGIN {
			while ((getline l < names) > 0) {
				split(l, p, " ")
				name[p[1]] = p[2]
			}
		}
		$2 == "=" { if ($3 in name) print $1, $2, name[$3]; next }
		{ print }' "$T_TMP.index"
}

on_all()
{
	local m

	for m in $(t_fs_nrs); do
		echo "mount $m:"
		index "$m" "$@"
	done
}

# no mount's index holds an entry for inode $1
gone()
{
	local m

	for m in $(t_fs_nrs); do
		scoutfs read-xattr-index -p "$(t_mount_path "$m")" | \
			awk -v ino="$1" '$3 == ino { f = 1 } END { exit f }' || return 1
	done
}

touch "$FILE"

echo "== valid names take an empty value, setting again is a no-op"
for n in scoutfs.indx.a.0.0 scoutfs.hide.indx.b.255.18446744073709551615 \
	 scoutfs.indx.hide.c.0x10.010 scoutfs.srch.indx.d.1.2 scoutfs.indx.1.2; do
	echo "'$n': $(dumb_setxattr -p "$FILE" -n "$n" -v "")"
done
echo "'scoutfs.indx.a.0.0' again: $(dumb_setxattr -p "$FILE" -n scoutfs.indx.a.0.0 -v "")"
getfattr --absolute-names -d -m - "$FILE" 2>&1 | t_filter_fs

echo "== any value is EINVAL"
for v in 0 1 x " "; do
	echo "'$v': $(dumb_setxattr -p "$FILE" -n scoutfs.indx.v.1.2 -v "$v")"
done

echo "== bad names are EINVAL"
for n in scoutfs.indx.a.256.1 scoutfs.indx.a.1 scoutfs.indx.1 scoutfs.indx.a.x.1 \
	 scoutfs.indx.a.1.x scoutfs.indx.a.1.+2 scoutfs.indx.a.-1.2 scoutfs.indx.a.1. \
	 scoutfs.indx.a.08.1 scoutfs.indx.a.1.18446744073709551616 scoutfs.indx.a.1.2x \
	 scoutfs.indx.a.1.000000000000000000000001 \
	 scoutfs.indx.totl.a.1.2 scoutfs.totl.indx.a.1.2.3 scoutfs.indx.indx.a.1.2 \
	 scoutfs.hide.indx.hide.a.1.2; do
	echo "'$n': $(dumb_setxattr -p "$FILE" -n "$n" -v "")"
done

echo "== over-long names are ERANGE"
long="scoutfs.indx.$(printf 'x%.0s' $(seq 1 238)).1.2"
echo "${#long} bytes: $(dumb_setxattr -p "$FILE" -n "$long" -v "")"
long="scoutfs.indx.$(printf 'x%.0s' $(seq 1 239)).1.2"
echo "${#long} bytes: $(dumb_setxattr -p "$FILE" -n "$long" -v "")"
setfattr -x "scoutfs.indx.$(printf 'x%.0s' $(seq 1 238)).1.2" "$FILE"

echo "== non-root: EPERM, even for bad numbers and values"
chmod 777 "$T_D0"
$NONROOT touch "$T_D0/nonroot"
for n in scoutfs.indx.a.1.2 scoutfs.hide.indx.a.1.2 scoutfs.indx.a.256.1 scoutfs.indx.a.1.x; do
	echo "'$n': $($NONROOT dumb_setxattr -p "$T_D0/nonroot" -n "$n" -v "")"
done
echo "value: $($NONROOT dumb_setxattr -p "$T_D0/nonroot" -n scoutfs.indx.a.1.2 -v 1)"
echo "remove: $($NONROOT setfattr -x scoutfs.indx.a.0.0 "$T_D0/nonroot" 2>&1 | t_filter_fs)"
echo "bad tags are still EINVAL: $($NONROOT dumb_setxattr -p "$T_D0/nonroot" \
	-n scoutfs.indx.totl.a.1.2 -v "")"
$NONROOT getfattr --absolute-names -d -m - "$T_D0/nonroot" 2>&1 | t_filter_fs

echo "== removing"
setfattr -x scoutfs.indx.a.0.0 "$FILE"
setfattr -x scoutfs.indx.a.0.0 "$FILE" 2>&1 | t_filter_fs
setfattr -x scoutfs.indx.a.256.1 "$FILE" 2>&1 | t_filter_fs
getfattr --absolute-names -d -m - "$FILE" 2>&1 | t_filter_fs
rm -f "$FILE" "$T_D0/nonroot"

echo "== entries set on mount 0 are read on every mount"
mkdir "$T_D0/dir"
for n in 1 2 3 4; do
	touch "$T_D0/dir/f$n"
	echo "$(ino "$T_D0/dir/f$n") f$n"
done > "$T_TMP.names"
setfattr -n scoutfs.hide.indx.x.7.100 "$T_D0/dir/f1"
setfattr -n scoutfs.hide.indx.x.7.100 "$T_D0/dir/f2"
setfattr -n scoutfs.hide.indx.x.7.99 "$T_D0/dir/f3"
setfattr -n scoutfs.hide.indx.y.3.0xffffffffffffffff "$T_D0/dir/f4"
setfattr -n scoutfs.hide.indx.x.8.0 "$T_D0/dir/f1"
on_all

echo "== several xattrs of one file with the same major and minor: one entry"
setfattr -n scoutfs.hide.indx.other.7.100 "$T_D0/dir/f1"
setfattr -n scoutfs.indx.and.another.7.0144 "$T_D0/dir/f1"
index 1

echo "== set on mount 1, read on mount 0"
setfattr -n scoutfs.hide.indx.z.0.5 "$D1/dir/f3"
index 0

echo "== ranges"
index 0 7.100.0
index 0 7.100.0 7.100.-1
index 0 0x7.0144.0 7.0x64.-1
index 0 0.0.0 8.0.0
index 0 3.-1.-1 255.0.0
index 0 8.0.0 8.0.0

echo "== an entry goes with the last xattr mapping to it, seen on mount 1"
setfattr -x scoutfs.hide.indx.x.7.100 "$T_D0/dir/f1"
setfattr -x scoutfs.hide.indx.other.7.100 "$T_D0/dir/f1"
index 1 7.0.0 7.-1.-1
setfattr -x scoutfs.indx.and.another.7.0144 "$T_D0/dir/f1"
index 1 7.0.0 7.-1.-1

echo "== deleted files leave the index on every mount"
i2=$(ino "$T_D0/dir/f2")
i4=$(ino "$T_D0/dir/f4")
rm "$D1/dir/f2"
rm "$T_D0/dir/f4"
t_wait_until_timeout 60 gone "$i2"
t_wait_until_timeout 60 gone "$i4"
on_all

echo "== read-xattr-index usage errors and failures"
scoutfs read-xattr-index -p "$T_M0" 1.2.3 4.5.6 7.8.9; echo "rc $?"
scoutfs read-xattr-index -p "$T_M0" x; echo "rc $?"
scoutfs read-xattr-index -p "$T_M0" 1.2; echo "rc $?"
scoutfs read-xattr-index -p "$T_M0" 1.2.3 1.x.3; echo "rc $?"
scoutfs read-xattr-index -p "$T_M0" 256.0.0; echo "rc $?"
scoutfs read-xattr-index -p "$T_M0" 0x100.0.0; echo "rc $?"
scoutfs read-xattr-index -p "$T_M0" 1.2.3 256.0.0; echo "rc $?"
scoutfs read-xattr-index -p "$T_M0" 2.0.0 1.0.0; echo "rc $?"
scoutfs read-xattr-index -p "$T_M0" 1.2.4 1.2.3; echo "rc $?"
scoutfs read-xattr-index -p "$T_D0/nope" 2>&1 | t_filter_fs; echo "rc ${PIPESTATUS[0]}"
scoutfs read-xattr-index -p /proc; echo "rc $?"
echo "a bad first with a good last carries on:"
index 0 x 8.0.0

echo "== cleanup"
rm -rf "${T_D0:?}"/*
ls -A "$T_D0" | wc -l

t_pass
