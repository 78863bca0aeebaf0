#
# kill -9 of a mount daemon in the middle of staging and of releasing: the
# crash leaves every block either offline or fully staged, never garbage.
# The kill lands at a known point: our triggers archive_stage_stall and
# archive_release_stall (fs/triggers.py) make the next stage (its blocks
# written, its extents not yet changed) or release (its extents changed,
# not committed) park inside its transaction hold; the test waits for the
# trigger to read 0 (fired) and kills.  A parked hold also keeps the commit
# timer out, so what was synced before is exactly what survives.  After the
# remount fsck is clean (it checks the online and offline counts against
# the extents), get-fiemap agrees with stat, staged bytes read back, and a
# read of offline blocks waits (data-waiting lists it) until staged.
#
# On the scratch volume, mounted alone (fsck wants the devices unused).
#
# The reads use O_DIRECT.  A buffered read of the page cache across the
# boundary from online to offline blocks is answered short by the daemon
# (fs/data.py: short reads), and the FUSE kernel then caches the rest of
# that request's pages as zeros: a known problem of the buffered read path,
# not of what the crash left on disk.
#
umask 022

t_require_commands scoutfs dd cmp cp findmnt umount head awk

D="$T_MSCR/dir"
MIB=$((1024 * 1024))

t_scratch_mkfs -A
t_scratch_mount

trigger()
{
	echo "$(t_sysfs_root)/kernel/debug/scoutfs/$(t_ident_from_mnt "$T_MSCR")/trigger/$1"
}

# wait (at most 60 s) until the armed trigger at $1 fired
wait_fired()
{
	local end=$((SECONDS + 60))

	while [ "$SECONDS" -lt "$end" ]; do
		[ "$(cat "$1")" = 0 ] && return 0
		sleep 0.1
	done
	t_fail "trigger $1 never fired"
}

kill_mount()
{
	local pid

	pid=$(t_daemon_pid SCR)
	test -n "$pid" || t_fail "couldn't find the mount daemon of $T_MSCR"
	kill -9 "$pid"
	local end=$((SECONDS + 20))
	while kill -0 "$pid" 2>/dev/null; do
		if [ "$SECONDS" -ge "$end" ]; then
			# its exit is stuck on a request to its own mount: abort the
			# FUSE connection (MNT_FORCE does, for FUSE) rather than hang
			echo "daemon exit wedged"
			umount -f -i "$T_MSCR" 2>/dev/null
			end=$((SECONDS + 20))
		fi
		sleep .1
	done
	umount -l "$T_MSCR" 2>/dev/null
	echo "killed; mounted: $(findmnt -n "$T_MSCR" | wc -l)"
}

fsck_volume()
{
	scoutfs fsck "$T_EX_META_DEV" "$T_EX_DATA_DEV" 2>&1 | \
		sed -e "s@$T_EX_META_DEV@META@g" -e "s@$T_EX_DATA_DEV@DATA@g"
	echo "fsck rc: ${PIPESTATUS[0]}"
}

# the block counts of stat, and of get-fiemap's extents
counts()
{
	local fm

	fm=$(scoutfs get-fiemap "$1" | awk '
		/flags:/ { for (i = 1; i < NF; i++) if ($i == "length:") n = $(i + 1)
			   f = $NF
			   if (substr(f, 1, 1) == "O") off += n
			   else if (substr(f, 2, 1) != "U") on += n }
		END { printf "online %d offline %d", on, off }')
	echo "stat online $(scoutfs stat -s online_blocks "$1") offline $(scoutfs stat -s offline_blocks "$1"); fiemap $fm"
}

waiting()
{
	scoutfs data-waiting -I 0 -B 0 -p "$T_MSCR" | sed -e "s/^ino $(stat -c %i "$1") /ino INO /"
}

# a reader of $1 waits: show it in data-waiting, stage from archive $2, check its bytes
read_waits_until_staged()
{
	local file="$1" arc="$2" end=$((SECONDS + 60))

	# O_DIRECT: every read reaches the daemon (see the note on short reads below)
	dd if="$file" iflag=direct bs=1M status=none | cmp "$arc" - > "$T_TMP.cmp" 2>&1 &
	local reader=$!
	while [ -z "$(waiting "$file")" ] && [ "$SECONDS" -lt "$end" ]; do
		sleep 0.1
	done
	waiting "$file"
	kill -0 "$reader" 2>/dev/null && echo "reader waits"
	scoutfs stage "$arc" "$file" -V "$(scoutfs stat -s data_version "$file")"
	wait "$reader" && echo "reader got the archived bytes"
	cat "$T_TMP.cmp"
}

echo "== a released file of 16 MiB, its first 4 MiB staged and synced"
mkdir "$D"
dd if=/dev/urandom of="$T_TMP.arc" bs=$MIB count=16 status=none
cp "$T_TMP.arc" "$D/staged"
V=$(scoutfs stat -s data_version "$D/staged")
scoutfs release "$D/staged" -V "$V"
scoutfs stage "$T_TMP.arc" "$D/staged" -V "$V" -l 4M
sync
counts "$D/staged"

echo "== kill -9 while staging the rest"
echo 1 > "$(trigger archive_stage_stall)"
dd if="$T_TMP.arc" of="$T_TMP.rest" bs=$MIB skip=4 status=none
scoutfs stage "$T_TMP.rest" "$D/staged" -V "$V" -o 4M > /dev/null 2>&1 &
STAGER=$!
wait_fired "$(trigger archive_stage_stall)"
kill_mount
wait "$STAGER"
echo "stage rc $?"

echo "== fsck is clean"
fsck_volume

echo "== after remount: the synced part is staged, the rest is offline"
t_scratch_mount
counts "$D/staged"
scoutfs stat -s data_version "$D/staged" | sed -e "s/^$V\$/data_version unchanged/"
head -c $((4 * MIB)) "$T_TMP.arc" | \
	cmp - <(dd if="$D/staged" iflag=direct bs=1M count=4 status=none) && echo "staged part reads back"
read_waits_until_staged "$D/staged" "$T_TMP.arc"
counts "$D/staged"

echo "== a 16 MiB file, its first half released and synced"
cp "$T_TMP.arc" "$D/released"
V=$(scoutfs stat -s data_version "$D/released")
scoutfs release "$D/released" -V "$V" -l 8M
sync
counts "$D/released"

echo "== kill -9 while releasing the rest"
echo 1 > "$(trigger archive_release_stall)"
scoutfs release "$D/released" -V "$V" -o 8M -l 8M > /dev/null 2>&1 &
RELEASER=$!
wait_fired "$(trigger archive_release_stall)"
kill_mount
wait "$RELEASER"
echo "release rc $?"

echo "== fsck is clean"
fsck_volume

echo "== after remount: the first half is offline, the rest online and intact"
t_scratch_mount
counts "$D/released"
tail -c $((8 * MIB)) "$T_TMP.arc" | \
	cmp - <(dd if="$D/released" iflag=direct bs=1M skip=8 status=none) && echo "online half reads back"
read_waits_until_staged "$D/released" "$T_TMP.arc"
counts "$D/released"
cmp "$T_TMP.arc" "$D/staged" && echo "staged file intact"

echo "== the remounted fs works, fsck after unmount is clean"
rm "$D/staged"
sync
t_scratch_umount
fsck_volume

t_pass
