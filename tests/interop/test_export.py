"""`reasonlab export RUN_DIR --format hf OUT`: a GPT-2 checkpoint with the same logits as ours."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from helpers import EXPORT_TWOHOP_TASK, exit_code
from reasonlab.config import ConfigError, config_from_dict
from reasonlab.models.build import build_model
from reasonlab.runs.folder import RunDir, load_checkpoint_file
from reasonlab.tasks import build_task
from reasonlab.tasks.twohop.encoding import Vocabulary
from reasonlab.training.loop import train

transformers = pytest.importorskip("transformers")

RUN = {
    "task": EXPORT_TWOHOP_TASK,
    "model": {"n_layers": 2, "d_model": 32, "n_heads": 2},
    "train": {"steps": 5, "batch_size": 16, "device": "cpu"},
    "eval": {"every": 5},
    "log": {"progress": False},
}


def _train(folder: Path, **model: object) -> Path:
    config = config_from_dict({**RUN, "model": {**RUN["model"], **model}})
    train(config, folder)
    return folder


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _train(tmp_path_factory.mktemp("export") / "run")


def _our_model(run_dir: Path) -> torch.nn.Module:
    run = RunDir(run_dir)
    step = run.checkpoint_steps()[-1]
    tensors, _ = load_checkpoint_file(run.checkpoint_path(step))
    state = {k.removeprefix("model."): v for k, v in tensors.items() if k.startswith("model.")}
    vocab_size, seq_len = state["embed.weight"].shape[0], state["pos_embed.weight"].shape[0]
    model = build_model(run.load_config().model, vocab_size, seq_len)
    model.load_state_dict(state)
    return model.eval()


def _probe_tokens(run_dir: Path) -> torch.Tensor:
    """All probes' queries, right-padded to one length."""
    probes = build_task(RunDir(run_dir).load_config().task).probes.values()
    length = max(probe.tokens.shape[1] for probe in probes)
    return torch.cat(
        [torch.nn.functional.pad(p.tokens, (0, length - p.tokens.shape[1])) for p in probes]
    )


def _max_logit_diff(run_dir: Path, out: Path) -> float:
    hf = transformers.GPT2LMHeadModel.from_pretrained(out).eval()
    ours = _our_model(run_dir)
    tokens = _probe_tokens(run_dir)
    with torch.no_grad():
        return (hf(input_ids=tokens).logits - ours(tokens)).abs().max().item()


def test_export_hf_gives_the_same_logits(run_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "hf"
    assert exit_code("export", run_dir, "--format", "hf", out) == 0
    assert _max_logit_diff(run_dir, out) < 1e-4
    record = json.loads((out / "reasonlab_export.json").read_text())
    assert record["step"] == 5 and record["source_run"] == str(run_dir.resolve())
    assert json.loads((out / "reasonlab_vocab.json").read_text()) == Vocabulary(30, 6).tokens
    hf_config = json.loads((out / "config.json").read_text())
    assert hf_config["tie_word_embeddings"] is False
    assert hf_config["activation_function"] == "gelu_new"


def test_export_tied_embeddings(tmp_path: Path) -> None:
    run_dir = _train(tmp_path / "run", tie_embeddings=True)
    out = tmp_path / "hf"
    assert exit_code("export", run_dir, out) == 0  # --format hf is the default
    hf = transformers.GPT2LMHeadModel.from_pretrained(out)
    assert hf.lm_head.weight.data_ptr() == hf.transformer.wte.weight.data_ptr()
    assert _max_logit_diff(run_dir, out) < 1e-4


def test_rotary_run_is_refused(tmp_path: Path, capsys) -> None:
    # a run trained so (not an edited config.json, which the run's checksum would refuse)
    rotary = _train(tmp_path / "rotary", positions="rotary")
    assert exit_code("export", rotary, "--format", "hf", tmp_path / "out") == 2
    assert "model.positions" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_non_empty_out_is_refused_and_left_alone(run_dir: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    assert exit_code("export", run_dir, "--format", "hf", out) == 2
    assert "OUT" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
    assert (out / "notes.txt").read_text() == "keep me"


def test_bad_input_exits_2(run_dir: Path, tmp_path: Path, capsys) -> None:
    assert exit_code("export", tmp_path / "no-such-run", tmp_path / "out") == 2
    assert "no such run folder" in capsys.readouterr().err
    assert exit_code("export", run_dir, "--format", "onnx", tmp_path / "out") == 2
    assert "--format" in capsys.readouterr().err
    assert exit_code("export", run_dir, "--checkpoint", "7", tmp_path / "out") == 2
    assert "--checkpoint" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_missing_transformers_is_a_config_error(run_dir: Path, tmp_path: Path, monkeypatch) -> None:
    from reasonlab.interop.huggingface import export_run

    monkeypatch.setitem(sys.modules, "transformers", None)  # makes `import transformers` fail
    with pytest.raises(ConfigError, match=r"reasonlab\[hf\]"):
        export_run(run_dir, tmp_path / "out")


def test_export_keeps_a_non_default_mlp_width(tmp_path: Path) -> None:
    """model.d_mlp != 4 * d_model: the GPT-2 config gets n_inner = d_mlp and the same logits."""
    run_dir = _train(tmp_path / "run", d_mlp=48)
    out = tmp_path / "hf"
    assert exit_code("export", run_dir, "--format", "hf", out) == 0
    assert json.loads((out / "config.json").read_text())["n_inner"] == 48
    hf = transformers.GPT2LMHeadModel.from_pretrained(out)
    assert hf.transformer.h[0].mlp.c_fc.weight.shape == (32, 48)
    assert _max_logit_diff(run_dir, out) < 1e-4
