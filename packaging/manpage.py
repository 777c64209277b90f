#!/usr/bin/env python3
"""Writes cofferd.8, coffer.1 and coffer's bash completion from the argparse parsers.

    python packaging/manpage.py OUT_DIR

Run with an interpreter that can import ``coffer`` and ``cofferd`` (build-deb
uses the staged venv). The pages and the completion come from the same
parsers the programs use, so an option cannot be added without them. The
date is ``SOURCE_DATE_EPOCH``'s, so two builds give the same bytes.

argparse keeps its actions and subparsers in private attributes
(``_actions``, ``_SubParsersAction``); there is no public way to walk a
parser, and the help formatter reads the same fields.
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import coffer.cli
import cofferd.main
from cofferd import __version__

# cofferd's exit statuses are stated in cofferd.main's docstring, not in an epilog.
COFFERD_EXIT = """\
0  stopped cleanly on SIGTERM or SIGINT
1  cannot serve on the socket
2  bad settings: the config file, the environment or the arguments
"""

COFFERD_FILES = [
    ("/etc/coffer/cofferd.toml", "settings (overridden by COFFER_* environment variables)"),
    ("/run/coffer/cofferd.sock", "the socket, when not passed by systemd (cofferd.socket)"),
    ("/var/cache/coffer", "cached encrypted resources"),
    ("/var/lib/coffer", "login state and the image archive"),
]
COFFER_FILES = [("/run/coffer/cofferd.sock", "cofferd's socket (or --socket, $COFFER_SOCKET)")]


def cofferd_parser() -> argparse.ArgumentParser:
    """cofferd's parser, as ``cofferd.main`` builds it."""
    return cofferd.main.build_parser()


# roff ---------------------------------------------------------------------


def esc(text: str) -> str:
    """Text safe in roff: backslashes, hyphens, and control characters at line starts."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "\n".join("\\&" + line if line[:1] in (".", "'") else line for line in text.split("\n"))


def _options(parser: argparse.ArgumentParser) -> Iterator[argparse.Action]:
    for action in parser._actions:
        if action.option_strings and action.help != argparse.SUPPRESS:
            yield action


def _positionals(parser: argparse.ArgumentParser) -> Iterator[argparse.Action]:
    for action in parser._actions:
        if not action.option_strings and not isinstance(action, argparse._SubParsersAction):
            yield action


def _subcommands(parser: argparse.ArgumentParser) -> list[tuple[str, str, argparse.ArgumentParser]]:
    """``(name, help, parser)`` of each subcommand, in definition order."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help or "" for a in action._choices_actions}
            return [(name, helps.get(name, ""), p) for name, p in action.choices.items()]
    return []


def _metavar(action: argparse.Action) -> str:
    if action.nargs == 0:
        return ""
    if action.metavar is not None:
        return str(action.metavar)
    return action.dest.upper() if action.option_strings else action.dest


def _option_roff(action: argparse.Action, option: str) -> str:
    """``--output OUT`` in bold and italics."""
    meta = _metavar(action)
    return f"\\fB{esc(option)}\\fR" + (f" \\fI{esc(meta)}\\fR" if meta else "")


def _help(action: argparse.Action, prog: str, fallback: dict[str, str]) -> str:
    if action.help is None:
        return next((fallback[o] for o in action.option_strings if o in fallback), "")
    params = dict(vars(action), prog=prog)
    if params.get("choices") is not None:
        params["choices"] = ", ".join(map(str, params["choices"]))
    return action.help % params


def _option_items(
    parser: argparse.ArgumentParser, fallback: dict[str, str]
) -> Iterator[tuple[str, str]]:
    for action in _options(parser):
        names = ", ".join(_option_roff(action, o) for o in action.option_strings)
        yield names, _help(action, parser.prog, fallback)
    for action in _positionals(parser):
        yield f"\\fI{esc(_metavar(action))}\\fR", _help(action, parser.prog, fallback)


def _synopsis(parser: argparse.ArgumentParser, words: str) -> str:
    parts = [f"\\fB{esc(words)}\\fR"]
    for action in _options(parser):
        if action.dest in ("help", "version"):
            continue
        opt = _option_roff(action, action.option_strings[-1])
        parts.append(opt if action.required else f"[{opt}]")
    parts += [f"\\fI{esc(_metavar(a))}\\fR" for a in _positionals(parser)]
    if _subcommands(parser):
        parts.append("\\fICOMMAND\\fR [\\fIARGS\\fR]")
    return " ".join(parts)


def _commands(
    parser: argparse.ArgumentParser, words: str, fallback: dict[str, str]
) -> Iterator[str]:
    for name, help, sub in _subcommands(parser):
        path = f"{words} {name}"
        yield f".SS {esc(path)}"
        yield ".nf"
        yield _synopsis(sub, path)
        yield ".fi"
        yield esc(sub.description or help)
        for names, text in _option_items(sub, fallback):
            yield ".TP"
            yield names
            yield esc(text)
        yield from _commands(sub, path, fallback)


def roff(
    parser: argparse.ArgumentParser,
    *,
    section: int,
    exit_status: str,
    files: list[tuple[str, str]],
    see_also: list[str],
    date: str,
) -> str:
    prog = parser.prog
    fallback = {o: _help(a, prog, {}) for a in _options(parser) for o in a.option_strings}
    lines = [
        f'.TH {prog.upper()} {section} "{date}" "coffer {__version__}" "coffer"',
        ".SH NAME",
        f"{prog} \\- {esc((parser.description or '').rstrip('.'))}",
        ".SH SYNOPSIS",
        ".nf",
        _synopsis(parser, prog),
        ".fi",
        ".SH DESCRIPTION",
        esc(parser.description or ""),
    ]
    # The epilog's prose (not its exit codes, which get their own section).
    for paragraph in (parser.epilog or "").split("\n\n"):
        if paragraph.strip() and not paragraph.startswith("exit codes:"):
            lines += [".PP", esc(" ".join(paragraph.split()))]
    lines.append(".SH OPTIONS")
    for names, text in _option_items(parser, fallback):
        lines += [".TP", names, esc(text)]
    if _subcommands(parser):
        lines.append(".SH COMMANDS")
        lines += _commands(parser, prog, fallback)
    lines.append(".SH EXIT STATUS")
    for row in exit_status.strip().splitlines():
        code, _, text = row.strip().partition(" ")
        lines += [".TP", f"\\fB{code}\\fR", esc(text.strip())]
    lines.append(".SH FILES")
    for path, text in files:
        lines += [".TP", f"\\fI{esc(path)}\\fR", esc(text)]
    lines += [".SH SEE ALSO", ",\n".join(f"\\fB{esc(n)}\\fR({s})" for n, s in _split(see_also))]
    return "\n".join(lines) + "\n"


def _split(names: list[str]) -> Iterator[tuple[str, str]]:
    for n in names:
        name, _, section = n.rstrip(")").partition("(")
        yield name, section


def _exit_codes(epilog: str) -> str:
    """The ``exit codes:`` block of an epilog: one ``CODE text`` row per line."""
    rows, inside = [], False
    for line in epilog.splitlines():
        if line.strip() == "exit codes:":
            inside = True
        elif inside and line.startswith("  ") and line.strip()[:1].isdigit():
            rows.append(line.strip())
        elif inside and rows and line.startswith("     "):  # a row's continuation
            rows[-1] += " " + line.strip()
        elif inside:
            break
    return "\n".join(rows)


# bash completion -----------------------------------------------------------


def bash_completion(parser: argparse.ArgumentParser) -> str:
    nodes: list[tuple[str, argparse.ArgumentParser]] = []

    def walk(p: argparse.ArgumentParser, path: str) -> None:
        nodes.append((path, p))
        for name, _, sub in _subcommands(p):
            walk(sub, f"{path} {name}".strip())

    walk(parser, "")
    cases = []
    for path, p in nodes:
        subs = " ".join(name for name, _, _ in _subcommands(p))
        opts = " ".join(o for a in _options(p) for o in a.option_strings)
        valued = " ".join(o for a in _options(p) if a.nargs != 0 for o in a.option_strings)
        cases.append(f'        "{path}") subs="{subs}" opts="{opts}" valued="{valued}" ;;')
    fn = f"_{parser.prog}"
    return _BASH.format(prog=parser.prog, fn=fn, cases="\n".join(cases))


_BASH = """\
# bash completion for {prog}; generated from its argparse parser by packaging/manpage.py.

# Sets the caller's subs, opts and valued for a command path ("", "load", ...).
{fn}_node() {{
    case $1 in
{cases}
        *) subs="" opts="" valued="" ;;
    esac
}}

{fn}() {{
    local cur=${{COMP_WORDS[COMP_CWORD]}} prev=${{COMP_WORDS[COMP_CWORD-1]}}
    local node="" word i subs opts valued
    for ((i = 1; i < COMP_CWORD; i++)); do
        word=${{COMP_WORDS[i]}}
        {fn}_node "$node"
        if [[ " $valued " == *" $word "* ]]; then
            ((i++))
        elif [[ $word != -* && " $subs " == *" $word "* ]]; then
            node=${{node:+$node }}$word
        fi
    done
    {fn}_node "$node"
    if [[ " $valued " == *" $prev "* ]]; then
        mapfile -t COMPREPLY < <(compgen -f -- "$cur")
    elif [[ $cur == -* ]]; then
        mapfile -t COMPREPLY < <(compgen -W "$opts" -- "$cur")
    elif [[ -n $subs ]]; then
        mapfile -t COMPREPLY < <(compgen -W "$subs" -- "$cur")
    else
        mapfile -t COMPREPLY < <(compgen -f -- "$cur")
    fi
}}

complete -F {fn} {prog}
"""


def _date() -> str:
    epoch = int(os.environ.get("SOURCE_DATE_EPOCH", "0")) or None
    when = datetime.datetime.fromtimestamp(epoch, datetime.UTC) if epoch else None
    return (when or datetime.datetime.now(datetime.UTC)).strftime("%Y-%m-%d")


def write_all(out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    client = coffer.cli.build_parser()
    daemon = cofferd_parser()
    date = _date()
    outputs: list[tuple[str, Callable[[], str]]] = [
        (
            "cofferd.8",
            lambda: roff(
                daemon,
                section=8,
                exit_status=COFFERD_EXIT,
                files=COFFERD_FILES,
                see_also=["coffer(1)", "systemd.socket(5)", "journalctl(1)"],
                date=date,
            ),
        ),
        (
            "coffer.1",
            lambda: roff(
                client,
                section=1,
                exit_status=_exit_codes(client.epilog or ""),
                files=COFFER_FILES,
                see_also=["cofferd(8)"],
                date=date,
            ),
        ),
        ("coffer.bash-completion", lambda: bash_completion(client)),
    ]
    written = []
    for name, make in outputs:
        path = out / name
        path.write_text(make())
        written.append(path)
    return written


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: manpage.py OUT_DIR", file=sys.stderr)
        return 2
    for path in write_all(Path(argv[0])):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
