# Everyday entry points. `make test` is what CI runs (.ci/run).
#
#   make setup                 create .venv (tools/setup_env.sh; a no-op when up to date)
#   make test                  setup, then the whole test suite
#   make test PYTEST_ARGS='-x tests/test_tools.py'
#   make demo                  setup, then tools/demo/run_demo.py
#   make clean                 remove work_dirs/ and the generated datasets under data/
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

# Only what our generators made (they leave mbn_synthetic.json): data/ may also
# hold a user's own datasets (data/coco, data/cityscapes), which are never touched.
clean:
	rm -rf work_dirs
	for d in data/*/; do if [ -f "$$d/mbn_synthetic.json" ]; then rm -rf "$$d"; fi; done

distclean: clean
	rm -rf .venv "$(MBN_CACHE)"
