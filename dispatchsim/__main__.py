"""``python -m dispatchsim``: the same as the ``dispatchsim`` command."""
from __future__ import annotations

import sys

from .cli import main

sys.exit(main())
