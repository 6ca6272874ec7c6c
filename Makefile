# bastionless.ssm — everything runs from .venv, created here; nothing needs a global install.
#
#   make demo    the README's lab blocks, command by command: .venv, the offline lab, site.yml and an ad-hoc command
#                over Session Manager, a check of the operator policy, a summary; then the lab is stopped
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
        install-check interop audit-report-browser pyssm-venv \
        bench-inventory bench-transport bench-fleet chaos lab-up lab-down lab-status clean

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
# nodes), sudo (become on the nodes), acl (setfacl, which Ansible's become to an unprivileged user needs; EC2's
# AMIs ship it), openssh-server (sshd -i for AWS-StartSSHSession, never listening) and openssh-client (ssh over
# SSM). Installed from Debian's packages when missing and we are root.
system-deps:
	@missing=""; for tool in unshare setpriv curl sudo setfacl sshd ssh ssh-keygen; do command -v $$tool >/dev/null || [ -x /usr/sbin/$$tool ] || missing="$$missing $$tool"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing system packages for:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq util-linux curl sudo acl openssh-server openssh-client >/dev/null; \
	  else echo "missing:$$missing (install them, then rerun)" >&2; exit 1; fi; \
	fi

$(TARBALL): $(STAMP) galaxy.yml $(shell git ls-files plugins roles playbooks meta docs 2>/dev/null)
	@mkdir -p build
	$(BIN)/ansible-galaxy collection build --force --output-path build . >/dev/null
	@echo "built $(TARBALL)"

collection: $(TARBALL)
	$(BIN)/ansible-galaxy collection install --offline --force -p $(COLLECTIONS) $(TARBALL) >/dev/null
	@echo "installed bastionless.ssm $(VERSION) into $(COLLECTIONS)"

# The README's lab blocks as a new user types them (tests/lab/demo.sh reads them from README.md; the docs runner runs
# the README through make demo DEMO_ARGS="--keep-lab --env-file FILE"). Its first command is make venv collection,
# and it runs in the caller's environment without what this Makefile exports or make itself sets.
DEMO_ARGS ?=
demo:
	@env -u ANSIBLE_COLLECTIONS_PATH -u PYSSM_PYTHON -u MAKEFLAGS -u MAKELEVEL -u MFLAGS bash tests/lab/demo.sh $(DEMO_ARGS)

# Two streams at once, so that both cores stay busy: pytest, its test modules spread over TEST_WORKERS processes
# (each module on one of them, with its own lab; 3 keeps two cores busy through the labs' waits), and beside it lint,
# sanity, the install check and molecule, whose output goes to build/checks.log and is shown when they end. Each
# test's time is kept in build/pytest.xml (JUnit), for finding what to cut when make test grows.
TEST_WORKERS ?= 3
CHECKS_LOG := build/checks.log
# A client of Session Manager's data channel that nobody here wrote, for the lab's WebSocket: pyssm-client (PyPI,
# Apache-2.0, Python >= 3.12) in its own virtualenv; tests/lab/tests/test_lab_pyssm.py drives the lab with it.
PYSSM_VENV ?= .venv-pyssm
PYSSM_STAMP := $(PYSSM_VENV)/.installed
# The first Python >= 3.12 that runs (a pyenv shim for a version that is not active does not).
PYTHON312 ?= $(shell for p in $$(ls -d $$HOME/.pyenv/versions/3.1[2-9]*/bin/python3 2>/dev/null) \
  $$(command -v python3.13 python3.12 2>/dev/null); do \
  "$$p" -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null && { echo "$$p"; break; }; done)
export PYSSM_PYTHON := $(CURDIR)/$(PYSSM_VENV)/bin/python

pyssm-venv: $(PYSSM_STAMP)

$(PYSSM_STAMP):
	@[ -n "$(PYTHON312)" ] || { echo "pyssm-venv: pyssm-client needs Python 3.12 or newer and no python3.12 was found; install one (pyenv install 3.12) or set PYTHON312=/path/to/python3.12" >&2; exit 1; }
	$(PYTHON312) -m venv $(PYSSM_VENV)
	$(PYSSM_VENV)/bin/pip install --quiet 'pyssm-client==0.2.0' boto3
	@touch $@

test: collection $(PYSSM_STAMP)
	@mkdir -p build; rm -f $(CHECKS_LOG); start=$$(date +%s); \
	( $(MAKE) --no-print-directory -k lint sanity install-check molecule-scenarios \
	  MOLECULE_SCENARIOS="$(TEST_MOLECULE_SCENARIOS)" > $(CHECKS_LOG) 2>&1; \
	  echo "$$?" > $(CHECKS_LOG).rc ) & checks=$$!; \
	PATH="$(BIN):$$PATH" $(PYTEST) -n $(TEST_WORKERS) --dist loadfile --durations=20 --junitxml=build/pytest.xml tests/lab/tests $(wildcard tests/unit) \
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

# The roles' molecule scenarios (extensions/molecule): each starts its own lab, then converge, idempotence, verify
# (check mode is asserted, with what each role predicts, in its pytest suite: tests/integration/test_role_*.py).
# The default scenario, which molecule reads before any run, starts no lab: it checks that every role has its scenario.
# make molecule runs them all (MOLECULE_SCENARIOS="-s agent" for one).
MOLECULE_SCENARIOS ?= --all
molecule: collection
	@$(MAKE) --no-print-directory molecule-scenarios

# make test runs only the default scenario, which checks without a lab that every role has its scenario. Every role's
# scenario repeats, with a lab of its own, what pytest asserts already: each role's second run changes nothing in its
# own suite (run_as_users, ssh_over_ssm, transfer_bucket, pull_association) or in test_site.py's second site.yml run
# (instance_role, vpc_endpoints, session_logging, operator_access, agent), and check mode and bad input are in the
# suites. make molecule runs them all: leaving them out of make test saves 9 labs and 60 playbook runs, about 10 of its
# CPU-minutes, on a machine whose two cores make test keeps busy.
TEST_MOLECULE_SCENARIOS := -s default

# The scenarios on the collection as installed, without installing it again: make test runs them beside pytest,
# whose playbooks read the installed collection (a reinstall under them loses their module_utils mid-run). Their
# module runs on the controller go to a warm interpreter, as pytest's do (tests/lab/ssm_lab/harness/warm).
# Each scenario's plays reach its own lab through the AWS config file the scenario writes: an AWS_ENDPOINT_URL left in
# the shell by another lab (eval "$$(ssm-lab up ...)") would take precedence, so it is dropped here.
molecule-scenarios:
	env -u AWS_ENDPOINT_URL PATH="$(BIN):$$PATH" $(BIN)/python tests/lab/ssm_lab/harness/warm/run.py $(BIN)/molecule test \
	  $(MOLECULE_SCENARIOS)

# Not part of make test: the lab against AWS's own session-manager-plugin, built from its public source
# (github.com/aws/session-manager-plugin). The plugin's view of every session type, port forwarding in both modes,
# ssh with AWS-StartSSHSession as ProxyCommand, and site.yml over amazon.aws.aws_ssm and bastionless.ssm.session.
SESSION_MANAGER_PLUGIN ?=
interop: collection
	@if [ -z "$(SESSION_MANAGER_PLUGIN)" ]; then \
	  echo "make interop needs AWS's plugin: make interop SESSION_MANAGER_PLUGIN=/path/to/session-manager-plugin" >&2; exit 2; fi
	@if [ ! -x "$(SESSION_MANAGER_PLUGIN)" ]; then \
	  echo "make interop: SESSION_MANAGER_PLUGIN=$(SESSION_MANAGER_PLUGIN) is not an executable file" >&2; exit 2; fi
	@echo "interop with $$($(abspath $(SESSION_MANAGER_PLUGIN)) --version) at $(abspath $(SESSION_MANAGER_PLUGIN))"
	SESSION_MANAGER_PLUGIN="$(abspath $(SESSION_MANAGER_PLUGIN))" PATH="$(BIN):$$PATH" $(PYTEST) -n 2 --dist loadfile \
	  tests/lab/tests/test_lab_plugin.py tests/lab/tests/test_lab_sessions.py tests/lab/tests/test_lab_port_forwarding.py \
	  tests/lab/tests/test_lab_instance_connect.py tests/lab/tests/test_lab_preferences.py tests/integration/test_site.py

# Not part of make test: the audit report's page (playbooks/audit-report.yml, plugins/filter/audit_report.py) in a
# real headless browser, Debian's chromium-headless-shell (installed when missing and we are root; about 220 MB).
# The browser costs a few seconds, which make test does not spend.
audit-report-browser: $(STAMP)
	@command -v chromium-headless-shell >/dev/null || { [ "$$(id -u)" = 0 ] && DEBIAN_FRONTEND=noninteractive \
	  apt-get install -y -qq --no-install-recommends chromium-headless-shell >/dev/null; } || \
	  { echo "make audit-report-browser needs chromium-headless-shell: apt-get install chromium-headless-shell" >&2; exit 2; }
	$(PYTEST) tests/browser

lint: $(STAMP)
	$(BIN)/yamllint -s .
	$(BIN)/antsibull-changelog lint
	PATH="$(BIN):$$PATH" $(BIN)/ansible-lint --offline -q

sanity: $(STAMP)
	VENV=$(VENV) SANITY_EXCLUDE="tests/lab tests/interop" tests/run-sanity.sh

install-check: $(STAMP)
	VENV=$(VENV) tests/collection-install.sh

# Not part of `make test`: bastionless.ssm.managed_nodes against amazon.aws.aws_ec2 (use_ssm_inventory) on labs of
# 1,000 and 10,000 nodes with 0.1 s per API call; prints figures. BENCH_ARGS="--sizes 100" for a quick run.
bench-inventory: collection
	PATH="$(BIN):$$PATH" $(BIN)/python tests/benchmarks/inventory.py $(BENCH_ARGS)

# Not part of `make test`: ssm_command, an ad-hoc command and an association on 1,000 light lab nodes
# (tests/benchmarks/fleet.py, docs/performance.md). BENCH_ARGS="--nodes 50" for a quick run.
bench-fleet: collection
	PATH="$(BIN):$$PATH" $(BIN)/python tests/benchmarks/fleet.py $(BENCH_ARGS)

# Every transport on 10 lab nodes: playbook time, first-task latency, per-task time, a 100 MiB copy
# (tests/benchmarks/transport.py, docs/performance.md). SESSION_MANAGER_PLUGIN=/path/to/AWS's plugin for the plugin
# paths as users have them (the lab's stand-in sends larger messages); BENCH_ARGS="--nodes 2 --copy-mib 20" to be quick.
bench-transport: collection
	$(BIN)/pip install --quiet -r tests/benchmarks/requirements-bench.txt
	PATH="$(BIN):$$PATH" $(BIN)/python tests/benchmarks/transport.py $(BENCH_ARGS)

# Not part of `make test`: site.yml and its second run on 6 lab nodes, both connections, with 30% of AWS calls
# throttled and one agent dropped for 20 s mid-run (docs/reliability.md). CHAOS_ARGS="--nodes 2" for a quick run.
chaos: collection
	PATH="$(BIN):$$PATH" $(BIN)/python tests/benchmarks/chaos.py $(CHAOS_ARGS)

lab-up: $(STAMP)
	@$(BIN)/ssm-lab up --nodes 3 --provisioned > $(SSM_LAB_STATE_DIR).env
	@echo "lab up; run: source $(SSM_LAB_STATE_DIR).env"

lab-status: $(STAMP)
	$(BIN)/ssm-lab status

lab-down:
	@if [ -x $(BIN)/ssm-lab ]; then $(BIN)/ssm-lab down; fi

clean: lab-down
	rm -rf .lab .lab.env build tests/output .pytest_cache
