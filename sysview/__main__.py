"""``python -m sysview``: the same as the ``scoutfs-sysfsd`` command."""

import sys

from sysview.main import main

sys.exit(main())
