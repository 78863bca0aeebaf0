#
# O_APPEND writes land at the end of the file as every mount sees it,
# even through a descriptor opened before other mounts appended.  One
# write through a held descriptor after another mount's append; then a
# loop where every mount in turn appends through its own held
# descriptor; then processes on every mount appending at once, whose
# lines must all be there, whole and in each writer's order.
#

t_require_commands paste stat seq sort wc cmp grep uniq
t_require_mounts 2

ROUNDS=100
LINES=20
PROCS=2

nr=$T_NR_MOUNTS

echo "== append through a descriptor held open while another mount appends"
echo one > "$T_D0/file"
exec {fd}>> "$T_D1/file"
echo two >> "$T_D0/file"
echo three >&"$fd"
exec {fd}>&-
for m in $(t_fs_nrs); do
	paste -s -d ' ' "$(t_mount_dir "$m")/file"
done | uniq
stat -c '%s' "$T_D0/file"

echo "== every mount appends in turn through its own held descriptor"
: > "$T_D0/turns"
declare -a wfd
for m in $(t_fs_nrs); do
	exec {fd}>> "$(t_mount_dir "$m")/turns"
	wfd[$m]=$fd
done
for r in $(seq 1 $ROUNDS); do
	echo "line $r" >&"${wfd[$(( r % nr ))]}"
done
for m in $(t_fs_nrs); do
	fd=${wfd[$m]}
	exec {fd}>&-
done
seq 1 $ROUNDS | sed -e 's/^/line /' > "$T_TMP.expected"
for m in $(t_fs_nrs); do
	cmp -s "$T_TMP.expected" "$(t_mount_dir "$m")/turns" || \
		echo "mount $m reads different contents: $(wc -l < "$(t_mount_dir "$m")/turns") lines"
done
echo "size: $(stat -c %s "$T_D0/turns")"

echo "== processes on every mount append at once"
: > "$T_D0/race"
mkfifo "$T_TMP.fifo"
exec 3<> "$T_TMP.fifo"
pids=()
for m in $(t_fs_nrs); do
	for p in $(seq 1 $PROCS); do
		(
			read -r _ <&3
			exec 3>&-
			exec 4>> "$(t_mount_dir "$m")/race"
			for l in $(seq 1 $LINES); do
				echo "writer $m.$p line $l" >&4
			done
		) &
		pids+=("$!")
	done
done
for p in "${pids[@]}"; do
	echo go >&3
done
exec 3>&-
for p in "${pids[@]}"; do
	wait "$p" || echo "appender $p exited with $?"
done
for m in $(t_fs_nrs); do
	for p in $(seq 1 $PROCS); do
		seq 1 $LINES | sed -e "s/^/writer $m.$p line /"
	done
done > "$T_TMP.expected"
for m in $(t_fs_nrs); do
	f="$(t_mount_dir "$m")/race"
	# the same lines, and each writer's in its order
	sort "$f" | cmp -s - <(sort "$T_TMP.expected") || \
		echo "mount $m reads other lines: $(wc -l < "$f") lines"
	for w in $(t_fs_nrs); do
		for p in $(seq 1 $PROCS); do
			grep "^writer $w.$p " "$f" | cmp -s - <(grep "^writer $w.$p " "$T_TMP.expected") || \
				echo "mount $m reads writer $w.$p's lines out of order"
		done
	done
	[ "$(stat -c %s "$f")" == "$(stat -c %s "$T_TMP.expected")" ] || \
		echo "mount $m sees size $(stat -c %s "$f"), expected $(stat -c %s "$T_TMP.expected")"
done
echo "every mount reads every writer's lines whole and in order"

t_pass
