"""`python -m mlrollout_serving.gateway` is the same program as the `mlrollout-gateway` script."""

from .cli import main

main()
