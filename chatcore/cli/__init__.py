"""The ``chatcore`` command line: glue between flags, the service layer and the terminal.

``main`` (in ``group.py``) is the root; importing ``commands`` attaches every command module to it.
"""

from chatcore.cli import commands  # noqa: F401  (importing registers the commands)
from chatcore.cli.group import main

__all__ = ["main"]
