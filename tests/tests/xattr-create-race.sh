#
# XATTR_CREATE racing across mounts: processes on every mount walk the
# same list of xattr names of one file at once, each trying to create
# every name with XATTR_CREATE and its own value.  The flag is applied
# under the inode's cluster lock, so each name is created exactly once
# overall, the others fail with EEXIST, and every mount reads the
# winner's value.
#
t_require_commands dumb_setxattr getfattr touch sort uniq wc cut
t_require_mounts 2

NAMES=40
PROCS=2
FILE="$T_D0/file"

# wait on the barrier fifo, then try to create every name through
# mount $1 as process $2; wins go to $T_TMP.won.<id>, other results to
# $T_TMP.err.<id>
worker()
{
	local m="$1"
	local p="$2"
	local id="$m.$p"
	local f
	local n
	local out

	read -r _ <&3
	exec 3>&-
	f="$(t_mount_dir "$m")/file"
	for n in $(seq 0 $((NAMES - 1))); do
		out=$(dumb_setxattr -p "$f" -n "user.x$n" -v "$id" -c)
		if [ "$out" == "returned 0" ]; then
			echo "$n $id" >> "$T_TMP.won.$id"
		else
			echo "$out" >> "$T_TMP.err.$id"
		fi
	done
}

touch "$FILE"
mkfifo "$T_TMP.fifo"
exec 3<> "$T_TMP.fifo"
pids=()
for m in $(t_fs_nrs); do
	for p in $(seq 1 $PROCS); do
		worker "$m" "$p" &
		pids+=("$!")
	done
done
for p in "${pids[@]}"; do
	echo go >&3
done
exec 3>&-
for p in "${pids[@]}"; do
	wait "$p" || echo "worker $p exited with $?"
done

echo "== XATTR_CREATE of the same names from every mount"
cat "$T_TMP".won.* > "$T_TMP.won" 2>/dev/null
echo "names: $NAMES"
echo "successful creates: $(wc -l < "$T_TMP.won")"
echo "names created more than once: $(cut -d ' ' -f 1 "$T_TMP.won" | sort | uniq -d | wc -l)"
echo "names never created: $(seq 0 $((NAMES - 1)) | sort | \
	comm -23 - <(cut -d ' ' -f 1 "$T_TMP.won" | sort -u) | wc -l)"
cat "$T_TMP".err.* | sort | uniq -c | sed 's/^ *[0-9]* //' | sort -u

echo "== every mount reads the winners' values"
for m in $(t_fs_nrs); do
	f="$(t_mount_dir "$m")/file"
	while read -r n want; do
		got=$(getfattr --absolute-names --only-values -n "user.x$n" "$f")
		[ "$got" == "$want" ] || echo "mount $m reads '$got' from user.x$n, winner was $want"
	done < "$T_TMP.won"
done
echo "checked"

t_pass
