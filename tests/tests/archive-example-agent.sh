#
# scripts/example-archive-agent end to end: it archives a directory's files
# into another directory and releases them; a reader on another mount blocks
# on the offline blocks until the agent, which watches data-waiting on every
# mount, stages the archived copy with its recorded data_version; a file
# written after archiving is archived and released again; SIGTERM stops the
# agent cleanly and no waiter is left behind.
#

t_require_commands scoutfs dd cmp cp python3 grep
t_require_mounts 2

SRC="$T_D0/src"
ARCH="$T_TMP.archive"
LOG="$T_TMP.agent.log"
AGENT="$T_TESTS/../scripts/example-archive-agent"
AGENT_PID=""

field()
{
	scoutfs stat -s "$1" "$2"
}

# wait (at most 60 s) until the command line $1 succeeds
wait_until()
{
	local end=$((SECONDS + 60))

	while [ "$SECONDS" -lt "$end" ]; do
		eval "$1" && return 0
		sleep 0.1
	done
	echo "timed out waiting for: $1"
	return 1
}

cleanup()
{
	[ -n "$AGENT_PID" ] && kill -9 "$AGENT_PID" 2>/dev/null
	wait 2>/dev/null
}
trap cleanup EXIT

echo "== two files to archive"
mkdir -p "$SRC/sub"
dd if=/dev/urandom of="$T_TMP.a" bs=4096 count=40 status=none
dd if=/dev/urandom of="$T_TMP.b" bs=1000 count=13 status=none
cp "$T_TMP.a" "$SRC/a"
cp "$T_TMP.b" "$SRC/sub/b"

echo "== the agent archives and releases them"
python3 "$AGENT" -i 0.2 -w "$T_M0" -w "$T_M1" "$SRC" "$ARCH" 2> "$LOG" &
AGENT_PID=$!
wait_until '[ "$(field offline_blocks "$SRC/a")" = 40 ] && [ "$(field offline_blocks "$SRC/sub/b")" = 4 ]'
echo "a online $(field online_blocks "$SRC/a") offline $(field offline_blocks "$SRC/a")"
echo "b online $(field online_blocks "$SRC/sub/b") offline $(field offline_blocks "$SRC/sub/b")"
cmp "$T_TMP.a" "$ARCH/a" && echo "archived a"
cmp "$T_TMP.b" "$ARCH/sub/b" && echo "archived b"

echo "== readers on mount 1 wait until the agent stages"
cmp "$T_TMP.a" "$T_D1/src/a" && echo "mount 1 reads a"
cmp "$T_TMP.b" "$T_D1/src/sub/b" && echo "mount 1 reads b"
grep -q "staged a for read at block [0-9]* on $T_M1\$" "$LOG" && echo "the agent staged a for a reader on mount 1"
echo "a online $(field online_blocks "$SRC/a") offline $(field offline_blocks "$SRC/a")"

echo "== a file written after archiving is archived and released again"
V=$(field data_version "$SRC/a")
dd if=/dev/urandom of="$T_TMP.a2" bs=4096 count=3 status=none
cp "$T_TMP.a2" "$T_D1/src/a"
wait_until 'cmp -s "$T_TMP.a2" "$ARCH/a" && [ "$(field offline_blocks "$SRC/a")" = 3 ]'
[ "$(field data_version "$SRC/a")" -gt "$V" ] && echo "a has a new data_version"
cmp "$T_TMP.a2" "$T_D1/src/a" && echo "mount 1 reads the new a"

echo "== SIGTERM stops the agent"
kill -TERM "$AGENT_PID"
wait "$AGENT_PID"
echo "agent exit $?"
AGENT_PID=""
tail -n 1 "$LOG"

echo "== no waiters remain"
scoutfs data-waiting -I 0 -B 0 -p "$T_M0"
scoutfs data-waiting -I 0 -B 0 -p "$T_M1"

t_pass
