"""A trained run loaded back and scored in its own precision (reasonlab.training.loaded_run):
the scores of metrics.jsonl again for a bf16 run, the README's library example under bf16
autocast, the precision of a run without the record, and the benchmark of evaluation."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

import reasonlab.training.evaluation as evaluation
from helpers import read_metrics, tiny_config
from reasonlab.config import ConfigError
from reasonlab.core.files import read_json, write_json
from reasonlab.training.loaded_run import evaluate_run, load_run, run_precision
from reasonlab.training.loop import train

ROOT = Path(__file__).resolve().parents[2]
ROUNDING = 1e-6  # metrics.jsonl keeps six decimals


@pytest.fixture(scope="module")
def bf16_run(tmp_path_factory) -> Path:
    """A tiny run trained and scored under bf16 autocast (emulated on a CPU without units)."""
    run_dir = tmp_path_factory.mktemp("bf16") / "run"
    train(tiny_config("train.precision=bf16", "train.steps=6", "eval.every=3"), run_dir)
    return run_dir


def autocast_flags(monkeypatch) -> list[bool]:
    """The ``autocast`` argument of every ``evaluate`` call from here on."""
    seen: list[bool] = []
    original = evaluation.evaluate

    def spy(model, probes, batch_size=1024, device="cpu", autocast=False, recompute=False):
        seen.append(autocast)
        return original(model, probes, batch_size, device, autocast, recompute)

    monkeypatch.setattr("reasonlab.training.loaded_run.evaluate", spy)
    return seen


def test_a_bf16_run_is_scored_in_bf16_as_its_metrics(bf16_run, monkeypatch):
    assert read_json(bf16_run / "summary.json")["precision"] == "bf16"
    flags = autocast_flags(monkeypatch)
    scores = evaluate_run(bf16_run)
    assert flags == [True]
    last = read_metrics(bf16_run)[-1]
    assert scores.keys() <= last.keys()
    assert scores == {key: pytest.approx(last[key], abs=ROUNDING) for key in scores}


def test_fp32_is_there_when_asked_and_for_an_fp32_run(bf16_run, tmp_path, monkeypatch):
    flags = autocast_flags(monkeypatch)
    evaluate_run(bf16_run, probes=["id_atomic"], precision="fp32")
    fp32_run = tmp_path / "fp32"
    train(tiny_config("train.precision=fp32", "train.steps=4"), fp32_run)
    scores = evaluate_run(fp32_run, step=4, probes=["test_inferred_ood"])
    assert flags == [False, False]
    assert scores["test_inferred_ood"] == read_metrics(fp32_run)[-1]["test_inferred_ood"]


def test_a_run_without_the_record_takes_its_configured_precision(bf16_run, tmp_path):
    copy = tmp_path / "copy"
    copy.mkdir()
    for name in ("config.json", "checkpoints"):
        (copy / name).symlink_to(bf16_run / name)
    assert load_run(copy).autocast  # no summary.json: train.precision bf16
    summary = read_json(bf16_run / "summary.json")
    summary["precision"] = "fp32"  # the record wins over the config
    write_json(copy / "summary.json", summary)
    assert run_precision(load_run(copy).run) == "fp32"
    assert not load_run(copy).autocast


def test_an_unknown_probe_step_or_precision_is_a_config_error(bf16_run):
    with pytest.raises(ConfigError, match="probes: nope not among"):
        evaluate_run(bf16_run, probes=["nope"])
    with pytest.raises(ConfigError, match="no checkpoint 7"):
        evaluate_run(bf16_run, step=7)
    with pytest.raises(ConfigError, match="precision: 'fp16'"):
        load_run(bf16_run, precision="fp16")  # type: ignore[arg-type]


@pytest.mark.slow
def test_the_readme_example_matches_metrics_when_the_run_is_bf16(tmp_path, monkeypatch):
    """The README's library example with its run trained in bf16 (as ``precision: auto`` does
    for a large enough model on an AVX512-BF16 CPU; the README's tiny model stays fp32 there):
    its scores are the last metrics line."""
    monkeypatch.setenv("REASONLAB_CPU_BF16", "1")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    section = (ROOT / "README.md").read_text().split("## Library", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    assert code.count('"device": "cpu"}') == 1
    code = code.replace('"device": "cpu"}', '"device": "cpu", "precision": "bf16"}')
    namespace: dict = {}
    exec(code, namespace)
    out = Path(namespace["out"])
    assert read_json(out / "summary.json")["precision"] == "bf16"
    last = read_metrics(out)[-1]
    scores = namespace["scores"]
    assert scores == {key: pytest.approx(last[key], abs=ROUNDING) for key in scores}


def test_the_evaluation_benchmark_scores_in_the_run_precision(bf16_run):
    from reasonlab.bench.evaluation import eval_benchmark

    result = eval_benchmark(bf16_run, repeats=1)
    assert result["autocast_bf16"] is True
    last = read_metrics(bf16_run)[-1]
    assert result["metrics"] == {k: pytest.approx(last[k], abs=ROUNDING) for k in result["metrics"]}
