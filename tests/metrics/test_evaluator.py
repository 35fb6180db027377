"""Streaming Evaluator: equal to the batch metrics, mergeable, serialisable, distributed."""

from __future__ import annotations

import os
import socket

import numpy as np
import pytest

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


def test_equal_mass_within_stated_bound() -> None:
    z, y = _data(1, 5000)
    ev = Evaluator()
    ev.update(z, y)
    exact = calibration_error(logits=z, target=y, binning="equal-mass").value
    approx = ev.compute().ece_equal_mass
    # each boundary moves by at most one fine bin (1/3000 in confidence): a few per mille of ECE
    assert abs(approx - exact) < 5e-3


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
