#
# move-blocks (MOVE_BLOCKS; spec semantics §5.8, cli-and-harness §3.5 and
# §4.2): the extents of a range of one file move to another file of the
# same filesystem, leaving holes; both files get new data_versions, data_seq,
# meta_seq and times; the destination grows, keeping a final partial block.
# Errors in the spec's order.  With the STAGE flag (the agent API:
# fs/agent.py) the blocks go into the destination's offline extents and its
# data_version, data_seq and times stay, as stage's would.
#

t_require_commands scoutfs dd cmp stat touch ln cp head python3 truncate

F="$T_D0/from"
T="$T_D0/to"
ARC="$T_TMP.archive"

field()
{
	scoutfs stat -s "$1" "$2"
}

run()
{
	"$@" 2>&1 | t_filter_fs
	echo "rc ${PIPESTATUS[0]}"
}

# a STAGE move through the agent API: mb_stage FROM FROM_OFF LEN TO TO_OFF VERSION
mb_stage()
{
	python3 - "$@" <<'PY' 2>&1 | t_filter_fs
import os, sys
from fs import agent
f, foff, n, t, toff, dv = sys.argv[1:]
try:
    agent.move_blocks(f, int(foff), int(n), t, int(toff), int(dv), stage=True)
    print("staged")
except agent.ControlError as e:
    print(f"stage move failed: {os.strerror(e.errno)} ({e.errno})")
PY
}

# the lines of stat that a move changes, and the seqs
state()
{
	echo "$(stat -c '%s %b %y %z' "$1") $(field data_version "$1") $(field data_seq "$1") $(field meta_seq "$1")"
}

# what changed between two state lines: size blocks mtime ctime data_version data_seq meta_seq
changes()
{
	local names=(size blocks mtime ctime data_version data_seq meta_seq)
	local a=($1) b=($2) out="" i
	# %y and %z are three words each (date time zone)
	a=("${a[0]}" "${a[1]}" "${a[2]}${a[3]}${a[4]}" "${a[5]}${a[6]}${a[7]}" "${a[8]}" "${a[9]}" "${a[10]}")
	b=("${b[0]}" "${b[1]}" "${b[2]}${b[3]}${b[4]}" "${b[5]}${b[6]}${b[7]}" "${b[8]}" "${b[9]}" "${b[10]}")
	for i in 0 1 2 3 4 5 6; do
		[ "${a[$i]}" != "${b[$i]}" ] && out="$out ${names[$i]}"
	done
	echo "changed:${out:- nothing}"
}

plus_one()
{
	if [ "$3" -eq "$(($2 + 1))" ]; then echo "$1 +1"; else echo "$1 $2 -> $3"; fi
}

echo "== usage errors"
run scoutfs move-blocks
run scoutfs move-blocks "$F"
run scoutfs move-blocks "$F" "$T"
run scoutfs move-blocks "$F" "$T" -f 0
run scoutfs move-blocks "$F" "$T" -f 0 -l 4K
run scoutfs move-blocks "$F" "$T" "$T" -f 0 -l 4K -t 0
run scoutfs move-blocks "$F" "$T" -f 0 -l 5Q -t 0

echo "== move three blocks and a partial one into an empty file"
dd if=/dev/urandom of="$ARC" bs=1000 count=13 status=none
cp "$ARC" "$F"
touch "$T"
sync
FS=$(state "$F")
TS=$(state "$T")
run scoutfs move-blocks "$F" -f 0 -l 13000 "$T" -t 0
cmp "$ARC" "$T" && echo "to holds the bytes"
head -c 13000 /dev/zero | cmp - "$F" && echo "from reads zeros"
stat -c '%n %s %b' "$F" "$T" | t_filter_fs
echo "from $(changes "$FS" "$(state "$F")")"
echo "to $(changes "$TS" "$(state "$T")")"
plus_one "from data_version" "$(echo $FS | cut -d' ' -f9)" "$(field data_version "$F")"
plus_one "to data_version" "$(echo $TS | cut -d' ' -f9)" "$(field data_version "$T")"

echo "== moving a final partial block sets the destination size"
rm -f "$F" "$T"
head -c 5000 "$ARC" > "$F"
touch "$T"
run scoutfs move-blocks "$F" -f 4K -l 904 "$T" -t 8K
stat -c '%n %s %b' "$F" "$T" | t_filter_fs
tail -c 904 "$F" | cmp - <(head -c 904 /dev/zero) && echo "from's tail is a hole"
tail -c 904 "$T" | cmp - <(head -c 5000 "$ARC" | tail -c 904) && echo "to ends with it"

echo "== a length past the source's EOF moves what is there"
rm -f "$F" "$T"
head -c 8192 "$ARC" > "$F"
touch "$T"
run scoutfs move-blocks "$F" -f 4K -l 1M "$T" -t 0
stat -c '%n %s %b' "$F" "$T" | t_filter_fs

echo "== errors, in the order of the spec"
rm -f "$F" "$T"
cp "$ARC" "$F"
touch "$T"
# length 0 succeeds before anything is checked
run scoutfs move-blocks "$F" -f 1 -l 0 "$T" -t 1
# wrapping offsets
run scoutfs move-blocks "$F" -f 0xfffffffffffff000 -l 8K "$T" -t 0
run scoutfs move-blocks "$F" -f 0 -l 8K "$T" -t 0xfffffffffffff000
# the same inode
ln "$F" "$T_D0/link"
run scoutfs move-blocks "$F" -f 0 -l 4K "$T_D0/link" -t 8K
# another filesystem, another mount of this volume, a target that is no scoutfs file
cp "$ARC" "$T_TMP.other"
cd "$(dirname "$T_TMP")"
OTHER="$(basename "$T_TMP").other"
run scoutfs move-blocks "$OTHER" -f 0 -l 4K "$T" -t 0
run scoutfs move-blocks "$T_D1/from" -f 0 -l 4K "$T" -t 0
run scoutfs move-blocks "$F" -f 0 -l 4K "$OTHER" -t 0
cd - > /dev/null
# unaligned offsets, an unaligned length that does not end at the source's EOF
run scoutfs move-blocks "$F" -f 1 -l 4K "$T" -t 0
run scoutfs move-blocks "$F" -f 0 -l 4K "$T" -t 1
run scoutfs move-blocks "$F" -f 0 -l 100 "$T" -t 0
# from_off at or past the source's size: nothing to do
run scoutfs move-blocks "$F" -f 16K -l 4K "$T" -t 0
stat -c '%n %s %b' "$F" "$T" | t_filter_fs
# a directory can't be opened for writing
run scoutfs move-blocks "$T_D0" -f 0 -l 4K "$T" -t 0
# destination blocks in the way
echo hi > "$T"
run scoutfs move-blocks "$F" -f 0 -l 4K "$T" -t 0
# offline blocks in the source, in the destination
V=$(field data_version "$F")
scoutfs release "$F" -V "$V" -o 4K -l 4K
run scoutfs move-blocks "$F" -f 0 -l 4K "$T" -t 8K
scoutfs stage "$ARC" "$F" -V "$V"
V=$(field data_version "$T")
scoutfs release "$T" -V "$V"
run scoutfs move-blocks "$F" -f 0 -l 4K "$T" -t 8K
rm -f "$T"
touch "$T"
# retention on the destination
scoutfs set-attr-x -t 1 "$T"
run scoutfs move-blocks "$F" -f 1 -l 4K "$T" -t 0
scoutfs set-attr-x -t 0 "$T"

echo "== STAGE moves into offline extents, keeping the destination's versions"
rm -f "$F" "$T"
cp "$ARC" "$F"
touch "$T"
scoutfs setattr -V 5 -s 13000 -o -t 7.8 "$T"
sync
TS=$(state "$T")
FV=$(field data_version "$F")
mb_stage "$F" 0 4096 "$T" 0 4
mb_stage "$F" 0 8192 "$T" 16384 5
mb_stage "$F" 4096 8904 "$T" 4096 5
echo "to online $(field online_blocks "$T") offline $(field offline_blocks "$T")"
echo "to $(changes "$TS" "$(state "$T")")"
plus_one "from data_version" "$FV" "$(field data_version "$F")"
mb_stage "$F" 0 4096 "$T" 4096 5
mb_stage "$F" 0 4096 "$T" 0 5
echo "to online $(field online_blocks "$T") offline $(field offline_blocks "$T")"
cmp "$ARC" "$T" && echo "to holds the bytes"
t_pass
