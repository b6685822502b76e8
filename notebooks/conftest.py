"""nbval runs the notebooks as tests; without an explicit $MINILDM_PROFILE they run in the tiny `ci` profile
(set MINILDM_PROFILE=cpu or gpu to execute them for real)."""

import os

os.environ.setdefault("MINILDM_PROFILE", "ci")
