#
# Filling a small scratch volume's data device until ENOSPC uses up its
# free space, and deleting the files returns the data free count exactly to
# where it started.  Counts are only compared, never printed, except the
# data device's total which -d fixes.
#
umask 022

t_require_commands scoutfs dd stat rm

filter()
{
	sed -e "s@$T_MSCR@SCRATCH@g"
}

# df_field ROW COLUMN: MetaData or Data row, column 3 Total, 4 Used, 5 Free
df_field()
{
	scoutfs df -p "$T_MSCR" | awk -v row="$1" -v col="$2" '($1 == row) { print $col }'
}

# the sync wrapper only commits the mounts in $T_MS, not the scratch mount
scratch_sync()
{
	scoutfs sync -p "$T_MSCR"
	sync
}

echo "== mkfs and mount a volume with 256 MiB of data"
t_scratch_mkfs -A -d 256M
t_scratch_mount

echo "== df and statfs"
scoutfs df -p "$T_MSCR" | awk '{ print $1, $2 }'
total=$(df_field Data 3)
echo "data total $total"
stat -f -c 'block size %S fundamental %s' "$T_MSCR"
[ "$(stat -f -c %b "$T_MSCR")" -eq "$total" ] && echo "statfs blocks equal df data total"
scratch_sync
data_free=$(df_field Data 5)
[ "$data_free" -lt "$total" ] && [ "$data_free" -gt $((total * 9 / 10)) ] && \
	echo "data free is below total and above 90%"

echo "== write a file"
dd if=/dev/zero of="$T_MSCR/file" bs=1M count=16 status=none
scratch_sync
t_compare "data free" "$data_free" "$(df_field Data 5)"
echo "used blocks grew by $(( data_free - $(df_field Data 5) ))"
rm "$T_MSCR/file"

echo "== fill until ENOSPC"
dd if=/dev/zero of="$T_MSCR/fill" bs=1M 2>&1 | grep -v records | grep -v copied | filter
dd if=/dev/zero of="$T_MSCR/fill2" bs=4k 2>&1 | grep -v records | grep -v copied | filter
scratch_sync
free=$(df_field Data 5)
t_compare "data free" "$data_free" "$free"
[ $((free * 100)) -lt "$total" ] && echo "data free is below 1% of total"
[ "$(stat -f -c %f "$T_MSCR")" -lt $((total / 100)) ] && echo "statfs free is below 1% of total"
echo "== no more data can be written"
(echo x > "$T_MSCR/small") 2>&1 | filter | sed -e 's/^.*line [0-9]*: /bash: line N: /'

echo "== delete and data free returns"
rm -f "$T_MSCR/fill" "$T_MSCR/fill2" "$T_MSCR/small"
for i in $(seq 1 10); do
	scratch_sync
	if [ "$(df_field Data 5)" -eq "$data_free" ]; then
		break
	fi
	sleep 1
done
[ "$(df_field Data 5)" -eq "$data_free" ] && echo "data free restored"

echo "== the freed space can be written again"
dd if=/dev/zero of="$T_MSCR/again" bs=1M count=200 status=none 2>&1 | filter
echo "again: $(stat -c %s "$T_MSCR/again")"
rm "$T_MSCR/again"

t_scratch_umount

t_pass
