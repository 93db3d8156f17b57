# txswitch: every developer and CI command goes through here.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DATA_DIR ?= var
SIM_TARGET ?= 127.0.0.1:50051

.PHONY: install run test lint typecheck unit proto bench sweep sim profile clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/txswitch serve --data-dir $(DATA_DIR) --demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest -q tests/unit

test: lint typecheck
	$(BIN)/pytest -q -n 3

proto: $(STAMP)
	PATH=$(BIN):$$PATH $(BIN)/python -m grpc_tools.protoc -I. --python_out=. --grpc_python_out=. \
		--mypy_out=. --mypy_grpc_out=. protocols/wire/*.proto

bench: $(STAMP)
	$(BIN)/python -m terminal_sim.bench

sweep: $(STAMP)
	$(BIN)/python -m terminal_sim.sweep

profile: $(STAMP)
	$(BIN)/python -m terminal_sim.profile

sim: $(STAMP)
	$(BIN)/txswitch-sim --target $(SIM_TARGET) --data-dir $(DATA_DIR) --terminals 20 --duration-s 20

clean:
	rm -rf $(VENV) $(DATA_DIR) .mypy_cache .ruff_cache .pytest_cache bench-out sim-out profile-out
