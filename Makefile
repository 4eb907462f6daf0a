# gpuplane: the two commands.
#   make run    create .venv, install, start `gpuplane up` (API + scheduler + local driver + dashboard)
#   make test   create .venv with test extras, run the whole suite on SQLite and PostgreSQL
#               (a throwaway PostgreSQL is started unless GPUPLANE_TEST_PG_URL is given)
#   make test-nova  the live Nova tests too (slow: installs and starts Nova, Glance, RabbitMQ)
#   Both install bubblewrap (the task sandbox) with apt-get when bwrap is missing and root.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?= -q -p no:cacheprovider --timeout=600 --durations=15

.PHONY: run test venv test-sqlite test-nova clean sandbox test-tools

$(VENV)/bin/python:
	@$(PYTHON) -m venv $(VENV) 2>/dev/null || { scripts/apt-install.sh python3-venv python3-pip && $(PYTHON) -m venv $(VENV); }
	$(PY) -m pip install -q --disable-pip-version-check --upgrade pip

# `make run` needs the package only; `make test` adds the test extras.
$(VENV)/.installed: pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install -q --disable-pip-version-check -e .
	@touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(PY) -m pip install -q --disable-pip-version-check -e '.[test]'
	@touch $@

venv: $(VENV)/.installed

# The task sandbox (docs/runtime.md, "Trust boundary"): bubblewrap from Debian when bwrap is
# missing. Without it (not root, no apt-get) gpuplane runs only the `default` project's tasks
# and the sandbox tests skip.
sandbox:
	@command -v bwrap >/dev/null 2>&1 || [ -x /usr/bin/bwrap ] || scripts/apt-install.sh bubblewrap \
	  || echo "warning: bubblewrap is not installed: local tasks of other projects than 'default' will be refused" >&2

# What the tests drive besides Python: promtool (checks the shipped alert rules) and Chromium
# (the console's browser tests), from Debian when missing.
test-tools:
	@command -v promtool >/dev/null 2>&1 || scripts/apt-install.sh prometheus \
	  || echo "warning: promtool is not installed: the alert-rule check will be skipped" >&2
	@[ -x /usr/bin/chromium ] || scripts/apt-install.sh chromium \
	  || echo "warning: chromium is not installed: the console's browser tests will fail" >&2

run: venv sandbox
	$(VENV)/bin/gpuplane up $(ARGS)

# One pytest run: tests parametrized over databases get both SQLite and PostgreSQL.
test: $(VENV)/.installed-test sandbox test-tools
	scripts/with-postgres.sh $(PY) -m pytest $(PYTEST_ARGS)

# Live Nova 34 + Glance + RabbitMQ against a real Placement (docs/openstack.md, "Nova"): about
# 2.7 min from scratch, 1 min once installed, so not part of `make test`, which runs the Nova
# client against responses recorded from the real service instead.
test-nova: $(VENV)/.installed-test
	GPUPLANE_TEST_NOVA=1 scripts/with-postgres.sh $(PY) -m pytest $(PYTEST_ARGS) \
	  tests/openstack/test_nova_live.py tests/openstack/test_nova_recorded.py \
	  tests/drivers/test_openstack_nova_flavors.py

# Without PostgreSQL (the PostgreSQL cases are skipped).
test-sqlite: $(VENV)/.installed-test sandbox
	$(PY) -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .gpuplane .pytest_cache
