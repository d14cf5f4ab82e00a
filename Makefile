# make run   - set up everything on a fresh Debian 12 machine and run the daemon on config.yaml
# make test  - set up everything the tests need (Debian packages, .venv, Home Assistant in
#              .ha-venv) and run the whole suite; each install is a quick no-op once done
# make check - validate config.yaml;  make lint - ruff

PYTHON ?= python3
VENV ?= .venv
CONFIG ?= config.yaml
# torch wheels: pinned to builds known to work with birder's torchvision; override for
# another platform, e.g. make run TORCH="torch torchvision --index-url <a CPU wheel index>"
TORCH ?= torch==2.14.1 torchvision==0.29.1
BIN := $(VENV)/bin
SAMPLE := samples/feeder.mp4

.PHONY: run test check lint deps-run deps-test ha-env clean

run: deps-run $(BIN)/.installed $(SAMPLE)
	$(BIN)/camtrap run --config $(CONFIG)

check: $(BIN)/.installed
	$(BIN)/camtrap check --config $(CONFIG)

test: deps-test $(BIN)/.installed ha-env
	$(BIN)/ruff check camtrap tests bench
	$(BIN)/python -m pytest -q -ra

lint: $(BIN)/.installed
	$(BIN)/ruff check camtrap tests bench

deps-run:
	@scripts/install-debian-deps.sh run

deps-test:
	@scripts/install-debian-deps.sh test

# a real Home Assistant (2025.4.4, Python 3.13) in .ha-venv for the HA tests; the script
# keeps a stamp of what it installed and returns at once when that is still what is wanted
ha-env:
	@scripts/install-homeassistant.sh

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $@

$(SAMPLE): scripts/make-sample-clip.sh
	mkdir -p $(dir $@)
	scripts/make-sample-clip.sh $@

clean:
	rm -rf $(VENV) samples state *.egg-info
