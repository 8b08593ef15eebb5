"""``reasonlab claims STUDY_DIR... [--out PAGE]``: the papers' claims page (studies/claims.py)."""

from __future__ import annotations

from pathlib import Path

import typer


def claims(
    study_dirs: list[Path] = typer.Argument(
        None,
        metavar="STUDY_DIR",
        help="Study folders (reasonlab study --out) or their summary.json files; the claims "
        "of studies not given are listed as not run here, with their command.",
    ),
    out: Path = typer.Option(
        None, "--out", help="Write the page here (e.g. docs/claims.md); default: print it."
    ),
) -> None:
    """Every claim of the three papers: our verdict, our numbers and seeds, the paper's numbers,
    the preset and command, the date and machine of the run."""
    from reasonlab.core.files import atomic_path, make_dir
    from reasonlab.studies.claims import claims_page

    page = claims_page(list(study_dirs or []))
    if out is None:
        typer.echo(page, nl=False)
        return
    make_dir(out.parent)
    with atomic_path(out) as tmp:
        tmp.write_text(page)
    typer.echo(f"{out}: {page.count(chr(10) + '### ')} claims")
