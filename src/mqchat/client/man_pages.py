"""Man pages for chatctl and chatd, made from the one definition of each command line.

chatctl's page comes from the typer app (mqchat.client.typer_app, as the click
commands typer makes of it), chatd's from its argparse parser, so a page cannot
describe options that do not exist. ``chatctl man-pages`` writes them where
``man`` looks for a user's own pages.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mqchat import __version__

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


def _param_line(param: Any) -> str:
    """``--lines, -n N`` for an option, ``ROOM`` for an argument (click's parameters)."""
    if not param.opts[0].startswith("-"):
        return f"\\fI{param.metavar}\\fR"
    flags = ", ".join(f"\\fB{f}\\fR" for f in param.opts)
    return flags if param.is_flag else f"{flags} \\fI{param.metavar}\\fR"


def _params(command: Any) -> list[Any]:
    # Completion is typer's own, on every typer app: the shells' pages say how it works.
    return [p for p in command.params if p.name not in {"install_completion", "show_completion"}]


def commands() -> Iterator[tuple[list[str], Any]]:
    """Every command of the typer app: its words (``service install``) and click command."""
    import typer

    from mqchat.client.typer_app import app

    group: Any = typer.main.get_command(app)  # a group: the app has several commands
    todo = [([name], c) for name, c in group.commands.items()]
    for words, command in todo:
        if hasattr(command, "commands"):
            todo += [([*words, name], c) for name, c in command.commands.items()]
        else:
            yield words, command


def chatctl_page() -> str:
    import typer

    from mqchat.client.typer_app import EXIT_STATUS_HELP, app

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
    for option in _params(typer.main.get_command(app)):
        lines += [".TP", _param_line(option), roff(option.help)]
    lines.append(".SH COMMANDS")
    for words, command in commands():
        usage = [_param_line(p) if p.required else f"[{_param_line(p)}]" for p in command.params]
        lines += [".TP", " ".join([f"\\fB{' '.join(words)}\\fR", *usage]), roff(command.help)]
        for param in command.params:
            lines += [".RS", ".TP", _param_line(param), roff(param.help or ""), ".RE"]
    lines += [
        ".SH EXIT STATUS",
        roff(EXIT_STATUS_HELP),
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
