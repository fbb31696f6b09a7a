# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TRANSFORMERS_NO_ADVISORY_WARNINGS := 1
export TOKENIZERS_PARALLELISM := false
export MPLBACKEND := Agg
# pip compiles nothing at install (--no-compile): byte-compiling every module of torch, transformers, JupyterLab and
# gradio was most of the install's 2.5 minutes. Python compiles what is imported instead, once, into __pycache__;
# where PYTHONDONTWRITEBYTECODE is set it would compile the same modules again in every process, so make unsets it.
unexport PYTHONDONTWRITEBYTECODE

.PHONY: install demo lab test test-unit test-notebooks test-scales notebooks bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)

# torch first and pinned (a CPU wheel; unpinned torch pulls a CUDA build), then the package.
$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install -q --no-compile --upgrade pip
	$(BIN)/pip install -q --no-compile torch==2.13.0
	$(BIN)/pip install -q --no-compile -e '.[dev]'
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/llavamed-lite run --scale tiny --run-dir runs/demo

# JupyterLab on this machine only, in notebooks/ (so a notebook's run_dir "runs/tiny" is notebooks/runs/tiny, as with
# papermill --cwd notebooks), with the venv's python3 kernel. MPLBACKEND is left to the kernel: Agg hides the figures.
# --allow-root: containers often run as root, where JupyterLab otherwise refuses to start.
lab: $(STAMP)
	@echo "make lab: open the http://127.0.0.1:...?token=... URL that JupyterLab prints below; Ctrl-C twice stops it."
	env -u MPLBACKEND $(BIN)/jupyter-lab --ServerApp.ip=127.0.0.1 --ServerApp.root_dir=notebooks \
		--MappingKernelManager.default_kernel_name=python3 --allow-root

# The notebooks run as a smoke test here: LLAVAMED_LITE_QUICK=1 caps each tiny training stage at 20 steps on a smaller
# tiny world (config.py, QUICK_*), so they take minutes in `make test`; `make demo` and `make notebooks` run the full
# tiny recipe. They run from a copy in build/, so the smoke test's runs never replace a full run in notebooks/runs/
# (where a notebook run by hand writes).
QUICK_NOTEBOOKS := build/quick-notebooks
# In make test a notebook's kernel is a fork of one process that has already imported torch, transformers and the
# package (llavamed_lite/warm_kernel.py): each kernel used to spend 10-15 s on them, 24 kernels in all.
WARM := $(BIN)/python -m llavamed_lite.warm_kernel run --

# The unit tests, then the quick notebooks beside the two scales. The quick notebooks are the longest chain (one
# notebook after another on one core), so the scales run at a lower priority (LOWER) and fill the other core around
# it. Every process has one thread: processes of 2 threads each on 2 cores wait on each other. Running the unit tests
# beside the notebooks too left no core idle, but tests that wait on servers and browsers then failed now and then
# (docs/testing.md has the figures). --output-sync prints each target's output whole when it ends.
test: $(STAMP)
	$(MAKE) --no-print-directory test-unit
	OMP_NUM_THREADS=1 $(MAKE) -j2 --output-sync=target test-notebooks test-scales LOWER="nice -n 5"

# On 2 workers (pytest-xdist): alone the suite keeps about 1.1 of 2 cores busy.
test-unit: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest tests -p no:cacheprovider -q -n 2 --dist worksteal

test-notebooks: $(STAMP)
	rm -rf $(QUICK_NOTEBOOKS) && mkdir -p $(QUICK_NOTEBOOKS) && cp notebooks/*.ipynb $(QUICK_NOTEBOOKS)/
	LLAVAMED_LITE_QUICK=1 $(WARM) $(BIN)/python -m pytest $(QUICK_NOTEBOOKS) --nbval-lax -p no:cacheprovider -q

# The GPU presets' path on the CPU: every notebook at `lora` (QLoRA, 4-bit) and at `full`, at their shapes (336 px,
# 576 image tokens, Mistral with a SentencePiece-style tokenizer) with miniature random-weight stand-ins for the hub
# models, in quick mode (a few steps, inputs that need no network: the curated chain and VQA-RAD). The two scales run
# side by side, one thread each (two processes of 2 threads each on 2 cores wait on each other); their logs are
# build/scales/*.log. Paths are absolute: the notebooks run in notebooks/.
MINI := build/mini
SCALES := build/scales

test-scales: $(STAMP)
	rm -rf $(MINI) $(SCALES) && $(BIN)/llavamed-lite make-mini --out $(MINI) && mkdir -p $(SCALES)
	pids=""; for scale in lora full; do \
		OMP_NUM_THREADS=1 $(LOWER) $(WARM) $(BIN)/llavamed-lite run --scale $$scale --run-dir $(SCALES)/$$scale \
			--quick --no-progress --set model.vision=$(CURDIR)/$(MINI)/vision --set model.lm=$(CURDIR)/$(MINI)/lm \
			> $(SCALES)/$$scale.log 2>&1 & pids="$$pids $$!"; \
	done; status=0; for pid in $$pids; do wait $$pid || status=1; done; \
	for scale in lora full; do echo "== $$scale"; tail -n 25 $(SCALES)/$$scale.log; done; exit $$status

# Re-execute the notebooks in place so the committed outputs are those of the tiny run; its metrics and times are
# committed beside them (notebooks/results/), and tests/test_readme_numbers.py checks the README's numbers against them.
notebooks: $(STAMP)
	$(BIN)/llavamed-lite run --scale tiny --run-dir runs/notebooks --in-place
	mkdir -p notebooks/results && cp notebooks/runs/tiny/metrics.json runs/notebooks/summary.json notebooks/results/

bench: $(STAMP)
	for f in benchmarks/*.py; do $(BIN)/python $$f || exit 1; done

clean:
	rm -rf runs $(QUICK_NOTEBOOKS) $(MINI) $(SCALES) .pytest_cache
