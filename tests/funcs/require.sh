# shellcheck shell=bash
#
# Test requirements: fail or skip early when the environment can't run
# the test.
#

#
# Fail if any of the given commands isn't found in PATH.
#
t_require_commands()
{
	local c

	for c in "$@"; do
		which "$c" >/dev/null 2>&1 || \
			t_fail "command $c not found in path"
	done
}

#
# Skip the test if there are fewer than the required number of mounts.
#
t_require_mounts()
{
	local req="$1"

	test "$T_NR_MOUNTS" -ge "$req" || \
		t_skip "$req mounts required, only have $T_NR_MOUNTS"
}

#
# Skip the test if the metadata device is smaller than the given size
# (numfmt iec, e.g. 10G).  Our meta device can be an image file.
#
t_require_meta_size()
{
	local dev="$T_META_DEVICE"
	local req_iec="$1"
	local req_bytes
	local dev_bytes
	local dev_iec

	req_bytes=$(numfmt --from=iec --to=none "$req_iec") || \
		t_fail "invalid size $req_iec"
	if [ -b "$dev" ]; then
		dev_bytes=$(blockdev --getsize64 "$dev")
	else
		dev_bytes=$(stat -L -c %s "$dev")
	fi
	test -n "$dev_bytes" || t_fail "couldn't get size of meta device $dev"
	dev_iec=$(numfmt --from=auto --to=iec "$dev_bytes")

	if [ "$dev_bytes" -lt "$req_bytes" ]; then
		t_skip "$dev must be at least $req_iec, is $dev_iec"
	fi
}
