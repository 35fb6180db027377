"""The ``logitlab`` command line: report · evaluate · diagnose · perplexity · bench.

Every command reads files through :mod:`logitlab.io`, renders through :mod:`logitlab.report`, takes
``--json`` (machine-readable output on stdout and nothing else there) and exits non-zero with a
one-line error, never a traceback, on bad input.
"""

from __future__ import annotations

import sys

try:
    import typer
except ImportError:  # pragma: no cover - the cli extra is missing
    typer = None  # type: ignore[assignment]

from logitlab._version import __version__

__all__ = ["app", "main"]


def _version_callback(value: bool) -> None:
    if value:
        print(f"logitlab {__version__}")
        raise typer.Exit()


if typer is not None:
    app = typer.Typer(
        name="logitlab",
        help="Exact softmax/cross-entropy numerics, diagnostics and calibration reports.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
    )

    @app.callback()
    def _root(
        version: bool = typer.Option(
            False,
            "--version",
            callback=_version_callback,
            is_eager=True,
            help="Print the version and exit.",
        ),
    ) -> None:
        """logitlab: the numbers every classifier and language model lives on."""


def main(argv: list[str] | None = None) -> int:
    """Console entry point (``logitlab`` and ``python -m logitlab``)."""
    if typer is None:
        print(
            "logitlab: the command line needs typer and rich: pip install 'logitlab[cli]'",
            file=sys.stderr,
        )
        return 2
    try:
        app(args=argv, standalone_mode=True)
    except SystemExit as exc:
        return int(exc.code or 0) if not isinstance(exc.code, str) else 1
    return 0
