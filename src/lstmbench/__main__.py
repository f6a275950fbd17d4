"""``python -m lstmbench`` runs the command line (the launcher starts workers this way)."""

import sys

from lstmbench.cli import main

sys.exit(main())
