#
# .totl. xattrs (scoutfs.[hide.]totl.NAME.A.B.C = u64) and scoutfs
# read-xattr-totals: the parsing rules and errnos (a refused change
# leaves the totals alone), then the totals (sum of values, number of
# xattrs) after sets, replaces, removes and file deletion, read from
# every mount once committed, and totals under concurrent updates from
# every mount, across a log merge.
#
# Totals are read after a sync (it commits every mount) and after
# emptying every mount's 5 s weak cache (debugfs drop_weak_item_cache).
# Only totals whose A is 4242 (this test's) are shown.
#

t_require_commands scoutfs touch rm setfattr getfattr dumb_setxattr setpriv awk
t_require_mounts 2

NONROOT="setpriv --reuid=22222 --regid=44444 --clear-groups"
FILE="$T_D0/file"

drop_cache()
{
	echo 1 > "$(t_debugfs_path "$1")/drop_weak_item_cache"
}

# this test's totals as mount $1 reads them
totals()
{
	scoutfs read-xattr-totals -p "$(t_mount_path "$1")" > "$T_TMP.totals" 2>&1
	echo "rc $?" >> "$T_TMP.totals"
	awk '$1 ~ /^4242\./ || $1 == "rc"' "$T_TMP.totals"
}

# commit everything, then show the totals mount ${1:-0} reads
show()
{
	sync
	drop_cache "${1:-0}"
	totals "${1:-0}"
}

# show mount 0's totals and check that every other mount reads the same
show_all()
{
	local m

	show 0 > "$T_TMP.t0"
	cat "$T_TMP.t0"
	for m in $(t_fs_nrs); do
		[ "$m" == 0 ] && continue
		drop_cache "$m"
		totals "$m" | diff -u "$T_TMP.t0" - > /dev/null || \
			{ echo "mount $m reads other totals:"; totals "$m"; }
	done
}

# wait until mount 0 reads the totals in file $1 (a deleted file's
# xattrs go when the last reference is forgotten, after its unlink),
# then show them as every mount reads them
wait_totals()
{
	local start="$SECONDS"

	while :; do
		show > "$T_TMP.t0"
		diff -u "$1" "$T_TMP.t0" > /dev/null && break
		[ $((SECONDS - start)) -lt 60 ] || { echo "totals never became:"; cat "$1"; break; }
		sleep .2
	done
	show_all
}

# files open on other mounts are deleted by the orphan scanner: scan
# often while this test runs
for m in $(t_fs_nrs); do
	opt="$(t_sysfs_path "$m")/mount_options/orphan_scan_delay_ms"
	echo "$m $(cat "$opt")" >> "$T_TMP.scan_delay"
	echo 100 > "$opt"
done

touch "$FILE"

echo "== no totals yet"
show

echo "== values: u64 in base 0"
for v in 10 0x10 010 0; do
	echo "'$v': $(dumb_setxattr -p "$FILE" -n "scoutfs.totl.v$v.4242.1.1" -v "$v")"
done
show

echo "== bad values and names are EINVAL and change no total"
for v in +1 10. - junk10 10junk -1 " 10" 18446744073709551616 "" 000000000000000000000001; do
	echo "'$v': $(dumb_setxattr -p "$FILE" -n scoutfs.totl.v10.4242.1.1 -v "$v")"
done
for n in scoutfs.totl.x.4242.1 scoutfs.totl.x.4242.1.x scoutfs.totl.x.4242.+1.2 \
	 scoutfs.totl.x.4242.1.18446744073709551616 scoutfs.totl.indx.x.4242.1.2 \
	 scoutfs.totl.totl.x.4242.1.2; do
	echo "'$n': $(dumb_setxattr -p "$FILE" -n "$n" -v 1)"
done

echo "== non-root: set is EPERM, removal from a file it cannot write EACCES"
chmod 777 "$T_D0"
$NONROOT touch "$T_D0/nonroot"
echo "set: $($NONROOT dumb_setxattr -p "$T_D0/nonroot" -n scoutfs.totl.n.4242.1.1 -v 5)"
echo "remove: $($NONROOT setfattr -x scoutfs.totl.v10.4242.1.1 "$FILE" 2>&1 | t_filter_fs)"
show

echo "== replace changes the total, not the count"
setfattr -n scoutfs.totl.v10.4242.1.1 -v 100 "$FILE"
show
echo "== create on an existing xattr is EEXIST, replace of a missing one ENODATA"
echo "create: $(dumb_setxattr -p "$FILE" -n scoutfs.totl.v10.4242.1.1 -v 7 -c)"
echo "replace: $(dumb_setxattr -p "$FILE" -n scoutfs.totl.nope.4242.1.1 -v 7 -r)"

echo "== hidden and other names add to the same total"
touch "$T_D0/other"
setfattr -n scoutfs.hide.totl.h.4242.1.1 -v 1000 "$T_D0/other"
setfattr -n scoutfs.totl.srch.s.4242.1.1 -v 3 "$T_D0/other"
setfattr -n scoutfs.totl.b.4242.0x1.02 -v 2 "$T_D0/other"
setfattr -n scoutfs.totl.c.4242.18446744073709551615.18446744073709551615 \
	-v 18446744073709551615 "$T_D0/other"
show

echo "== remove"
setfattr -x scoutfs.totl.v0x10.4242.1.1 "$FILE"
setfattr -x scoutfs.totl.v0x10.4242.1.1 "$FILE" 2>&1 | t_filter_fs
show

echo "== set on mount 1, replaced and removed on mount 0"
D1=$(t_mount_dir 1)
setfattr -n scoutfs.totl.m1.4242.2.2 -v 50 "$D1/file"
show_all
setfattr -n scoutfs.totl.m1.4242.2.2 -v 40 "$FILE"
setfattr -x scoutfs.totl.m1.4242.2.2 "$FILE"
show 1

echo "== deleting files removes their xattrs' totals"
cat > "$T_TMP.want" <<EOF
4242.1.1 = 10, 1
rc 0
EOF
rm -f "$T_D0/other" "$T_D0/nonroot"  # cached by mount 0 alone
setfattr -x scoutfs.totl.v010.4242.1.1 "$FILE"
setfattr -x scoutfs.totl.v0.4242.1.1 "$FILE"
setfattr -n scoutfs.totl.v10.4242.1.1 -v 10 "$FILE"
wait_totals "$T_TMP.want"
cat > "$T_TMP.want" <<EOF
rc 0
EOF
rm -f "$FILE"  # mount 1 has it cached too: deleted by an orphan scan
wait_totals "$T_TMP.want"

echo "== concurrent updates from every mount"
# each mount sets, replaces and removes xattrs of its own files, and
# of one file shared by all, in rounds; the totals are known
mkdir "$T_D0/conc"
touch "$T_D0/conc/shared"
for m in $(t_fs_nrs); do
	D=$(t_mount_dir "$m")
	(
		for i in $(seq 1 10); do
			touch "$D/conc/f$m.$i"
			setfattr -n scoutfs.totl.own.4242.3.0 -v "$i" "$D/conc/f$m.$i"
			setfattr -n scoutfs.totl.mnt.4242.4.$m -v 1 "$D/conc/f$m.$i"
			setfattr -n "scoutfs.totl.sh$m.$i.4242.5.0" -v "$i" "$D/conc/shared"
			setfattr -n scoutfs.totl.own.4242.3.0 -v "$((i * 2))" "$D/conc/f$m.$i"
			[ $((i % 2)) == 0 ] && setfattr -x scoutfs.totl.mnt.4242.4.$m "$D/conc/f$m.$i"
			[ "$i" == 5 ] && rm -f "$D/conc/f$m.$i"
		done
	) &
done
wait
# per mount: own = 2 * (55 - 5) over 9 files, mnt = 5 files minus the
# deleted f5 (odd), shared = 55 over 10 xattrs
nr=$(t_fs_nrs | wc -w)
{
	echo "4242.3.0 = $((nr * 100)), $((nr * 9))"
	for m in $(t_fs_nrs); do
		echo "4242.4.$m = 4, 4"
	done
	echo "4242.5.0 = $((nr * 55)), $((nr * 10))"
	echo "rc 0"
} > "$T_TMP.want"
wait_totals "$T_TMP.want" | sed "s/= $((nr * 100)), $((nr * 9))$/= N*100, N*9/; s/= $((nr * 55)), $((nr * 10))$/= N*55, N*10/; s/^4242\.4\.[0-9]* = 4, 4$/4242.4.M = 4, 4/" | uniq

echo "== the same totals after a log merge"
t_force_log_merge
show_all | sed "s/= $((nr * 100)), $((nr * 9))$/= N*100, N*9/; s/= $((nr * 55)), $((nr * 10))$/= N*55, N*10/; s/^4242\.4\.[0-9]* = 4, 4$/4242.4.M = 4, 4/" | uniq

echo "== all gone with the files"
for m in $(t_fs_nrs); do
	rm -f "$(t_mount_dir "$m")"/conc/f$m.*
done
rm -f "$T_D0/conc/shared"
echo "rc 0" > "$T_TMP.want"
wait_totals "$T_TMP.want"

echo "== read-xattr-totals needs root"
$NONROOT scoutfs read-xattr-totals -p "$T_M0" 2>&1; echo "rc $?"

while read -r m delay; do
	echo "$delay" > "$(t_sysfs_path "$m")/mount_options/orphan_scan_delay_ms"
done < "$T_TMP.scan_delay"

t_pass
