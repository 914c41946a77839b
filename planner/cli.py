"""The ``planner`` command: a thin typer layer over the library.

Each capability lives in ``planner/commands/<name>.py`` with a ``register(app)`` function, so
the planners grow without touching each other.  Every :class:`InputError` becomes one line on
stderr and exit status 2; nothing the user typed produces a traceback.
"""
from __future__ import annotations

import importlib
import sys

import typer

from hardware.errors import InputError
from planner import __version__

app = typer.Typer(
    name="planner",
    help="Plan GPU mixes, parallel layouts, MoE expert placement and sequence parallelism for LLMs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

#: command modules, each with ``register(app)``; order is the order of ``planner --help``
COMMAND_MODULES = (
    "planner.commands.estimate",
    "planner.commands.catalog",
    "planner.commands.calibrate",
    "planner.commands.fleet",
    "planner.commands.parallel",
    "planner.commands.experts",
    "planner.commands.seqpar",
    "planner.commands.emit",
    "planner.commands.report",
    "planner.commands.sweep",
)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"planner {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version_callback,
                                        is_eager=True, help="Print the version and exit.")) -> None:
    """Plan GPU mixes, parallel layouts, MoE expert placement and sequence parallelism for LLMs."""


for _name in COMMAND_MODULES:
    try:
        _module = importlib.import_module(_name)
    except ModuleNotFoundError as exc:  # a capability not landed yet
        if exc.name != _name:
            raise
        continue
    _module.register(app)


def fail(message: str, code: int = 2) -> None:
    """Print one error line to stderr and exit with ``code``."""
    typer.echo(f"error: {message}", err=True)
    raise SystemExit(code)


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the app, turning bad input into one clear line and exit 2."""
    try:
        app(args=argv, standalone_mode=True)
    except InputError as exc:
        fail(exc.render())
    except KeyboardInterrupt:
        fail("interrupted", 130)


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1:])
