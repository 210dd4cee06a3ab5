"""Entry point for ``python -m engine``."""

import sys

from engine.errors import ParallaxError

try:  # the commands' modules read engine defaults, and with them the environment's limits
    from engine.cli import main
except ParallaxError as exc:  # e.g. PARALLAX_MAX_ITEMS=lots: one line, exit 2, no traceback
    print(f"error: {exc}", file=sys.stderr)
    sys.exit(2)

sys.exit(main())
