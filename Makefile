# Set-up and entry points. Everything installs into .venv from a fresh clone.
PY := .venv/bin/python
STAMP := .venv/.installed
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: analyze test bench

$(STAMP): pyproject.toml
	python3 -m venv .venv
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

analyze: $(STAMP)  ## the main job: convlens analyze on the built-in default model
	.venv/bin/convlens analyze

test: $(STAMP)  ## the whole test suite (installs Debian's chromium for the HTML report's browser tests)
	command -v chromium >/dev/null 2>&1 || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq chromium; }
	$(PY) -m pytest -n 2

bench: $(STAMP)  ## timings against the peers installed side by side (not part of CI)
	$(PY) -m pip install -q -e '.[bench]'
	$(PY) benchmarks/bench_analyze.py
	$(PY) benchmarks/bench_units.py
	$(PY) benchmarks/bench_cli_start.py
