# Each target does its own set-up: a .venv with the CPU build of torch on machines without a GPU.
.PHONY: setup test lint study bench clean

setup:
	bash scripts/setup.sh

lint: setup
	.venv/bin/ruff check src tests benchmarks

test: setup
	.venv/bin/ruff check src tests benchmarks
	.venv/bin/python -m pytest -q

study: setup
	.venv/bin/reasonlab study cot-twohop --preset cpu --out runs/cot-twohop-cpu

bench: setup
	.venv/bin/python benchmarks/cot_twohop_quick.py

clean:
	rm -rf .venv runs .pytest_cache .ruff_cache
