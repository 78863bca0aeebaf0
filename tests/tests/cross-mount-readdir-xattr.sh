#
# Directory entries and xattrs changed on one mount are seen at once by
# every other mount.  Each mount in turn is the writer: in its own round
# directory it creates, unlinks and renames entries and sets, replaces
# and removes xattrs, and after each step the sorted listing (name, type,
# link count) and getfattr -d of every mount must equal the writer's.
#
# Each round's output goes to a file; the first round is printed and any
# other round that differs is shown as a diff, so the golden holds one
# round whatever the number of mounts.
#

t_require_commands find sort getfattr setfattr touch mkdir ln mv rm md5sum \
	createmany diff
t_require_mounts 2

umask 022

# mount $1's sorted listing of the round dir
listing()
{
	(cd "$(t_mount_dir "$1")/round.$w" && \
		find . -mindepth 1 -printf '%p %y %n\n' 2>&1 | LC_ALL=C sort)
}

# mount $1's xattrs of the round dir entries named $2...
xattrs()
{
	local m="$1"
	shift
	(cd "$(t_mount_dir "$m")/round.$w" && \
		getfattr -h -d -m - "$@" 2>&1) | sed -e 's/="vvvvvvvvvv*"/="v..."/'
}

# the length of mount $1's value of xattr $2 of round dir entry $3
value_len()
{
	echo "$2 of $3: $(getfattr --only-values -n "$2" \
		"$(t_mount_dir "$1")/round.$w/$3" 2>/dev/null | wc -c) bytes"
}

# a line count and md5sum of view function $2's output on mount $1
summary()
{
	local out
	out=$("$2" "$1" "${@:3}")
	echo "$(echo "$out" | wc -l) lines, md5 $(echo "$out" | md5sum | cut -d ' ' -f 1)"
}

round()
{
	local d
	d="$(t_mount_dir "$w")/round.$w"

	echo "== create entries"
	mkdir "$d"
	touch "$d/a" "$d/b" "$d/c"
	mkdir "$d/sub"
	ln -s a "$d/sym"
	ln "$d/a" "$d/a-link"
	t_check_mounts "$w" create listing

	echo "== unlink and rename"
	rm "$d/b"
	t_check_mounts "$w" unlink listing
	mv "$d/c" "$d/c2"
	t_check_mounts "$w" rename listing
	mv "$d/a-link" "$d/sub/a-link"
	t_check_mounts "$w" rename-across-dirs listing
	touch "$d/victim"
	mv "$d/c2" "$d/victim"
	t_check_mounts "$w" rename-replace listing
	mkdir "$d/sub2"
	mv "$d/sub2" "$d/sub/sub2"
	t_check_mounts "$w" rename-dir listing
	rm "$d/sub/a-link"
	t_check_mounts "$w" unlink-link listing

	echo "== many entries"
	createmany -o "$d/sub/f" 100 > /dev/null
	t_check_mounts "$w" createmany summary listing
	rm -f "$d"/sub/f1*
	t_check_mounts "$w" remove-some summary listing

	echo "== set xattrs"
	setfattr -n user.one -v 1 "$d/a"
	setfattr -n user.two -v two "$d/a"
	setfattr -n trusted.three -v 3 "$d/a"
	setfattr -n user.dir -v on-dir "$d/sub"
	setfattr -h -n trusted.sym -v on-symlink "$d/sym"
	setfattr -n user.empty "$d/victim"
	t_check_mounts "$w" set xattrs a sub sym victim

	echo "== replace and remove xattrs"
	setfattr -n user.two -v 'two replaced' "$d/a"
	setfattr -x user.one "$d/a"
	setfattr -x user.dir "$d/sub"
	t_check_mounts "$w" replace-remove xattrs a sub

	echo "== large and binary values"
	setfattr -n user.big -v "$(printf 'v%.0s' $(seq 1 3000))" "$d/a"
	setfattr -n user.bin -v 0x00ff00ff "$d/a"
	t_check_mounts "$w" large xattrs a
	t_check_mounts "$w" large-len value_len user.big a
	setfattr -x user.big "$d/a"
	t_check_mounts "$w" large-removed xattrs a

	echo "== many xattrs"
	for i in $(seq 1 50); do
		setfattr -n "user.x$i" -v "$i" "$d/victim"
	done
	t_check_mounts "$w" many-set summary xattrs victim
	for i in $(seq 1 50 | grep -v 5); do
		setfattr -x "user.x$i" "$d/victim"
	done
	t_check_mounts "$w" many-removed xattrs victim

	echo "== xattrs follow renames and links"
	mv "$d/a" "$d/sub/a-moved"
	ln "$d/sub/a-moved" "$d/a-again"
	t_check_mounts "$w" moved xattrs a-again sub/a-moved

	echo "== remove everything"
	rm -rf "$d"
	for m in $(t_fs_nrs); do
		test -e "$(t_mount_dir "$m")/round.$w" && echo "mount $m still sees the round dir"
	done
}

t_rounds_per_writer round

t_pass
