"""``python -m bench.load`` is ``fluido bench``."""

from __future__ import annotations

import sys

from .cli import main

sys.exit(main())
