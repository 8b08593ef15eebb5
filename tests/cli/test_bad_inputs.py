"""A catalogue of bad inputs through the command line (``reasonlab.cli.main``, in process).

Every case must end with exit code 2 and exactly one line on stderr that names the offending field
or file, with no traceback and nothing on stdout; and it must leave every existing run as it was
(each file's bytes and modification time, and every folder's listing). Cases that test_cli.py and
test_export.py already cover are not repeated here.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from safetensors.torch import save_file

from helpers import TINY_RUN, TINY_TASK, TINY_YAML, tiny_config, tiny_task
from reasonlab import cli
from reasonlab.cli import main
from reasonlab.runs.folder import RunDir, load_checkpoint_file, write_json
from reasonlab.runs.integrity import config_digest, with_digest
from reasonlab.tasks.twohop.folder import write_folder
from reasonlab.training.loop import train


@pytest.fixture(scope="module")
def completed_run(tmp_path_factory) -> Path:
    """A finished tiny run that every case checks is left untouched."""
    out = tmp_path_factory.mktemp("existing") / "run"
    train(tiny_config(), out)
    return out


def folder_state(folder: Path) -> dict[str, Any]:
    """Every entry under ``folder`` (itself included): files by bytes and mtime, folders by
    mtime (which changes when an entry, even a temporary one, is added or removed)."""
    if not folder.exists():
        return {}
    state: dict[str, Any] = {".": folder.stat().st_mtime_ns}
    for path in sorted(folder.rglob("*")):
        key = str(path.relative_to(folder))
        if path.is_file():
            state[key] = (path.read_bytes(), path.stat().st_mtime_ns)
        else:
            state[key] = path.stat().st_mtime_ns
    return state


@dataclass
class Context:
    tmp: Path
    run: Path  # the completed run

    def file(self, text: str | bytes, name: str = "config.yaml") -> Path:
        path = self.tmp / name
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(text)
        return path

    def config(self, **sections: Any) -> Path:
        """The tiny config with some sections' keys replaced."""
        data = json.loads(json.dumps(TINY_RUN))
        for section, values in sections.items():
            data.setdefault(section, {}).update(values)
        return self.file(yaml.safe_dump(data))

    def resumable_copy(self) -> Path:
        """A copy of the completed run that says 'interrupted', so --resume goes to work."""
        copy = self.tmp / "copy"
        shutil.copytree(self.run, copy)
        summary = json.loads((copy / "summary.json").read_text())
        write_json(copy / "summary.json", {**summary, "status": "interrupted"})
        return copy

    def last_checkpoint(self, run: Path) -> Path:
        return RunDir(run).checkpoint_path(RunDir(run).checkpoint_steps()[-1])

    def dataset(self) -> Path:
        folder = self.tmp / "dataset"
        write_folder(tiny_task(), folder)
        return folder


@dataclass
class Case:
    args: list[Any]
    names: list[Any]  # substrings the error line must contain (a field, a file, an option)
    watch: list[Path] = field(default_factory=list)  # folders that must stay untouched
    absent: list[Path] = field(default_factory=list)  # paths that must not be created


CASES: dict[str, Callable[[Context], Case]] = {}


def case(fn: Callable[[Context], Case]) -> Callable[[Context], Case]:
    CASES[fn.__name__] = fn
    return fn


def config_case(name: str, field_name: str, **sections: Any) -> None:
    """``run CONFIG`` where CONFIG is the tiny config with ``sections`` changed."""

    def build(ctx: Context) -> Case:
        out = ctx.tmp / "new-run"
        return Case(["run", ctx.config(**sections), "--out", out], [field_name], absent=[out])

    CASES[name] = build


def override_case(name: str, field_name: str, *overrides: str) -> None:
    """``run TINY --set ...``."""

    def build(ctx: Context) -> Case:
        out = ctx.tmp / "new-run"
        sets = [part for text in overrides for part in ("--set", text)]
        return Case(["run", ctx.file(TINY_YAML), *sets, "--out", out], [field_name], absent=[out])

    CASES[name] = build


def task_case(name: str, field_name: str, task: dict[str, Any], **sections: Any) -> None:
    """``run CONFIG`` where CONFIG is the tiny config with its task section replaced by ``task``
    (another kind of task) and ``sections`` changed."""

    def build(ctx: Context) -> Case:
        data = json.loads(json.dumps(TINY_RUN))
        data["task"] = task
        for section, values in sections.items():
            data.setdefault(section, {}).update(values)
        out = ctx.tmp / "new-run"
        return Case(
            ["run", ctx.file(yaml.safe_dump(data)), "--out", out], [field_name], absent=[out]
        )

    CASES[name] = build


# ----------------------------------------------------------------------------- config files


@case
def malformed_yaml(ctx):
    path = ctx.file("task:\n  num_entities: [30, 40\nmodel: {}\n")
    return Case(
        ["run", path, "--out", ctx.tmp / "r"], [path, "malformed YAML"], absent=[ctx.tmp / "r"]
    )


@case
def yaml_that_is_a_list(ctx):
    path = ctx.file("- task\n- model\n")
    return Case(["run", path, "--out", ctx.tmp / "r"], [path], absent=[ctx.tmp / "r"])


@case
def config_that_is_a_folder(ctx):
    folder = ctx.tmp / "folder.yaml"
    folder.mkdir()
    return Case(["run", folder, "--out", ctx.tmp / "r"], [folder], absent=[ctx.tmp / "r"])


@case
def config_that_is_not_text(ctx):
    path = ctx.file(b"task:\n  lam: \xff\xfe\x00\x81\n", name="binary.yaml")
    return Case(["run", path, "--out", ctx.tmp / "r"], [path], absent=[ctx.tmp / "r"])


@case
def unknown_section(ctx):
    path = ctx.file(TINY_YAML + "trian:\n  steps: 3\n")
    return Case(["run", path, "--out", ctx.tmp / "r"], ["trian"], absent=[ctx.tmp / "r"])


config_case("unknown_task_key", "task.num_entity", task={"num_entity": 50})
config_case("unknown_model_key", "model.width", model={"width": 64})
config_case("gpt_key_on_a_mamba", "model.n_heads", model={"kind": "mamba", "n_heads": 2})
config_case("mamba_key_on_a_gpt", "model.d_state", model={"d_state": 8})
config_case("unknown_model_kind", "model.kind", model={"kind": "rwkv"})
override_case("mamba_d_state_zero", "model.d_state", "model.kind=mamba", "model.d_state=0")
override_case("mamba_expand_negative", "model.expand", "model.kind=mamba", "model.expand=-1")
override_case("mamba_d_conv_zero", "model.d_conv", "model.kind=mamba", "model.d_conv=0")
override_case("mamba_dt_rank_text", "model.dt_rank", "model.kind=mamba", "model.dt_rank=wide")
override_case("mamba_dt_rank_zero", "model.dt_rank", "model.kind=mamba", "model.dt_rank=0")
override_case("mamba_dt_rank_fraction", "model.dt_rank", "model.kind=mamba", "model.dt_rank=2.5")
override_case("mamba_dt_rank_bool", "model.dt_rank", "model.kind=mamba", "model.dt_rank=true")

# COPY and dynamic programs: settings that cannot be satisfied end before any work starts.
DP = {"kind": "dp", "num_train": 50, "num_test": 5}
COPY = {"kind": "copy", "vocab_size": 8, "max_length": 6, "num_train": 50, "num_test": 5}
task_case("dp_locality_longer_than_the_sequence", "task.locality",
          {**DP, "problem": "local", "length": 4, "locality": 4})  # fmt: skip
task_case("dp_lis_values_cannot_hold_the_length", "task.value_range",
          {**DP, "problem": "lis", "length": 10, "value_range": 5})  # fmt: skip
task_case("dp_unknown_problem", "task.problem", {**DP, "problem": "knapsack"})
task_case("dp_unknown_mode", "task.mode", {**DP, "mode": "scratchpad"})
task_case("dp_stream_of_edit_distance", "task.mode", {**DP, "problem": "ed", "mode": "stream"})
task_case("dp_more_examples_than_exist", "task.num_train",
          {**DP, "problem": "lis", "length": 2, "value_range": 2, "num_train": 1000})  # fmt: skip
task_case("dp_test_length_zero", "task.test_lengths", {**DP, "test_lengths": [0]})
task_case("copy_test_length_the_model_cannot_fit", "model.max_seq_len",
          {**COPY, "test_lengths": [4, 30]}, model={"max_seq_len": 40})  # fmt: skip
task_case("copy_min_length_above_max_length", "task.min_length",
          {**COPY, "min_length": 9, "max_length": 3})  # fmt: skip
task_case("copy_selective_without_noise", "task.noise_tokens", {**COPY, "variant": "selective"})
task_case("copy_fewer_strings_than_asked", "task.num_test",
          {**COPY, "vocab_size": 2, "test_lengths": [3], "num_test": 9})  # fmt: skip

# In-context regression and the attention variants.
ICL = {"kind": "icl", "dim": 4, "n_points": 9, "num_test": 8}
task_case("icl_dimension_zero", "task.dim", {**ICL, "dim": 0})
task_case("icl_no_points", "task.n_points", {**ICL, "n_points": 0})
task_case("icl_curriculum_starts_beyond_dim", "task.dim_start",
          {**ICL, "curriculum_every": 10, "dim_start": 6})  # fmt: skip
task_case("icl_curriculum_starts_beyond_points", "task.points_start",
          {**ICL, "curriculum_every": 10, "points_start": 12})  # fmt: skip
task_case("icl_curriculum_start_without_stages", "task.curriculum_every", {**ICL, "dim_start": 2})
task_case("icl_sparsity_beyond_dim", "task.sparsity",
          {**ICL, "function_class": "sparse_linear", "sparsity": 5})  # fmt: skip
task_case("icl_unknown_function_class", "task.function_class", {**ICL, "function_class": "gp"})
task_case("icl_tied_embeddings", "model.tie_embeddings", ICL, model={"tie_embeddings": True})
config_case("unknown_attention", "model.attention", model={"attention": "sparse"})
override_case(
    "attention_on_a_mamba", "model.attention", "model.kind=mamba", "model.attention=linear"
)
config_case("attention_reg_above_one", "model.attention_reg", model={"attention_reg": 2.0})
config_case("steps_not_a_number", "train.steps", train={"steps": "many"})
config_case("width_is_a_list", "model.d_model", model={"d_model": [32]})
config_case("progress_not_a_bool", "log.progress", log={"progress": "maybe"})
config_case("negative_entities", "task.num_entities", task={"num_entities": -3})
config_case("zero_relations", "task.num_relations", task={"num_relations": 0})
config_case("unknown_task_kind", "task.kind", task={"kind": "sudoku"})
config_case("unknown_cot_pattern", "task.cot", task={"cot": "sideways"})
config_case("khop_of_two", "task.khop", task={"khop": [2]})
config_case("ood_fraction_of_one", "task.ood_fraction", task={"ood_fraction": 1.0})
config_case("out_degree_above_relations", "task.out_degree", task={"out_degree": 9})
config_case("noise_ratio_without_kind", "task.noise_ratio", task={"noise_ratio": 0.2})
config_case(
    "bridge_noise_without_cot",
    "task.noise_kind",
    task={"noise_kind": "bridge", "noise_ratio": 0.2, "cot": "none"},
)
config_case("heads_do_not_divide_width", "model.n_heads", model={"d_model": 30, "n_heads": 4})
config_case("betas_out_of_range", "train.betas", train={"betas": [0.9, 1.5]})
config_case("unknown_device", "train.device", train={"device": "tpu"})
override_case("zero_batch_size", "train.batch_size", "train.batch_size=0")
override_case("zero_steps", "train.steps", "train.steps=0")
override_case("zero_eval_interval", "eval.every", "eval.every=0")
override_case("negative_learning_rate", "train.lr", "train.lr=-0.001")
override_case("negative_weight_decay", "train.weight_decay", "train.weight_decay=-0.1")
config_case("negative_weight_decay_in_file", "train.weight_decay", train={"weight_decay": -0.1})
override_case("infinite_lambda", "task.lam", "task.lam=.inf")
override_case("nan_learning_rate", "train.lr", "train.lr=.nan")
override_case("absurd_batch_size", "train.batch_size", "train.batch_size=1000000000")
override_case("absurd_layer_count", "model.n_layers", "model.n_layers=1000000")
override_case("absurd_width", "model.d_model", "model.d_model=1000000", "model.n_heads=1")
override_case("absurd_max_seq_len", "model.max_seq_len", "model.max_seq_len=1000000000")
override_case("absurd_graph", "task.num_entities", "task.num_entities=100000000")
override_case(
    "absurd_relation_count",
    "task.num_relations",
    "task.num_relations=100000000",
    "task.num_entities=1000",
    "task.out_degree=2",
)


@case
def out_folder_under_a_file(ctx):
    blocker = ctx.file("not a folder", name="blocker")
    return Case(["run", ctx.file(TINY_YAML), "--out", blocker / "run"], [blocker / "run"])


@case
def data_folder_under_a_file(ctx):
    blocker = ctx.file("not a folder", name="blocker")
    return Case(["data", ctx.file(TINY_YAML), "--out", blocker / "data"], [blocker / "data"])


override_case("dropout_of_one", "model.dropout", "model.dropout=1")
override_case("lambda_beyond_the_pool", "task.lam", "task.lam=50")
override_case("empty_ood_set", "task.ood_fraction", "task.ood_fraction=0.01")
override_case("override_without_equals", "--set", "train.steps")
override_case("override_into_a_value", "--set", "train.steps.every=3")


# ----------------------------------------------------------------------------- run folders


@case
def out_is_a_different_run(ctx):
    return Case(["run", ctx.file(TINY_YAML), "--set", "train.lr=0.01", "--out", ctx.run], [ctx.run])


@case
def out_is_a_file(ctx):
    path = ctx.file("notes", name="notes.txt")
    return Case(["run", ctx.file(TINY_YAML), "--out", path], [path], watch=[ctx.tmp])


@case
def resume_with_set_of_another_key(ctx):
    copy = ctx.resumable_copy()
    args = ["run", "--resume", copy, "--set", "train.lr=0.5"]
    return Case(args, ["--set train.lr"], watch=[copy])


@case
def resume_with_out(ctx):
    copy = ctx.resumable_copy()
    return Case(["run", "--resume", copy, "--out", ctx.tmp / "x"], ["--resume"], watch=[copy])


@case
def resume_of_a_folder_without_config(ctx):
    folder = ctx.tmp / "empty-run"
    folder.mkdir()
    return Case(["run", "--resume", folder], [folder / "config.json"], watch=[folder])


@case
def resume_with_a_corrupt_config(ctx):
    copy = ctx.resumable_copy()
    (copy / "config.json").write_text('{"task": {"kind": "twohop"')
    return Case(["run", "--resume", copy], [copy / "config.json"], watch=[copy])


@case
def resume_with_an_invalid_config(ctx):
    copy = ctx.resumable_copy()
    config = json.loads((copy / "config.json").read_text())
    config["model"]["n_layers"] = 0
    (copy / "config.json").write_text(json.dumps(config))
    return Case(["run", "--resume", copy], [copy / "config.json", "model.n_layers"], watch=[copy])


@case
def resume_from_a_corrupt_checkpoint(ctx):
    copy = ctx.resumable_copy()
    path = ctx.last_checkpoint(copy)
    path.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{not json" + bytes(64))
    return Case(["run", "--resume", copy], [path], watch=[copy])


@case
def resume_from_a_truncated_checkpoint(ctx):
    copy = ctx.resumable_copy()
    path = ctx.last_checkpoint(copy)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return Case(["run", "--resume", copy], [path], watch=[copy])


@case
def resume_from_an_empty_checkpoint(ctx):
    copy = ctx.resumable_copy()
    path = ctx.last_checkpoint(copy)
    path.write_bytes(b"")
    return Case(["run", "--resume", copy], [path], watch=[copy])


@case
def resume_from_a_checkpoint_of_another_config(ctx):
    copy = ctx.resumable_copy()
    config = json.loads((copy / "config.json").read_text())
    config["train"]["lr"] = 0.01
    (copy / "config.json").write_text(json.dumps(config))
    summary = json.loads((copy / "summary.json").read_text())
    summary["config_sha256"] = config_digest(config)  # as if the run had been made so
    (copy / "summary.json").write_text(json.dumps(summary))
    return Case(["run", "--resume", copy], [ctx.last_checkpoint(copy), "another config"], [copy])


def _rewrite_checkpoint(path: Path, change: Callable[[dict, dict], None]) -> None:
    """Changes a checkpoint's contents and writes it with a checksum that matches them: a
    checkpoint that is intact but wrong, not a damaged one."""
    tensors, metadata = load_checkpoint_file(path)
    metadata.pop("payload_sha256", None)
    change(tensors, metadata)
    strings = {k: json.dumps(v) for k, v in metadata.items()}
    save_file(tensors, str(path), metadata=with_digest(tensors, strings))


@case
def resume_from_a_checkpoint_without_optimizer_metadata(ctx):
    copy = ctx.resumable_copy()
    path = ctx.last_checkpoint(copy)
    _rewrite_checkpoint(path, lambda tensors, metadata: metadata.pop("param_groups"))
    return Case(["run", "--resume", copy], [path, "param_groups"], watch=[copy])


@case
def resume_from_a_checkpoint_without_rng_state(ctx):
    copy = ctx.resumable_copy()
    path = ctx.last_checkpoint(copy)
    _rewrite_checkpoint(path, lambda tensors, metadata: tensors.pop("rng.torch"))
    return Case(["run", "--resume", copy], [path, "rng.torch"], watch=[copy])


@case
def resume_from_a_checkpoint_with_other_shapes(ctx):
    copy = ctx.resumable_copy()
    path = ctx.last_checkpoint(copy)

    def widen(tensors, metadata):
        tensors["model.embed.weight"] = torch.zeros(7, 3)

    _rewrite_checkpoint(path, widen)
    return Case(["run", "--resume", copy], [path], watch=[copy])


@case
def resume_from_a_checkpoint_with_a_garbled_optimizer(ctx):
    copy = ctx.resumable_copy()
    path = ctx.last_checkpoint(copy)

    def garble(tensors, metadata):
        tensors["optim.x"] = torch.zeros(2)

    _rewrite_checkpoint(path, garble)
    return Case(["run", "--resume", copy], [path], watch=[copy])


# ----------------------------------------------------------------------------- dataset folders


def data_dir_case(ctx: Context, folder: Path, *names: Any) -> Case:
    out = ctx.tmp / "new-run"
    config = ctx.config(task={**TINY_TASK, "data_dir": str(folder)})
    return Case(["run", config, "--out", out], list(names), watch=[folder], absent=[out])


@case
def data_dir_that_does_not_exist(ctx):
    return data_dir_case(ctx, ctx.tmp / "no-dataset", "task.data_dir")


@case
def data_dir_without_vocab(ctx):
    folder = ctx.dataset()
    (folder / "vocab.json").unlink()
    return data_dir_case(ctx, folder, folder / "vocab.json")


@case
def data_dir_with_a_dict_vocab_whose_ids_are_text(ctx):
    folder = ctx.dataset()
    tokens = json.loads((folder / "vocab.json").read_text())
    (folder / "vocab.json").write_text(json.dumps({t: str(i) for i, t in enumerate(tokens)}))
    return data_dir_case(ctx, folder, folder / "vocab.json", "ids")


@case
def data_dir_with_a_dict_vocab_with_a_gap_in_its_ids(ctx):
    folder = ctx.dataset()
    tokens = json.loads((folder / "vocab.json").read_text())
    (folder / "vocab.json").write_text(json.dumps({t: i + (i > 3) for i, t in enumerate(tokens)}))
    return data_dir_case(ctx, folder, folder / "vocab.json", "ids")


@case
def data_dir_with_an_explicit_cot_that_contradicts_the_data(ctx):
    folder = ctx.tmp / "interleaved-dataset"
    write_folder(tiny_task(cot="interleaved"), folder)
    out = ctx.tmp / "new-run"
    config = ctx.config(task={**TINY_TASK, "data_dir": str(folder), "cot": "none"})
    return Case(["run", config, "--out", out], ["task.cot", "interleaved"], [folder], [out])


@case
def data_dir_with_an_unknown_token(ctx):
    folder = ctx.dataset()
    items = json.loads((folder / "train.json").read_text())
    items[3]["target_text"] = items[3]["target_text"].replace("</a>", "<e_999></a>")
    (folder / "train.json").write_text(json.dumps(items))
    return data_dir_case(ctx, folder, folder / "train.json", "item 3", "<e_999>")


@case
def data_dir_with_items_as_a_mapping(ctx):
    folder = ctx.dataset()
    (folder / "train.json").write_text(json.dumps({"items": []}))
    return data_dir_case(ctx, folder, folder / "train.json")


@case
def data_dir_with_truncated_test_json(ctx):
    folder = ctx.dataset()
    text = (folder / "test.json").read_text()
    (folder / "test.json").write_text(text[: len(text) // 2])
    return data_dir_case(ctx, folder, folder / "test.json")


@case
def data_dir_with_text_outside_tokens(ctx):
    folder = ctx.dataset()
    items = json.loads((folder / "test.json").read_text())
    items[0]["input_text"] = "who is " + items[0]["input_text"]
    (folder / "test.json").write_text(json.dumps(items))
    return data_dir_case(ctx, folder, folder / "test.json", "item 0")


# ----------------------------------------------------------------------------- reasonlab data


@case
def data_with_lambda_beyond_the_pool(ctx):
    out = ctx.tmp / "data"
    args = ["data", ctx.file(TINY_YAML), "--out", out, "--set", "task.lam=50"]
    return Case(args, ["task.lam"], absent=[out])


@case
def data_into_an_existing_run(ctx):
    return Case(["data", ctx.file(TINY_YAML), "--out", ctx.run], ["--out", ctx.run])


@case
def data_from_a_missing_config(ctx):
    missing = ctx.tmp / "missing.yaml"
    return Case(["data", missing, "--out", ctx.tmp / "d"], [missing], absent=[ctx.tmp / "d"])


@case
def data_hf_of_a_vector_task(ctx):
    """In-context regression has no tokens: no Hugging Face text dataset."""
    out = ctx.tmp / "data"
    config = ctx.file(yaml.safe_dump({**TINY_RUN, "task": ICL}))
    return Case(["data", config, "--out", out, "--format", "hf"], ["--format", "icl"], absent=[out])


@case
def data_in_an_unknown_format(ctx):
    out = ctx.tmp / "data"
    return Case(
        ["data", ctx.file(TINY_YAML), "--out", out, "--format", "csv"], ["--format"], absent=[out]
    )


# ----------------------------------------------------------------------------- reasonlab study


@case
def study_unknown_name(ctx):
    out = ctx.tmp / "study"
    return Case(["study", "cot-sideways", "--out", out], ["NAME", "cot-sideways"], absent=[out])


@case
def study_unknown_preset(ctx):
    out = ctx.tmp / "study"
    return Case(["study", "cot-twohop", "--preset", "gpu", "--out", out], ["--preset"], [], [out])


@case
def study_zero_seeds(ctx):
    out = ctx.tmp / "study"
    return Case(["study", "cot-twohop", "--seeds", "0", "--out", out], ["--seeds"], [], [out])


@case
def study_bad_override(ctx):
    out = ctx.tmp / "study"
    args = ["study", "cot-twohop", "--set", "model.n_layer=2", "--out", out]
    return Case(args, ["model.n_layer"], absent=[out])


@case
def study_into_an_existing_run(ctx):
    return Case(["study", "cot-twohop", "--out", ctx.run], ["--out", ctx.run])


@case
def study_reuse_that_is_not_a_folder(ctx):
    out = ctx.tmp / "study"
    args = ["study", "cot-twohop", "--out", out, "--reuse", ctx.tmp / "nothing"]
    return Case(args, ["--reuse"], absent=[out])


# ----------------------------------------------------------------------------- reasonlab analyze


@case
def logit_lens_of_a_missing_run(ctx):
    missing = ctx.tmp / "no-run"
    return Case(["analyze", "logit-lens", missing], [missing], absent=[missing])


@case
def logit_lens_unknown_checkpoint_step(ctx):
    return Case(["analyze", "logit-lens", ctx.run, "--checkpoint", "7"], ["--checkpoint"])


@case
def logit_lens_checkpoint_not_a_step(ctx):
    return Case(["analyze", "logit-lens", ctx.run, "--checkpoint", "best"], ["--checkpoint"])


@case
def logit_lens_unknown_probe(ctx):
    return Case(["analyze", "logit-lens", ctx.run, "--probe", "test_inferred_xyz"], ["--probe"])


@case
def logit_lens_unknown_target(ctx):
    return Case(["analyze", "logit-lens", ctx.run, "--target", "head"], ["--target"])


@case
def logit_lens_zero_queries(ctx):
    return Case(["analyze", "logit-lens", ctx.run, "--queries", "0"], ["--queries"])


@case
def logit_lens_of_a_run_without_checkpoints(ctx):
    copy = ctx.resumable_copy()
    for path in (copy / "checkpoints").iterdir():
        path.unlink()
    return Case(["analyze", "logit-lens", copy], [copy / "checkpoints"], watch=[copy])


@case
def trace_unknown_change(ctx):
    return Case(["analyze", "trace", ctx.run, "--change", "tail"], ["--change"])


@case
def trace_unknown_target(ctx):
    return Case(["analyze", "trace", ctx.run, "--target", "head"], ["--target"])


@case
def trace_unknown_hook(ctx):
    return Case(["analyze", "trace", ctx.run, "--hook", "resid_mid"], ["--hook"])


@case
def trace_probe_that_is_not_two_hop(ctx):
    return Case(["analyze", "trace", ctx.run, "--probe", "id_atomic"], ["--probe"])


@case
def trace_from_a_corrupt_checkpoint(ctx):
    copy = ctx.resumable_copy()
    path = ctx.last_checkpoint(copy)
    path.write_bytes(path.read_bytes()[:100])
    return Case(["analyze", "trace", copy], [path], watch=[copy])


# ----------------------------------------------------------------------------- reasonlab export


@case
def export_into_an_existing_run(ctx):
    return Case(["export", ctx.run, ctx.run], ["OUT", ctx.run])


@case
def export_from_a_truncated_checkpoint(ctx):
    copy = ctx.resumable_copy()
    path = ctx.last_checkpoint(copy)
    path.write_bytes(path.read_bytes()[:100])
    out = ctx.tmp / "hf"
    return Case(["export", copy, out], [path], watch=[copy], absent=[out])


@case
def export_of_a_folder_that_is_no_run(ctx):
    folder = ctx.dataset()
    out = ctx.tmp / "hf"
    return Case(["export", folder, out], [folder / "config.json"], watch=[folder], absent=[out])


def _needs(name: str) -> list[Any]:
    if name.startswith("export_") and not hasattr(cli, "export"):
        return [pytest.mark.skip(reason="reasonlab export is not there yet")]
    return []


@pytest.mark.parametrize("name", [pytest.param(n, marks=_needs(n)) for n in CASES])
def test_bad_input_exits_2_with_one_line_and_touches_nothing(name, completed_run, tmp_path, capsys):
    context = Context(tmp_path, completed_run)
    bad = CASES[name](context)
    watched = [completed_run, *bad.watch]
    before = [folder_state(folder) for folder in watched]
    with pytest.raises(SystemExit) as info:
        main([str(arg) for arg in bad.args])
    out, err = capsys.readouterr()
    assert info.value.code == 2, err
    assert out == ""
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    for expected in bad.names:
        assert str(expected) in lines[0], (expected, lines[0])
    assert [folder_state(folder) for folder in watched] == before
    for path in bad.absent:
        assert not path.exists(), path


def test_the_catalogue_is_large_enough():
    assert len(CASES) >= 30


def test_a_study_refused_at_its_first_run_can_be_started_again(tmp_path, capsys):
    """Bad data found only when the first run builds it leaves a folder that the same study
    recognizes as its own, so fixing the config and starting again is not refused."""
    out = tmp_path / "study"
    args = ["study", "cot-twohop", "--out", str(out), "--set", "task.lam=500"]
    for _ in range(2):
        with pytest.raises(SystemExit) as info:
            main(args)
        err = capsys.readouterr().err
        assert info.value.code == 2
        assert err.strip().splitlines() == [err.strip()] and "task.lam" in err, err
    assert json.loads((out / "summary.json").read_text())["study"] == "cot-twohop"
