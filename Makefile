# The two commands of the README:
#   make demo   set everything up, then run the main job
#   make test   set everything up, then run every test (tests/test_docs.py builds the docs, tests/test_examples.py
#               runs the examples)
# and
#   make docs   build the documentation into docs/_build/html, warnings as errors
# Everything is installed into .venv/ in the repository root (CPU build of torch 2.13.0).

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.adamkit-installed

.PHONY: demo test docs install clean data wheel gpu-bench

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[test,tasks,bench,docs,examples]'
	touch $(STAMP)

# the quick suite (Tier A, plus a very short run of every Tier B task, whose data `data` prepares first):
# under 5 minutes on 2 cores once the data is in the cache
demo: $(STAMP) data
	$(VENV)/bin/adamkit bench run quick --out bench-out/quick
	$(VENV)/bin/adamkit bench report bench-out/quick
	@echo "report: bench-out/quick/report/report.html (and report.md)"

# data of the Tier B tasks (checked, idempotent); tests of a task whose data is missing are skipped
data: $(STAMP)
	-@if [ "$$(id -u)" = 0 ] && [ ! -d /usr/share/datasets/fashion-mnist ]; then apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist >/dev/null; fi
	-$(VENV)/bin/adamkit data prepare

test: $(STAMP) data
	$(PY) -m pytest -q

docs: $(STAMP)
	$(PY) -m sphinx -W --keep-going -n -b html docs docs/_build/html
	@echo "documentation: docs/_build/html/index.html"

# the wheel, with the fused C kernel prebuilt in its instruction-set variants (py3-none-<platform>): dist/
wheel: $(STAMP)
	$(PY) -m pip wheel . --no-deps -w dist/

# the GPU tier on a machine with an NVIDIA GPU and a CUDA build of torch: the environment, the GPU tests, the
# gpu_smoke then the gpu suite within TIME_LIMIT seconds (the store resumes), their reports, into
# $(OUT) or results/<date>-gpu-bench/ (scripts/gpu_bench.sh --help)
TIME_LIMIT ?= 480
gpu-bench: $(STAMP) data
	PYTHON=$(PY) bash scripts/gpu_bench.sh --time-limit $(TIME_LIMIT)

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .hypothesis docs/_build docs/algorithms docs/_generated
