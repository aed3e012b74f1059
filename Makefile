# Two entry points for a fresh machine: `make demo` (set up, run the CONTA demo) and `make test`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv demo test layers lint browser-deps crf-deps alloc-deps clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[dev]"
	$(BIN)/python -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__)"
	touch $(STAMP)

# JupyterLab settings of this environment (notebooks/README.md, "Widgets while cells run"):
# widget messages on the main shell, not on a kernel subshell's thread beside the running cell.
LAB_SETTINGS := $(VENV)/share/jupyter/lab/settings/overrides.d/causal-wsss.json

$(LAB_SETTINGS): notebooks/lab-settings/causal-wsss.json $(STAMP)
	mkdir -p $(dir $@)
	cp $< $@

venv: $(STAMP) $(LAB_SETTINGS)

demo: $(STAMP) alloc-deps
	$(BIN)/causal-wsss demo

test: $(STAMP) $(LAB_SETTINGS) browser-deps crf-deps alloc-deps layers
	$(BIN)/python -m pytest -q

# The import contracts of pyproject.toml ([tool.importlinter]): layers, no cycles, computation
# free of plotting; a new upward import or cycle fails here (and so in CI).
layers: $(STAMP)
	$(BIN)/lint-imports --no-logo

# The one real-browser test needs Debian's chromium and the playwright package (never
# `playwright install`); without them (no root, no apt) it is skipped with the reason.
browser-deps: $(STAMP)
	-@command -v chromium >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null)
	-@$(BIN)/python -c "import playwright" 2>/dev/null || $(BIN)/pip install -q "playwright>=1.45"

# tcmalloc (Debian's libtcmalloc-minimal4): the command line re-executes itself with it
# preloaded, 1.11x a CPU round with the same numbers (docs/benchmarks.md, "The memory
# allocator"); without it (no root, no apt, not Linux) everything runs on malloc.
alloc-deps:
	-@$(PY) -c "import ctypes.util, sys; sys.exit(not ctypes.util.find_library('tcmalloc_minimal'))" 2>/dev/null || (apt-get install -y -qq libtcmalloc-minimal4 >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq libtcmalloc-minimal4 >/dev/null))

# The dense CRF (pseudo.refine=crf, pseudo.ir_crf=true) is an optional extra built from source
# (pydensecrf2, about 2 minutes); if it cannot be built its tests are skipped with the reason.
crf-deps: $(STAMP)
	-@$(BIN)/python -c "import pydensecrf.densecrf" 2>/dev/null || $(BIN)/pip install -q -e ".[crf]"

lint: $(STAMP) layers
	$(BIN)/ruff check causal_wsss tests bench

clean:
	rm -rf $(VENV) .pytest_cache
