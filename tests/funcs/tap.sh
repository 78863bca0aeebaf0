# shellcheck shell=bash
#
# TAP (version 14) report of a run: $T_RESULTS/scoutfs.tap.
#
# t_tap_header writes the plan and a comment block describing the run;
# t_tap_progress appends one record per test run.  As upstream they use
# the harness's $tests (the selected test file names, e.g. "foo.sh",
# whitespace separated) and $testcount (tests recorded so far); the test
# names can also be given after the run id, and the test number as a
# third argument to t_tap_progress.  Goldens are read from
# ${T_GOLDEN_DIR:-golden} (run from tests/, as the harness does).
#

t_tap_header()
{
	local runid="$1"
	local list
	local count
	local t
	shift

	if [ "$#" -gt 0 ]; then
		list="$*"
	else
		list="${tests:-}"
	fi
	# shellcheck disable=SC2086 # word split the list
	count=$(set -- $list; echo "$#")

	[[ -z "$runid" ]] && runid="*test*"

	cat > "$T_RESULTS/scoutfs.tap" <<TAPEOF
TAP version 14
1..${count}
#
# TAP results for run ${runid}
#
# host/run info:
#
#     hostname: ${HOSTNAME:-$(hostname)}
#     test start time: $(date --utc)
#     uname -r: $(uname -r)
#     scoutfs commit id: $(git describe --tags 2>/dev/null || git rev-parse --short HEAD 2>/dev/null || echo unknown)
#
# sequence for this run:
#
TAPEOF

	# shellcheck disable=SC2086 # word split the list
	for t in $list; do
		echo "${t%.sh}"
	done | cat -n | expand | column -c 120 | expand | sed 's/^ /#/' \
		>> "$T_RESULTS/scoutfs.tap"
	echo "#" >> "$T_RESULTS/scoutfs.tap"
}

t_tap_progress()
{
(
	local testname="$1"
	local result="$2"
	local i="${3:-$(( ${testcount:-0} + 1 ))}"
	local golden="${T_GOLDEN_DIR:-golden}/${testname}"
	local output="$T_RESULTS/output/${testname}"
	local stmsg=""
	local diff=""
	local dmsg=""

	if [[ -s "$T_TMPDIR/status.msg" ]]; then
		stmsg="1"
	fi

	if [[ -s "$T_TMPDIR/dmesg.new" ]]; then
		dmsg="1"
	fi

	if ! cmp -s "$golden" "$output"; then
		diff="1"
	fi

	if [[ "${result}" == "100" ]] && [[ -z "${dmsg}" ]] && [[ -z "${diff}" ]]; then
		echo "ok ${i} - ${testname}"
	elif [[ "${result}" == "103" ]]; then
		echo "ok ${i} - ${testname}"
		echo "# ${testname} ** skipped - permitted **"
	else
		echo "not ok ${i} - ${testname}"
		case "${result}" in
		101)
			echo "# ${testname} ** skipped **"
			;;
		*)
			echo "# ${testname} ** failed **"
			;;
		esac

		if [[ -n "${stmsg}" ]]; then
			echo "#"
			echo "# status:"
			echo "#"
			sed 's/^/# - /' "$T_TMPDIR/status.msg"
		fi

		if [[ -n "${diff}" ]]; then
			echo "#"
			echo "# diff:"
			echo "#"
			diff -u "$golden" "$output" 2>&1 | expand | sed 's/^/#   /'
		fi

		if [[ -n "${dmsg}" ]]; then
			echo "#"
			echo "# dmesg:"
			echo "#"
			sed 's/^/#   /' "$T_TMPDIR/dmesg.new"
		fi
	fi
) >> "$T_RESULTS/scoutfs.tap"
}
