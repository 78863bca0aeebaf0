#
# ACLs, link counts and sizes changed on one mount are seen at once by
# every other mount.  Each mount in turn is the writer: in its own round
# directory it sets and removes access and default ACLs (getfacl and the
# access they grant to another uid must be the same from every mount),
# adds and removes hard links (every name's link count everywhere), and
# truncates and extends a file (size and contents everywhere).
#
# Each round's output goes to a file; the first round is printed and any
# other round that differs is shown as a diff, so the golden holds one
# round whatever the number of mounts.
#

t_require_commands setfacl getfacl setpriv stat ln rm truncate dd md5sum cat diff
t_require_mounts 2

umask 022

AS_U2="setpriv --reuid=22222 --regid=44444 --clear-groups"

# views of mount $1, relative to the round dir
acl()
{
	(cd "$(t_mount_dir "$1")/round.$w" && getfacl -n -p "${@:2}" 2>&1)
}

access()
{
	local d
	local p
	d="$(t_mount_dir "$1")/round.$w"

	for p in "${@:2}"; do
		if $AS_U2 cat "$d/$p" > /dev/null 2>&1; then
			echo "$p: 22222 can read"
		else
			echo "$p: 22222 cannot read"
		fi
		if $AS_U2 bash -c ": >> '$d/$p'" > /dev/null 2>&1; then
			echo "$p: 22222 can append"
		else
			echo "$p: 22222 cannot append"
		fi
	done
}

links()
{
	(cd "$(t_mount_dir "$1")/round.$w" && stat -c '%n %h %i' "${@:2}" 2>&1) | \
		awk '{ if (NF == 3) { if (!($3 in s)) s[$3] = ++n; $3 = "inode" s[$3] } print }'
}

data()
{
	(cd "$(t_mount_dir "$1")/round.$w" && stat -c '%n %s %b' "${@:2}" 2>&1 && md5sum "${@:2}" 2>&1)
}

round()
{
	local d
	d="$(t_mount_dir "$w")/round.$w"

	echo "== access ACLs"
	mkdir "$d"
	echo data > "$d/file"
	chmod 0600 "$d/file"
	t_check_mounts "$w" mode-0600 access file
	setfacl -m u:22222:r "$d/file"
	t_check_mounts "$w" acl-read acl file
	t_check_mounts "$w" acl-read access file
	setfacl -m u:22222:rw "$d/file"
	t_check_mounts "$w" acl-rw access file
	setfacl -m m::r "$d/file"
	t_check_mounts "$w" mask acl file
	t_check_mounts "$w" mask access file
	chmod 0660 "$d/file"
	t_check_mounts "$w" chmod-mask acl file
	setfacl -b "$d/file"
	t_check_mounts "$w" removed acl file
	t_check_mounts "$w" removed access file

	echo "== default ACLs"
	mkdir "$d/dir"
	setfacl -d -m u:22222:rw "$d/dir"
	t_check_mounts "$w" default acl dir
	echo inherited > "$d/dir/new"
	t_check_mounts "$w" inherited acl dir/new
	t_check_mounts "$w" inherited access dir/new
	setfacl -k "$d/dir"
	echo plain > "$d/dir/plain"
	t_check_mounts "$w" no-default acl dir dir/plain

	echo "== hard links"
	echo linked > "$d/a"
	ln "$d/a" "$d/b"
	ln "$d/a" "$d/dir/c"
	t_check_mounts "$w" linked links a b dir/c
	rm "$d/b"
	t_check_mounts "$w" unlinked links a dir/c
	mv "$d/dir/c" "$d/c"
	t_check_mounts "$w" renamed links a c dir
	mkdir "$d/dir/sub"
	t_check_mounts "$w" subdir links . dir dir/sub
	rm "$d/a"
	t_check_mounts "$w" last-link links c
	rmdir "$d/dir/sub"
	t_check_mounts "$w" rmdir links dir

	echo "== truncate and extend"
	yes 'size test data' | head -c 12288 > "$d/sized"
	t_check_mounts "$w" written data sized
	truncate -s 100 "$d/sized"
	t_check_mounts "$w" shrunk data sized
	truncate -s 8192 "$d/sized"
	t_check_mounts "$w" extended data sized
	dd if=/dev/zero of="$d/sized" bs=1 count=1 seek=1000000 conv=notrunc status=none
	t_check_mounts "$w" sparse data sized
	truncate -s 4097 "$d/sized"
	t_check_mounts "$w" cut data sized
	: > "$d/sized"
	t_check_mounts "$w" emptied data sized

	rm -rf "$d"
	for m in $(t_fs_nrs); do
		test -e "$(t_mount_dir "$m")/round.$w" && echo "mount $m still sees the round dir"
	done
}

t_rounds_per_writer round

t_pass
