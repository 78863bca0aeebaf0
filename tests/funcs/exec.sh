# shellcheck shell=bash
#
# Test completion and command execution helpers.  Sourced into every
# test's bash along with the other funcs/*.sh.
#
# A test ends with t_pass, t_skip or t_fail; the harness reads the exit
# status (100..103) and, for a skip or failure, $T_TMPDIR/status.msg.
# These call exit, so inside $(...), a pipeline, ( ... ) or a background
# job they only end that subshell.
#

export T_PASS_STATUS=100
export T_SKIP_STATUS=101
export T_FAIL_STATUS=102
export T_SKIP_PERMITTED_STATUS=103
export T_FIRST_STATUS="$T_PASS_STATUS"
export T_LAST_STATUS="$T_SKIP_PERMITTED_STATUS"

t_status_msg()
{
	echo "$*" > "$T_TMPDIR/status.msg"
}

t_pass()
{
	exit "$T_PASS_STATUS"
}

t_skip()
{
	t_status_msg "$@"
	exit "$T_SKIP_STATUS"
}

#
# Only for cases documented never to work in some environment; the
# harness doesn't count them as skips for the run's exit status.
#
t_skip_permitted()
{
	t_status_msg "$@"
	exit "$T_SKIP_PERMITTED_STATUS"
}

t_fail()
{
	t_status_msg "$@"
	exit "$T_FAIL_STATUS"
}

#
# Quietly run a command during a test.  If it succeeds then we have a
# log of its execution but its output isn't included in the test's
# compared output.  If it fails then the test fails.
#
t_quiet()
{
	echo "# $*" >> "$T_TMPDIR/quiet.log"
	"$@" >> "$T_TMPDIR/quiet.log" 2>&1 || \
		t_fail "quiet command failed"
}

#
# Quietly run a command during a test.  The output is logged but only
# the return code is printed, presumably because the output contains
# a lot of invocation specific text that is difficult to filter.
#
t_rc()
{
	local rc

	echo "# $*" >> "$T_TMP.rc.log"
	"$@" >> "$T_TMP.rc.log" 2>&1
	rc=$?
	echo "rc: $rc"
}

#
# Redirect test output to the output of the invoking harness (fd 6)
# instead of the compared output.
#
t_stdout_invoked()
{
	exec >&6 2>&1
}

#
# Redirect test output back to the compared output file (fd 7).
#
t_stdout_compare()
{
	exec >&7 2>&1
}

#
# Kill background jobs and reap them without bash printing job status
# ("Terminated") into the compared output.
#
t_silent_kill()
{
	local err

	exec {err}>&2 2>/dev/null
	kill "$@"
	wait "$@"
	exec 2>&"$err" {err}>&-
}

#
# Ours: print "NAME increased", "NAME same" or "NAME decreased" comparing two
# integers, so goldens can show how a value moved without the value itself.
#
t_compare()
{
	local name="$1"
	local before="$2"
	local after="$3"

	if [ "$after" -gt "$before" ]; then
		echo "$name increased"
	elif [ "$after" -eq "$before" ]; then
		echo "$name same"
	else
		echo "$name decreased"
	fi
}
