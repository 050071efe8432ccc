"""``python -m mlrollout_serving.server`` is ``mlrollout-serve``."""

import sys

from mlrollout_serving.server.cli import main

sys.exit(main())
