"""docs/cli.md and docs/config.md are generated from the code (``python -m reasonlab.cli.docs
--write``); these tests fail while a page differs from what the code generates."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.main import get_command

from reasonlab.cli import app, main
from reasonlab.cli import docs as cli_docs
from reasonlab.config import key_paths
from reasonlab.config.reference import defaults_markdown

DOCS = Path(__file__).resolve().parents[2] / "docs"


@pytest.mark.parametrize("name", ["cli.md", "config.md"])
def test_the_page_is_what_the_code_generates(name):
    path = DOCS / name
    expected = cli_docs.generated_pages()[name]
    assert path.is_file() and path.read_text() == expected, (
        f"docs/{name} differs from the code; regenerate with: {cli_docs.REGENERATE}"
    )


def test_the_cli_page_holds_every_command_and_option():
    page = cli_docs.cli_markdown()

    def walk(command, path):
        assert f"# {path}\n" in page, path
        options = [opt for param in command.params for opt in param.opts if opt.startswith("-")]
        assert all(option in page for option in options), (path, options)
        for name, sub in getattr(command, "commands", {}).items():
            walk(sub, f"{path} {name}")

    walk(get_command(app), "reasonlab")


def test_the_config_page_holds_every_key():
    page = defaults_markdown()
    assert all(f"| `{path}` |" in page for path in key_paths())


def test_the_pages_do_not_depend_on_the_terminal_width(monkeypatch):
    pages = []
    for columns in ("40", "300"):
        monkeypatch.setenv("COLUMNS", columns)
        pages.append(cli_docs.generated_pages())
    assert pages[0] == pages[1]


def test_config_defaults_as_markdown_prints_the_config_page(capsys):
    with pytest.raises(SystemExit) as info:
        main(["config", "--defaults", "--format", "markdown"])
    assert info.value.code == 0 and capsys.readouterr().out == defaults_markdown()


def test_the_script_checks_then_writes_the_pages(tmp_path, capsys):
    assert cli_docs.main(["--docs", str(tmp_path)]) == 1
    assert "regenerate with" in capsys.readouterr().err
    assert cli_docs.main(["--docs", str(tmp_path), "--write"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cli.md", "config.md"]
    assert cli_docs.main(["--docs", str(tmp_path)]) == 0
