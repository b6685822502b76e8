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

# The student edition of the notebooks (solutions replaced by `...` placeholders), in notebooks/student/.
student: $(STAMP)
	$(VENV)/bin/minildm student

clean:
	rm -rf $(VENV) outputs .pytest_cache

# The two ends of the dependency ranges pyproject.toml declares, each in a fresh environment (.venv-oldest,
# .venv-newest): install, print the versions, the fast tier, the notebooks in the ci profile. CI runs both.
.PHONY: test-oldest test-newest install-lab lab-lock
test-oldest:
	.ci/matrix oldest

test-newest:
	.ci/matrix newest

# The frozen lab set (docs/lab-environment.md): a fresh $(VENV) with exactly the versions in .ci/lab-lock.txt.
install-lab:
	PYTHON=$(PYTHON) .ci/lab install $(VENV)

# Refreshes .ci/lab-lock.txt from a fresh `make install` (in .venv-lab); test it before committing the lock.
lab-lock:
	PYTHON=$(PYTHON) .ci/lab lock
