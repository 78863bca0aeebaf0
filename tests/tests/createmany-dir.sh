#
# A directory of 5000 files made with createmany: listing, lookups,
# directory size and link count, then removing them all.
#

t_require_commands createmany ls wc stat find rm

umask 022
DIR="$T_D0/d"

echo "== create 5000 files"
mkdir "$DIR"
createmany -o "$DIR/f" 5000 > /dev/null || t_fail "createmany failed"

echo "== count them"
ls "$DIR" | wc -l
ls -f "$DIR" | wc -l
find "$DIR" -type f | wc -l

echo "== every name is there once"
ls "$DIR" | sed -e 's/^f//' | sort -n | uniq | awk '
	$1 != NR - 1 { print "missing or extra at", NR - 1; exit }
	END { print "names f0 to f" $1 }'

echo "== stat a few"
for n in f0 f9 f10 f999 f1000 f4999; do
	stat -c '%n %F %s %h %a' "$DIR/$n" | t_filter_fs
done
stat -c '%n %s %h' "$DIR/f5000" 2>&1 | t_filter_fs

echo "== directory size is the sum of the name lengths"
# f0-f9: 10*2, f10-f99: 90*3, f100-f999: 900*4, f1000-f4999: 4000*5
echo "expected $((10*2 + 90*3 + 900*4 + 4000*5))"
stat -c '%s %h' "$DIR"

echo "== remove half"
createmany -o "$DIR/g" 10 > /dev/null
find "$DIR" -name 'f*[02468]' -delete
ls "$DIR" | wc -l
stat -c '%s' "$DIR"

echo "== remove the rest"
find "$DIR" -type f -delete
ls -A "$DIR" | wc -l
stat -c '%s %h' "$DIR"
rmdir "$DIR"
ls -A "$T_D0" | wc -l

t_pass
