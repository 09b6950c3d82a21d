"""Imports each command module so that its commands attach to the ``main`` group."""

# One line per module; each module decorates its commands with ``@main.command``/``@main.group``.
from chatcore.cli import prompts  # noqa: F401
from chatcore.cli import models  # noqa: F401
from chatcore.cli import run  # noqa: F401
from chatcore.cli import history  # noqa: F401
from chatcore.cli import serve  # noqa: F401
from chatcore.cli import evaluate  # noqa: F401
from chatcore.cli import users  # noqa: F401
from chatcore.cli import notes  # noqa: F401
