#
# renameat2(RENAME_NOREPLACE) racing across mounts: in each round,
# processes on every mount rename their own source file onto the same
# target name at once.  Exactly one rename per round may succeed, the
# others fail with EEXIST, the target holds the winner's contents, the
# winner's source is gone and every loser's source is still there, as
# every mount sees.  A second phase races renames of directories.
#

t_require_commands dumb_renameat2 mkdir cat sort uniq wc ls
t_require_mounts 2

ROUNDS=20
PROCS=2

# process $2 on mount $1: wait on the barrier, then rename its source of
# each round onto the round's target, recording wins and errors
worker()
{
	local m="$1"
	local p="$2"
	local id="$m.$p"
	local r

	read -r _ <&3
	exec 3>&-
	cd "$(t_mount_dir "$m")/$how" || exit 1
	for r in $(seq 1 $ROUNDS); do
		if dumb_renameat2 -n "src.$id.$r" "target.$r" 2>> "$T_TMP.err.$id"; then
			echo "$r $id" >> "$T_TMP.won.$id"
		fi
	done
}

# set got to the contents of source or target $2, file or dir, as mount
# $1 sees it (read, not cat: no process per file)
contents()
{
	local var="T_D$1"
	local path="${!var}/$how/$2"

	[ "$how" == "dir" ] && path="$path/id"
	got="missing"
	read -r got < "$path"
} 2>/dev/null

race()
{
	local pids=()
	local ids=()
	local m
	local p
	local r
	local id
	local want
	local got
	local bad

	rm -f "$T_TMP".won.* "$T_TMP".err.* "$T_TMP.fifo"
	mkdir "$T_D0/$how"
	for m in $(t_fs_nrs); do
		for p in $(seq 1 $PROCS); do
			ids+=("$m.$p")
			for r in $(seq 1 $ROUNDS); do
				if [ "$how" == "file" ]; then
					echo "$m.$p" > "$(t_mount_dir "$m")/$how/src.$m.$p.$r"
				else
					mkdir "$(t_mount_dir "$m")/$how/src.$m.$p.$r"
					echo "$m.$p" > "$(t_mount_dir "$m")/$how/src.$m.$p.$r/id"
				fi
			done
		done
	done

	mkfifo "$T_TMP.fifo"
	exec 3<> "$T_TMP.fifo"
	for id in "${ids[@]}"; do
		worker "${id%.*}" "${id#*.}" &
		pids+=("$!")
	done
	for p in "${pids[@]}"; do
		echo go >&3
	done
	exec 3>&-
	for p in "${pids[@]}"; do
		wait "$p" || echo "worker $p exited with $?"
	done

	cat "$T_TMP".won.* > "$T_TMP.won" 2>/dev/null
	echo "rounds: $ROUNDS"
	echo "successful renames: $(wc -l < "$T_TMP.won")"
	echo "rounds with more than one success: $(cut -d ' ' -f 1 "$T_TMP.won" | sort | uniq -d | wc -l)"
	echo "rounds with no success: $(seq 1 $ROUNDS | sort | \
		comm -23 - <(cut -d ' ' -f 1 "$T_TMP.won" | sort -u) | wc -l)"
	bad=$(cat "$T_TMP".err.* | grep -v -c '^Error: File exists$')
	echo "failures other than EEXIST: $bad"
	[ "$bad" == 0 ] || cat "$T_TMP".err.* | sort | uniq -c | head

	# every mount: the target is the winner's, its source is gone, and
	# every loser's source remains with its own contents
	for m in $(t_fs_nrs); do
		while read -r r want; do
			contents "$m" "target.$r"
			[ "$got" == "$want" ] || \
				echo "mount $m reads '$got' from target.$r, winner was $want"
			for id in "${ids[@]}"; do
				if [ "$id" == "$want" ]; then
					test -e "$(t_mount_dir "$m")/$how/src.$id.$r" && \
						echo "mount $m still sees winner's src.$id.$r"
				else
					contents "$m" "src.$id.$r"
					[ "$got" == "$id" ] || \
						echo "mount $m reads '$got' from loser's src.$id.$r"
				fi
			done
		done < "$T_TMP.won"
		got=$(ls "$(t_mount_dir "$m")/$how" | wc -l)
		[ "$got" == $((ROUNDS * ${#ids[@]})) ] || \
			echo "mount $m lists $got entries"
	done
	echo "every mount sees the winners' targets and the losers' sources"
	rm -rf "${T_D0:?}/$how"
}

echo "== files renamed onto one name from every mount"
how="file"
race

echo "== directories renamed onto one name from every mount"
how="dir"
race

t_pass
