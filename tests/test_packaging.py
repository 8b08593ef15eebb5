"""The distribution (issue 24): the version has one source, and `python -m build` gives a wheel and
an sdist that pass `twine check --strict`, carry the studies' YAML and the license, and install
in a fresh virtual environment from which `reasonlab study cot-twohop` runs.

The slow tests build from a copy of the files the sdist is made of (so the working tree gains no
egg-info), in an isolated build environment (`python -m build`'s default: setuptools comes from
the package index, as it does for `make dist`). The fresh environment is a plain `python -m venv`
with nothing shared with the project's .venv: the CPU build of torch pinned as scripts/setup.sh
pins it (`CPU_TORCH`), then the wheel, whose dependencies pip resolves from the package index.
`--no-compile` skips writing bytecode for torch's many files (73 s of install with it, 31 s
without). Measured on the 2-core machine, idle / busy with other work: build 9 / 17 s, the venv
7 / 13 s, the install 31 / 36 s, the study 13 / 26 s; the slow tests together 1 to 2 minutes.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
import yaml

import reasonlab

ROOT = Path(__file__).resolve().parents[1]
STUDIES = ROOT / "src" / "reasonlab" / "studies"
# What the sdist is built from: the tree minus what `python -m build` never reads.
SDIST_SOURCES = ("pyproject.toml", "README.md", "LICENSE", "src")
# A few dozen steps of a small model: the study's whole pipeline (data, three variants, analysis,
# report) in seconds.
QUICK = [
    "train.steps=30",
    "train.warmup_steps=5",
    "eval.every=10",
    "train.batch_size=64",
    "model.n_layers=2",
    "model.d_model=32",
    "model.n_heads=2",
    "log.progress=false",
]


def pyproject() -> dict:
    tomllib = pytest.importorskip("tomllib")
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def cpu_torch() -> str:
    """The torch pin scripts/setup.sh installs on a machine without a GPU."""
    found = re.search(
        r'CPU_TORCH="\$\{CPU_TORCH:-([^}]+)\}"', (ROOT / "scripts/setup.sh").read_text()
    )
    assert found, "scripts/setup.sh no longer sets CPU_TORCH"
    return found.group(1)


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without anything that would let a child see the project's sources or
    .venv."""
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "VIRTUAL_ENV"}}
    env.update(PIP_DISABLE_PIP_VERSION_CHECK="1", OMP_NUM_THREADS="1", **extra)
    return env


def run(args: list, cwd: Path, timeout: float, **env: str) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [str(a) for a in args],
        cwd=cwd,
        env=clean_env(**env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, f"{args[:4]} exited {done.returncode}:\n{done.stderr[-3000:]}"
    return done


def source_files(pattern: str) -> set[str]:
    """Files of the package in the source tree, as paths inside the package."""
    package = ROOT / "src" / "reasonlab"
    return {
        str(p.relative_to(package.parent))
        for p in package.rglob(pattern)
        if "__pycache__" not in p.parts
    }


# ----------------------------------------------------------------------------- one version


def test_the_version_has_one_source():
    """pyproject.toml names no version of its own: setuptools reads reasonlab.__version__."""
    project = pyproject()
    assert "version" not in project["project"]
    assert "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "reasonlab.__version__"}
    assert re.fullmatch(r"\d+\.\d+\.\d+", reasonlab.__version__)


def test_version_flag_prints_the_package_version(capsys):
    from helpers import run_cli

    code, out, _ = run_cli(["--version"], capsys)
    assert (code, out.strip()) == (0, f"reasonlab {reasonlab.__version__}")


def test_the_license_pyproject_names_is_the_mit_file():
    project = pyproject()["project"]
    assert project["license"] == "MIT"
    assert project["license-files"] == ["LICENSE"]
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License\n")
    assert "Copyright (c) 2026 the reasonlab authors" in text
    assert "Permission is hereby granted, free of charge" in text


# ----------------------------------------------------------------------------- the build


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """`python -m build` (sdist, then the wheel from the unpacked sdist) into a folder."""
    work = tmp_path_factory.mktemp("packaging")
    source = work / "source"
    source.mkdir()
    for name in SDIST_SOURCES:
        path = ROOT / name
        if path.is_dir():
            ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
            shutil.copytree(path, source / name, ignore=ignore)
        else:
            shutil.copy2(path, source / name)
    out = work / "dist"
    run([sys.executable, "-m", "build", "--outdir", out, source], cwd=work, timeout=300)
    wheels, sdists = sorted(out.glob("*.whl")), sorted(out.glob("*.tar.gz"))
    assert len(wheels) == 1 and len(sdists) == 1, sorted(p.name for p in out.iterdir())
    return {"wheel": wheels[0], "sdist": sdists[0], "work": work}


@pytest.mark.slow
def test_twine_check_strict_passes_on_both(dist):
    done = run(
        [sys.executable, "-m", "twine", "check", "--strict", dist["wheel"], dist["sdist"]],
        cwd=dist["work"],
        timeout=120,
    )
    assert done.stdout.count("PASSED") == 2, done.stdout


@pytest.mark.slow
def test_the_wheel_carries_the_package_the_studies_yaml_and_the_license(dist):
    version = reasonlab.__version__
    assert dist["wheel"].name == f"reasonlab-{version}-py3-none-any.whl"
    with zipfile.ZipFile(dist["wheel"]) as wheel:
        names = set(wheel.namelist())
        info = f"reasonlab-{version}.dist-info"
        metadata = wheel.read(f"{info}/METADATA").decode()
        entry_points = wheel.read(f"{info}/entry_points.txt").decode()
    packaged = {n for n in names if n.startswith("reasonlab/")}
    assert {n for n in packaged if n.endswith(".py")} == source_files("*.py")
    assert {n for n in packaged if n.endswith(".yaml")} == source_files("*.yaml")
    assert "reasonlab/studies/cot_twohop.yaml" in names
    assert f"{info}/licenses/LICENSE" in names
    assert f"\nVersion: {version}\n" in metadata
    assert "\nLicense-Expression: MIT\n" in metadata
    assert "\nDescription-Content-Type: text/markdown\n" in metadata
    assert re.search(r"^reasonlab = reasonlab\.cli:main$", entry_points, re.M)


@pytest.mark.slow
def test_the_sdist_carries_the_sources_readme_and_license(dist):
    version = reasonlab.__version__
    top = f"reasonlab-{version}"
    assert dist["sdist"].name == f"{top}.tar.gz"
    with tarfile.open(dist["sdist"]) as sdist:
        names = {n.removeprefix(f"{top}/") for n in sdist.getnames()}
    for name in ("pyproject.toml", "README.md", "LICENSE", "PKG-INFO"):
        assert name in names
    packaged = {n.removeprefix("src/") for n in names if n.startswith("src/reasonlab/")}
    assert {n for n in packaged if n.endswith(".yaml")} == source_files("*.yaml")
    assert {n for n in packaged if n.endswith(".py")} == source_files("*.py")


@pytest.mark.slow
def test_the_wheel_installs_in_a_fresh_venv_and_runs_the_quick_study(dist, tmp_path):
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", venv], cwd=tmp_path, timeout=120)
    python, command = venv / "bin" / "python", venv / "bin" / "reasonlab"
    run(
        [python, "-m", "pip", "install", "-q", "--no-compile", cpu_torch(), dist["wheel"]],
        cwd=tmp_path,
        timeout=480,
    )

    # The package imported is the installed one, not the source tree.
    where = run([python, "-c", "import reasonlab; print(reasonlab.__file__)"], tmp_path, 60)
    assert Path(where.stdout.strip()).resolve().is_relative_to(venv.resolve())
    version = run([command, "--version"], tmp_path, 60)
    assert version.stdout.strip() == f"reasonlab {reasonlab.__version__}"

    out = tmp_path / "study"
    args = [command, "study", "cot-twohop", "--out", out]
    for override in QUICK:
        args += ["--set", override]
    run(args, cwd=tmp_path, timeout=300)

    summary = yaml.safe_load((out / "summary.json").read_text())  # JSON is YAML
    spec = yaml.safe_load((STUDIES / "cot_twohop.yaml").read_text())
    assert summary["study"] == "cot-twohop"
    assert summary["status"] == "completed"
    assert set(summary["runs"]) == {f"{variant}-s0" for variant in spec["variants"]}
    headline = set(spec["headline"].values())  # test_inferred_iid, test_inferred_ood
    for name, result in summary["runs"].items():
        assert result["status"] == "completed", name
        assert result["steps"] == 30, name
        assert result["versions"]["reasonlab"] == reasonlab.__version__
        assert headline <= set(result["final"]), (name, sorted(result["final"]))
        # a probe's score, and for the CoT variants its per-stage scores ("probe.stage")
        probes = {key.split(".")[0] for key in result["final"]}
        assert probes == expected_probes(out / "runs" / name), name
        assert all(0.0 <= value <= 1.0 for value in result["final"].values()), name
    report = (out / "report.html").read_text()
    assert "cot-twohop" in report
    assert (out / "curves.png").stat().st_size > 0


def expected_probes(run_dir: Path) -> set[str]:
    """The probes the run's task has, built here from the config the run recorded."""
    from reasonlab.runs.folder import RunDir
    from reasonlab.tasks import build_task

    return set(build_task(RunDir(run_dir).load_config().task).probes)
