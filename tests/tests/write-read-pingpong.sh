#
# Appends on one mount read at once on another, in a tight loop that
# rotates through every ordered pair of mounts, with a fresh open for
# every append and every read: the reader's last line must be the line
# just appended, and every mount reads the whole file at the end.
# (cross-mount-held-read does the same through descriptors held open.)
#

t_require_commands tail seq stat cmp
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

echo "== append on one mount, read the last line on another"
bad=0
for r in $(seq 1 $ROUNDS); do
	pair "$r"
	echo "line $r" >> "$(t_mount_dir "$w")/file"
	got=$(tail -n 1 "$(t_mount_dir "$rd")/file")
	if [ "$got" != "line $r" ]; then
		echo "round $r: mount $rd read '$got' after mount $w appended 'line $r'"
		((bad++))
	fi
done
echo "rounds: $ROUNDS, bad reads: $bad"
seq 1 $ROUNDS | sed -e 's/^/line /' > "$T_TMP.expected"
for m in $(t_fs_nrs); do
	cmp -s "$T_TMP.expected" "$(t_mount_dir "$m")/file" || \
		echo "mount $m reads different contents"
done
echo "size: $(stat -c %s "$T_D0/file")"

t_pass
