# bastionless.ssm — everything runs from .venv, created here; nothing needs a global install.
#
#   make demo    start the offline lab, run site.yml and an ad-hoc command over Session Manager, stop the lab
#   make test    the whole suite: unit, lab, integration, lint, sanity, build-and-install

SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(CURDIR)/$(VENV)/bin
STAMP := $(VENV)/.installed
COLLECTIONS := $(CURDIR)/$(VENV)/collections
VERSION := $(shell sed -n 's/^version: *//p' galaxy.yml)
TARBALL := build/bastionless-ssm-$(VERSION).tar.gz
export ANSIBLE_COLLECTIONS_PATH := $(COLLECTIONS)
export SSM_LAB_STATE_DIR ?= $(CURDIR)/.lab
PYTEST := $(BIN)/python -m pytest -p no:cacheprovider

.PHONY: help venv system-deps collection demo test unit lab-test integration molecule molecule-scenarios lint sanity \
        install-check \
        bench-inventory bench-transport lab-up lab-down lab-status clean

help:
	@sed -n 's/^#   //p' Makefile

venv: $(STAMP)

$(STAMP): requirements.txt test-requirements.txt tests/lab/pyproject.toml
	@$(MAKE) --no-print-directory system-deps
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet 'ansible>=10' -r requirements.txt -r test-requirements.txt -e tests/lab
	@touch $@

# What the lab needs from the machine: util-linux (unshare, setpriv), curl (the connection's downloads on the
# nodes), sudo (become on the nodes), openssh-server (sshd -i for AWS-StartSSHSession, never listening) and
# openssh-client (ssh over SSM). Installed from Debian's packages when missing and we are root.
system-deps:
	@missing=""; for tool in unshare setpriv curl sudo sshd ssh ssh-keygen; do command -v $$tool >/dev/null || [ -x /usr/sbin/$$tool ] || missing="$$missing $$tool"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing system packages for:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq util-linux curl sudo openssh-server openssh-client >/dev/null; \
	  else echo "missing:$$missing (install them, then rerun)" >&2; exit 1; fi; \
	fi

$(TARBALL): $(STAMP) galaxy.yml $(shell git ls-files plugins roles playbooks meta docs 2>/dev/null)
	@mkdir -p build
	$(BIN)/ansible-galaxy collection build --force --output-path build . >/dev/null
	@echo "built $(TARBALL)"

collection: $(TARBALL)
	$(BIN)/ansible-galaxy collection install --offline --force -p $(COLLECTIONS) $(TARBALL) >/dev/null
	@echo "installed bastionless.ssm $(VERSION) into $(COLLECTIONS)"

demo: collection
	PATH="$(BIN):$$PATH" bash tests/lab/demo.sh

# Two streams at once, so that both cores stay busy: pytest, its test modules spread over TEST_WORKERS processes
# (each module on one of them, with its own lab; 3 keeps two cores busy through the labs' waits), and beside it lint,
# sanity, the install check and molecule, whose output goes to build/checks.log and is shown when they end.
TEST_WORKERS ?= 3
CHECKS_LOG := build/checks.log

test: collection
	@mkdir -p build; rm -f $(CHECKS_LOG); start=$$(date +%s); \
	( $(MAKE) --no-print-directory -k lint sanity install-check molecule-scenarios > $(CHECKS_LOG) 2>&1; \
	  echo "$$?" > $(CHECKS_LOG).rc ) & checks=$$!; \
	PATH="$(BIN):$$PATH" $(PYTEST) -n $(TEST_WORKERS) --dist loadfile --durations=20 tests/lab/tests $(wildcard tests/unit) \
	  tests/integration; pytest_rc=$$?; \
	echo "pytest ended after $$(( $$(date +%s) - start )) s; waiting for lint, sanity, install-check, molecule"; \
	wait $$checks; checks_rc=$$(cat $(CHECKS_LOG).rc 2>/dev/null || echo 1); \
	echo "--- lint, sanity, install-check, molecule ($(CHECKS_LOG)): errors, then the end ---"; \
	grep -E 'ERROR|FAILED|fatal:|CRITICAL|Error [0-9]' $(CHECKS_LOG) | head -n 40; \
	grep -v -e '^\s*$$' $(CHECKS_LOG) | tail -n 30; \
	echo "make test: pytest exit $$pytest_rc, checks exit $$checks_rc, $$(( $$(date +%s) - start )) s in all"; \
	[ "$$pytest_rc" = 0 ] && [ "$$checks_rc" = 0 ]

unit: $(STAMP)
	$(PYTEST) $(or $(wildcard tests/unit),--co -q tests/lab/tests/test_reachability.py)

lab-test: $(STAMP)
	PATH="$(BIN):$$PATH" $(PYTEST) -n $(TEST_WORKERS) --dist loadfile tests/lab/tests

integration: collection
	PATH="$(BIN):$$PATH" $(PYTEST) -n $(TEST_WORKERS) --dist loadfile tests/integration

# The roles' molecule scenarios (extensions/molecule): each starts its own lab, then check, converge, idempotence.
molecule: collection
	@$(MAKE) --no-print-directory molecule-scenarios

# The scenarios on the collection as installed, without installing it again: make test runs them beside pytest,
# whose playbooks read the installed collection (a reinstall under them loses their module_utils mid-run).
molecule-scenarios:
	PATH="$(BIN):$$PATH" $(BIN)/molecule test --all

lint: $(STAMP)
	$(BIN)/yamllint -s .
	$(BIN)/antsibull-changelog lint
	PATH="$(BIN):$$PATH" $(BIN)/ansible-lint --offline -q

sanity: $(STAMP)
	VENV=$(VENV) SANITY_EXCLUDE=tests/lab tests/run-sanity.sh

install-check: $(STAMP)
	VENV=$(VENV) tests/collection-install.sh

# Not part of `make test`: bastionless.ssm.managed_nodes against amazon.aws.aws_ec2 (use_ssm_inventory) on labs of
# 1,000 and 10,000 nodes with 0.1 s per API call; prints figures. BENCH_ARGS="--sizes 100" for a quick run.
bench-inventory: collection
	PATH="$(BIN):$$PATH" $(BIN)/python tests/benchmarks/inventory.py $(BENCH_ARGS)

bench-transport: collection
	PATH="$(BIN):$$PATH" $(BIN)/python tests/benchmarks/transport.py $(BENCH_ARGS)

lab-up: $(STAMP)
	@$(BIN)/ssm-lab up --nodes 3 --provisioned > $(SSM_LAB_STATE_DIR).env
	@echo "lab up; run: source $(SSM_LAB_STATE_DIR).env"

lab-status: $(STAMP)
	$(BIN)/ssm-lab status

lab-down:
	@if [ -x $(BIN)/ssm-lab ]; then $(BIN)/ssm-lab down; fi

clean: lab-down
	rm -rf .lab .lab.env build tests/output .pytest_cache
