"""`python -m minildm …` is the `minildm` command; torchrun starts it as `torchrun … -m minildm train-ldm …`."""

import sys

from .tools.cli import main

sys.exit(main())
