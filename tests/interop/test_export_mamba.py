"""`reasonlab export RUN_DIR --format hf OUT` for a Mamba run: a MambaForCausalLM checkpoint that
``AutoModelForCausalLM.from_pretrained(OUT)`` loads with our logits."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
import yaml

from helpers import SMALL_TASK, run_cli
from reasonlab.models.build import build_model
from reasonlab.runs.folder import RunDir, load_checkpoint_file
from reasonlab.tasks import build_task

transformers = pytest.importorskip("transformers")

MAMBA_RUN = {
    "task": SMALL_TASK,
    "model": {"kind": "mamba", "n_layers": 2, "d_model": 32, "d_state": 8},
    "train": {"steps": 4, "batch_size": 16, "warmup_steps": 1, "device": "cpu"},
    "eval": {"every": 4},
    "log": {"progress": False},
}


# A tiny model on a busy shared CPU: one thread is 10x faster than two.
pytestmark = pytest.mark.usefixtures("one_thread")


def mamba_run(folder: Path, capsys: pytest.CaptureFixture, **model: object) -> Path:
    """A Mamba run made by ``reasonlab run`` on a tiny YAML."""
    config = copy.deepcopy(MAMBA_RUN)
    config["model"].update(model)
    folder.mkdir(parents=True)
    path = folder / "mamba.yaml"
    path.write_text(yaml.safe_dump(config))
    code, _, err = run_cli(["run", path, "--out", folder / "run"], capsys)
    assert code == 0, err
    return folder / "run"


def our_model(run_dir: Path) -> torch.nn.Module:
    run = RunDir(run_dir)
    tensors, _ = load_checkpoint_file(run.checkpoint_path(run.checkpoint_steps()[-1]))
    state = {k.removeprefix("model."): v for k, v in tensors.items() if k.startswith("model.")}
    model = build_model(run.load_config().model, state["embed.weight"].shape[0], 1)
    model.load_state_dict(state)
    return model.eval()


def probe_tokens(run_dir: Path) -> torch.Tensor:
    """All probes' queries, right-padded to one length."""
    probes = build_task(RunDir(run_dir).load_config().task).probes.values()
    length = max(probe.tokens.shape[1] for probe in probes)
    padded = [torch.nn.functional.pad(p.tokens, (0, length - p.tokens.shape[1])) for p in probes]
    return torch.cat(padded)[:64]


@pytest.mark.parametrize("tied", [False, True])
def test_export_mamba_gives_the_same_logits(
    tied: bool, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    run_dir = mamba_run(tmp_path / "made", capsys, tie_embeddings=tied)
    out = tmp_path / "hf"
    code, _, err = run_cli(["export", run_dir, "--format", "hf", out], capsys)
    assert code == 0, err

    hf = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    assert type(hf).__name__ == "MambaForCausalLM"
    ours = our_model(run_dir)
    tokens = probe_tokens(run_dir)
    with torch.no_grad():
        difference = (hf(input_ids=tokens).logits - ours(tokens)).abs().max().item()
    assert difference < 1e-4

    hf_config = json.loads((out / "config.json").read_text())
    assert hf_config["model_type"] == "mamba"
    assert hf_config["tie_word_embeddings"] is tied
    assert (hf_config["hidden_size"], hf_config["state_size"]) == (32, 8)
    assert (hf_config["num_hidden_layers"], hf_config["expand"]) == (2, 2)
    assert (hf_config["conv_kernel"], hf_config["time_step_rank"]) == (4, 2)
    if tied:
        assert hf.lm_head.weight.data_ptr() == hf.backbone.embeddings.weight.data_ptr()
    record = json.loads((out / "reasonlab_export.json").read_text())
    assert record["step"] == 4 and record["vocab_size"] == ours.cfg.vocab_size
    assert len(json.loads((out / "reasonlab_vocab.json").read_text())) == ours.cfg.vocab_size
