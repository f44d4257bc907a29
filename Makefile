# The two commands of the README. Each does its own set-up on a fresh Debian 12 machine (as root)
# and reuses what is already there: .venv, the Docker engine, the lab images (cached by recipe hash).
SHELL := /bin/bash
VENV  := .venv
PY    := $(VENV)/bin/python
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export CCDRILL_ROOT := $(CURDIR)
STAMP := $(VENV)/.installed-$(shell cat requirements.txt constraints.txt pyproject.toml | sha256sum | cut -c1-12)

.PHONY: drill test setup venv engine images lint unit features failover migration molecule rehearsal bench clean

## make drill: bring up the two-site lab, run the plan's rehearsal, write the report under reports/.
drill: setup
	$(VENV)/bin/ccdrill drill

## make test: lint and unit tests side by side (each uses one core), then four labs side by side (the
## tox environments), each on its own subnets: the IPC upgrade (baseline, weekend, target layout), the
## target layout's fault drills, the migration batches, and the molecule lab rehearsal.
test: setup
	@rc=0; $(VENV)/bin/tox run-parallel -p 2 --parallel-no-spinner -e lint,unit || rc=$$?; \
	$(VENV)/bin/tox run-parallel -p all --parallel-no-spinner -e features,failover,migration,molecule || rc=$$?; \
	exit $$rc

setup: venv engine images

venv: $(STAMP)
$(STAMP):
	scripts/host-packages
	rm -rf $(VENV)
	"$$(scripts/find-python)" -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -r requirements.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $@

engine: venv
	$(VENV)/bin/ccdrill engine

images: engine
	$(VENV)/bin/ccdrill images

lint unit features failover migration molecule rehearsal: setup
	$(VENV)/bin/tox run -e $@

bench: setup
	for b in bench/*.py; do $(PY) $$b || exit 1; done

clean:
	-$(VENV)/bin/ccdrill lab down
	rm -rf $(VENV) .tox reports
