#
# A scoutfs directory's st_size is the sum of the lengths of the names
# of its entries (not counting . and ..).
#

t_require_commands stat mkdir touch ln mv rm rmdir

umask 022
cd "$T_D0"

size() {
	local p
	for p in "$@"; do
		echo "$p: size $(stat -c %s "$p") names $(ls -A "$p" | tr -d '\n' | wc -c)"
	done
}

echo "== empty directory"
mkdir d
size d

echo "== creates of each type add the name length"
touch d/a
size d
touch d/bb
size d
mkdir d/ccc
size d
ln -s target d/dddd
size d
mkfifo d/eeeee
size d

echo "== hard links add the name length"
ln d/a d/link-to-a
size d

echo "== rename within the directory changes by the length difference"
mv d/a d/aaaaaaaaaa
size d
mv d/aaaaaaaaaa d/a
size d

echo "== rename out and in"
mkdir other
size other
mv d/bb other/bb
size d other
mv other/bb d/a-much-longer-name
size d other

echo "== rename over an existing entry removes its name"
mv d/a-much-longer-name d/a
size d

echo "== entries in subdirectories do not count"
touch d/ccc/xxxxxxxxxxxxxxxxxxxx
size d d/ccc

echo "== unlinks remove the name length"
rm d/eeeee
size d
rm d/ccc/xxxxxxxxxxxxxxxxxxxx
rmdir d/ccc
size d
rm d/dddd d/link-to-a d/a
size d

echo "== many names"
for i in $(seq 1 100); do
	touch d/file-$i
done
size d
rm -f d/file-*
size d

echo "== test directory"
rmdir d other
size .

t_pass
