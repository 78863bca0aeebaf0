#
# scoutfs walk-inodes: the meta_seq and data_seq indexes as upstream's
# command prints them (a header every 25 rows, columns "%-20s %-20s
# %-10s %-20s": running index, major = seq, minor, ino), positions
# MAJOR[.MINOR[.INO]], its usage errors and failure lines, and what the
# indexes hold: every inode in meta_seq, regular files only in data_seq,
# one entry per inode that moves when its metadata or data changes,
# deleted inodes gone, and the same contents seen from every mount.
#
# Seqs and inode numbers differ from run to run: rows are shown as the
# running index, minor and the name of the file whose inode number the
# row holds; every raw line is first checked against the exact column
# format, the running index against the row count and (major, ino)
# against the previous row's (they must increase); a line that fails is
# printed as "BAD: <line>".
#

t_require_commands scoutfs touch mkdir stat awk sed setfattr rm dd cmp

umask 022
cd "$T_D0"

ino()
{
	stat -c %i "$1"
}

field()
{
	scoutfs stat -s "$1" "$2"
}

walk()
{
	scoutfs walk-inodes -p "$T_M0" "$@"
}

# "ino name" for every file of the test dir (and the dir itself)
names()
{
	local f

	echo "$(ino .) DIR"
	for f in *; do
		echo "$(ino "$f") $f"
	done
}

# check and normalise walk-inodes output on stdin
show()
{
	names > "$T_TMP.names"
	awk -v names="$T_TMP.names" '
		BEGIN {
			while ((getline l < names) > 0) {
				split(l, p, " ")
				name[p[1]] = p[2]
			}
			hdr = sprintf("%-20s %-20s %-10s %-20s", "#", "major", "minor", "ino")
		}
		$1 == "#" {
			if ($0 != hdr)
				print "BAD: " $0
			else
				print "header"
			next
		}
		{
			if ($0 != sprintf("%-20s %-20s %-10s %-20s", $1, $2, $3, $4) ||
			    $1 != rows++ || ($1 > 0 && ($2 < major ||
			    ($2 == major && $4 <= ino)))) {
				print "BAD: " $0
				next
			}
			major = $2
			ino = $4
			print $1, $3, ($4 in name) ? name[$4] : "other"
		}'
}

# how many times file $1 is in index $2 (walked from mount 0)
times_in()
{
	walk "$2" 0 -- -1 | awk -v i="$(ino "$1")" '$1 != "#" && $4 == i' | wc -l
}

echo "== usage errors"
scoutfs walk-inodes; echo "rc $?"
scoutfs walk-inodes meta_seq; echo "rc $?"
scoutfs walk-inodes meta_seq 0; echo "rc $?"
scoutfs walk-inodes meta_seq 0 1 2; echo "rc $?"
scoutfs walk-inodes meta_seq 0 -1; echo "rc $?"
scoutfs walk-inodes meta_seq x 1; echo "rc $?"
scoutfs walk-inodes meta_seq 1.x.3 1; echo "rc $?"
scoutfs walk-inodes meta_seq 0 1.2.z; echo "rc $?"
scoutfs walk-inodes meta_seq 0 1.4294967296; echo "rc $?"

echo "== bad index, path or filesystem"
walk nope 0 1; echo "rc $?"
scoutfs walk-inodes -p "$T_D0/missing" meta_seq 0 1 2>&1 | sed -e "s@$T_D0@D@"
echo "rc ${PIPESTATUS[0]}"
scoutfs walk-inodes -p /proc meta_seq 0 1; echo "rc $?"

echo "== 30 new files in data_seq, a header every 25 rows"
# commit every mount first: files of the tests before (or whatever else this
# mount wrote so far) must not share our files' transaction, so the data_seq
# range of our files holds only them
t_sync_seq_index
for i in $(seq -w 0 29); do
	touch "f$i"
done
t_sync_seq_index
first=$(field data_seq f00)
last=$(field data_seq f29)
walk data_seq "$first" $((last + 1)) | show
echo "the header as printed, up to a '|' put after it:"
walk data_seq "$first" $((last + 1)) | head -n 1 | sed -e 's/$/|/'

echo "== the same from every mount"
walk data_seq "$first" $((last + 1)) > "$T_TMP.walk0"
for m in $(t_fs_nrs); do
	scoutfs walk-inodes -p "$(t_mount_path "$m")" data_seq "$first" $((last + 1)) \
		> "$T_TMP.walk$m"
	cmp -s "$T_TMP.walk0" "$T_TMP.walk$m" || echo "mount $m walks differently"
done

echo "== positions"
s=$(field data_seq f05)
i=$(ino f05)
walk data_seq "$s.0.$i" "$s.0.$i" | show
walk data_seq "$(printf '0x%x.0.0x%x' "$s" "$i")" "$(printf '0%o.0.0%o' "$s" "$i")" | show
walk data_seq "$s.0.$((i + 1))" "$(field data_seq f06).0.$(ino f06)" | show
echo "major alone is MAJOR.0.0: $(walk data_seq "$s" "$s" | wc -l) lines"
echo "first after last: $(walk data_seq "$s.0.$i" "$s.0.$((i - 1))" | wc -l) lines"
echo "minor is not in the key:"
walk data_seq "$s.7.$i" "$s.0.$i" | show

echo "== an xattr moves the file in meta_seq only"
ms=$(field meta_seq f03)
ds=$(field data_seq f03)
setfattr -n user.a -v 1 f03
t_sync_seq_index
t_compare meta_seq "$ms" "$(field meta_seq f03)"
t_compare data_seq "$ds" "$(field data_seq f03)"
ms=$(field meta_seq f03)
walk meta_seq "$ms.0.$(ino f03)" "$ms.0.$(ino f03)" | show
echo "in meta_seq $(times_in f03 meta_seq) time(s), data_seq $(times_in f03 data_seq)"

echo "== a write moves it in both"
ms=$(field meta_seq f04)
ds=$(field data_seq f04)
dd if=/dev/zero of=f04 bs=4096 count=1 status=none conv=notrunc
t_sync_seq_index
t_compare meta_seq "$ms" "$(field meta_seq f04)"
t_compare data_seq "$ds" "$(field data_seq f04)"
ds=$(field data_seq f04)
walk data_seq "$ds.0.$(ino f04)" "$ds.0.$(ino f04)" | show
echo "in meta_seq $(times_in f04 meta_seq) time(s), data_seq $(times_in f04 data_seq)"

echo "== directories are in meta_seq only"
mkdir dir
t_sync_seq_index
echo "dir in meta_seq $(times_in dir meta_seq) time(s), data_seq $(times_in dir data_seq)"

echo "== a file made on another mount"
last_nr=$(t_fs_nrs | tail -n 1)
touch "$(t_mount_dir "$last_nr")/other"
t_sync_seq_index
echo "in meta_seq $(times_in other meta_seq) time(s), data_seq $(times_in other data_seq)"

echo "== deleted files leave both indexes"
gone_ino=$(ino f07)
rm -f f07
gone()
{
	t_sync_seq_index
	! walk meta_seq 0 -- -1 | awk -v i="$gone_ino" '$1 != "#" && $4 == i' | grep -q . &&
	! walk data_seq 0 -- -1 | awk -v i="$gone_ino" '$1 != "#" && $4 == i' | grep -q .
}
t_wait_until_timeout 60 gone
echo "f07 gone"

echo "== cleanup"
cd /
rm -rf "${T_D0:?}"/*
ls -A "$T_D0" | wc -l

t_pass
