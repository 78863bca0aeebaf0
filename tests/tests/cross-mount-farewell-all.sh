#
# Every mount unmounting at once is a clean farewell of them all: the
# last quorum members leave together (spec §2.3: once every remaining
# mount is a departing quorum member), every unmount returns with its
# daemon gone, and the next mounts see everything each mount wrote,
# synced or not (a clean unmount commits).  Done a few times, with
# writes from every mount in between.
#

t_require_commands md5sum find sort xargs
t_require_mounts 2

umask 022
ROUNDS=3

# what mount $1 sees: names, sizes and contents
record()
{
	local dir

	dir=$(t_mount_dir "$1")
	(cd "$dir" && find . | sort | xargs stat -c '%n %s %h') > "$2"
	(cd "$dir" && find . -type f | sort | xargs md5sum) >> "$2"
}

for round in $(seq 1 $ROUNDS); do
	echo "== round $round: every mount writes"
	for i in $(t_fs_nrs); do
		d="$(t_mount_dir "$i")/r$round.m$i"
		mkdir "$d"
		dd if=/dev/urandom of="$d/data" bs=4096 count=$((round * 3)) status=none
		echo "round $round" > "$d/small"
		echo "round $round" >> "$(t_mount_dir "$i")/log.$i"
	done
	record 0 "$T_TMP.before.$round"

	echo "== unmount every mount at once"
	t_umount_all
	for i in $(t_fs_nrs); do
		t_mount_gone "$i"
	done | sort | uniq -c | sed -e 's/^ *//'

	echo "== mount them all again"
	t_mount_all
	t_wait_for_leader
	for i in $(t_fs_nrs); do
		record "$i" "$T_TMP.after.$round.$i"
		cmp -s "$T_TMP.before.$round" "$T_TMP.after.$round.$i" || \
			echo "mount $i sees other files than before the unmount"
	done
	echo "compared"
done

echo "== every mount's log of the rounds"
cat "$(t_mount_dir 0)"/log.* | sort | uniq -c | sed -e 's/^ *//'

rm -rf "$T_D0"/r* "$T_D0"/log.*

t_pass
