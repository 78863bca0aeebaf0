#
# Writes at offsets past EOF leave holes: they read as zeros and have no
# blocks allocated (st_blocks counts 8 512-byte sectors per 4 KiB block).
#
umask 022

t_require_commands dd stat cmp truncate

FILE="$T_D0/file"
MIB=1048576

blocks()
{
	stat -c 'size %s blocks %b' "$1"
}

zero_range()
{
	local off="$1"
	local len="$2"

	if cmp -s -i "$off:0" -n "$len" "$FILE" /dev/zero; then
		echo "bytes $off+$len are zero"
	else
		echo "bytes $off+$len are NOT zero"
	fi
}

echo "== empty file has no blocks"
touch "$FILE"
blocks "$FILE"

echo "== one block at offset 0"
dd if=/dev/urandom of="$T_TMP.blk0" bs=4096 count=1 status=none
dd if="$T_TMP.blk0" of="$FILE" bs=4096 count=1 conv=notrunc status=none
blocks "$FILE"

echo "== one block at 1 MiB"
dd if=/dev/urandom of="$T_TMP.blk1" bs=4096 count=1 status=none
dd if="$T_TMP.blk1" of="$FILE" bs=4096 seek=256 conv=notrunc status=none
blocks "$FILE"

echo "== two blocks at 10 MiB"
dd if=/dev/urandom of="$T_TMP.blk2" bs=8192 count=1 status=none
dd if="$T_TMP.blk2" of="$FILE" bs=4096 seek=2560 conv=notrunc status=none
blocks "$FILE"

echo "== holes read as zeros"
zero_range 4096 $((MIB - 4096))
zero_range $((MIB + 4096)) $((9 * MIB - 4096))

echo "== written blocks read back"
cmp -s -i 0:0 -n 4096 "$FILE" "$T_TMP.blk0" && echo "block at 0 matches"
cmp -s -i $MIB:0 -n 4096 "$FILE" "$T_TMP.blk1" && echo "block at 1 MiB matches"
cmp -s -i $((10 * MIB)):0 -n 8192 "$FILE" "$T_TMP.blk2" && echo "blocks at 10 MiB match"

echo "== a partial write fills one block"
printf 'hello' | dd of="$FILE" bs=1 seek=$((5 * MIB + 100)) conv=notrunc status=none
blocks "$FILE"
zero_range $((5 * MIB)) 100
zero_range $((5 * MIB + 105)) $((4096 - 105))
dd if="$FILE" bs=1 skip=$((5 * MIB + 100)) count=5 status=none; echo

echo "== truncate up adds no blocks"
truncate -s $((20 * MIB)) "$FILE"
blocks "$FILE"
zero_range $((10 * MIB + 8192)) $((10 * MIB - 8192))

echo "== a file that is one hole"
truncate -s $((100 * MIB)) "$T_D0/hole"
blocks "$T_D0/hole"
zero_range_hole()
{
	cmp -s -n $((100 * MIB)) "$T_D0/hole" /dev/zero && echo "hole file is zero"
}
zero_range_hole

echo "== truncate down frees the blocks past the new size"
truncate -s $((MIB + 4096)) "$FILE"
blocks "$FILE"
truncate -s 4096 "$FILE"
blocks "$FILE"
truncate -s 0 "$FILE"
blocks "$FILE"

echo "== the same after remount"
dd if="$T_TMP.blk1" of="$FILE" bs=4096 seek=256 conv=notrunc status=none
t_umount 0
t_mount 0
blocks "$FILE"
zero_range 0 $MIB
cmp -s -i $MIB:0 -n 4096 "$FILE" "$T_TMP.blk1" && echo "block at 1 MiB matches"
blocks "$T_D0/hole"

t_pass
