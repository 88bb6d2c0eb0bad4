"""``python -m clearbench``: the same CLI, so that ``torchrun -m clearbench embed ...`` works."""

from clearbench.cli import main

main()
