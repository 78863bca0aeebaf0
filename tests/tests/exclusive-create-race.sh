#
# Exclusive creates racing across mounts: processes on every mount walk
# the same list of names at once, each trying to create every name with
# O_CREAT|O_EXCL (bash's noclobber redirection), then with mkdir.  Each
# name must be created exactly once overall, and the file every mount
# reads must hold the one winner's contents.
#

t_require_commands mkdir cat sort uniq wc ls
t_require_mounts 2

NAMES=50
PROCS=2

# wait on the barrier fifo, then try to create every name in the race dir
# of mount $1 as process $2 with method $3 (file or dir).  Wins go to
# $T_TMP.won.<id>, failure messages to $T_TMP.err.<id>.
worker()
{
	local m="$1"
	local p="$2"
	local how="$3"
	local id="$m.$p"
	local n

	read -r _ <&3
	exec 3>&-
	cd "$(t_mount_dir "$m")/$how" || exit 1
	set -o noclobber
	for n in $(seq 0 $((NAMES - 1))); do
		if [ "$how" == "file" ]; then
			if { echo "$id" > "name.$n"; } 2>> "$T_TMP.err.$id"; then
				echo "$n $id" >> "$T_TMP.won.$id"
			fi
		else
			if mkdir "name.$n" 2>> "$T_TMP.err.$id"; then
				echo "$id" > "name.$n/winner"
				echo "$n $id" >> "$T_TMP.won.$id"
			fi
		fi
	done
}

race()
{
	local how="$1"
	local pids=()
	local m
	local p
	local n
	local want
	local got
	local bad

	rm -f "$T_TMP".won.* "$T_TMP".err.* "$T_TMP.fifo"
	mkdir "$T_D0/$how"
	mkfifo "$T_TMP.fifo"
	# held open read-write so workers' opens don't block; each read
	# takes one line, so every worker starts when the lines are written
	exec 3<> "$T_TMP.fifo"
	for m in $(t_fs_nrs); do
		for p in $(seq 1 $PROCS); do
			worker "$m" "$p" "$how" &
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

	cat "$T_TMP".won.* > "$T_TMP.won" 2>/dev/null
	echo "names: $NAMES"
	echo "successful creates: $(wc -l < "$T_TMP.won")"
	echo "names created more than once: $(cut -d ' ' -f 1 "$T_TMP.won" | sort | uniq -d | wc -l)"
	echo "names never created: $(seq 0 $((NAMES - 1)) | sort | \
		comm -23 - <(cut -d ' ' -f 1 "$T_TMP.won" | sort -u) | wc -l)"
	if [ "$how" == "file" ]; then
		bad=$(cat "$T_TMP".err.* | grep -v -c ': cannot overwrite existing file$')
	else
		bad=$(cat "$T_TMP".err.* | grep -v -c ': File exists$')
	fi
	echo "failures for other reasons: $bad"
	[ "$bad" == 0 ] || cat "$T_TMP".err.* | sort | uniq -c | head

	# every mount sees exactly the names and each winner's contents
	for m in $(t_fs_nrs); do
		got=$(ls "$(t_mount_dir "$m")/$how" | wc -l)
		[ "$got" == "$NAMES" ] || echo "mount $m lists $got names"
		while read -r n want; do
			if [ "$how" == "file" ]; then
				got=$(cat "$(t_mount_dir "$m")/$how/name.$n")
			else
				got=$(cat "$(t_mount_dir "$m")/$how/name.$n/winner")
			fi
			[ "$got" == "$want" ] || \
				echo "mount $m reads '$got' from name.$n, winner was $want"
		done < "$T_TMP.won"
	done
	echo "every mount read the winners' contents"
	rm -rf "${T_D0:?}/$how"
}

echo "== O_EXCL creates of the same names from every mount"
race file

echo "== mkdir of the same names from every mount"
race dir

t_pass
