#
# Appends on one mount read at once through descriptors that every mount
# holds open: in a tight loop that rotates through every ordered pair of
# mounts, one mount appends a line (a fresh open) and another reads
# every line appended since its last read through its held descriptor.
# A read through an open descriptor must see the size another mount's
# append made, at once; the lines must come in order.
#

t_require_commands seq stat cmp
t_require_mounts 2

ROUNDS=200

nr=$T_NR_MOUNTS

# the writer and reader of round $1: each writer in turn, with a reader
# that cycles through the other mounts
pair()
{
	w=$(( $1 % nr ))
	rd=$(( (w + 1 + ($1 / nr) % (nr - 1)) % nr ))
}

echo "== append on one mount, read through a held descriptor on another"
: > "$T_D0/held"
declare -a rfd next
for m in $(t_fs_nrs); do
	exec {fd}< "$(t_mount_dir "$m")/held"
	rfd[$m]=$fd
	next[$m]=1
done
bad=0
for r in $(seq 1 $ROUNDS); do
	pair "$r"
	echo "line $r" >> "$(t_mount_dir "$w")/held"
	# the reader reads every line appended since its last read
	while [ "${next[$rd]}" -le "$r" ]; do
		if ! read -r got <&"${rfd[$rd]}"; then
			echo "round $r: mount $rd hit EOF before 'line ${next[$rd]}'"
			((bad++))
			break
		fi
		if [ "$got" != "line ${next[$rd]}" ]; then
			echo "round $r: mount $rd read '$got', expected 'line ${next[$rd]}'"
			((bad++))
		fi
		next[$rd]=$(( next[$rd] + 1 ))
	done
	[ "$bad" -gt 10 ] && break
done
echo "rounds: $ROUNDS, bad reads: $bad"
for m in $(t_fs_nrs); do
	fd=${rfd[$m]}
	exec {fd}<&-
done
seq 1 $ROUNDS | sed -e 's/^/line /' > "$T_TMP.expected"
for m in $(t_fs_nrs); do
	cmp -s "$T_TMP.expected" "$(t_mount_dir "$m")/held" || \
		echo "mount $m reads different contents"
done
echo "size: $(stat -c %s "$T_D0/held")"

t_pass
