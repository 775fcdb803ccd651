# One command each: `make install`, `make run` (the whole pipeline), `make lint`, `make test` (`make test-all` adds the slow tests).
PYTHON ?= $(if $(wildcard .venv/bin/python),.venv/bin/python,python3)
# lint-imports has no `python -m` entry point: take the venv's console script when there is one.
LINT_IMPORTS ?= $(if $(wildcard .venv/bin/lint-imports),.venv/bin/lint-imports,lint-imports)
# Where KNBC comes from: the official URL unless KNBC_SOURCE names a local archive or directory. The tests read
# ../shared/data/KNBC_v1.0_090925_utf8.tar.bz2 unless it is set. No `export KNBC_SOURCE` here: make would export
# an unset variable as an empty string (the library and the tests read an empty value as unset all the same).
# The ten slowest tests are printed after every run.
PYTEST ?= $(PYTHON) -m pytest -q --durations=10

.PHONY: install install-system install-browser run lint docs test test-slow test-all test-fast test-integration bench

install:
	python3 -m venv .venv
	.venv/bin/pip install -q --upgrade pip
	# CPU build of PyTorch (a bare `torch` would pull GBs of CUDA packages)
	.venv/bin/pip install -q torch==2.13.0
	# dev extras: pytest, ruff and import-linter (used by `make lint` and `make test`); ray: the Ray engine and its tests;
	# docs: MkDocs Material and mkdocstrings (`make docs`); onnx: ONNX Runtime for `jpipe export onnx` / `--backend onnx`
	# tune: Optuna and tomlkit for `jpipe tune` (its tests skip without Optuna)
	.venv/bin/pip install -q -e ".[dev,ray,docs,onnx,tracking,tune]"
	$(MAKE) --no-print-directory install-system

# System packages, apt-get installed when missing (Debian, as root; `apt-get update` and a second try if the first
# install fails): chromium and fonts-noto-cjk for the browser test (tests/integration/test_serve_browser.py drives
# Debian's chromium through Playwright, as `playwright install` cannot download here; fonts-noto-cjk for Japanese),
# and wrk, the load generator of `jpipe bench serve`. Without root or apt, say so and go on: the browser test then
# skips itself, and `jpipe bench serve` falls back to its Python client. `make install-browser` is the old name.
install-system:
	@missing=""; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	fc-list 2>/dev/null | grep -qi "Noto Sans CJK" || missing="$$missing fonts-noto-cjk"; \
	command -v wrk >/dev/null 2>&1 || missing="$$missing wrk"; \
	if [ -z "$$missing" ]; then \
	  echo "chromium, fonts-noto-cjk and wrk: already installed"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing \
	    || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; } \
	    || echo "apt-get install$$missing failed: the browser test will be skipped, and jpipe bench serve uses its Python client without wrk"; \
	else \
	  echo "missing:$$missing, and no root or apt-get to install them: the browser test will be skipped, and jpipe bench serve uses its Python client without wrk"; \
	fi

install-browser: install-system

run:
	$(PYTHON) -m pipeline run

# Quality gates, as in CI: lint rules, formatting, and the import layers contract (pyproject.toml).
lint:
	$(PYTHON) -m ruff check .
	$(PYTHON) -m ruff format --check .
	$(LINT_IMPORTS)

# The documentation site (mkdocs.yml, docs/) into site/; --strict: a broken link or anchor fails the build.
docs:
	NO_MKDOCS_2_WARNING=1 $(PYTHON) -m mkdocs build --strict

# The README's test command: unit tests and the integration tests on the real KNBC archive, less the tests marked
# `slow` (real-data trainings of several seeds, whole profiles). 7 min 25 s on 2 cores (2026-12-07).
test:
	$(PYTEST) -m "not slow"

# Only the tests marked `slow`; `make test` + `make test-slow` = `make test-all`.
test-slow:
	$(PYTEST) -m slow

# Every test, slow ones included (about 26 minutes on 2 cores).
test-all:
	$(PYTEST)

# Unit tests only (tiny hand-made fixtures, no real corpus).
test-fast:
	$(PYTEST) -m "not slow" tests/unit

# Integration tests only (the real KNBC archive from ../shared or KNBC_SOURCE), slow ones included.
test-integration:
	$(PYTEST) tests/integration

bench:
	$(PYTHON) -m pipeline bench tokenize
