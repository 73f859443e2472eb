"""`python -m inoculant_sae`: the protocol server on stdin/stdout (PROTOCOL.md)."""

import sys

from .server import main

sys.exit(main())
