# metasparse: `make demo` sets up .venv/ and runs the main job; `make test` sets up and runs the checks.
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
# Written last by the setup recipe, so a killed install leaves no marker and is redone.
READY := $(VENV)/.metasparse-ready
# learn2learn 0.2.0 ships C files that do not compile on Python 3.11: rebuild them from its .pyx with a
# current Cython, and install only its real import-time needs (its declared ones downgrade numpy and cvxpy).
L2L_BUILD := --no-deps --no-build-isolation --config-settings="--global-option=build_ext"

.PHONY: demo test setup lint docs clean

demo: $(READY)
	$(VENV)/bin/metasparse demo

test: $(READY)
	$(VENV)/bin/ruff check metasparse tests benchmarks
	$(PY) -m pytest
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir site

setup: $(READY)

$(READY): setup.cfg pyproject.toml Makefile
	@rm -f $(READY)
	@$(PY) -c "import sys; assert sys.version_info >= (3, 11)" 2>/dev/null || \
	    { echo "creating $(VENV) with $(PYTHON)"; rm -rf $(VENV); $(PYTHON) -m venv $(VENV); }
	$(PIP) install "torch==2.14.1" "torchvision==0.29.1" "setuptools>=70.1" "cython>=3" \
	    scipy requests tqdm cloudpickle
	$(PIP) install --no-deps gym==0.26.2
	@$(PY) -c "import learn2learn" 2>/dev/null || \
	    $(PIP) install --no-cache-dir --force-reinstall $(L2L_BUILD) learn2learn==0.2.0
	$(PIP) install --no-build-isolation -e ".[study,dev,docs]"
	$(PY) -c "import metasparse, learn2learn, cvxpylayers, cvxpy, torch, torchvision, tqdm"
	@touch $(READY)

docs: $(READY)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir site

clean:
	rm -rf $(VENV) site .pytest_cache build *.egg-info
