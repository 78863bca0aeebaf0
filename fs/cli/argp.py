"""A small GNU argp/getopt work-alike, so subcommands parse and fail like upstream's.

Each subcommand declares `Opt`s and gets back the parsed events in command-line order
(options and positional arguments interleaved, as argp's parse_opt sees them).  Usage
errors raise `UsageError(msg)`; the dispatcher prints ``<command>: <msg>`` and the
``Try `<command> --help' ...`` line and exits 64 (EX_USAGE), as argp_error does.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

EX_USAGE = 64


class UsageError(Exception):
    def __init__(self, msg: str):
        super().__init__(msg)
        self.msg = msg


class HelpExit(Exception):
    """--help / --usage printed; exit 0."""


@dataclass
class Opt:
    key: str  # the name the command sees
    short: str | None = None
    long: str | None = None
    arg: str | None = None  # metavar; None: takes no argument
    doc: str = ""


POSITIONAL = "ARG"  # key of positional arguments in the event list


def _help(cmd: str, args_doc: str, doc: str, opts: list[Opt]) -> str:
    out = [f"Usage: {cmd} [OPTION...] {args_doc}".rstrip(), doc, ""]
    rows = []
    for o in opts:
        names = []
        if o.short:
            names.append(f"-{o.short}")
        if o.long:
            names.append(f"--{o.long}" + (f"={o.arg}" if o.arg else ""))
        elif o.arg:
            names[-1] += f" {o.arg}"
        lead = ", ".join(names)
        if not o.short:
            lead = "    " + lead
        rows.append((lead, o.doc))
    rows += [("-?, --help", "Give this help list"), ("    --usage", "Give a short usage message")]
    for lead, d in rows:
        out.append(f"  {lead:<28} {d}".rstrip())
    out.append("")
    out.append("Mandatory or optional arguments to long options are also mandatory or optional "
               "for any corresponding short options.")
    return "\n".join(out) + "\n"


def _usage(cmd: str, args_doc: str, opts: list[Opt]) -> str:
    shorts = "".join(o.short for o in opts if o.short and not o.arg)
    parts = [f"Usage: {cmd}"]
    if shorts:
        parts.append(f"[-?{shorts}]")
    for o in opts:
        if o.short and o.arg:
            parts.append(f"[-{o.short} {o.arg}]")
    for o in opts:
        if o.long:
            parts.append(f"[--{o.long}" + (f"={o.arg}]" if o.arg else "]"))
    parts += ["[--help]", "[--usage]"]
    if args_doc:
        parts.append(args_doc)
    return " ".join(parts) + "\n"


def parse(cmd: str, opts: list[Opt], argv: list[str], *, args_doc: str = "",
          doc: str = "") -> list[tuple[str, str | bool]]:
    """Parse argv (without the command name) into [(key, value)] in order: option events
    (value True for flags) and (POSITIONAL, arg) events.  Raises UsageError or HelpExit."""
    by_short = {o.short: o for o in opts if o.short}
    by_long = {o.long: o for o in opts if o.long}
    events: list[tuple[str, str | bool]] = []
    positional: list[str] = []
    i = 0
    while i < len(argv):
        a = argv[i]
        i += 1
        if a == "--":
            positional += argv[i:]
            break
        if a.startswith("--"):
            name, eq, val = a[2:].partition("=")
            longs: dict[str, Opt | str] = {**by_long, "help": "help", "usage": "usage"}
            o = longs.get(name)
            if o is None:
                cands = [k for k in longs if k.startswith(name)] if name else []
                if len(cands) == 1:
                    o = longs[cands[0]]
                elif len(cands) > 1:
                    poss = " ".join(f"'--{c}'" for c in cands)
                    raise UsageError(f"option '--{name}' is ambiguous; possibilities: {poss}")
                else:
                    raise UsageError(f"unrecognized option '--{name}'")
            if isinstance(o, str):
                sys.stdout.write(_help(cmd, args_doc, doc, opts) if o == "help"
                                 else _usage(cmd, args_doc, opts))
                raise HelpExit()
            if o.arg is None:
                if eq:
                    raise UsageError(f"option '--{o.long}' doesn't allow an argument")
                events.append((o.key, True))
            else:
                if not eq:
                    if i >= len(argv):
                        raise UsageError(f"option '--{o.long}' requires an argument")
                    val = argv[i]
                    i += 1
                events.append((o.key, val))
            continue
        if a.startswith("-") and a != "-":
            j = 1
            while j < len(a):
                c = a[j]
                j += 1
                if c == "?":
                    sys.stdout.write(_help(cmd, args_doc, doc, opts))
                    raise HelpExit()
                o = by_short.get(c)
                if o is None:
                    raise UsageError(f"invalid option -- '{c}'")
                if o.arg is None:
                    events.append((o.key, True))
                    continue
                if j < len(a):
                    val = a[j:]
                else:
                    if i >= len(argv):
                        raise UsageError(f"option requires an argument -- '{c}'")
                    val = argv[i]
                    i += 1
                events.append((o.key, val))
                break
            continue
        positional.append(a)
    # getopt permutes: argp sees every option before the first positional argument
    events += [(POSITIONAL, p) for p in positional]
    return events


def try_line(cmd: str) -> str:
    return f"Try `{cmd} --help' or `{cmd} --usage' for more information.\n"
