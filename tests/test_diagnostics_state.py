"""Declared per-field merges of the diagnose accumulator: merge over any split of the rows equals
one pass, and no state field exists without a declaration."""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
from collections.abc import Iterator

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from logitlab import _native
from logitlab.diagnostics import LogitStats
from logitlab.diagnostics.hist import GradHist, LogHist
from logitlab.diagnostics.state import (
    MAX,
    SUM,
    Merge,
    Moments,
    accumulator,
    merge_states,
    reset_states,
    state,
)


def _flat(d: object, pre: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    if isinstance(d, dict):
        for k, v in d.items():
            out.update(_flat(v, f"{pre}.{k}"))
    elif isinstance(d, list) and d and isinstance(d[0], (dict, list)):
        for i, v in enumerate(d):
            out.update(_flat(v, f"{pre}[{i}]"))
    else:
        out[pre] = d
    return out


def _assert_same_report(got: LogitStats, want: LogitStats) -> None:
    a, b = _flat(got.finalize().to_dict()), _flat(want.finalize().to_dict())
    assert a.keys() == b.keys()
    for key, va in a.items():
        vb = b[key]
        if isinstance(va, float):
            # float sums added in another order (and Chan's update): a few ulps of the data
            assert va == pytest.approx(vb, rel=1e-12, abs=1e-11, nan_ok=True), key
        elif isinstance(va, list) and va and isinstance(va[0], float):
            assert va == pytest.approx(vb, rel=1e-12, abs=1e-11), key
        else:
            assert va == vb, key  # counts, histograms, loss scale, findings: exact


@contextlib.contextmanager
def _native_env(value: str) -> Iterator[None]:
    # hypothesis runs many examples per test: a function-scoped monkeypatch would not reset
    old = os.environ.get("LOGITLAB_NATIVE")
    os.environ["LOGITLAB_NATIVE"] = value
    try:
        yield
    finally:
        if old is None:
            del os.environ["LOGITLAB_NATIVE"]
        else:
            os.environ["LOGITLAB_NATIVE"] = old


def _data(seed: int, dtype: type, n: int, v: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, v)) * rng.uniform(0.2, 9, (n, 1)) + rng.uniform(-4, 4, (n, 1))
    x = x.astype(dtype)
    x[rng.integers(0, n), 0] = np.nan  # non-finite rows are counted, then left out
    x[rng.integers(0, n), -1] = -np.inf
    x[rng.integers(0, n)] = 12.0  # a constant row past the float16 exp limit
    return x, rng.integers(0, v, n)


@pytest.mark.parametrize(
    ("dtype", "backend"),
    [(np.float16, "native"), (np.float32, "native"), (np.float32, "numpy"), (np.float64, "numpy")],
)
@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    cuts=st.lists(st.integers(0, 60), max_size=6),
    order=st.randoms(use_true_random=False),
    with_target=st.booleans(),
)
def test_merge_over_any_split_equals_one_pass(
    dtype: type, backend: str, seed: int, cuts: list[int], order: object, with_target: bool
) -> None:
    if backend == "native" and _native.lib() is None:
        pytest.skip("the native kernels are not built")
    with _native_env("1" if backend == "native" else "0"):
        x, t = _data(seed, dtype, 60, 37)
        tt = t if with_target else None
        one = LogitStats(37)
        one.update(x, tt)
        bounds = [0, *sorted(cuts), 60]
        parts = []
        for a, b in zip(bounds[:-1], bounds[1:], strict=True):
            p = LogitStats(37)  # an empty part is an identity of merge
            p.update(x[a:b], None if tt is None else tt[a:b], row_offset=a)
            parts.append(p)
        order.shuffle(parts)  # type: ignore[attr-defined]
        while len(parts) > 1:  # merge in a random tree
            i = order.randrange(len(parts) - 1)  # type: ignore[attr-defined]
            parts[i : i + 2] = [parts[i].merge(parts[i + 1])]
        _assert_same_report(parts[0], one)


def test_moments_merge_is_chan_against_float64_two_pass() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal(1000) * 3 + 1e3
    m = Moments()
    for part in np.array_split(x, 7):
        c = part.mean()
        m = m.merge(Moments(len(part), float(c), float(((part - c) ** 2).sum())))
    assert m.n == 1000
    assert m.mean == pytest.approx(x.mean(), rel=1e-15)
    assert m.m2 == pytest.approx(((x - x.mean()) ** 2).sum(), rel=1e-12)


@pytest.mark.parametrize("cls", [LogitStats, GradHist, LogHist])
def test_every_field_is_declared_with_a_merge(cls: type) -> None:
    fields = dataclasses.fields(cls)
    assert fields
    for f in fields:
        assert isinstance(f.metadata.get("logitlab.merge"), Merge), f.name
    # slots: nothing outside the declarations can be set on an instance
    obj = cls(3) if cls is LogitStats else cls()
    assert not hasattr(obj, "__dict__")
    with pytest.raises(AttributeError):
        obj.undeclared = 0


def test_after_an_update_every_attribute_is_declared() -> None:
    s = LogitStats(4)
    s.update(np.arange(12.0).reshape(3, 4), [0, 1, 2])
    declared = {f.name for f in dataclasses.fields(LogitStats)}
    assert set(LogitStats.__slots__) == declared  # no other storage


def test_a_field_without_a_merge_is_refused_at_class_creation() -> None:
    with pytest.raises(TypeError, match="Broken.count is a state field without a merge"):

        @accumulator
        class Broken:
            total: int = state(0, SUM)
            count: int = 0

    with pytest.raises(TypeError, match="merge must be a Merge"):
        state(0, "sum")


def test_generic_merge_follows_the_declarations() -> None:
    @accumulator
    class Pair:
        total: int = state(0, SUM)
        top: float = state(-math.inf, MAX)

        def __init__(self) -> None:
            reset_states(self)

    a, b = Pair(), Pair()
    a.total, a.top, b.total, b.top = 2, 1.5, 3, 0.5
    merge_states(a, b)
    assert (a.total, a.top) == (5, 1.5)


def test_merge_refuses_different_classes_or_targets_and_changes_nothing() -> None:
    a, b = LogitStats(3), LogitStats(4)
    a.update(np.zeros((2, 3)))
    before = a.finalize().to_dict()
    with pytest.raises(ValueError, match=r"LogitStats\.V: 3 != 4"):
        a.merge(b)
    assert a.finalize().to_dict() == before
    c = LogitStats(3)
    c.update(np.zeros((1, 3)), [1])
    with pytest.raises(ValueError, match="has_target"):
        a.merge(c)
    assert a.finalize().to_dict() == before
