#
# scoutfs readdir positions: . is at 0, .. at 1 and entries are given
# increasing positions from 2 when they are created, never reused.  The
# d_off of each getdents record is the position of the next live entry
# (for the last entry its position + 1), and seeking to a position
# resumes at the first entry at or after it.
#

t_require_commands getdents_offsets mkdir touch rm

umask 022
DIR="$T_D0/dir"

echo "== empty directory"
mkdir "$DIR"
getdents_offsets "$DIR"

echo "== 20 entries in creation order"
for i in $(seq -w 1 20); do
	touch "$DIR/f$i"
done
getdents_offsets "$DIR"

echo "== a subdirectory is type 4"
mkdir "$DIR/sub"
getdents_offsets "$DIR" | tail -2

echo "== delete a run in the middle"
for i in $(seq -w 8 12); do
	rm "$DIR/f$i"
done
getdents_offsets "$DIR"

echo "== seek to each dot"
getdents_offsets "$DIR" 0 | head -3
getdents_offsets "$DIR" 1 | head -2

echo "== seek into the gap"
getdents_offsets "$DIR" 10

echo "== seek to the start of the gap"
getdents_offsets "$DIR" 9 | head -2

echo "== seek to the last entry and past the end"
getdents_offsets "$DIR" 22
getdents_offsets "$DIR" 23
getdents_offsets "$DIR" 1000

echo "== new entries get new positions, even reused names"
touch "$DIR/f10" "$DIR/f21"
getdents_offsets "$DIR" 20

echo "== delete the first entries"
rm "$DIR/f01" "$DIR/f02"
getdents_offsets "$DIR" 0 | head -4

echo "== delete the last entry"
rm "$DIR/f21"
getdents_offsets "$DIR" 20

echo "== renames give the new name a new position"
mv "$DIR/f03" "$DIR/renamed"
getdents_offsets "$DIR" 3 | head -2
getdents_offsets "$DIR" 24

echo "== empty again"
rm -rf "$DIR"/*
getdents_offsets "$DIR"
touch "$DIR/last"
getdents_offsets "$DIR"

t_pass
