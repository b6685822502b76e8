"""nbval runs the notebooks as tests; without an explicit $MINILDM_PROFILE they run in the tiny `ci` profile
(set MINILDM_PROFILE=cpu or gpu to execute them for real)."""

import os

import pytest

os.environ.setdefault("MINILDM_PROFILE", "ci")

# The student edition (notebooks/student/) is not run by nbval: tests/test_student.py runs it top to bottom with
# every exercise unanswered ("skipped") and then with a plausible wrong answer for each, which its check must reject.
collect_ignore = ["student"]


def pytest_collection_modifyitems(config, items):
    """Every notebook cell run by nbval belongs to the slow tier: `pytest -m "not slow"` skips the notebooks."""
    for item in items:
        if str(item.fspath).endswith(".ipynb"):
            item.add_marker(pytest.mark.slow)
