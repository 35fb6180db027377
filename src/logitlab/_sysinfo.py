"""``logitlab.show_config()`` and the backend line of ``logitlab --version``: which versions and
which native kernels (ISA level, library, threads) this process uses."""

from __future__ import annotations

import sys
from typing import Any

from logitlab import _native
from logitlab._version import __version__

__all__ = ["native_summary", "show_config"]


def _dist_version(name: str) -> str | None:
    """Installed version of ``name`` without importing it (torch takes seconds to import)."""
    from importlib import metadata

    mod = sys.modules.get(name)
    if mod is not None and hasattr(mod, "__version__"):
        return str(mod.__version__)
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def native_summary(native: dict[str, Any] | None = None) -> str:
    """One line on the native backend, e.g. ``native kernels: avx512 (CPU avx512; built
    generic, avx2, avx512)``; ``native`` is :func:`logitlab._native.info`'s dict."""
    n = _native.info() if native is None else native
    if n["error"]:
        return f"native kernels: {n['error']} (kernel calls raise ValueError)"
    if not n["built"]:
        return "native kernels: not built (NumPy/torch fallback)"
    if not n["enabled"]:
        return "native kernels: off (LOGITLAB_NATIVE=0; NumPy/torch fallback)"
    stale = ", STALE: C sources changed since the build" if n["stale"] else ""
    return f"native kernels: {n['isa']} (CPU {n['cpu']}; built {', '.join(n['built'])}{stale})"


def show_config(mode: str = "stdout") -> dict[str, Any] | None:
    """Report the versions and the native backend in use, like ``numpy.show_config``.

    The native kernels (log-softmax/log-sum-exp rows, evaluator and diagnose rows, fused
    cross-entropy) are compiled at install time once per ISA level; the loader runs the best
    level the CPU supports (``generic`` < ``avx2`` < ``avx512``) unless ``LOGITLAB_NATIVE``
    (read at every kernel call) turns them off (``0``) or pins a level. Without them the
    NumPy/torch paths compute the same formulas. Nothing here imports torch.

    Args:
        mode: ``"stdout"`` prints the report and returns None; ``"dicts"`` returns it.

    Returns:
        With ``mode="dicts"``: ``logitlab``, ``python``, ``platform``, ``numpy``, ``torch``
        (version strings; ``torch`` is None when not installed) and ``native``: ``enabled``,
        ``library`` (path or None), ``isa`` (level in use or None), ``cpu`` (best level of this
        CPU), ``built`` (levels installed), ``stale`` (a checkout's C sources changed since the
        build), ``threads`` (threads of one call on a NumPy array; tensors use
        ``torch.get_num_threads()``), ``error`` (an invalid ``LOGITLAB_NATIVE``).

    Raises:
        TypeError: ``mode`` is not a string.
        ValueError: ``mode`` is neither ``"stdout"`` nor ``"dicts"``.

    Example:
        >>> import logitlab as ll
        >>> cfg = ll.show_config(mode="dicts")
        >>> cfg["logitlab"] == ll.__version__
        True
        >>> cfg["native"]["isa"] in (None, "generic", "avx2", "avx512")
        True

    References:
        NumPy's ``numpy.show_config`` (the ``mode`` argument).
    """
    if not isinstance(mode, str):
        raise TypeError(f"mode must be a string, got {type(mode).__name__}")
    if mode not in ("stdout", "dicts"):
        raise ValueError(f"mode must be 'stdout' or 'dicts', got {mode!r}")
    import platform

    native = _native.info()
    cfg: dict[str, Any] = {
        "logitlab": __version__,
        "python": platform.python_version(),
        "platform": f"{platform.system()} {platform.machine()}",
        "numpy": _dist_version("numpy"),
        "torch": _dist_version("torch"),
        "native": native,
    }
    if mode == "dicts":
        return cfg
    torch_line = cfg["torch"] or "not installed"
    if cfg["torch"] and "torch" not in sys.modules:
        torch_line += " (not imported)"
    lines = [
        f"logitlab {__version__}",
        f"python {cfg['python']} ({cfg['platform']})",
        f"numpy {cfg['numpy']}",
        f"torch {torch_line}",
        native_summary(native),
        f"  library: {native['library'] or 'none'}",
        f"  threads: {native['threads']} per call on NumPy arrays "
        "(torch tensors: torch.get_num_threads())",
    ]
    print("\n".join(lines))
    return None
