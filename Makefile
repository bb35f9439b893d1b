# Two commands a newcomer needs (both idempotent; they create .venv on first use):
#   make demo   set up, then run the embedded quickstart sweep (local Ray, bundled images, CPU, minutes)
#   make test   set up, then lint and run the whole test suite (what CI runs)
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
# torch/torchvision pinned to the builds this project is tested with (a CUDA build that also runs on CPU).
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1

.PHONY: setup demo test lint bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH_PINS)
	$(BIN)/python -m pip install -q -e ".[test]"
	touch $(STAMP)

demo: setup
	$(BIN)/csrgan sweep experiments/quickstart.yaml

test: setup
	$(BIN)/ruff check csrgan tests benchmarks
	$(BIN)/python -m pytest -q --durations=25  # the 25 slowest tests, to keep CI under ~30 min

bench: setup
	$(BIN)/python benchmarks/train_step.py --size cpu-small

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
