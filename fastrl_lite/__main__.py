"""`python -m fastrl_lite ...` runs the `fastrl-lite` command line."""
from .cli import main

main()
