"""The row record of the diagnose entry pass: one declaration in C, the same in NumPy, and both
backends filling it with the quantities its fields name (float64 truth)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from logitlab import _native
from logitlab.diagnostics.rows import ROW_DTYPE, Workspace, row_pass

HEADER = Path(__file__).resolve().parents[1] / "csrc" / "logitlab.h"


def _c_struct_fields() -> list[tuple[str, str]]:
    text = HEADER.read_text()
    m = re.search(r"typedef struct \{(.*?)\}\s*logitlab_diag_row;", text, re.S)
    assert m is not None, "csrc/logitlab.h declares no logitlab_diag_row"
    body = re.sub(r"/\*.*?\*/", "", m.group(1), flags=re.S)
    return re.findall(r"(\w+)\s+(\w+)\s*;", body)


def test_numpy_record_is_the_c_struct() -> None:
    if not HEADER.exists():
        pytest.skip("no C sources beside the package")
    fields = _c_struct_fields()
    assert [name for _, name in fields] == list(ROW_DTYPE.names)
    assert all(ctype == "double" for ctype, _ in fields)
    assert all(ROW_DTYPE[name] == np.float64 for name in ROW_DTYPE.names)
    assert ROW_DTYPE.itemsize == 8 * len(fields)  # no padding on either side


def _truth(x: np.ndarray, t: np.ndarray) -> dict[str, np.ndarray]:
    """Every field from its definition, in float64, entry by entry."""
    z = x.astype(np.float64)
    r = np.arange(len(z))
    k = np.argmax(z, axis=1)
    a = z[r, k]
    d = z - a[:, None]
    w = np.exp(d)
    w[r, k] = 0
    s = w.sum(1)
    p = w / (1 + s)[:, None]
    p[r, k] = 1 / (1 + s)
    return {
        "max": a,
        "min": z.min(1),
        "sum_w": s,
        "ent_w": -(d * w).sum(1),
        "mean": z.mean(1),
        "std": z.std(1),
        "sum_w_half": (w * w).sum(1),
        "ent_w_half": -(d * w * w).sum(1) / 0.5,
        "sum_w_two": np.sqrt(w).sum(1),
        "ent_w_two": -(d * np.sqrt(w)).sum(1) / 2.0,
        "abs_z_w": (np.abs(z) * w).sum(1),
        "min_abs": np.abs(z).min(1),
        "p_target": p[r, t],
    }


@pytest.mark.parametrize("backend", ["numpy", "native"])
@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_both_backends_fill_the_record_with_what_its_fields_name(
    backend: str, dtype: type, monkeypatch: pytest.MonkeyPatch
) -> None:
    if backend == "native" and _native.lib() is None:
        pytest.skip("the native kernels are not built")
    monkeypatch.setenv("LOGITLAB_NATIVE", "1" if backend == "native" else "0")
    rng = np.random.default_rng(7)
    x = (rng.standard_normal((40, 700)) * rng.uniform(0.5, 6, (40, 1))).astype(dtype)
    x[4] = np.nan  # left out: flagged, not in the records
    t = rng.integers(0, 700, 40)
    # the NumPy path takes float16 widened by the accumulator; the kernel widens it in cache
    xw = x if backend == "native" or dtype == np.float32 else x.astype(np.float32)
    h_logit = np.zeros(1 << 16, np.int64)
    rp = row_pass(xw, t, h_logit, Workspace())
    assert rp.ok.tolist() == [i != 4 for i in range(40)]
    assert rp.q.dtype == ROW_DTYPE and len(rp.q) == 39
    keep = rp.ok
    want = _truth(x[keep], t[keep])
    for name in ROW_DTYPE.names:
        # float32 work sums (blocks of 512 added in double, or NumPy's pairwise float32); a
        # mean near 0 is held to the scale of the row's deviations
        atol = 1e-6 * want["std"] if name == "mean" else 0.0
        err = np.abs(rp.q[name] - want[name])
        assert (err <= 2e-5 * np.abs(want[name]) + atol).all(), (name, err.max())
    assert h_logit.sum() == 39 * 700
