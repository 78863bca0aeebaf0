#
# scoutfs get-allocated-inos: the allocated inode numbers from -i INO on,
# one per line (in INO's inode group, continuing while they run on past
# its end), or with -s just INO if it is allocated.  Files created on one
# mount are allocated as seen from every mount; unlinked ones stay
# allocated while open and go once deleted.  Usage errors, root only,
# and upstream's option fallthrough: -i also sets the path, so -p must
# come after it.
#
# Inode numbers are printed as the names of their files.
#

t_require_commands scoutfs touch mkdir rm stat awk sort setpriv
t_require_mounts 2

umask 022

D1=$(t_mount_dir 1)

ino()
{
	stat -c %i "$1"
}

# -s from mount $1 of the inode $3 of file $2
allocated()
{
	local out

	out=$(scoutfs get-allocated-inos -i "$3" -s -p "$(t_mount_path "$1")")
	if [ -z "$out" ]; then
		echo "mount $1: $2 not allocated"
	elif [ "$out" == "$3" ]; then
		echo "mount $1: $2 allocated"
	else
		echo "mount $1: $2 printed $out, not $3"
	fi
}

on_all()
{
	local m

	for m in $(t_fs_nrs); do
		allocated "$m" "$@"
	done
}

gone()
{
	local m

	for m in $(t_fs_nrs); do
		[ -z "$(scoutfs get-allocated-inos -i "$1" -s -p "$(t_mount_path "$m")")" ] ||
			return 1
	done
}

echo "== usage errors and failures"
scoutfs get-allocated-inos -p "$T_M0"; echo "rc $?"
scoutfs get-allocated-inos -i x -p "$T_M0"; echo "rc $?"
scoutfs get-allocated-inos -i 1 -p "$T_M0" extra; echo "rc $?"
(cd "$T_D0" && scoutfs get-allocated-inos -p "$T_M0" -i 1 -s); echo "rc $?"
scoutfs get-allocated-inos -i 1 -p /proc; echo "rc $?"
setpriv --reuid=22222 --regid=44444 --clear-groups \
	scoutfs get-allocated-inos -i 1 -p "$T_M0"; echo "rc $?"

echo "== the root is allocated, 0 and an unused inode are not"
scoutfs get-allocated-inos -i 1 -s -p "$T_M0"; echo "rc $?"
scoutfs get-allocated-inos -i 0 -s -p "$T_M0"; echo "rc $?"
scoutfs get-allocated-inos -i 123456789123 -s -p "$T_M0"; echo "rc $?"
scoutfs get-allocated-inos -i 123456789123 -p "$T_M0"; echo "rc $?"

echo "== files created on mount 1 are allocated on every mount"
mkdir "$D1/dir"
for n in $(seq 1 8); do
	touch "$D1/dir/f$n"
done
for n in $(seq 1 8); do
	echo "$(ino "$D1/dir/f$n") f$n"
done > "$T_TMP.names"
on_all f1 "$(ino "$D1/dir/f1")"
on_all f8 "$(ino "$D1/dir/f8")"

echo "== the list from f1 holds every file, ascending"
first=$(ino "$D1/dir/f1")
for m in $(t_fs_nrs); do
	scoutfs get-allocated-inos -i "$first" -p "$(t_mount_path "$m")" > "$T_TMP.list$m"
	sort -n -c "$T_TMP.list$m" || echo "mount $m: not ascending"
	awk -v names="$T_TMP.names" '
		BEGIN {
			while ((getline l < names) > 0) {
				split(l, p, " ")
				name[p[1]] = p[2]
			}
		}
		$1 in name { s = s (s == "" ? "" : " ") name[$1] }
		END { print s }' "$T_TMP.list$m" | sed -e "s/^/mount $m: /"
done
echo "from f5 on mount 0: $(scoutfs get-allocated-inos -i "$(ino "$D1/dir/f5")" \
	-p "$T_M0" | awk -v names="$T_TMP.names" '
		BEGIN {
			while ((getline l < names) > 0) {
				split(l, p, " ")
				name[p[1]] = p[2]
			}
		}
		$1 in name { s = s (s == "" ? "" : " ") name[$1] }
		END { print s }')"

echo "== unlinked files are gone once deleted"
i2=$(ino "$D1/dir/f2")
i3=$(ino "$D1/dir/f3")
rm "$D1/dir/f2"
rm "$T_D0/dir/f3"
t_wait_until_timeout 60 gone "$i2"
t_wait_until_timeout 60 gone "$i3"
on_all f2 "$i2"
on_all f3 "$i3"

echo "== an unlinked file stays allocated while open"
i4=$(ino "$T_D0/dir/f4")
exec 3< "$T_D0/dir/f4"
rm "$T_D0/dir/f4"
on_all f4 "$i4"
exec 3<&-
t_wait_until_timeout 60 gone "$i4"
on_all f4 "$i4"

echo "== cleanup"
rm -rf "${T_D0:?}"/*
ls -A "$T_D0" | wc -l

t_pass
