# llmseg: stage one (LLM subclasses) and stage two (segmentation + mIoU), linked by these targets.
# Every variable can be overridden: make evaluate DATASET=pascal_context METHOD=llm-supervision

PYTHON   ?= python3
VENV     ?= .venv
BIN      := $(VENV)/bin
LLMSEG   := $(BIN)/llmseg

DATASET  ?= pascal_voc
K        ?= 5
BACKEND  ?= openai
LLM      ?= gpt-4o-mini
BASE_URL ?=
LABEL_SET ?= label_sets/$(DATASET)/top$(K).json
METHOD   ?= dense
BACKBONE ?= openclip:ViT-B-16
# SimSeg takes CHECKPOINT, open_clip backbones take PRETRAINED; presets belong to METHOD=dense.
PRETRAINED ?= $(if $(filter simseg,$(BACKBONE)),,openai)
CHECKPOINT ?=
PRESET   ?= $(if $(filter dense,$(METHOD)),sclip,)
ASSEMBLY ?=
DATA_ROOT ?= data
DEVICE   ?= cpu
IMAGES   ?=
CLASSES  ?=
OUT      ?=
PYTEST_ARGS ?=
ARGS     ?=
# The tested versions: `make install` pins every package, transitive ones included, to requirements/lock.txt.
# LOCK= (empty) installs the newest releases pyproject.toml's ranges allow instead (CI's second world).
LOCK     ?= requirements/lock.txt
EXTRAS   ?= dev

.PHONY: install test lint lock subclasses evaluate segment bench demo clean help

help:
	@echo "targets: install test lint lock subclasses evaluate segment bench demo clean"
	@echo "  make demo                                  offline end-to-end run on the bundled demo benchmark"
	@echo "  make subclasses DATASET=coco_stuff         stage one with BACKEND=$(BACKEND) LLM=$(LLM)"
	@echo "  make evaluate DATASET=pascal_voc           stage two: METHOD=$(METHOD) BACKBONE=$(BACKBONE) PRESET=$(PRESET)"
	@echo "  make segment IMAGES='a.jpg b.jpg' CLASSES='cat, dog'"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip

$(VENV)/.installed: pyproject.toml $(LOCK) | $(BIN)/python
	$(BIN)/python -m pip install $(if $(LOCK),-c $(LOCK),--upgrade) -e '.[$(EXTRAS)]'
	touch $@

install: $(VENV)/.installed

# $(call opt,--flag,VALUE): the flag only when VALUE is set.
opt = $(if $(2),$(1) $(2),)

# Fails with a clear message when the sub-command's stage is not built yet.
define require
	@$(LLMSEG) $(1) --help >/dev/null 2>&1 || { echo "error: 'llmseg $(1)' is not available: $(2) is not built yet" >&2; exit 2; }
endef

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check shared stage1_llm stage2_segment tests benchmarks tools
	$(BIN)/deptry . --no-ansi
	$(BIN)/python tools/mypy_llmseg.py
	$(BIN)/python tools/lint_imports.py
	$(BIN)/python tools/lint_structure.py

# Recompile the lock from pyproject.toml's ranges: every extra, Linux/macOS/Windows, Python 3.10 and newer.
lock: install
	$(BIN)/python -m pip install --quiet uv
	$(BIN)/uv pip compile pyproject.toml --universal --python-version 3.10 --all-extras \
	  -c requirements/lock-constraints.txt --upgrade -o requirements/lock.txt

subclasses: install
	$(call require,subclasses,stage one)
	$(LLMSEG) subclasses $(DATASET) --k $(K) --backend $(BACKEND) --model $(LLM) $(if $(BASE_URL),--base-url $(BASE_URL),)

evaluate: install
	$(call require,evaluate,stage two)
	$(LLMSEG) evaluate --dataset $(DATASET) --data-root $(DATA_ROOT) --method $(METHOD) --backbone $(BACKBONE) \
	  $(call opt,--pretrained,$(PRETRAINED)) $(call opt,--checkpoint,$(CHECKPOINT)) $(call opt,--preset,$(PRESET)) \
	  $(call opt,--label-set,$(LABEL_SET)) $(call opt,--assembly,$(ASSEMBLY)) --device $(DEVICE) $(call opt,--out,$(OUT)) $(ARGS)

segment: install
	$(call require,segment,stage two)
	@test -n "$(IMAGES)" || { echo "error: give IMAGES='photo.jpg ...' and CLASSES='cat, dog'" >&2; exit 2; }
	$(LLMSEG) segment $(IMAGES) --classes "$(CLASSES)" --method $(METHOD) --backbone $(BACKBONE) \
	  $(call opt,--pretrained,$(PRETRAINED)) $(call opt,--checkpoint,$(CHECKPOINT)) $(call opt,--preset,$(PRESET)) \
	  --device $(DEVICE) --out $(if $(OUT),$(OUT),out)

bench: install
	@test -d benchmarks && ls benchmarks/bench_*.py >/dev/null 2>&1 || { echo "error: no benchmarks yet" >&2; exit 2; }
	for script in benchmarks/bench_*.py; do $(BIN)/python $$script || exit 1; done

demo: install
	$(call require,demo,the demo world)
	$(LLMSEG) demo run

clean:
	rm -rf .pytest_cache .ruff_cache .mypy_cache .hypothesis .venv-latest build *.egg-info results/demo .cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
