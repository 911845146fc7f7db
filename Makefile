# Two commands on a fresh machine: `make demo` and `make test`. Both create/reuse .venv.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
FRESH ?= .fresh-install
PY := $(VENV)/bin/python
STAMP := $(VENV)/.synthgen-installed

.PHONY: demo test test-slow test-all install-check bench bench-quick clean

$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_SPEC)
	$(PY) -m pip install -q -e '.[test]'
	touch $@

demo: $(STAMP)
	$(VENV)/bin/synthgen demo --out demo-run

test: $(STAMP)
	$(PY) -m pytest -q

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

test-all: $(STAMP)
	$(PY) -m pytest -q -m ""

# As a user installs: what is committed, into a fresh venv, `pip install` with no extras and a fresh
# resolve (no TORCH_SPEC, no cache of ours), `pip check`, then `synthgen demo` twice (the second
# reuses the finished run). CI runs it beside the tests.
install-check:
	rm -rf $(FRESH) && mkdir -p $(FRESH)/src
	git archive HEAD | tar -x -C $(FRESH)/src
	$(PYTHON) -m venv $(FRESH)/venv
	$(FRESH)/venv/bin/pip install -q $(FRESH)/src
	$(FRESH)/venv/bin/pip check
	cd $(FRESH) && venv/bin/synthgen demo --out demo --quiet && venv/bin/synthgen demo --out demo --quiet

# Every benchmark for the devices present; writes one table into benchmarks/RESULTS.md.
bench: $(STAMP)
	$(PY) benchmarks/run_all.py

bench-quick: $(STAMP)
	$(PY) benchmarks/run_all.py --quick

clean:
	rm -rf demo-run build *.egg-info $(FRESH)
