"""``python -m tfmkit.cli``: the same command line as the ``tfmkit`` console script."""

from tfmkit.cli import main

main()
