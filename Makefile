# The two commands a fresh machine needs: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv demo test bench lint clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check torch==2.14.1 torchaudio==2.11.0
	$(BIN)/pip install -q --disable-pip-version-check -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

# The main job on the embedded clips, CPU: an Optuna study of the DS1 attack with two workers sharing one
# SQLite file, the best trial exported as a run config, a report, and the command to inspect it.
demo: $(STAMP)
	$(BIN)/asr-recon data
	$(BIN)/asr-recon study launch studies/demo.yaml --workers 2 --storage sqlite:///results/demo.db
	$(BIN)/asr-recon study export --storage sqlite:///results/demo.db --study-name demo -o results/demo-best.yaml
	$(BIN)/asr-recon study report --storage sqlite:///results/demo.db --study-name demo --out results/demo-report
	@echo
	@echo "best config: results/demo-best.yaml  (repeat it: $(BIN)/asr-recon run --config results/demo-best.yaml)"
	@echo "report:      results/demo-report/summary.md"
	@echo "dashboard:   $(BIN)/asr-recon dashboard --storage sqlite:///results/demo.db"

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python -m bench

lint: $(STAMP)
	$(BIN)/ruff check .

clean:
	rm -rf runs results .pytest_cache
