"""Vocabulary-parallel linear_cross_entropy: 2 gloo processes on CPU equal one process."""

import os
import socket

import pytest

torch = pytest.importorskip("torch")
dist = pytest.importorskip("torch.distributed")

if not dist.is_available() or not dist.is_gloo_available():
    pytest.skip("torch.distributed with gloo is not available", allow_module_level=True)

N, D, V, WORLD = 21, 10, 37, 2  # V odd: unequal shards (19 + 18)
OPTS = [
    dict(),
    dict(label_smoothing=0.1, z_loss=1e-3, softcap=3.0, temperature=0.8),
    dict(reduction="none"),
]


def _data():
    g = torch.Generator().manual_seed(0)
    h = torch.randn(N, D, generator=g, dtype=torch.float64)
    w = torch.randn(V, D, generator=g, dtype=torch.float64)
    b = torch.randn(V, generator=g, dtype=torch.float64)
    t = torch.randint(0, V, (N,), generator=g)
    t[::6] = -100
    t[1] = 0  # targets on both shards, and at the shard boundary
    t[2] = V - 1
    t[3] = 19
    return h, w, b, t


def _run(h, w, b, t, opts, group=None):
    from logitlab.torch import linear_cross_entropy

    h = h.clone().requires_grad_()
    w = w.clone().requires_grad_()
    b = b.clone().requires_grad_()
    loss, st = linear_cross_entropy(
        h, w, t, bias=b, chunk_size=8, return_stats=True, process_group=group, **opts
    )
    up = torch.linspace(0.5, 1.5, loss.numel(), dtype=loss.dtype).reshape(loss.shape)
    loss.backward(up)
    return loss.detach(), h.grad, w.grad, b.grad, st


def _worker(rank, port, out_dir):
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=WORLD,
        timeout=__import__("datetime").timedelta(seconds=60),
    )
    try:
        h, w, b, t = _data()
        lo = [0, 19][rank]
        hi = [19, V][rank]
        res = [_run(h, w[lo:hi], b[lo:hi], t, o, dist.group.WORLD) for o in OPTS]
        torch.save(res, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_vocab_parallel_equals_single_process(tmp_path):
    mp = torch.multiprocessing.get_context("spawn")
    port = _free_port()
    procs = [mp.Process(target=_worker, args=(r, port, str(tmp_path))) for r in range(WORLD)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    for p in procs:
        if p.is_alive():
            p.kill()
            pytest.fail("distributed worker timed out")
        assert p.exitcode == 0
    h, w, b, t = _data()
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]
    for k, opts in enumerate(OPTS):
        loss, gh, gw, gb, st = _run(h, w, b, t, opts)
        r0, r1 = ranks[0][k], ranks[1][k]
        for r in (r0, r1):
            torch.testing.assert_close(r[0], loss, rtol=1e-12, atol=1e-12)
            torch.testing.assert_close(r[1], gh, rtol=1e-12, atol=1e-12)
            torch.testing.assert_close(r[4].lse, st.lse)
            torch.testing.assert_close(r[4].entropy, st.entropy)
            assert torch.equal(r[4].correct, st.correct)
        torch.testing.assert_close(torch.cat([r0[2], r1[2]]), gw, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(torch.cat([r0[3], r1[3]]), gb, rtol=1e-12, atol=1e-12)
