"""`python -m pymager_tx.admin`: the same as `pymager-admin`."""

import sys

from pymager_tx.admin.cli import main

sys.exit(main())
