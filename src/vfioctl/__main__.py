"""``python -m vfioctl``: the same as the ``vfioctl`` command."""

import sys

from vfioctl.cli.main import main

sys.exit(main())
