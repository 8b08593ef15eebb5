"""The model card of an hf export: ``README.md`` in OUT, what the Hugging Face Hub shows.

YAML front matter (``library_name``, ``tags``, ``pipeline_tag``), then the run: the command that
made it, the paper of its task, the data and how to write it again, the scores at the exported
checkpoint, the run's whole config, the export command and how to use the export.

The command that made the run is read off the run folder: a study's run (``STUDY/runs/NAME``
beside the study's ``summary.json``) names the study command with its preset, seeds and
overrides; any other run is ``reasonlab run`` on the config the card prints (the resolved config,
seed included, so it trains the same run again). The paper is the study's ``paper.source`` (its
YAML in ``reasonlab/studies``, read as data) or, for a plain run, the paper of the task family.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

import yaml

from reasonlab.config import ConfigError, RunConfig, read_yaml
from reasonlab.runs.folder import RunDir

# The ready studies' YAML files (package data), read as data: interop sits below the studies.
STUDY_DIR = Path(__file__).resolve().parents[1] / "studies"
# For a run of no study: the paper(s) each task family comes from.
TASK_PAPERS = {
    "twohop": "Wang et al. 2024, Grokked transformers are implicit reasoners (arXiv 2405.15071); "
    "Yao et al. 2025, explicit chain-of-thought training (arXiv 2502.04667)",
    "copy": 'Jelassi et al. 2024, "Repeat after me: transformers are better than state space '
    'models at copying" (arXiv 2402.01032); arXiv 2410.03810 compares Mamba on it',
    "dp": "Feng et al. 2023, Towards revealing the mystery behind chain of thought "
    "(arXiv 2305.15408)",
    "icl": "Garg et al. 2022, What can transformers learn in-context? (arXiv 2208.01066)",
}
TASK_NAMES = {
    "twohop": "two-hop reasoning",
    "copy": "copying",
    "dp": "dynamic programming",
    "icl": "in-context regression",
}
HF_FAMILY = {"gpt": "gpt2", "mamba": "mamba"}
HF_CLASS = {"gpt": "GPT2LMHeadModel", "mamba": "MambaForCausalLM"}
NOT_SCORES = {"step", "loss", "lr", "tokens", "elapsed_s"}


def study_origin(run: RunDir) -> dict[str, Any] | None:
    """The study that made this run (its summary.json: study, preset, seeds, overrides), or
    None where the run is not one listed by a study folder two levels up."""
    summary_path = run.path.parent.parent / "summary.json"
    if run.path.parent.name != "runs" or not summary_path.is_file():
        return None
    try:
        data = json.loads(summary_path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("study"), str):
        return None
    if run.path.name not in (data.get("runs") or {}):
        return None
    return data


def study_paper(study: str) -> str | None:
    """``paper.source`` of the ready study named ``study``."""
    for path in sorted(STUDY_DIR.glob("*.yaml")):
        try:
            data = read_yaml(path)
        except ConfigError:
            continue
        if data.get("name") == study:
            source = (data.get("paper") or {}).get("source")
            return " ".join(str(source).split()) if source else None
    return None


def run_command(run: RunDir, origin: dict[str, Any] | None) -> str:
    if origin is None:
        return f"reasonlab run config.yaml --out {shlex.quote(str(run.path))}"
    args = ["reasonlab", "study", origin["study"], "--preset", str(origin.get("preset", "cpu"))]
    args += ["--seeds", str(origin.get("seeds", 1))]
    for override in origin.get("overrides") or []:
        args += ["--set", str(override)]
    args += ["--out", str(run.path.parent.parent)]
    return shlex.join(args)


def scores_at(run: RunDir, step: int, summary: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """The probes' scores at ``step`` (metrics.jsonl's evaluation there) and where they come
    from; the run's final scores where that step was not evaluated."""
    final = summary.get("final") or {}

    def is_score(key: str) -> bool:
        return key in final if final else key not in NOT_SCORES

    for record in reversed(run.read_metrics()):
        scores = {k: v for k, v in record.items() if is_score(k)}
        if record.get("step") == step and scores:
            return scores, f"at step {step}, the exported checkpoint (metrics.jsonl)"
    return final, f"the run's final scores (step {summary.get('step')}; exported: step {step})"


def _example_prompt(task_kind: str, tokens: list[str] | None) -> str:
    if task_kind == "twohop" and tokens and {"<e_0>", "<r_0>", "<r_1>"} <= set(tokens):
        return "<e_0><r_0><r_1>"
    return "..."  # a test item's prompt: see the dataset's columns


def model_card(
    run: RunDir,
    config: RunConfig,
    record: dict[str, Any],
    tokens: list[str] | None,
    export_command: str,
) -> str:
    """The text of README.md for the export that ``record`` (reasonlab_export.json) describes."""
    summary = run.summary() or {}
    origin = study_origin(run)
    task, family = config.task.kind, config.model.kind
    paper = (study_paper(origin["study"]) if origin else None) or TASK_PAPERS.get(task, "none")
    scores, scores_source = scores_at(run, record["step"], summary)
    metric = (summary.get("metric") or {}).get("label", "exact-match accuracy")
    tags = ["reasonlab", task, HF_FAMILY.get(family, family), "synthetic-reasoning"]
    if origin:
        tags.append(f"study-{origin['study']}")
    front = {"library_name": "transformers", "pipeline_tag": "text-generation", "tags": tags}
    config_yaml = yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
    stats = summary.get("data_stats") or {}
    title = (
        f"{config.name or run.path.name}: a {family} model trained on {TASK_NAMES.get(task, task)}"
    )
    lines = ["---", yaml.safe_dump(front, sort_keys=False).strip(), "---", "", f"# {title}", ""]
    lines += [
        f"Trained from scratch by reasonlab; step {record['step']} of the run "
        f"`{run.path.name}`, exported as `{HF_CLASS.get(family, family)}`.",
        "",
        "## How it was made",
        "",
        "```bash",
        run_command(run, origin),
        "```",
        "",
    ]
    if origin:
        lines += [f"This is the run `{run.path.name}` of the study `{origin['study']}`.", ""]
    else:
        lines += [
            "`config.yaml` is the config below (seed included: it trains this run again).",
            "",
        ]
    lines += ["## Paper", "", paper, "", "## Data", ""]
    lines += [f"Task `{task}`; data fingerprint `{summary.get('data_fingerprint')}`."]
    lines += ["", "| | |", "|---|---|"]
    lines += [f"| {key} | {value} |" for key, value in stats.items()]
    lines += [
        "",
        "The same data as a Hugging Face dataset (one split per probe, `datasets.load_dataset`):",
        "",
        "```bash",
        "reasonlab data config.yaml --format hf --out DATA",
        "```",
        "",
        "## Final metrics",
        "",
        f"{metric}, {scores_source}:",
        "",
        "| probe | score |",
        "|---|---|",
    ]
    lines += [f"| {name} | {value} |" for name, value in scores.items()]
    lines += ["", "## Config", "", "```yaml", config_yaml.rstrip(), "```", ""]
    lines += ["## Export", "", "```bash", export_command, "```", ""]
    prompt = _example_prompt(task, tokens)
    lines += [
        "## Use",
        "",
        "```python",
        "from transformers import AutoModelForCausalLM, AutoTokenizer",
        "",
        'tokenizer = AutoTokenizer.from_pretrained("OUT")',
        'model = AutoModelForCausalLM.from_pretrained("OUT")',
        f'ids = tokenizer("{prompt}", return_tensors="pt").input_ids',
        "out = model.generate(ids, max_new_tokens=8, do_sample=False)",
        "print(tokenizer.decode(out[0, ids.shape[1]:]))",
        "```",
        "",
    ]
    return "\n".join(lines)
