#!/bin/bash
#
# Golden-output test harness front end: bootstrap the environment if needed, then hand every
# argument to the Python engine (harness/cli.py).  ./run-tests.sh -h lists the options.
#
set -e
top="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

# bootstrap (packages, venv, mount helper, tests/src) unless asked not to or only reporting
case " $* " in
	*" --merge-results "*|*" --cleanup "*|*" --bless "*|*" -h "*|*" --list "*) skip_boot=1 ;;
esac
if [ -z "$skip_boot" ] && [ -z "$HARNESS_NO_BOOTSTRAP" ] && [ -x "$top/scripts/bootstrap" ]; then
	"$top/scripts/bootstrap"
fi

if [ ! -x "$top/.venv/bin/python" ]; then
	echo "[== $top/.venv/bin/python missing: run scripts/bootstrap, exiting ==]" >&2
	exit 1
fi
export PYTHONPATH="$top${PYTHONPATH:+:$PYTHONPATH}"
exec "$top/.venv/bin/python" -m harness.cli "$@"
