"""Sweeps: a YAML spec expanded into runs with readable names, trained by a local or a Ray
executor into one folder, restartable.

A spec names its base (a config file, or a ready study's preset and variants), fixed settings,
a grid (every combination) and zipped lists (taken together), and seeds::

    name: width-lr                       # optional; the spec file's name otherwise
    base: configs/quick.yaml             # a run config (path relative to the spec) ...
    # study: cot-twohop                  # ... or a ready study: its preset and variants
    # preset: cpu
    # variants: [no-cot, cot-interleaved] # default: every variant
    set: {train.steps: 300}
    grid: {model.d_model: [64, 128], train.lr: [1.0e-3, 3.0e-4]}
    zip: {task.lam: [3.6, 7.2], task.num_entities: [200, 400]}
    seeds: 3                             # or a list: [0, 5]

Trial names join the variant, each swept key's last part and value, and the seed
(``no-cot-d_model=64-lr=0.001-s0``); runs go to ``OUT/runs/NAME``. ``OUT/summary.json`` lists
every trial with its status, written after each one. Running the same sweep again skips
completed trials and resumes stopped ones. A trial whose config is invalid or whose training
fails is recorded as failed with its message, and the others go on; a bad spec (an unknown key
or field, an empty grid, lists of unequal length) is refused before any trial starts.

A sweep is counted before it is expanded (variants x the grid's axis lengths x the zipped
length x seeds): more than ``MAX_TRIALS`` (10,000) trials is refused unless ``max_trials``
(``reasonlab sweep --max-trials N``) allows more. A name (the spec's, or a trial's with it) is at
most 200 characters.

``pack`` (``--pack auto|off|K``, local executor only) trains compatible trials together as one
batched model (``trials.plan_packs``, ``training/pack.py``), each into its own folder.
"""

from __future__ import annotations

import copy
import itertools
import math
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reasonlab.config import ConfigError, RunConfig, config_from_dict, read_yaml, set_key
from reasonlab.config.limits import MAX_NAME, MAX_TRIALS, cut, shown
from reasonlab.core.files import make_dir, read_json, write_json
from reasonlab.experiments.trials import LocalRunner, pack_size, parse_pack, plan_packs, plan_run
from reasonlab.runs.folder import hold_lock

SPEC_FIELDS = ("name", "base", "study", "preset", "variants", "set", "grid", "zip", "seeds")


@dataclass
class Trial:
    """One run of a sweep: its config, or the message of why its config is invalid."""

    name: str
    config: RunConfig | None
    error: str | None = None


# ----------------------------------------------------------------------------- the spec


def _mapping(spec: dict[str, Any], field: str) -> dict[str, Any]:
    value = spec.get(field) or {}
    if not isinstance(value, dict):
        raise ConfigError(f"{field}: expected a mapping of config keys, got {shown(value)}")
    return value


def _lists(spec: dict[str, Any], field: str) -> dict[str, list[Any]]:
    lists = _mapping(spec, field)
    for key, values in lists.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{field}.{cut(str(key), 80)}: expected a non-empty list of values")
    return lists


def _seeds(spec: dict[str, Any]) -> range | list[int]:
    """The seeds of a spec: a count (a range, never made into a list) or a list of integers."""
    seeds = spec.get("seeds", 1)
    if isinstance(seeds, bool) or not isinstance(seeds, (int, list)):
        raise ConfigError(f"seeds: expected a count or a list of integers, got {shown(seeds)}")
    if isinstance(seeds, int):
        if seeds < 1:
            raise ConfigError(f"seeds: expected at least 1, got {shown(seeds)}")
        return range(seeds)
    if not seeds or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        raise ConfigError(f"seeds: expected a non-empty list of integers, got {shown(seeds)}")
    return seeds


def _name(spec: dict[str, Any]) -> str:
    name = spec.get("name", "sweep")
    if isinstance(name, int) and not isinstance(name, bool):
        name = str(name)
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"name: expected the sweep's name, got {shown(name)}")
    if len(name) > MAX_NAME:
        raise ConfigError(f"name: {shown(name)} is longer than {MAX_NAME} characters")
    return name


def _bases(spec: dict[str, Any], folder: Path) -> dict[str, dict[str, Any]]:
    """Variant name ('' for a config file) -> the config data the grid is applied to."""
    if ("base" in spec) == ("study" in spec):
        raise ConfigError("base: give either base (a config file) or study, not both or neither")
    if "base" in spec:
        path = folder / str(spec["base"])
        if not path.is_file():
            raise ConfigError(f"base: {path} is not a file")
        data = read_yaml(path)
        if not isinstance(data, dict):
            raise ConfigError(f"base: {path} does not hold a config mapping")
        return {"": data}
    from reasonlab.experiments.study_spec import STUDIES

    study, preset = spec["study"], spec.get("preset", "cpu")
    if study not in STUDIES:
        raise ConfigError(f"study: unknown study {shown(study)} (known: {', '.join(STUDIES)})")
    found = STUDIES[study]
    if preset not in found.presets:
        raise ConfigError(f"preset: {shown(preset)} is not a preset of {study}")
    variants = found.variants_for(preset)
    names = spec.get("variants") or list(variants)
    unknown = [v for v in names if v not in variants]
    if unknown:
        raise ConfigError(f"variants: {shown(unknown[0])} is not a variant of {study}")
    return {variant: found.variant_data(preset, variant, variants[variant]) for variant in names}


def _label(key: str, keys: list[str]) -> str:
    """A swept key's short name: its last part, or the whole key when that part repeats."""
    last = key.split(".")[-1]
    return last if sum(k.split(".")[-1] == last for k in keys) == 1 else key


def _text(value: Any) -> str:
    text = str(value).lower() if isinstance(value, bool) else str(value)
    return re.sub(r"[^A-Za-z0-9._+-]+", "_", text)


def expand(
    spec: dict[str, Any], folder: Path = Path("."), max_trials: int = MAX_TRIALS
) -> list[Trial]:
    """Every trial of a spec, in order: variant, then grid (last key fastest) with the zipped
    lists, then seed. An unknown key anywhere is a ConfigError (a bad spec); any other invalid
    config fails its trial alone. The trials are counted first, from the lengths of the lists:
    more than ``max_trials`` is a ConfigError before any is built."""
    if not isinstance(spec, dict):
        raise ConfigError("spec: expected a mapping")
    extra = [k for k in spec if k not in SPEC_FIELDS]
    if extra:
        raise ConfigError(
            f"{cut(str(extra[0]), 80)}: unknown field of a sweep spec ({', '.join(SPEC_FIELDS)})"
        )
    fixed, grid, zipped = _mapping(spec, "set"), _lists(spec, "grid"), _lists(spec, "zip")
    if "grid" in spec and not grid:
        raise ConfigError("grid: empty; give at least one key with values, or leave it out")
    lengths = {len(values) for values in zipped.values()}
    if len(lengths) > 1:
        raise ConfigError(f"zip: the lists must have one length, got {sorted(lengths)}")
    sweep_name, seeds, bases = _name(spec), _seeds(spec), _bases(spec, folder)
    count = len(bases) * math.prod(map(len, grid.values())) * (lengths.pop() if lengths else 1)
    count *= len(seeds)
    if count > max_trials:
        field = "grid" if grid else "zip" if zipped else "seeds"
        raise ConfigError(
            f"{field}: {count:,} trials ({_shape(bases, grid, zipped, seeds)}), more than the "
            f"{max_trials:,} a sweep runs; sweep fewer values, or raise the limit with "
            "--max-trials N"
        )
    zip_rows = [
        dict(zip(zipped, row, strict=True)) for row in zip(*zipped.values(), strict=True)
    ] or [{}]
    swept = [*grid, *zipped]
    trials = []
    for variant, base in bases.items():
        # Lazily: the grid's rows are never held all at once.
        for grid_values in itertools.product(*grid.values()):
            grid_row = dict(zip(grid, grid_values, strict=True))
            for zip_row in zip_rows:
                for seed in seeds:
                    setting = {**grid_row, **zip_row}
                    parts = [variant] if variant else []
                    parts += [f"{_label(k, swept)}={_text(v)}" for k, v in setting.items()]
                    name = "-".join([*parts, f"s{seed}"])
                    if len(sweep_name) + 1 + len(name) > MAX_NAME:
                        raise ConfigError(
                            f"grid: the trial name {sweep_name}/{cut(name, 60)} is longer than "
                            f"{MAX_NAME} characters; sweep fewer keys or shorter values, or "
                            "give the spec a shorter name"
                        )
                    trials.append(_trial(name, base, {**fixed, **setting}, seed, sweep_name))
    names = [t.name for t in trials]
    if len(set(names)) != len(names):
        raise ConfigError("grid: two trials get the same name; give distinct values")
    return trials


def _shape(
    bases: dict[str, Any], grid: dict[str, list[Any]], zipped: dict[str, list[Any]], seeds: Any
) -> str:
    """How a count of trials comes about: '3 variants x 10 d_model x 10 lr x 5 seeds'."""
    factors = [f"{len(bases)} variants"] if len(bases) > 1 else []
    factors += [f"{len(values)} {cut(str(key), 40)}" for key, values in grid.items()]
    if zipped:
        factors.append(f"{len(next(iter(zipped.values())))} zipped")
    return " x ".join([*factors, f"{len(seeds):,} seeds"])


def _trial(
    name: str, base: dict[str, Any], settings: dict[str, Any], seed: int, sweep: str
) -> Trial:
    data = copy.deepcopy(base)
    for key, value in settings.items():
        set_key(data, str(key).split("."), copy.deepcopy(value), f"sweep key {key}")
    task, train = data.setdefault("task", {}), data.setdefault("train", {})
    task["seed"] = int(task.get("seed", 0)) + seed
    train["seed"] = int(train.get("seed", 0)) + seed
    data["name"] = f"{sweep}/{name}"
    try:
        return Trial(name, config_from_dict(data))
    except ConfigError as error:
        if "unknown key" in str(error):
            raise  # a spec naming a key no config has: refused before any trial
        return Trial(name, None, str(error))


def load_sweep(
    path: str | Path, max_trials: int = MAX_TRIALS
) -> tuple[dict[str, Any], list[Trial]]:
    """The spec at ``path`` (its name defaulting to the file's) and its trials (at most
    ``max_trials``)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"SPEC: {path} is not a file")
    spec = read_yaml(path)
    if not isinstance(spec, dict):
        raise ConfigError(f"SPEC: {path} does not hold a mapping")
    spec.setdefault("name", path.stem)
    return spec, expand(spec, path.parent, max_trials)


def _check_sweep_folder(out: Path, name: str) -> dict[str, Any]:
    summary_path = out / "summary.json"
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: is a file, expected a folder")
    if summary_path.exists():
        previous = read_json(summary_path)
        if not isinstance(previous, dict) or previous.get("sweep") != name:
            raise ConfigError(f"--out {out}: holds something other than sweep {name!r}")
        return previous
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"--out {out}: exists and is not this sweep's folder")
    return {}


def run_sweep(
    spec_path: str | Path,
    out: str | Path,
    executor: str = "local",
    jobs: int = 1,
    address: str | None = None,
    cpus_per_trial: float = 1.0,
    gpus_per_trial: float = 0.0,
    max_trials: int = MAX_TRIALS,
    pack: str | int = "auto",
) -> dict[str, Any]:
    """Trains (skips, resumes) every trial of the sweep at ``spec_path`` into ``out`` and
    returns the sweep's summary (also in OUT/summary.json). Everything the spec, the folder and
    the executor can refuse is refused before any trial starts."""
    if executor not in ("local", "ray"):
        raise ConfigError(f"--executor: {executor!r} is not local or ray")
    if jobs < 1:
        raise ConfigError("--jobs: must be at least 1")
    if max_trials < 1:
        raise ConfigError("--max-trials: must be at least 1")
    size = parse_pack(pack)
    if executor == "ray" and size is not None and size > 1:
        raise ConfigError("--pack: packs train with the local executor only; use --pack off")
    spec, trials = load_sweep(spec_path, max_trials)
    out = Path(out)
    previous = _check_sweep_folder(out, spec["name"])
    plans = {
        t.name: plan_run(t.config, out / "runs" / t.name) if t.config else "failed (config)"
        for t in trials
    }
    valid = {t.name: t.config for t in trials if t.config is not None}
    packs = plan_packs(valid, 1 if executor == "ray" else pack_size(pack, list(valid.values())))
    if executor == "ray":
        from reasonlab.experiments.ray_executor import RayRunner

        runner: Any = RayRunner(address, cpus_per_trial, gpus_per_trial)
    else:
        runner = LocalRunner(jobs, isolate=True)
    try:
        make_dir(out / "runs")
        with hold_lock(out, "sweep folder"):
            result = _run_trials(spec, trials, plans, out, previous, runner, packs)
    except BaseException:
        runner.close(stop_workers=True)
        raise
    runner.close()
    return result


def _run_trials(
    spec: dict[str, Any],
    trials: list[Trial],
    plans: dict[str, str],
    out: Path,
    previous: dict[str, Any],
    runner: Any,
    packs: list[list[str]] | None = None,
) -> dict[str, Any]:
    result: dict[str, Any] = {"sweep": spec["name"], "spec": spec, "status": "running"}
    result["trials"] = {}
    wall_before = float(previous.get("wall_s") or 0.0)
    started = time.perf_counter()

    def save(status: str) -> None:
        result["status"] = status
        result["wall_s"] = round(wall_before + time.perf_counter() - started, 3)
        write_json(out / "summary.json", result)

    save("running")
    pending: dict[str, Any] = {}
    status = "failed"
    try:
        by_name = {t.name: t for t in trials}
        pack_of = {name: members for members in packs or [] for name in members}
        for trial in trials:
            members = pack_of.get(trial.name, [trial.name])
            if trial.config is not None and members[0] != trial.name:
                continue  # submitted with its pack's first trial
            for name in members:
                packed = f" (pack of {len(members)})" if len(members) > 1 else ""
                print(f"[{spec['name']}] {name}: {plans[name]}{packed}", flush=True)
            if trial.config is None:
                result["trials"][trial.name] = {"status": "failed", "error": trial.error}
                save("running")
                continue
            if len(members) == 1:
                pending[trial.name] = runner.submit(trial.config, out / "runs" / trial.name)
            else:
                configs = [by_name[n].config for n in members]
                futures = runner.submit_pack(configs, [out / "runs" / n for n in members])
                pending.update(zip(members, futures, strict=True))
            if not runner.parallel:
                for name in members:
                    result["trials"][name] = _outcome(pending.pop(name).result())
                save("running")
        for name, future in pending.items():
            result["trials"][name] = _outcome(future.result())
            save("running")
        result["trials"] = {t.name: result["trials"][t.name] for t in trials}
        failed = sum(r["status"] != "completed" for r in result["trials"].values())
        status = "completed" if not failed else "completed with failures"
    except KeyboardInterrupt:
        status = "interrupted"
        raise
    finally:
        save(status)
    return result


def _outcome(summary: dict[str, Any]) -> dict[str, Any]:
    """What the sweep summary keeps of a trial: status, error, step and final metrics."""
    kept = {k: summary.get(k) for k in ("status", "step", "wall_s", "final") if k in summary}
    if summary.get("error"):
        kept["error"] = summary["error"]
    return kept
