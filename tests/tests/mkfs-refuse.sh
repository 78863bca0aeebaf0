#
# mkfs refuses to overwrite an existing filesystem without -f and
# devices smaller than 64 GiB without -A.  The scratch devices are
# smaller than that, so they always get -A.  It also refuses one
# device given as both, bad sizes (a usage error) and a mounted
# volume even with -f; fsck refuses a mounted volume too.
#
umask 022

t_require_commands scoutfs truncate dd

SM_META="$T_TMPDIR/small-meta.img"
SM_DATA="$T_TMPDIR/small-data.img"
BIG_META="$T_TMPDIR/big-meta.img"
BIG_DATA="$T_TMPDIR/big-data.img"
OTHER_META="$T_TMPDIR/other-meta.img"
OTHER_DATA="$T_TMPDIR/other-data.img"

filter()
{
	sed -e "s@$T_EX_META_DEV@SCRATCH_META@g" -e "s@$T_EX_DATA_DEV@SCRATCH_DATA@g" \
	    -e "s@$T_TMPDIR@TMPDIR@g" -e "s@:$T_SCRATCH_PORT\$@:SCRATCH_PORT@" \
	    -e 's@\(fsid: *\)[0-9a-f]*$@\1<fsid>@' \
	    -e 's@\(uuid: *\)[0-9a-f-]*$@\1<uuid>@'
}

# who has a device open (pid, command, alias) depends on the run
filter_use()
{
	sed -e "s/[a-z]* device '[^']*' is in use: [^;]*/a device is in use/"
}

# the scratch devices' sizes depend on the harness's setup
filter_sizes()
{
	grep -v -e 'too small' -e 'Allowing small size' -e 'blocks: '
}

# mkfs ARGS...: print its output filtered and its status
mkfs()
{
	scoutfs mkfs "$@" 2>&1 | filter
	echo "rc: ${PIPESTATUS[0]}"
}

QUORUM="0,127.0.0.1,$T_SCRATCH_PORT"

echo "== scratch mkfs creates"
t_scratch_mkfs -A
filter < "$T_TMP.mkfs.out" | filter_sizes

echo "== mkfs without -f refuses"
mkfs -A -Q "$QUORUM" "$T_EX_META_DEV" "$T_EX_DATA_DEV"

echo "== the refused volume is intact"
t_scratch_mount
touch "$T_MSCR/file"
ls "$T_MSCR"
t_scratch_umount
mkfs -A -Q "$QUORUM" "$T_EX_META_DEV" "$T_EX_DATA_DEV"

echo "== mkfs -f overwrites"
mkfs -f -A -Q "$QUORUM" "$T_EX_META_DEV" "$T_EX_DATA_DEV" | filter_sizes
t_scratch_mount
ls "$T_MSCR"
echo "entries: $(ls "$T_MSCR" | wc -l)"
t_scratch_umount

echo "== small devices are refused without -A"
truncate -s 1G "$SM_META" "$SM_DATA"
truncate -s 64G "$BIG_META" "$BIG_DATA"
mkfs -Q "$QUORUM" "$SM_META" "$SM_DATA"
mkfs -Q "$QUORUM" "$BIG_META" "$SM_DATA"
mkfs -Q "$QUORUM" "$SM_META" "$BIG_DATA"
mkfs -f -Q "$QUORUM" "$SM_META" "$SM_DATA"

echo "== 64 GiB devices are big enough"
mkfs -Q "$QUORUM" "$BIG_META" "$BIG_DATA"

echo "== -A allows small devices"
mkfs -A -Q "$QUORUM" "$SM_META" "$SM_DATA"

echo "== a small volume refuses mkfs without -f too"
mkfs -A -Q "$QUORUM" "$SM_META" "$SM_DATA"
mkfs -f -A -Q "$QUORUM" "$SM_META" "$SM_DATA"

echo "== other filesystems are refused without -f"
truncate -s 1G "$OTHER_META" "$OTHER_DATA"
printf '\x53\xef' | dd of="$OTHER_META" bs=1 seek=1080 conv=notrunc status=none
mkfs -A -Q "$QUORUM" "$OTHER_META" "$OTHER_DATA"
rm -f "$OTHER_META"
truncate -s 1G "$OTHER_META"
printf 'XFSB' | dd of="$OTHER_DATA" conv=notrunc status=none
mkfs -A -Q "$QUORUM" "$OTHER_META" "$OTHER_DATA"
mkfs -f -A -Q "$QUORUM" "$OTHER_META" "$OTHER_DATA" | filter_sizes

echo "== one device as both is refused even with -f"
mkfs -f -A -Q "$QUORUM" "$OTHER_META" "$OTHER_META"

echo "== a bad size is a usage error"
mkfs -f -A -Q "$QUORUM" -m 12QQ "$OTHER_META" "$OTHER_DATA"

echo "== a mounted volume is refused even with -f, and by fsck"
t_scratch_mount
mkfs -f -A -Q "$QUORUM" "$T_EX_META_DEV" "$T_EX_DATA_DEV" | filter_use
scoutfs fsck "$T_EX_META_DEV" "$T_EX_DATA_DEV" 2>&1 | filter | filter_use
echo "rc: ${PIPESTATUS[0]}"
t_scratch_umount
scoutfs fsck "$T_EX_META_DEV" "$T_EX_DATA_DEV" 2>&1 | filter
echo "rc: ${PIPESTATUS[0]}"

t_pass
