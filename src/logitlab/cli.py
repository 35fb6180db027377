"""The ``logitlab`` command line: report · evaluate · diagnose · perplexity · bench.

Every command reads files through :mod:`logitlab.io`, renders through :mod:`logitlab.report`, takes
``--json`` (machine-readable output on stdout and nothing else there) and exits with status 2 and
a one-line ``logitlab: error: ...``, never a traceback, on bad input and on any other exception
(``LOGITLAB_DEBUG=1`` re-raises it, with its traceback); SIGINT, SIGTERM and SIGHUP exit with
128 + the signal's number.
"""

from __future__ import annotations

import signal
import sys
import threading

try:
    import typer
except ImportError:  # pragma: no cover - the cli extra is missing
    typer = None  # type: ignore[assignment]

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from logitlab import _config
from logitlab._version import __version__

__all__ = ["app", "main", "fail", "cli_errors", "error_line"]


class CLIError(Exception):
    """A user-facing error: printed as one line, exit status 2."""


class _Signalled(BaseException):
    """SIGINT, SIGTERM or SIGHUP: unwinds the command (its cleanup runs), then exit 128 + n."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _raise_signalled(signum: int, frame: object) -> None:
    raise _Signalled(signum)


@contextmanager
def _signals_unwind() -> Iterator[None]:
    """Handle SIGTERM and SIGHUP like SIGINT: raise in the main thread so that every ``finally``
    runs (partial outputs are removed) instead of dying on the spot. Signals that are ignored
    (``nohup``, background jobs) or already handled by someone else are left as they are."""
    old = {}
    if threading.current_thread() is threading.main_thread():
        for name in ("SIGINT", "SIGTERM", "SIGHUP"):
            s = getattr(signal, name, None)
            if s is not None and signal.getsignal(s) in (
                signal.SIG_DFL,
                signal.default_int_handler,
            ):
                old[s] = signal.signal(s, _raise_signalled)
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def fail(msg: str) -> None:
    """Print ``logitlab: error: msg`` to stderr and exit with status 2 (no traceback)."""
    print(f"logitlab: error: {msg}", file=sys.stderr)
    raise SystemExit(2)


def _debug() -> bool:
    """``LOGITLAB_DEBUG`` set (and not ``0``): errors keep their traceback. Read at every call."""
    return _config.debug()


def _is_click_control(exc: BaseException) -> bool:
    """The CLI framework's own exceptions (``typer.Exit``, ``Abort``, usage errors; some derive
    from RuntimeError): they are its control flow, not failures, and pass through."""
    return type(exc).__module__.startswith("click.")


def error_line(exc: BaseException) -> str:
    """The one line an exception becomes. Errors of the input (a LoadError, ValueError,
    TypeError, OSError, ...) are their own first line; anything else names its type and is
    flagged as internal, with the way to get the traceback."""
    from logitlab.io import LoadError

    text = str(exc).strip()
    msg = text.splitlines()[0] if text else ""
    if isinstance(exc, LoadError | ValueError | TypeError | EOFError | CLIError | OSError):
        return msg or type(exc).__name__
    what = f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__
    return f"{what} (an internal error; LOGITLAB_DEBUG=1 shows the traceback)"


@contextmanager
def cli_errors() -> Iterator[None]:
    """Turn any exception of the block into a one-line message (exit 2); ``LOGITLAB_DEBUG=1``
    re-raises it instead. BaseExceptions (signals, KeyboardInterrupt, SystemExit) pass.

    EOFError included: the CLI framework would take it for a user abort and print only
    "Aborted."."""
    try:
        yield
    except Exception as exc:
        if _debug() or _is_click_control(exc):
            raise
        fail(error_line(exc))


@contextmanager
def progress_bar(description: str, enabled: bool = True) -> Iterator[Callable[[int, int], None]]:
    """A rich progress bar on stderr; yields ``update(done, total)``."""
    if not enabled:
        yield lambda done, total: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    console = Console(stderr=True)
    if not console.is_terminal:  # no bar (and no stray newline) when stderr is a file or a pipe
        yield lambda done, total: None
        return
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    ) as prog:
        task = prog.add_task(description, total=None)

        def update(done: int, total: int) -> None:
            prog.update(task, completed=done, total=total)

        yield update


def _version_callback(value: bool) -> None:
    if value:
        from logitlab._sysinfo import native_summary

        print(f"logitlab {__version__}")
        print(native_summary())  # which native kernels (ISA level) run, or the fallback
        raise typer.Exit()


if typer is not None:

    def _flag(name: str, help: str) -> Any:
        """An option that takes no value (typer draws a bool option as ``--x <bool>`` unless its
        metavar is empty, and ``--x true`` is then refused as an extra argument)."""
        return typer.Option(False, name, help=help, metavar="")

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
            help="Print the version and the native backend in use, and exit.",
            metavar="",
        ),
    ) -> None:
        """logitlab: the numbers every classifier and language model lives on."""

    # --- evaluation commands ---
    def _load(file: Path | None, labels: Path | None, probs: bool) -> tuple[Any, Any, str]:
        from logitlab.app.evaluate import SAMPLE
        from logitlab.io import load_predictions

        path = SAMPLE if file is None else file
        scores, lab = load_predictions(path, labels)
        name = (
            "bundled sample: scikit-learn digits, logistic regression"
            if file is None
            else str(file)
        )
        return scores, lab, name

    def _is_probs(scores: Any, flag: bool) -> bool:
        """``--probs``, or a container array named like probabilities."""
        return flag or scores.key in ("probs", "probabilities")

    def _evaluate(
        file: Path | None, labels: Path | None, probs: bool, quiet: bool, fit_temp: bool
    ) -> Any:
        from logitlab.app.evaluate import evaluate_predictions

        scores, lab, name = _load(file, labels, probs)
        with progress_bar("evaluating", enabled=not quiet) as update:
            return evaluate_predictions(
                scores,
                lab,
                probs=_is_probs(scores, probs),
                source=name,
                fit_temp=fit_temp,
                progress=update,
            )

    @app.command()
    def report(
        file: Path | None = typer.Argument(
            None,
            help="Predictions: .npz (logits, labels), .npy, "
            ".pt, .safetensors. Omit to use the bundled sample.",
        ),
        labels: Path | None = typer.Option(None, "--labels", help="Labels file (for .npy scores)."),
        out: Path = typer.Option(Path("logitlab-report"), "--out", help="Output directory."),
        probs: bool = _flag("--probs", "Scores are probabilities, not logits."),
        json_out: bool = _flag("--json", "Print JSON on stdout only."),
    ) -> None:
        """Metrics, calibration, temperature scaling and numerical health: terminal, JSON, HTML."""
        from logitlab.io import write_files
        from logitlab.report import to_json
        from logitlab.report.evaluate import render_html, render_terminal

        with cli_errors():
            rep = _evaluate(file, labels, probs, json_out, True)
            js = to_json(rep.to_dict())
            html = render_html(rep)
            # both files are rendered before either is written, then written all or nothing
            write_files(out, {"report.json": js, "report.html": html})
        if json_out:
            print(js)
            return
        render_terminal(rep)
        print(f"wrote {out / 'report.json'} and {out / 'report.html'}")

    @app.command()
    def evaluate(
        file: Path | None = typer.Argument(None, help="Predictions file (omit: bundled sample)."),
        labels: Path | None = typer.Option(None, "--labels", help="Labels file (for .npy scores)."),
        probs: bool = _flag("--probs", "Scores are probabilities, not logits."),
        json_out: bool = _flag("--json", "Print JSON on stdout only."),
    ) -> None:
        """Print the metrics only (no temperature fit, no files written)."""
        from logitlab.report import to_json
        from logitlab.report.evaluate import metrics_rows

        with cli_errors():
            rep = _evaluate(file, labels, probs, json_out, False)
        # the metrics are wrong when the scores were probabilities read as logits: say so on
        # stderr whatever the output format (report puts the same finding in its files)
        for f in rep.findings:
            if f.get("code") == "probabilities-as-logits":
                print(f"logitlab: warning: {f['message']}", file=sys.stderr)
        if json_out:
            d = rep.to_dict()
            keys = ("source", "n", "n_classes", "input_kind", "metrics", "calibration")
            out = {k: d[k] for k in (*keys, "brier_decomposition", "findings", "notes")}
            print(to_json(out))
            return
        from rich.console import Console
        from rich.table import Table

        t = Table(title=f"logitlab evaluate — {rep.source}")
        t.add_column("metric")
        t.add_column("value", justify="right")
        for k, v in metrics_rows(rep):
            t.add_row(k, v)
        Console().print(t)

    @app.command()
    def perplexity(
        model: Path = typer.Option(..., "--model", help="Local Hugging Face causal LM directory."),
        text: Path = typer.Option(
            ..., "--text", help="UTF-8 text; documents split on blank lines."
        ),
        context: int = typer.Option(1024, "--context", min=2),
        stride: int = typer.Option(512, "--stride", min=1),
        batch_size: int = typer.Option(4, "--batch-size", min=1),
        bos: bool = _flag("--bos", "Prefix each document with BOS."),
        json_out: bool = _flag("--json", "Print JSON on stdout only."),
    ) -> None:
        """Sliding-window perplexity, bits per byte and word perplexity of a local causal LM."""
        from logitlab.metrics.lm import lm_perplexity, load_local_model
        from logitlab.report import to_json

        with cli_errors():
            if not text.is_file():
                raise CLIError(f"--text {text}: no such file")
            body = text.read_text(encoding="utf-8")
            m, tok = load_local_model(model)
            if stride > context:
                raise CLIError(f"--stride {stride} must not exceed --context {context}")
            res = lm_perplexity(
                m, tok, body, context=context, stride=stride, batch_size=batch_size, bos=bos
            )
        if json_out:
            print(to_json(res.to_dict()))
            return
        from rich.console import Console
        from rich.table import Table

        t = Table(title=f"perplexity — {model}")
        t.add_column("metric")
        t.add_column("value", justify="right")
        lo, hi = res.ci95
        for k, v in (
            ("documents", str(len(res.documents))),
            ("tokens scored", str(res.tokens)),
            ("token perplexity", f"{res.token_perplexity:.4f}"),
            ("95% bootstrap CI", f"[{lo:.4f}, {hi:.4f}]"),
            ("bits per byte", f"{res.bits_per_byte:.4f}"),
            ("word perplexity", f"{res.word_perplexity:.4f}"),
            ("context / stride", f"{res.context} / {res.stride}"),
        ):
            t.add_row(k, v)
        Console().print(t)

    # --- end evaluation commands ---

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
        json_out: bool = _flag("--json", "JSON report on stdout, nothing else."),
        html: str | None = typer.Option(None, "--html", help="Also write an HTML report here."),
    ) -> None:
        """Diagnose logits: float16/bfloat16 overflow, saturation, loss scale, conditioning.

        Streams the file in row chunks (memory bounded by about 256 MiB whatever its size), with a
        progress bar on stderr.
        """
        from rich.console import Console

        from logitlab.diagnostics import diagnose_file
        from logitlab.io import atomic_write

        with cli_errors():
            with progress_bar("diagnose", enabled=not json_out) as update:
                rep = diagnose_file(file, key, axis, target_key=target_key, progress=update)
            if html is not None:
                from logitlab.report.diagnose import to_html

                atomic_write(html, to_html(rep))
        if json_out:
            print(rep.to_json())
            return
        from logitlab.report.diagnose import render_terminal

        render_terminal(rep, Console())
        if html is not None:
            Console(stderr=True).print(f"wrote {html}")

    # --- end diagnose command ---

    @app.command()
    def bench(
        n: int = typer.Option(2048, "--n", min=1, help="Tokens."),
        d: int = typer.Option(512, "--d", min=1, help="Hidden size."),
        v: int = typer.Option(32000, "--v", min=2, help="Vocabulary size."),
        repeats: int = typer.Option(3, "--repeats", min=1, help="Interleaved timing rounds."),
        json_out: bool = _flag("--json", "Print JSON rows on stdout only."),
    ) -> None:
        """Linear cross-entropy fwd+bwd: naive, PyTorch's variants and logitlab, side by side,
        with the GEMM floor and peak extra memory (each variant in its own process, timed in
        interleaved rounds)."""
        with cli_errors():
            try:
                from logitlab.app.linear_ce import run_linear_ce

                rows, table = run_linear_ce(shapes=((n, d, v),), repeats=repeats)
            except ImportError as exc:
                raise CLIError(
                    f"bench needs PyTorch: pip install 'logitlab[torch]' ({exc})"
                ) from exc
            except RuntimeError as exc:  # a worker failed: its first line names it and why
                raise CLIError(str(exc)) from exc
        if json_out:
            from logitlab.report import to_json

            print(to_json(rows))
            return
        print(table)


def main(argv: list[str] | None = None) -> int:
    """Console entry point (``logitlab`` and ``python -m logitlab``)."""
    if typer is None:
        print(
            "logitlab: the command line needs typer and rich: pip install 'logitlab[cli]'",
            file=sys.stderr,
        )
        return 2
    code = 0
    with _signals_unwind():
        try:
            app(args=argv, standalone_mode=True)
        except SystemExit as exc:
            code = int(exc.code or 0) if not isinstance(exc.code, str) else 1
        except _Signalled as exc:
            code = -exc.signum
        except Exception as exc:  # raised outside a command's cli_errors block (rendering, say)
            if _debug():
                raise
            print(f"logitlab: error: {error_line(exc)}", file=sys.stderr)
            code = 2
    if code < 0:  # after the handlers are restored: a second signal now acts as usual
        print(f"logitlab: interrupted by {signal.Signals(-code).name}", file=sys.stderr)
        return 128 - code
    return code
