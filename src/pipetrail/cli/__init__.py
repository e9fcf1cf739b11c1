"""The ``pipetrail`` command line."""
