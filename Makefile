# The two set-up commands of the README: `make quickstart` and `make test`.
# Each creates the virtual environment in .venv and installs the package on first use.

VENV    ?= .venv
PYTHON  ?= python3
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed-stamp
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: install test test-fast quickstart system-deps clean-reports

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

# Debian packages: Fashion-MNIST (real data for the quickstart and the CI regression check)
# and Chromium (the browser test). Best effort: without root or apt, the tests that need them
# skip with a reason and the quickstart asks for FASHION_MNIST_ROOT.
system-deps:
	@need=""; \
	[ -n "$${FASHION_MNIST_ROOT:-}" ] || [ -d /usr/share/datasets/fashion-mnist ] || need="$$need dataset-fashion-mnist"; \
	command -v chromium >/dev/null 2>&1 || need="$$need chromium"; \
	if [ -z "$$need" ]; then exit 0; fi; \
	if [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then \
	  echo "note: cannot install$$need (needs root and apt-get); dependent tests skip" >&2; exit 0; fi; \
	echo "installing Debian packages:$$need"; \
	(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$need) >/dev/null \
	  || echo "note: apt-get install$$need failed; dependent tests skip" >&2

test: install system-deps
	$(PY) -m pytest -q

# The inner loop while developing (not a set-up command): no slow, browser or CUDA tests, stop at
# the first failure. `make test` stays what CI runs.
test-fast: install
	$(PY) -m pytest -q -x -m "not slow and not browser and not needs_cuda"

# Training results depend on the kernels' instruction set (see robustbench_pp/train/reproducibility.py):
# on an x86 CPU with AVX2 the quickstart pins torch's, oneDNN's and MKL's kernels to AVX2, so a CPU
# with AVX-512 takes the same code paths as one without. Only where AVX2 exists: torch does not
# check, and ATEN_CPU_CAPABILITY=avx2 on a CPU without it dies with "Illegal instruction".
QUICKSTART_ISA := $(shell grep -qw avx2 /proc/cpuinfo 2>/dev/null && echo ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_CBWR=AVX2)

# The quickstart is a study (studies/quickstart.toml): a second run only renders the report again.
quickstart: install system-deps
	$(QUICKSTART_ISA) $(PY) -m robustbench_pp.cli study studies/quickstart.toml
