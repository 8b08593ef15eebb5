"""Experiment tracking (``log.tracker``): each backend's files read back (the config, a metric at
a known step, the summary), a run interrupted and resumed tracked as one run whose steps strictly
increase, a packed study tracked as one run per member grouped by the study with the report's
figures in a tracked run of its own, and the bad inputs (an unknown tracker, a missing package)
refused with one line.

Nothing reaches a network: W&B runs offline (no key, no mode set: our default) and MLflow writes a
file store in the run folder."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from helpers import (
    STUDY_TINY,
    TINY_YAML,
    interrupt_at_loss,
    one_line_error,
    read_metrics,
    run_cli,
    tiny_config,
)
from reasonlab.runs.checkpoints import TrainingCheckpoints
from reasonlab.runs.folder import RunDir
from reasonlab.runs.integrity import config_digest
from reasonlab.training.loop import train
from reasonlab.training.tracking import STATE_FILE
from tracker_readers import Tracked, read_mlflow, read_tensorboard, read_wandb

ALL = "log.tracker=[tensorboard,wandb,mlflow]"


@pytest.fixture(scope="module", autouse=True)
def offline(one_thread: None) -> Iterator[None]:
    """No W&B key or mode (the default this project picks is offline), no MLflow server."""
    with pytest.MonkeyPatch.context() as patch:
        for name in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_PROJECT", "MLFLOW_TRACKING_URI"):
            patch.delenv(name, raising=False)
        patch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
        patch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # restored after the module
        patch.setenv("WANDB_SILENT", "true")
        yield


def read_mlflow_run(folder: Path) -> Tracked:
    runs = read_mlflow(folder / "mlruns")
    assert len(runs) == 1, [r.run_ids for r in runs]
    return runs[0]


READERS: dict[str, Callable[[Path], Tracked]] = {
    "tensorboard": lambda run: read_tensorboard(run / "tensorboard"),
    "wandb": lambda run: read_wandb(run / "wandb"),
    "mlflow": read_mlflow_run,
}


def param(backend: str, tracked: Tracked, key: str) -> object:
    """A config key as the backend kept it: nested in W&B's config, flat elsewhere (MLflow's as
    text)."""
    if backend == "wandb":
        section, name = key.split(".")
        return tracked.params[section][name]
    value = tracked.params[key]
    return float(value) if backend == "mlflow" else value


def tracked_ids(run: Path) -> dict[str, str]:
    return json.loads((run / STATE_FILE).read_text())["runs"]


@pytest.fixture(scope="module")
def tracked_run(tmp_path_factory) -> Path:
    """A tiny run of a sweep ``grid`` mirrored into all three trackers."""
    out = tmp_path_factory.mktemp("tracked") / "run"
    train(tiny_config(ALL, "name=grid/lr-s0", "train.steps=8", "eval.every=2"), out)
    return out


@pytest.mark.parametrize("backend", list(READERS))
def test_each_backend_reads_back_the_config_a_metric_and_the_summary(tracked_run, backend):
    tracked = READERS[backend](tracked_run)
    records = {r["step"]: r for r in read_metrics(tracked_run)}
    summary = json.loads((tracked_run / "summary.json").read_text())
    # the config as hyperparameters
    assert param(backend, tracked, "train.steps") == 8
    assert param(backend, tracked, "eval.every") == 2
    # every record at its step: the loss at step 4, a probe's accuracy at step 0
    assert tracked.steps("loss") == [2, 4, 6, 8]
    assert tracked.value_at("loss", 4) == pytest.approx(records[4]["loss"], rel=1e-6)
    assert tracked.steps("id_atomic") == [0, 2, 4, 6, 8]
    assert tracked.value_at("id_atomic", 0) == pytest.approx(records[0]["id_atomic"])
    # the final summary
    assert str(tracked.summary["status"]) == "completed"
    final = tracked.summary["final.id_atomic"]
    assert float(final) == pytest.approx(summary["final"]["id_atomic"])
    assert float(tracked.summary["step"]) == 8
    # the id kept in the run folder is the tracked run's
    assert tracked_ids(tracked_run)[backend] in tracked.run_ids


def test_wandb_and_mlflow_name_the_run_and_its_group(tracked_run):
    wandb_run = read_wandb(tracked_run / "wandb")
    assert (wandb_run.name, wandb_run.group) == ("grid/lr-s0", "grid")
    mlflow_run = read_mlflow_run(tracked_run)
    assert (mlflow_run.name, mlflow_run.experiment, mlflow_run.group) == (
        "grid/lr-s0",
        "grid",
        "grid",
    )
    assert mlflow_run.summary["_run_status"] == "FINISHED"


def test_a_run_interrupted_and_resumed_is_one_tracked_run_with_no_step_twice(tmp_path, monkeypatch):
    """Interrupted after step 6 was evaluated (and tracked) but before its checkpoint was
    written: the resume starts again at step 4 and evaluates step 6 a second time, which the
    trackers must not get again."""
    out = tmp_path / "run"
    config = tiny_config(ALL, "train.steps=10", "eval.every=2")
    save = TrainingCheckpoints.save

    def interrupted(self, step, *args, **kwargs):
        if step == 6:
            raise KeyboardInterrupt
        return save(self, step, *args, **kwargs)

    monkeypatch.setattr(TrainingCheckpoints, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train(config, out)
    monkeypatch.setattr(TrainingCheckpoints, "save", save)
    first_ids = tracked_ids(out)
    assert json.loads((out / STATE_FILE).read_text())["last_step"] == 6
    assert RunDir(out).checkpoint_steps()[-1] == 4  # so the resume trains step 6 again
    first_loss_6 = {r["step"]: r for r in read_metrics(out)}[6]["loss"]

    assert train(config, out, resume=True)["status"] == "completed"
    assert tracked_ids(out) == first_ids
    records = {r["step"]: r for r in read_metrics(out)}
    for backend, read in READERS.items():
        tracked = read(out)
        # one tracked run: W&B's two offline sessions share its id, MLflow's store holds one
        # run, TensorBoard's folder is one run (its two event files read as one)
        assert tracked.run_ids in ([first_ids[backend]], [first_ids[backend]] * 2), backend
        for key in ("loss", "id_atomic"):
            steps = tracked.steps(key)
            assert steps == sorted(set(steps)), (backend, key, steps)  # strictly increasing
        assert tracked.steps("loss") == [2, 4, 6, 8, 10], backend
        assert tracked.value_at("loss", 6) == pytest.approx(first_loss_6, rel=1e-6)
        assert tracked.value_at("loss", 10) == pytest.approx(records[10]["loss"], rel=1e-6)
        assert str(tracked.summary["status"]) == "completed", backend
    assert len(list((out / "wandb").glob("offline-run-*"))) == 2  # both sessions were tracked
    events = list((out / "tensorboard").iterdir())
    assert len(events) == 2 and all(p.name.startswith("events.out.tfevents.") for p in events)


@pytest.mark.slow
def test_a_run_killed_and_resumed_is_one_tracked_run_with_steps_strictly_increasing(tmp_path):
    """A real ``reasonlab run`` process killed with SIGKILL mid-run (its trackers never closed),
    then resumed."""
    config = tmp_path / "c.yaml"
    data = yaml.safe_load(TINY_YAML)
    data["train"]["steps"], data["eval"]["every"] = 24, 2
    data["log"]["tracker"] = ["tensorboard", "wandb", "mlflow"]
    config.write_text(yaml.safe_dump(data))
    out = tmp_path / "run"
    # its own W&B service: not this process's (whose address wandb put in WANDB_SERVICE)
    env = {k: v for k, v in os.environ.items() if k != "WANDB_SERVICE"}
    env["OMP_NUM_THREADS"] = "1"
    args = [sys.executable, "-m", "reasonlab", "run", config, "--out", out]
    process = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        metrics = out / "metrics.jsonl"
        while time.monotonic() < deadline and process.poll() is None:
            if metrics.exists() and metrics.read_bytes().count(b"\n") >= 4:
                break
            time.sleep(0.005)
        process.kill()
        _, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == -signal.SIGKILL, err
    first_ids = tracked_ids(out)
    killed_at = json.loads((out / STATE_FILE).read_text())["last_step"]
    assert 0 < killed_at < 24

    assert train(RunDir(out).load_config(), out, resume=True)["status"] == "completed"
    assert tracked_ids(out) == first_ids
    for backend, read in READERS.items():
        tracked = read(out)
        assert tracked.run_ids in ([first_ids[backend]], [first_ids[backend]] * 2), backend
        steps = tracked.steps("loss")
        assert steps == sorted(set(steps)), (backend, steps)  # strictly increasing
        assert steps[-1] == 24 and killed_at + 2 in steps, backend  # both sessions tracked
        assert str(tracked.summary["status"]) == "completed", backend


@pytest.mark.slow
def test_a_packed_study_tracks_each_member_and_its_report(tmp_path):
    from reasonlab.studies import run_study

    out = tmp_path / "study"
    overrides = [*STUDY_TINY, "log.tracker=[tensorboard,wandb,mlflow]"]
    result = run_study("cot-twohop", seeds=1, out=out, overrides=overrides, pack="4")
    assert result["status"] == "completed"
    assert any("pack of 2" in note for run in result["runs"].values() for note in run["notes"])
    ids = set()
    for name in result["runs"]:
        run = out / "runs" / name
        wandb_run, mlflow_run = read_wandb(run / "wandb"), read_mlflow_run(run)
        assert wandb_run.group == "cot-twohop" and mlflow_run.experiment == "cot-twohop"
        assert wandb_run.name == f"cot-twohop/{name}"
        steps = [r["step"] for r in read_metrics(run) if r.get("loss") is not None]
        for tracked in (wandb_run, mlflow_run, read_tensorboard(run / "tensorboard")):
            assert tracked.steps("loss") == steps
        ids.add(wandb_run.run_ids[0])
    assert len(ids) == len(result["runs"])  # one tracked run per member
    # the study's own tracked run: the report's figures as images, the claims as its summary
    for tracked in (read_tensorboard(out / "tensorboard"), read_wandb(out / "wandb")):
        assert "report/curves" in tracked.images and "report/stages" in tracked.images
    report_run = read_mlflow_run(out)
    assert {"curves", "stages"} <= set(report_run.images)
    assert report_run.experiment == "cot-twohop" and report_run.name == "cot-twohop/report"
    assert report_run.summary["status"] == "completed"
    assert any(key.startswith("claim.") for key in report_run.summary)


def test_a_run_made_before_log_tracker_existed_resumes_and_stays_readable(tmp_path, monkeypatch):
    """Its config.json has no ``log.tracker``: the summary a resume writes records the digest of
    that file as it is, so the next read of the folder does not find config.json changed."""
    out = tmp_path / "run"
    interrupt_at_loss(monkeypatch, 6)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_config(), out)
    monkeypatch.undo()
    config = json.loads((out / "config.json").read_text())
    del config["log"]["tracker"]  # as an older version wrote it
    (out / "config.json").write_text(json.dumps(config))
    summary = json.loads((out / "summary.json").read_text())
    summary["config_sha256"] = config_digest(config)
    (out / "summary.json").write_text(json.dumps(summary))

    assert train(RunDir(out).load_config(), out, resume=True)["status"] == "completed"
    assert RunDir(out).load_config().log.trackers() == []  # not refused as changed


# ----------------------------------------------------------------------------- bad input


def test_an_unknown_tracker_exits_2_with_one_line(tmp_path, capsys):
    (tmp_path / "c.yaml").write_text(TINY_YAML)
    args = ["run", tmp_path / "c.yaml", "--set", "log.tracker=neptune", "--out", tmp_path / "r"]
    code, _, err = run_cli(args, capsys)
    assert code == 2
    assert one_line_error(err).startswith("log.tracker: unknown tracker 'neptune'")
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(("backend", "module"), [("wandb", "wandb"), ("mlflow", "mlflow")])
def test_a_missing_tracker_package_exits_2_with_the_pip_command(
    tmp_path, capsys, monkeypatch, backend, module
):
    monkeypatch.setitem(sys.modules, module, None)  # `import wandb` now raises ImportError
    (tmp_path / "c.yaml").write_text(TINY_YAML)
    args = ["run", tmp_path / "c.yaml", "--set", f"log.tracker={backend}", "--out", tmp_path / "r"]
    code, _, err = run_cli(args, capsys)
    assert code == 2
    message = one_line_error(err)
    assert message.startswith(f"log.tracker: {backend} needs the {module} package")
    assert message.endswith(f"pip install 'reasonlab[{backend}]'")
    assert not (tmp_path / "r").exists()  # refused before the run folder was made


def test_no_tracker_imports_no_tracker_package(tmp_path, monkeypatch):
    for module in ("wandb", "mlflow", "tensorboard"):
        monkeypatch.setitem(sys.modules, module, None)  # any import of them would fail
    assert train(tiny_config("train.steps=2"), tmp_path / "r")["status"] == "completed"
    assert not (tmp_path / "r" / STATE_FILE).exists()


def test_only_the_backend_modules_import_a_tracker_package():
    """The packages are optional: only each backend's own module imports one (at its top), and
    only the registry imports those modules, by name, when a run chooses them."""
    import ast

    import reasonlab

    root = Path(reasonlab.__file__).parent
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                top = name.split(".")[0]
                if top in ("wandb", "mlflow", "tensorboard") or name.startswith(
                    "torch.utils.tensorboard"
                ):
                    assert path.name.endswith("_tracker.py"), (path, name)
                assert not name.endswith("_tracker"), (path, name)  # through the registry only
