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

    # --- diagnose command ---
    @app.command()
    def diagnose(
        file: str = typer.Argument(
            ..., help=".npy, .npz, .pt/.pth or .safetensors file of logits."
        ),
        key: str | None = typer.Option(None, "--key", help="Array name inside a container."),
        axis: int = typer.Option(-1, "--axis", help="The class axis."),
        target_key: str | None = typer.Option(
            None, "--target-key", help="Integer targets in the same container (optional)."
        ),
        json_out: bool = typer.Option(False, "--json", help="JSON report on stdout, nothing else."),
        html: str | None = typer.Option(None, "--html", help="Also write an HTML report here."),
    ) -> None:
        """Diagnose logits: float16/bfloat16 overflow, saturation, loss scale, conditioning.

        Streams the file in row chunks (memory bounded by about 256 MiB whatever its size), with a
        progress bar on stderr.
        """
        from rich.console import Console

        from logitlab.diagnostics import diagnose_file
        from logitlab.io import LoadError, atomic_write

        err = Console(stderr=True)
        try:
            from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

            with Progress(
                TextColumn("diagnose"),
                BarColumn(),
                TextColumn("{task.completed}/{task.total} rows"),
                TimeRemainingColumn(),
                console=err,
                transient=True,
            ) as bar:
                task = bar.add_task("rows", total=None)

                def progress(done: int, total: int) -> None:
                    bar.update(task, completed=done, total=total)

                rep = diagnose_file(file, key, axis, target_key=target_key, progress=progress)
            if html is not None:
                atomic_write(html, rep.to_html())
        except (LoadError, ValueError, TypeError, OSError) as exc:
            print(f"logitlab diagnose: error: {exc}".splitlines()[0], file=sys.stderr)
            raise typer.Exit(1) from None
        if json_out:
            print(rep.to_json())
        else:
            from logitlab.report.diagnose import render_terminal

            render_terminal(rep, Console())
            if html is not None:
                err.print(f"wrote {html}")

    # --- end diagnose command ---


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
