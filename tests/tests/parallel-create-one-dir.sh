#
# Every mount creates its own share of names in one directory at the
# same time (files and subdirectories), then removes some of them at the
# same time.  Afterwards every mount lists the same complete set, and
# the directory's size (the sum of its entry name lengths) and link
# count (2 plus its subdirectories) agree everywhere.  The names are
# split between however many mounts there are, so the totals are fixed.
#

t_require_commands createmany ls stat md5sum sort wc find
t_require_mounts 2

FILES=180
DIRS=18

nr=$T_NR_MOUNTS

# mount $1's share [start, end) of $2 names
share()
{
	start=$(( $1 * $2 / nr ))
	end=$(( ($1 + 1) * $2 / nr ))
}

# run one command per mount at once, $1 the command taking the mount nr
at_once()
{
	local pids=()
	local p
	local m

	for m in $(t_fs_nrs); do
		"$1" "$m" &
		pids+=("$!")
	done
	for p in "${pids[@]}"; do
		wait "$p" || echo "a $1 process failed"
	done
}

create()
{
	share "$1" $FILES
	createmany -o "$(t_mount_dir "$1")/dir/f" $start $((end - start)) > /dev/null || \
		echo "createmany of files on mount $1 failed"
	share "$1" $DIRS
	createmany -d "$(t_mount_dir "$1")/dir/d" $start $((end - start)) > /dev/null || \
		echo "createmany of dirs on mount $1 failed"
}

# remove the mount's odd numbered files and the upper half of its dirs
remove()
{
	local i

	share "$1" $FILES
	for i in $(seq $start $((end - 1))); do
		if (( i % 2 )); then
			rm "$(t_mount_dir "$1")/dir/f$i" || echo "rm f$i on mount $1 failed"
		fi
	done
	share "$1" $DIRS
	for i in $(seq $start $((end - 1))); do
		if (( i >= DIRS / 2 )); then
			rmdir "$(t_mount_dir "$1")/dir/d$i" || echo "rmdir d$i on mount $1 failed"
		fi
	done
}

# mount 0's view of the dir printed, every other mount's compared
views()
{
	local want
	local m

	want=$(view 0)
	echo "$want"
	for m in $(t_fs_nrs); do
		[ "$(view "$m")" == "$want" ] || echo "mount $m: $(view "$m")"
	done
}

view()
{
	local d
	d="$(t_mount_dir "$1")/dir"

	echo "entries: $(ls "$d" | wc -l), files: $(find "$d" -mindepth 1 -type f | wc -l)," \
		"dirs: $(find "$d" -mindepth 1 -type d | wc -l)"
	echo "names md5: $(ls "$d" | LC_ALL=C sort | md5sum | cut -d ' ' -f 1)"
	echo "size and links: $(stat -c '%s %h' "$d")"
}

# the md5 and the sum of the lengths of the names in $T_TMP.names
expected()
{
	echo "expected names md5: $(md5sum < "$T_TMP.names" | cut -d ' ' -f 1)"
	echo "expected size: $(awk '{ n += length($0) } END { print n }' "$T_TMP.names")"
}

echo "== create from every mount at once"
mkdir "$T_D0/dir"
at_once create
views
(seq 0 $((FILES - 1)) | sed -e 's/^/f/'; seq 0 $((DIRS - 1)) | sed -e 's/^/d/') | \
	LC_ALL=C sort > "$T_TMP.names"
expected
echo "expected links: $((2 + DIRS))"

echo "== remove from every mount at once"
at_once remove
views
(seq 0 2 $((FILES - 1)) | sed -e 's/^/f/'; seq 0 $((DIRS / 2 - 1)) | sed -e 's/^/d/') | \
	LC_ALL=C sort > "$T_TMP.names"
expected
echo "expected links: $((2 + DIRS / 2))"

echo "== remove everything from another mount"
rm -rf "$(t_mount_dir $((nr - 1)))/dir"
for m in $(t_fs_nrs); do
	test -e "$(t_mount_dir "$m")/dir" && echo "mount $m still sees dir"
done
ls -A "$T_D0" | wc -l

t_pass
