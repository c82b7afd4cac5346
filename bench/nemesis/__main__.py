"""``python -m bench.nemesis``: the same as ``tilehall nemesis``."""

import sys

from bench.nemesis import main

sys.exit(main())
