"""Packed training (training/pack.py): a pack of one is the unpacked run; a pack's members train
as they would alone (within rounding), write ordinary run folders that resume, analyse and
export; a killed pack resumes as a pack; a non-finite member fails alone."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import reasonlab.training.loop as train_module
from helpers import interrupt_at_loss, read_metrics, run_cli, tiny_config, without_elapsed
from reasonlab.config import ConfigError
from reasonlab.experiments.trials import train_packed
from reasonlab.tasks import build_task
from reasonlab.training.loop import train
from reasonlab.training.pack import train_pack
from reasonlab.training.pack_optim import StackedAdamW

# 20 steps with the loss of every step recorded (cheap evaluations on 8 rows, the last on all)
STEPS = (
    "train.steps=20",
    "eval.every=1",
    "eval.sample=8",
    "eval.at_start=false",
    "log.checkpoints=none",
)


def _losses(run_dir: Path) -> list[float]:
    return [r["loss"] for r in read_metrics(run_dir) if r["loss"] is not None]


def _close(a: list[float], b: list[float], rel: float) -> bool:
    return len(a) == len(b) and all(abs(x - y) <= rel * abs(y) for x, y in zip(a, b, strict=True))


def test_a_pack_of_one_is_the_unpacked_run(tmp_path):
    config = tiny_config()
    train(config, tmp_path / "alone")
    train_pack([config], [tmp_path / "pack"])
    packed, alone = read_metrics(tmp_path / "pack"), read_metrics(tmp_path / "alone")
    assert without_elapsed(packed) == without_elapsed(alone)


@pytest.fixture(scope="module")
def three_seeds(tmp_path_factory) -> Path:
    """Three seeds trained alone and as one pack, 20 steps with the loss of every step (lr 0.01:
    the seeds' final accuracies already differ)."""
    root = tmp_path_factory.mktemp("seeds")
    fast = ("train.lr=0.01", "train.warmup_steps=0")
    configs = [tiny_config(*STEPS, *fast, f"train.seed={s}", f"name=s{s}") for s in range(3)]
    for seed, config in enumerate(configs):
        train(config, root / f"alone{seed}")
    results = train_pack(configs, [root / f"pack{s}" for s in range(3)])
    assert [r["status"] for r in results] == ["completed"] * 3
    return root


@pytest.mark.slow
def test_each_member_trains_as_its_seed_alone(three_seeds):
    for seed in range(3):
        packed, alone = _losses(three_seeds / f"pack{seed}"), _losses(three_seeds / f"alone{seed}")
        assert len(packed) == 20
        assert _close(packed, alone, 1e-4), (seed, packed, alone)


@pytest.mark.slow
def test_final_metrics_lie_within_the_spread_of_unpacked_seeds(three_seeds):
    alone = [read_metrics(three_seeds / f"alone{s}")[-1] for s in range(3)]
    keys = [k for k in alone[0] if k not in ("step", "elapsed_s", "lr", "tokens")]
    for seed in range(3):
        final = read_metrics(three_seeds / f"pack{seed}")[-1]
        assert final["tokens"] == alone[seed]["tokens"]
        for key in keys:
            low, high = min(a[key] for a in alone), max(a[key] for a in alone)
            slack = 1e-4 * max(abs(low), abs(high)) + (1 / 64 if key != "loss" else 0)
            assert low - slack <= final[key] <= high + slack, (key, final[key], low, high)


@pytest.mark.slow
def test_members_keep_their_own_lr_weight_decay_warmup_and_data(tmp_path):
    settings = [
        ("train.lr=0.003", "train.weight_decay=0.0", "train.warmup_steps=0"),
        ("train.lr=0.0005", "train.weight_decay=0.3", "train.warmup_steps=7"),
        ("task.noise_kind=tail", "task.noise_ratio=0.3", "train.schedule=cosine", "task.seed=4"),
    ]
    configs = [tiny_config(*STEPS, *s, f"name=m{i}") for i, s in enumerate(settings)]
    train_pack(configs, [tmp_path / f"pack{i}" for i in range(3)])
    for i, config in enumerate(configs):
        train(config, tmp_path / f"alone{i}")
        packed, alone = _losses(tmp_path / f"pack{i}"), _losses(tmp_path / f"alone{i}")
        assert _close(packed, alone, 1e-4), (i, packed, alone)
        lrs = [r["lr"] for r in read_metrics(tmp_path / f"pack{i}")]
        assert lrs == [r["lr"] for r in read_metrics(tmp_path / f"alone{i}")]


def test_stacked_adamw_is_torch_adamw_per_member():
    torch.manual_seed(0)
    weights = [torch.randn(4, 3) for _ in range(2)]
    hyper = [(1e-2, 0.1), (3e-3, 0.0)]
    stacked = {"w": torch.stack(weights).requires_grad_(True)}
    optimizer = StackedAdamW(stacked, {"w"}, torch.tensor([h[1] for h in hyper]), (0.9, 0.999))
    singles = [w.clone().requires_grad_(True) for w in weights]
    torch_opts = [
        torch.optim.AdamW([p], lr=lr, weight_decay=wd)
        for p, (lr, wd) in zip(singles, hyper, strict=True)
    ]
    for step in range(6):
        grads = torch.randn(2, 4, 3)
        stacked["w"].grad = grads.clone()
        active = torch.tensor([True, step != 3])  # member 1 skips step 3
        optimizer.step(torch.tensor([h[0] for h in hyper]), active)
        for k, (param, opt) in enumerate(zip(singles, torch_opts, strict=True)):
            if bool(active[k]):
                param.grad = grads[k].clone()
                opt.step()
    for k in range(2):
        torch.testing.assert_close(
            stacked["w"][k].detach(), singles[k].detach(), rtol=1e-6, atol=1e-7
        )
        assert float(optimizer.steps["w"][k]) == torch_opts[k].state[singles[k]]["step"].item()


def test_a_killed_pack_resumes_as_a_pack(tmp_path, monkeypatch):
    overrides = ("train.steps=12", "log.keep_latest=true")
    configs = [tiny_config(*overrides, f"train.seed={s}", f"name=s{s}") for s in range(3)]
    full = train_pack(configs, [tmp_path / f"full{s}" for s in range(3)])
    assert [r["status"] for r in full] == ["completed"] * 3
    dirs = [tmp_path / f"killed{s}" for s in range(3)]
    interrupt_at_loss(monkeypatch, 3 * 7 + 1)  # the 8th step's first member loss
    with pytest.raises(KeyboardInterrupt):
        train_pack(configs, dirs)
    monkeypatch.undo()
    for run_dir in dirs:
        summary = json.loads((run_dir / "summary.json").read_text())
        assert summary["status"] == "interrupted" and summary["step"] == 7
    resumed = train_packed(configs, dirs)
    assert [r["status"] for r in resumed] == ["completed"] * 3
    for seed in range(3):
        assert any("pack of 3" in n for n in resumed[seed]["notes"])
        got = without_elapsed(read_metrics(dirs[seed]))
        want = without_elapsed(read_metrics(tmp_path / f"full{seed}"))
        assert [r["step"] for r in got] == [r["step"] for r in want]
        for a, b in zip(got, want, strict=True):
            for key, value in b.items():
                expected = value if value is None else pytest.approx(value, rel=1e-6, abs=1e-9)
                assert a[key] == expected, key


def _poison(monkeypatch, data, at_call: int) -> None:
    """The loss of the member whose task is ``data`` is NaN from its ``at_call``-th step on."""
    real, calls = train_module.step_loss, []

    def poisoned(model, task, batch):
        loss = real(model, task, batch)
        if task is data:
            calls.append(1)
            if len(calls) >= at_call:
                return loss * float("nan")
        return loss

    monkeypatch.setattr(train_module, "step_loss", poisoned)


def test_a_nan_member_fails_alone(tmp_path, monkeypatch):
    configs = [tiny_config(f"train.seed={s}", f"name=s{s}") for s in range(3)]
    clean = train_pack(configs, [tmp_path / f"clean{s}" for s in range(3)])
    tasks = [build_task(c.task) for c in configs]
    _poison(monkeypatch, tasks[1], 5)
    results = train_pack(configs, [tmp_path / f"nan{s}" for s in range(3)], data=tasks)
    assert [r["status"] for r in results] == ["completed", "failed", "completed"]
    failed = json.loads((tmp_path / "nan1" / "summary.json").read_text())
    assert failed["status"] == "failed" and failed["failed_step"] == 5
    assert "loss is nan" in failed["error"]
    assert [r["step"] for r in read_metrics(tmp_path / "nan1")][-1] == 4
    for seed in (0, 2):
        got = without_elapsed(read_metrics(tmp_path / f"nan{seed}"))
        assert got == without_elapsed(read_metrics(tmp_path / f"clean{seed}"))
        assert results[seed]["final"] == clean[seed]["final"]


def test_skip_step_skips_one_members_step(tmp_path, monkeypatch):
    configs = [tiny_config(f"train.seed={s}", "train.on_nonfinite=skip_step") for s in range(2)]
    tasks = [build_task(c.task) for c in configs]
    _poison(monkeypatch, tasks[0], 11)  # steps 11 and 12 of member 0
    results = train_pack(configs, [tmp_path / f"m{s}" for s in range(2)], data=tasks)
    assert [r["status"] for r in results] == ["completed", "completed"]
    assert results[0]["skipped_steps"] == 2 and results[0]["skipped_at"] == [11, 12]
    assert "skipped_steps" not in results[1]


def test_incompatible_runs_are_refused(tmp_path):
    configs = [tiny_config(), tiny_config("model.d_model=32")]
    with pytest.raises(ConfigError, match="--pack"):
        train_pack(configs, [tmp_path / "a", tmp_path / "b"])
    shapes = [tiny_config(), tiny_config("task.num_entities=40")]
    with pytest.raises(ConfigError, match="vocabulary or sequence length"):
        train_pack(shapes, [tmp_path / "c", tmp_path / "d"])
    assert not any(tmp_path.iterdir())  # refused before any folder was made


@pytest.mark.slow
def test_a_member_resumes_analyses_and_exports_as_a_run(tmp_path, monkeypatch, capsys):
    overrides = ("train.steps=12", "log.keep_latest=true", "train.seed=1")
    configs = [tiny_config(*overrides, f"name=m{s}", f"task.seed={s}") for s in range(2)]
    full = tmp_path / "full"
    train_pack(configs, [full / "m0", full / "m1"])
    dirs = [tmp_path / "m0", tmp_path / "m1"]
    interrupt_at_loss(monkeypatch, 2 * 9 + 1)
    with pytest.raises(KeyboardInterrupt):
        train_pack(configs, dirs)
    monkeypatch.undo()
    code, _, err = run_cli(["run", "--resume", dirs[0]], capsys)  # the member alone, unpacked
    assert code == 0, err
    got, want = _losses(dirs[0]), _losses(full / "m0")
    assert _close(got, want, 1e-4)
    code, _, err = run_cli(["analyze", "logit-lens", dirs[0]], capsys)
    assert code == 0, err
    assert (dirs[0] / "analysis").is_dir()
    code, _, err = run_cli(["export", dirs[0], tmp_path / "hf"], capsys)
    assert code == 0, err
    assert any((tmp_path / "hf").iterdir())
