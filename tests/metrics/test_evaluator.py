"""Streaming Evaluator: equal to the batch metrics, mergeable, serialisable, distributed."""

from __future__ import annotations

import os
import socket

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from logitlab.metrics import Evaluator, accuracy, brier_score, calibration_error, nll


def _data(seed: int = 0, n: int = 1000, c: int = 7) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, n)
    return rng.standard_normal((n, c)) * 2 + 2 * np.eye(c)[y], y


def _check_equal(ev: Evaluator, z: np.ndarray, y: np.ndarray) -> None:
    r = ev.compute()
    assert r.nll == pytest.approx(nll(logits=z, target=y), rel=1e-12)
    assert r.accuracy == pytest.approx(accuracy(z, y))
    assert r.top5_accuracy == pytest.approx(accuracy(z, y, k=5))
    assert r.brier == pytest.approx(brier_score(logits=z, target=y), rel=1e-12)
    for norm, got in (("l1", r.ece), ("l2", r.rmsce), ("max", r.mce)):
        assert got == pytest.approx(
            calibration_error(logits=z, target=y, norm=norm).value, rel=1e-9, abs=1e-12
        )


def test_streaming_equals_batch() -> None:
    z, y = _data()
    ev = Evaluator()
    for a in range(0, 1000, 137):
        ev.update(z[a : a + 137], y[a : a + 137])
    _check_equal(ev, z, y)


@pytest.mark.parametrize(("seed", "n", "fine"), [(1, 5000, 3000), (4, 20000, 300), (5, 997, 30)])
def test_equal_mass_within_stated_bound(seed: int, n: int, fine: int) -> None:
    z, y = _data(seed, n)
    ev = Evaluator(fine_bins=fine)
    ev.update(z, y)
    exact = calibration_error(logits=z, target=y, binning="equal-mass").value
    r = ev.compute()
    assert r.ece_equal_mass_bound == ev.equal_mass_error_bound() > 0
    assert abs(r.ece_equal_mass - exact) <= r.ece_equal_mass_bound
    # the bound shrinks with the resolution: two fine bins per boundary at most
    assert r.ece_equal_mass_bound <= 2 * 14 * ev.hist[0].max() / n


def test_equal_width_exact_for_confidences_on_bin_edges() -> None:
    # binary probabilities whose top-label confidence is exactly an edge i/15 (or 0.5, 1):
    # streaming fine bins and batch bins must put them on the same side
    conf = np.array([i / 15 for i in range(8, 16)] + [0.5, 1.0, 11 / 15, 0.6])
    p1 = np.concatenate([conf, 1 - conf])
    y = np.arange(p1.size) % 2
    ev = Evaluator(from_probs=True)
    ev.update(p1, y)
    batch = calibration_error(probs=p1, target=y)
    r = ev.compute()
    np.testing.assert_array_equal(r.table.counts, batch.table.counts)
    assert r.ece == pytest.approx(batch.value, rel=1e-12)


def test_torch_float32_input_and_binary_brier() -> None:
    torch = pytest.importorskip("torch")
    z, y = _data(6, 3000, 10)
    ev = Evaluator()
    ev.update(torch.from_numpy(z.astype(np.float32)), torch.from_numpy(y))
    r = ev.compute()
    z32 = z.astype(np.float32).astype(np.float64)
    assert r.nll == pytest.approx(nll(logits=z32, target=y), rel=1e-6)
    assert r.brier == pytest.approx(brier_score(logits=z32, target=y), rel=1e-6)
    assert r.accuracy == accuracy(z32, y)
    # binary (N,) logits of class 1: the one-column Brier score
    zb = z[:, 0] - z[:, 1]
    yb = (y % 2).astype(np.int64)
    eb = Evaluator()
    eb.update(zb, yb)
    assert eb.compute().brier == pytest.approx(brier_score(logits=zb, target=yb), rel=1e-12)
    with pytest.raises(ValueError, match="mix binary"):
        eb.update(np.zeros((2, 2)), np.array([0, 1]))


def test_near_deterministic_rows_keep_their_tiny_nll() -> None:
    # s = exp(-40) < eps: the exact decomposition keeps -log p_t = log1p(s) = 4.25e-18
    z = np.array([[0.0, -40.0]] * 4, dtype=np.float32)
    ev = Evaluator()
    ev.update(z, np.zeros(4, dtype=np.int64))
    assert ev.compute().nll == pytest.approx(np.exp(-40.0), rel=1e-5)


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        (np.array([[0.0, np.nan], [1.0, 2.0]]), "NaN"),
        (np.array([[0.0, np.inf], [1.0, 2.0]]), r"\+inf"),
        (np.array([[-np.inf, -np.inf], [1.0, 2.0]]), "no finite value"),
    ],
)
def test_bad_batch_leaves_state_unchanged(bad: np.ndarray, match: str) -> None:
    z, y = _data(7, 50, 2)
    ev = Evaluator()
    ev.update(z, y)
    before = ev.state_dict()
    with pytest.raises(ValueError, match=match):
        ev.update(bad, np.array([0, 1]))
    with pytest.raises(ValueError, match="not a class index"):
        ev.update(np.zeros((2, 2)), np.array([0, 2]))
    after = ev.state_dict()
    np.testing.assert_array_equal(before["sums"], after["sums"])
    np.testing.assert_array_equal(before["hist"], after["hist"])


def test_masked_classes_and_probabilities() -> None:
    z, y = _data(8, 300, 5)
    z[:, 4] = -np.inf  # a masked class never gets probability
    y = np.where(y == 4, 0, y)
    ev = Evaluator()
    ev.update(z, y)
    assert ev.compute().nll == pytest.approx(nll(logits=z, target=y), rel=1e-12)
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    evp = Evaluator(from_probs=True)
    evp.update(p, y)
    assert evp.compute().nll == pytest.approx(nll(probs=p, target=y), rel=1e-9)
    with pytest.raises(ValueError, match="sum to 1"):
        evp.update(p * 0.9, y)


def test_merge_and_state_dict() -> None:
    z, y = _data(2)
    a, b = Evaluator(), Evaluator()
    a.update(z[:400], y[:400])
    b.update(z[400:], y[400:])
    merged = Evaluator.from_state_dict(a.state_dict()).merge(b)
    _check_equal(merged, z, y)
    with pytest.raises(ValueError, match="before any update"):
        Evaluator().compute()
    with pytest.raises(ValueError, match="classes"):
        a.update(np.zeros((2, 3)), np.array([0, 1]))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _worker(rank: int, port: int, out: str) -> None:
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group(
        "gloo", rank=rank, world_size=2, timeout=__import__("datetime").timedelta(seconds=60)
    )
    try:
        z, y = _data(3)
        half = slice(0, 500) if rank == 0 else slice(500, 1000)
        ev = Evaluator()
        ev.update(z[half], y[half])
        ev.all_reduce()
        np.save(
            f"{out}/state{rank}.npy",
            np.concatenate([ev.state_dict()["sums"], ev.state_dict()["hist"].ravel()]),
        )
    finally:
        dist.destroy_process_group()


def test_all_reduce_over_gloo(tmp_path) -> None:  # type: ignore[no-untyped-def]
    torch = pytest.importorskip("torch")
    mp = torch.multiprocessing
    mp.start_processes(
        _worker, args=(_free_port(), str(tmp_path)), nprocs=2, join=True, start_method="spawn"
    )
    z, y = _data(3)
    single = Evaluator()
    single.update(z, y)
    ref = np.concatenate([single.state_dict()["sums"], single.state_dict()["hist"].ravel()])
    for rank in (0, 1):
        np.testing.assert_allclose(np.load(tmp_path / f"state{rank}.npy"), ref, rtol=1e-12)


# ---------------------------------------------------------------- native float32 kernel


def _native_and_fallback(
    z: np.ndarray, y: np.ndarray, monkeypatch: pytest.MonkeyPatch, **kw: int
) -> tuple[Evaluator, Evaluator]:
    from logitlab import _native

    if _native.lib() is None:
        pytest.skip("no C compiler: the native kernel is not built")
    native = Evaluator(**kw)
    native.update(z, y)
    with monkeypatch.context() as m:
        m.setattr(_native, "lib", lambda: None)
        fallback = Evaluator(**kw)
        fallback.update(z, y)
    return native, fallback


@pytest.mark.parametrize(("n", "c"), [(1, 1), (13, 2), (1000, 10), (517, 9), (64, 1000)])
def test_native_kernel_matches_torch_path(n: int, c: int, monkeypatch: pytest.MonkeyPatch) -> None:
    # float32 rows (the kernel's dtype), with ties, masked classes, a masked target and
    # near-deterministic rows: the fused kernel and the block-wise torch/NumPy path agree
    rng = np.random.default_rng(n + c)
    z = (rng.standard_normal((n, c)) * 3).astype(np.float32)
    y = rng.integers(0, c, n)
    if c > 2:
        z[::5, 1] = z[::5, 0]  # ties at the maximum: the first index is the prediction
        z[::7, 2] = -np.inf  # a masked class
        z[::11, 0] = 60.0  # near-deterministic rows: NLL ~ exp(-60) must survive
    n_inf = int(np.sum(np.isneginf(z[np.arange(n), y])))
    native, fallback = _native_and_fallback(z, y, monkeypatch)
    a, b = native.state_dict(), fallback.state_dict()
    np.testing.assert_array_equal(a["hist"][0], b["hist"][0])  # same bins, row for row
    np.testing.assert_array_equal(a["hist"][2], b["hist"][2])
    np.testing.assert_allclose(a["hist"][1], b["hist"][1], rtol=1e-6)  # float32 ulps
    if n_inf:
        assert a["sums"][1] == np.inf == b["sums"][1]
    else:
        # float32 per-row work in the fallback, double in the kernel: a few float32 ulps
        np.testing.assert_allclose(a["sums"], b["sums"], rtol=2e-6)
        assert native.compute().nll == pytest.approx(nll(logits=z, target=y), rel=2e-6)


def test_native_kernel_bins_confidences_on_edges(monkeypatch: pytest.MonkeyPatch) -> None:
    # two-class rows whose confidence is at (or one rounding from) the coarse edges 0.5, 0.75,
    # 0.875 of n_bins = 8: the kernel bins the correctly rounded float32 confidence with the
    # (lo, hi] rule, so its table equals searchsorted on the float64 softmax rounded to float32
    conf = np.array([0.5, 0.75, 0.875, 0.9375, 1.0 - 2.0**-20], dtype=np.float64)
    z = np.stack([np.log(conf), np.log1p(-conf)], 1).astype(np.float32)
    y = np.array([0, 1, 0, 1, 0])
    native, _ = _native_and_fallback(z, y, monkeypatch, n_bins=8, fine_bins=24)
    z64 = z.astype(np.float64)
    c32 = (1.0 / np.exp(z64 - z64.max(1, keepdims=True)).sum(1)).astype(np.float32)
    edges = np.linspace(0.0, 1.0, 25)
    idx = np.clip(np.searchsorted(edges, c32.astype(np.float64), side="left") - 1, 0, 23)
    np.testing.assert_array_equal(native.hist[0], np.bincount(idx, minlength=24))
    np.testing.assert_array_equal(native.hist[1], np.bincount(idx, c32, minlength=24))
    assert native.compute().n == 5


def test_native_kernel_reports_the_first_bad_row(monkeypatch: pytest.MonkeyPatch) -> None:
    z = np.zeros((300_000, 3), dtype=np.float32)  # several threads' worth of rows
    z[250_001, 2] = np.nan
    z[270_000, 1] = np.inf
    ev = Evaluator()
    with pytest.raises(ValueError, match=r"^scores contains NaN \(first at index \(250001, 2\)\)$"):
        ev.update(z, np.zeros(300_000, dtype=np.int64))
    assert ev.sums["n"] == 0


@pytest.mark.parametrize("from_probs", [False, True])
@pytest.mark.parametrize("as_torch", [False, True])
def test_binary_stream_equals_batch(from_probs: bool, as_torch: bool) -> None:
    # issue 13 item 6: binary (N,) scores are binned as P(class 1), like calibration_error
    rng = np.random.default_rng(12)
    z = rng.standard_normal(2000) * 2
    y = (rng.uniform(size=2000) < 1 / (1 + np.exp(-0.7 * z))).astype(np.int64)
    s = 1 / (1 + np.exp(-z)) if from_probs else z
    kw = {"probs": s} if from_probs else {"logits": s}
    ev = Evaluator(from_probs=from_probs)
    if as_torch:
        torch = pytest.importorskip("torch")
        ev.update(torch.from_numpy(s[:700]), torch.from_numpy(y[:700]))
        ev.update(torch.from_numpy(s[700:]), torch.from_numpy(y[700:]))
    else:
        ev.update(s[:700], y[:700])
        ev.update(s[700:], y[700:])
    r = ev.compute()
    for norm, got in (("l1", r.ece), ("l2", r.rmsce), ("max", r.mce)):
        ref = calibration_error(**kw, target=y, norm=norm)
        assert got == pytest.approx(ref.value, rel=1e-12)
    np.testing.assert_array_equal(r.table.counts, calibration_error(**kw, target=y).table.counts)
    assert r.brier == pytest.approx(brier_score(**kw, target=y), rel=1e-12)
    assert r.nll == pytest.approx(nll(**kw, target=y), rel=1e-12)
    assert r.top5_accuracy is None and "top5_accuracy" not in r.to_dict()


def _exact_equal_mass_ece(conf: np.ndarray, correct: np.ndarray, n_bins: int) -> float:
    """Independent batch equal-mass ECE: sort (stably), rank r goes to bin floor(r n / N)."""
    order = np.argsort(conf, kind="stable")
    idx = np.empty(conf.size, dtype=np.int64)
    idx[order] = (np.arange(conf.size) * n_bins) // conf.size
    gaps = np.bincount(idx, weights=correct - conf, minlength=n_bins)
    return float(np.abs(gaps).sum() / conf.size)


def test_equal_mass_bound_on_a_large_vocabulary_is_a_bound_in_0_1() -> None:
    # issue 13 item 7: 'ece_equal_mass_bound' was 17.1 on a (20000, 1000) file (6.7 on this one):
    # every boundary's fine bin counted in full, and once per boundary when several share it
    from scipy.special import softmax

    rng = np.random.default_rng(3)
    z = rng.standard_normal((4000, 300)) * 0.2  # confidences in a few fine bins
    y = np.argmax(z + rng.gumbel(size=z.shape), axis=1)  # labels drawn from softmax(z)
    ev = Evaluator()
    ev.update(z, y)
    r = ev.compute()
    p = softmax(z, axis=1)
    exact = _exact_equal_mass_ece(p.max(1), (p.argmax(1) == y).astype(float), 15)
    assert abs(r.ece_equal_mass - exact) <= r.ece_equal_mass_bound < 0.05


@pytest.mark.parametrize("spread", ["uniform", "clustered", "atoms"])
@pytest.mark.parametrize(("n_bins", "fine"), [(15, 30), (15, 3000), (10, 10), (3, 600)])
def test_equal_mass_bound_holds_where_the_approximation_matters(
    spread: str, n_bins: int, fine: int
) -> None:
    # binary probabilities: the Evaluator bins exactly the values the batch computation sorts
    rng = np.random.default_rng(fine + n_bins)
    worst = 0.0
    for n in (7, 60, 997, 5000):
        if spread == "uniform":
            p1 = rng.uniform(size=n)
        elif spread == "clustered":
            p1 = np.clip(rng.normal(0.7, 0.01, n), 0, 1)
        else:
            p1 = rng.choice([0.0, 0.2, 0.5, 0.7, 1.0, 0.33], n)
        y = (rng.uniform(size=n) < np.clip(p1 + rng.normal(0, 0.15, n), 0, 1)).astype(int)
        ev = Evaluator(n_bins=n_bins, fine_bins=fine, from_probs=True)
        ev.update(p1, y)
        r = ev.compute()
        diff = abs(r.ece_equal_mass - _exact_equal_mass_ece(p1, (y == 1).astype(float), n_bins))
        assert 0 <= diff <= r.ece_equal_mass_bound <= 1, (n, diff, r.ece_equal_mass_bound)
        worst = max(worst, diff)
    if fine == 30 and spread == "uniform":
        assert worst > 1e-3  # the histogram approximation visibly matters here


@given(
    n=st.integers(1, 400),
    n_bins=st.sampled_from([1, 2, 3, 5, 10, 15]),
    per_bin=st.sampled_from([1, 2, 3, 10, 200]),
    spread=st.sampled_from(["uniform", "clustered", "atoms"]),
    seed=st.integers(0, 2**32 - 1),
)
def test_equal_mass_bound_property(
    n: int, n_bins: int, per_bin: int, spread: str, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    if spread == "uniform":
        p1 = rng.uniform(size=n)
    elif spread == "clustered":
        p1 = np.clip(rng.normal(rng.uniform(), 0.01, n), 0, 1)
    else:
        p1 = rng.choice([0.0, 0.2, 0.5, 0.7, 1.0, rng.uniform()], n)
    y = (rng.uniform(size=n) < np.clip(p1 + rng.normal(0, 0.2), 0, 1)).astype(int)
    ev = Evaluator(n_bins=n_bins, fine_bins=n_bins * per_bin, from_probs=True)
    ev.update(p1, y)
    r = ev.compute()
    diff = abs(r.ece_equal_mass - _exact_equal_mass_ece(p1, (y == 1).astype(float), n_bins))
    assert diff <= r.ece_equal_mass_bound <= 1
