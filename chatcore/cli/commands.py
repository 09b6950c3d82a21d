"""Imports each command module so that its commands attach to the ``main`` group."""

# One line per module; each module decorates its commands with ``@main.command``/``@main.group``.
from chatcore.cli import (  # the submodules, not the package's names
    arena,  # noqa: F401
    data,  # noqa: F401
    docs,  # noqa: F401
    evaluate,  # noqa: F401
    history,  # noqa: F401
    models,  # noqa: F401
    notes,  # noqa: F401
    prompts,  # noqa: F401
    run,  # noqa: F401
    serve,  # noqa: F401
    users,  # noqa: F401
)
