"""`python -m mlrollout.kubectl_plugin`: the same as `kubectl mlrollout`."""

import sys

from mlrollout.kubectl_plugin.cli import main

sys.exit(main())
