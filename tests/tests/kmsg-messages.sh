#
# scoutfs's operator messages reach the kernel log as upstream prints
# them: "scoutfs f.<fsid6>.r.<rid6>: ..." (the mount's sysfs name) at
# KERN_INFO for the mount's lifecycle, "scoutfs (<device>) error: ..."
# at KERN_ERR for a mount the options refuse.
#
# It runs on the scratch volume, mounted alone, so that only its own
# mount's lines are read: the kernel log is the host's, and other
# clusters (and our own three mounts) write to it at the same time.
#

t_require_commands scoutfs dmesg mount umount

# the kernel log lines of one ident (or device name) at one level,
# without timestamps, with addresses and ids made constant
kmsg_lines()
{
	local level="$1"
	local who="$2"

	dmesg --level="$level" | \
		sed -e 's/^\[ *[0-9.]*\] //' | \
		grep -F "scoutfs $who" | \
		sed -e "s/scoutfs $who/scoutfs WHO/" \
		    -e 's/[0-9.]*:[0-9][0-9]*/ADDR/g' \
		    -e 's/fsid [0-9a-f]\{16\} rid [0-9a-f]\{16\}/fsid FSID rid RID/' \
		    -e 's/term [0-9]*/term N/'
}

t_scratch_mkfs -A

echo "== a refused mount says why at error level, named by its device"
opt="bogus_$$"
mount -t scoutfs -o "metadev_path=$T_EX_META_DEV,quorum_slot_nr=0,$opt" \
	"$T_EX_DATA_DEV" "$T_MSCR" 2>&1 | sed -e "s/$opt/bogus_N/"
dev="($(basename "$(realpath "$T_EX_DATA_DEV")"))"
dmesg --level=err | grep -F "$opt" | grep -F "scoutfs $dev error: " | \
	sed -e 's/^\[ *[0-9.]*\] //' -e "s/$opt/bogus_N/" -e "s/$dev/(DEV)/"

echo "== mounting: election, server, client and mount lines"
t_scratch_mount
ident=$(t_ident_from_mnt "$T_MSCR")
echo "$ident" | grep -q '^f\.[0-9a-f]\{6\}\.r\.[0-9a-f]\{6\}$' || \
	t_fail "bad ident '$ident'"
kmsg_lines info "$ident"
echo "error lines: $(kmsg_lines err "$ident" | wc -l)"

echo "== unmounting"
t_scratch_umount
kmsg_lines info "$ident" | grep -E "disconnected|shutting down|stopped|unmounted"

t_pass
