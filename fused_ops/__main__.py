"""``python -m fused_ops check``: the same command as the ``fused-ops`` script."""

import sys

from fused_ops.cli import main

sys.exit(main())
