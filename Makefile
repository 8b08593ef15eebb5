# Each target does its own set-up: a .venv with the CPU build of torch on machines without a GPU.
.PHONY: setup test test-fast lint study bench docs claims dist clean

# The set-up runs again only when pyproject.toml or the script changed (the stamp file).
setup: .venv/.installed

.venv/.installed: pyproject.toml scripts/setup.sh
	bash scripts/setup.sh
	touch $@

lint: setup
	.venv/bin/ruff check src tests benchmarks

# Everything: lint, format, the import contracts and the whole test suite.
test: setup
	.venv/bin/ruff check src tests benchmarks
	.venv/bin/ruff format --check src tests benchmarks
	.venv/bin/lint-imports
	.venv/bin/python -m pytest -q

# The quick loop: lint, the import contracts and every test not marked slow (no end-to-end
# training). One torch thread: the tests' models are tiny, and on a shared 2-core machine a second
# thread mostly waits for the other, which made this suite 3x slower.
test-fast: setup
	.venv/bin/ruff check src tests benchmarks
	.venv/bin/lint-imports
	OMP_NUM_THREADS=1 .venv/bin/python -m pytest -q -m "not slow"

study: setup
	.venv/bin/reasonlab study cot-twohop --preset cpu --out runs/cot-twohop-cpu

bench: setup
	.venv/bin/python benchmarks/cot_twohop_quick.py

# The claims page from the study summaries the docs quote (results/, one per study: each a
# study's summary.json, copied there when its numbers went into the docs).
claims: setup
	.venv/bin/reasonlab claims results/*.json --out docs/claims.md

# The documentation site (mkdocs.yml: README as the home page, docs/) into site/; fails on a
# broken link or a page missing from the navigation.
docs: setup
	NO_MKDOCS_2_WARNING=1 .venv/bin/mkdocs build --strict --site-dir site

# The wheel and the sdist into dist/ (setuptools in an isolated build environment, from the
# package index), then twine's check of both, as PyPI would read them (tests/test_packaging.py
# installs such a wheel in a fresh venv and runs the quick study from it).
dist: setup
	rm -rf dist
	.venv/bin/python -m build --outdir dist .
	.venv/bin/twine check --strict dist/*

clean:
	rm -rf .venv runs .pytest_cache .ruff_cache
