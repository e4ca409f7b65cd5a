"""`python -m dinet.cli`."""

import sys

from . import main

sys.exit(main())
