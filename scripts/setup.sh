#!/usr/bin/env bash
# Creates .venv (once) and installs reasonlab into it with its dev and docs tools and extras.
# On a machine without an NVIDIA GPU the CPU build of torch is pinned first, so that the
# open range in pyproject.toml is already satisfied and no multi-GB CUDA build is pulled.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
VENV="${VENV:-.venv}"
EXTRAS="${EXTRAS:-dev,docs,hf,lens,mamba,runs,ray,tensorboard,wandb,mlflow}"
CPU_TORCH="${CPU_TORCH:-torch==2.13.0}"

if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check -q)
if ! "$VENV/bin/python" -c "import torch" >/dev/null 2>&1; then
    if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then
        "${PIP[@]}" install "torch>=2.2"
    else
        "${PIP[@]}" install "$CPU_TORCH"
    fi
fi
"${PIP[@]}" install -e ".[$EXTRAS]"

# Chromium for the browser test of the reports (tests/reporting/test_report_browser.py): the
# operating system's package, as Playwright's own browser download is not reachable everywhere.
# Installed with apt-get where it is missing and we are root; elsewhere (or if apt fails) the
# test is skipped with the reason printed.
if ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
            || echo "setup: chromium not installed (apt-get failed); the browser test will skip"
    else
        echo "setup: no chromium (install it to run the browser test of the reports)"
    fi
fi
