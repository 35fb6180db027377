"""logitlab's run-time switches, read in one place, at call time.

Every ``LOGITLAB_*`` environment variable is read here and nowhere else, each time a caller asks
for :func:`current` (a dictionary lookup per variable: nothing is cached at import, so a variable
set after ``import logitlab`` takes effect at the next call). A context can override any field
with :func:`override` (tests use it instead of patching private globals) and
:func:`logitlab.set_validation` / :func:`logitlab.validation` override ``validate``.

======================== ================ ==================================================
variable                 field            values
======================== ================ ==================================================
``LOGITLAB_VALIDATE``    ``validate``     ``0``/``false``: skip the checks that read values
``LOGITLAB_NATIVE``      ``native``       ``0`` off, ``1`` (default) the best ISA level,
                                          or ``generic``/``avx2``/``avx512``
``LOGITLAB_CHUNK_LAYOUT`` ``chunk_layout`` ``auto`` (default), ``rows`` or ``cols``: the
                                          chunks of :func:`logitlab.torch.linear_cross_entropy`
``LOGITLAB_HUGEPAGES``   ``hugepages``    ``0``: no ``madvise(MADV_HUGEPAGE)`` on scratch buffers
``LOGITLAB_DEBUG``       ``debug``        ``1``: the command line re-raises errors (tracebacks)
======================== ================ ==================================================
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

__all__ = [
    "Config",
    "current",
    "native_level",
    "override",
    "set_validation",
    "validation",
    "validation_enabled",
]

LEVELS = ("generic", "avx2", "avx512")
_OFF = ("0", "false", "off", "no")
_ON = ("", "1", "true", "on", "yes", "auto")
_LAYOUTS = ("auto", "rows", "cols")


@dataclass(frozen=True)
class Config:
    """The switches in effect for one call (see the module docstring)."""

    validate: bool = True
    """Run the argument checks that read array values (they sync a GPU)."""
    native: str | None = "best"
    """``None`` (no native kernel), ``"best"``, or an ISA level of :data:`LEVELS`."""
    chunk_layout: str = "auto"
    """Token-major (``rows``), class-major (``cols``) or automatic linear-CE chunks."""
    hugepages: bool = True
    """Advise transparent huge pages for large CPU scratch buffers."""
    debug: bool = False
    """The command line re-raises instead of printing one-line errors."""


_OVERRIDES: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "logitlab_config_overrides", default=None
)


def _flag(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None:
        return default
    v = raw.strip().lower()
    if v in _OFF:
        return False
    if v in _ON:
        return True
    raise ValueError(f"{name}={raw!r}: expected 0 or 1")


def _native() -> str | None:
    raw = os.environ.get("LOGITLAB_NATIVE", "")
    v = raw.strip().lower()
    if v in _OFF:
        return None
    if v in _ON:
        return "best"
    if v in LEVELS:
        return v
    raise ValueError(
        f"LOGITLAB_NATIVE={raw!r}: expected 0 (off), 1 (the best level), or one of "
        f"{', '.join(LEVELS)}"
    )


def _layout() -> str:
    raw = os.environ.get("LOGITLAB_CHUNK_LAYOUT", "auto")
    v = raw.strip().lower()
    if v not in _LAYOUTS:
        raise ValueError(f"LOGITLAB_CHUNK_LAYOUT={raw!r}: expected one of {', '.join(_LAYOUTS)}")
    return v


def current() -> Config:
    """The configuration in effect now: the environment, then this context's overrides.

    Raises:
        ValueError: an environment variable holds a value it does not take (the message names
            the variable).

    Example:
        >>> from logitlab import _config
        >>> with _config.override(native=None):
        ...     _config.current().native is None
        True
    """
    over = _OVERRIDES.get()
    fields: dict[str, Any] = {}
    if not over or "validate" not in over:
        fields["validate"] = _flag("LOGITLAB_VALIDATE", True)
    if not over or "native" not in over:
        fields["native"] = _native()
    if not over or "chunk_layout" not in over:
        fields["chunk_layout"] = _layout()
    if not over or "hugepages" not in over:
        fields["hugepages"] = _flag("LOGITLAB_HUGEPAGES", True)
    if not over or "debug" not in over:
        fields["debug"] = _flag("LOGITLAB_DEBUG", False)
    return Config(**fields, **(over or {}))


def debug() -> bool:
    """Whether the command line keeps tracebacks: ``LOGITLAB_DEBUG`` (or an override) alone.

    Read on its own, and leniently (any value but empty or ``0`` is on), because the command
    line asks while it reports another error: a malformed ``LOGITLAB_NATIVE`` must not hide it,
    and a malformed ``LOGITLAB_DEBUG`` is taken as a request for the traceback.

    Example:
        >>> from logitlab import _config
        >>> with _config.override(debug=True):
        ...     _config.debug()
        True
    """
    over = _OVERRIDES.get()
    if over and "debug" in over:
        return bool(over["debug"])
    return os.environ.get("LOGITLAB_DEBUG", "").strip().lower() not in ("", *_OFF)


def _checked(changes: dict[str, Any]) -> dict[str, Any]:
    names = {f.name for f in dataclasses.fields(Config)}
    for key, value in changes.items():
        if key not in names:
            raise TypeError(f"override() got an unknown switch {key!r}; known: {sorted(names)}")
        if key == "native" and value not in (None, "best", *LEVELS):
            raise ValueError(f"native must be None, 'best' or one of {LEVELS}, got {value!r}")
        if key == "chunk_layout" and value not in _LAYOUTS:
            raise ValueError(f"chunk_layout must be one of {_LAYOUTS}, got {value!r}")
        if key in ("validate", "hugepages", "debug") and not isinstance(value, bool):
            raise TypeError(f"{key} must be a bool, got {type(value).__name__}")
    return changes


@contextlib.contextmanager
def override(**changes: Any) -> Iterator[Config]:
    """Override switches for the current context (thread and task local); yields the result.

    Raises:
        TypeError: an unknown switch, or a flag that is not a bool.
        ValueError: a value the switch does not take.

    Example:
        >>> from logitlab import _config
        >>> with _config.override(chunk_layout="rows") as cfg:
        ...     cfg.chunk_layout
        'rows'
    """
    merged = {**(_OVERRIDES.get() or {}), **_checked(changes)}
    token = _OVERRIDES.set(merged)
    try:
        yield current()
    finally:
        _OVERRIDES.reset(token)


def set_override(**changes: Any) -> None:
    """Override switches for the rest of the current context (no reset: :func:`override` is the
    scoped form)."""
    _OVERRIDES.set({**(_OVERRIDES.get() or {}), **_checked(changes)})


def validation_enabled() -> bool:
    """Whether value checks that read array contents (and so sync a GPU) are on.

    Example:
        >>> import logitlab
        >>> logitlab.validation_enabled()
        True
    """
    over = _OVERRIDES.get()
    if over and "validate" in over:
        return bool(over["validate"])
    return _flag("LOGITLAB_VALIDATE", True)


def native_level() -> str | None:
    """The ``native`` switch alone (None, "best" or a level), read as :func:`current` does."""
    over = _OVERRIDES.get()
    if over and "native" in over:
        return over["native"]  # type: ignore[no-any-return]
    return _native()


def set_validation(enabled: bool) -> None:
    """Turn value checks on or off for the current context.

    Checks of shapes and dtypes are always done (they cost nothing). Checks that read values
    (class index in range, probabilities in [0, 1] and summing to one, NaN targets) force a
    device-to-host synchronisation on GPUs; turn them off inside a training loop with
    ``set_validation(False)``, the :func:`validation` context manager, or the environment variable
    ``LOGITLAB_VALIDATE=0``.

    Example:
        >>> import logitlab
        >>> logitlab.set_validation(False); logitlab.validation_enabled()
        False
        >>> logitlab.set_validation(True)
    """
    set_override(validate=bool(enabled))


@contextlib.contextmanager
def validation(enabled: bool) -> Iterator[None]:
    """Context manager form of :func:`set_validation`.

    Example:
        >>> import logitlab
        >>> with logitlab.validation(False):
        ...     logitlab.validation_enabled()
        False
    """
    with override(validate=bool(enabled)):
        yield
