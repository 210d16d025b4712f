# Developer entry points for sb3-trpo-ext.
#
#   make venv       create $(VENV) and install the package (editable) with the test, mujoco, zoo, atari, dask and docs extras
#   make demo       train TRPO on CartPole-v1, evaluate it and save the model under runs/demo/
#   make test       ruff check, ruff format --check, mypy (the whole package), the documentation site (make docs), then
#                   the fast test suite (everything not marked `slow`): tests/unit first, then tests/integration, in
#                   one pytest run
#   make test-unit  the unit tests only (tests/unit, not `slow`): the algorithm's fast, exact tests, in seconds
#   make test-slow  learning tests only (minutes)
#   make test-all   everything
#   make lint       ruff check + ruff format --check
#   make bench      speed benchmark (benchmarks/speed.py)
#   make docs       the documentation site (Sphinx, docs/site/) into docs/_build/html, warnings as errors
#
# torch is installed first, pinned to $(TORCH): a bare `torch` requirement makes pip fetch the
# multi-GB CUDA build on Linux. Override with e.g. `make venv TORCH=2.14.1`, or `TORCH=` to skip
# the pinned install (pip then resolves torch itself).

PYTHON ?= python3
VENV ?= .venv
TORCH ?= 2.13.0
EXTRAS ?= test,mujoco,zoo,atari,dask,docs
PYTEST_ARGS ?=
# -qq: only errors (plain -q still prints every pip warning, e.g. about unreachable extra indexes).
PIP_FLAGS ?= -qq --disable-pip-version-check

VPY := $(VENV)/bin/python
PIP := $(VPY) -m pip
STAMP := $(VENV)/.installed
LINT_PATHS := $(wildcard sb3_trpo_ext tests benchmarks docs/site)
DOCS_SRC := docs/site
DOCS_OUT := docs/_build

.PHONY: venv demo test test-unit test-slow test-all lint bench docs clean

venv: $(STAMP)

# pip runs with -qq, so each step announces itself: a first install takes minutes with nothing else shown.
$(STAMP): pyproject.toml
	@test -x $(VPY) && echo "== using the virtualenv in $(VENV)" || { echo "== creating the virtualenv in $(VENV) ($(PYTHON) -m venv)"; $(PYTHON) -m venv $(VENV); }
	@echo "== upgrading pip"
	$(PIP) install $(PIP_FLAGS) --upgrade pip
ifneq ($(strip $(TORCH)),)
	@echo "== installing torch==$(TORCH) (pinned: TORCH=... to change it; a large download, can take minutes)"
	$(PIP) install $(PIP_FLAGS) "torch==$(TORCH)"
else
	@echo "== TORCH is empty: not pinning torch (pip resolves it with the package)"
endif
	@echo "== installing sb3-trpo-ext (editable) with the extras [$(EXTRAS)]"
	$(PIP) install $(PIP_FLAGS) -e ".[$(EXTRAS)]"
	@touch $@
	@echo "== $(VENV) is ready"

demo: venv
	$(VPY) -m sb3_trpo_ext.demo

# lint, format and the public API's type check first (seconds), so that a clean clone proves them too (.ci/run
# calls this). pytest's testpaths (pyproject.toml) put tests/unit before tests/integration: one run, unit first.
test: venv
	$(VPY) -m ruff check $(LINT_PATHS)
	$(VPY) -m ruff format --check $(LINT_PATHS)
	$(VPY) -m mypy
	$(MAKE) --no-print-directory docs
	$(VPY) -m pytest -m "not slow" -q $(PYTEST_ARGS)

# the fast feedback loop: the unit tests only (well under 30 s)
test-unit: venv
	$(VPY) -m pytest tests/unit -m "not slow" -q $(PYTEST_ARGS)

test-slow: venv
	$(VPY) -m pytest -m slow -q $(PYTEST_ARGS)

test-all: venv
	$(VPY) -m pytest -q $(PYTEST_ARGS)

lint: venv
	$(VPY) -m ruff check $(LINT_PATHS)
	$(VPY) -m ruff format --check $(LINT_PATHS)

bench: venv
	$(VPY) benchmarks/speed.py

# The documentation site (docs/site/conf.py): a fresh build each time (-E, the output folder emptied first), every
# warning an error (-W, all of them reported: --keep-going), every cross-reference checked (-n); offline (no
# intersphinx, external links not checked). Open docs/_build/html/index.html. docs/site-index.png is a headless
# screenshot of that page (Debian's chromium: chromium --headless --no-sandbox --screenshot=docs/site-index.png
# --window-size=1280,1200 file://$PWD/docs/_build/html/index.html), refreshed by hand, not by make.
docs: venv
	@rm -rf $(DOCS_OUT)
	$(VPY) -m sphinx -E -W --keep-going -n -q -b html -d $(DOCS_OUT)/doctrees $(DOCS_SRC) $(DOCS_OUT)/html
	@echo "== documentation site: $(DOCS_OUT)/html/index.html"

clean:
	rm -rf build dist *.egg-info .pytest_cache .ruff_cache .hypothesis $(DOCS_OUT)
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +
