# Everyday entry points. `make test` is what CI runs (.ci/run).
#
#   make setup                 create .venv (tools/setup_env.sh; a no-op when up to date)
#   make test                  setup, then the whole test suite
#   make test PYTEST_ARGS='-x tests/test_tools.py'
#   make demo                  setup, then tools/demo/run_demo.py
#   make clean                 remove work_dirs/ and what was generated under data/
#   make distclean             clean, and also the venv and the mmcv wheel cache

PYTHON := .venv/bin/python
PYTEST_ARGS ?= tests
# Same default as tools/setup_env.sh.
MBN_CACHE ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/mbn_backbones

.PHONY: setup test demo clean distclean

setup:
	bash tools/setup_env.sh

test: setup
	$(PYTHON) -m pytest $(PYTEST_ARGS)

demo: setup
	$(PYTHON) tools/demo/run_demo.py

# data/ holds generated data and links to datasets kept elsewhere: remove the
# former, keep the links (rm never follows them into their targets anyway).
clean:
	rm -rf work_dirs
	if [ -d data ]; then find data -mindepth 1 -maxdepth 1 ! -type l -exec rm -rf {} +; fi

distclean: clean
	rm -rf .venv "$(MBN_CACHE)"
