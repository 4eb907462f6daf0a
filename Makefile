VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: run test venv

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[test]'
	touch $@

venv: $(VENV)/.installed

run: venv
	$(VENV)/bin/gpuplane up

test: venv
	$(PY) -m pytest -q
