"""nbval runs the notebooks as tests; without an explicit $MINILDM_PROFILE they run in the tiny `ci` profile
(set MINILDM_PROFILE=cpu or gpu to execute them for real)."""

import os

os.environ.setdefault("MINILDM_PROFILE", "ci")

# The student edition (notebooks/student/) raises NotImplementedError in every exercise on purpose; it is
# executed by tests/test_student.py, which expects exactly those failures, not by nbval.
collect_ignore = ["student"]
