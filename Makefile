# Set-up, tests and the TransformerLens 4 compatibility run. See README.md.
PYTHON ?= python3
# Converted model weights (written on first load; .cache/ is ignored by git).
export INTERP_TOOLKIT_CACHE ?= $(CURDIR)/.cache
PYTEST_ARGS ?=
# The TransformerLens 4.x run (TransformerBridge only) skips what is marked slow.
TL4_PYTEST_ARGS ?= -m "not slow"

# `make run` analyses this prompt on the default model.
PROMPT ?= The Eiffel Tower is a famous iron landmark that stands in the centre of the French capital city of

.PHONY: setup setup-tl4 setup-browser run test test-tl4 test-fast

setup:            ## .venv with TransformerLens 3.9
	PYTHON=$(PYTHON) scripts/setup.sh

# The environments, created on first use by the targets that need them.
.venv/bin/python:
	PYTHON=$(PYTHON) scripts/setup.sh

.venv-tl4/bin/python:
	PYTHON=$(PYTHON) scripts/setup.sh --only-tl4

setup-tl4:        ## .venv-tl4 with TransformerLens 4.3
	PYTHON=$(PYTHON) scripts/setup.sh --only-tl4

setup-browser:    ## headless Chromium (Debian package) for the report rendering tests
	scripts/setup_browser.sh

run: | .venv/bin/python  ## set up if needed, then analyse $(PROMPT) on the default model: reports/analyze.html
	.venv/bin/interp-toolkit analyze "$(PROMPT)" --out reports/analyze.html

# pytest exits 5 when it collected no test: make treats that as the failure it is.
test: | .venv/bin/python  ## whole suite (real models included) on .venv
	.venv/bin/python -m pytest $(PYTEST_ARGS)

test-tl4: | .venv-tl4/bin/python  ## the suite on TransformerBridge under TransformerLens 4.x
	.venv-tl4/bin/python -m pytest $(TL4_PYTEST_ARGS)

test-fast: | .venv/bin/python  ## tiny models only
	.venv/bin/python -m pytest -m "not real and not slow" $(PYTEST_ARGS)
