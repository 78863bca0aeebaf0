"""The `scoutfs` command: dispatch to a subcommand as upstream's utils/src/main.c does.

Conventions (spec cli-and-harness §4.1): argp's program name is the subcommand name; usage
errors print ``<cmd>: <msg>`` and the Try line and exit 64; a failing subcommand prints
``scoutfs: <cmd> failed: <strerror> (<errno>)`` and exits 1; no or an unknown command prints
the usage text to stderr and exits 1.  Beyond upstream (which calls ``--help`` an unknown
command): ``scoutfs --help``, ``-h`` and ``help`` print the usage text to stdout and exit 0,
and ``scoutfs help CMD`` is ``scoutfs CMD --help``.

No Python text reaches the user: an OSError or FsError a subcommand lets escape becomes the
failed line, and the storage layer's log records (which repeat what the error says) are not
printed by the CLI.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys

from fs.cli import argp
from fs.cli.util import COMMANDS, GROUPS, CmdExit, CmdFailed, err, errno_str, error_errno
from fs.errors import FsError

HELP_ARGS = ("--help", "-h", "help")

# subcommand modules: importing one registers its commands
MODULES = ["fs.cli.mkfs", "fs.cli.mount", "fs.cli.statfs", "fs.cli.counters",
           "fs.cli.print_cmd", "fs.cli.fsck"]
# modules other developers may add later; missing ones are skipped
OPTIONAL_MODULES = ["fs.cli.archive", "fs.cli.walk", "fs.cli.xattrs", "fs.cli.quota",
                    "fs.cli.attrx", "fs.cli.fiemap", "fs.cli.devices", "fs.cli.sysfs"]


# commands whose module alone is imported to run them (not every module, as the usage text
# needs): those that must start fast (walk-inodes over 100,000 inodes takes under 1 s, start
# included); a module listed here must not import trio or the storage layers at import time
COMMAND_MODULES = {"walk-inodes": "fs.cli.walk", "ino-path": "fs.cli.walk",
                   "get-referring-entries": "fs.cli.walk", "get-allocated-inos": "fs.cli.walk"}


def load_command(name: str) -> None:
    """Register command `name` (importing just its module when COMMAND_MODULES knows it,
    else every module)."""
    mod = COMMAND_MODULES.get(name)
    if mod is not None:
        importlib.import_module(mod)
        if name in COMMANDS:
            return
    load_commands()


def load_commands() -> None:
    for m in MODULES:
        importlib.import_module(m)
    for m in OPTIONAL_MODULES:
        try:
            importlib.import_module(m)
        except ModuleNotFoundError as e:
            if e.name != m:
                raise


def usage_text() -> str:
    from fs import format as fmt

    load_commands()
    out = ["usage: scoutfs <command> [<args>]", "",
           "Selected fs defaults to current working directory.",
           "See <command> --help for more details.", "",
           f"Supported format version: {fmt.FORMAT_VERSION_MIN}-{fmt.FORMAT_VERSION_MAX}"]
    width = max((len(c.name) for c in COMMANDS.values()), default=0)
    for g in GROUPS:
        cmds = [c for c in COMMANDS.values() if c.group == g]
        if not cmds:
            continue
        out += ["", f"{g}:"]
        for c in cmds:
            out.append(f"  {c.name:<{width}} {c.args_doc}".rstrip())
            out.append(f"  {'':<{width}} {c.doc}".rstrip())
    return "\n".join(out) + "\n"


def run_command(name: str, argv: list[str]) -> int:
    cmd = COMMANDS[name]
    try:
        events = argp.parse(name, cmd.opts, argv, args_doc=cmd.args_doc, doc=cmd.doc)
        ret = cmd.run(name, events)
    except argp.HelpExit:
        return 0
    except argp.UsageError as e:
        sys.stdout.flush()
        sys.stderr.write(f"{name}: {e.msg}\n" + argp.try_line(name))
        return argp.EX_USAGE
    except CmdFailed as e:
        ret = -e.errno
    except CmdExit as e:
        sys.stdout.flush()
        return e.status
    except (OSError, FsError) as e:
        if isinstance(e, BrokenPipeError):
            raise
        ret = -error_errno(e)
    sys.stdout.flush()
    if ret is not None and ret < 0:
        err(f"scoutfs: {name} failed: {errno_str(-ret)}")
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    if argv:
        load_command(argv[0])
    else:
        load_commands()
    # the storage layer logs what its errors say; a command prints the error itself
    logging.getLogger("fs").addHandler(logging.NullHandler())
    if argv and argv[0] in HELP_ARGS and argv[0] not in COMMANDS:
        if argv[0] == "help" and len(argv) > 1:
            argv = [argv[1], "--help"]
        else:
            sys.stdout.write(usage_text())
            return 0
    if not argv or argv[0] not in COMMANDS:
        if argv:
            err(f"scoutfs: unrecognized command: '{argv[0]}'")
        sys.stderr.write(usage_text())
        return 1
    try:
        return run_command(argv[0], argv[1:])
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
