"""Entry point for ``python -m engine`` and the installed ``parallax`` command (``main``).

Importing the commands reads the engine's settings, so a bad value in the environment
(``PARALLAX_MAX_ITEMS=lots``) fails at import: caught here, outside ``engine.cli`` (whose
package import is what fails), it becomes one line and exit status 2, never a traceback.
"""

import sys

from engine.errors import ParallaxError


def main() -> int:
    try:
        from engine.cli.console import run
    except ParallaxError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return run()


if __name__ == "__main__":
    sys.exit(main())
