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


try:  # typer >= 0.22 carries its own copy of click
    from typer._click.exceptions import ClickException, NoArgsIsHelpError
except ImportError:  # pragma: no cover - older typer on click
    from click.exceptions import ClickException, NoArgsIsHelpError


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the app, turning bad input (a malformed option as much as a bad file)
    into one clear line and exit 2."""
    try:
        code = app(args=argv, standalone_mode=False, prog_name="planner")
    except InputError as exc:
        fail(exc.render())
    except NoArgsIsHelpError as exc:  # a bare ``planner``: the help, as before
        exc.show()
        raise SystemExit(exc.exit_code) from None
    except ClickException as exc:  # a bad option value, an unknown option, a missing argument
        ctx = getattr(exc, "ctx", None)
        where = f"{ctx.command_path}: " if ctx is not None else ""
        see = f" (see {ctx.command_path} --help)" if ctx is not None else ""
        fail(f"{where}{exc.format_message()}{see}", exc.exit_code)
    except typer.Exit as exc:  # --help, --version
        code = exc.exit_code
    except (KeyboardInterrupt, typer.Abort):
        fail("interrupted", 130)
    raise SystemExit(code if isinstance(code, int) else 0)  # as click's standalone mode


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1:])
