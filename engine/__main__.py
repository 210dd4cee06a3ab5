"""Entry point for ``python -m engine`` (the same as the installed ``parallax`` command)."""

import sys

from engine.cli.console import run

sys.exit(run())
