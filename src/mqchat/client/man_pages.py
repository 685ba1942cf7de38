"""Man pages for chatctl and chatd, made from the one definition of each command line.

chatctl's page comes from mqchat.client.cli_spec (the table the typer app and
the fast path are built from), chatd's from its argparse parser, so a page
cannot describe options that do not exist. ``chatctl man-pages`` writes them
where ``man`` looks for a user's own pages.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
from pathlib import Path

from mqchat import __version__
from mqchat.client import cli_spec
from mqchat.client.cli_spec import Argument, Command, Option

SEE_ALSO = "docs/ipc.md, docs/protocol.md, docs/security.md and README.md in mqchat's source"


def default_dir() -> Path:
    """~/.local/share/man/man1: on ``man``'s path for every user (manpath(5))."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path("~/.local/share").expanduser())
    return Path(base) / "man" / "man1"


def roff(text: str) -> str:
    """Text as roff: backslashes, and lines that would start with a control character."""
    text = text.replace("\\", "\\e").replace("`", "")
    return "\n".join(
        ("\\&" + line) if line.startswith((".", "'")) else line for line in text.splitlines()
    )


def _header(name: str, summary: str) -> list[str]:
    today = dt.date.today().isoformat()
    return [
        f'.TH {name.upper()} 1 "{today}" "mqchat {__version__}" "mqchat"',
        ".SH NAME",
        f"{name} \\- {roff(summary)}",
    ]


def _option_line(option: Option) -> str:
    flags = ", ".join(f"\\fB{f}\\fR" for f in option.flags)
    if option.kind is not None:
        flags += f" \\fI{option.metavar or option.dest.upper()}\\fR"
    return flags


def _usage(command: Command) -> str:
    words = [w for w in (command.group, command.name) if w]
    parts = [f"\\fB{' '.join(words)}\\fR"]
    for param in command.params:
        if isinstance(param, Argument):
            meta = f"\\fI{param.metavar}\\fR"
            parts.append(meta if param.required else f"[{meta}]")
        else:
            parts.append(f"[{_option_line(param)}]")
    return " ".join(parts)


def chatctl_page() -> str:
    lines = _header("chatctl", "encrypted group chat over MQTT: the client of chatd")
    lines += [
        ".SH SYNOPSIS",
        "\\fBchatctl\\fR [\\fIGLOBAL OPTIONS\\fR] \\fICOMMAND\\fR [\\fIARGS\\fR]",
        ".br",
        "\\fBchatctl \\-\\-version\\fR",
        ".SH DESCRIPTION",
        "chatctl talks to chatd, the mqchat daemon, over sockets in the runtime directory: "
        "it joins rooms, sends, tails and chats, so several terminals share one session.",
        ".SH GLOBAL OPTIONS",
    ]
    for option in cli_spec.GLOBAL_OPTIONS:
        lines += [".TP", _option_line(option), roff(option.help)]
    lines.append(".SH COMMANDS")
    for command in cli_spec.COMMANDS:
        lines += [".TP", _usage(command), roff(command.help)]
        for param in command.params:
            if isinstance(param, Argument):
                name = f"\\fI{param.metavar}\\fR"
            else:
                name = _option_line(param)
            lines += [".RS", ".TP", name, roff(param.help), ".RE"]
    lines += [
        ".SH EXIT STATUS",
        roff(cli_spec.EXIT_STATUS_HELP),
        ".SH ENVIRONMENT",
        "MQCHAT_RUNTIME_DIR, and for chatd's settings see \\fBchatd\\fR(1); "
        "NO_COLOR turns colour off.",
        ".SH SEE ALSO",
        f"\\fBchatd\\fR(1); {SEE_ALSO}.",
    ]
    return "\n".join(lines) + "\n"


def chatd_page(parser: argparse.ArgumentParser) -> str:
    lines = _header("chatd", "the mqchat daemon")
    lines += [".SH SYNOPSIS", roff(" ".join(parser.format_usage().removeprefix("usage: ").split()))]
    lines += [".SH DESCRIPTION", roff(parser.description or "")]
    lines.append(".SH OPTIONS")
    for action in parser._actions:
        if not action.option_strings:
            continue
        flags = ", ".join(f"\\fB{f}\\fR" for f in action.option_strings)
        if action.metavar:
            flags += f" \\fI{action.metavar}\\fR"
        lines += [".TP", flags, roff(action.help or "")]
    lines += [".SH ENVIRONMENT AND EXIT STATUS", roff(parser.epilog or "")]
    lines += [".SH SEE ALSO", f"\\fBchatctl\\fR(1); {SEE_ALSO}."]
    return "\n".join(lines) + "\n"


def write_pages(directory: Path) -> list[Path]:
    from mqchat.daemon.main import parser

    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, page in (("chatctl", chatctl_page()), ("chatd", chatd_page(parser()))):
        path = directory / f"{name}.1"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(page)
        tmp.replace(path)
        written.append(path)
    return written
