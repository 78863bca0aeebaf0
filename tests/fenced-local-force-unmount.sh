#!/usr/bin/bash
#
# The fence action of the tests (run by scoutfs-fenced, see
# harness/cluster.py's scoutfs-fenced.conf): all mounts of a test
# cluster live on this host, so a mount is "fenced" by force-unmounting
# it.  The mount to fence is the one whose sysfs view dir has the rid of
# the request ($SCOUTFS_FENCED_REQ_RID).  When none has it, the fenced
# mount is already gone (killed, unmounted) and there is nothing to do.
#
# As upstream, the view dir names the mount by its data device
# (data_device_maj_min); our mounts are FUSE mounts of type fuse.scoutfs
# whose source is the data device path.  When several mounts share one
# data device (image files without loop devices), the candidates are told
# apart by asking each daemon its rid over its control socket, which
# needs no request to the (possibly hung) FUSE mount.
#

echo "$0 running rid '$SCOUTFS_FENCED_REQ_RID' ip '$SCOUTFS_FENCED_REQ_IP' args '$*'"

echo_fail()
{
	echo "$@" >&2
	exit 1
}

# silence error messages
quiet_cat()
{
	cat "$@" 2>/dev/null
}

# "M:m" of a block device's rdev, else of the device holding the file
dev_of()
{
	local path="$1"

	if [ -b "$path" ]; then
		stat -L -c '%Hr:%Lr' "$path" 2>/dev/null
	else
		stat -L -c '%Hd:%Ld' "$path" 2>/dev/null
	fi
}

# the rid (%016x) the daemon of the mount with FUSE device $1 answers
# with on its control socket
daemon_rid()
{
	local sock="${SCOUTFS_RUN_DIR:-/run/scoutfs}/ctl/$1.sock"
	local py

	py="$(dirname "$(readlink -f "$0")")/../.venv/bin/python"
	[ -x "$py" ] || py=python3
	"$py" - "$sock" <<'EOF' 2>/dev/null
import json, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(5)
s.connect(sys.argv[1])
s.sendall(b'{"op": "ping"}\n')
buf = b""
while b"\n" not in buf:
    chunk = s.recv(4096)
    if not chunk:
        break
    buf += chunk
print("%016x" % json.loads(buf)["rid"])
EOF
}

rid="$SCOUTFS_FENCED_REQ_RID"
root="${SCOUTFS_SYSFS_ROOT:-/run/scoutfs/sys}"
[ -n "$rid" ] || echo_fail "SCOUTFS_FENCED_REQ_RID isn't set"

shopt -s nullglob
for fs in "$root"/fs/scoutfs/*; do
	fs_rid="$(quiet_cat "$fs/rid")"
	nr="$(quiet_cat "$fs/data_device_maj_min")"
	if [ ! -d "$fs" ] || [ "$fs_rid" != "$rid" ] || [ -z "$nr" ]; then
		continue
	fi

	# fuse.scoutfs mounts whose source is that data device
	mnts=()
	devs=()
	while read -r target source majmin; do
		target="$(printf '%b' "$target")"
		source="$(printf '%b' "$source")"
		if [ "$(dev_of "$source")" == "$nr" ]; then
			mnts+=("$target")
			devs+=("$majmin")
		fi
	done < <(findmnt -r -n -t fuse.scoutfs -o TARGET,SOURCE,MAJ:MIN 2>/dev/null)

	mnt=""
	if [ "${#mnts[@]}" -eq 1 ]; then
		mnt="${mnts[0]}"
	else
		for i in "${!mnts[@]}"; do
			if [ "$(daemon_rid "${devs[$i]}")" == "$rid" ]; then
				mnt="${mnts[$i]}"
				break
			fi
		done
	fi
	[ -z "$mnt" ] && continue

	if ! umount -qf "$mnt"; then
		if [ -d "$fs" ]; then
			echo_fail "umount -qf $mnt failed"
		fi
	fi
done

exit 0
