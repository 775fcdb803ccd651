# One command each: `make install`, `make run` (the whole pipeline), `make test`.
PYTHON ?= $(if $(wildcard .venv/bin/python),.venv/bin/python,python3)
# Where KNBC comes from: the official URL unless KNBC_SOURCE names a local archive or directory.
export KNBC_SOURCE

.PHONY: install run test test-fast bench

install:
	python3 -m venv .venv
	.venv/bin/pip install -q --upgrade pip
	# CPU build of PyTorch (a bare `torch` would pull GBs of CUDA packages)
	.venv/bin/pip install -q torch==2.13.0
	.venv/bin/pip install -q -e ".[dev]"

run:
	$(PYTHON) -m pipeline run

test:
	$(PYTHON) -m pytest -q

test-fast:
	$(PYTHON) -m pytest -q -m "not integration"

bench:
	$(PYTHON) -m pipeline bench tokenize
