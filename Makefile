# Developer entry points. `make setup` and `make test` are the README's two commands' building blocks.
PYTHON ?= .venv/bin/python
PROTO_SRC := $(wildcard protos/search/v1/*.proto)

.PHONY: setup protos lint typecheck test

setup:
	./scripts/setup.sh

# Regenerates the committed stubs; tests/test_protos.py fails when they are stale.
protos:
	$(PYTHON) -m search_common.protogen

lint:
	$(PYTHON) -m ruff check .
	$(PYTHON) -m ruff format --check .

typecheck:
	$(PYTHON) -m mypy

test:
	./scripts/test.sh
