"""The ``chatcore`` command group: the root every command module attaches its commands to."""

from __future__ import annotations

import click

from chatcore.core.errors import ChatCoreError
from chatcore.core.settings import Settings
from storage.errors import StorageError


class _Group(click.Group):
    """A group that turns ChatCore and storage errors into one clean line on stderr and exit status 1."""

    def invoke(self, ctx: click.Context):  # type: ignore[override]
        try:
            return super().invoke(ctx)
        except (ChatCoreError, StorageError) as exc:
            raise click.ClickException(str(exc)) from exc


@click.group(cls=_Group)
@click.version_option(package_name="chatcore")
@click.pass_context
def main(ctx: click.Context) -> None:
    """ChatCore: a local research assistant whose history you own."""
    ctx.obj = Settings()
