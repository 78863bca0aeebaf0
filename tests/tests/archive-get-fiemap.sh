#
# get-fiemap (spec semantics §5.4, cli-and-harness §3.5 and §4.2): one line
# per extent, in st_blksize blocks or bytes (-b), logical (-L) or physical
# (-P) offsets only; O for offline extents (physical 0), U for unwritten
# ones (fallocate), L for the last; contiguous blocks are one extent.
# Physical offsets of online blocks vary from run to run: printed as "P".
#

t_require_commands scoutfs dd fallocate mkdir awk

FILE="$T_D0/file"

run()
{
	"$@" 2>&1 | t_filter_fs
	echo "rc ${PIPESTATUS[0]}"
}

# physical offsets (the 4th field, or the 3rd with -P): 0 stays, any other becomes P
phys()
{
	awk '/^[0-9]+: offset:/ { i = ($4 == "length:") ? 3 : 4; if ($i != 0) $i = "P" } { print }'
}

echo "== an empty file has no extents"
touch "$FILE"
scoutfs get-fiemap "$FILE"

echo "== one released block: offline, physical 0, last"
dd if=/dev/urandom of="$FILE" bs=4096 count=1 status=none
run scoutfs release "$FILE" -V "$(scoutfs get-attr-x -v "$FILE")"
scoutfs get-fiemap "$FILE"

echo "== fallocated blocks are unwritten"
rm -f "$FILE"
fallocate -l 12288 "$FILE"
scoutfs get-fiemap -b -L "$FILE"
scoutfs get-fiemap "$FILE" | phys

echo "== offline, online and unwritten extents in one file"
rm -f "$FILE"
dd if=/dev/urandom of="$FILE" bs=4096 count=3 status=none
fallocate -o 12288 -l 8192 "$FILE"
run scoutfs release "$FILE" -V "$(scoutfs get-attr-x -v "$FILE")" -o 0 -l 4096
scoutfs get-fiemap "$FILE" | phys
scoutfs get-fiemap -L "$FILE"
scoutfs get-fiemap --logical --byte "$FILE"
scoutfs get-fiemap -P "$FILE" | phys
echo "== the same from another mount"
scoutfs get-fiemap -L "$T_D1/file"

echo "== holes end extents"
rm -f "$FILE"
dd if=/dev/urandom of="$FILE" bs=4096 count=1 status=none
dd if=/dev/urandom of="$FILE" bs=4096 count=2 seek=4 conv=notrunc status=none
scoutfs get-fiemap -L "$FILE"

echo "== more extents than one call returns"
rm -f "$FILE"
for i in $(seq 0 2 80); do
	dd if=/dev/zero of="$FILE" bs=4096 count=1 seek=$i conv=notrunc status=none
done
scoutfs get-fiemap -L "$FILE" | tail -n 3

echo "== errors"
run scoutfs get-fiemap -P -L "$FILE"
run scoutfs get-fiemap
run scoutfs get-fiemap "$T_D0/nothing"
mkdir "$T_D0/dir"
run scoutfs get-fiemap "$T_D0/dir"

t_pass
