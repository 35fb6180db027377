"""LogitMonitor: statistics equal a direct computation, warnings fire once, the hook is removable.

(Placed at tests/ top level: a ``tests/torch/`` folder makes ruff classify ``import torch`` as a
first-party import, because pyproject lists ``tests`` as a source root.)
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from logitlab.diagnostics import diagnose  # noqa: E402
from logitlab.torch.monitor import (  # noqa: E402
    Float16OverflowWarning,
    LogitMonitor,
    LogitWarning,
    SaturationWarning,
)


class _LM(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = torch.nn.Linear(6, 6)
        self.lm_head = torch.nn.Linear(6, 50, bias=False)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.lm_head(torch.tanh(self.body(h)))


def test_stats_match_direct_computation() -> None:
    torch.manual_seed(0)
    model = _LM()
    inputs = [torch.randn(8, 6) for _ in range(3)]
    outs = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LogitWarning)
        with LogitMonitor(model.lm_head) as mon:
            for h in inputs:
                outs.append(model(h).detach())
    z = torch.cat(outs).double()
    st = mon.stats()
    assert (st.calls, st.rows) == (3, 24)
    assert st.max_abs == pytest.approx(float(z.abs().max()), rel=1e-6)
    assert st.mean_top_prob == pytest.approx(float(torch.softmax(z, -1).max(-1).values.mean()))
    rep = diagnose(z.numpy())
    assert st.saturated_rows == rep.dtypes["float16"].saturated_rows
    assert st.f16_overflow_rows == rep.dtypes["float16"].naive_overflow_rows


def test_float16_overflow_warns_once_and_counts() -> None:
    lin = torch.nn.Linear(2, 4, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, 0], [0, 1], [0, 0], [0, 0]]))
    mon = LogitMonitor(lin, saturation_fraction=1.0)
    with pytest.warns(Float16OverflowWarning, match="float16 softmax overflows"):
        lin(torch.tensor([[12.0, 0.0], [1.0, 1.0]]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a second warning would raise
        lin(torch.tensor([[20.0, 0.0]]))
    st = mon.stats()
    assert (st.rows, st.f16_overflow_rows) == (3, 2)
    real = torch.exp(torch.tensor([[12.0, 0, 0, 0], [1, 1, 0, 0], [20, 0, 0, 0]]).half()).sum(-1)
    assert int((~torch.isfinite(real)).sum()) == st.f16_overflow_rows
    mon.remove()
    lin(torch.tensor([[30.0, 0.0]]))
    assert mon.stats().rows == 3  # removed: no more updates


def test_saturation_warning_threshold() -> None:
    lin = torch.nn.Linear(1, 3, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0], [0.0], [0.0]]))
    with LogitMonitor(lin, saturation_fraction=0.5) as mon:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            lin(torch.tensor([[9.0], [1.0]]))  # 1 of 2 saturated: not above 0.5
        with pytest.warns(SaturationWarning):
            lin(torch.tensor([[9.0], [10.0]]))  # 3 of 4
    gap = 2 * math.exp(-9.0) / (1 + 2 * math.exp(-9.0))
    assert gap < 2.0**-10
    assert mon.stats().saturated_rows == 3


def test_outputs_and_bad_args() -> None:
    class Tup(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, int]:
            return x, 1

    m = Tup()
    with LogitMonitor(m, axis=0) as mon:
        m(torch.tensor(np.array([[0.0, 1.0], [2.0, 3.0], [4.0, 5.0]])))
    assert mon.stats().rows == 2  # axis 0 is the class axis: 2 rows of 3
    with pytest.raises(ValueError):
        LogitMonitor(m, check_every=0)
    assert math.isnan(LogitMonitor(torch.nn.Identity()).stats().max_abs)


def test_float64_logits_stay_float64() -> None:
    # float64 logits were cast to float32: rows that differ below float32's resolution were
    # counted alike, and the maxima and mean top probability carried float32 rounding.
    import mpmath

    with mpmath.workdps(50):
        _check_float64_monitor(mpmath)


def _check_float64_monitor(mpmath: Any) -> None:
    ln_f16 = mpmath.log(65520)  # naive float16 softmax overflows iff lse > ln 65520
    sat = mpmath.log(1023)  # [0, -d] has 1 - p_max < 2^-10 iff d > ln 1023
    tiny = mpmath.mpf("1e-11")
    half = ln_f16 - mpmath.log(2)
    rows_mp = [
        [half + tiny, half + tiny],  # lse = ln 65520 + 1e-11: overflows
        [half - tiny, half - tiny],  # just below: does not
        [mpmath.mpf(0), -(sat + tiny)],  # saturated
        [mpmath.mpf(0), -(sat - tiny)],  # just not
        [mpmath.mpf(0), mpmath.mpf("1e-9")],  # p_max = 0.5 + 2.5e-10
        [1 + mpmath.mpf(2) ** -30, mpmath.mpf(-3)],  # 1 + 2^-30 is 1 in float32
    ]
    z = torch.tensor([[float(v) for v in r] for r in rows_mp], dtype=torch.float64)
    m = torch.nn.Identity()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LogitWarning)
        with LogitMonitor(m) as mon:
            m(z)
    st = mon.stats()

    # the truth of the float64 inputs as given, at 50 digits
    rows = [[mpmath.mpf(float(v)) for v in r] for r in z.tolist()]
    lse = [mpmath.log(sum(mpmath.exp(v) for v in r)) for r in rows]
    top = [mpmath.exp(max(r) - s) for r, s in zip(rows, lse, strict=True)]
    assert st.f16_overflow_rows == sum(s > ln_f16 for s in lse) == 1
    assert st.saturated_rows == sum(1 - p < mpmath.mpf(2) ** -10 for p in top) == 1
    assert st.max_logit == float(max(max(r) for r in rows))  # exact: a float64 input
    assert st.max_abs == st.max_logit
    assert st.mean_top_prob == pytest.approx(float(sum(top) / len(top)), rel=1e-14, abs=0)
