"""One-line errors for every ``tfmkit`` command, in the console script and under ``CliRunner``.

:class:`TfmkitGroup` is the click group class of the ``tfmkit`` app and its sub-apps: a
:class:`tfmkit.errors.TfmkitError` raised inside any command it dispatches to is printed as
``error: <message>`` on one line of stderr and ends the command with exit status 2
(:data:`USER_ERROR`). Any other exception is a bug and keeps its traceback. Handling the error in
the group (not only in :func:`tfmkit.cli.main`) makes ``typer.testing.CliRunner`` see the same
output and status as a user at a shell.
"""

from __future__ import annotations

import typer
from typer.core import TyperGroup

from tfmkit.errors import TfmkitError

USER_ERROR = 2  # exit status for bad input / bad configuration
INTERRUPTED = 130  # exit status after Ctrl-C (128 + SIGINT), as shells report it


def one_line(message: object) -> str:
    """``message`` as one line: inner line breaks become ``; `` (the user sees one line)."""
    return "; ".join(part.strip() for part in str(message).splitlines() if part.strip())


def fail(message: object) -> typer.Exit:
    """Print ``error: <message>`` on stderr and return the :class:`typer.Exit` (status 2) to raise."""
    typer.secho(f"error: {one_line(message)}", err=True, fg=typer.colors.RED)
    return typer.Exit(code=USER_ERROR)


class TfmkitGroup(TyperGroup):
    """Typer group that turns a :class:`TfmkitError` from a sub-command into a one-line error."""

    def invoke(self, ctx):  # noqa: D102 - see class docstring
        try:
            return super().invoke(ctx)
        except TfmkitError as err:
            raise fail(err) from None
