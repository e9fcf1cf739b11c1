"""``python -m pipetrail.cli``."""

from pipetrail.cli.main import main

main()
