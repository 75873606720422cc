# Set-up, tests and the TransformerLens 4 compatibility run. See README.md.
PYTHON ?= python3
# Converted model weights (written on first load; .cache/ is ignored by git).
export INTERP_TOOLKIT_CACHE ?= $(CURDIR)/.cache
PYTEST_ARGS ?=
# The TransformerLens 4.x run (TransformerBridge only) skips what is marked slow.
TL4_PYTEST_ARGS ?= -m "not slow"

.PHONY: setup setup-tl4 setup-browser test test-tl4 test-fast

setup:            ## .venv with TransformerLens 3.9
	PYTHON=$(PYTHON) scripts/setup.sh

setup-tl4:        ## .venv-tl4 with TransformerLens 4.3
	PYTHON=$(PYTHON) scripts/setup.sh --only-tl4

setup-browser:    ## headless Chromium (Debian package) for the report rendering tests
	scripts/setup_browser.sh

# pytest exits 5 when it collected no test: make treats that as the failure it is.
test:             ## whole suite (real models included) on .venv
	.venv/bin/python -m pytest $(PYTEST_ARGS)

test-tl4:         ## the suite on TransformerBridge under TransformerLens 4.x
	.venv-tl4/bin/python -m pytest $(TL4_PYTEST_ARGS)

test-fast:        ## tiny models only
	.venv/bin/python -m pytest -m "not real and not slow" $(PYTEST_ARGS)
