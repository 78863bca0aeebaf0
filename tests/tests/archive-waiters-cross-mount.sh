#
# Data waiters across mounts (spec semantics §5.5): a file released on
# mount 0; a reader and a writer of it on mount 1 wait for its offline
# blocks; data-waiting lists them on mount 1 only; staging from another
# mount wakes them (through the invalidation of mount 1's lock, no
# polling) and they see the staged bytes.
#

t_require_commands scoutfs dd cmp stat head
t_require_mounts 2

# the mount that stages: another one than the waiters' when there is one
if [ "$T_NR_MOUNTS" -ge 3 ]; then
	SD=$T_D2
else
	SD=$T_D0
fi

ARC="$T_TMP.archive"
BLK=4096

# data-waiting on a mount, with the test file's inode number filtered
waiting()
{
	scoutfs data-waiting -I 0 -B 0 -p "$1" | sed -e "s/^ino $INO /ino INO /"
}

# wait (at most 60 s) until data-waiting on mount dir $1 prints $2 lines
wait_for_waiters()
{
	local end=$((SECONDS + 60))

	while [ "$SECONDS" -lt "$end" ]; do
		[ "$(waiting "$1" | wc -l)" -eq "$2" ] && return 0
		sleep 0.1
	done
	echo "timed out waiting for $2 waiters on $1"
	return 1
}

cleanup()
{
	local p

	for p in $READER $WRITER; do
		kill -9 "$p" 2>/dev/null
	done
	wait 2>/dev/null
}
trap cleanup EXIT

echo "== a file of four blocks, released on mount 0"
dd if=/dev/urandom of="$ARC" bs=$BLK count=4 status=none
cp "$ARC" "$T_D0/file"
INO=$(stat -c %i "$T_D0/file")
V=$(scoutfs stat -s data_version "$T_D0/file")
scoutfs release "$T_D0/file" -V "$V"
echo "offline $(scoutfs stat -s offline_blocks "$T_D1/file")"

echo "== a reader on mount 1 waits"
cat "$T_D1/file" > "$T_TMP.read" &
READER=$!
wait_for_waiters "$T_D1" 1
waiting "$T_D1"
kill -0 "$READER" && echo "reader still waiting"

echo "== no waiters on mount 0"
waiting "$T_D0"

echo "== staging from another mount wakes it"
scoutfs stage "$ARC" "$SD/file" -V "$V"
wait "$READER"
echo "reader rc $?"
READER=
cmp "$ARC" "$T_TMP.read" && echo "reader read the staged bytes"
waiting "$T_D1"
echo "online $(scoutfs stat -s online_blocks "$T_D0/file") offline $(scoutfs stat -s offline_blocks "$T_D0/file")"
t_compare data_version "$V" "$(scoutfs stat -s data_version "$SD/file")"

echo "== a writer of block 2 on mount 1 waits for the whole file"
scoutfs release "$T_D0/file" -V "$V" -o 4K -l 4K
dd if=/dev/zero of="$T_D1/file" bs=$BLK seek=2 count=1 conv=notrunc status=none &
WRITER=$!
wait_for_waiters "$T_D1" 1
waiting "$T_D1"
scoutfs stage "$ARC" "$SD/file" -V "$V"
wait "$WRITER"
echo "writer rc $?"
WRITER=
dd if=/dev/zero bs=$BLK count=1 status=none | dd of="$ARC" bs=$BLK seek=2 conv=notrunc status=none
cmp "$ARC" "$T_D0/file" && echo "mount 0 reads the staged file with the write"
t_compare data_version "$V" "$(scoutfs stat -s data_version "$SD/file")"

echo "== a reader on the staging mount itself"
V=$(scoutfs stat -s data_version "$T_D0/file")
scoutfs release "$T_D0/file" -V "$V"
cat "$SD/file" > "$T_TMP.read" &
READER=$!
wait_for_waiters "$SD" 1
waiting "$SD"
scoutfs stage "$ARC" "$SD/file" -V "$V"
wait "$READER"
echo "reader rc $?"
READER=
cmp "$ARC" "$T_TMP.read" && echo "reader read the staged bytes"

t_pass
