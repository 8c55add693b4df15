"""`python -m reflex …`: see reflex/cli.py for the commands."""

import sys

from reflex.cli import main

sys.exit(main())
