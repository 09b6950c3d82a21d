"""Imports each command module so that its commands attach to the ``main`` group."""

# One line per module; each module decorates its commands with ``@main.command``/``@main.group``.
