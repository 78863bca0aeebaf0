#
# fallocate(2) as scoutfs serves it: mode 0 allocates unwritten extents
# and grows the size, FALLOC_FL_KEEP_SIZE allocates without changing it,
# and every other mode is EOPNOTSUPP.  Unwritten blocks read as zeros
# and count as neither online blocks nor in st_blocks; writing into one
# makes that block online.  SEEK_DATA/SEEK_HOLE see unwritten blocks as
# holes.  fallocate is a data change: data_version moves.
#
umask 022

t_require_commands fallocate stat cmp dd truncate scoutfs seek_data_hole

FILE="$T_D0/file"

show()
{
	echo "size $(stat -c %s "$FILE") blocks $(stat -c %b "$FILE")" \
	     "online $(scoutfs stat -s online_blocks "$FILE")" \
	     "offline $(scoutfs stat -s offline_blocks "$FILE")"
}

zeros()
{
	if cmp -s -i "$1:0" -n "$2" "$FILE" /dev/zero; then
		echo "bytes $1+$2 are zero"
	else
		echo "bytes $1+$2 are NOT zero"
	fi
}

echo "== mode 0 grows the size"
touch "$FILE"
echo "data_version $(scoutfs stat -s data_version "$FILE")"
fallocate -l 64K "$FILE"
show
echo "data_version $(scoutfs stat -s data_version "$FILE")"
zeros 0 65536
seek_data_hole "$FILE"

echo "== keep size allocates past the size"
fallocate -n -o 64K -l 64K "$FILE"
show
echo "data_version $(scoutfs stat -s data_version "$FILE")"

echo "== a write into unwritten blocks makes only those online"
dd if=/dev/urandom of="$T_TMP.data" bs=4096 count=2 status=none
dd if="$T_TMP.data" of="$FILE" bs=4096 seek=3 conv=notrunc status=none
show
zeros 0 12288
cmp -s -i 12288:0 -n 8192 "$FILE" "$T_TMP.data" && echo "written blocks read back"
zeros 20480 45056
seek_data_hole "$FILE"

echo "== a partial write zeroes the rest of its block"
printf 'abc' | dd of="$FILE" bs=1 seek=$((8 * 4096 + 10)) conv=notrunc status=none
show
zeros $((8 * 4096)) 10
zeros $((8 * 4096 + 13)) $((4096 - 13))

echo "== mode 0 over allocated blocks and past the size"
fallocate -o 0 -l 96K "$FILE"
show
zeros 65536 32768

echo "== other modes are not supported"
fallocate -p -o 0 -l 4096 "$FILE"
fallocate -z -o 0 -l 4096 "$FILE"
fallocate -c -o 0 -l 4096 "$FILE"
fallocate -i -o 0 -l 4096 "$FILE"
show

echo "== truncate down frees unwritten blocks past the size"
truncate -s 16K "$FILE"
show
fallocate -n -o 1M -l 1M "$FILE"
truncate -s 16K "$FILE"
seek_data_hole "$FILE"

echo "== the same after remount"
t_umount 0
t_mount 0
show
cmp -s -i 12288:0 -n 4096 "$FILE" "$T_TMP.data" && echo "written block reads back"
zeros 0 12288

t_pass
