"""The benchmark harness: every variant in its own worker process, all timed in interleaved rounds.

A *case* is an operation on a shape: a module-level ``setup(**params)`` builds the inputs and
returns the step to time. Each *variant* (an implementation, or the same one under another
environment or source tree) runs the setup in a worker process of its own, and all workers of a
case stay alive while the parent steps them in rounds. ``logitlab bench``
(:mod:`logitlab.app.linear_ce`) and ``benchmarks/`` declare their cases on this module.

Method (docs/performance.md has the reasons)
------
* **Workers** (:mod:`logitlab.app._bench_worker`, standard library only) load the setup's
  module by path, import only what the setup imports (no torch for a NumPy case), run the
  setups concurrently, then one at a time an untimed warm-up step and a step whose memory they
  measure.
* **Rounds**: every variant times one step per round (its ``prepare`` hook untimed), in an order
  rotated by one place each round (reversed every other cycle: each variant runs in each place
  equally often), after a pause that lets the previous worker's threads go idle.
* **Results**: ``time_s`` (median over rounds), ``best_s`` (fastest round), ``ratio`` (median of
  the per-round ratios to the baseline variant; below 1: faster), ``vs_before`` (the same to the
  variant's ``before:`` twin; for a ``control:`` twin, the noise of the run).
* **Memory** (Linux; NaN elsewhere): workers run with ``MALLOC_MMAP_THRESHOLD_=65536`` (freed
  arrays go back to the OS); before the memory step the peak is reset (``/proc/self/clear_refs``);
  ``extra_mb = VmHWM - VmRSS(before) - keep_bytes``; ``anon_mb``: the peak ``RssAnon`` (sampled
  every 5 ms) above its start, less ``keep_bytes``, which leaves out memory-mapped file pages.
* **Before/after**: a variant may carry its own environment, interpreter and ``PYTHONPATH``;
  :func:`with_before` adds ``before:`` twins that run another tree's ``src/`` in the same rounds
  (and ``control:`` twins, a second worker of the same tree, to measure the spread).
  They run this harness and this setup against the other ``logitlab``, so a setup's module
  imports ``logitlab`` (and this harness) inside functions only.

Example:
    >>> print(format_table([dict(case="2x3", variant="x", time_s=1.0, ratio=0.5, extra_mb=2.0)]))
    case  variant  time_s  ratio  extra_MB
    2x3   x        1.000   0.500  2.0
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import select
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Variant", "Case", "Result", "run_case", "run_cases", "with_before", "median_ratio"]
__all__ += ["format_table", "add_arguments", "shared_workers", "BEFORE", "CONTROL"]

BEFORE = "before:"
# a second before: twin of the same tree in a worker of its own: its vs_before is this run's noise
CONTROL = "control:"


@dataclass(frozen=True)
class Variant:
    """One implementation timed in a case, in its own worker process.

    Args:
        name: its row label, unique within the case.
        params: keyword arguments of the setup, over the case's (JSON values).
        env: environment variables of the worker, over the parent's.
        pythonpath: directories put first on the worker's ``PYTHONPATH``.
        python: the worker's interpreter (default: the parent's).
    """

    name: str
    params: Mapping[str, Any] = field(default_factory=dict)
    env: Mapping[str, str] = field(default_factory=dict)
    pythonpath: Sequence[str] = ()
    python: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"Variant name must be a non-empty string, got {self.name!r}")
        _check_json(self.params, f"params of variant {self.name!r}")
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in self.env.items()):
            raise TypeError(f"env of variant {self.name!r} must map strings to strings")


@dataclass(frozen=True)
class Case:
    """An operation on a shape: one setup function, timed for each variant.

    In the worker, ``setup(**params, **variant.params)`` returns the step to time: a callable, or
    a dict with ``step`` and optionally ``prepare`` (untimed, before every step), ``keep_bytes``
    (subtracted from the peaks) and ``info`` (a dict of JSON values, or a callable returning one
    after the memory step).

    Args:
        name: its label in the results (a shape, say).
        setup: a function defined at the top level of a module that has a file.
        variants: the implementations, each in its own worker.
        params: keyword arguments of the setup for all variants (JSON values).
        baseline: the variant every ``ratio`` is taken against.
        warmup: one untimed step before the memory step (off for steps too long to repeat).
    """

    name: str
    setup: Callable[..., Any]
    variants: Sequence[Variant]
    params: Mapping[str, Any] = field(default_factory=dict)
    baseline: str | None = None
    warmup: bool = True

    def __post_init__(self) -> None:
        _locate(self.setup)
        names = [v.name for v in self.variants]
        if not names or not all(isinstance(v, Variant) for v in self.variants):
            raise TypeError(f"variants of case {self.name!r} must be a non-empty list of Variant")
        if len(set(names)) != len(names):
            raise ValueError(f"variants of case {self.name!r} repeat a name: {names}")
        if self.baseline is not None and self.baseline not in names:
            raise ValueError(f"baseline {self.baseline!r} is not a variant of {self.name!r}")
        _check_json(self.params, f"params of case {self.name!r}")


@dataclass(frozen=True)
class Result:
    """One variant of one case: step time of every round, ratios, peak memory."""

    case: str
    variant: str
    times: tuple[float, ...]
    extra_mb: float
    anon_mb: float
    ratio: float | None = None
    vs_before: float | None = None
    origin: str | None = None  # the directory of the logitlab the worker ran, if any
    info: Mapping[str, Any] = field(default_factory=dict)

    @property
    def time_s(self) -> float:
        """Median step time over the rounds."""
        return statistics.median(self.times)

    @property
    def best_s(self) -> float:
        """The fastest round."""
        return min(self.times)

    def row(self) -> dict[str, Any]:
        """A flat dict for tables and JSON (``ratio`` and ``vs_before`` only when defined)."""
        out = dict(case=self.case, variant=self.variant, time_s=self.time_s, best_s=self.best_s)
        out.update({k: x for k in ("ratio", "vs_before") if (x := getattr(self, k)) is not None})
        return {**out, "extra_mb": self.extra_mb, "anon_mb": self.anon_mb, **self.info}


def _check_json(obj: Any, what: str) -> None:
    try:
        json.dumps(dict(obj))
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{what} must be a mapping of JSON values ({exc})") from None


def _locate(fn: Callable[..., Any]) -> tuple[str, str]:
    """(file, qualified name) by which a worker finds a module-level function."""
    name = getattr(fn, "__qualname__", None)
    path = getattr(sys.modules.get(getattr(fn, "__module__", "")), "__file__", None)
    if not callable(fn) or name is None:
        raise TypeError(f"setup must be a function, got {type(fn).__name__}")
    if "<" in name or path is None:
        raise ValueError(f"setup {name!r} must be defined at the top level of a module file")
    return os.path.abspath(path), name


def with_before(
    variants: Sequence[Variant],
    tree: str | os.PathLike[str],
    names: Sequence[str],
    *,
    control: bool = False,
) -> list[Variant]:
    """The variants, each of ``names`` preceded by a ``before:`` twin whose ``PYTHONPATH`` starts
    with ``tree/src`` (``tree``: a checkout of another commit).

    With ``control``, each also gets a ``control:`` twin: the same ``before`` code in a worker of
    its own, whose ``vs_before`` (against the ``before:`` twin) is what two identical workers
    read apart in this run, the yardstick for every other ``vs_before`` of the table.

    Raises:
        ValueError: ``tree`` has no ``src/logitlab/__init__.py``, or ``names`` names no variant.
    """
    src = Path(tree).expanduser().resolve() / "src"
    if not (src / "logitlab" / "__init__.py").is_file():
        raise ValueError(f"before: {tree} has no src/logitlab/__init__.py")
    if not set(names) & {v.name for v in variants}:
        raise ValueError(f"before: none of {list(names)} is a variant")
    out: list[Variant] = []
    for v in variants:
        if v.name in names:
            path = (str(src), *v.pythonpath)
            out.append(dataclasses.replace(v, name=BEFORE + v.name, pythonpath=path))
            if control:
                out.append(dataclasses.replace(v, name=CONTROL + v.name, pythonpath=path))
        out.append(v)
    return out


def _before_of(name: str) -> str:
    """The ``before:`` twin a variant's ``vs_before`` is taken against."""
    return BEFORE + name.removeprefix(CONTROL)


def _order(names: Sequence[str], r: int) -> list[str]:
    """The order of round ``r``: the list rotated by ``r`` places, reversed every other cycle.
    Over each ``2 len(names)`` rounds every variant runs in every place equally often; plain
    alternation (forward, backward) kept a middle variant in the middle in every round, and a
    worker timed there read up to 3% slower than its identical twins at the ends."""
    k = len(names)
    out = [*names[r % k :], *names[: r % k]]
    return out[::-1] if (r // k) % 2 else out


# --------------------------------------------------------------------------- parent side

# the workers' own file, run by path (stdlib only: a before: twin imports another logitlab)
_WORKER = str(Path(__file__).with_name("_bench_worker.py"))


def _worker_env(v: Variant) -> dict[str, str]:
    path = [*v.pythonpath]
    root = str(Path(__file__).resolve().parents[2])
    if root not in {str(Path(sysconfig.get_paths()[k]).resolve()) for k in ("purelib", "platlib")}:
        path.append(root)  # a worker imports the parent's logitlab unless told otherwise
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", **v.env)
    return {**env, "PYTHONPATH": os.pathsep.join(filter(None, [*path, env.get("PYTHONPATH")]))}


def _key(v: Variant) -> tuple[Any, ...]:
    return (v.python or sys.executable, tuple(sorted(v.env.items())), tuple(v.pythonpath))


class _Worker:
    """One worker process, driven by JSON lines; ``key``: the variants it can run."""

    def __init__(self, v: Variant) -> None:
        self.key, self.label, self.buf = _key(v), v.name, b""
        self.err = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            [v.python or sys.executable, "-P", _WORKER, "--serve"],
            env=_worker_env(v),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.err,
        )

    def send(self, **msg: Any) -> None:
        try:
            self.proc.stdin.write((json.dumps(msg) + "\n").encode())  # type: ignore[union-attr]
            self.proc.stdin.flush()  # type: ignore[union-attr]
        except OSError:  # it has exited
            self.fail()

    def reply(self, timeout: float) -> dict[str, Any]:
        """The next reply (a JSON line on the worker's own reply descriptor)."""
        fd = self.proc.stdout.fileno()  # type: ignore[union-attr]
        while b"\n" not in self.buf:
            chunk = os.read(fd, 1 << 16) if select.select([fd], [], [], timeout)[0] else b""
            if not chunk:  # exited, or silent past the timeout
                self.fail()
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\n")
        return dict(json.loads(line))

    def fail(self) -> None:
        self.close()
        self.err.seek(0)
        tail = self.err.read()[-3000:].decode(errors="replace")
        last = ([x for x in tail.splitlines() if x.strip()] or ["exited"])[-1].strip()
        # first line: who failed and why (its last line of stderr); then the stderr tail
        raise RuntimeError(f"benchmark worker {self.label} failed: {last}\n{tail}")

    def close(self) -> None:
        try:
            self.proc.stdin.close()  # type: ignore[union-attr]
            self.proc.wait(timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()


class _Pool:
    """Live workers; with ``reuse``, a worker serves the next case whose variant has the same
    interpreter, environment and path (preferably the variant of the same name)."""

    def __init__(self, reuse: bool) -> None:
        self.reuse = reuse
        self.idle: list[_Worker] = []

    def take(self, variants: Sequence[Variant], out: dict[str, _Worker]) -> None:
        """Fill ``out`` with a worker per variant (idle ones first)."""
        for v in variants:
            free = sorted(
                (w for w in self.idle if w.key == _key(v)), key=lambda w: w.label != v.name
            )
            if free:
                self.idle.remove(free[0])
            out[v.name] = free[0] if free else _Worker(v)
            out[v.name].label = v.name

    def give(self, workers: Sequence[_Worker]) -> None:
        done = []
        for w in workers:
            if self.reuse and w.proc.poll() is None:
                self.idle.append(w)
            else:
                done.append(w)
        for w in done:  # end of input first, so that the workers exit side by side
            try:
                w.proc.stdin.close()  # type: ignore[union-attr]
            except OSError:
                pass
        for w in done:
            w.close()


def median_ratio(a: Sequence[float], b: Sequence[float]) -> float:
    """Median over rounds of ``a[r] / b[r]``.

    Example:
        >>> median_ratio([1.0, 2.0, 6.0], [2.0, 2.0, 2.0])
        1.0
    """
    return statistics.median(x / y for x, y in zip(a, b, strict=True))


def _run_one(
    case: Case, rounds: int, pause_s: float, timeout_s: float, pool: _Pool
) -> list[Result]:
    file, function = _locate(case.setup)
    names = [v.name for v in case.variants]
    workers: dict[str, _Worker] = {}
    try:
        pool.take(case.variants, workers)
        for v in case.variants:  # the setups run concurrently
            params = {**case.params, **v.params}
            workers[v.name].send(cmd="setup", file=file, function=function, params=params)
        origin = {name: w.reply(timeout_s)["origin"] for name, w in workers.items()}
        memory = {}
        for name, w in workers.items():  # warm-ups and memory steps one at a time
            w.send(cmd="measure", warmup=case.warmup)
            memory[name] = w.reply(timeout_s)
        times: dict[str, list[float]] = {name: [] for name in names}
        for r in range(rounds):
            for name in _order(names, r):
                time.sleep(pause_s)
                workers[name].send(cmd="step")
                times[name].append(float(workers[name].reply(timeout_s)["time_s"]))
    except BaseException:
        for w in workers.values():
            w.proc.kill()  # a failed or interrupted case: no waiting for steps in flight
            w.close()
        raise
    pool.give(list(workers.values()))
    base = times.get(case.baseline or "")
    return [
        Result(
            case=case.name,
            variant=name,
            times=tuple(times[name]),
            extra_mb=float(memory[name]["extra_mb"]),
            anon_mb=float(memory[name]["anon_mb"]),
            ratio=median_ratio(times[name], base) if base else None,
            vs_before=median_ratio(times[name], times[_before_of(name)])
            if _before_of(name) in times and not name.startswith(BEFORE)
            else None,
            origin=origin[name],
            info=memory[name]["info"],
        )
        for name in names
    ]


def run_cases(
    cases: Sequence[Case],
    rounds: int = 3,
    *,
    pause_s: float = 0.25,
    timeout_s: float = 900.0,
    reuse_workers: bool = False,
) -> list[list[Result]]:
    """Time every case in interleaved rounds, one case after the other.

    Args:
        cases: the cases.
        rounds: timed rounds per case (each variant one step per round).
        pause_s: pause before every timed step.
        timeout_s: the longest wait for one reply of a worker.
        reuse_workers: a worker serves the next case (same interpreter, environment and path)
            instead of a fresh one per case: quick start-up for many small cases, at the price
            of the isolation of cases from each other. Inside :func:`shared_workers`, workers
            are always reused, also by later calls.

    Returns:
        One list of :class:`Result` per case, in variant order.

    Raises:
        ValueError: ``rounds`` < 1 or ``pause_s`` < 0.
        RuntimeError: a worker failed (the message names the variant, then its stderr).
    """
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise ValueError(f"rounds must be an integer >= 1, got {rounds!r}")
    if not pause_s >= 0:
        raise ValueError(f"pause_s must be >= 0, got {pause_s!r}")
    pool = _SHARED[0] if _SHARED else _Pool(reuse_workers)
    try:
        return [_run_one(c, rounds, pause_s, timeout_s, pool) for c in cases]
    finally:
        if not _SHARED:
            pool.reuse = False
            pool.give(pool.idle)


_SHARED: list[_Pool] = []  # the pool of the active shared_workers() block, if any


@contextmanager
def shared_workers() -> Iterator[None]:
    """Within the block, every :func:`run_cases` (any caller: a benchmark script's ``main`` run
    in this process, say) draws its workers from one pool that stays alive between calls: a
    worker serves the next variant with the same interpreter, environment and path, as with
    ``reuse_workers=True`` but across calls. Each such variant then starts one worker (one torch
    import) for a whole series of runs: for smoke tests of many scripts, at the price of the
    isolation of cases (memory figures included). The workers are closed when the block ends.
    Nested blocks share the outer pool.

    Example:
        >>> with shared_workers():
        ...     pass  # run_cases(...) calls here share their workers
    """
    if _SHARED:
        yield
        return
    _SHARED.append(_Pool(reuse=True))
    try:
        yield
    finally:
        pool = _SHARED.pop()
        pool.reuse = False
        pool.give(pool.idle)


def run_case(case: Case, rounds: int = 3, **kwargs: Any) -> list[Result]:
    """Time one case (see :func:`run_cases`)."""
    return run_cases([case], rounds, **kwargs)[0]


_FMT = {
    "time_s": ("time_s", "{:.3f}"),
    "best_s": ("best_s", "{:.3f}"),
    "floor_x": ("floor_x", "{:.2f}"),
    "ratio": ("ratio", "{:.3f}"),
    "vs_compact": ("vs_compact", "{:.3f}"),
    "vs_before": ("vs_before", "{:.3f}"),
    "speedup": ("speedup", "{:.2f}"),
    "extra_mb": ("extra_MB", "{:.1f}"),
    "anon_mb": ("anon_MB", "{:.1f}"),
    "naive_mem_pct": ("%naive_mem", "{:.1f}"),
}


def _cell(key: str, value: Any) -> str:
    if value is None:
        return "-"
    if key in _FMT:
        return _FMT[key][1].format(value)
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def format_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> str:
    """Plain-text table of result rows (dicts such as :meth:`Result.row`): the ``columns`` keys
    in order (default: those of the first row); a missing or None cell prints ``-``."""
    if not rows:
        return ""
    keys = list(columns) if columns is not None else list(rows[0])
    head = [_FMT[k][0] if k in _FMT else k for k in keys]
    body = [[_cell(k, r.get(k)) for k in keys] for r in rows]
    widths = [max(len(x) for x in col) for col in zip(head, *body, strict=True)]
    return "\n".join(
        "  ".join(x.ljust(w) for x, w in zip(line, widths, strict=True)).rstrip()
        for line in [head, *body]
    )


def add_arguments(parser: argparse.ArgumentParser, repeats: int = 3) -> None:
    """The options every benchmark script shares: ``--repeats``, ``--quick``, ``--before``,
    ``--control``."""
    parser.add_argument("--repeats", type=int, default=repeats, help="interleaved timing rounds")
    parser.add_argument("--quick", action="store_true", help="tiny shapes: a smoke test")
    parser.add_argument(
        "--before",
        metavar="PATH",
        help="a source tree (checkout of another commit) whose src/ the before: variants run",
    )
    parser.add_argument(
        "--control",
        action="store_true",
        help="with --before: a second worker of the before tree per variant (control: rows), "
        "whose vs_before is this run's noise",
    )
