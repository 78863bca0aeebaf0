#
# Mounts come and go while the others keep working.  Each round
# unmounts one mount, picked at random while keeping a quorum majority
# mounted, and mounts it again, while every other mount creates files
# and reads back the files of earlier rounds.  When the leader is the
# one unmounted, the others elect a new one and carry on.  At the end
# every mount sees every file with its contents.
#
# The victims come from a fixed seed; which mount leads is up to the
# elections, so neither is printed: the output is the same whatever
# mount each round picked.
#

t_require_commands md5sum sort cat ls
t_require_mounts 2

ROUNDS=6
FILES=20
RANDOM=5417

# a mount may go if it's not a quorum member, or if the remaining
# members still make a majority
can_go()
{
	local nr="$1"

	[ "$nr" -ge "$T_QUORUM" ] || [ $((T_QUORUM - 1)) -ge "$(t_majority_count)" ]
}

# create this round's files on mount $1, then read back every file of
# the earlier rounds (each file holds its own name)
worker()
{
	local nr="$1"
	local round="$2"
	local dir
	local name
	local k
	local f

	dir="$(t_mount_dir "$nr")/shared"
	for k in $(seq 1 $FILES); do
		name="r$round.m$nr.$k"
		echo "$name" > "$dir/$name" || echo "create $name failed"
		[ "$(cat "$dir/$name")" == "$name" ] || echo "$name reads back wrong"
	done
	for f in "$dir"/*; do
		name=$(basename "$f")
		[ "${name%%.*}" == "r$round" ] && continue
		[ "$(cat "$f")" == "$name" ] || echo "mount $nr reads $name wrong"
	done
}

echo "== make the shared dir"
mkdir "$T_D0/shared"
for i in $(t_fs_nrs); do
	test -d "$(t_mount_dir "$i")/shared" || echo "mount $i doesn't see the shared dir"
done

candidates=()
for i in $(t_fs_nrs); do
	can_go "$i" && candidates+=("$i")
done
test "${#candidates[@]}" -gt 0 || t_skip "no mount can be unmounted while keeping a quorum"

for round in $(seq 1 $ROUNDS); do
	echo "== round $round: unmount and mount one while the others work"
	victim=${candidates[$((RANDOM % ${#candidates[@]}))]}
	echo "round $round victim $victim leader $(t_fs_is_leader "$victim")" >> "$T_TMP.victims"

	pids=()
	for i in $(t_fs_nrs); do
		[ "$i" == "$victim" ] && continue
		worker "$i" "$round" > "$T_TMP.worker.$round.$i" 2>&1 &
		pids+=("$!")
	done

	t_umount "$victim"
	t_mount "$victim"

	for p in "${pids[@]}"; do
		wait "$p"
	done
	cat "$T_TMP".worker."$round".*
	t_wait_for_leader
done

echo "== every mount sees every file"
expected=$(( ROUNDS * FILES * (T_NR_MOUNTS - 1) ))
for i in $(t_fs_nrs); do
	dir="$(t_mount_dir "$i")/shared"
	(cd "$dir" && ls | sort) > "$T_TMP.ls.$i"
	n=$(wc -l < "$T_TMP.ls.$i")
	bad=0
	for f in "$dir"/*; do
		[ "$(cat "$f")" == "$(basename "$f")" ] || bad=$((bad + 1))
	done
	if [ "$n" -ne "$expected" ] || [ "$bad" -ne 0 ]; then
		echo "mount $i sees $n files (expected $expected), $bad with wrong contents"
	fi
	cmp -s "$T_TMP.ls.0" "$T_TMP.ls.$i" || echo "mount $i lists other names than mount 0"
done
echo "checked $expected files on every mount"

rm -rf "$T_D0/shared"

t_pass
