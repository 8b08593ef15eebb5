"""``reasonlab export RUN_DIR OUT`` writes a run's model as a Hugging Face checkpoint, with its
tokenizer and model card."""

from __future__ import annotations

from pathlib import Path

import typer

from reasonlab.cli.options import checkpoint_option, format_option, run_dir_argument


def export(
    run_dir: Path = run_dir_argument("A run folder."),
    out: Path = typer.Argument(
        ..., metavar="OUT", help="A new (or empty) folder for the exported model."
    ),
    format_: str = format_option(
        "hf",
        "hf: a Hugging Face checkpoint (GPT-2, or MambaForCausalLM), its tokenizer and a model "
        "card (README.md).",
    ),
    checkpoint: str = checkpoint_option("STEP or last."),
) -> None:
    """Export a run's model, its tokenizer and a model card for Hugging Face transformers.

    AutoModelForCausalLM.from_pretrained(OUT) gives the same logits as the run's model;
    AutoTokenizer.from_pretrained(OUT) turns the task's text into its ids and back.
    """
    from reasonlab.interop.huggingface import export_run

    record = export_run(run_dir, out, fmt=format_, checkpoint=checkpoint)
    typer.echo(f"{out}: step {record['step']} of {run_dir} as {format_}")
