#
# data_version counts data changes (writes and size changes) and
# not metadata changes; meta_seq and data_seq take the seq of the
# transaction that last changed the inode's metadata / data.  Seqs are
# only compared, never printed: each step starts after a sync so that it
# lands in a new transaction.
#
# Writes stay inside one 4 KiB block: the kernel bumps data_version once
# per written page, so multi-block writes only show "increased".
#
umask 022

t_require_commands scoutfs touch chmod chown setfattr truncate ln

FILE="$T_D0/file"

field()
{
	scoutfs stat -s "$1" "${2:-$FILE}"
}

# run a command after a sync, then print data_version and how the seqs moved
step()
{
	local ms ds

	sync
	ms=$(field meta_seq)
	ds=$(field data_seq)
	"$@"
	echo "data_version $(field data_version)"
	t_compare meta_seq "$ms" "$(field meta_seq)"
	t_compare data_seq "$ds" "$(field data_seq)"
}

echo "== new empty file"
touch "$FILE"
echo "data_version $(field data_version)"
echo "online_blocks $(field online_blocks) offline_blocks $(field offline_blocks)"

echo "== first write"
step dd if=/dev/zero of="$FILE" bs=100 count=1 status=none conv=notrunc

echo "== overwrite"
step dd if=/dev/zero of="$FILE" bs=100 count=1 status=none conv=notrunc

echo "== append"
step dd if=/dev/zero of="$FILE" bs=100 count=1 seek=1 status=none conv=notrunc

echo "== truncate up"
step truncate -s 1000 "$FILE"

echo "== truncate down"
step truncate -s 10 "$FILE"

echo "== truncate to zero"
step truncate -s 0 "$FILE"

echo "== chmod"
step chmod 0600 "$FILE"

echo "== chown"
step chown 22222:44444 "$FILE"

echo "== utimes"
step touch -m -d '2020-01-01 00:00:00' "$FILE"

echo "== set xattr"
step setfattr -n user.a -v 1 "$FILE"

echo "== remove xattr"
step setfattr -x user.a "$FILE"

echo "== hard link"
step ln "$FILE" "$T_D0/link"

echo "== read"
dd if=/dev/zero of="$FILE" bs=100 count=1 status=none conv=notrunc
dv=$(field data_version)
cat "$FILE" > /dev/null
t_compare data_version "$dv" "$(field data_version)"

echo "== multi-block write"
dv=$(field data_version)
dd if=/dev/zero of="$FILE" bs=4096 count=16 status=none conv=notrunc
t_compare data_version "$dv" "$(field data_version)"
echo "online_blocks $(field online_blocks)"

echo "== values persist across remount"
dv=$(field data_version)
sync
ms=$(field meta_seq)
ds=$(field data_seq)
t_umount 0
t_mount 0
t_compare data_version "$dv" "$(field data_version)"
t_compare meta_seq "$ms" "$(field meta_seq)"
t_compare data_seq "$ds" "$(field data_seq)"

echo "== directories have no data"
mkdir "$T_D0/dir"
echo "data_version $(field data_version "$T_D0/dir") data_seq $(field data_seq "$T_D0/dir")"
sync
ms=$(field meta_seq "$T_D0/dir")
touch "$T_D0/dir/file"
t_compare "dir meta_seq" "$ms" "$(field meta_seq "$T_D0/dir")"
echo "data_version $(field data_version "$T_D0/dir") data_seq $(field data_seq "$T_D0/dir")"

echo "== a new file's seqs are at least those of older files"
sync
touch "$T_D0/newer"
t_compare meta_seq "$(field meta_seq)" "$(field meta_seq "$T_D0/newer")"

t_pass
