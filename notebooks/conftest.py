"""nbval runs the notebooks as tests; without an explicit $MINILDM_PROFILE they run in the tiny `ci` profile
(set MINILDM_PROFILE=cpu or gpu to execute them for real)."""

import os

import pytest

os.environ.setdefault("MINILDM_PROFILE", "ci")

# The student edition (notebooks/student/) raises NotImplementedError in every exercise on purpose; it is
# executed by tests/test_student.py, which expects exactly those failures, not by nbval.
collect_ignore = ["student"]


def pytest_collection_modifyitems(config, items):
    """Every notebook cell run by nbval belongs to the slow tier: `pytest -m "not slow"` skips the notebooks."""
    for item in items:
        if str(item.fspath).endswith(".ipynb"):
            item.add_marker(pytest.mark.slow)
