#
# Truncating into the middle of a block must zero the tail of that block
# so that extending the file again reads zeros past the old size, and the
# zeros must survive a remount.
#
umask 022

t_require_commands head tr truncate od md5sum stat

FILE="$T_D0/file"

show()
{
	stat -c 'size %s' "$FILE"
	od -An -tx1 -j 4990 -N 20 "$FILE"
	md5sum < "$FILE"
}

echo "== write a block of 0xff"
head -c 8192 /dev/zero | tr '\0' '\377' > "$FILE"
stat -c 'size %s' "$FILE"
od -An -tx1 -j 4990 -N 20 "$FILE"

echo "== truncate down to 5000"
truncate -s 5000 "$FILE"
stat -c 'size %s' "$FILE"
od -An -tx1 -j 4990 -N 20 "$FILE"

echo "== extend to 8192, tail reads zeros"
truncate -s 8192 "$FILE"
show

echo "== same after remount"
t_umount 0
t_mount 0
show

echo "== truncate inside the first block and extend across it"
truncate -s 100 "$FILE"
truncate -s 8192 "$FILE"
od -An -tx1 -j 90 -N 20 "$FILE"
cmp -s -i 100:0 -n 8092 "$FILE" /dev/zero && echo "tail after 100 is zero"
md5sum < "$FILE"

echo "== write past a truncated tail"
truncate -s 5000 "$FILE"
printf 'x' | dd of="$FILE" bs=1 seek=6000 conv=notrunc status=none
stat -c 'size %s' "$FILE"
od -An -tx1 -j 4998 -N 4 "$FILE"
od -An -tx1 -j 5998 -N 4 "$FILE"
cmp -s -i 5000:0 -n 1000 "$FILE" /dev/zero && echo "gap 5000..6000 is zero"

t_pass
