"""MkDocs hook: the command-line page, generated from ``metasparse.cli.build_parser()`` at build time.

``docs/cli.md`` holds the marker ``<!-- cli-reference -->``; the build replaces it with a table of the
commands and, per command and subcommand, its ``--help`` text exactly as the parser prints it. A command
added to the parser appears here with no edit to the docs, and the page cannot drift from ``--help``.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterator

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.exceptions import PluginError
from mkdocs.structure.files import Files
from mkdocs.structure.pages import Page

MARKER = "<!-- cli-reference -->"
PAGE = "cli.md"
HELP_WIDTH = 100  # columns of the --help text on the page (argparse reads $COLUMNS)
DEEPEST_HEADING = 4


def subcommands(parser: argparse.ArgumentParser) -> Iterator[tuple[str, str, argparse.ArgumentParser]]:
    """``(name, one-line help, parser)`` of each direct subcommand of ``parser``, in definition order.

    Aliases are not repeated, and commands whose help is ``argparse.SUPPRESS`` stay hidden, as in ``--help``.
    """
    seen: set[int] = set()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            formatter = parser._get_formatter()  # expands %(default)s and %% in help strings as --help does
            choices = {choice.dest: choice for choice in action._choices_actions}
            for name, subparser in action.choices.items():
                choice = choices.get(name)
                if id(subparser) in seen or (choice is not None and choice.help == argparse.SUPPRESS):
                    continue
                seen.add(id(subparser))
                yield name, formatter._expand_help(choice) if choice and choice.help else "", subparser


def walk(parser: argparse.ArgumentParser, summary: str = "", depth: int = 0
         ) -> Iterator[tuple[int, str, argparse.ArgumentParser]]:
    """``(depth, one-line help, parser)`` of ``parser`` and of every subcommand below it, depth first."""
    yield depth, summary, parser
    for _, sub_summary, subparser in subcommands(parser):
        yield from walk(subparser, sub_summary, depth + 1)


def help_text(parser: argparse.ArgumentParser, width: int = HELP_WIDTH) -> str:
    """``parser``'s ``--help`` output at ``width`` columns."""
    previous = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = str(width)
    try:
        return parser.format_help().rstrip()
    finally:
        if previous is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = previous


def cli_reference(parser: argparse.ArgumentParser) -> str:
    """Markdown for ``parser``: a table of its subcommands, then each command's ``--help``.

    Example:
        >>> parser = argparse.ArgumentParser(prog="tool", description="A tool.")
        >>> parser.add_subparsers().add_parser("run", help="run it at 100%%").add_argument("--fast")
        _StoreAction(...)
        >>> page = cli_reference(parser)
        >>> print(page.splitlines()[2])
        | [`tool run`](#tool-run) | run it at 100% |
        >>> "usage: tool run [-h] [--fast FAST]" in page
        True
    """
    entries = list(walk(parser))
    lines = ["| command | what it does |", "|---|---|"]
    for _, summary, subparser in entries[1:]:
        lines.append(f"| [`{subparser.prog}`](#{_anchor(subparser.prog)}) | {_cell(summary)} |")
    for depth, summary, subparser in entries:
        level = "#" * min(2 + depth, DEEPEST_HEADING)
        lines += ["", f"{level} `{subparser.prog}` {{#{_anchor(subparser.prog)}}}", ""]
        if summary:
            lines += [summary[:1].upper() + summary[1:].rstrip(".") + ".", ""]
        lines += ["```text", help_text(subparser), "```"]
    return "\n".join(lines) + "\n"


def _anchor(prog: str) -> str:
    return "-".join(prog.split())


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def on_page_markdown(markdown: str, page: Page, config: MkDocsConfig, files: Files) -> str:
    """Replace the marker of the command-line page with the reference of ``metasparse``."""
    if page.file.src_uri != PAGE:
        return markdown
    if MARKER not in markdown:
        raise PluginError(f"{PAGE} lost its {MARKER} marker: the command reference has nowhere to go")
    from metasparse.cli import build_parser

    return markdown.replace(MARKER, cli_reference(build_parser()))
