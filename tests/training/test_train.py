"""The training loop and the run folder: files, determinism, learning, schedules, sampling,
checkpoints and resume."""

from __future__ import annotations

import itertools
import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

import reasonlab.training.loop as train_module
from helpers import read_metrics, tiny_config, without_elapsed
from reasonlab.config import ConfigError, TrainConfig
from reasonlab.runs.checkpoints import is_log_spaced
from reasonlab.runs.folder import RunDir
from reasonlab.runs.hashing import config_hash
from reasonlab.tasks.base import EpochSampler
from reasonlab.training.loop import learning_rate, train

PROBES = ["id_atomic", "ood_atomic", "train_inferred", "test_inferred_iid", "test_inferred_ood"]
# 12 steps, an evaluation every 2: permanent checkpoints at 2, 4, 8 (log-spaced) and 12 (last)
SCHEDULE = [2, 4, 8, 12]
# dropout makes the resume tests check that the RNG state is restored too
RESUME_OVERRIDES = ("model.dropout=0.1",)


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "a"
    train(tiny_config(), out)
    return out


@pytest.fixture(scope="module")
def reference_dropout_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "dropout"
    train(tiny_config(*RESUME_OVERRIDES), out)
    return out


def test_run_folder_files(reference_run):
    cfg = tiny_config()
    assert sorted(p.name for p in reference_run.iterdir()) == [
        "checkpoints",
        "config.json",
        "metrics.jsonl",
        "summary.json",
        "vocab.json",
    ]
    assert json.loads((reference_run / "config.json").read_text()) == cfg.model_dump(mode="json")
    vocab = json.loads((reference_run / "vocab.json").read_text())
    assert vocab[:2] == ["<e_0>", "<e_1>"] and vocab[-2:] == ["</a>", "<pad>"]
    assert RunDir(reference_run).load_config() == cfg
    assert not list(reference_run.rglob(".*tmp*"))


def test_metrics_records(reference_run):
    records = read_metrics(reference_run)
    assert [r["step"] for r in records] == [0, 2, 4, 6, 8, 10, 12]
    for record in records:
        for key in ("step", "loss", "tokens", "elapsed_s", "lr", *PROBES):
            assert key in record, key
        for probe in PROBES:
            assert 0.0 <= record[probe] <= 1.0
        for stage in ("bridge", "tail", "tail_given_true_bridge"):
            assert f"test_inferred_ood.{stage}" in record
    assert records[0]["loss"] is None and records[0]["tokens"] == 0
    assert all(r["loss"] > 0 for r in records[1:])
    tokens = [r["tokens"] for r in records]
    assert tokens == sorted(tokens) and tokens[-1] > 0
    # tokens counts the non-padding tokens of the batches seen
    assert tokens[1] <= 2 * 32 * 6 and tokens[2] - tokens[1] > 2 * 32 * 3


def test_summary(reference_run):
    summary = json.loads((reference_run / "summary.json").read_text())
    records = read_metrics(reference_run)
    assert summary["status"] == "completed"
    for key in ("final", "best", "steps_to_threshold", "wall_s", "device", "versions"):
        assert key in summary, key
    assert summary["device"] == "cpu"
    assert {"reasonlab", "torch", "python"} <= set(summary["versions"])
    assert summary["wall_s"] >= 0
    for probe in PROBES:
        assert summary["final"][probe] == records[-1][probe]
        assert summary["best"][probe] == max(r[probe] for r in records)
        threshold = tiny_config().eval.threshold
        first = next((r["step"] for r in records if r[probe] >= threshold), None)
        assert summary["steps_to_threshold"][probe] == first
    assert "loss" not in summary["final"] and "elapsed_s" not in summary["best"]


def test_checkpoints_on_the_log_spaced_schedule(reference_run):
    names = sorted(p.name for p in (reference_run / "checkpoints").iterdir())
    assert names == sorted(f"step-{n}.safetensors" for n in SCHEDULE)
    assert [n for n in range(1, 13) if is_log_spaced(n, 2)] == [2, 4, 8]
    with safe_open(str(reference_run / "checkpoints" / "step-12.safetensors"), "pt") as handle:
        keys, metadata = set(handle.keys()), handle.metadata()
    assert "model.embed.weight" in keys and "rng.torch" in keys
    assert any(k.startswith("optim.") for k in keys)
    assert json.loads(metadata["step"]) == 12
    assert json.loads(metadata["config_hash"]) == config_hash(tiny_config())


def test_checkpoint_holds_the_final_model(reference_run):
    from reasonlab.models.build import build_model
    from reasonlab.runs.folder import load_checkpoint_file
    from reasonlab.tasks import build_task

    cfg = tiny_config()
    data = build_task(cfg.task)
    tensors, _ = load_checkpoint_file(reference_run / "checkpoints" / "step-12.safetensors")
    model = build_model(cfg.model, data.vocab_size, data.max_seq_len)
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    from reasonlab.training.evaluation import evaluate

    scores = evaluate(model, data.probes, device="cpu")
    final = read_metrics(reference_run)[-1]
    assert {k: final[k] for k in scores} == scores


@pytest.mark.parametrize(("mode", "expected"), [("final", [12]), ("none", [])])
def test_checkpoint_modes(tmp_path, mode, expected):
    out = tmp_path / "run"
    train(tiny_config(f"log.checkpoints={mode}", "eval.at_start=false"), out)
    assert RunDir(out).checkpoint_steps() == expected
    assert [r["step"] for r in read_metrics(out)] == [2, 4, 6, 8, 10, 12]


def test_same_config_same_metrics(reference_run, tmp_path):
    train(tiny_config(), tmp_path / "b")
    assert without_elapsed(read_metrics(tmp_path / "b")) == without_elapsed(
        read_metrics(reference_run)
    )


def test_other_seed_other_metrics(reference_run, tmp_path):
    train(tiny_config("train.seed=1"), tmp_path / "b")
    losses = [r["loss"] for r in read_metrics(tmp_path / "b")]
    assert losses != [r["loss"] for r in read_metrics(reference_run)]


@pytest.mark.slow
def test_loss_goes_down(tmp_path):
    cfg = tiny_config(
        "train.steps=60",
        "eval.every=20",
        "eval.at_start=false",
        "train.lr=1e-2",
        "model.d_model=32",
        "log.checkpoints=none",
    )
    train(cfg, tmp_path / "run")
    losses = [r["loss"] for r in read_metrics(tmp_path / "run")]
    assert len(losses) == 3
    assert losses[2] < losses[1] < losses[0]
    assert losses[2] < 0.8 * losses[0]


def test_existing_run_folder_is_refused(reference_run):
    before = (reference_run / "metrics.jsonl").read_bytes()
    with pytest.raises(ConfigError, match="--out"):
        train(tiny_config(), reference_run)
    assert (reference_run / "metrics.jsonl").read_bytes() == before


# ----------------------------------------------------------------------------- pieces


def test_learning_rate_warmup_then_constant():
    cfg = TrainConfig(lr=1e-3, warmup_steps=4, steps=20, schedule="constant")
    values = [learning_rate(step, cfg) for step in range(20)]
    assert values[:4] == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3])
    assert values[4:] == pytest.approx([1e-3] * 16)


def test_learning_rate_cosine():
    cfg = TrainConfig(lr=1e-3, warmup_steps=10, steps=110, schedule="cosine", min_lr_ratio=0.1)
    assert learning_rate(0, cfg) == pytest.approx(1e-4)
    assert learning_rate(9, cfg) == pytest.approx(1e-3)
    assert learning_rate(10, cfg) == pytest.approx(1e-3)
    assert learning_rate(60, cfg) == pytest.approx(0.55e-3)  # halfway: mean of lr and floor
    assert learning_rate(110, cfg) == pytest.approx(1e-4)
    assert learning_rate(500, cfg) == pytest.approx(1e-4)  # never below the floor
    after = [learning_rate(s, cfg) for s in range(10, 111)]
    assert all(a >= b for a, b in itertools.pairwise(after))


def test_learning_rate_without_warmup():
    cfg = TrainConfig(lr=2e-3, warmup_steps=0, steps=10, schedule="cosine", min_lr_ratio=0.0)
    assert learning_rate(0, cfg) == pytest.approx(2e-3)
    assert learning_rate(10, cfg) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize(("size", "batch_size"), [(10, 3), (12, 4), (7, 7), (5, 8)])
def test_epoch_sampler_covers_each_index_once_per_epoch(size, batch_size):
    sampler = EpochSampler(size, batch_size, seed=3)
    epochs = 4
    steps = epochs * size // batch_size + 1
    stream = torch.cat([sampler.batch(step) for step in range(steps)])
    assert all(len(sampler.batch(s)) == batch_size for s in range(steps))
    for epoch in range(epochs):
        chunk = stream[epoch * size : (epoch + 1) * size]
        assert sorted(chunk.tolist()) == list(range(size))
    first, second = stream[:size], stream[size : 2 * size]
    if size > 5:
        assert not torch.equal(first, second)  # a new permutation each epoch


def test_epoch_sampler_is_stateless():
    sampler = EpochSampler(50, 8, seed=0)
    forward = [sampler.batch(step) for step in range(20)]
    fresh = EpochSampler(50, 8, seed=0)
    backward = {step: fresh.batch(step) for step in reversed(range(20))}
    for step in range(20):
        assert torch.equal(forward[step], backward[step])
    assert torch.equal(EpochSampler(50, 8, seed=0).batch(13), forward[13])
    assert not torch.equal(EpochSampler(50, 8, seed=1).batch(0), forward[0])


def test_history_summary_by_hand():
    """final = last record, best = max over records, steps_to_threshold = the FIRST evaluated
    step at or above the threshold (a probe that crosses, dips and crosses again keeps the
    first); never reached -> None; bookkeeping keys are not probes."""
    from reasonlab.training.loop import History

    def record(step: int, **probes: float) -> dict:
        bookkeeping = {"loss": 1.0 / (step + 1), "lr": 1e-3, "tokens": 10 * step}
        return {"step": step, **bookkeeping, "elapsed_s": 0.5 * step, **probes}

    records = [
        record(0, up_down=0.10, exact=0.00, never=0.10),
        record(2, up_down=0.96, exact=0.50, never=0.40),
        record(4, up_down=0.80, exact=0.95, never=0.94),
        record(6, up_down=0.99, exact=0.94, never=0.30),
        record(8, up_down=0.90, exact=0.97, never=0.20, late=1.0),
    ]
    summary = History(records).summary(0.95)
    assert summary["final"] == {"up_down": 0.90, "exact": 0.97, "never": 0.20, "late": 1.0}
    assert summary["best"] == {"up_down": 0.99, "exact": 0.97, "never": 0.94, "late": 1.0}
    assert summary["steps_to_threshold"] == {"up_down": 2, "exact": 4, "never": None, "late": 8}
    empty = History([]).summary(0.95)
    assert (empty["final"], empty["best"], empty["steps_to_threshold"]) == ({}, {}, {})
    lower = History(records).summary(0.3)["steps_to_threshold"]
    assert lower == {"up_down": 2, "exact": 2, "never": 2, "late": 8}


def test_config_hash_ignores_device_but_not_training():
    base = config_hash(tiny_config())
    assert config_hash(tiny_config("train.device=auto")) == base
    assert config_hash(tiny_config("eval.every=3")) == base
    assert config_hash(tiny_config("train.lr=0.5")) != base
    assert config_hash(tiny_config("task.seed=9")) != base


# ----------------------------------------------------------------------------- resume


def interrupt_at(step_to_stop: int):
    """A learning_rate that raises KeyboardInterrupt when the loop reaches ``step_to_stop``."""
    real = train_module.learning_rate
    calls = []

    def patched(step, cfg):
        calls.append(step)
        if step == step_to_stop and calls.count(step) == 1:
            raise KeyboardInterrupt
        return real(step, cfg)

    return patched


@pytest.fixture(scope="module")
def interrupted_run(tmp_path_factory) -> Path:
    """A run killed (KeyboardInterrupt) at the start of step 11, after the evaluation at 10."""
    out = tmp_path_factory.mktemp("runs") / "interrupted"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(train_module, "learning_rate", interrupt_at(10))
        with pytest.raises(KeyboardInterrupt):
            train(tiny_config(*RESUME_OVERRIDES), out)
    return out


def count_steps(patch: pytest.MonkeyPatch) -> list[int]:
    """Counts the training steps (loss computations) the loop runs from now on."""
    real, calls = train_module.step_loss, []

    def counted(*args):
        calls.append(1)
        return real(*args)

    patch.setattr(train_module, "step_loss", counted)
    return calls


def copy_run(run: Path, tmp_path: Path) -> Path:
    target = tmp_path / "copy"
    shutil.copytree(run, target)
    return target


def test_interrupted_run_state(interrupted_run):
    summary = json.loads((interrupted_run / "summary.json").read_text())
    assert summary["status"] == "interrupted"
    assert [r["step"] for r in read_metrics(interrupted_run)][-1] == 10
    # the log-spaced checkpoints and the latest one, to resume from
    assert RunDir(interrupted_run).checkpoint_steps() == [2, 4, 8, 10]


def test_resume_after_interrupt_gives_the_same_metrics(
    interrupted_run, reference_dropout_run, tmp_path, monkeypatch
):
    run = copy_run(interrupted_run, tmp_path)
    steps = count_steps(monkeypatch)
    # a torn line from a killed process is dropped on resume
    with open(run / "metrics.jsonl", "a") as handle:
        handle.write('{"step": 12, "id_ato')
    summary = train(tiny_config(*RESUME_OVERRIDES), run, resume=True)
    assert summary["status"] == "completed"
    assert len(steps) == 2  # steps 11 and 12 only
    assert without_elapsed(read_metrics(run)) == without_elapsed(
        read_metrics(reference_dropout_run)
    )
    assert RunDir(run).checkpoint_steps() == SCHEDULE  # the latest-only step 10 is gone
    reference = json.loads((reference_dropout_run / "summary.json").read_text())
    assert summary["final"] == reference["final"] and summary["best"] == reference["best"]


def test_resume_from_an_earlier_checkpoint(reference_dropout_run, tmp_path, monkeypatch):
    run = copy_run(reference_dropout_run, tmp_path)
    steps = count_steps(monkeypatch)
    (run / "checkpoints" / "step-12.safetensors").unlink()
    (run / "summary.json").unlink()
    train(tiny_config(*RESUME_OVERRIDES), run, resume=True)
    assert len(steps) == 4  # restarted after step 8
    assert without_elapsed(read_metrics(run)) == without_elapsed(
        read_metrics(reference_dropout_run)
    )
    assert RunDir(run).checkpoint_steps() == SCHEDULE
    resumed = load_file(str(run / "checkpoints" / "step-12.safetensors"))
    original = load_file(str(reference_dropout_run / "checkpoints" / "step-12.safetensors"))
    assert resumed.keys() == original.keys()
    for key in original:
        if key.startswith("model."):
            assert torch.equal(resumed[key], original[key]), key


@pytest.mark.parametrize("lost", ["files", "folder"])
def test_resume_without_checkpoint_starts_over(reference_run, tmp_path, lost):
    run = copy_run(reference_run, tmp_path)
    if lost == "folder":
        shutil.rmtree(run / "checkpoints")
    else:
        for path in (run / "checkpoints").iterdir():
            path.unlink()
    train(tiny_config(), run, resume=True)
    assert without_elapsed(read_metrics(run)) == without_elapsed(read_metrics(reference_run))


def test_resume_refuses_a_checkpoint_of_another_config(interrupted_run, tmp_path):
    run = copy_run(interrupted_run, tmp_path)
    before = (run / "metrics.jsonl").read_bytes()
    with pytest.raises(ConfigError) as info:
        train(tiny_config(*RESUME_OVERRIDES, "train.lr=0.002"), run, resume=True)
    assert "step-10.safetensors" in str(info.value) and "another config" in str(info.value)
    assert (run / "metrics.jsonl").read_bytes() == before


def test_resume_refuses_a_corrupt_checkpoint(interrupted_run, tmp_path):
    run = copy_run(interrupted_run, tmp_path)
    path = run / "checkpoints" / "step-10.safetensors"
    path.write_bytes(b"\x00garbage, not a safetensors file" * 5)
    with pytest.raises(ConfigError) as info:
        train(tiny_config(*RESUME_OVERRIDES), run, resume=True)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_resume_refuses_a_truncated_checkpoint(interrupted_run, tmp_path):
    run = copy_run(interrupted_run, tmp_path)
    path = run / "checkpoints" / "step-10.safetensors"
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(ConfigError) as info:
        train(tiny_config(*RESUME_OVERRIDES), run, resume=True)
    assert str(path) in str(info.value)


def test_eval_sample_scores_a_fixed_subset_before_the_last_evaluation(reference_run, tmp_path):
    """eval.sample: training is untouched (same losses), the last evaluation scores every row
    (the same record as without sampling), the earlier ones score the same subset each time:
    equal to evaluating that subset directly."""
    from reasonlab.tasks import build_task
    from reasonlab.tasks.base import sample_probes
    from reasonlab.training.evaluation import evaluate

    train(tiny_config("eval.sample=7"), tmp_path / "s")
    sampled, full = read_metrics(tmp_path / "s"), read_metrics(reference_run)
    assert [r["loss"] for r in sampled] == [r["loss"] for r in full]
    assert without_elapsed(sampled)[-1] == without_elapsed(full)[-1]
    summary = json.loads((tmp_path / "s" / "summary.json").read_text())
    assert any("eval.sample" in note for note in summary["notes"])
    config = tiny_config()
    data = build_task(config.task)
    subset = sample_probes(data.probes, 7, config.train.seed)
    assert all(len(p) == min(7, len(data.probes[n])) for n, p in subset.items())
    run = RunDir(tmp_path / "s")
    step = SCHEDULE[0]
    scores = evaluate(run.load_model(step), subset, config.eval.batch_size)
    record = next(r for r in sampled if r["step"] == step)
    assert all(record[key] == value for key, value in scores.items())


def test_sample_probes_is_a_fixed_ordered_subset():
    from reasonlab.tasks import build_task
    from reasonlab.tasks.base import sample_probes

    probes = build_task(tiny_config().task).probes
    first, again = sample_probes(probes, 5, 0), sample_probes(probes, 5, 0)
    other_seed = sample_probes(probes, 5, 1)
    for name, probe in probes.items():
        chosen = first[name]
        assert torch.equal(chosen.tokens, again[name].tokens)
        rows = [
            i
            for i in range(len(probe))
            if any(torch.equal(probe.tokens[i], t) for t in chosen.tokens)
        ]
        assert len(rows) >= len(chosen) == min(5, len(probe))
    assert any(
        not torch.equal(first[n].tokens, other_seed[n].tokens) for n in probes if len(probes[n]) > 5
    )
