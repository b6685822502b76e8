# Two commands do all the set-up: `make demo` and `make test`. Each creates ./.venv on first use,
# installs minildm into it (editable, with the test extra), and reuses it afterwards.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.minildm-installed

.PHONY: demo test test-fast bench student install clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip >/dev/null
	$(PY) -m pip install -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/minildm demo

# The notebooks run under nbval in the tiny `ci` profile unless MINILDM_PROFILE says otherwise.
test: $(STAMP)
	MINILDM_PROFILE=$${MINILDM_PROFILE:-ci} $(PY) -m pytest

# The fast tier: the math, the models and the errors, without notebooks or training runs (about a minute).
test-fast: $(STAMP)
	MINILDM_PROFILE=$${MINILDM_PROFILE:-ci} $(PY) -m pytest -m "not slow"

bench: $(STAMP)
	$(VENV)/bin/minildm bench

# The student edition of the notebooks (solutions replaced by NotImplementedError), in notebooks/student/.
student: $(STAMP)
	$(VENV)/bin/minildm student

clean:
	rm -rf $(VENV) outputs .pytest_cache
