# The README's two commands. Each bootstraps its own environment: uv (installed into .tools/
# when it is not on PATH), a .venv synced exactly to uv.lock, then the work itself.
SHELL := /bin/bash
PYTHON ?= python3
UV := $(shell command -v uv 2>/dev/null || echo .tools/bin/uv)
export UV_PROJECT_ENVIRONMENT := .venv

.PHONY: run test docs bench-api bench-cpu lint clean deploy-check

.tools/bin/uv:
	$(PYTHON) -m venv .tools
	.tools/bin/pip install --quiet --disable-pip-version-check uv

.venv/.synced: uv.lock pyproject.toml | $(UV)
	$(UV) sync --frozen --all-groups
	touch $@

run: .venv/.synced
	.venv/bin/python -m scripts.run_stack

test: .venv/.synced
	.venv/bin/python -m pytest $(PYTEST_ARGS)

docs: .venv/.synced
	.venv/bin/python -m scripts.build_docs

lint: .venv/.synced
	$(UV) run --frozen ruff check . && $(UV) run --frozen ruff format --check .

clean:
	rm -rf .venv .tools .pytest_cache build

# The image and docker-compose.yml on a real Docker engine (scripts/deploy_check.py; docs/deployment.md#the-deploy-check).
deploy-check: .venv/.synced
	.venv/bin/python -m scripts.deploy_check
