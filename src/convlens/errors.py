"""The one exception convlens raises for bad input.

Deep code raises short messages; the public boundary (``analyze``, the CLI) adds the user's context.
The CLI prints ``str(error)`` on one line and exits with status 2.
"""


class ConvlensError(Exception):
    """One clear line: what is wrong and what to do."""
