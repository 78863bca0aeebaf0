#
# data-wait-err (spec semantics §5.5, cli-and-harness §4.2): waiters of
# offline blocks fail with the errno it gives; it reports how many it
# found; its argument checks.  A truncate waits with op change_size at
# iblock 0, and its entry merges with a reader's of the same block.  A
# killed waiter disappears, a reader too (its read is the kernel's
# readahead, a request the kernel never interrupts: the daemon watches
# the caller's exit).
#

t_require_commands scoutfs dd stat cat truncate setpriv head cmp
t_require_mounts 2

ARC="$T_TMP.archive"
BLK=4096
FILE="$T_D1/file"

waiting()
{
	scoutfs data-waiting -I 0 -B 0 -p "$1" | sed -e "s/^ino $INO /ino INO /"
}

# wait (at most 60 s) until data-waiting on mount dir $1 prints exactly $2
wait_for_waiting()
{
	local end=$((SECONDS + 60))

	while [ "$SECONDS" -lt "$end" ]; do
		[ "$(waiting "$1")" = "$2" ] && return 0
		sleep 0.1
	done
	echo "timed out waiting for '$2' on $1, have '$(waiting "$1")'"
	return 1
}

run()
{
	"$@" 2>&1 | t_filter_fs | sed -e "s/ $INO / INO /"
	echo "rc ${PIPESTATUS[0]}"
}

PIDS=
cleanup()
{
	local p

	for p in $PIDS; do
		kill -9 "$p" 2>/dev/null
	done
	wait 2>/dev/null
}
trap cleanup EXIT

echo "== a released file"
dd if=/dev/urandom of="$ARC" bs=$BLK count=4 status=none
cp "$ARC" "$T_D0/file"
INO=$(stat -c %i "$T_D0/file")
V=$(scoutfs stat -s data_version "$T_D0/file")
scoutfs release "$T_D0/file" -V "$V"

echo "== a reader and a truncate wait on mount 1"
cat "$FILE" > /dev/null 2> "$T_TMP.cat.err" &
READER=$!
PIDS="$READER"
wait_for_waiting "$T_D1" "ino INO iblock 0 ops read"
truncate -s $BLK "$FILE" 2> "$T_TMP.trunc.err" &
TRUNC=$!
PIDS="$PIDS $TRUNC"
wait_for_waiting "$T_D1" "ino INO iblock 0 ops read,change_size"
waiting "$T_D1"

echo "== data-wait-err fails the reader with EIO"
run scoutfs data-wait-err -p "$T_D1" -I "$INO" -V "$V" -F 0 -C $((4 * BLK)) -O read -E -5
wait "$READER"
echo "reader rc $?"
t_filter_fs < "$T_TMP.cat.err"
waiting "$T_D1"

echo "== then the truncate"
run scoutfs data-wait-err -p "$T_D1" -I "$INO" -V "$V" -F 0 -C 1 -O change_size -E -5
wait "$TRUNC"
echo "truncate rc $?"
t_filter_fs < "$T_TMP.trunc.err"
waiting "$T_D1"
echo "size $(stat -c %s "$FILE") offline $(scoutfs stat -s offline_blocks "$FILE")"

echo "== no waiters to fail"
run scoutfs data-wait-err -p "$T_D1" -I "$INO" -V "$V" -F 0 -C 1 -O read -E -5
run scoutfs data-wait-err -p "$T_D1" -I "$INO" -V "$V" -F 0 -C 0 -O read -E -5

echo "== a killed writer disappears"
dd if=/dev/zero of="$FILE" bs=$BLK seek=1 count=1 conv=notrunc status=none &
WRITER=$!
PIDS="$PIDS $WRITER"
wait_for_waiting "$T_D1" "ino INO iblock 0 ops write"
waiting "$T_D1"
# (bash reports a killed job on the shell's stderr when it reaps it: not output)
exec {err}>&2 2>/dev/null
kill -9 "$WRITER"
wait "$WRITER"
exec 2>&"$err" {err}>&-
wait_for_waiting "$T_D1" "" && echo "no waiters"

echo "== a killed reader disappears"
cat "$FILE" > /dev/null &
READER=$!
PIDS="$PIDS $READER"
wait_for_waiting "$T_D1" "ino INO iblock 0 ops read"
waiting "$T_D1"
exec {err}>&2 2>/dev/null
kill -9 "$READER"
wait "$READER"
exec 2>&"$err" {err}>&-
wait_for_waiting "$T_D1" "" && echo "no waiters"

echo "== argument checks"
run scoutfs data-wait-err -p "$T_D1" -I "$INO" -V "$V" -F 0 -C 1 -O chop -E -5
run scoutfs data-wait-err -p "$T_D1" -I "$INO" -V "$V" -F 0 -C 1 -O read -E 0
run scoutfs data-wait-err -p "$T_D1" -I "$INO" -V "$V" -F 0 -C 1 -O read -E -4096
run scoutfs data-wait-err -p "$T_D1" -I "$INO" -V "$V" -F 2 -C 0xffffffffffffffff -O read -E -5
run scoutfs data-wait-err -p "$T_D1" -I 1 -V "$V" -F 0 -C 1 -O read -E -5
run scoutfs data-wait-err -p "$T_D1" -I 999999999 -V "$V" -F 0 -C 1 -O read -E -5
run setpriv --reuid=22222 --regid=44444 --clear-groups \
	scoutfs data-wait-err -p "$T_D1" -I "$INO" -V "$V" -F 0 -C 1 -O read -E -5
run scoutfs data-wait-err -p "$T_D1" -V "$V" -F 0 -C 1 -O read -E -5
run scoutfs data-wait-err -p "$T_D1" -I "$INO" -F 0 -C 1 -O read -E -5
run scoutfs data-wait-err -p "$T_D1" -I "$INO" -V "$V" -C 1 -O read -E -5
run scoutfs data-wait-err -p "$T_D1" -I "$INO" -V "$V" -F 0 -O read -E -5
run scoutfs data-wait-err -p "$T_D1" -I "$INO" -V "$V" -F 0 -C 1 -E -5
run scoutfs data-wait-err -p "$T_D1" -I "$INO" -V "$V" -F 0 -C 1 -O read
run scoutfs data-waiting -p "$T_D1" -B 0
run scoutfs data-waiting -p "$T_D1" -I 0

echo "== staging still works after all that"
scoutfs stage "$ARC" "$T_D0/file" -V "$(scoutfs stat -s data_version "$T_D0/file")" -l $BLK
head -c $BLK "$ARC" > "$T_TMP.block0"
dd if="$FILE" bs=$BLK count=1 status=none | cmp - "$T_TMP.block0" && echo "block 0 reads"

t_pass
