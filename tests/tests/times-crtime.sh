#
# Inode times: nanosecond atime and mtime set with touch, set
# independently, ctime updated by metadata changes, and the scoutfs
# crtime fixed at creation.
#

t_require_commands touch stat chmod scoutfs cat

umask 022
export TZ=UTC
cd "$T_D0"

changed() {
	if [ "$2" = "$3" ]; then
		echo "$1 unchanged"
	else
		echo "$1 changed"
	fi
}
ctime() { stat -c '%z' "$1"; }
mtime() { stat -c '%y' "$1"; }
atime() { stat -c '%x' "$1"; }
crtime() { scoutfs stat -s crtime "$1"; }

echo "== set both with nanoseconds"
touch file
touch -d '2001-02-03 04:05:06.123456789' file
stat -c '%x|%y' file
stat -c '%X %Y' file

echo "== set atime and mtime independently"
touch -a -d '2010-10-10 10:10:10.000000001' file
stat -c '%x|%y' file
touch -m -d '2020-02-29 23:59:59.999999999' file
stat -c '%x|%y' file

echo "== times before 1970 and far in the future"
touch -d '1960-06-15 12:00:00.5' file
stat -c '%x|%y' file
stat -c '%X %Y' file
touch -d '2400-01-01 00:00:00.25' file
stat -c '%x|%y' file
stat -c '%X %Y' file

echo "== times after dropping caches"
touch -a -d '1999-12-31 23:59:59.987654321' file
echo 2 > /proc/sys/vm/drop_caches
stat -c '%x|%y' file

echo "== ctime changes with chmod, not with reads"
touch -d '2001-02-03 04:05:06' file
c1=$(ctime file)
m1=$(mtime file)
sleep 0.1
cat file
stat file > /dev/null
changed "ctime after read" "$c1" "$(ctime file)"
chmod 600 file
c2=$(ctime file)
changed "ctime after chmod" "$c1" "$c2"
changed "mtime after chmod" "$m1" "$(mtime file)"
stat -c '%y' file

echo "== ctime changes with link and rename"
sleep 0.1
ln file file-link
c3=$(ctime file)
changed "ctime after link" "$c2" "$c3"
sleep 0.1
mv file-link file-link2
changed "ctime after rename" "$c3" "$(ctime file)"
rm file-link2

echo "== write changes mtime and ctime, not atime"
touch -d '2001-02-03 04:05:06' file
a1=$(atime file)
m1=$(mtime file)
c1=$(ctime file)
sleep 0.1
echo data >> file
changed "atime after write" "$a1" "$(atime file)"
changed "mtime after write" "$m1" "$(mtime file)"
changed "ctime after write" "$c1" "$(ctime file)"

echo "== creating an entry changes the directory's mtime and ctime"
mkdir dir
touch -d '2001-02-03 04:05:06' dir
m1=$(mtime dir)
c1=$(ctime dir)
sleep 0.1
touch dir/new
changed "dir mtime after create" "$m1" "$(mtime dir)"
changed "dir ctime after create" "$c1" "$(ctime dir)"
touch -d '2001-02-03 04:05:06' dir
m1=$(mtime dir)
sleep 0.1
rm dir/new
changed "dir mtime after unlink" "$m1" "$(mtime dir)"

echo "== crtime is fixed at creation"
cr1=$(crtime file)
echo "$cr1" | grep -q '^[0-9][0-9]*\.[0-9]\{9\}$' && echo "crtime is sec.nsec"
sleep 0.1
echo more >> file
touch file
touch -d '1990-01-01' file
chmod 644 file
mv file file2
changed "crtime after writes, touch, chmod, rename" "$cr1" "$(crtime file2)"

echo "== crtime matches ctime at creation"
touch new
cr=$(crtime new)
ct=$(stat -c '%Z' new)
test "${cr%.*}" -le "$ct" && test "${cr%.*}" -ge "$((ct - 1))" && \
	echo "crtime within a second of ctime"

echo "== new files get later crtimes"
sleep 0.1
touch newer
test "$(crtime newer | tr -d .)" -gt "$(crtime new | tr -d .)" && \
	echo "newer crtime is later"

rm -rf file2 dir new newer

t_pass
