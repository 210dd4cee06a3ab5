"""The command line's front door: ``python -m engine`` and the installed ``parallax`` command.

Importing the commands reads the engine's settings from the environment, so a bad value
(``PARALLAX_MAX_ITEMS=lots``) fails at import: it becomes one line and exit status 2 here, for
both ways in, never a traceback (with ``--json``: one ``{"error": ...}`` object on stdout, as
for every other error). This module imports nothing of the engine but its errors until
``run`` is called, so the error handler exists before the settings are read.
"""

from __future__ import annotations

import json
import sys

from engine.errors import ParallaxError, error_body


def run() -> int:
    try:
        from engine.cli import main
    except ParallaxError as exc:
        if "--json" in sys.argv[1:]:
            print(json.dumps(error_body(exc)))
        else:
            print(f"error: {exc}", file=sys.stderr)
        return 2
    return main()


if __name__ == "__main__":
    sys.exit(run())
