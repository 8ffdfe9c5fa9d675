"""``python -m fused_ops demo | bench | check``: the same commands as the ``fused-ops`` script."""

import sys

from fused_ops.cli import main

sys.exit(main())
