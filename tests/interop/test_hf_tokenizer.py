"""Hugging Face all the way: ``reasonlab export --format hf`` writes a tokenizer and a model card
beside the weights, and ``reasonlab data --format hf`` a dataset that ``datasets`` reads.

The tokenizer must turn each task's text into exactly the ids reasonlab trains and scores on, and
back; the dataset must hold exactly the rows and columns of the task's text format. The end-to-end
check (slow) then decodes an exported model on the exported dataset in a subprocess that imports
transformers and datasets but never reasonlab (``hf_only_decode.py``), and finds the accuracy that
reasonlab reported for that probe.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from helpers import EXPORT_TWOHOP_TASK, exit_code, one_line_error
from reasonlab.config import ConfigError, config_from_dict
from reasonlab.interop.hf_dataset import write_hf_dataset
from reasonlab.interop.hf_tokenizer import write_tokenizer
from reasonlab.interop.huggingface import special_token_ids
from reasonlab.runs.folder import RunDir
from reasonlab.tasks import build_task
from reasonlab.tasks.twohop.encoding import Vocabulary
from reasonlab.training.loop import train

transformers = pytest.importorskip("transformers")
datasets = pytest.importorskip("datasets")

pytestmark = pytest.mark.usefixtures("one_thread")

TWOHOP = EXPORT_TWOHOP_TASK
DP = {"kind": "dp", "problem": "lis", "length": 3, "value_range": 10, "num_train": 300}
TASKS: dict[str, dict[str, Any]] = {
    "twohop": TWOHOP,
    "dp": {**DP, "num_test": 32},
    "dp-ed": {"kind": "dp", "problem": "ed", "length": 3, "num_train": 40, "num_test": 8},
    "copy": {"kind": "copy", "vocab_size": 30, "max_length": 4, "num_train": 40, "num_test": 6},
}
ICL = {"kind": "icl", "dim": 4, "n_points": 9, "num_test": 8}
HERE = Path(__file__).parent


def load_tokenizer(folder: Path, tokens: list[str], kind: str) -> Any:
    write_tokenizer(folder, tokens, kind, special_token_ids(tokens), 64)
    return transformers.AutoTokenizer.from_pretrained(folder)


# ----------------------------------------------------------------------------- the tokenizer


def test_twohop_text_to_ids_and_back(tmp_path: Path) -> None:
    tokens = Vocabulary(30, 8).tokens  # <e_0..29> <r_0..7> </a> <pad>
    tokenizer = load_tokenizer(tmp_path, tokens, "twohop")
    ids = tokenizer("<e_12><r_3><r_7>")["input_ids"]
    assert ids == [12, 33, 37]
    assert tokenizer.decode(ids) == "<e_12><r_3><r_7>"
    assert tokenizer.decode([*ids, 38, 39, 39], skip_special_tokens=True) == "<e_12><r_3><r_7>"
    assert (tokenizer.pad_token, tokenizer.eos_token, tokenizer.bos_token) == (
        "<pad>",
        "</a>",
        None,
    )
    assert (tokenizer.pad_token_id, tokenizer.eos_token_id) == (39, 38)
    assert len(tokenizer) == len(tokens) and tokenizer.model_max_length == 64
    with pytest.raises(Exception, match="UNK"):  # no id for a token outside the vocabulary
        tokenizer("<e_12><r_99>")


def test_dp_text_to_ids_and_back(tmp_path: Path) -> None:
    tokens = build_task(config_from_dict({"task": {**DP, "value_range": 50}}).task).vocab
    tokenizer = load_tokenizer(tmp_path, tokens, "dp")
    ids = tokenizer("3 17 42 <sep>")["input_ids"]
    assert ids == [tokens.index(t) for t in ("3", "17", "42", "<sep>")]
    assert tokenizer.decode(ids) == "3 17 42 <sep>"
    assert (tokenizer.pad_token, tokenizer.eos_token) == ("<pad>", "<eos>")
    # edit distance's commas stay where they are: no clean-up of spaces before punctuation
    tokens = build_task(config_from_dict({"task": TASKS["dp-ed"]}).task).vocab
    tokenizer = load_tokenizer(tmp_path / "ed", tokens, "dp")
    assert tokenizer.decode(tokenizer("2 0 2 , 4 2 <sep>")["input_ids"]) == "2 0 2 , 4 2 <sep>"


# ----------------------------------------------------------------------------- the dataset


@pytest.mark.parametrize("name", list(TASKS))
def test_dataset_rows_encode_to_the_tasks_own_tokens(name: str, tmp_path: Path) -> None:
    """Each split of ``data --format hf``, read by load_from_disk and by load_dataset, encoded by
    the exported tokenizer, is the task's training rows or that probe's rows, id for id and in
    order (padding left out); decoding gives the text back."""
    cfg = config_from_dict({"task": TASKS[name]}).task
    task = build_task(cfg)
    counts = write_hf_dataset(cfg, tmp_path / "data")
    assert next(iter(counts)) == "train" and sorted(counts) == sorted(["train", *task.probes])
    tokenizer = load_tokenizer(tmp_path / "tok", task.vocab, cfg.kind)
    on_disk = datasets.load_from_disk(str(tmp_path / "data"))
    loaded = datasets.load_dataset(str(tmp_path / "data"), cache_dir=str(tmp_path / "cache"))
    assert sorted(loaded) == sorted(on_disk) == sorted(["train", *task.probes])
    column = "target_text" if cfg.kind == "twohop" else "text"
    for split in on_disk:
        assert loaded[split].to_list() == on_disk[split].to_list()
        rows = task.train_tokens if split == "train" else task.probes[split].tokens
        expected = [[t for t in row if t != task.pad_id] for row in rows.tolist()]
        texts = list(on_disk[split][column])
        encoded = [tokenizer(text)["input_ids"] for text in texts]
        if split == "train" and cfg.kind == "twohop":  # atomic facts first, then the chains
            encoded, expected = sorted(encoded), sorted(expected)
        assert encoded == expected, split
        assert [tokenizer.decode(ids) for ids in tokenizer(texts)["input_ids"]] == texts


@pytest.mark.parametrize("name", ["twohop", "dp"])
def test_dataset_columns_are_the_text_formats(name: str, tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"task": TASKS[name]}))
    assert exit_code("data", config, "--out", tmp_path / "text") == 0
    assert exit_code("data", config, "--out", tmp_path / "hf", "--format", "hf") == 0
    data = datasets.load_from_disk(str(tmp_path / "hf"))
    text = tmp_path / "text"
    if name == "twohop":
        train = json.loads((text / "train.json").read_text())
        assert data["train"].to_list() == [{**item, "type": None} for item in train]
        test = json.loads((text / "test.json").read_text())
        assert [row for split in list(data)[1:] for row in data[split].to_list()] == test
        assert all(set(data[s]["type"]) == {s} for s in list(data)[1:])
    else:
        assert data["train"]["text"] == (text / "train.txt").read_text().splitlines()
        lines = (text / "test.txt").read_text().splitlines()
        spans = json.loads((text / "test_probes.json").read_text())
        assert {s: data[s]["text"] for s in spans} == {
            s: lines[a - 1 : b] for s, (a, b) in spans.items()
        }


def test_vector_task_is_refused_with_one_line(tmp_path: Path, capsys) -> None:
    config = tmp_path / "icl.yaml"
    config.write_text(yaml.safe_dump({"task": ICL}))
    out = tmp_path / "data"
    assert exit_code("data", config, "--out", out, "--format", "hf") == 2
    assert "--format" in one_line_error(capsys.readouterr().err)
    assert exit_code("data", config, "--out", out, "--format", "parquet") == 2
    assert "--format" in one_line_error(capsys.readouterr().err)
    assert not out.exists()
    run = {
        "task": ICL,
        "model": {"n_layers": 1, "d_model": 16, "n_heads": 2},
        "train": {"steps": 2, "batch_size": 4, "warmup_steps": 1, "device": "cpu"},
        "eval": {"every": 2},
        "log": {"progress": False},
    }
    train(config_from_dict(run), tmp_path / "run")
    capsys.readouterr()  # what training printed
    assert exit_code("export", tmp_path / "run", out, "--format", "hf") == 2
    line = one_line_error(capsys.readouterr().err)
    assert "--format" in line and "task.kind icl" in line
    assert not out.exists()


def test_missing_datasets_package_is_a_config_error(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "datasets", None)  # makes `import datasets` fail
    cfg = config_from_dict({"task": TASKS["copy"]}).task
    with pytest.raises(ConfigError, match=r"--format: .*pip install 'reasonlab\[hf\]'"):
        write_hf_dataset(cfg, tmp_path / "data")
    assert not (tmp_path / "data").exists()


# ----------------------------------------------------------------------------- the model card

RUN = {
    "task": TWOHOP,
    "model": {"n_layers": 1, "d_model": 32, "n_heads": 2},
    "train": {"steps": 300, "batch_size": 64, "warmup_steps": 10, "lr": 0.01, "device": "cpu"},
    "eval": {"every": 300},
    "log": {"progress": False},
}
DP_RUN = {
    "task": {**DP, "num_test": 32},
    "model": {"kind": "mamba", "n_layers": 1, "d_model": 32, "d_state": 4},
    "train": {"steps": 300, "batch_size": 32, "warmup_steps": 10, "lr": 0.01, "device": "cpu"},
    "eval": {"every": 300},
    "log": {"progress": False},
}


def front_matter(card: str) -> dict[str, Any]:
    assert card.startswith("---\n")
    return yaml.safe_load(card.split("---\n")[1])


def test_model_card_of_a_run(tmp_path: Path) -> None:
    run = {**RUN, "train": {**RUN["train"], "steps": 4}, "eval": {"every": 4}}
    train(config_from_dict(run), tmp_path / "run")
    assert exit_code("export", tmp_path / "run", tmp_path / "hf") == 0
    card = (tmp_path / "hf" / "README.md").read_text()
    front = front_matter(card)
    assert front["library_name"] == "transformers"
    assert {"reasonlab", "twohop", "gpt2"} <= set(front["tags"])
    assert f"reasonlab run config.yaml --out {tmp_path / 'run'}" in card
    assert (
        f"reasonlab export {tmp_path / 'run'} {tmp_path / 'hf'} --format hf --checkpoint 4" in card
    )
    assert "arXiv 2405.15071" in card  # the task family's paper
    config = card.split("```yaml\n")[1].split("```")[0]
    assert yaml.safe_load(config) == RunDir(tmp_path / "run").load_config().model_dump(mode="json")
    final = json.loads((tmp_path / "run" / "summary.json").read_text())["final"]
    for probe, value in final.items():
        assert f"| {probe} | {value} |" in card
    assert "reasonlab data config.yaml --format hf" in card
    tokenizer = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    assert (
        tokenizer.model_max_length
        == transformers.AutoConfig.from_pretrained(tmp_path / "hf").n_positions
    )


def test_model_card_of_a_study_run(tmp_path: Path) -> None:
    """A run in a study folder: the card gives the study command and the study's paper."""
    study = tmp_path / "study"
    run = {**RUN, "train": {**RUN["train"], "steps": 2}, "eval": {"every": 2}}
    train(config_from_dict(run), study / "runs" / "cot-s0")
    summary = {
        "study": "cot-twohop",
        "preset": "cpu",
        "seeds": 2,
        "overrides": ["train.steps=2"],
        "runs": {"cot-s0": {}},
    }
    (study / "summary.json").write_text(json.dumps(summary))
    assert exit_code("export", study / "runs" / "cot-s0", tmp_path / "hf") == 0
    card = (tmp_path / "hf" / "README.md").read_text()
    expected = (
        f"reasonlab study cot-twohop --preset cpu --seeds 2 --set train.steps=2 --out {study}"
    )
    assert expected in card
    paper = yaml.safe_load(
        (Path(__file__).parents[2] / "src/reasonlab/studies/cot_twohop.yaml").read_text()
    )["paper"]["source"]
    assert " ".join(paper.split()) in card
    assert "study-cot-twohop" in front_matter(card)["tags"]


# ----------------------------------------------------------------------------- end to end


def decode_without_reasonlab(jobs: dict[str, dict[str, Any]], cache: Path) -> dict:
    """``hf_only_decode.py`` on ``jobs`` in a fresh Python that never imports reasonlab."""
    env = {
        **os.environ,
        "HF_DATASETS_CACHE": str(cache),
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        "TRANSFORMERS_VERBOSITY": "error",
    }
    result = subprocess.run(
        [sys.executable, str(HERE / "hf_only_decode.py"), json.dumps(jobs)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_transformers_alone_reproduces_reported_accuracy(tmp_path_factory, monkeypatch) -> None:
    """A two-hop GPT and a DP Mamba, each trained until some probes are right, exported, their
    data written with --format hf; transformers and datasets alone (the two-hop data read by
    load_dataset, the DP data by load_from_disk) decode every probe greedily and find the
    accuracy in the run's summary, within one row (float and kernel differences)."""
    root = tmp_path_factory.mktemp("hf-all-the-way")
    jobs, finals = {}, {}
    for name, run in {"twohop": RUN, "dp": DP_RUN}.items():
        config = root / f"{name}.yaml"
        config.write_text(yaml.safe_dump(run))
        train(config_from_dict(run), root / name)
        assert exit_code("export", root / name, root / f"{name}-hf") == 0
        assert exit_code("data", config, "--out", root / f"{name}-data", "--format", "hf") == 0
        finals[name] = json.loads((root / name / "summary.json").read_text())["final"]
        jobs[name] = {
            "model": str(root / f"{name}-hf"),
            "data": str(root / f"{name}-data"),
            "loader": "load_dataset" if name == "twohop" else "load_from_disk",
            "probes": [key for key in finals[name] if "." not in key],
        }
    seen = decode_without_reasonlab(jobs, root / "cache")
    for name, job in jobs.items():
        final = finals[name]
        print(
            name,
            {p: (seen[name][p]["correct"], seen[name][p]["rows"], final[p]) for p in job["probes"]},
        )
        for probe in job["probes"]:
            correct, rows = seen[name][probe]["correct"], seen[name][probe]["rows"]
            assert abs(correct / rows - final[probe]) <= 1 / rows + 1e-6, (name, probe)
        # not a vacuous match of zeros: each model gets some rows right
        assert sum(seen[name][probe]["correct"] for probe in job["probes"]) > 0, name
    # the guide's snippet, as written (OUT and DATA the two-hop export), says the same
    guide = (HERE.parents[1] / "docs" / "guide.md").read_text()
    code = guide.split("### Hugging Face all the way", 1)[1].split("```python\n", 1)[1]
    code = code.split("```", 1)[0].replace('"OUT"', repr(jobs["twohop"]["model"]))
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", root / "guide-cache")
    namespace: dict[str, Any] = {}
    exec(code.replace('"DATA"', repr(jobs["twohop"]["data"])), namespace)
    ood = seen["twohop"]["test_inferred_ood"]
    assert namespace["right"] == ood["correct"] and len(namespace["rows"]) == ood["rows"]
