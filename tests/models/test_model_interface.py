"""The one model interface (models/base.py) on both families, the model config keyed by
``model.kind``, loading a run's model in one place, and analysis of a Mamba run."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from helpers import SMALL_TASK, STUDY_TINY, TINY_RUN, run_cli, tiny_config
from reasonlab.config import (
    ConfigError,
    GPTModelConfig,
    MambaModelConfig,
    apply_overrides,
    config_from_dict,
)
from reasonlab.models.base import LanguageModel
from reasonlab.models.build import build_model
from reasonlab.runs.folder import RunDir
from reasonlab.studies import STUDIES, study_configs
from reasonlab.training.loop import train

FAMILIES = {
    "gpt": GPTModelConfig(n_layers=2, d_model=16, n_heads=2),
    "gpt-rotary": GPTModelConfig(n_layers=2, d_model=16, n_heads=2, positions="rotary"),
    "mamba": MambaModelConfig(n_layers=2, d_model=16, d_state=4),
    "mamba-tied": MambaModelConfig(n_layers=3, d_model=16, d_state=4, tie_embeddings=True),
}
COMPONENTS = {"gpt": {"attn_out", "mlp_out"}, "mamba": {"mixer_out"}}


@pytest.mark.parametrize("name", FAMILIES)
def test_every_family_offers_the_interface(name):
    cfg = FAMILIES[name]
    torch.manual_seed(0)
    model = build_model(cfg, 23, 9).eval()
    assert isinstance(model, LanguageModel) and model.family == cfg.kind
    tokens = torch.randint(0, 23, (3, 9))
    names = model.residual_names()
    assert len(names) == cfg.n_layers + 1 and set(names) <= set(model.hook_names())
    logits, cache = model.run_with_cache(tokens, names_filter=names)
    # reading the last residual out through the final norm and unembedding gives the logits
    torch.testing.assert_close(model.read_out(cache[names[-1]]), logits)
    components = model.component_hooks()
    assert set(components) == COMPONENTS[cfg.kind]
    for hooks in components.values():
        assert len(hooks) == cfg.n_layers and set(hooks) <= set(model.hook_names())
    assert model.describe().lower().startswith(cfg.kind)
    assert cfg.describe().startswith(cfg.kind)
    assert model.num_parameters() == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", FAMILIES)
def test_decoding_in_pieces_gives_the_logits_of_the_whole(name):
    torch.manual_seed(1)
    model = build_model(FAMILIES[name], 23, 9).eval()
    tokens = torch.randint(0, 23, (2, 9))
    with torch.no_grad():
        whole = model(tokens)
        state = model.new_state(2)
        pieces = [model(tokens[:, a:b], state=state) for a, b in ((0, 4), (4, 5), (5, 9))]
    assert state.length == 9
    torch.testing.assert_close(torch.cat(pieces, dim=1), whole, atol=1e-5, rtol=1e-4)


def test_setting_model_kind_switches_the_family_and_keeps_shared_keys():
    data = apply_overrides(copy.deepcopy(TINY_RUN), ["model.kind=mamba", "model.d_state=4"])
    config = config_from_dict(data)
    assert isinstance(config.model, MambaModelConfig)
    assert (config.model.n_layers, config.model.d_model, config.model.d_state) == (1, 16, 4)
    back = config_from_dict(apply_overrides(data, ["model.kind=gpt", "model.n_heads=4"]))
    assert isinstance(back.model, GPTModelConfig) and back.model.n_heads == 4
    # written out in full, another family's key is an error naming it
    with pytest.raises(ConfigError, match=r"^model\.n_heads: a key of model\.kind gpt"):
        config_from_dict({"model": {"kind": "mamba", "n_heads": 2}})


def test_a_gpt_config_keeps_its_hash_and_layout():
    """The union must not change what existing GPT configs serialize to (their config.json, and
    so their checkpoints' config hash): only keys added since, at their defaults, which the hash
    leaves out (tests/models/test_attention_variants.py checks the hash)."""
    dumped = tiny_config().model_dump(mode="json")["model"]
    added = {"attention": "softmax", "attention_reg": 0.5, "attention_hidden": 16}
    assert dumped == {
        **added,
        "attention_beta": 0.1,
        "kind": "gpt",
        "n_layers": 1,
        "d_model": 16,
        "tie_embeddings": False,
        "max_seq_len": None,
        "n_heads": 2,
        "d_mlp": None,
        "positions": "learned",
        "dropout": 0.0,
    }


def test_the_cot_study_takes_a_mamba_by_set():
    spec = STUDIES["cot-twohop"]
    configs = study_configs(spec, "cpu", 1, ["model.kind=mamba", "model.n_layers=7"])
    assert len(configs) == len(spec.variants)
    for config in configs.values():
        assert isinstance(config.model, MambaModelConfig)
        assert (config.model.n_layers, config.model.d_model) == (7, 128)


def test_mamba_dt_rank_auto_is_ceil_of_width_over_16():
    assert MambaModelConfig(d_model=17).resolved_dt_rank == 2
    assert MambaModelConfig(d_model=128, dt_rank=3).resolved_dt_rank == 3


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """A tiny trained GPT run and Mamba run on the same task."""
    root = tmp_path_factory.mktemp("interface")
    base = {
        **copy.deepcopy(TINY_RUN),
        "task": {**SMALL_TASK, "max_probe_size": 32},
        "train": {"steps": 6, "batch_size": 32, "warmup_steps": 1, "device": "cpu"},
        "eval": {"every": 3, "batch_size": 256},
    }
    runs = {}
    for kind, model in (
        ("gpt", {"n_layers": 2, "d_model": 16, "n_heads": 2}),
        ("mamba", {"kind": "mamba", "n_layers": 2, "d_model": 16, "d_state": 4}),
    ):
        config = config_from_dict({**base, "model": model})
        train(config, root / kind)
        runs[kind] = root / kind
    return runs


@pytest.mark.parametrize("kind", ["gpt", "mamba"])
def test_a_run_model_loads_in_one_place_new_and_legacy_checkpoints(two_runs, kind):
    run = RunDir(two_runs[kind])
    step = run.checkpoint_steps()[-1]
    model = run.load_model()
    assert not model.training and model.family == kind
    tokens = torch.randint(0, 10, (4, 5))
    expected = model(tokens)
    # a checkpoint written before model_shape was recorded rebuilds from its weights
    tensors, metadata = run.load_checkpoint(step)
    assert metadata["model_shape"]["vocab_size"] == model.read_out(torch.zeros(1, 16)).shape[-1]
    legacy = {k: v for k, v in metadata.items() if k not in ("model_shape", "step")}
    run.save_checkpoint(step, tensors, legacy)
    assert "model_shape" not in run.load_checkpoint(step)[1]
    torch.testing.assert_close(run.load_model(step)(tokens), expected)
    run.save_checkpoint(step, tensors, {k: v for k, v in metadata.items() if k != "step"})


def test_analysis_runs_on_a_mamba_run(two_runs, capsys):
    run = two_runs["mamba"]
    code, _, err = run_cli(["analyze", "logit-lens", run, "--queries", "20"], capsys)
    assert code == 0, err
    code, _, err = run_cli(
        ["analyze", "trace", run, "--hook", "mixer_out", "--queries", "20"], capsys
    )
    assert code == 0, err
    traces = list((run / "analysis").glob("trace-*-mixer_out-step*.json"))
    assert traces
    result = json.loads(traces[0].read_text())
    assert result["layers"] == ["L1", "L2"] and result["hook"] == "mixer_out"
    code, _, err = run_cli(["analyze", "trace", run, "--hook", "attn_out"], capsys)
    assert code == 2 and err.count("\n") == 1
    assert "--hook" in err and "mixer_out" in err


@pytest.mark.slow
def test_a_study_runs_and_reports_on_a_mamba(tmp_path, capsys):
    sets = [part for text in STUDY_TINY for part in ("--set", text)]
    sets += ["--set", "model.kind=mamba", "--set", "model.d_state=4"]
    code, _, err = run_cli(["study", "cot-twohop", *sets, "--out", tmp_path / "s"], capsys)
    assert code == 0, err
    summary = json.loads((tmp_path / "s" / "summary.json").read_text())
    for name in summary["runs"]:
        config = RunDir(tmp_path / "s" / "runs" / name).load_config()
        assert isinstance(config.model, MambaModelConfig) and config.model.d_state == 4
    report = (tmp_path / "s" / "report.html").read_text()
    assert "mamba 1 layers x 16, d_state 4" in report
