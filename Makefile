# Two commands a newcomer needs: `make run` (set up, run the main job) and `make test` (set up, run the tests).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TIER ?= small
OUT ?= results
# The CPU wheel of this pin is what the project is developed and tested with; elsewhere pip fetches the same
# version from the registry. Installing it first stops the looser `torch>=2.4` of pyproject from pulling a
# multi-GB CUDA build.
TORCH_PIN ?= torch==2.13.0
STAMP := $(VENV)/.modscale-installed
DOCS_STAMP := $(VENV)/.modscale-docs-installed

.PHONY: venv run test docs wheel-check lint bench paper-scale clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH_PIN)"
	$(BIN)/python -m pip install -q -e ".[dev,ray]"
	@touch $(STAMP)

# CIFAR-10 is fetched once (163 MB, into the data home) when no copy is found; without network the CIFAR
# experiments are skipped and modscale exits 3 (make reports "Error 3").
run: venv
	$(BIN)/modscale reproduce --tier $(TIER) --out $(OUT) --fetch-data

test: venv
	$(BIN)/python -m pytest -q
	@$(MAKE) --no-print-directory docs
	@$(MAKE) --no-print-directory wheel-check

# The documentation site (mkdocs.yml): the README, the guides, the results with their figures and the API
# reference from the docstrings, built into site/ (open site/index.html; no server needed). Strict: a broken
# link, a page missing from the nav, an unresolved cross-reference or a docstring that does not parse fails
# the build. Its packages are the [docs] extra, installed here on first use.
docs: $(DOCS_STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict
	@echo "docs: site/index.html"

$(DOCS_STAMP): $(STAMP)
	$(BIN)/python -m pip install -q -e ".[docs]"
	@touch $(DOCS_STAMP)

# The wheel as a user installs it: built, checked to carry the whole package and nothing of tests or data,
# installed into a fresh virtual environment under /tmp, then `modscale theory`, `modscale list` and a
# smoke experiment of each family (theory, sine, CIFAR on ../shared/data/cifar10) run from another folder.
wheel-check: venv
	.ci/wheel-check $(BIN)/python "$(TORCH_PIN)"

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Each benchmark prints its figures and ends with one key=value line; benchmarks/README.md records them.
bench: venv
	$(BIN)/python benchmarks/bench_theory.py
	$(BIN)/python benchmarks/bench_stacked.py
	$(BIN)/python benchmarks/bench_kernel_rule.py
	$(BIN)/python benchmarks/bench_cifar_batches.py
	$(BIN)/python benchmarks/bench_cifar_train.py

# The paper tier wherever a 2-core CPU can run it (hours; resumable): docs/paper-scale/reproduce.sh.
paper-scale: venv
	MODSCALE=$(BIN)/modscale bash docs/paper-scale/reproduce.sh

clean:
	rm -rf $(VENV) $(OUT) site .pytest_cache .ruff_cache .hypothesis
