"""What the command line says: config-key errors, output paths, help, --version, the config
reference (``reasonlab config --defaults``), the line an interrupt prints,
a quiet export, and the documented Python: the README's library example and the guide's recipe
for loading a trained run."""

from __future__ import annotations

import json
import re
import shlex
import tempfile
from pathlib import Path

import pytest
import yaml
from typer.main import get_command

from helpers import (
    STUDY_TINY,
    interrupt_at_loss,
    one_line_error,
    read_metrics,
    run_cli,
    tiny_config,
)
from reasonlab import __version__
from reasonlab.cli import app
from reasonlab.config import ConfigError, RunConfig, config_from_dict, key_paths
from reasonlab.config.reference import config_reference
from reasonlab.core.files import make_dir
from reasonlab.training.loop import train

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
GUIDE = ROOT / "docs" / "guide.md"


# ----------------------------------------------------------------------------- config keys


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.n_layer=2", "model.n_layer: unknown key (did you mean n_layers?)"),
        ("task.num_entitie=9", "task.num_entitie: unknown key (did you mean num_entities?)"),
        ("n_layers=2", "n_layers: unknown key (did you mean model.n_layers?)"),
        ("train.every=3", "train.every: unknown key (did you mean eval.every?)"),
        ("modle.n_layers=2", "modle: unknown key (did you mean model?)"),
        (
            "eval.frobnicate=1",
            "eval.frobnicate: unknown key "
            "(keys of eval: every, threshold, batch_size, sample, at_start)",
        ),
    ],
)
def test_an_unknown_key_is_named_with_the_closest_valid_one(
    tiny_yaml, tmp_path, capsys, override, message
):
    code, out, err = run_cli(["run", tiny_yaml, "--set", override, "--out", tmp_path / "r"], capsys)
    assert code == 2 and out == ""
    assert one_line_error(err) == message
    assert not (tmp_path / "r").exists()


def test_an_unknown_key_in_a_yaml_file_reads_the_same(write_yaml, capsys):
    path = write_yaml("task: {}\ntrain:\n  warmup: 3\n")
    code, _, err = run_cli(["config", path], capsys)
    assert code == 2
    assert one_line_error(err) == "train.warmup: unknown key (did you mean warmup_steps?)"


@pytest.mark.parametrize("section", ["task", "model", "train", "eval", "log"])
def test_a_section_given_a_value_is_called_a_section(tiny_yaml, tmp_path, capsys, section):
    args = ["run", tiny_yaml, "--set", f"{section}=5", "--out", tmp_path / "r"]
    code, _, err = run_cli(args, capsys)
    assert code == 2
    line = one_line_error(err)
    assert line.startswith(f"{section}: is a section, not a value; set a key in it")
    assert f"--set {section}." in line
    assert "Config" not in line  # no internal class name (TrainConfig, ...)


def test_an_empty_section_is_called_empty(write_yaml, capsys):
    code, _, err = run_cli(["config", write_yaml("task: {}\nmodel:\n")], capsys)
    assert code == 2
    assert one_line_error(err).startswith("model: is an empty section")


# ----------------------------------------------------------------------------- output paths


def test_a_file_given_as_an_output_folder_is_called_a_file(tiny_yaml, tmp_path, capsys):
    afile = tmp_path / "notes.txt"
    afile.write_text("keep me")
    code, _, err = run_cli(["data", tiny_yaml, "--out", afile], capsys)
    assert code == 2
    assert one_line_error(err) == f"--out {afile}: is a file, expected a folder"
    code, _, err = run_cli(["export", tmp_path / "no-run", afile], capsys)
    assert code == 2
    assert one_line_error(err) == f"OUT {afile}: is a file, expected a folder"
    assert afile.read_text() == "keep me"


def test_a_folder_under_a_file_names_the_file(tiny_yaml, tmp_path, capsys):
    blocker = tmp_path / "blocker"
    blocker.write_text("not a folder")
    with pytest.raises(ConfigError) as info:
        make_dir(blocker / "a" / "b")
    assert str(info.value) == f"--out {blocker / 'a' / 'b'}: {blocker} is a file, expected a folder"
    code, _, err = run_cli(["run", tiny_yaml, "--out", blocker / "run"], capsys)
    assert code == 2
    assert "is a file, expected a folder" in one_line_error(err)


def test_export_errors_name_its_out_argument_not_an_option(tmp_path, capsys):
    out = tmp_path / "busy"
    out.mkdir()
    (out / "x").write_text("")
    code, _, err = run_cli(["export", tmp_path / "no-run", out], capsys)
    assert code == 2
    line = one_line_error(err)
    assert line == f"OUT {out}: exists and is not empty; choose another folder"
    assert "--out" not in line


def test_export_prints_no_transformers_progress_bar(tmp_path, capsys):
    pytest.importorskip("transformers")
    run = tmp_path / "run"
    train(tiny_config("log.checkpoints=final"), run)
    capsys.readouterr()
    code, out, err = run_cli(["export", run, tmp_path / "hf"], capsys)
    assert code == 0, err
    assert err == ""
    assert out.strip() == f"{tmp_path / 'hf'}: step 12 of {run} as hf"


# ----------------------------------------------------------------------------- help, version


def test_bare_reasonlab_prints_the_help_and_exits_0(capsys):
    code, out, err = run_cli([], capsys)
    assert code == 0 and err == ""
    assert out.startswith("Usage: reasonlab") and "Commands:" in out and "--version" in out
    code, out, err = run_cli(["analyze"], capsys)
    assert code == 0 and err == ""
    assert out.startswith("Usage: reasonlab analyze") and "logit-lens" in out


def test_version(capsys):
    code, out, _ = run_cli(["--version"], capsys)
    assert code == 0 and out == f"reasonlab {__version__}\n"


def commands(group=None, prefix="reasonlab"):
    group = group or get_command(app)
    for name, command in group.commands.items():
        if hasattr(command, "commands"):
            yield from commands(command, f"{prefix} {name}")
        else:
            yield f"{prefix} {name}", command


@pytest.mark.parametrize(("name", "command"), list(commands()))
def test_every_option_and_argument_is_described_once(name, command):
    for param in command.params:
        text = getattr(param, "help", None)
        assert text, f"{name} {param.name}: no help text"
        sentences = [s.strip() for s in re.split(r"(?<=\.) ", text) if s.strip()]
        assert len(sentences) == len(set(sentences)), f"{name} {param.name}: {text}"


def test_study_help_says_the_set_option_once(capsys):
    code, out, _ = run_cli(["study", "--help"], capsys)
    assert code == 0
    assert " ".join(out.split()).count("Override a config key") == 1


def test_bench_step_help_describes_every_option(capsys):
    code, out, _ = run_cli(["bench", "step", "--help"], capsys)
    assert code == 0
    for option in ("--layers", "--width", "--heads", "--batch", "--seq-len", "--repeats"):
        [line] = [line for line in out.splitlines() if line.strip().startswith(option)]
        assert len(line.split(maxsplit=2)) == 3, line  # option, metavar, description


# ----------------------------------------------------------------------------- the config reference


def test_config_defaults_is_a_config_file_of_every_key_at_its_default(capsys):
    code, out, _ = run_cli(["config", "--defaults"], capsys)
    assert code == 0
    assert config_from_dict(yaml.safe_load(out)) == RunConfig()
    lines = out.splitlines()
    for path in key_paths():
        key = path.rsplit(".", 1)[-1]
        # keys of another kind of a section (model.kind: mamba) are shown commented out
        assert any(re.match(rf"^(# )?\s*{key}: .+# \S", line) for line in lines), path


def test_every_config_key_has_a_meaning():
    top, sections = config_reference()
    keys = top + [key for section in sections for _, keys in section.kinds for key in keys]
    assert {key.path for key in keys} == set(key_paths())
    assert [key.path for key in keys if not key.meaning] == []


def test_config_resolves_a_file_with_overrides(tiny_yaml, capsys):
    code, out, _ = run_cli(["config", tiny_yaml, "--set", "train.lr=0.01"], capsys)
    assert code == 0
    assert config_from_dict(yaml.safe_load(out)) == tiny_config("train.lr=0.01")


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["config"], "CONFIG"),
        (["config", "--defaults", "--set", "train.lr=1"], "--defaults"),
        (["config", "--defaults", "--format", "html"], "--format"),
    ],
)
def test_config_bad_input(args, named, capsys):
    code, _, err = run_cli(args, capsys)
    assert code == 2
    assert one_line_error(err).startswith(named)


# ----------------------------------------------------------------------------- interrupts


def test_an_interrupted_run_says_what_it_kept_and_how_to_resume(
    tiny_yaml, tmp_path, capsys, monkeypatch
):
    out = tmp_path / "run"
    with monkeypatch.context() as patch:
        interrupt_at_loss(patch, 8)  # steps 1-7 done; evaluations (and checkpoints) every 2
        code, _, err = run_cli(["run", tiny_yaml, "--out", out], capsys)
    assert code == 130
    [line] = err.strip().splitlines()
    resume = f"reasonlab run --resume {out}"
    assert (
        line == f"interrupted at step 7 of {out} (checkpoint of step 6 kept); resume with: {resume}"
    )
    code, _, err = run_cli(shlex.split(resume)[1:], capsys)
    assert code == 0, err
    assert json.loads((out / "summary.json").read_text())["status"] == "completed"
    assert read_metrics(out)[-1]["step"] == 12


def test_an_interrupt_before_training_names_no_run(tiny_yaml, tmp_path, capsys, monkeypatch):
    import reasonlab.training.loop as train_module

    with monkeypatch.context() as patch:  # first a run interrupted while it trained ...
        interrupt_at_loss(patch, 2)
        assert run_cli(["run", tiny_yaml, "--out", tmp_path / "first"], capsys)[0] == 130

    def no_task(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(train_module, "build_task", no_task)  # ... then one stopped before
    code, _, err = run_cli(["run", tiny_yaml, "--out", tmp_path / "second"], capsys)
    assert code == 130
    assert err.strip() == "interrupted before training started; nothing to resume"


def test_an_interrupted_study_says_how_to_continue_it(tmp_path, capsys, monkeypatch):
    out = tmp_path / "study"
    args = ["study", "cot-twohop", "--out", str(out)]
    for override in STUDY_TINY:
        args += ["--set", override]
    interrupt_at_loss(monkeypatch, 3)
    code, _, err = run_cli(args, capsys)
    assert code == 130
    [line] = err.strip().splitlines()
    run = out / "runs" / "no-cot-s0"
    assert line.startswith(f"interrupted at step 2 of {run} (no checkpoint yet);")
    assert line.endswith(f"resume with: reasonlab {shlex.join(args)}")


# ----------------------------------------------------------------------------- documented Python


def python_block(path: Path, heading: str) -> str:
    """The first Python code block after ``heading`` in a markdown file."""
    section = path.read_text().split(heading, 1)[1]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


def test_the_readme_library_example_runs_as_written(tmp_path, monkeypatch, capsys):
    """The README's library example, run as written (its run folder is a temporary one), trains
    a run, reloads its last checkpoint and scores it as the run's last evaluation did."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    namespace: dict = {}
    exec(python_block(README, "## Library"), namespace)
    scores, config = namespace["scores"], namespace["config"]
    last = read_metrics(Path(namespace["out"]))[-1]
    assert last["step"] == config.train.steps
    assert scores == {key: pytest.approx(last[key], abs=1e-6) for key in scores}
    assert str(scores["test_inferred_iid"]) in capsys.readouterr().out


def test_the_guide_recipe_loads_a_trained_run(tmp_path):
    """The guide's "Loading a trained run in Python" code, run on a real run folder, gives back
    the model whose scores the run logged at its last step."""
    from reasonlab.training.evaluation import evaluate
    from reasonlab.training.loaded_run import evaluate_run

    run_dir = tmp_path / "run"
    train(tiny_config(), run_dir)
    code = python_block(GUIDE, "### Loading a trained run in Python")
    namespace: dict = {}
    exec(code.replace("runs/cot-twohop-cpu/runs/cot-interleaved-s0", str(run_dir)), namespace)
    last = read_metrics(run_dir)[-1]
    assert namespace["step"] == last["step"] == 12
    for scores in (
        evaluate_run(run_dir, namespace["step"]),
        evaluate(
            namespace["model"], namespace["data"].probes, autocast=namespace["loaded"].autocast
        ),
    ):
        assert scores == {key: pytest.approx(last[key], abs=1e-6) for key in scores}


def test_the_readme_says_how_to_call_reasonlab_after_make():
    """`make` installs into .venv without touching the PATH: the set-up section says so; and no
    claim that a run folder is named after its config file (it gets a time suffix)."""
    text = README.read_text()
    setup = text[: text.index("## Library")]
    assert ".venv/bin/reasonlab" in setup and "source .venv/bin/activate" in setup
    assert "named after its config file" not in text
