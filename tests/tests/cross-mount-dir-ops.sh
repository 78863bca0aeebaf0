#
# Directory operations spread over mounts: for every ordered pair of
# mounts (i, j), a directory tree is made on i, renamed on j and removed
# on a third mount k (i when there are only two), and every step's
# errors (EEXIST, ENOENT, ENOTEMPTY, ENOTDIR) must be the same as on one
# mount, because each mount sees the others' changes at once.  The same
# names are reused every round, so stale cached lookups would show.
#
# Each round's output goes to a file; the first round is printed and any
# other round that differs is shown as a diff, so the golden holds one
# round whatever the number of mounts.
#

t_require_commands mkdir rmdir mv rm touch ls stat diff paste dumb_renameat2
t_require_mounts 2

umask 022

# run a command in mount $1's test dir, printing "on X: " before each
# line of its output; X is i, j or k so rounds compare equal.  Returns
# the command's status.
on()
{
	local nr="$1"
	local who="$2"
	shift 2

	(cd "$(t_mount_dir "$nr")" && "$@" 2>&1) | sed -e "s/^/on $who: /"
	return "${PIPESTATUS[0]}"
}

# every mount's listing of a dir must equal mount i's
same_listing()
{
	local dir="$1"
	local want
	local m

	want=$(cd "$(t_mount_dir "$i")" && ls -A "$dir" 2>&1 | paste -s -d ' ')
	echo "listing of $dir:${want:+ $want}"
	for m in $(t_fs_nrs); do
		[ "$(cd "$(t_mount_dir "$m")" && ls -A "$dir" 2>&1 | paste -s -d ' ')" == "$want" ] || \
			echo "mount $m lists $dir differently"
	done
}

round()
{
	echo "== mkdir on i"
	on "$i" i mkdir -p top/sub
	on "$i" i touch top/file
	on "$i" i stat -c '%n %h %F' top top/sub top/file
	echo "== seen on j: exists, stat, mkdir fails"
	on "$j" j stat -c '%n %h %F' top top/sub top/file
	on "$j" j mkdir top
	on "$j" j mkdir top/sub
	on "$j" j mkdir -p top/sub && echo "mkdir -p on j works"
	on "$j" j mkdir top/sub || echo "mkdir on j fails"
	on "$j" j mkdir top/file/x
	on "$j" j rmdir top/file
	echo "== rename on j"
	on "$j" j mv top moved
	on "$i" i stat -c '%n %h' top
	on "$i" i stat -c '%n %h' moved moved/sub
	on "$k" k mv top again
	on "$k" k rmdir top
	on "$i" i mkdir moved
	on "$k" k dumb_renameat2 -n moved/sub moved/file
	echo "== rename a dir onto a non-empty dir and into itself"
	on "$i" i mkdir moved/empty
	on "$k" k mv -T moved/empty moved/sub
	on "$j" j stat -c '%n %h' moved moved/sub
	on "$i" i mkdir moved/empty2
	on "$k" k touch moved/sub/busy
	on "$j" j dumb_renameat2 moved/empty2 moved/sub
	on "$k" k dumb_renameat2 moved moved/sub/moved
	same_listing moved
	same_listing moved/sub
	echo "== rmdir on k"
	on "$k" k rmdir moved
	on "$k" k rmdir moved/sub
	on "$i" i rm moved/sub/busy
	on "$k" k rmdir moved/sub
	on "$i" i rmdir moved/sub
	on "$j" j rmdir moved/empty2
	on "$j" j stat -c '%n %h' moved
	on "$k" k rm moved/file
	on "$k" k rmdir moved
	echo "== gone everywhere"
	on "$i" i stat -c '%n' moved
	on "$j" j rmdir moved
	on "$i" i ls moved
	same_listing .
	echo "== recreate the names on k, remove on i"
	on "$k" k mkdir top moved
	on "$j" j mkdir top
	on "$i" i rmdir top moved
	same_listing .
}

mapfile -t nrs < <(t_fs_nrs)
rounds=0
for i in "${nrs[@]}"; do
	for j in "${nrs[@]}"; do
		[ "$i" == "$j" ] && continue
		k="$i"
		for m in "${nrs[@]}"; do
			if [ "$m" != "$i" ] && [ "$m" != "$j" ]; then
				k="$m"
				break
			fi
		done
		round > "$T_TMP.round.$rounds" 2>&1
		echo "$i $j $k" > "$T_TMP.pair.$rounds"
		((rounds++))
	done
done

cat "$T_TMP.round.0"
for r in $(seq 1 $((rounds - 1))); do
	if ! diff -u "$T_TMP.round.0" "$T_TMP.round.$r" > "$T_TMP.diff.$r"; then
		echo "== round with mounts (i j k) $(cat "$T_TMP.pair.$r") differs from the first"
		cat "$T_TMP.diff.$r"
	fi
done

t_pass
