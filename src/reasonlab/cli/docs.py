"""docs/cli.md and docs/config.md, written from the code: every command's ``--help`` text
(Click's own, at a fixed width so that the page does not depend on the terminal) and every
config key with its default and meaning (``reasonlab.config.reference``).

    python -m reasonlab.cli.docs            # exit 1 naming the pages that differ from the code
    python -m reasonlab.cli.docs --write    # rewrite them

tests/cli/test_docs_generated.py fails while a page differs from what the code generates.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path

import typer
from typer.main import get_command

from reasonlab.cli.app import app
from reasonlab.config.reference import defaults_markdown

# The width the help is wrapped at: fixed, so the page is the same in every terminal.
WIDTH = 100
# docs/ of the repository (src/reasonlab/cli/docs.py -> the repository root).
DOCS = Path(__file__).resolve().parents[3] / "docs"
REGENERATE = "python -m reasonlab.cli.docs --write"


def _commands(ctx: typer.Context) -> Iterator[typer.Context]:
    """The context of ``ctx``'s command, then of each sub-command, depth first, in the order
    ``--help`` lists them."""
    yield ctx
    for name, command in getattr(ctx.command, "commands", {}).items():
        yield from _commands(typer.Context(command, info_name=name, parent=ctx))


def cli_markdown() -> str:
    """docs/cli.md: the help of every command and sub-command, as ``--help`` prints it."""
    root = typer.Context(
        get_command(app), info_name="reasonlab", terminal_width=WIDTH, max_content_width=WIDTH
    )
    lines = [
        "# Command line reference",
        "",
        f"<!-- Generated from the commands by `{REGENERATE}`; do not edit. -->",
        "",
        "Every `reasonlab` command and sub-command with its usage, arguments and options: what "
        "`reasonlab COMMAND --help` prints. Exit codes: 0 success, 2 bad input (one line that "
        "names the offending field or file), 1 internal error, 130 interrupted.",
    ]
    for ctx in _commands(root):
        heading = "#" * (1 + max(1, ctx.command_path.count(" ")))  # ## command, ### sub-command
        body = [line.rstrip() for line in ctx.command.get_help(ctx).strip("\n").splitlines()]
        lines += ["", f"{heading} {ctx.command_path}", "", "```text", *body, "```"]
    return "\n".join(lines) + "\n"


def generated_pages() -> dict[str, str]:
    """Each generated page under docs/ (file name -> text)."""
    return {"cli.md": cli_markdown(), "config.md": defaults_markdown()}


def stale_pages(docs: Path = DOCS) -> list[Path]:
    """The pages under ``docs`` that are missing or differ from what the code generates."""
    return [
        docs / name
        for name, text in generated_pages().items()
        if not (docs / name).is_file() or (docs / name).read_text() != text
    ]


def main(argv: list[str] | None = None) -> int:
    """Checks the pages (exit 1 when one differs) or, with ``--write``, rewrites them."""
    parser = argparse.ArgumentParser(
        prog="python -m reasonlab.cli.docs", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--write", action="store_true", help="rewrite the pages")
    parser.add_argument("--docs", type=Path, default=DOCS, help="the docs folder [%(default)s]")
    args = parser.parse_args(argv)
    if not args.docs.is_dir():
        print(f"error: {args.docs}: no such folder (give --docs DIR)", file=sys.stderr)
        return 2
    if args.write:
        for name, text in generated_pages().items():
            (args.docs / name).write_text(text)
            print(f"wrote {args.docs / name}")
        return 0
    stale = stale_pages(args.docs)
    for path in stale:
        print(f"{path}: differs from the code; regenerate with: {REGENERATE}", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
