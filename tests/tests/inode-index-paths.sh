#
# scoutfs ino-path and get-referring-entries: every entry that names an
# inode, ordered by (parent ino, entry position), as paths from the fs
# root (no leading slash) and as "dir <ino> pos <pos> type <d_type> name
# <name>" lines; hard links across directories made on one mount and
# asked about from every mount; renames and unlinks seen at once; the
# root, unused and unlinked inodes have none; usage errors, root only.
#
# Paths are printed relative to the test dir ("D/..."), and directory
# inode numbers as the name the directory was made with.
#

t_require_commands scoutfs mkdir touch ln mv rm stat sed mkfifo mknod python3 setpriv
t_require_mounts 2

umask 022

last_nr=$(t_fs_nrs | tail -n 1)
D0="$T_D0"
D1=$(t_mount_dir 1)
rel="${T_D0#"$T_M0"/}"

ino()
{
	stat -c %i "$1"
}

# ino-path and get-referring-entries of ino $2 from mount $1, names filtered
paths()
{
	scoutfs ino-path -p "$(t_mount_path "$1")" "$2" | sed -e "s@^$rel/@D/@"
}

# directories by their first names: "ino name" lines, added by named()
: > "$T_TMP.dirs"
named()
{
	echo "$(ino "$D0/$1") $1" >> "$T_TMP.dirs"
}

entries()
{
	scoutfs get-referring-entries -p "$(t_mount_path "$1")" "$2" | \
		awk -v dirs="$T_TMP.dirs" '
			BEGIN {
				while ((getline l < dirs) > 0) {
					split(l, p, " ")
					name[p[1]] = p[2]
				}
			}
			$1 == "dir" && ($2 in name) { $2 = "D/" name[$2] }
			{ print }'
}

# the same answers from every mount
everywhere()
{
	local what="$1"
	local i="$2"
	local m

	"$what" 0 "$i" > "$T_TMP.want"
	cat "$T_TMP.want"
	for m in $(t_fs_nrs); do
		"$what" "$m" "$i" > "$T_TMP.got"
		cmp -s "$T_TMP.want" "$T_TMP.got" || echo "mount $m differs: $(cat "$T_TMP.got")"
	done
}

for cmd in ino-path get-referring-entries; do
	echo "== $cmd usage errors"
	scoutfs $cmd; echo "rc $?"
	scoutfs $cmd 0; echo "rc $?"
	scoutfs $cmd 1 2; echo "rc $?"
	scoutfs $cmd x; echo "rc $?"
	echo "== $cmd failures"
	scoutfs $cmd -p /proc 1; echo "rc $?"
	setpriv --reuid=22222 --regid=44444 --clear-groups scoutfs $cmd -p "$T_M0" 1
	echo "rc $?"
	echo "== $cmd of the root and of an unused inode print nothing"
	scoutfs $cmd -p "$T_M0" 1; echo "rc $?"
	scoutfs $cmd -p "$T_M0" 123456789123; echo "rc $?"
done

echo "== hard links in several directories, made on mount 1"
mkdir -p "$D1/a/b" "$D1/c"
echo data > "$D1/a/b/file"
ln "$D1/a/b/file" "$D1/c/link"
ln "$D1/a/b/file" "$D1/a/b/second"
i=$(ino "$D0/a/b/file")
named a
named a/b
named c
everywhere paths "$i"
everywhere entries "$i"

echo "== a directory's one entry"
everywhere paths "$(ino "$D0/a/b")"
everywhere entries "$(ino "$D0/a/b")"

echo "== a link renamed on mount 0, a directory renamed on the last mount"
mv "$D0/c/link" "$D0/c/renamed"
mv "$(t_mount_dir "$last_nr")/a" "$(t_mount_dir "$last_nr")/x"
everywhere paths "$i"

echo "== a link removed on the last mount"
rm "$(t_mount_dir "$last_nr")/x/b/second"
everywhere paths "$i"
everywhere entries "$i"

echo "== types"
cd "$D1/c"
mkdir dir
mkfifo fifo
ln -s file symlink
mknod chr c 1 3
mknod blk b 7 0
python3 -c 'import socket; socket.socket(socket.AF_UNIX).bind("sock")'
cd /
for f in dir fifo symlink chr blk sock; do
	entries 0 "$(ino "$D0/c/$f")"
done

echo "== an unlinked file still open has none"
touch "$D0/open"
i=$(ino "$D0/open")
exec 3< "$D0/open"
rm "$D0/open"
everywhere paths "$i"
everywhere entries "$i"
exec 3<&-

echo "== cleanup"
rm -rf "${D0:?}"/*
ls -A "$D0" | wc -l

t_pass
