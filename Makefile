# The workbook's two everyday commands (see README.md):
#   make workbook   run every chapter in full mode -> build/notebooks/, build/report.md
#   make test       run the whole test suite (unit, property, notebooks in smoke mode)
#   make html       the executed chapters and the report as static HTML -> build/html/ (after make workbook)
# Both create .venv on first use. `make lab` opens the chapters in JupyterLab.

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

.PHONY: workbook test lab smoke html install clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# torch first, pinned: it is the local CPU wheel (an unpinned torch pulls CUDA packages).
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -c constraints.txt -e ".[test,lab]"
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (workbook)"
	touch $(STAMP)

install: $(STAMP)

workbook: $(STAMP)
	$(PY) -m toolkit.runner --out build

smoke: $(STAMP)
	$(PY) -m toolkit.runner --out build/smoke --smoke

test: $(STAMP)
	$(PY) -m pytest

html: $(STAMP)
	$(PY) -m toolkit.html build

lab: $(STAMP)
	$(VENV)/bin/jupyter lab notebooks/

clean:
	rm -rf build
