#
# Attribute and data changes returned on one mount are seen at once by
# every other mount.  Each mount in turn is the writer: in its own round
# directory it creates a file, writes, appends, overwrites, links,
# chmods, chowns, truncates, extends and sets times, and after each step
# every mount's stat fields and md5sum of the file must equal the
# writer's (mode, size, nlink, uid, gid and md5 are printed; mtime and
# ctime are compared with the writer's to the nanosecond).
#
# Each round's output goes to a file; the first round is printed and any
# other round that differs is shown as a diff, so the golden holds one
# round whatever the number of mounts.
#

t_require_commands stat md5sum chmod chown truncate touch dd ln rm diff
t_require_mounts 2

umask 022

# what's printed for mount $1's view of name $2 in round $w
shown()
{
	local dir
	dir="$(t_mount_dir "$1")/round.$w"

	stat -c '%A %s %h %u %g' "$dir/$2" 2>&1 | sed -e "s@$dir/@@"
	md5sum "$dir/$2" 2>/dev/null | cut -d ' ' -f 1
}

# compared but not printed: mtime and ctime with nanoseconds
hidden()
{
	stat -c 'mtime %y ctime %z' "$(t_mount_dir "$1")/round.$w/$2" 2>&1 | \
		sed -e "s@$(t_mount_dir "$1")/round.$w/@@"
}

# print the writer's view of name $2 after step $1, then every mount
# whose view differs
check()
{
	local step="$1"
	local name="$2"
	local ws
	local wh
	local s
	local h
	local m

	ws=$(shown "$w" "$name")
	wh=$(hidden "$w" "$name")
	echo "$step: $(echo "$ws" | paste -s -d ' ')"
	for m in $(t_fs_nrs); do
		s=$(shown "$m" "$name")
		h=$(hidden "$m" "$name")
		if [ "$s" != "$ws" ]; then
			echo "$step: mount $m differs: $(echo "$s" | paste -s -d ' ')"
		fi
		if [ "$h" != "$wh" ]; then
			echo "$step: mount $m times differ: $h, writer: $wh"
		fi
	done
}

round()
{
	local d
	d="$(t_mount_dir "$w")/round.$w"

	echo "== create"
	mkdir "$d"
	touch "$d/file"
	check create file

	echo "== write, append and overwrite"
	yes 'scoutfs data line' | head -c 10000 > "$d/file"
	check write file
	echo "appended tail" >> "$d/file"
	check append file
	printf 'XXXX' | dd of="$d/file" bs=1 seek=4094 conv=notrunc status=none
	check overwrite file

	echo "== hard link and unlink"
	ln "$d/file" "$d/link"
	check link file
	check link link
	rm "$d/link"
	check unlink file

	echo "== chmod and chown"
	chmod 0640 "$d/file"
	check chmod file
	chown 22222:44444 "$d/file"
	check chown file
	chmod 4755 "$d/file"
	check chmod-setuid file
	chown 0 "$d/file"
	check chown-root file

	echo "== truncate and extend"
	truncate -s 5000 "$d/file"
	check shrink file
	truncate -s 20000 "$d/file"
	check extend file
	dd if=/dev/zero of="$d/file" bs=4096 seek=10 count=1 status=none conv=notrunc
	check write-past-eof file
	truncate -s 0 "$d/file"
	check truncate-zero file

	echo "== set times"
	echo data > "$d/file"
	touch -m -d @1234567890.123456789 "$d/file"
	check utimens-mtime file
	touch -a -d @1111111111.5 "$d/file"
	# atime before anything reads the file again (a read may update it)
	stat -c 'mtime %Y atime %X' "$d/file"
	for m in $(t_fs_nrs); do
		[ "$(stat -c '%y %x' "$(t_mount_dir "$m")/round.$w/file")" == \
		  "$(stat -c '%y %x' "$d/file")" ] || echo "mount $m sees other times"
	done
	check utimens-atime file

	echo "== remove"
	rm "$d/file"
	check remove file
	rmdir "$d"
	for m in $(t_fs_nrs); do
		test -e "$(t_mount_dir "$m")/round.$w" && echo "mount $m still sees the round dir"
	done
}

t_rounds_per_writer round

t_pass
