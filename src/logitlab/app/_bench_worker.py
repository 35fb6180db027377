"""The worker side of the benchmark harness (:mod:`logitlab.app.bench`): one process per
variant, run by path as ``python -P _bench_worker.py --serve``, that loads the case's setup,
measures the peak memory of one step and times steps on the parent's command.

Only the standard library is imported here: a ``before:`` twin runs this file against another
tree's ``logitlab`` (first on its ``PYTHONPATH``), which need not have this package.
"""

from __future__ import annotations

import gc
import importlib.util
import json
import math
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


def _status() -> dict[str, int]:
    """The kB fields of /proc/self/status (empty where there is none)."""
    try:
        with open("/proc/self/status") as f:
            rows = [line.split() for line in f if line.endswith(" kB\n")]
        return {r[0].rstrip(":"): int(r[1]) for r in rows}
    except OSError:
        return {}


def _mib(top_kb: int | None, base_kb: int | None, keep_bytes: int) -> float:
    """MiB from ``base_kb`` up to the peak ``top_kb``, less ``keep_bytes`` (NaN if unknown)."""
    if top_kb is None or base_kb is None:
        return math.nan
    return max((top_kb - base_kb) * 1024 - keep_bytes, 0) / 2**20


@dataclass
class _Bench:
    step: Callable[[], Any]
    prepare: Callable[[], Any] = lambda: None
    keep_bytes: int = 0
    info: Any = None

    def measure(self, warmup: bool) -> dict[str, Any]:
        """Warm up, then the peaks of one step (module docstring, Memory)."""
        if warmup:
            self.prepare()
            self.step()
        self.prepare()
        before, anon, done = _status(), [0], threading.Event()

        def sample() -> None:  # RssAnon has no high-water mark
            while not done.wait(0.005):
                anon[0] = max(anon[0], _status().get("RssAnon", 0))

        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # VmHWM := VmRSS
        except OSError:
            before.pop("VmRSS", None)
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        self.step()
        done.set()
        sampler.join()
        after = _status()
        extra = _mib(after.get("VmHWM"), before.get("VmRSS"), self.keep_bytes)
        top_anon = max(anon[0], after.get("RssAnon", 0))
        peak_anon = _mib(top_anon, before.get("RssAnon"), self.keep_bytes)
        info = self.info() if callable(self.info) else self.info
        return dict(extra_mb=extra, anon_mb=peak_anon, info=dict(info or {}))

    def timed(self) -> float:
        self.prepare()
        t0 = time.perf_counter()
        self.step()
        return time.perf_counter() - t0


def _bench_of(out: Any, name: str) -> _Bench:
    if callable(out):
        return _Bench(out)
    if isinstance(out, dict) and callable(out.get("step")):
        if set(out) <= {"step", "prepare", "keep_bytes", "info"}:
            return _Bench(**out)
    raise TypeError(
        f"setup {name} returned {type(out).__name__}: expected the step (a callable) or a "
        "dict with 'step' and optionally 'prepare', 'keep_bytes', 'info'"
    )


def _load(path: str, qualname: str, cache: dict[str, Any]) -> Any:
    if path not in cache:
        spec = importlib.util.spec_from_file_location(f"_bench_case_{len(cache)}", path)
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot load {path}")
        cache[path] = sys.modules[spec.name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(cache[path])
    obj = cache[path]
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def _serve() -> None:
    """Worker loop: one JSON command per stdin line, one JSON reply per command."""
    replies = os.dup(1)
    os.dup2(2, 1)  # what the case prints goes to stderr; the replies keep their own descriptor
    modules: dict[str, Any] = {}
    bench: _Bench | None = None
    for line in sys.stdin:
        msg = json.loads(line)
        if msg["cmd"] == "setup":
            bench = None
            gc.collect()  # the previous case's arrays (a reused worker) go before the next setup
            fn = _load(msg["file"], msg["function"], modules)
            bench = _bench_of(fn(**msg["params"]), msg["function"])
            lib = getattr(sys.modules.get("logitlab"), "__file__", None)
            out: dict[str, Any] = dict(origin=os.path.dirname(lib) if lib else None)
        elif msg["cmd"] == "measure" and bench is not None:
            out = bench.measure(bool(msg["warmup"]))
        elif msg["cmd"] == "step" and bench is not None:
            out = dict(time_s=bench.timed())
        else:
            raise ValueError(f"unexpected command {msg!r}")
        os.write(replies, (json.dumps(out) + "\n").encode())


if __name__ == "__main__":
    if sys.argv[1:] == ["--serve"]:
        _serve()
