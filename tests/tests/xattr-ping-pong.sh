#
# One xattr on a shared file passed between mounts: in each round the
# next mount in turn reads the value the previous round set (on another
# mount) and sets a new one, while every mount creates files in its own
# directory in the background.  Every read must see the previous round's
# value, and at the end every mount reads the last value and lists every
# load directory the same way.
#

t_require_commands getfattr setfattr touch ls wc
t_require_mounts 2

ROUNDS=24
LOAD_MAX=3000

# create files in mount $1's load dir until the stop file exists
load()
{
	local m="$1"
	local dir
	local n

	dir="$(t_mount_dir "$m")/load.$m"
	for n in $(seq 1 $LOAD_MAX); do
		[ -e "$T_TMP.stop" ] && break
		: > "$dir/f$n" || echo "load on mount $m failed at f$n"
	done
}

get()
{
	getfattr --absolute-names --only-values -n user.pingpong \
		"$(t_mount_dir "$1")/file" 2>&1
}

echo "== start a create load on every mount"
touch "$T_D0/file"
pids=()
for m in $(t_fs_nrs); do
	mkdir "$(t_mount_dir "$m")/load.$m"
	load "$m" &
	pids+=("$!")
done

echo "== pass the xattr around"
nr=$T_NR_MOUNTS
bad=0
prev=""
for r in $(seq 1 $ROUNDS); do
	m=$(( r % nr ))
	got=$(get "$m")
	if [ "$r" -gt 1 ] && [ "$got" != "$prev" ]; then
		echo "round $r: mount $m read '$got', expected '$prev'"
		((bad++))
	fi
	prev="round $r set by mount $m"
	setfattr -n user.pingpong -v "$prev" "$(t_mount_dir "$m")/file" || \
		echo "round $r: setfattr on mount $m failed"
	# every few rounds also remove it and check it's gone everywhere
	if [ $(( r % 10 )) == 0 ]; then
		setfattr -x user.pingpong "$(t_mount_dir $(( (r + 1) % nr )))/file"
		for o in $(t_fs_nrs); do
			got=$(get "$o")
			[[ "$got" == *"No such attribute" ]] || \
				echo "round $r: mount $o still reads '$got' after removal"
		done
		setfattr -n user.pingpong -v "$prev" "$(t_mount_dir $(( (r + 2) % nr )))/file"
	fi
done
echo "rounds: $ROUNDS, bad reads: $bad"

echo "== stop the load"
touch "$T_TMP.stop"
for p in "${pids[@]}"; do
	wait "$p" || echo "load $p exited with $?"
done

echo "== final value on every mount"
for m in $(t_fs_nrs); do
	got=$(get "$m" | sed -e "s/mount $(( ROUNDS % nr ))/mount M/")
	echo "$got"
done | sort | uniq -c | sed -e 's/^ *[0-9]* //'

echo "== every mount lists every load dir the same"
for m in $(t_fs_nrs); do
	want=$(ls "$(t_mount_dir "$m")/load.$m" | LC_ALL=C sort | md5sum)
	for o in $(t_fs_nrs); do
		[ "$(ls "$(t_mount_dir "$o")/load.$m" | LC_ALL=C sort | md5sum)" == "$want" ] || \
			echo "mount $o lists load.$m differently than mount $m"
	done
done

t_pass
